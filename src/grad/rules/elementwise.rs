//! Elementwise ops: broadcasting binary/variadic ops (Add, Sub, Mul, Div, Pow, Sum, Where,
//! Max, Min) and smooth unary functions. Local derivatives are computed once on the forward
//! batch and broadcast over the `M` cotangents; cotangents of broadcast operands are summed
//! back.

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::NodeProto;

use super::Ctx;
use crate::grad::error::GradError;
use crate::grad::onnx::{attr_f, input};

/// VJP of the broadcasting binary and variadic ops.
pub fn binary(
    ctx: &mut Ctx,
    node: &NodeProto,
    gys: &[Option<String>],
) -> Result<Vec<Option<String>>, GradError> {
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
pub fn unary(
    ctx: &mut Ctx,
    node: &NodeProto,
    gys: &[Option<String>],
) -> Result<Vec<Option<String>>, GradError> {
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
