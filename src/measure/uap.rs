//! `uap`: universal adversarial perturbation (Moosavi-Dezfooli*, Fawzi*,
//! Fawzi, Frossard, CVPR 2017; docs/methods.md, uap).
//!
//! One `v` with `‖v‖_p ≤ ξ` built by passes over the construction images:
//! for each image still unfooled by `v`, a DeepFool increment at `x + v`
//! (max 10 iterations, kept only if it converged in fewer than `max_iter − 1`),
//! then `v ← Π_{p,ξ}(v + Δv)`, until the fooling rate reaches `1 − δ` or the
//! pass limit. `ξ = xi_fraction · mean ‖x‖_p` over the construction images.
//! Fooling rate = fraction of images whose *predicted* label changes (images
//! misclassified before any perturbation are left out). Reported on the
//! construction images, on held-out images (the last `holdout_fraction` of
//! the data, or a separate `holdout` data set), and for random vectors of
//! the same norm (uniform on the ℓ2 sphere, or random signs for ℓ∞).
//! `transfer` adds `v` to the held-out images of other models (opened with
//! the same options; same input size) and reports their fooling rates.
//! Second baseline, the curved-direction perturbation (Moosavi-Dezfooli et al.,
//! CVPR 2018; docs/methods.md, uap): the top eigenvector of the Hessian of
//! `f_adv − f_k0` shared over the construction images' DeepFool boundary
//! points (`curvature_steps` Lanczos steps, as the `curvature` measure), scaled
//! to `ξ` (ℓ2) or `ξ·sign` (ℓ∞), its sign chosen by the construction fooling
//! rate; its held-out fooling rate is `curved_fooling_rate`.
//! Nothing is clipped to the box.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::curvature::{shared_eigen, Points};
use super::deepfool::chunk_len;
use super::space::SpacedModel;
use super::Values;
use super::{Better, Artifact, Context, Declaration, ImageResult, Measure, Outcome, Output, Units};
use crate::attack::deepfool::{deepfool_batch, deepfool_batch_at, DeepFoolOptions, Norm};
use crate::attack::vector::{argmax, l2, linf};
use crate::data::Dataset;
use crate::error::{Error, Result};

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// `l2` or `linf`.
    pub norm: Norm,
    /// ξ as a fraction of the mean image norm (same p).
    pub xi_fraction: f64,
    /// Target: fooling rate `1 − δ` on the construction images.
    pub delta: f64,
    /// Pass limit.
    pub max_passes: usize,
    /// Inner DeepFool iteration budget.
    pub max_iter: usize,
    /// Inner DeepFool overshoot.
    pub overshoot: f32,
    /// Inner DeepFool candidates.
    pub candidates: usize,
    /// Fraction of the data held out (the last items) when `holdout` is unset.
    pub holdout_fraction: f64,
    /// Separate held-out data set (folder, CSV or `.npy`).
    pub holdout: Option<PathBuf>,
    /// Labels for a `.npy` held-out set.
    pub holdout_labels: Option<PathBuf>,
    /// Random vectors of the same norm drawn for the noise baseline.
    pub noise_trials: usize,
    /// Other models the perturbation is transferred to (held-out fooling rates).
    pub transfer: Vec<PathBuf>,
    /// Lanczos steps for the curved-direction baseline (0: no curved baseline).
    pub curvature_steps: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            norm: Norm::L2,
            xi_fraction: 0.2,
            delta: 0.2,
            max_passes: 10,
            max_iter: 10,
            overshoot: 0.02,
            candidates: 10,
            holdout_fraction: 0.2,
            holdout: None,
            holdout_labels: None,
            noise_trials: 5,
            transfer: vec![],
            curvature_steps: 10,
        }
    }
}

/// Images (in measured space) kept for fooling: correctly classified or unlabelled.
struct Split {
    index: Vec<usize>,
    u: Vec<f32>,
    k0: Vec<usize>,
    results: Vec<ImageResult>,
}

