//! `noise`: random-noise robustness (Fawzi et al., NIPS 2016; METHODS.md §3).
//!
//! Per image, `directions` unit vectors `v` uniform on the sphere; along
//! each, the smallest `|t|` (either sign) with `k̂(x + t·v) ≠ k0`, found by
//! doubling from `‖r*‖` then bisection, every ray of a batch of images in one
//! model call per round. Per image the **median** over directions (the
//! hitting distance has infinite mean even for a linear model); reported as
//! a ratio to the DeepFool norm `‖r*‖`, beside `√d`. Noisy points are not
//! clipped to the box.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::deepfool::{argmax, l2, DeepFoolOptions, Keep, Norm};
use super::space::SpacedModel;
use super::{Context, Measure, MeasureInfo, MeasureResult, Outcome};
use crate::error::Result;

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Random directions per image.
    pub directions: usize,
    /// Doublings of `t` (from `‖r*‖·√d/4`) before a ray counts as unflipped.
    pub doublings: usize,
    /// Bisection steps.
    pub bisections: usize,
    /// DeepFool overshoot (for `‖r*‖`).
    pub overshoot: f32,
    /// DeepFool iteration budget.
    pub max_iter: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            directions: 50,
            doublings: 24,
            bisections: 10,
            overshoot: 0.02,
            max_iter: 50,
        }
    }
}

/// The random-noise measure.
pub struct Noise {
    params: Params,
}

pub(super) fn info() -> MeasureInfo {
    MeasureInfo {
        name: "noise",
        about: "random-noise robustness: median over random directions of the smallest flipping |t|, ratio to the DeepFool norm beside sqrt(d)",
        defaults: || super::defaults::<Params>(),
        build: |p| {
            Ok(Box::new(Noise {
                params: super::parse_params("noise", p)?,
            }))
        },
    }
}

/// Smallest `t > 0` with `k̂(x_i + t·dir) ≠ k0_i` for every ray `(image, dir)`
/// (`None`: no flip up to `t0·2^doublings`). `x` is `(n, d)`, `dirs` is
/// `(rays, d)` with `owner[ray]` the image, `t0[ray]` the starting scale.
#[allow(clippy::too_many_arguments)]
pub fn line_search(
    model: &SpacedModel,
    x: &[f32],
    k0: &[usize],
    dirs: &[f32],
    owner: &[usize],
    t0: &[f64],
    doublings: usize,
    bisections: usize,
) -> Result<Vec<Option<f64>>> {
    let d = model.dim();
    let k = model.classes();
    let rays = owner.len();
    // lo: largest t known not to flip (0), hi: smallest known to flip.
    let mut lo = vec![0.0f64; rays];
    let mut hi: Vec<Option<f64>> = vec![None; rays];
    let mut next: Vec<f64> = t0.to_vec();
    let mut round = vec![0usize; rays];
    let limit = 32_000_000 / d.max(1);
    loop {
        let todo: Vec<usize> = (0..rays)
            .filter(|&r| match hi[r] {
                None => round[r] <= doublings,
                Some(_) => round[r] < bisections,
            })
            .collect();
        if todo.is_empty() {
            break;
        }
        for part in todo.chunks(limit.max(1)) {
            let mut pts = Vec::with_capacity(part.len() * d);
            for &r in part {
                let xi = &x[owner[r] * d..(owner[r] + 1) * d];
                let v = &dirs[r * d..(r + 1) * d];
                let t = next[r] as f32;
                pts.extend(xi.iter().zip(v).map(|(a, b)| a + t * b));
            }
            let logits = model.logits(&pts, part.len())?;
            for (a, &r) in part.iter().enumerate() {
                let flipped = argmax(&logits[a * k..(a + 1) * k]) != k0[owner[r]];
                let t = next[r];
                if hi[r].is_none() {
                    if flipped {
                        hi[r] = Some(t);
                        round[r] = 0;
                    } else {
                        lo[r] = t;
                        round[r] += 1;
                    }
                } else {
                    if flipped {
                        hi[r] = Some(t);
                    } else {
                        lo[r] = t;
                    }
                    round[r] += 1;
                }
                next[r] = match hi[r] {
                    None => t * 2.0,
                    Some(h) => 0.5 * (lo[r] + h),
                };
            }
        }
    }
    Ok(hi)
}

