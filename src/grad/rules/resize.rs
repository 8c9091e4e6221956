//! Resize (nearest, linear): separable and linear in the input, so its VJP multiplies the
//! cotangent by the transposed interpolation matrix of each resized axis, built at build time
//! from the ONNX coordinate-transformation rules.

use tract_onnx::pb::NodeProto;

use super::{Cotangents, Ctx, Facts, InputCotangents};
use crate::grad::error::GradError;
use crate::grad::onnx::{attr_f, attr_i, attr_ints, attr_s, input};

/// Resize batch axis: unchanged; the batch axis must keep its extent.
pub fn batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let Some(b) = f.in_batch(node, 0) else {
        return Ok(vec![None]);
    };
    if f.in_shape(node, 0)?[b] != f.out_shape(node, 0)?[b] {
        return Err(GradError::unsupported(node, "resizes the batch axis"));
    }
    Ok(vec![Some(b)])
}

/// Per-axis scale used by the coordinate transform (given scales, else out/in).
fn scales(f: &Facts, node: &NodeProto, xin: &[usize], xout: &[usize]) -> Vec<f32> {
    let rank = xin.len();
    let given: Option<Vec<f32>> = if f.opset < 11 {
        f.in_f32(node, 1)
    } else {
        f.in_f32(node, 2)
    }
    .filter(|s| !s.is_empty());
    let axes: Vec<usize> = attr_ints(node, "axes")
        .map(|a| {
            a.iter()
                .map(|&x| {
                    if x < 0 {
                        (x + rank as i64) as usize
                    } else {
                        x as usize
                    }
                })
                .collect()
        })
        .unwrap_or_else(|| (0..rank).collect());
    let mut s: Vec<f32> = (0..rank).map(|a| xout[a] as f32 / xin[a] as f32).collect();
    if let Some(g) = given {
        if g.len() == axes.len() {
            for (k, &a) in axes.iter().enumerate() {
                s[a] = g[k];
            }
        }
    }
    s
}

/// Interpolation matrix `R` (row-major `out × in`) of one axis: `y = R x`.
fn matrix(
    node: &NodeProto,
    mode: &str,
    n_in: usize,
    n_out: usize,
    scale: f32,
) -> Result<Vec<f32>, GradError> {
    let ctm = attr_s(node, "coordinate_transformation_mode", "half_pixel");
    let nearest = attr_s(node, "nearest_mode", "round_prefer_floor");
    let mut r = vec![0f32; n_out * n_in];
    let last = n_in as f32 - 1.0;
    for o in 0..n_out {
        let of = o as f32;
        let xo = match ctm.as_str() {
            "half_pixel" => (of + 0.5) / scale - 0.5,
            "pytorch_half_pixel" => {
                if n_out > 1 {
                    (of + 0.5) / scale - 0.5
                } else {
                    0.0
                }
            }
            "align_corners" => {
                if n_out > 1 {
                    of * last / (n_out as f32 - 1.0)
                } else {
                    0.0
                }
            }
            "asymmetric" => of / scale,
            other => {
                return Err(GradError::unsupported(
                    node,
                    format!("coordinate_transformation_mode {other}"),
                ))
            }
        };
        match mode {
            "nearest" => {
                let i = match nearest.as_str() {
                    "round_prefer_floor" => {
                        if xo.fract() == 0.5 {
                            xo.floor()
                        } else {
                            xo.round()
                        }
                    }
                    "round_prefer_ceil" => xo.round(),
                    "floor" => xo.floor(),
                    "ceil" => xo.ceil(),
                    other => {
                        return Err(GradError::unsupported(
                            node,
                            format!("nearest_mode {other}"),
                        ))
                    }
                };
                let i = i.clamp(0.0, last) as usize;
                r[o * n_in + i] += 1.0;
            }
            "linear" => {
                let x = xo.clamp(0.0, last);
                let i0 = x.floor() as usize;
                let i1 = (i0 + 1).min(n_in - 1);
                let w1 = x - i0 as f32;
                r[o * n_in + i0] += 1.0 - w1;
                r[o * n_in + i1] += w1;
            }
            other => return Err(GradError::unsupported(node, format!("mode {other}"))),
        }
    }
    Ok(r)
}

/// Resize: for each resized axis, `x̄ = ȳ ×_axis Rᵀ`.
pub fn resize(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let mut out = vec![None; node.input.len()];
    let Some(gy) = &gys[0] else { return Ok(out) };
    if attr_i(node, "antialias", 0) != 0 {
        return Err(GradError::unsupported(node, "antialias = 1"));
    }
    if attr_s(node, "keep_aspect_ratio_policy", "stretch") != "stretch" {
        return Err(GradError::unsupported(node, "keep_aspect_ratio_policy"));
    }
    let _ = attr_f(node, "extrapolation_value", 0.0);
    let mode = attr_s(node, "mode", "nearest");
    let x = input(node, 0).expect("input").to_string();
    let xin = ctx.f.in_shape(node, 0)?.to_vec();
    let xout = ctx.f.out_shape(node, 0)?.to_vec();
    let s = scales(ctx.f, node, &xin, &xout);
    let mut cur = ctx.f.bw_shape(node, &node.output[0])?;
    let bw_x = ctx.f.bw_shape(node, &x)?;
    let rank = xin.len();
    let mut g = gy.clone();
    for a in 0..rank {
        if xin[a] == xout[a] && (s[a] - 1.0).abs() < 1e-6 {
            continue;
        }
        let r = matrix(node, &mode, xin[a], xout[a], s[a])?;
        let rm = ctx.em.const_f32(&[xout[a], xin[a]], &r);
        let mut perm: Vec<usize> = (0..rank).filter(|&i| i != a).collect();
        perm.push(a);
        let mut inv = vec![0; rank];
        for (j, &p) in perm.iter().enumerate() {
            inv[p] = j;
        }
        let t = ctx.em.transpose(&g, &perm);
        let t = ctx.em.bin("MatMul", &t, &rm);
        g = ctx.em.transpose(&t, &inv);
        cur[a] = bw_x[a];
    }
    out[0] = Some(g);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::grad::onnx::{tensor_f32, tensor_i64, Attr};
    use crate::grad::testutil::one;

    #[test]
    fn resize_nearest_and_linear() {
        let scales = tensor_f32("sc", &[4], &[1.0, 1.0, 2.0, 1.5]);
        let roi = tensor_f32("roi", &[0], &[]);
        for (mode, ctm, nearest) in [
            ("nearest", "asymmetric", "floor"),
            ("nearest", "half_pixel", "round_prefer_floor"),
            ("linear", "half_pixel", "round_prefer_floor"),
            ("linear", "align_corners", "round_prefer_floor"),
            ("linear", "pytorch_half_pixel", "round_prefer_floor"),
            ("linear", "asymmetric", "round_prefer_floor"),
        ] {
            let attrs = vec![
                ("mode", Attr::Str(mode.into())),
                ("coordinate_transformation_mode", Attr::Str(ctm.into())),
                ("nearest_mode", Attr::Str(nearest.into())),
            ];
            one(
                "Resize",
                &["x", "roi", "sc"],
                attrs,
                vec![scales.clone(), roi.clone()],
                &[2, 2, 3, 4],
                13,
            );
        }
        // sizes instead of scales.
        let sizes = tensor_i64("sz", &[4], &[2, 2, 5, 3]);
        let attrs = vec![("mode", Attr::Str("linear".into()))];
        one(
            "Resize",
            &["x", "", "", "sz"],
            attrs,
            vec![sizes],
            &[2, 2, 3, 4],
            13,
        );
    }
}
