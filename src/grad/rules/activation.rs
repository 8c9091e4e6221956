//! Piecewise activations (Relu, LeakyRelu, PRelu, Clip, HardSigmoid, HardSwish) and
//! Softmax/LogSoftmax.
//!
//! At the kinks the derivative is taken from the open side: Relu and Clip pass the cotangent
//! only where `x > 0`, `min < x < max` (as PyTorch's relu and hardtanh/ReLU6 do).

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::NodeProto;

use super::{active_input_unsupported, norm_axis, Ctx, Facts};
use crate::grad::error::GradError;
use crate::grad::onnx::{attr, attr_f, attr_i, input};

/// VJP of the piecewise activations: `x̄ = ȳ · f'(x)`.
pub fn activation(
    ctx: &mut Ctx,
    node: &NodeProto,
    gys: &[Option<String>],
) -> Result<Vec<Option<String>>, GradError> {
    for i in 1..node.input.len() {
        if ctx.f.in_active(node, i) {
            return Err(active_input_unsupported(node, i));
        }
    }
    let mut out = vec![None; node.input.len()];
    let Some(gy) = &gys[0] else { return Ok(out) };
    let x = input(node, 0).expect("activation input").to_string();
    let y = node.output[0].clone();
    let em = &mut *ctx.em;
    let zero = em.scalar(0.0);
    let d = match node.op_type.as_str() {
        "Relu" => {
            let p = em.bin("Greater", &x, &zero);
            em.cast(&p, DataType::Float)
        }
        "LeakyRelu" => {
            let alpha = attr_f(node, "alpha", 0.01);
            let p = em.bin("Greater", &x, &zero);
            let one = em.scalar(1.0);
            let a = em.scalar(alpha);
            em.op("Where", &[&p, &one, &a], vec![])
        }
        "PRelu" => {
            let slope = input(node, 1).expect("PRelu slope").to_string();
            let p = em.bin("Greater", &x, &zero);
            let one = em.scalar(1.0);
            em.op("Where", &[&p, &one, &slope], vec![])
        }
        "Clip" => {
            let (lo, hi) = if em.opset < 11 {
                let lo = attr(node, "min").map(|a| a.f);
                let hi = attr(node, "max").map(|a| a.f);
                (lo.map(|v| em.scalar(v)), hi.map(|v| em.scalar(v)))
            } else {
                (
                    input(node, 1).map(|s| s.to_string()),
                    input(node, 2).map(|s| s.to_string()),
                )
            };
            let above = lo.map(|lo| em.bin("Greater", &x, &lo));
            let below = hi.map(|hi| em.bin("Less", &x, &hi));
            let m = match (above, below) {
                (Some(a), Some(b)) => em.bin("And", &a, &b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => return Ok(vec![Some(gy.clone())]),
            };
            em.cast(&m, DataType::Float)
        }
        "HardSigmoid" => {
            let alpha = attr_f(node, "alpha", 0.2);
            let beta = attr_f(node, "beta", 0.5);
            let t = em.scale(&x, alpha);
            let b = em.scalar(beta);
            let t = em.add(&t, &b);
            let one = em.scalar(1.0);
            let p = em.bin("Greater", &t, &zero);
            let q = em.bin("Less", &t, &one);
            let m = em.bin("And", &p, &q);
            let m = em.cast(&m, DataType::Float);
            em.scale(&m, alpha)
        }
        "HardSwish" => {
            // 0 for x ≤ -3, x/3 + 1/2 for -3 < x < 3, 1 for x ≥ 3.
            let m3 = em.scalar(-3.0);
            let p3 = em.scalar(3.0);
            let a = em.bin("Greater", &x, &m3);
            let b = em.bin("Less", &x, &p3);
            let mid = em.bin("And", &a, &b);
            let mid = em.cast(&mid, DataType::Float);
            let slope = em.scale(&x, 1.0 / 3.0);
            let half = em.scalar(0.5);
            let slope = em.add(&slope, &half);
            let mid = em.mul(&mid, &slope);
            let hi = em.op("Not", &[&b], vec![]);
            let hi = em.cast(&hi, DataType::Float);
            em.add(&mid, &hi)
        }
        _ => return Err(GradError::unsupported(node, "no activation rule")),
    };
    out[0] = Some(ctx.mul_tiled(gy, &d, &y));
    Ok(out)
}

/// Axes Softmax/LogSoftmax normalise over: `[axis]` from opset 13, `[axis, rank)` before
/// (the input is coerced to 2-D at `axis`).
fn softmax_axes(node: &NodeProto, opset: i64, rank: usize) -> Result<Vec<usize>, GradError> {
    if opset >= 13 {
        Ok(vec![norm_axis(node, attr_i(node, "axis", -1), rank)?])
    } else {
        let a = norm_axis(node, attr_i(node, "axis", 1), rank)?;
        Ok((a..rank).collect())
    }
}

/// Softmax batch axis: unchanged, and not normalised over.
pub fn softmax_batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let b = f.in_batch(node, 0);
    if let Some(b) = b {
        let rank = f.in_shape(node, 0)?.len();
        if softmax_axes(node, f.opset, rank)?.contains(&b) {
            return Err(GradError::unsupported(
                node,
                "normalises over the batch axis",
            ));
        }
    }
    Ok(vec![b])
}

/// Softmax: `x̄ = y ⊙ (ȳ − Σ ȳ ⊙ y)`; LogSoftmax: `x̄ = ȳ − exp(y) Σ ȳ`.
pub fn softmax(
    ctx: &mut Ctx,
    node: &NodeProto,
    gys: &[Option<String>],
) -> Result<Vec<Option<String>>, GradError> {
    let Some(gy) = &gys[0] else {
        return Ok(vec![None]);
    };
    let y = node.output[0].clone();
    let rank = ctx.f.out_shape(node, 0)?.len();
    let axes = softmax_axes(node, ctx.f.opset, rank)?;
    let gx = if node.op_type == "Softmax" {
        let yt = ctx.tile(&y);
        let p = ctx.em.mul(gy, &yt);
        let s = ctx.em.reduce_sum(&p, &axes, true);
        let d = ctx.em.sub(gy, &s);
        ctx.em.mul(&yt, &d)
    } else {
        let e = ctx.em.op("Exp", &[&y], vec![]);
        let e = ctx.tile_as(&e, &y);
        let s = ctx.em.reduce_sum(gy, &axes, true);
        let p = ctx.em.mul(&e, &s);
        ctx.em.sub(gy, &p)
    };
    Ok(vec![Some(gx)])
}