fn load_split(sm: &SpacedModel, data: &Dataset, range: std::ops::Range<usize>) -> Result<Split> {
    let d = sm.dim();
    let k = sm.classes();
    let mut s = Split {
        index: vec![],
        u: vec![],
        k0: vec![],
        results: vec![],
    };
    // A part at a time, so that only the kept images are held whole.
    let per = (4_000_000 / d.max(1)).max(1);
    for start in range.clone().step_by(per) {
        let n = per.min(range.end - start);
        let u = sm.load(data, start, n)?;
        let logits = sm.logits(&u, n)?;
        for i in 0..n {
            let pred = argmax(&logits[i * k..(i + 1) * k]);
            let item = &data.items[start + i];
            let ok = item.label.is_none_or(|l| l == pred);
            if ok {
                s.index.push(s.results.len());
                s.u.extend_from_slice(&u[i * d..(i + 1) * d]);
                s.k0.push(pred);
            }
            s.results.push(ImageResult {
                index: start + i,
                name: item.name.clone(),
                label: item.label,
                pred,
                outcome: if ok {
                    Outcome::Robust
                } else {
                    Outcome::Misclassified
                },
                values: Values::new(),
            });
        }
    }
    Ok(s)
}

/// Which kept images of `s` are fooled by `v` (`v` added to every image).
fn fooled(sm: &SpacedModel, s: &Split, v: &[f32]) -> Result<Vec<bool>> {
    let d = sm.dim();
    let k = sm.classes();
    let n = s.k0.len();
    let mut out = Vec::with_capacity(n);
    let per = (16_000_000 / d.max(1)).max(1);
    let mut start = 0;
    while start < n {
        let len = per.min(n - start);
        let x: Vec<f32> = s.u[start * d..(start + len) * d]
            .chunks(d)
            .flat_map(|xi| xi.iter().zip(v).map(|(a, b)| a + b))
            .collect();
        let logits = sm.logits(&x, len)?;
        for i in 0..len {
            out.push(argmax(&logits[i * k..(i + 1) * k]) != s.k0[start + i]);
        }
        start += len;
    }
    Ok(out)
}

fn rate(f: &[bool]) -> f64 {
    if f.is_empty() {
        0.0
    } else {
        f.iter().filter(|&&b| b).count() as f64 / f.len() as f64
    }
}

fn project(v: &mut [f32], norm: Norm, xi: f64) {
    match norm {
        Norm::L2 => {
            let n = l2(v);
            if n > xi {
                let s = (xi / n) as f32;
                v.iter_mut().for_each(|e| *e *= s);
            }
        }
        Norm::Linf => {
            let x = xi as f32;
            v.iter_mut().for_each(|e| *e = e.clamp(-x, x));
        }
    }
}

/// Fewest construction images a perturbation is built from.
const MIN_CONSTRUCTION: usize = 10;
/// Fewest held-out images its fooling rate is measured on.
const MIN_HOLDOUT: usize = 5;

