//! `noise`: random-noise robustness (Fawzi et al., NIPS 2016; docs/methods.md, noise).
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

use super::deepfool::Keep;
use super::space::SpacedModel;
use super::{Better, Context, Counts, Declaration, ImageResult, Measure, Output, Summary, Units};
use crate::attack::deepfool::DeepFoolOptions;
use crate::attack::vector::{argmax, l2};
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

/// For each group of rays, the smallest `t > 0` with `k̂(x_i + t·dir) ≠ k0_i` over the
/// group's rays `(image, dir)` (`None`: no ray of the group flips up to `t0·2^doublings`).
/// `x` is `(n, d)`, `dirs` is `(rays, d)` with `owner[ray]` the image, `group[ray]` the group
/// (numbered from 0) and `t0[ray]` the starting scale. Each ray doubles from `t0` until it
/// flips, then bisects; a ray stops as soon as the largest `t` it knows not to flip reaches
/// a flip another ray of its group has found, as it can no longer give the group's smallest
/// (the other sign of a direction, for [`Noise`]). The rays that carry each group's answer
/// run exactly as they would alone.
#[allow(clippy::too_many_arguments)]
pub fn line_search(
    model: &SpacedModel,
    x: &[f32],
    k0: &[usize],
    dirs: &[f32],
    owner: &[usize],
    group: &[usize],
    t0: &[f64],
    doublings: usize,
    bisections: usize,
) -> Result<Vec<Option<f64>>> {
    let d = model.dim();
    let k = model.classes();
    let rays = owner.len();
    let groups = group.iter().max().map_or(0, |g| g + 1);
    // lo: largest t known not to flip (0), hi: smallest known to flip.
    let mut lo = vec![0.0f64; rays];
    let mut hi: Vec<Option<f64>> = vec![None; rays];
    let mut next: Vec<f64> = t0.to_vec();
    let mut round = vec![0usize; rays];
    let limit = 32_000_000 / d.max(1);
    loop {
        // The smallest flip found so far in each group.
        let mut best: Vec<Option<f64>> = vec![None; groups];
        for r in 0..rays {
            if let Some(h) = hi[r] {
                let b = &mut best[group[r]];
                *b = Some(b.map_or(h, |b| b.min(h)));
            }
        }
        let todo: Vec<usize> = (0..rays)
            .filter(|&r| match hi[r] {
                None => round[r] <= doublings,
                Some(_) => round[r] < bisections,
            })
            .filter(|&r| best[group[r]].is_none_or(|b| lo[r] < b))
            .collect();
        if todo.is_empty() {
            return Ok(best);
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
}

/// A direction uniform on the unit sphere of `R^d`.
fn random_direction(rng: &mut ChaCha8Rng, d: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..d).map(|_| StandardNormal.sample(rng)).collect();
    let nv = l2(&v) as f32;
    v.iter_mut().for_each(|e| *e /= nv);
    v
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "noise",
        about: "random-noise robustness: median over random directions of the smallest flipping |t|, ratio to the DeepFool norm beside sqrt(d)",
        params: &[
            ("directions", "Random directions per image."),
            ("doublings", "Doublings of `t` (from `‖r*‖·√d/4`) before a ray counts as unflipped."),
            ("bisections", "Bisection steps."),
            ("overshoot", "DeepFool overshoot (for `‖r*‖`)."),
            ("max_iter", "DeepFool iteration budget."),
        ],
        headline: &["median_ratio", "success_rate"],
        better: &[("success_rate", Better::Lower)],
        histograms: &["ratio", "noise_l2"],
        values: &[super::deepfool::VALUES, &[
            ("ratio", "smallest flipping norm along random directions over DeepFool's ‖r*‖₂"),
            ("noise_l2", "smallest flipping L2 norm over the random directions"),
            ("l2_deepfool", "DeepFool's ‖r*‖₂ for the same image"),
            ("flipped_directions", "random directions that flipped the prediction within the search"),
        ]],
        units: Units::Chunks,
    };

    fn validate(&self) -> Result<()> {
        super::at_least("noise", "directions", self.directions, 1)
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let sm = SpacedModel::new(ctx.model, ctx.data);
        let d = sm.dim();
        let opts = DeepFoolOptions::l2_unclipped(self.overshoot, self.max_iter, 10);
        let (mut images, _) = super::deepfool::run_all(ctx, &opts, "noise", Keep::Nothing)?;
        let attacked = super::deepfool::fooled_indices(&images);
        let per = (16_000_000 / (d * self.directions * 2).max(1)).max(1);
        let bar = ctx.progress.bar(attacked.len() as u64, "noise");
        for part in attacked.chunks(per) {
            let mut x = Vec::with_capacity(part.len() * d);
            let mut k0 = vec![];
            let mut dirs = Vec::with_capacity(part.len() * self.directions * 2 * d);
            let mut owner = vec![];
            let mut group = vec![];
            let mut t0 = vec![];
            for (a, &i) in part.iter().enumerate() {
                x.extend(sm.load(ctx.data, i, 1)?);
                k0.push(images[i].pred);
                let star = images[i].values["norm_l2"];
                // Random directions need about √d times ‖r*‖ (docs/methods.md, noise):
                // starting at a quarter of that saves most of the doublings.
                let start = star * (0.25 * (d as f64).sqrt()).max(1.0);
                let mut rng = ChaCha8Rng::seed_from_u64(ctx.image_seed(i));
                for _ in 0..self.directions {
                    let v = random_direction(&mut rng, d);
                    dirs.extend(v.iter().map(|e| -e));
                    dirs.extend(v);
                    owner.extend([a, a]);
                    // ±v: one group, whose answer is the smaller flip of the two signs.
                    group.extend([group.len() / 2; 2]);
                    t0.extend([start, start]);
                }
            }
            let hits = line_search(
                &sm,
                &x,
                &k0,
                &dirs,
                &owner,
                &group,
                &t0,
                self.doublings,
                self.bisections,
            )?;
            for (a, &i) in part.iter().enumerate() {
                let star = images[i].values["norm_l2"];
                let per_dir: Vec<f64> = hits[a * self.directions..(a + 1) * self.directions]
                    .iter()
                    .map(|h| h.unwrap_or(f64::INFINITY))
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
                }
            }
            bar.inc(part.len() as u64);
        }
        bar.finish_and_clear();
        Ok(Output {
            images,
            summary: BTreeMap::from([("sqrt_d".into(), (d as f64).sqrt())]),
            extra: serde_json::json!({"clipped": false, "directions": "uniform on the sphere, both signs"}),
            artifacts: vec![],
        })
    }

    /// Medians over the images DeepFool fooled; `unflipped` counts those where no random
    /// direction flipped the prediction within the search (no `ratio`).
    fn summarise(&self, images: &[ImageResult], parts: Vec<Summary>) -> Result<Summary> {
        let counts = Counts::of(images);
        let mut summary = BTreeMap::new();
        summary.insert("n".into(), images.len() as f64);
        summary.insert("n_attacked".into(), (counts.fooled + counts.failed) as f64);
        if let Some(root) = Summary::first(&parts, "sqrt_d") {
            summary.insert("sqrt_d".into(), root);
        }
        let fooled = super::deepfool::fooled_values;
        let unflipped = counts.fooled - fooled(images, "ratio").len();
        summary.insert("unflipped".into(), unflipped as f64);
        for (name, key) in [
            ("median_ratio", "ratio"),
            ("median_noise_l2", "noise_l2"),
            ("median_deepfool_l2", "norm_l2"),
        ] {
            if let Some(m) = super::median(&fooled(images, key)) {
                summary.insert(name.into(), m);
            }
        }
        Ok(Summary {
            summary,
            extra: Summary::first_extra(&parts),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report's noise section draws what noise measures (the ratio, the noise norm), not
    /// the DeepFool values it also carries, which the deepfool section draws already.
    #[test]
    fn the_histograms_are_noise_values_not_deepfools() {
        let h = Params::DECLARATION.histograms;
        assert!(!h.is_empty());
        for key in h {
            assert!(
                !super::super::deepfool::VALUES.iter().any(|(k, _)| k == key),
                "{key} is one of DeepFool's values"
            );
        }
    }

    /// With the two signs of each direction in one group, each group's answer is the smaller
    /// of its two rays' answers, each found by a plain ray-by-ray doubling and bisection.
    #[test]
    fn a_group_gives_the_smallest_flip_of_its_rays() {
        let (model, data) = crate::testutil::digits_on_tract(3, None);
        let sm = SpacedModel::new(&model, &data);
        let d = sm.dim();
        let x = sm.load(&data, 0, 3).unwrap();
        let k0: Vec<usize> = sm
            .logits(&x, 3)
            .unwrap()
            .chunks(sm.classes())
            .map(argmax)
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut dirs, mut owner) = (vec![], vec![]);
        for a in 0..3 {
            for _ in 0..4 {
                let v = random_direction(&mut rng, d);
                dirs.extend(v.iter().map(|e| -e));
                dirs.extend(v);
                owner.extend([a, a]);
            }
        }
        let rays = owner.len();
        let (t0, doublings, bisections) = (0.5, 24, 10);
        // One ray alone: doubling from t0, then bisection between the last miss and the flip.
        let flips = |r: usize, t: f64| {
            let (xi, v) = (&x[owner[r] * d..][..d], &dirs[r * d..][..d]);
            let p: Vec<f32> = xi.iter().zip(v).map(|(a, b)| a + t as f32 * b).collect();
            argmax(&sm.logits(&p, 1).unwrap()) != k0[owner[r]]
        };
        let alone = |r: usize| -> Option<f64> {
            let (mut lo, mut t) = (0.0, t0);
            let mut hi = None;
            for _ in 0..=doublings {
                if flips(r, t) {
                    hi = Some(t);
                    break;
                }
                lo = t;
                t *= 2.0;
            }
            let mut hi = hi?;
            for _ in 0..bisections {
                let mid = 0.5 * (lo + hi);
                match flips(r, mid) {
                    true => hi = mid,
                    false => lo = mid,
                }
            }
            Some(hi)
        };
        let pairs: Vec<usize> = (0..rays).map(|r| r / 2).collect();
        let paired = line_search(
            &sm,
            &x,
            &k0,
            &dirs,
            &owner,
            &pairs,
            &vec![t0; rays],
            doublings,
            bisections,
        )
        .unwrap();
        assert_eq!(paired.len(), rays / 2);
        let mut found = 0;
        for (g, p) in paired.iter().enumerate() {
            let want = match (alone(2 * g), alone(2 * g + 1)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            assert_eq!(*p, want, "direction {g}");
            found += usize::from(p.is_some());
        }
        // How many random rays flip within t0·2^24 is the model's business; the
        // comparison above needs only that some do, so that it saw both outcomes.
        eprintln!("{found} of {} directions flip", rays / 2);
        assert!(
            found > 0,
            "no direction flips: the comparison saw only misses"
        );
    }
}
