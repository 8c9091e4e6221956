//! Elementwise ops: broadcasting binary/variadic ops (Add, Sub, Mul, Div, Pow, Sum, Where,
//! Max, Min) and smooth unary functions. Local derivatives are computed once on the forward
//! batch and broadcast over the `M` cotangents; cotangents of broadcast operands are summed
//! back.

use super::{Cotangents, InputCotangents};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::NodeProto;

use super::Ctx;
use crate::grad::error::GradError;
use crate::grad::onnx::{attr_f, input};

/// VJP of the broadcasting binary and variadic ops.
pub fn binary(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let mut out = vec![None; node.input.len()];
    let Some(gy) = &gys[0] else { return Ok(out) };
    let y = node.output[0].clone();
    let bw_y = ctx.f.bw_shape(node, &y)?;
    let op = node.op_type.as_str();
    #[allow(clippy::needless_range_loop)] // `i` also indexes the node's inputs
    for i in 0..node.input.len() {
        if !ctx.f.in_active(node, i) {
            continue;
        }
        let xi = input(node, i).expect("active input exists").to_string();
        let other = |j: usize| input(node, j).map(|s| s.to_string());
        let g = match (op, i) {
            ("Add" | "Sum", _) | ("Sub", 0) => gy.clone(),
            ("Sub", _) => ctx.em.op("Neg", &[gy], vec![]),
            ("Mul", _) => {
                let o = other(1 - i).expect("Mul has two inputs");
                let o = ctx.tile_operand(&o, &y);
                ctx.em.mul(gy, &o)
            }
            ("Div", 0) => {
                let b = other(1).expect("Div has two inputs");
                let b = ctx.tile_operand(&b, &y);
                ctx.em.div(gy, &b)
            }
            ("Div", _) => {
                let b = other(1).expect("Div has two inputs");
                let q = ctx.em.div(&y, &b);
                let d = ctx.em.op("Neg", &[&q], vec![]);
                ctx.mul_tiled(gy, &d, &y)
            }
            ("Pow", 0) => {
                let e = other(1).expect("Pow has two inputs");
                let e = ctx.em.cast(&e, DataType::Float);
                let one = ctx.em.scalar(1.0);
                let em1 = ctx.em.sub(&e, &one);
                let p = ctx.em.bin("Pow", &xi, &em1);
                let d = ctx.em.mul(&e, &p);
                ctx.mul_tiled(gy, &d, &y)
            }
            ("Pow", _) => {
                let base = other(0).expect("Pow has two inputs");
                let l = ctx.em.op("Log", &[&base], vec![]);
                let d = ctx.em.mul(&y, &l);
                ctx.mul_tiled(gy, &d, &y)
            }
            ("Where", 0) => continue,
            ("Where", _) => {
                let c = other(0).expect("Where has a condition");
                let c = ctx.tile_operand(&c, &y);
                let z = ctx.em.scalar(0.0);
                if i == 1 {
                    ctx.em.op("Where", &[&c, gy, &z], vec![])
                } else {
                    ctx.em.op("Where", &[&c, &z, gy], vec![])
                }
            }
            ("Max" | "Min", _) => {
                let eq = ctx.em.bin("Equal", &xi, &y);
                let mask = ctx.em.cast(&eq, DataType::Float);
                ctx.mul_tiled(gy, &mask, &y)
            }
            _ => return Err(GradError::unsupported(node, "no binary rule")),
        };
        let bw_x = ctx.f.bw_shape(node, &xi)?;
        out[i] = Some(ctx.reduce_to(&g, &bw_y, &bw_x));
    }
    Ok(out)
}

/// VJP of smooth unary functions: `x̄ = ȳ · f'(x)`.
pub fn unary(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let Some(gy) = &gys[0] else {
        return Ok(vec![None]);
    };
    let x = input(node, 0).expect("unary input").to_string();
    let y = node.output[0].clone();
    let em = &mut *ctx.em;
    let d = match node.op_type.as_str() {
        "Neg" => return Ok(vec![Some(em.op("Neg", &[gy], vec![]))]),
        "Sqrt" => {
            let h = em.scalar(0.5);
            em.div(&h, &y)
        }
        "Exp" => y.clone(),
        "Log" => em.op("Reciprocal", &[&x], vec![]),
        "Tanh" => {
            let one = em.scalar(1.0);
            let y2 = em.mul(&y, &y);
            em.sub(&one, &y2)
        }
        "Erf" => {
            let x2 = em.mul(&x, &x);
            let nx2 = em.op("Neg", &[&x2], vec![]);
            let e = em.op("Exp", &[&nx2], vec![]);
            em.scale(&e, std::f32::consts::FRAC_2_SQRT_PI)
        }
        "Sigmoid" => {
            let one = em.scalar(1.0);
            let c = em.sub(&one, &y);
            em.mul(&y, &c)
        }
        "Reciprocal" => {
            let y2 = em.mul(&y, &y);
            em.op("Neg", &[&y2], vec![])
        }
        "Abs" => em.op("Sign", &[&x], vec![]),
        "Sin" => em.op("Cos", &[&x], vec![]),
        "Cos" => {
            let s = em.op("Sin", &[&x], vec![]);
            em.op("Neg", &[&s], vec![])
        }
        "Softplus" => em.op("Sigmoid", &[&x], vec![]),
        "Elu" => {
            // x > 0: 1, else y + alpha.
            let alpha = attr_f(node, "alpha", 1.0);
            let z = em.scalar(0.0);
            let pos = em.bin("Greater", &x, &z);
            let a = em.scalar(alpha);
            let neg = em.add(&y, &a);
            let one = em.scalar(1.0);
            em.op("Where", &[&pos, &one, &neg], vec![])
        }
        _ => return Err(GradError::unsupported(node, "no unary rule")),
    };
    Ok(vec![Some(ctx.mul_tiled(gy, &d, &y))])
}

