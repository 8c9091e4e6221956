//! `corruptions`: accuracy under the ImageNet-C corruptions (Hendrycks & Dietterich, ICLR
//! 2019; [`crate::corrupt`]) per corruption and severity, and the corruption errors CE and
//! mCE. Each image is corrupted at the model's input size (as ImageNet-C corrupts the
//! 224×224 crops), 8-bit in and out, with its own seed. `.npy` tensors are corrupted as
//! images when the model's preprocessing is the identity (NCHW, scale 1, mean 0, std 1), so
//! that their values are pixels.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::space::{Space, SpacedModel};
use super::{Context, Declaration, ImageResult, Measure, Outcome, Output, Summary, Units, Values};
use crate::attack::vector::argmax;
use crate::corrupt::{Corruption, RgbPlanes, Severity};
use crate::error::{Error, Result};
use crate::spec::{InputSpec, Layout};

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Corruption names (`georob corrupt --list`).
    pub corruptions: Vec<String>,
    /// Severities, 1 to 5.
    pub severities: Vec<u8>,
}

impl Default for Params {
    /// The 15 corruptions of ImageNet-C (not the 4 extras) at every severity.
    fn default() -> Self {
        Params {
            corruptions: Corruption::ALL
                .iter()
                .filter(|c| c.family() != "extra")
                .map(|c| c.name().to_string())
                .collect(),
            severities: Severity::all().map(Severity::level).collect(),
        }
    }
}

impl Params {
    fn grid(&self) -> Result<Vec<(Corruption, Severity)>> {
        let corruptions = self
            .corruptions
            .iter()
            .map(|n| n.parse::<Corruption>())
            .collect::<Result<Vec<_>>>()?;
        let severities = self
            .severities
            .iter()
            .map(|&s| Severity::new(s))
            .collect::<Result<Vec<_>>>()?;
        if corruptions.is_empty() || severities.is_empty() {
            return Err(Error::Config(
                "corruptions: `corruptions` and `severities` must not be empty".into(),
            ));
        }
        Ok(corruptions
            .iter()
            .flat_map(|&c| severities.iter().map(move |&s| (c, s)))
            .collect())
    }
}

/// Whether model-space tensors are image-space pixels: planar, unscaled, unnormalised.
pub(super) fn pixels_in_model_space(spec: &InputSpec) -> bool {
    spec.layout == Layout::Nchw
        && spec.scale == 1.0
        && spec.mean.iter().all(|&m| m == 0.0)
        && spec.std.iter().all(|&s| s == 1.0)
}

