//! Piecewise activations (Relu, LeakyRelu, PRelu, Clip, HardSigmoid, HardSwish) and
//! Softmax/LogSoftmax.
//!
//! At the kinks the derivative is taken from the open side: Relu and Clip pass the cotangent
//! only where `x > 0`, `min < x < max` (as PyTorch's relu and hardtanh/ReLU6 do).

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::NodeProto;

use super::{active_input_unsupported, norm_axis, Cotangents, Ctx, Facts, InputCotangents};
use crate::grad::emit::Emitter;
use crate::grad::error::GradError;
use crate::grad::onnx::{attr, attr_f, attr_i, input, Attr};

/// VJP of the piecewise activations: `x̄ = ȳ · f'(x)`.
pub fn activation(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    for i in 1..node.input.len() {
        if ctx.f.in_active(node, i) {
            return Err(active_input_unsupported(node, i));
        }
    }
    let mut out = vec![None; node.input.len()];
    let Some(gy) = &gys[0] else { return Ok(out) };
    let x = input(node, 0).expect("activation input").to_string();
    let y = node.output[0].clone();
    let f = ctx.f;
    let channels = mask_channels(f, node);
    let em = &mut *ctx.em;
    let d = match node.op_type.as_str() {
        // Relu and Clip read their mask off the output (`y > 0` iff `x > 0`, `lo < y < hi`
        // iff `lo < x < hi`), so the pre-activation need not outlive the forward pass and
        // backends can fuse the activation into the op before it.
        "Relu" => match channels {
            Some(c) => open_interval_mask(em, &y, c, Some(0.0), None),
            None => {
                let zero = em.scalar(0.0);
                let p = em.bin("Greater", &y, &zero);
                em.cast(&p, DataType::Float)
            }
        },
        "LeakyRelu" => {
            let alpha = attr_f(node, "alpha", 0.01);
            let zero = em.scalar(0.0);
            let p = em.bin("Greater", &x, &zero);
            let one = em.scalar(1.0);
            let a = em.scalar(alpha);
            em.op("Where", &[&p, &one, &a], vec![])
        }
        "PRelu" => {
            let slope = input(node, 1).expect("PRelu slope").to_string();
            let zero = em.scalar(0.0);
            let p = em.bin("Greater", &x, &zero);
            let one = em.scalar(1.0);
            em.op("Where", &[&p, &one, &slope], vec![])
        }
        "Clip" => match (channels, clip_bounds(f, node)) {
            (Some(c), Some((lo, hi))) if ordered_bounds(lo, hi) => {
                open_interval_mask(em, &y, c, lo, hi)
            }
            _ => {
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
                let above = lo.map(|lo| em.bin("Greater", &y, &lo));
                let below = hi.map(|hi| em.bin("Less", &y, &hi));
                let m = match (above, below) {
                    (Some(a), Some(b)) => em.bin("And", &a, &b),
                    (Some(a), None) => a,
                    (None, Some(b)) => b,
                    (None, None) => return Ok(vec![Some(gy.clone())]),
                };
                em.cast(&m, DataType::Float)
            }
        },
        "HardSigmoid" => {
            let alpha = attr_f(node, "alpha", 0.2);
            let beta = attr_f(node, "beta", 0.5);
            let t = em.scale(&x, alpha);
            let b = em.scalar(beta);
            let t = em.add(&t, &b);
            let one = em.scalar(1.0);
            let zero = em.scalar(0.0);
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

/// Channels of a 4-D activation whose mask can be built by [`open_interval_mask`], or `None`
/// (other ranks, or opsets before BatchNormalization-9).
fn mask_channels(f: &Facts, node: &NodeProto) -> Option<usize> {
    let shape = f.out_shape(node, 0).ok()?;
    (f.opset >= 9 && shape.len() == 4).then(|| shape[1])
}

/// Clip's bounds when both are constants (`None` for an absent one), else `None`.
fn clip_bounds(f: &Facts, node: &NodeProto) -> Option<(Option<f32>, Option<f32>)> {
    if f.opset < 11 {
        return Some((
            attr(node, "min").map(|a| a.f),
            attr(node, "max").map(|a| a.f),
        ));
    }
    let bound = |i: usize| match input(node, i) {
        None => Some(None),
        Some(_) => f
            .in_f32(node, i)
            .filter(|v| v.len() == 1)
            .map(|v| Some(v[0])),
    };
    Some((bound(1)?, bound(2)?))
}

/// Whether Clip bounds suit [`open_interval_mask`]: at least one, all finite, `lo < hi`.
/// (With `lo ≥ hi` Clip returns `hi` everywhere and its derivative is 0.)
fn ordered_bounds(lo: Option<f32>, hi: Option<f32>) -> bool {
    let finite = |b: Option<f32>| b.is_none_or(f32::is_finite);
    (lo.is_some() || hi.is_some())
        && finite(lo)
        && finite(hi)
        && lo.zip(hi).is_none_or(|(lo, hi)| lo < hi)
}

/// The float mask `1[lo < y < hi]` of a clipped tensor `y` (`lo ≤ y ≤ hi`, either bound
/// optional), built from per-channel affine maps (BatchNormalization), Relu, Add and
/// HardSigmoid only: ops that ONNX Runtime runs in its blocked NCHWc layout and fuses into one
/// depthwise 1×1 kernel each (an Add and the activation after it fuse too), so the mask costs
/// no layout conversions around the convolutions that make `y` and consume the masked
/// cotangent (`Greater`/`Less`/`And`/`Cast` cost 62 NCHWc→NCHW reorders on EfficientNet-Lite0,
/// which slowed the gradient). ONNX Runtime does not fuse a Clip after a
/// BatchNormalization; `HardSigmoid(x; α, β) = Clip(α·x + β, 0, 1)` is the clip it fuses.
///
/// Each bound gives `t = 1 − K·|y − bound|`, exactly 1 at the bound and ≤ 0 inside
/// ([`bound_step`] says why), and the mask is `Clip(1 − Σ Relu(t), 0, 1)`:
/// - one bound (Relu): `HardSigmoid(y)` with `α·y + β = 1 − t`, one kernel;
/// - `Clip(0, hi)` (ReLU6): `HardSigmoid(t_hi + Relu(B − B·K_lo·y); −1, 1)` with
///   `B = K_hi·hi`, two kernels; at `y = 0` the sum is `(1 − B) + B = 1` exactly;
/// - other bound pairs: `1 − Relu(t_lo) − Relu(t_hi)`, three kernels.
fn open_interval_mask(
    em: &mut Emitter,
    y: &str,
    channels: usize,
    lo: Option<f32>,
    hi: Option<f32>,
) -> String {
    let affine = |em: &mut Emitter, x: &str, scale: f32, bias: f32| {
        let c = [channels];
        let params = [
            em.const_f32(&c, &vec![scale; channels]),
            em.const_f32(&c, &vec![bias; channels]),
            em.const_f32(&c, &vec![0.0; channels]),
            em.const_f32(&c, &vec![1.0; channels]),
        ];
        let mut inputs = vec![x];
        inputs.extend(params.iter().map(|s| s.as_str()));
        em.op(
            "BatchNormalization",
            &inputs,
            vec![("epsilon", Attr::Float(0.0))],
        )
    };
    // `Clip(1 − x, 0, 1)`, and `Clip(1 − t, 0, 1)` of one bound straight off `y`.
    let one_minus = |em: &mut Emitter, x: &str, alpha: f32, beta: f32| {
        let attrs = vec![("alpha", Attr::Float(alpha)), ("beta", Attr::Float(beta))];
        em.op("HardSigmoid", &[x], attrs)
    };
    match (lo, hi) {
        (Some(lo), Some(hi)) if lo == 0.0 && hi > 0.0 => {
            let (k_hi, c_hi) = bound_step(hi, 1.0);
            let (k_lo, _) = bound_step(0.0, -1.0);
            // B·r_lo = Relu(B − B·K_lo·y): B = K_hi·hi = 1 − c_hi is an integer below 2²⁵,
            // so t_hi(0) + B = (1 − B) + B = 1 exactly.
            let b = 1.0 - c_hi;
            let r_lo = affine(em, y, -b * k_lo, b);
            let r_lo = em.op("Relu", &[&r_lo], vec![]);
            let t_hi = affine(em, y, k_hi, c_hi);
            let t = em.add(&t_hi, &r_lo);
            one_minus(em, &t, -1.0, 1.0)
        }
        (Some(b), None) | (None, Some(b)) => {
            let sign = if hi.is_some() { 1.0 } else { -1.0 };
            let (k, c) = bound_step(b, sign);
            one_minus(em, y, -sign * k, 1.0 - c)
        }
        (Some(lo), Some(hi)) => {
            let mut r = vec![];
            for (bound, sign) in [(lo, -1.0f32), (hi, 1.0)] {
                let (k, c) = bound_step(bound, sign);
                let t = affine(em, y, sign * k, c);
                r.push(em.op("Relu", &[&t], vec![]));
            }
            let at_bounds = em.add(&r[0], &r[1]);
            affine(em, &at_bounds, -1.0, 1.0)
        }
        (None, None) => unreachable!("open_interval_mask needs a bound"),
    }
}

/// Gain `K` (a power of two) and bias `c` of `t = sign·K·y + c = 1 − K·|y − bound|` for the
/// lower (`sign = −1`) or upper (`sign = +1`) bound, chosen so that `Relu(t)` is exactly 1 at
/// `y = bound` and exactly 0 at every float inside. `K·bound` is an integer below 2²⁵, so `c`
/// is exact; `K·y` is exact (power-of-two scaling); and `K` times the smallest gap between
/// `bound` and its inside neighbour is at least 1, so `t ≤ 0` there, and rounding, being
/// monotone, keeps it ≤ 0. That gap is `ulp(bound)`, or half of it when `|bound|` is a power
/// of two and the inside lies towards zero. A zero bound takes `K = 2⁸⁰`: exact except for
/// `0 < |y| < 2⁻⁸⁰`, where the mask is a fraction (and for bounds below 2⁻¹⁰⁰ in magnitude).
fn bound_step(bound: f32, sign: f32) -> (f32, f32) {
    if bound == 0.0 || !bound.is_normal() {
        return (2f32.powi(80), 1.0);
    }
    let bits = bound.abs().to_bits();
    let exponent = ((bits >> 23) & 0xff) as i32 - 127;
    let power_of_two = bits & 0x7f_ffff == 0;
    // The inside is below an upper bound and above a lower one.
    let inside_towards_zero = (sign > 0.0) == (bound > 0.0);
    let shift = if power_of_two && inside_towards_zero {
        24
    } else {
        23
    };
    let k = 2f32.powi((shift - exponent).min(126));
    (k, 1.0 - sign * k * bound)
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
pub fn softmax(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
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

#[cfg(test)]
mod tests {
    use super::bound_step;
    use crate::grad::onnx::{tensor_f32, Attr};
    use crate::grad::testutil::{assert_grad, chain, model, node, one};

    /// `Relu(sign·K·y + c)` in f32, as a backend computes it: a multiply then an add, or one
    /// fused multiply-add.
    fn at_bound(y: f32, bound: f32, sign: f32, fused: bool) -> f32 {
        let (k, c) = bound_step(bound, sign);
        let t = if fused {
            (sign * k).mul_add(y, c)
        } else {
            sign * k * y + c
        };
        t.max(0.0)
    }

    /// Floats from `from` towards `to`, `n` steps of one ulp.
    fn neighbours(from: f32, to: f32, n: usize) -> Vec<f32> {
        let mut v = vec![from];
        for _ in 0..n {
            let x = *v.last().unwrap();
            let next = if to > x { x.next_up() } else { x.next_down() };
            v.push(next);
        }
        v
    }

    /// `HardSigmoid(y; −sign·K, 1 − c)` = `Clip(1 − t, 0, 1)` for one bound, as a multiply
    /// then an add or one fused multiply-add.
    fn one_bound_mask(y: f32, bound: f32, sign: f32, fused: bool) -> f32 {
        let (k, c) = bound_step(bound, sign);
        let s = if fused {
            (-sign * k).mul_add(y, 1.0 - c)
        } else {
            -sign * k * y + (1.0 - c)
        };
        s.clamp(0.0, 1.0)
    }

    /// The ReLU6 form `HardSigmoid(t_hi(y) + Relu(B − B·K_lo·y); −1, 1)`, each affine map a
    /// multiply then an add or one fused multiply-add.
    fn relu6_mask(y: f32, hi: f32, fused: bool) -> f32 {
        let (k_hi, c_hi) = bound_step(hi, 1.0);
        let (k_lo, _) = bound_step(0.0, -1.0);
        let b = 1.0 - c_hi;
        let (t_hi, r_lo) = if fused {
            (k_hi.mul_add(y, c_hi), (-b * k_lo).mul_add(y, b))
        } else {
            (k_hi * y + c_hi, -b * k_lo * y + b)
        };
        let t = t_hi + r_lo.max(0.0);
        if fused {
            (-1f32).mul_add(t, 1.0).clamp(0.0, 1.0)
        } else {
            (1.0 - t).clamp(0.0, 1.0)
        }
    }

    /// Values of `[lo, hi]` that test the masks: the bounds and their nearest neighbours,
    /// a grid, and (for `lo = 0`) powers of two down to 2⁻¹⁹⁹.
    fn samples(lo: f32, hi: f32) -> Vec<f32> {
        let mut ys = neighbours(lo, hi, 300);
        ys.extend(neighbours(hi, lo, 300));
        ys.extend((0..=1000).map(|i| lo + (hi - lo) * i as f32 / 1000.0));
        if lo == 0.0 {
            ys.extend((0..200).map(|e| 2f32.powi(-e)));
        }
        ys.retain(|&y| lo <= y && y <= hi);
        ys
    }

    /// Below 2⁻⁸⁰ a zero lower bound's mask may be a fraction (see `bound_step`).
    fn tiny(lo: f32, y: f32) -> bool {
        lo == 0.0 && y > 0.0 && y < 2f32.powi(-80)
    }

    const INTERVALS: [(f32, f32); 9] = [
        (0.0, 6.0),
        (0.0, 1.0),
        (-1.0, 1.0),
        (0.5, 3.0),
        (-6.0, -0.25),
        (-2.0, 4.0),
        (-0.3, 0.4),
        (0.0, 0.1),
        (1e-20, 3e10),
    ];

    /// Asserts that `f(y, bound, sign, fused)` is exactly `at` at each bound of every interval
    /// and exactly `inside` elsewhere in it, for both evaluation orders.
    fn assert_per_bound(f: fn(f32, f32, f32, bool) -> f32, at: f32, inside: f32) {
        for (lo, hi) in INTERVALS {
            for y in samples(lo, hi) {
                for fused in [false, true] {
                    let want = |b: f32| if y == b { at } else { inside };
                    if !tiny(lo, y) {
                        let lower = f(y, lo, -1.0, fused);
                        assert_eq!(lower, want(lo), "lower bound {lo}, y {y:e}, fused {fused}");
                    }
                    let upper = f(y, hi, 1.0, fused);
                    assert_eq!(upper, want(hi), "upper bound {hi}, y {y:e}, fused {fused}");
                }
            }
        }
    }

    #[test]
    fn the_bound_indicator_is_exactly_one_at_the_bound_and_zero_inside() {
        assert_per_bound(at_bound, 1.0, 0.0);
    }

    #[test]
    fn one_bound_masks_are_exactly_zero_at_the_bound_and_one_inside() {
        assert_per_bound(one_bound_mask, 0.0, 1.0);
    }

    #[test]
    fn relu6_mask_is_exactly_zero_at_both_bounds_and_one_inside() {
        for hi in [6.0f32, 1.0, 0.4, 3.0, 0.1, 1e6, 3e10] {
            for y in samples(0.0, hi) {
                for fused in [false, true] {
                    let want = if y == 0.0 || y == hi { 0.0 } else { 1.0 };
                    if !tiny(0.0, y) {
                        assert_eq!(relu6_mask(y, hi, fused), want, "hi {hi}, y {y:e}");
                    }
                }
            }
        }
    }

    #[test]
    fn piecewise_activations() {
        one("Relu", &["x"], vec![], vec![], &[2, 9], 13);
        one(
            "LeakyRelu",
            &["x"],
            vec![("alpha", Attr::Float(0.1))],
            vec![],
            &[2, 9],
            13,
        );
        one(
            "HardSigmoid",
            &["x"],
            vec![("alpha", Attr::Float(0.3))],
            vec![],
            &[2, 9],
            13,
        );
        let m = model(
            vec![node("HardSwish", &["x"], "y", vec![])],
            vec![],
            "x",
            &[2, 9],
            "y",
            14,
        );
        assert_grad(&m, &[2, 9], 5.0);
        let slope = tensor_f32("s", &[3, 1], &[0.1, 0.2, -0.3]);
        one("PRelu", &["x", "s"], vec![], vec![slope], &[2, 3, 3], 13);
    }

    #[test]
    fn clip_attribute_and_input_forms() {
        let lo = tensor_f32("lo", &[], &[-0.3]);
        let hi = tensor_f32("hi", &[], &[0.4]);
        one(
            "Clip",
            &["x", "lo", "hi"],
            vec![],
            vec![lo.clone(), hi],
            &[2, 9],
            13,
        );
        one("Clip", &["x", "lo"], vec![], vec![lo.clone()], &[2, 9], 12);
        // Relu6 at opset 6–10: min/max attributes.
        let attrs = vec![("min", Attr::Float(0.0)), ("max", Attr::Float(0.5))];
        one("Clip", &["x"], attrs.clone(), vec![], &[2, 9], 10);
        // 4-D: constant bounds take the BatchNormalization/Relu mask (one lower bound, both,
        // and the fused `Clip(0, hi)` form), as does Relu.
        let zero = tensor_f32("zero", &[], &[0.0]);
        let hi = tensor_f32("hi", &[], &[0.4]);
        let image = [2, 3, 4, 4];
        one("Clip", &["x", "lo"], vec![], vec![lo.clone()], &image, 13);
        one(
            "Clip",
            &["x", "lo", "hi"],
            vec![],
            vec![lo, hi.clone()],
            &image,
            13,
        );
        one(
            "Clip",
            &["x", "zero", "hi"],
            vec![],
            vec![zero, hi],
            &image,
            13,
        );
        one("Clip", &["x"], attrs, vec![], &image, 10);
        one("Relu", &["x"], vec![], vec![], &image, 13);
    }

    /// `op` followed by a scale, so that the softmax is not the final node (which would be
    /// skipped as pre-softmax logits).
    fn not_last(op: &str, attrs: Vec<(&str, Attr)>, shape: &[usize], opset: i64) {
        let nodes = vec![
            node(op, &["x"], "s", attrs),
            node("Mul", &["s", "k"], "y", vec![]),
        ];
        let k = tensor_f32("k", &[], &[3.0]);
        assert_grad(&chain(nodes, vec![k], shape, opset), shape, 1.0);
    }

    #[test]
    fn softmax_axes_across_opsets() {
        // opset 11: axis 1 on a 3-D tensor coerces to 2-D: normalise over axes 1 and 2.
        not_last("Softmax", vec![("axis", Attr::Int(1))], &[2, 3, 4], 11);
        not_last("LogSoftmax", vec![("axis", Attr::Int(1))], &[2, 3, 4], 11);
        // opset 13: a single axis.
        not_last("Softmax", vec![("axis", Attr::Int(1))], &[2, 3, 4], 13);
        not_last("LogSoftmax", vec![], &[2, 3, 4], 13);
    }
}