/// The result on too few images: their counts and why no rate is reported.
fn insufficient(total: usize, construction: usize, holdout: usize) -> Output {
    let why = format!(
        "uap skipped: {construction} construction and {holdout} held-out images, below the \
         {MIN_CONSTRUCTION} and {MIN_HOLDOUT} a fooling rate needs; give more images or a \
         `holdout` set"
    );
    let summary = BTreeMap::from([
        ("insufficient_data".to_string(), total as f64),
        ("n".to_string(), total as f64),
        ("n_construction".to_string(), construction as f64),
        ("n_holdout".to_string(), holdout as f64),
    ]);
    Output {
        summary,
        extra: serde_json::json!({ "warnings": [why] }),
        ..Output::default()
    }
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "uap",
        about: "universal adversarial perturbation: fooling rate on the construction and held-out images, and of same-norm random noise and of the top shared curvature direction",
        params: &[
            ("norm", "`l2` or `linf`."),
            ("xi_fraction", "ξ as a fraction of the mean image norm (same p)."),
            ("delta", "Target: fooling rate `1 − δ` on the construction images."),
            ("max_passes", "Pass limit."),
            ("max_iter", "Inner DeepFool iteration budget."),
            ("overshoot", "Inner DeepFool overshoot."),
            ("candidates", "Inner DeepFool candidates."),
            ("holdout_fraction", "Fraction of the data held out (the last items) when `holdout` is unset."),
            ("holdout", "Separate held-out data set (folder, CSV or `.npy`)."),
            ("holdout_labels", "Labels for a `.npy` held-out set."),
            ("noise_trials", "Random vectors of the same norm drawn for the noise baseline."),
            ("transfer", "Other models the perturbation is transferred to (held-out fooling rates)."),
            ("curvature_steps", "Lanczos steps for the curved-direction baseline (0: no curved baseline)."),
        ],
        headline: &["fooling_rate", "holdout_fooling_rate", "noise_fooling_rate", "success_rate"],
        better: &[("fooling_rate", Better::Lower), ("holdout_fooling_rate", Better::Lower), ("noise_fooling_rate", Better::Lower), ("success_rate", Better::Lower)],
        histograms: &[],
        values: &[&[
            ("holdout", "1 for a held-out image, 0 for a construction image"),
        ]],
        units: Units::Whole("the perturbation is built from every construction image and evaluated on the held-out ones"),
    };

    fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.holdout_fraction) {
            return Err(Error::Config(format!(
                "uap: holdout_fraction = {} must be at least 0 and below 1",
                self.holdout_fraction
            )));
        }
        super::at_least("uap", "candidates", self.candidates, 2)
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let sm = SpacedModel::new(ctx.model, ctx.data);
        let d = sm.dim();
        let total = ctx.data.len();
        let holdout_data = match &self.holdout {
            Some(path) => {
                let h = ctx.resources.dataset(path, self.holdout_labels.as_deref())?;
                h.check_labels(sm.classes())?;
                Some(h)
            }
            None => None,
        };
        let n_train = if holdout_data.is_some() {
            total
        } else {
            ((total as f64) * (1.0 - self.holdout_fraction)).round() as usize
        };
        // Transfer models are opened first: a bad one is an error even on too few images.
        let transfer_models = self
            .transfer
            .iter()
            .map(|path| Ok((path, ctx.resources.model(path)?)))
            .collect::<Result<Vec<_>>>()?;
        let n_hold = holdout_data.as_ref().map_or(total - n_train, |h| h.len());
        if n_train < MIN_CONSTRUCTION || n_hold < MIN_HOLDOUT {
            return Ok(insufficient(total, n_train, n_hold));
        }
        let train = load_split(&sm, ctx.data, 0..n_train)?;
        let hold = match &holdout_data {
            Some(h) => load_split(&sm, h, 0..h.len())?,
            None => load_split(&sm, ctx.data, n_train..total)?,
        };
        let nk = train.k0.len();
        let mean_norm = (0..nk)
            .map(|i| {
                let x = &train.u[i * d..(i + 1) * d];
                match self.norm {
                    Norm::L2 => l2(x),
                    Norm::Linf => linf(x),
                }
            })
            .sum::<f64>()
            / nk.max(1) as f64;
        let xi = self.xi_fraction * mean_norm;
        let opts = DeepFoolOptions {
            norm: self.norm,
            overshoot: self.overshoot,
            max_iter: self.max_iter,
            candidates: self.candidates,
            clip: None,
        };
        let mut v = vec![0.0f32; d];
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
        let mut order: Vec<usize> = (0..nk).collect();
        let mut passes = 0;
        let mut history = vec![];
        let bar = ctx.progress.bar(self.max_passes as u64, "uap");
        let mut train_rate = rate(&fooled(&sm, &train, &v)?);
        while train_rate < 1.0 - self.delta && passes < self.max_passes {
            order.shuffle(&mut rng);
            for &i in &order {
                let mut x: Vec<f32> = train.u[i * d..(i + 1) * d].to_vec();
                x.iter_mut().zip(&v).for_each(|(a, b)| *a += b);
                let logits = sm.logits(&x, 1)?;
                if argmax(&logits) != train.k0[i] {
                    continue;
                }
                let o = deepfool_batch_at(&sm, &x, &logits, 1, &opts, None)?.remove(0);
                if o.success && o.iterations < self.max_iter.saturating_sub(1).max(1) {
                    v.iter_mut().zip(&o.r).for_each(|(a, b)| *a += b);
                    project(&mut v, self.norm, xi);
                }
            }
            passes += 1;
            train_rate = rate(&fooled(&sm, &train, &v)?);
            history.push(train_rate);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let train_f = fooled(&sm, &train, &v)?;
        let hold_f = fooled(&sm, &hold, &v)?;
        // Same-norm random noise on the held-out images.
        let mut noise_rates = vec![];
        for _ in 0..self.noise_trials {
            let mut z: Vec<f32> = match self.norm {
                Norm::L2 => (0..d).map(|_| StandardNormal.sample(&mut rng)).collect(),
                Norm::Linf => (0..d)
                    .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
                    .collect(),
            };
            let (nz, nv) = match self.norm {
                Norm::L2 => (l2(&z), l2(&v)),
                Norm::Linf => (linf(&z), linf(&v)),
            };
            let s = (nv / nz.max(1e-30)) as f32;
            z.iter_mut().for_each(|e| *e *= s);
            let target = if hold.k0.is_empty() { &train } else { &hold };
            noise_rates.push(rate(&fooled(&sm, target, &z)?));
        }
        let curved_baseline = match self.curvature_steps {
            0 => None,
            _ => curved(&sm, &train, &hold, &opts, xi, self, rng.random())?,
        };
        // Each attacked image: fooled or not by `v`, and whether it was held out.
        let mark = |mut results: Vec<ImageResult>, index: &[usize], f: &[bool], held: f64| {
            for (j, &r) in index.iter().enumerate() {
                results[r].outcome = match f[j] {
                    true => Outcome::Fooled,
                    false => Outcome::Robust,
                };
                results[r].values.insert("holdout", held);
            }
            results
        };
        let mut images = mark(train.results, &train.index, &train_f, 0.0);
        let hold_images = mark(hold.results, &hold.index, &hold_f, 1.0);
        if holdout_data.is_none() {
            images.extend(hold_images);
        }
        let noise = super::mean(&noise_rates).unwrap_or(0.0);
        let mut summary = BTreeMap::new();
        summary.insert("xi".into(), xi);
        summary.insert("xi_fraction".into(), self.xi_fraction);
        summary.insert("mean_image_norm".into(), mean_norm);
        summary.insert("norm_l2".into(), l2(&v));
        summary.insert("norm_linf".into(), linf(&v));
        summary.insert("passes".into(), passes as f64);
        summary.insert("n_construction".into(), nk as f64);
        summary.insert("n_holdout".into(), hold.k0.len() as f64);
        summary.insert("fooling_rate".into(), rate(&train_f));
        summary.insert("holdout_fooling_rate".into(), rate(&hold_f));
        summary.insert("noise_fooling_rate".into(), noise);
        if let Some((eig, r)) = curved_baseline {
            summary.insert("curved_fooling_rate".into(), r);
            summary.insert("curved_top_eig".into(), eig);
        }
        let mut transfers = vec![];
        for (path, model) in &transfer_models {
            let (name, r, n) = transfer_rate(ctx, (path, model), holdout_data.as_ref(), n_train, &v)?;
            summary.insert(format!("transfer_fooling_rate_{name}"), r);
            transfers.push(serde_json::json!({
                "model": path, "name": name, "holdout_fooling_rate": r, "n_holdout": n,
            }));
        }
        let mut artifacts = vec![];
        if let Some(dir) = ctx.out_dir {
            artifacts.extend(save(dir, &v, ctx)?);
        }
        Ok(Output {
            summary,
            images,
            extra: serde_json::json!({
                "fooling_rate_per_pass": history,
                "noise_fooling_rates": noise_rates,
                "transfer": transfers,
                "curved_top_eig": curved_baseline.map(|(eig, _)| eig),
                "clipped": false,
            }),
            artifacts,
        })
    }
}

