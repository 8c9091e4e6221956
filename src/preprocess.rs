//! The preprocessing between image space and model space, forward and adjoint together.
//!
//! Image space holds planar `(C, H, W)` pixel values in `[0, 1]`, as decoded and resized by
//! [`crate::data`]; model space is what the model reads: `(u · scale − mean[c]) / std[c]`, in
//! the model's layout ([`InputSpec`]). Gradients flow back through [`model_grad_to_image`], the
//! adjoint of the same linear map, so an image goes data → preprocess → model → measure and its
//! gradient comes back the same way.

use crate::spec::{InputSpec, Layout};

/// Converts planar `(C, H, W)` image-space values into model space, in the
/// model's layout, applying `(u * scale - mean[c]) / std[c]`.
pub fn to_model_space(spec: &InputSpec, image: &[f32], out: &mut [f32]) {
    let c = spec.channels.count();
    let plane = spec.height * spec.width;
    match spec.layout {
        Layout::Nchw => {
            for ch in 0..c {
                let (s, m, d) = (spec.scale, spec.mean[ch], spec.std[ch]);
                for (o, &u) in out[ch * plane..(ch + 1) * plane]
                    .iter_mut()
                    .zip(&image[ch * plane..(ch + 1) * plane])
                {
                    *o = (u * s - m) / d;
                }
            }
        }
        Layout::Nhwc => {
            for p in 0..plane {
                for ch in 0..c {
                    out[p * c + ch] = spec.normalise(ch, image[ch * plane + p]);
                }
            }
        }
    }
}

/// Chain rule through the preprocessing: a model-space gradient (model
/// layout) becomes an image-space gradient (planar CHW): `g_u = g_x · scale / std[c]`.
pub fn model_grad_to_image(spec: &InputSpec, gx: &[f32], gu: &mut [f32]) {
    let c = spec.channels.count();
    let plane = spec.height * spec.width;
    for ch in 0..c {
        let f = spec.scale / spec.std[ch];
        for p in 0..plane {
            let src = match spec.layout {
                Layout::Nchw => ch * plane + p,
                Layout::Nhwc => p * c + ch,
            };
            gu[ch * plane + p] = gx[src] * f;
        }
    }
}

/// [`model_grad_to_image`] on one sample's gradient `g`, in place: each channel plane scaled
/// for an NCHW model (no copy: DeepFool on a 224×224 photo converts 9 such gradients per
/// step), a reordering through the scratch `tmp` for an NHWC one.
pub fn model_grad_to_image_in_place(spec: &InputSpec, g: &mut [f32], tmp: &mut Vec<f32>) {
    match spec.layout {
        Layout::Nchw => {
            let plane = spec.height * spec.width;
            for (ch, values) in g.chunks_mut(plane).enumerate() {
                let f = spec.scale / spec.std[ch];
                values.iter_mut().for_each(|v| *v *= f);
            }
        }
        Layout::Nhwc => {
            tmp.resize(g.len(), 0.0);
            model_grad_to_image(spec, g, tmp);
            g.copy_from_slice(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Channels;
    use crate::testutil::spec;
    use rand::{Rng, SeedableRng};

    #[test]
    fn model_space_layouts_agree() {
        let image: Vec<f32> = (0..12).map(|v| v as f32 / 12.0).collect();
        let a = spec(Layout::Nchw, Channels::Rgb, 2, 2);
        let b = spec(Layout::Nhwc, Channels::Rgb, 2, 2);
        let (mut xa, mut xb) = (vec![0.0; 12], vec![0.0; 12]);
        to_model_space(&a, &image, &mut xa);
        to_model_space(&b, &image, &mut xb);
        for c in 0..3 {
            for p in 0..4 {
                assert_eq!(xa[c * 4 + p], xb[p * 3 + c]);
                assert_eq!(xa[c * 4 + p], (image[c * 4 + p] - 0.5) / 0.25);
            }
        }
    }

    /// The image-space gradient is the adjoint of the preprocessing's linear part:
    /// `⟨g_u, du⟩ = ⟨g_x, P(u + du) − P(u)⟩` for every direction `du`, in both layouts.
    #[test]
    fn in_place_gradient_is_the_adjoint_of_the_preprocessing() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let spec = InputSpec {
                scale: 255.0,
                mean: vec![123.7, 116.3, 103.5],
                std: vec![58.4, 57.1, 57.4],
                ..spec(layout, Channels::Rgb, 3, 5)
            };
            let d = spec.sample_len();
            let draw = |rng: &mut rand::rngs::StdRng| -> Vec<f32> {
                (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect()
            };
            let (gx, u, du) = (draw(&mut rng), draw(&mut rng), draw(&mut rng));
            let mut gu = gx.clone();
            model_grad_to_image_in_place(&spec, &mut gu, &mut vec![]);
            let (mut x0, mut x1) = (vec![0.0; d], vec![0.0; d]);
            let moved: Vec<f32> = u.iter().zip(&du).map(|(a, b)| a + b).collect();
            to_model_space(&spec, &u, &mut x0);
            to_model_space(&spec, &moved, &mut x1);
            let dot = |a: &[f32], b: &[f32]| -> f64 {
                a.iter()
                    .zip(b)
                    .map(|(&p, &q)| f64::from(p) * f64::from(q))
                    .sum()
            };
            let dx: Vec<f32> = x1.iter().zip(&x0).map(|(a, b)| a - b).collect();
            let (lhs, rhs) = (dot(&gu, &du), dot(&gx, &dx));
            assert!(
                (lhs - rhs).abs() <= 1e-4 * rhs.abs().max(1.0),
                "{layout:?}: {lhs} vs {rhs}"
            );
            let mut out_of_place = vec![0.0; d];
            model_grad_to_image(&spec, &gx, &mut out_of_place);
            assert_eq!(gu, out_of_place, "{layout:?}");
        }
    }
}
