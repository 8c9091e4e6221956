//! `invariance`: how often a *random* transform of a given geodesic size
//! changes the prediction, beside ManiFool's *adversarial* size (Kanbak et
//! al., CVPR 2018, random-transform curves).
//!
//! For each image and trial a random unit direction `v` in the group's
//! parameters (Gaussian, normalised; per-image seed) is walked out,
//! `c ↦ warp(x, exp(c·v))`, in parameter steps of 0.05; the cumulative
//! image-space chord length divided by `‖x‖₂` is exactly ManiFool's score of
//! `exp(c·v)` (the path of the score is this ray), so one walk gives the
//! scale `c_r` of every radius `r` (linear interpolation between steps).
//! Directions that cannot reach a radius within `max_param` (e.g. an image
//! shifted out of view stops changing) count as invalid for that radius and
//! are left out of its probability. All transforms of one image go to the
//! model in one call.
//!
//! Summary: `flip_prob@r` per radius (over valid trials of correctly
//! classified images), `valid@r`, and with `manifool = true` the ManiFool
//! scores of the same images (`manifool_median_score`, ...), so the
//! adversarial and random sizes sit side by side.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use transforms::nalgebra::Matrix3;
use transforms::{image_norms, MatrixWarp, Sampling, TransformGroup, Warp};

use super::frame::{describe, misclassified, result, warp_error, Clean, Frame};
use super::manifool::{manifool_one, Params as ManiFoolParams};
use super::Values;
use super::{Better, Context, Declaration, ImageResult, Measure, Outcome, Output, Summary, Units};
use crate::attack::vector::argmax;
use crate::error::{Error, Result};

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Transform group.
    pub group: String,
    /// Geodesic radii (score units: path length / ‖x‖₂).
    pub radii: Vec<f64>,
    /// Random directions per image.
    pub trials: usize,
    /// Largest parameter-space distance walked.
    pub max_param: f64,
    /// Also run ManiFool on the same images.
    pub manifool: bool,
    /// Fill outside the image: zero, replicate or reflect.
    pub border: String,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            group: "rotation".into(),
            radii: vec![0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0],
            trials: 20,
            max_param: 40.0,
            manifool: true,
            border: "zero".into(),
        }
    }
}

impl Params {
    fn group(&self) -> Result<TransformGroup> {
        super::frame::parse_group("invariance", &self.group)
    }

    fn sampling(&self) -> Result<Sampling> {
        super::frame::parse_sampling("invariance", &self.border)
    }
}

const STEP: f64 = 0.05;