/// The curved-direction baseline: the top shared curvature direction at the construction
/// images' DeepFool boundary points, scaled to `ξ`, with the sign that fools more
/// construction images; its top eigenvalue and its held-out fooling rate (on the construction
/// images when nothing is held out). `None` when DeepFool fools no construction image.
fn curved(
    sm: &SpacedModel,
    train: &Split,
    hold: &Split,
    opts: &DeepFoolOptions,
    xi: f64,
    p: &Params,
    seed: u64,
) -> Result<Option<(f64, f64)>> {
    let d = sm.dim();
    let n = train.k0.len();
    let l2_opts = DeepFoolOptions {
        norm: Norm::L2,
        ..*opts
    };
    // DeepFool a chunk at a time, so that its gradients stay within about 32 MB: only the
    // boundary points are kept.
    let chunk = chunk_len(d, l2_opts.candidates, sm.model.executor().pass_rows());
    let mut pts = Points::new();
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let u = &train.u[start * d..(start + len) * d];
        let outcomes = deepfool_batch(sm, u, len, &l2_opts, None)?;
        let kept: Vec<usize> = (0..len).filter(|&i| outcomes[i].success).collect();
        if kept.is_empty() {
            continue;
        }
        let x: Vec<f32> = kept
            .iter()
            .flat_map(|&i| u[i * d..(i + 1) * d].iter().copied())
            .collect();
        let outs: Vec<_> = kept.iter().map(|&i| &outcomes[i]).collect();
        pts.add(sm, &x, &outs, 0.1)?;
    }
    if pts.len() == 0 {
        return Ok(None);
    }
    let (vals, vecs) = shared_eigen(sm, &pts, p.curvature_steps, seed)?;
    let (Some(&eig), Some(top)) = (vals.first(), vecs.first()) else {
        return Ok(None);
    };
    let c: Vec<f32> = match p.norm {
        Norm::L2 => {
            let s = (xi / l2(top).max(1e-30)) as f32;
            top.iter().map(|e| e * s).collect()
        }
        Norm::Linf => top.iter().map(|e| xi as f32 * e.signum()).collect(),
    };
    let neg: Vec<f32> = c.iter().map(|e| -e).collect();
    let best = if rate(&fooled(sm, train, &neg)?) > rate(&fooled(sm, train, &c)?) {
        neg
    } else {
        c
    };
    let target = if hold.k0.is_empty() { train } else { hold };
    Ok(Some((eig, rate(&fooled(sm, target, &best)?))))
}

