//! `cure`: the CURE curvature proxy of the loss (Moosavi-Dezfooli, Fawzi,
//! Uesato, Frossard, CVPR 2019; docs/methods.md, cure).
//!
//! Per correctly classified image, with `ℓ` the cross-entropy at the
//! predicted class `k0` and `z = sign(∇ℓ(x)) / ‖sign(∇ℓ(x))‖`:
//! `c_h = ‖∇ℓ(x + h·z) − ∇ℓ(x)‖ / h` and `c_h / ‖∇ℓ(x)‖`. `h` is an L2
//! length in the measured space (image space `[0,1]` for images: the
//! reference `h = 3` on mean/std-normalised inputs is about 0.6 there).
//! Optionally the **curvature profile**: the top `profile` eigenvalues of
//! `∇²ℓ(x)` by Lanczos on central-difference Hessian–vector products (same
//! `h`), per image and averaged. An image whose prediction changes at
//! `x + h·z` is counted as fooled: the probe itself crossed the boundary.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::curvature::lanczos_batch;
use super::space::{CleanPass, SpacedModel};
use super::Values;
use super::{Better, Context, Declaration, ImageResult, Measure, Outcome, Output, Summary, Units};
use crate::attack::vector::{argmax, l2};
use crate::error::{Error, Result};

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Probe length `h` (L2, measured space).
    pub h: f64,
    /// Eigenvalues of the loss Hessian per image (0: no profile).
    pub profile: usize,
    /// Lanczos steps for the profile.
    pub steps: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            h: 0.5,
            profile: 5,
            steps: 15,
        }
    }
}