#[cfg(test)]
mod tests {
    use crate::grad::onnx::{tensor_f32, Attr};
    use crate::grad::testutil::{assert_grad, chain, ints, node, one};

    #[test]
    fn binary_ops_with_broadcasting() {
        for op in ["Add", "Sub", "Mul", "Div"] {
            // x (N,3,4) op c (3,1); and c op x
            let c = tensor_f32("c", &[3, 1], &[1.5, -2.0, 0.75]);
            one(op, &["x", "c"], vec![], vec![c.clone()], &[2, 3, 4], 13);
            one(op, &["c", "x"], vec![], vec![c], &[2, 3, 4], 13);
            // both active, one reduced (broadcast): x op mean(x)
            let nodes = vec![
                node(
                    "ReduceMean",
                    &["x"],
                    "m",
                    vec![("axes", ints(&[2])), ("keepdims", Attr::Int(1))],
                ),
                node("Sigmoid", &["m"], "s", vec![]),
                node(op, &["x", "s"], "y", vec![]),
            ];
            assert_grad(&chain(nodes, vec![], &[2, 3, 4], 11), &[2, 3, 4], 1.0);
        }
    }

    #[test]
    fn pow_sum_where_max_min() {
        // Pow with constant exponent on a positive base.
        let nodes = vec![
            node("Sigmoid", &["x"], "s", vec![]),
            node("Pow", &["s", "e"], "y", vec![]),
        ];
        let e = tensor_f32("e", &[], &[2.5]);
        assert_grad(&chain(nodes, vec![e], &[2, 5], 13), &[2, 5], 1.0);
        // Pow with an active exponent.
        let nodes = vec![node("Pow", &["b", "x"], "y", vec![])];
        let b = tensor_f32("b", &[5], &[1.5, 2.0, 0.5, 3.0, 1.1]);
        assert_grad(&chain(nodes, vec![b], &[2, 5], 13), &[2, 5], 1.0);
        // Sum (variadic), Max, Min.
        for op in ["Sum", "Max", "Min"] {
            let nodes = vec![
                node("Tanh", &["x"], "t", vec![]),
                node("Neg", &["x"], "n", vec![]),
                node(op, &["x", "t", "c", "n"], "y", vec![]),
            ];
            let c = tensor_f32("c", &[5], &[0.1, -0.2, 0.3, -0.4, 0.05]);
            assert_grad(&chain(nodes, vec![c], &[2, 5], 13), &[2, 5], 1.0);
        }
        // Where with a data-dependent condition.
        let nodes = vec![
            node("Greater", &["x", "z"], "cond", vec![]),
            node("Exp", &["x"], "e", vec![]),
            node("Where", &["cond", "e", "x"], "y", vec![]),
        ];
        let z = tensor_f32("z", &[], &[0.0]);
        assert_grad(&chain(nodes, vec![z], &[2, 6], 13), &[2, 6], 1.0);
    }

    #[test]
    fn unary_functions() {
        for op in [
            "Neg", "Exp", "Tanh", "Erf", "Sigmoid", "Sin", "Cos", "Softplus", "Elu", "Abs",
        ] {
            one(op, &["x"], vec![], vec![], &[2, 7], 13);
        }
        // Functions needing a positive argument: through x² + 0.5.
        for op in ["Sqrt", "Log", "Reciprocal"] {
            let nodes = vec![
                node("Mul", &["x", "x"], "sq", vec![]),
                node("Add", &["sq", "h"], "p", vec![]),
                node(op, &["p"], "y", vec![]),
            ];
            let h = tensor_f32("h", &[], &[0.5]);
            assert_grad(&chain(nodes, vec![h], &[2, 7], 13), &[2, 7], 1.0);
        }
    }

    #[test]
    fn gelu_pattern() {
        // x · ½ (1 + erf(x / √2)), as exported by PyTorch.
        let nodes = vec![
            node("Div", &["x", "r2"], "d", vec![]),
            node("Erf", &["d"], "e", vec![]),
            node("Add", &["e", "one"], "a", vec![]),
            node("Mul", &["x", "a"], "m", vec![]),
            node("Mul", &["m", "half"], "y", vec![]),
        ];
        let inits = vec![
            tensor_f32("r2", &[], &[std::f32::consts::SQRT_2]),
            tensor_f32("one", &[], &[1.0]),
            tensor_f32("half", &[], &[0.5]),
        ];
        assert_grad(&chain(nodes, inits, &[2, 8], 13), &[2, 8], 2.0);
    }
}