/// Walks `c ↦ warp(x, exp(c·v))` and returns the scale `c` reaching each
/// radius (None when not reached within `max_param`).
#[allow(clippy::too_many_arguments)]
fn scales(
    frame: &Frame,
    x: &[f32],
    norm: f64,
    group: TransformGroup,
    v: &[f64],
    radii: &[f64],
    max_param: f64,
    sampling: Sampling,
) -> Result<Vec<Option<f64>>> {
    let d = frame.d();
    let r_max = radii.iter().copied().fold(0.0, f64::max);
    let chunk = 64usize;
    let mut prev: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut c_prev = 0.0;
    let mut score_prev = 0.0;
    let mut out = vec![None; radii.len()];
    let mut j = 0usize;
    let input: Vec<f32> = x.iter().copied().cycle().take(chunk * d).collect();
    while score_prev < r_max && c_prev < max_param {
        let cs: Vec<f64> = (1..=chunk).map(|i| (j + i) as f64 * STEP).collect();
        j += chunk;
        let mats = cs
            .iter()
            .map(|&c| group.exp(&v.iter().map(|t| t * c).collect::<Vec<_>>()))
            .collect::<std::result::Result<Vec<Matrix3<f64>>, _>>()
            .map_err(warp_error)?;
        let batch = frame.batch(&input, chunk)?;
        let warped = MatrixWarp::new(mats)
            .apply_f64(&batch, sampling)
            .map_err(warp_error)?;
        for (i, img) in warped.chunks_exact(d).enumerate() {
            let step: f64 = img
                .iter()
                .zip(&prev)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt();
            let score = score_prev + step / norm;
            for (o, &r) in out.iter_mut().zip(radii) {
                if o.is_none() && score >= r && score > score_prev {
                    let f = (r - score_prev) / (score - score_prev);
                    *o = Some(c_prev + f * (cs[i] - c_prev));
                }
            }
            prev.copy_from_slice(img);
            c_prev = cs[i];
            score_prev = score;
            if score_prev >= r_max || c_prev >= max_param {
                break;
            }
        }
    }
    Ok(out)
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "invariance",
        about: "probability that a random transform of a given geodesic size flips the prediction, beside ManiFool's score",
        params: &[
            ("group", "Transform group."),
            ("radii", "Geodesic radii (score units: path length / ‖x‖₂)."),
            ("trials", "Random directions per image."),
            ("max_param", "Largest parameter-space distance walked."),
            ("manifool", "Also run ManiFool on the same images."),
            ("border", "Fill outside the image: zero, replicate or reflect."),
        ],
        headline: &["success_rate"],
        better: &[("success_rate", Better::Lower)],
        histograms: &[],
        values: &[&[
            ("manifool_score", "ManiFool's geodesic score for the image"),
            ("flips@{radius}", "random transforms of that geodesic size that flipped the prediction"),
            ("valid@{radius}", "random directions that reach that geodesic size within `max_param`"),
        ]],
        units: Units::Chunks,
    };

    fn validate(&self) -> Result<()> {
        self.group()?;
        self.sampling()?;
        if self.radii.is_empty()
            || self.trials == 0
            || self.radii.iter().any(|r| r.is_nan() || *r <= 0.0)
        {
            return Err(Error::Config(
                "invariance: radii must be positive and non-empty, trials ≥ 1".into(),
            ));
        }
        Ok(())
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let group = self.group()?;
        let sampling = self.sampling()?;
        let (sm, frame) = Frame::of_context(ctx);
        let (k, d, dim) = (sm.classes(), frame.d(), group.dim());
        let nr = self.radii.len();
        let clean = Clean::load(ctx, &sm)?;
        let mf = ManiFoolParams {
            group: self.group.clone(),
            border: self.border.clone(),
            ..Default::default()
        };
        let bar = ctx.progress.bar(clean.n as u64, "invariance");
        let mut images = Vec::with_capacity(clean.n);
        for i in 0..clean.n {
            let row = &clean.logits[i * k..(i + 1) * k];
            let pred = argmax(row);
            if misclassified(ctx, i, pred) {
                images.push(result(ctx, i, pred, Outcome::Misclassified, Values::new()));
                bar.inc(1);
                continue;
            }
            let x = &clean.image(i)?;
            let batch = frame.batch(x, 1)?;
            let norm = image_norms(&batch)[0];
            let mut rng = ChaCha8Rng::seed_from_u64(ctx.image_seed(i));
            let mut mats = Vec::new();
            let mut slots = Vec::new();
            for _ in 0..self.trials {
                let mut v: Vec<f64> = (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect();
                let n = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-300);
                v.iter_mut().for_each(|a| *a /= n);
                let cs = scales(&frame, x, norm, group, &v, &self.radii, self.max_param, sampling)?;
                for (r, c) in cs.iter().enumerate() {
                    if let Some(c) = c {
                        let t: Vec<f64> = v.iter().map(|a| a * c).collect();
                        mats.push(group.exp(&t).map_err(warp_error)?);
                        slots.push(r);
                    }
                }
            }
            let mut values = Values::new();
            let mut any_flip = false;
            if !mats.is_empty() {
                let m = mats.len();
                let input: Vec<f32> = x.iter().copied().cycle().take(m * d).collect();
                let b = frame.batch(&input, m)?;
                let warped = MatrixWarp::new(mats)
                    .apply(&b, sampling)
                    .map_err(warp_error)?;
                let logits = sm.logits(&warped, m)?;
                let (mut img_flips, mut img_valid) = (vec![0usize; nr], vec![0usize; nr]);
                for (row, &r) in logits.chunks_exact(k).zip(&slots) {
                    img_valid[r] += 1;
                    if argmax(row) != pred {
                        img_flips[r] += 1;
                        any_flip = true;
                    }
                }
                for (r, radius) in self.radii.iter().enumerate() {
                    values.insert(format!("flips@{radius}"), img_flips[r] as f64);
                    values.insert(format!("valid@{radius}"), img_valid[r] as f64);
                }
            }
            if self.manifool {
                let found = manifool_one(&sm, &frame, x, row, group, &mf, sampling)?;
                if let Some((_, s)) = found.fooled {
                    values.insert("manifool_score", s);
                }
            }
            let outcome = if any_flip {
                Outcome::Fooled
            } else {
                Outcome::Robust
            };
            images.push(result(ctx, i, pred, outcome, values));
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(Output {
            images,
            extra: serde_json::json!({
                "group": group.name(),
                "score": "path length of c -> warp(x, exp(c v)) in parameter steps of 0.05, divided by ||x||_2",
            }),
            ..Output::default()
        })
    }

    /// Per radius, flips over valid random transforms of every image; ManiFool's scores of
    /// the images it fooled and the count of the others it searched.
    fn summarise(&self, images: &[ImageResult], parts: Vec<Summary>) -> Result<Summary> {
        let mut summary = BTreeMap::from([("images".to_string(), images.len() as f64)]);
        let mut curve = Vec::new();
        for radius in &self.radii {
            let total = |key: String| super::values_of(images, &key).iter().sum::<f64>() as usize;
            let (flips, valid) = (total(format!("flips@{radius}")), total(format!("valid@{radius}")));
            let prob = (valid > 0).then(|| flips as f64 / valid as f64);
            if let Some(prob) = prob {
                summary.insert(format!("flip_prob@{radius}"), prob);
            }
            summary.insert(format!("valid@{radius}"), valid as f64);
            curve.push(serde_json::json!({"radius": radius, "flip_prob": prob, "valid": valid, "flips": flips}));
        }
        let mf_scores = super::values_of(images, "manifool_score");
        if self.manifool {
            describe(&mut summary, "manifool_score", &mf_scores);
            let searched = images
                .iter()
                .filter(|i| i.outcome != Outcome::Misclassified)
                .count();
            summary.insert("manifool_failed".into(), (searched - mf_scores.len()) as f64);
        }
        let mut extra = Summary::first_extra(&parts);
        extra["curve"] = serde_json::json!(curve);
        extra["manifool_scores"] = serde_json::json!(mf_scores);
        Ok(Summary { summary, extra })
    }
}
