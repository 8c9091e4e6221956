//! The space perturbations are measured in: image space `[0,1]` (planar
//! `(C, H, W)`) when the data are images read through preprocessing — so the
//! preprocessing `x = (u·scale − mean)/std` is part of the differentiated
//! function — or model space for `.npy` tensors (the identity map).

use serde::{Deserialize, Serialize};

use crate::data::{to_model_space, Dataset};
use crate::error::Result;
use crate::model::Model;
use crate::spec::{InputSpec, Layout};

/// Which space a measure works in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Space {
    /// Pixels in `[0,1]`, planar `(C, H, W)`, before normalisation.
    Image,
    /// The tensor the model consumes, in its layout.
    Model,
}

/// The classifier seen as a function of the measured space: `f(P(u))`.
#[derive(Clone, Copy)]
pub struct SpacedModel<'a> {
    /// The model.
    pub model: &'a Model,
    /// Which space `u` lives in.
    pub space: Space,
}

impl<'a> SpacedModel<'a> {
    /// Image space for image data, model space for `.npy` data.
    pub fn new(model: &'a Model, data: &Dataset) -> Self {
        SpacedModel {
            model,
            space: if data.is_image_space() {
                Space::Image
            } else {
                Space::Model
            },
        }
    }

    /// Values per sample `d`.
    pub fn dim(&self) -> usize {
        self.model.spec.sample_len()
    }

    /// Number of classes `K`.
    pub fn classes(&self) -> usize {
        self.model.classes
    }

    /// Loads items `start..start+len` in this space.
    pub fn load(&self, data: &Dataset, start: usize, len: usize) -> Result<Vec<f32>> {
        match self.space {
            Space::Image => data.load_image_space(&self.model.spec, start, len),
            Space::Model => Ok(data.load(&self.model.spec, start, len)?.x),
        }
    }

    /// Model input for `n` samples `u`.
    pub fn to_model(&self, u: &[f32], n: usize) -> Vec<f32> {
        match self.space {
            Space::Model => u.to_vec(),
            Space::Image => {
                let d = self.dim();
                let mut x = vec![0.0; n * d];
                for (xi, ui) in x.chunks_mut(d).zip(u.chunks(d)) {
                    to_model_space(&self.model.spec, ui, xi);
                }
                x
            }
        }
    }

    /// Logits `(n, K)` of `n` samples `u`.
    pub fn logits(&self, u: &[f32], n: usize) -> Result<Vec<f32>> {
        self.model.logits(&self.to_model(u, n), n)
    }

    /// Logits `(n, K)` and gradients `(n, M, d)` with respect to `u` of
    /// `Σ_k cot[i, m, k] · logit_k`.
    pub fn vjp(&self, u: &[f32], n: usize, cot: &[f32], m: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let (logits, mut g) = self.model.vjp(&self.to_model(u, n), n, cot, m)?;
        if self.space == Space::Image {
            let mut tmp = vec![];
            for gi in g.chunks_mut(self.dim()) {
                model_grad_to_image_in_place(&self.model.spec, gi, &mut tmp);
            }
        }
        Ok((logits, g))
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
    use crate::spec::{Channels, OutputKind};
    use rand::{Rng, SeedableRng};

    /// The image-space gradient is the adjoint of the preprocessing's linear part:
    /// `⟨g_u, du⟩ = ⟨g_x, P(u + du) − P(u)⟩` for every direction `du`, in both layouts.
    #[test]
    fn in_place_gradient_is_the_adjoint_of_the_preprocessing() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let spec = InputSpec {
                layout,
                height: 3,
                width: 5,
                channels: Channels::Rgb,
                scale: 255.0,
                mean: vec![123.7, 116.3, 103.5],
                std: vec![58.4, 57.1, 57.4],
                output: OutputKind::Logits,
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
            crate::data::to_model_space(&spec, &u, &mut x0);
            crate::data::to_model_space(&spec, &moved, &mut x1);
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
