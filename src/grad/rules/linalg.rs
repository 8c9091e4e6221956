//! Gemm and MatMul (batched, broadcast, 1-D operands).

use tract_onnx::pb::NodeProto;

use super::{active_input_unsupported, align, Cotangents, Ctx, Facts, InputCotangents};
use crate::grad::error::GradError;
use crate::grad::onnx::{attr_f, attr_i, input, Attr};

/// Gemm batch axes: `A'` rows or `B'` columns carry the batch, never the contracted axis.
pub fn gemm_batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let ta = attr_i(node, "transA", 0) != 0;
    let tb = attr_i(node, "transB", 0) != 0;
    let mut axis = None;
    let mut set = |a: usize| -> Result<(), GradError> {
        match axis {
            Some(x) if x != a => Err(GradError::unsupported(node, "A and B both carry the batch")),
            _ => {
                axis = Some(a);
                Ok(())
            }
        }
    };
    if let Some(b) = f.in_batch(node, 0) {
        if b != ta as usize {
            return Err(GradError::unsupported(
                node,
                "batch axis of A is contracted",
            ));
        }
        set(0)?;
    }
    if let Some(b) = f.in_batch(node, 1) {
        if b != (!tb) as usize {
            return Err(GradError::unsupported(
                node,
                "batch axis of B is contracted",
            ));
        }
        set(1)?;
    }
    if let Some(b) = f.in_batch(node, 2) {
        let s = f.in_shape(node, 2)?;
        set(align(b, s.len(), 2))?;
    }
    Ok(vec![axis])
}

/// Gemm `Y = α A'B' + β C`: `Ā' = α Ȳ B'ᵀ`, `B̄' = α A'ᵀ Ȳ`, `C̄ = β Ȳ` reduced.
pub fn gemm(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let Some(gy) = &gys[0] else {
        return Ok(vec![None; node.input.len()]);
    };
    let ta = attr_i(node, "transA", 0);
    let tb = attr_i(node, "transB", 0);
    let alpha = attr_f(node, "alpha", 1.0);
    let beta = attr_f(node, "beta", 1.0);
    let a = input(node, 0).expect("Gemm A").to_string();
    let b = input(node, 1).expect("Gemm B").to_string();
    let mut out = vec![None; node.input.len()];
    // Gemm's C is optional only from opset 11.
    let zero = if ctx.f.opset < 11 {
        Some(ctx.em.scalar(0.0))
    } else {
        None
    };
    let with_c = |a: &str, b: &str| -> Vec<String> {
        let mut v = vec![a.to_string(), b.to_string()];
        v.extend(zero.clone());
        v
    };
    if ctx.f.in_active(node, 0) {
        let bt = ctx.tile(&b);
        let ins = with_c(gy, &bt);
        let ins: Vec<&str> = ins.iter().map(|s| s.as_str()).collect();
        let g = ctx.em.op(
            "Gemm",
            &ins,
            vec![("alpha", Attr::Float(alpha)), ("transB", Attr::Int(1 - tb))],
        );
        out[0] = Some(if ta != 0 {
            ctx.em.transpose(&g, &[1, 0])
        } else {
            g
        });
    }
    if ctx.f.in_active(node, 1) {
        let at = ctx.tile(&a);
        let ins = with_c(&at, gy);
        let ins: Vec<&str> = ins.iter().map(|s| s.as_str()).collect();
        let g = ctx.em.op(
            "Gemm",
            &ins,
            vec![("alpha", Attr::Float(alpha)), ("transA", Attr::Int(1 - ta))],
        );
        out[1] = Some(if tb != 0 {
            ctx.em.transpose(&g, &[1, 0])
        } else {
            g
        });
    }
    if ctx.f.in_active(node, 2) {
        let c = input(node, 2).expect("Gemm C").to_string();
        let from = ctx.f.bw_shape(node, &node.output[0])?;
        let to = ctx.f.bw_shape(node, &c)?;
        let g = if beta != 1.0 {
            ctx.em.scale(gy, beta)
        } else {
            gy.clone()
        };
        out[2] = Some(ctx.reduce_to(&g, &from, &to));
    }
    Ok(out)
}

/// MatMul batch axes: a broadcast axis keeps its right-aligned position, the row axis of A
/// maps to the output rows, the column axis of B to the output columns.
pub fn matmul_batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let out_rank = f.out_shape(node, 0)?.len();
    let ra = f.in_shape(node, 0)?.len();
    let rb = f.in_shape(node, 1)?.len();
    // Output = broadcast batch dims, then m (if A is a matrix), then n (if B is a matrix).
    let out_bdims = out_rank - (ra >= 2) as usize - (rb >= 2) as usize;
    let mut axis = None;
    for (i, r) in [(0usize, ra), (1usize, rb)] {
        let Some(b) = f.in_batch(node, i) else {
            continue;
        };
        let contracted = if i == 0 { r - 1 } else { r.saturating_sub(2) };
        if r == 1 || b == contracted {
            return Err(GradError::unsupported(
                node,
                format!("batch axis of input {i} is contracted"),
            ));
        }
        let a = if b < r - 2 {
            b + out_bdims - (r - 2)
        } else if i == 0 {
            out_bdims
        } else {
            out_rank - 1
        };
        if f.in_shape(node, i)?[b] != f.out_shape(node, 0)?[a] {
            return Err(GradError::shape(
                node,
                format!("input {i} is broadcast along its batch axis"),
            ));
        }
        match axis {
            Some(x) if x != a => {
                return Err(GradError::unsupported(
                    node,
                    "inputs have different batch axes",
                ))
            }
            _ => axis = Some(a),
        }
    }
    Ok(vec![axis])
}

fn swap_last(rank: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..rank).collect();
    p.swap(rank - 1, rank - 2);
    p
}

