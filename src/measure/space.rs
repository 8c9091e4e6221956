//! The space perturbations are measured in: image space `[0,1]` (planar
//! `(C, H, W)`) when the data are images read through preprocessing — so the
//! preprocessing `x = (u·scale − mean)/std` is part of the differentiated
//! function — or model space for `.npy` tensors (the identity map).

use serde::{Deserialize, Serialize};

use crate::attack::vector::argmax;
use crate::data::Dataset;
use crate::error::Result;
use crate::model::Model;
use crate::preprocess::{model_grad_to_image_in_place, to_model_space};

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

    /// Fails unless the measured values are pixels in `[0, 1]` that `measure` can change as
    /// an image: always for images; for `.npy` tensors, when the model's preprocessing is the
    /// identity (planar, scale 1, mean 0, std 1).
    pub fn require_pixels(&self, data: &Dataset, measure: &str) -> Result<()> {
        let spec = &self.model.spec;
        let identity = spec.layout == crate::spec::Layout::Nchw
            && spec.scale == 1.0
            && spec.mean.iter().all(|&m| m == 0.0)
            && spec.std.iter().all(|&s| s == 1.0);
        if self.space == Space::Model && !identity {
            return Err(crate::error::Error::Config(format!(
                "{measure}: {} holds model-space tensors (.npy) and the model's preprocessing is \
                 not the identity, so they are not pixels; give images",
                data.path.display()
            )));
        }
        Ok(())
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

    /// The clean pass over items `start..start + len` of `data`: their values in the measured
    /// space, logits, predictions, and which of them the model classifies as labelled (the
    /// images measures attack; the others are misclassified).
    pub fn clean_pass(&self, data: &Dataset, start: usize, len: usize) -> Result<CleanPass> {
        let u = self.load(data, start, len)?;
        let logits = self.logits(&u, len)?;
        let preds: Vec<usize> = logits.chunks_exact(self.classes()).map(argmax).collect();
        let correct = (0..len)
            .map(|i| data.items[start + i].label.is_none_or(|l| l == preds[i]))
            .collect();
        Ok(CleanPass {
            u,
            logits,
            preds,
            correct,
        })
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

/// A chunk of the data set before any perturbation (see [`SpacedModel::clean_pass`]).
pub struct CleanPass {
    /// Values in the measured space, `len × d`.
    pub u: Vec<f32>,
    /// Logits, `len × K`.
    pub logits: Vec<f32>,
    /// Predicted classes.
    pub preds: Vec<usize>,
    /// Whether each prediction equals the label (always, without a label).
    pub correct: Vec<bool>,
}