impl Measure for Noise {
    fn name(&self) -> &'static str {
        "noise"
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(&self.params).unwrap_or_default()
    }

    fn run(&self, ctx: &Context) -> Result<MeasureResult> {
        let p = &self.params;
        let sm = SpacedModel::new(ctx.model, ctx.data);
        let d = sm.dim();
        let opts = DeepFoolOptions {
            norm: Norm::L2,
            overshoot: p.overshoot,
            max_iter: p.max_iter,
            candidates: 10,
            clip: None,
        };
        let (mut images, _) = super::deepfool::run_all(ctx, &opts, "noise", Keep::Nothing)?;
        let attacked: Vec<usize> = (0..images.len())
            .filter(|&i| images[i].outcome == Outcome::Fooled)
            .collect();
        let per = (16_000_000 / (d * p.directions * 2).max(1)).max(1);
        let bar = ctx.progress.bar(attacked.len() as u64, "noise");
        let mut ratios = vec![];
        let mut norms = vec![];
        let mut unflipped = 0usize;
        for part in attacked.chunks(per) {
            let mut x = Vec::with_capacity(part.len() * d);
            let mut k0 = vec![];
            let mut dirs = Vec::with_capacity(part.len() * p.directions * 2 * d);
            let mut owner = vec![];
            let mut t0 = vec![];
            for (a, &i) in part.iter().enumerate() {
                x.extend(sm.load(ctx.data, i, 1)?);
                k0.push(images[i].pred);
                let star = images[i].values["norm_l2"];
                // Random directions need about √d times ‖r*‖ (METHODS.md §3):
                // starting at a quarter of that saves most of the doublings.
                let start = star * (0.25 * (d as f64).sqrt()).max(1.0);
                let mut rng = ChaCha8Rng::seed_from_u64(ctx.image_seed(i));
                for _ in 0..p.directions {
                    let mut v: Vec<f32> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
                    let nv = l2(&v) as f32;
                    v.iter_mut().for_each(|e| *e /= nv);
                    dirs.extend(v.iter().map(|e| -e));
                    dirs.extend(v);
                    owner.extend([a, a]);
                    t0.extend([start, start]);
                }
            }
            let hits = line_search(&sm, &x, &k0, &dirs, &owner, &t0, p.doublings, p.bisections)?;
            for (a, &i) in part.iter().enumerate() {
                let star = images[i].values["norm_l2"];
                let per_dir: Vec<f64> = (0..p.directions)
                    .map(|j| {
                        let (m, q) = (
                            hits[(a * p.directions + j) * 2],
                            hits[(a * p.directions + j) * 2 + 1],
                        );
                        match (m, q) {
                            (Some(x), Some(y)) => x.min(y),
                            (Some(x), None) | (None, Some(x)) => x,
                            (None, None) => f64::INFINITY,
                        }
                    })
                    .collect();
                let flipped = per_dir.iter().filter(|t| t.is_finite()).count();
                // Median over directions, unflipped rays counted as +∞.
                let mut sorted = per_dir.clone();
                sorted.sort_by(f64::total_cmp);
                let med = sorted[sorted.len() / 2];
                let v = &mut images[i].values;
                v.insert("l2_deepfool", star);
                v.insert("flipped_directions", flipped as f64);
                if med.is_finite() {
                    v.insert("noise_l2", med);
                    v.insert("ratio", med / star);
                    ratios.push(med / star);
                    norms.push(med);
                } else {
                    unflipped += 1;
                }
            }
            bar.inc(part.len() as u64);
        }
        bar.finish_and_clear();
        let counts = MeasureResult::count(&images);
        let mut summary = BTreeMap::new();
        summary.insert("n".into(), images.len() as f64);
        summary.insert("n_attacked".into(), (counts.fooled + counts.failed) as f64);
        summary.insert("sqrt_d".into(), (d as f64).sqrt());
        summary.insert("unflipped".into(), unflipped as f64);
        if let Some(m) = super::median(&ratios) {
            summary.insert("median_ratio".into(), m);
        }
        if let Some(m) = super::median(&norms) {
            summary.insert("median_noise_l2".into(), m);
        }
        if let Some(m) = super::median(&super::deepfool::fooled_values(&images, "norm_l2")) {
            summary.insert("median_deepfool_l2".into(), m);
        }
        Ok(MeasureResult {
            measure: "noise".into(),
            params: self.params(),
            space: sm.space,
            summary,
            counts,
            images,
            extra: serde_json::json!({"clipped": false, "directions": "uniform on the sphere, both signs"}),
            artifacts: vec![],
        })
    }
}