/// MatMul `Y = A B`: `Ā = Ȳ Bᵀ`, `B̄ = Aᵀ Ȳ`, each summed over broadcast axes. 1-D operands are
/// promoted to matrices as in numpy.
pub fn matmul(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let Some(gy) = &gys[0] else {
        return Ok(vec![None, None]);
    };
    let a = input(node, 0).expect("MatMul A").to_string();
    let b = input(node, 1).expect("MatMul B").to_string();
    let bw_a = ctx.f.bw_shape(node, &a)?;
    let bw_b = ctx.f.bw_shape(node, &b)?;
    let bw_y = ctx.f.bw_shape(node, &node.output[0])?;
    // Promoted (matrix) shapes.
    let pa = if bw_a.len() == 1 {
        vec![1, bw_a[0]]
    } else {
        bw_a.clone()
    };
    let pb = if bw_b.len() == 1 {
        vec![bw_b[0], 1]
    } else {
        bw_b.clone()
    };
    let mut py: Vec<usize> = bw_y.clone();
    if bw_a.len() == 1 {
        py.insert(py.len() - if bw_b.len() == 1 { 0 } else { 1 }, 1);
    }
    if bw_b.len() == 1 {
        py.push(1);
    }
    let gy_p = if py != bw_y {
        ctx.em.reshape(gy, &py)
    } else {
        gy.clone()
    };
    let mut out = vec![None, None];
    if ctx.f.in_active(node, 0) {
        let bt = ctx.tile(&b);
        let bt = if pb != bw_b {
            ctx.em.reshape(&bt, &pb)
        } else {
            bt
        };
        let btt = ctx.em.transpose(&bt, &swap_last(pb.len()));
        let g = ctx.em.bin("MatMul", &gy_p, &btt);
        let mut full = py.clone();
        let r = full.len();
        full[r - 1] = pa[pa.len() - 1];
        let g = ctx.reduce_to(&g, &full, &pa);
        out[0] = Some(if pa != bw_a {
            ctx.em.reshape(&g, &bw_a)
        } else {
            g
        });
    }
    if ctx.f.in_active(node, 1) {
        let at = ctx.tile(&a);
        let at = if pa != bw_a {
            ctx.em.reshape(&at, &pa)
        } else {
            at
        };
        let att = ctx.em.transpose(&at, &swap_last(pa.len()));
        let g = ctx.em.bin("MatMul", &att, &gy_p);
        let mut full = py.clone();
        let r = full.len();
        full[r - 2] = pb[pb.len() - 2];
        let g = ctx.reduce_to(&g, &full, &pb);
        out[1] = Some(if pb != bw_b {
            ctx.em.reshape(&g, &bw_b)
        } else {
            g
        });
    }
    if out.iter().all(|o| o.is_none()) {
        return Err(active_input_unsupported(node, 0));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::grad::onnx::Attr;
    use crate::grad::testutil::{assert_grad, chain, ints, node, one, w};

    #[test]
    fn gemm_transposes_alpha_beta() {
        let attrs = vec![
            ("transA", Attr::Int(0)),
            ("transB", Attr::Int(0)),
            ("alpha", Attr::Float(0.7)),
            ("beta", Attr::Float(1.3)),
        ];
        one(
            "Gemm",
            &["x", "b", "c"],
            attrs,
            vec![w("b", &[6, 3], 9), w("c", &[1, 3], 10)],
            &[2, 6],
            11,
        );
        // transA: the batch sits on axis 1 of A.
        let nodes = vec![
            node("Transpose", &["x"], "xt", vec![("perm", ints(&[1, 0]))]),
            node(
                "Gemm",
                &["xt", "b"],
                "y",
                vec![("transA", Attr::Int(1)), ("transB", Attr::Int(1))],
            ),
        ];
        assert_grad(
            &chain(nodes, vec![w("b", &[3, 6], 11)], &[2, 6], 13),
            &[2, 6],
            1.0,
        );
    }

    #[test]
    fn gemm_with_active_c() {
        let nodes = vec![
            node("Relu", &["x"], "r", vec![]),
            node(
                "Gemm",
                &["x", "b", "r"],
                "y",
                vec![("beta", Attr::Float(0.5))],
            ),
        ];
        assert_grad(
            &chain(nodes, vec![w("b", &[4, 4], 12)], &[3, 4], 13),
            &[3, 4],
            1.0,
        );
    }

    #[test]
    fn matmul_batched_broadcast_and_vector() {
        one(
            "MatMul",
            &["x", "b"],
            vec![],
            vec![w("b", &[4, 3], 13)],
            &[2, 5, 4],
            13,
        );
        one(
            "MatMul",
            &["x", "b"],
            vec![],
            vec![w("b", &[4], 14)],
            &[2, 3, 4],
            13,
        );
        // constant on the left, broadcast over the batch: (3, 5) @ (N, 5, 2)
        one(
            "MatMul",
            &["a", "x"],
            vec![],
            vec![w("a", &[3, 5], 15)],
            &[2, 5, 2],
            13,
        );
    }

    #[test]
    fn matmul_both_active_attention_scores() {
        // s = x xᵀ per sample, then softmax, then s x.
        let nodes = vec![
            node("Transpose", &["x"], "xt", vec![("perm", ints(&[0, 2, 1]))]),
            node("MatMul", &["x", "xt"], "s", vec![]),
            node("Softmax", &["s"], "p", vec![("axis", Attr::Int(-1))]),
            node("MatMul", &["p", "x"], "o", vec![]),
            node("Flatten", &["o"], "y", vec![]),
        ];
        assert_grad(&chain(nodes, vec![], &[2, 4, 3], 13), &[2, 4, 3], 1.0);
    }
}