/// The per-image value of corruption `c` at severity `s`.
fn key(c: Corruption, s: Severity) -> String {
    format!("correct_{c}_{s}")
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "corruptions",
        about: "accuracy under the ImageNet-C corruptions per corruption and severity; CE and mCE (unnormalised)",
        params: &[
            ("corruptions", "corruption names [the 15 of ImageNet-C]"),
            ("severities", "severities, 1 to 5 [all]"),
        ],
        headline: &["mce", "relative_mce", "clean_error"],
        histograms: &["corrupted_errors"],
        values: &[&[
            (
                "correct_{corruption_severity}",
                "1 when the prediction on the image corrupted at the severity (e.g. `correct_fog_3`) equals the label (the clean prediction without labels), else 0",
            ),
            ("corrupted_errors", "how many of the corrupted versions are misclassified"),
        ]],
        units: Units::Chunks,
    };

    fn validate(&self) -> Result<()> {
        self.grid().map(|_| ())
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let grid = self.grid()?;
        let sm = SpacedModel::new(ctx.model, ctx.data);
        let spec = &ctx.model.spec;
        if sm.space == Space::Model && !pixels_in_model_space(spec) {
            return Err(Error::Config(format!(
                "corruptions: {} holds model-space tensors (.npy) and the model's preprocessing is \
                 not the identity, so they are not pixels to corrupt; give images",
                ctx.data.path.display()
            )));
        }
        let (d, k) = (sm.dim(), sm.classes());
        let n = ctx.data.len();
        let rows = ctx.model.executor().pass_rows().max(1);
        let bar = ctx.progress.bar((n * grid.len()) as u64, "corruptions");
        let mut images = Vec::with_capacity(n);
        for start in (0..n).step_by(rows) {
            let len = rows.min(n - start);
            let clean = sm.clean_pass(ctx.data, start, len)?;
            let pictures: Vec<RgbPlanes> = clean
                .u
                .chunks_exact(d)
                .map(|u| RgbPlanes::from_planar(u, spec.channels, spec.width, spec.height))
                .collect();
            let mut values: Vec<Values> = vec![Values::default(); len];
            let mut wrong = vec![0usize; len];
            let mut flipped = vec![false; len];
            for &(c, s) in &grid {
                let mut u = vec![0.0f32; len * d];
                u.par_chunks_mut(d).enumerate().for_each(|(i, out)| {
                    let seed = ctx.image_seed(start + i);
                    c.apply(&pictures[i], s, seed).to_planar(spec.channels, out);
                });
                let logits = sm.logits(&u, len)?;
                for (i, row) in logits.chunks_exact(k).enumerate() {
                    let pred = argmax(row);
                    let reference = ctx.data.items[start + i].label.unwrap_or(clean.preds[i]);
                    values[i].insert(key(c, s), f64::from(u8::from(pred == reference)));
                    wrong[i] += usize::from(pred != reference);
                    flipped[i] |= pred != clean.preds[i];
                }
                bar.inc(len as u64);
            }
            for (i, mut v) in values.into_iter().enumerate() {
                v.insert("corrupted_errors", wrong[i] as f64);
                let outcome = if !clean.correct[i] {
                    Outcome::Misclassified
                } else if flipped[i] {
                    Outcome::Fooled
                } else {
                    Outcome::Robust
                };
                let item = &ctx.data.items[start + i];
                images.push(ImageResult::new(start + i, item, clean.preds[i], outcome, v));
            }
        }
        bar.finish_and_clear();
        Ok(Output {
            images,
            ..Output::default()
        })
    }

    /// Per corruption and severity the accuracy and error over every image; per corruption
    /// the CE (mean error over the severities) and relative CE (mean rise over the clean
    /// error); their means over the corruptions, mCE and relative mCE.
    fn summarise(&self, images: &[ImageResult], _parts: Vec<Summary>) -> Result<Summary> {
        let grid = self.grid()?;
        let mut summary = BTreeMap::new();
        if images.is_empty() {
            return Ok(Summary::default());
        }
        let n = images.len() as f64;
        let clean_error = images.iter().filter(|i| i.outcome == Outcome::Misclassified).count() as f64 / n;
        summary.insert("clean_error".to_string(), clean_error);
        let mut per_corruption: BTreeMap<Corruption, Vec<f64>> = BTreeMap::new();
        for &(c, s) in &grid {
            let k = key(c, s);
            let accuracy = images.iter().map(|i| i.values.get(&k).copied().unwrap_or(0.0)).sum::<f64>() / n;
            summary.insert(format!("accuracy_{c}_{s}"), accuracy);
            summary.insert(format!("error_{c}_{s}"), 1.0 - accuracy);
            per_corruption.entry(c).or_default().push(1.0 - accuracy);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let mut ces = vec![];
        for (c, errors) in &per_corruption {
            let ce = mean(errors);
            summary.insert(format!("ce_{c}"), ce);
            summary.insert(format!("relative_ce_{c}"), ce - clean_error);
            ces.push(ce);
        }
        let mce = mean(&ces);
        summary.insert("mce".into(), mce);
        summary.insert("relative_mce".into(), mce - clean_error);
        Ok(Summary {
            summary,
            extra: serde_json::Value::Null,
        })
    }
}