/// Cross-entropy gradients at `n` points `u` for the classes `k0`: the
/// cotangent `softmax(f) − e_k0` needs the logits first, so this is one
/// forward and one VJP call. Returns (gradients `n × d`, predictions).
fn loss_grad(sm: &SpacedModel, u: &[f32], k0: &[usize]) -> Result<(Vec<f32>, Vec<usize>)> {
    let k = sm.classes();
    let n = k0.len();
    let logits = sm.logits(u, n)?;
    let mut cot = vec![0.0f32; n * k];
    let mut preds = Vec::with_capacity(n);
    for (i, row) in logits.chunks_exact(k).enumerate() {
        let c = &mut cot[i * k..(i + 1) * k];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = row.iter().map(|&v| f64::from(v - m).exp()).sum();
        let mut others = 0.0f64;
        for (j, (v, &f)) in c.iter_mut().zip(row).enumerate() {
            let pj = f64::from(f - m).exp() / z;
            *v = pj as f32;
            if j != k0[i] {
                others += pj;
            }
        }
        // p_k0 − 1 as −Σ_{j≠k0} p_j: no cancellation for confident images.
        c[k0[i]] = -others as f32;
        preds.push(argmax(row));
    }
    let (_, g) = sm.vjp(u, n, &cot, 1)?;
    Ok((g, preds))
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "cure",
        about: "CURE curvature proxy |grad l(x+hz) - grad l(x)|/h of the cross-entropy (z = normalised sign of the gradient) and the loss-Hessian eigenvalue profile",
        params: &[
            ("h", "Probe length `h` (L2, measured space)."),
            ("profile", "Eigenvalues of the loss Hessian per image (0: no profile)."),
            ("steps", "Lanczos steps for the profile."),
        ],
        headline: &["success_rate", "median_c_h", "median_top_eig"],
        better: &[("success_rate", Better::Lower)],
        histograms: &["c_h", "eig1"],
        values: &[&[
            ("c_h", "‖∇ℓ(x + h z) − ∇ℓ(x)‖/h"),
            ("c_h_rel", "c_h/‖∇ℓ(x)‖"),
            ("grad_norm", "‖∇ℓ(x)‖ of the cross-entropy loss at the clean prediction"),
            ("eig{j}", "j-th eigenvalue of the loss-Hessian profile (with profile > 0)"),
        ]],
        units: Units::Chunks,
    };

    fn validate(&self) -> Result<()> {
        if !(self.h.is_finite() && self.h > 0.0) {
            return Err(Error::Config("cure: h must be > 0".into()));
        }
        Ok(())
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let sm = SpacedModel::new(ctx.model, ctx.data);
        let d = sm.dim();
        let total = ctx.data.len();
        let chunk = (16_000_000 / d.max(1)).clamp(1, 1024);
        let h = self.h as f32;
        let bar = ctx.progress.bar(total as u64, "cure");
        let mut images = Vec::with_capacity(total);
        let mut start = 0;
        while start < total {
            let len = chunk.min(total - start);
            let CleanPass {
                u, preds, correct, ..
            } = sm.clean_pass(ctx.data, start, len)?;
            let keep: Vec<usize> = (0..len).filter(|&i| correct[i]).collect();
            let k0: Vec<usize> = keep.iter().map(|&i| preds[i]).collect();
            let mut ua = Vec::with_capacity(keep.len() * d);
            for &i in &keep {
                ua.extend_from_slice(&u[i * d..(i + 1) * d]);
            }
            let mut per_image: Vec<Values> = vec![Values::new(); keep.len()];
            let mut flipped = vec![false; keep.len()];
            if !keep.is_empty() {
                let (g0, _) = loss_grad(&sm, &ua, &k0)?;
                // The probe x + h·z, z = sign(∇ℓ)/‖sign(∇ℓ)‖.
                let mut probe = ua.clone();
                for a in 0..keep.len() {
                    let g = &g0[a * d..(a + 1) * d];
                    let nz = g.iter().filter(|v| **v != 0.0).count().max(1) as f32;
                    let s = h / nz.sqrt();
                    for (x, gv) in probe[a * d..(a + 1) * d].iter_mut().zip(g) {
                        *x += s * gv.signum() * f32::from(*gv != 0.0);
                    }
                }
                let (g1, pred1) = loss_grad(&sm, &probe, &k0)?;
                for a in 0..keep.len() {
                    let (ga, gb) = (&g0[a * d..(a + 1) * d], &g1[a * d..(a + 1) * d]);
                    let diff: f64 = ga
                        .iter()
                        .zip(gb)
                        .map(|(x, y)| (f64::from(*y) - f64::from(*x)).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    let gn = l2(ga);
                    let c = diff / self.h;
                    per_image[a].insert("c_h", c);
                    per_image[a].insert("grad_norm", gn);
                    if gn > 0.0 {
                        per_image[a].insert("c_h_rel", c / gn);
                    }
                    flipped[a] = pred1[a] != k0[a];
                }
                if self.profile > 0 {
                    let mut v0 = vec![0.0f32; keep.len() * d];
                    for (a, &i) in keep.iter().enumerate() {
                        let mut rng = ChaCha8Rng::seed_from_u64(ctx.image_seed(start + i));
                        for t in 0..d {
                            v0[a * d + t] = StandardNormal.sample(&mut rng);
                        }
                    }
                    let k0_pairs: Vec<usize> = k0.iter().flat_map(|&c| [c, c]).collect();
                    let ritz = lanczos_batch(keep.len(), d, self.steps, &v0, |v| {
                        let mut x = Vec::with_capacity(2 * keep.len() * d);
                        for a in 0..keep.len() {
                            for sign in [1.0f32, -1.0] {
                                x.extend(
                                    ua[a * d..(a + 1) * d]
                                        .iter()
                                        .zip(&v[a * d..(a + 1) * d])
                                        .map(|(x, v)| x + sign * h * v),
                                );
                            }
                        }
                        let (g, _) = loss_grad(&sm, &x, &k0_pairs)?;
                        let mut out = vec![0.0f32; keep.len() * d];
                        for a in 0..keep.len() {
                            for t in 0..d {
                                out[a * d + t] =
                                    (g[2 * a * d + t] - g[(2 * a + 1) * d + t]) / (2.0 * h);
                            }
                        }
                        Ok(out)
                    })?;
                    for (a, (vals, _)) in ritz.iter().enumerate() {
                        for (j, v) in vals.iter().take(self.profile).enumerate() {
                            per_image[a].insert(format!("eig{}", j + 1), *v);
                        }
                    }
                }
            }
            let mut kept = keep.iter().zip(per_image).zip(flipped).peekable();
            for (i, &pred) in preds.iter().enumerate() {
                let item = &ctx.data.items[start + i];
                let (outcome, values) = match kept.peek() {
                    Some(((&j, _), _)) if j == i => {
                        let ((_, values), flip) = kept.next().expect("peeked");
                        let o = if flip {
                            Outcome::Fooled
                        } else {
                            Outcome::Robust
                        };
                        (o, values)
                    }
                    _ => (Outcome::Misclassified, Values::new()),
                };
                images.push(ImageResult::new(start + i, item, pred, outcome, values));
            }
            bar.inc(len as u64);
            start += len;
        }
        bar.finish_and_clear();
        Ok(Output {
            images,
            extra: serde_json::json!({
                "units": "h is an L2 length in the measured space; c_h in gradient units per length",
                "fooled_means": "the prediction changed at the probe x + h z",
            }),
            ..Output::default()
        })
    }

    /// Statistics of `c_h`, `c_h_rel` and `eig1` over the images probed, and the mean of each
    /// `eig{j}` over them (`profile`).
    fn summarise(&self, images: &[ImageResult], parts: Vec<Summary>) -> Result<Summary> {
        let values = |key: &str| super::values_of(images, key);
        let ch = values("c_h");
        let mut summary = BTreeMap::new();
        for (name, v) in [
            ("median_c_h", super::median(&ch)),
            ("mean_c_h", super::mean(&ch)),
            ("median_c_h_rel", super::median(&values("c_h_rel"))),
            ("median_top_eig", super::median(&values("eig1"))),
        ] {
            if let Some(v) = v {
                summary.insert(name.to_string(), v);
            }
        }
        // Every image probed (every one with `c_h`) was profiled when there is a profile.
        let profiled = if self.profile > 0 { ch.len() } else { 0 };
        let mut profile = vec![0.0f64; self.profile];
        for (j, p) in profile.iter_mut().enumerate() {
            *p = values(&format!("eig{}", j + 1)).iter().fold(0.0, |a, v| a + v);
        }
        if profiled > 0 {
            profile.iter_mut().for_each(|v| *v /= profiled as f64);
        }
        let mut extra = Summary::first_extra(&parts);
        extra["profile"] = serde_json::json!(if profiled > 0 { profile } else { vec![] });
        Ok(Summary { summary, extra })
    }
}