/// Fooling rate of `v` on another model's held-out images (those it
/// classifies correctly): its name (file stem), the rate and the image count.
fn transfer_rate(
    ctx: &Context,
    (path, model): (&std::path::Path, &crate::model::Model),
    holdout: Option<&Dataset>,
    n_train: usize,
    v: &[f32],
) -> Result<(String, f64, usize)> {
    let (data, range) = match holdout {
        Some(h) => (h, 0..h.len()),
        None => (ctx.data, n_train..ctx.data.len()),
    };
    let sm = SpacedModel::new(model, data);
    if sm.dim() != v.len() {
        return Err(Error::Config(format!(
            "uap: transfer model {} takes {} values per image, the perturbation has {}",
            path.display(),
            sm.dim(),
            v.len()
        )));
    }
    data.check_labels(model.classes)?;
    let split = load_split(&sm, data, range)?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    Ok((name, rate(&fooled(&sm, &split, v)?), split.k0.len()))
}

/// Writes `uap.npy` (the perturbation, sample shape) and `uap.png` (scaled
/// to the full grey range, planar image space only).
fn save(dir: &std::path::Path, v: &[f32], ctx: &Context) -> Result<Vec<Artifact>> {
    let spec = &ctx.model.spec;
    let path = dir.join("uap.npy");
    let shape = [spec.channels.count(), spec.height, spec.width];
    crate::data::write_f32(&path, &shape, v)?;
    let mut out = vec![Artifact {
        description: "universal perturbation (measured space, C×H×W)".into(),
        path: "uap.npy".into(),
    }];
    let m = linf(v).max(1e-30) as f32;
    let shape = (spec.channels.count(), spec.height, spec.width);
    if let Some(img) = super::picture::to_rgb(v, shape, |x| x / m * 0.5 + 0.5) {
        super::picture::save(&img, &dir.join("uap.png"))?;
        out.push(Artifact {
            description: "universal perturbation, scaled to ±max".into(),
            path: "uap.png".into(),
        });
    }
    Ok(out)
}
