//! Normalisations: BatchNormalization (inference), InstanceNormalization, LayerNormalization.

use tract_onnx::pb::NodeProto;

use super::{active_input_unsupported, norm_axis, Cotangents, Ctx, Facts, InputCotangents};
use crate::grad::error::GradError;
use crate::grad::onnx::{attr_f, attr_i, input};

fn check_params_inactive(ctx: &Ctx, node: &NodeProto) -> Result<(), GradError> {
    for i in 1..node.input.len() {
        if ctx.f.in_active(node, i) {
            return Err(active_input_unsupported(node, i));
        }
    }
    Ok(())
}

/// BatchNormalization in inference mode: `x̄ = ȳ · γ / √(σ² + ε)` per channel (axis 1).
pub fn batch_norm(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    check_params_inactive(ctx, node)?;
    if attr_i(node, "training_mode", 0) != 0 {
        return Err(GradError::unsupported(node, "training_mode = 1"));
    }
    let mut out = vec![None; node.input.len()];
    let Some(gy) = &gys[0] else { return Ok(out) };
    let rank = ctx.f.in_shape(node, 0)?.len();
    let c = ctx.f.in_shape(node, 0)?.get(1).copied().unwrap_or(1);
    let eps = attr_f(node, "epsilon", 1e-5);
    let scale = input(node, 1).expect("BN scale").to_string();
    let var = input(node, 4).expect("BN var").to_string();
    let em = &mut *ctx.em;
    let e = em.scalar(eps);
    let v = em.add(&var, &e);
    let sd = em.op("Sqrt", &[&v], vec![]);
    let s = em.div(&scale, &sd);
    let mut dims = vec![c];
    dims.extend(std::iter::repeat_n(1, rank.saturating_sub(2)));
    let s = em.reshape(&s, &dims);
    out[0] = Some(em.mul(gy, &s));
    Ok(out)
}

/// Shared VJP of `ŷ = (x − μ)/σ` over `axes`, given `a = ȳ ⊙ γ` (backward batch):
/// `x̄ = (a − mean(a) − x̂ · mean(a ⊙ x̂)) / σ`.
fn normalize_vjp(ctx: &mut Ctx, x: &str, axes: &[usize], eps: f32, a: &str) -> String {
    let b = ctx.f.batch_axis(x);
    let outer = ctx.f.outer(x);
    let shape = ctx.f.probe.shapes.get(x).cloned().unwrap_or_default();
    let mut kept = shape.clone();
    for &a in axes {
        kept[a] = 1;
    }
    let em = &mut *ctx.em;
    let mu = em.reduce_mean(x, axes, true);
    let xc = em.sub(x, &mu);
    let sq = em.mul(&xc, &xc);
    let var = em.reduce_mean(&sq, axes, true);
    let e = em.scalar(eps);
    let v = em.add(&var, &e);
    let sd = em.op("Sqrt", &[&v], vec![]);
    let rstd = em.op("Reciprocal", &[&sd], vec![]);
    let xhat = em.mul(&xc, &rstd);
    let xhat = ctx.tile_shaped(&xhat, &shape, b, outer);
    let rstd = ctx.tile_shaped(&rstd, &kept, b, outer);
    let em = &mut *ctx.em;
    let ma = em.reduce_mean(a, axes, true);
    let ax = em.mul(a, &xhat);
    let max = em.reduce_mean(&ax, axes, true);
    let t = em.mul(&xhat, &max);
    let d = em.sub(a, &ma);
    let d = em.sub(&d, &t);
    em.mul(&d, &rstd)
}

/// InstanceNormalization: per-(n, c) normalisation over the spatial axes.
pub fn instance_norm(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    check_params_inactive(ctx, node)?;
    let mut out = vec![None; node.input.len()];
    let Some(gy) = &gys[0] else { return Ok(out) };
    let x = input(node, 0).expect("input").to_string();
    let shape = ctx.f.in_shape(node, 0)?.to_vec();
    let rank = shape.len();
    let eps = attr_f(node, "epsilon", 1e-5);
    let scale = input(node, 1).expect("scale").to_string();
    let mut dims = vec![shape[1]];
    dims.extend(std::iter::repeat_n(1, rank - 2));
    let s = ctx.em.reshape(&scale, &dims);
    let a = ctx.em.mul(gy, &s);
    let axes: Vec<usize> = (2..rank).collect();
    out[0] = Some(normalize_vjp(ctx, &x, &axes, eps, &a));
    Ok(out)
}

fn layer_norm_axes(node: &NodeProto, rank: usize) -> Result<Vec<usize>, GradError> {
    let a = norm_axis(node, attr_i(node, "axis", -1), rank)?;
    Ok((a..rank).collect())
}

/// LayerNormalization batch axis: unchanged, and not normalised over.
pub fn layer_norm_batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let b = f.in_batch(node, 0);
    if let Some(b) = b {
        if layer_norm_axes(node, f.in_shape(node, 0)?.len())?.contains(&b) {
            return Err(GradError::unsupported(
                node,
                "normalises over the batch axis",
            ));
        }
    }
    Ok(vec![b; node.output.len()])
}

/// LayerNormalization (opset 17): normalisation over `[axis, rank)`, scale broadcast.
pub fn layer_norm(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    check_params_inactive(ctx, node)?;
    let mut out = vec![None; node.input.len()];
    if gys.iter().skip(1).any(|g| g.is_some()) {
        return Err(GradError::unsupported(
            node,
            "gradient through Mean/InvStdDev outputs",
        ));
    }
    let Some(gy) = &gys[0] else { return Ok(out) };
    let x = input(node, 0).expect("input").to_string();
    let rank = ctx.f.in_shape(node, 0)?.len();
    let eps = attr_f(node, "epsilon", 1e-5);
    let scale = input(node, 1).expect("scale").to_string();
    let a = ctx.em.mul(gy, &scale);
    let axes = layer_norm_axes(node, rank)?;
    out[0] = Some(normalize_vjp(ctx, &x, &axes, eps, &a));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::grad::onnx::{tensor_f32, Attr};
    use crate::grad::testutil::{one, w};

    #[test]
    fn batch_norm_instance_norm_layer_norm() {
        let c = 3;
        let bn = vec![
            w("s", &[c], 30),
            w("b", &[c], 31),
            w("mu", &[c], 32),
            tensor_f32("var", &[c], &[0.5, 1.0, 2.0]),
        ];
        one(
            "BatchNormalization",
            &["x", "s", "b", "mu", "var"],
            vec![("epsilon", Attr::Float(1e-3))],
            bn,
            &[2, 3, 4, 2],
            15,
        );
        let inn = vec![w("s", &[c], 33), w("b", &[c], 34)];
        one(
            "InstanceNormalization",
            &["x", "s", "b"],
            vec![],
            inn,
            &[2, 3, 5, 2],
            13,
        );
        let ln = vec![w("s", &[4], 35), w("b", &[4], 36)];
        one(
            "LayerNormalization",
            &["x", "s", "b"],
            vec![],
            ln,
            &[2, 3, 4],
            17,
        );
        let ln = vec![w("s", &[3, 4], 37)];
        one(
            "LayerNormalization",
            &["x", "s"],
            vec![("axis", Attr::Int(1))],
            ln,
            &[2, 3, 4],
            17,
        );
    }
}
