//! Reductions: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceL2, ReduceSumSquare, with
//! axes as attribute or input, `keepdims` 0/1 and `noop_with_empty_axes`.

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::NodeProto;

use super::{norm_axis, Cotangents, Ctx, Facts, InputCotangents};
use crate::grad::error::GradError;
use crate::grad::onnx::{attr_i, attr_ints, input};

/// Reduced axes (sorted), or `None` for the identity (`noop_with_empty_axes`).
fn axes(f: &Facts, node: &NodeProto) -> Result<Option<Vec<usize>>, GradError> {
    let rank = f.in_shape(node, 0)?.len();
    let raw = match attr_ints(node, "axes") {
        Some(a) => a,
        None if input(node, 1).is_some() => f
            .in_i64(node, 1)
            .ok_or_else(|| GradError::unsupported(node, "axes input is not a known constant"))?,
        None => vec![],
    };
    if raw.is_empty() {
        if attr_i(node, "noop_with_empty_axes", 0) != 0 {
            return Ok(None);
        }
        return Ok(Some((0..rank).collect()));
    }
    let mut a: Vec<usize> = raw
        .iter()
        .map(|&x| norm_axis(node, x, rank))
        .collect::<Result<_, _>>()?;
    a.sort_unstable();
    a.dedup();
    Ok(Some(a))
}

/// Batch axis after the reduction (which must not reduce it).
pub fn batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let Some(b) = f.in_batch(node, 0) else {
        return Ok(vec![None]);
    };
    let Some(axes) = axes(f, node)? else {
        return Ok(vec![Some(b)]);
    };
    if axes.contains(&b) {
        return Err(GradError::unsupported(node, "reduces over the batch axis"));
    }
    let keep = attr_i(node, "keepdims", 1) != 0;
    Ok(vec![Some(if keep {
        b
    } else {
        b - axes.iter().filter(|&&a| a < b).count()
    })])
}

/// VJP: the cotangent is broadcast back over the reduced axes, times the local derivative
/// (1, 1/n, 2x, x/y, or the arg-max mask split evenly between ties).
pub fn reduce(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let mut out = vec![None; node.input.len()];
    let Some(gy) = &gys[0] else { return Ok(out) };
    let Some(ax) = axes(ctx.f, node)? else {
        out[0] = Some(gy.clone());
        return Ok(out);
    };
    let x = input(node, 0).expect("reduce input").to_string();
    let xs = ctx.f.in_shape(node, 0)?.to_vec();
    let bw_x = ctx.f.bw_shape(node, &x)?;
    let mut kept = bw_x.clone();
    let mut kept_fwd = xs.clone();
    for &a in &ax {
        kept[a] = 1;
        kept_fwd[a] = 1;
    }
    let g = ctx.em.reshape(gy, &kept);
    let shape = ctx
        .em
        .const_i64(&bw_x.iter().map(|&d| d as i64).collect::<Vec<_>>());
    let g = ctx.em.op("Expand", &[&g, &shape], vec![]);
    let n: usize = ax.iter().map(|&a| xs[a]).product();
    let y = node.output[0].clone();
    let gx = match node.op_type.as_str() {
        "ReduceSum" => g,
        "ReduceMean" => ctx.em.scale(&g, 1.0 / n as f32),
        "ReduceSumSquare" => {
            let d = ctx.em.scale(&x, 2.0);
            ctx.mul_tiled(&g, &d, &x)
        }
        "ReduceL2" => {
            let yk = ctx.em.reshape(&y, &kept_fwd);
            let d = ctx.em.div(&x, &yk);
            ctx.mul_tiled(&g, &d, &x)
        }
        "ReduceMax" | "ReduceMin" => {
            let yk = ctx.em.reshape(&y, &kept_fwd);
            let eq = ctx.em.bin("Equal", &x, &yk);
            let mask = ctx.em.cast(&eq, DataType::Float);
            let cnt = ctx.em.reduce_sum(&mask, &ax, true);
            let d = ctx.em.div(&mask, &cnt);
            ctx.mul_tiled(&g, &d, &x)
        }
        _ => return Err(GradError::unsupported(node, "no reduce rule")),
    };
    out[0] = Some(gx);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::grad::onnx::{tensor_i64, Attr};
    use crate::grad::testutil::{ints, one};

    #[test]
    fn reductions_attr_and_input_axes() {
        for op in [
            "ReduceMean",
            "ReduceSum",
            "ReduceMax",
            "ReduceMin",
            "ReduceL2",
            "ReduceSumSquare",
        ] {
            for keep in [0, 1] {
                let attrs = vec![("axes", ints(&[1, -1])), ("keepdims", Attr::Int(keep))];
                one(op, &["x"], attrs, vec![], &[2, 3, 2, 4], 11);
                let axes = tensor_i64("axes", &[2], &[1, -1]);
                let opset = if op == "ReduceSum" { 13 } else { 18 };
                one(
                    op,
                    &["x", "axes"],
                    vec![("keepdims", Attr::Int(keep))],
                    vec![axes],
                    &[2, 3, 2, 4],
                    opset,
                );
            }
        }
    }
}
