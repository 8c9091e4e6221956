//! `deepfool`: distance to the nearest decision boundary by iterated
//! linearisation (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016; docs/methods.md, deepfool).
//!
//! Batched: a set of active images is advanced together; each iteration is
//! one VJP call with the `N−1` candidate margins `e_k − e_k0` as cotangent
//! rows, plus one forward pass to test the new iterates. [`deepfool_batch`]
//! is the reusable core; its projection hook restricts every gradient to a
//! subspace (random, DCT, patch: see `subspace.rs`, `structured.rs`).

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::space::SpacedModel;
use super::Values;
use super::{
    picture, Artifact, Context, Counts, Declaration, ImageResult, Measure, Outcome, Output,
};
use crate::error::{Error, Result};
use crate::eval::top_k;

/// The ℓp norm a perturbation is minimised in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// Euclidean norm (dual: ℓ2).
    #[default]
    L2,
    /// Max norm (dual: ℓ1).
    Linf,
}

/// Options of one DeepFool run.
#[derive(Debug, Clone, Copy)]
pub struct DeepFoolOptions {
    /// Norm minimised.
    pub norm: Norm,
    /// Overshoot η: the iterate is `x + (1+η)·R`.
    pub overshoot: f32,
    /// Iteration budget.
    pub max_iter: usize,
    /// Candidate classes: the top `candidates` of the clean prediction (incl. it).
    pub candidates: usize,
    /// Box every iterate is clipped to (foolbox 3 clips every step).
    pub clip: Option<(f32, f32)>,
}

impl DeepFoolOptions {
    /// Competitor classes per image (the cotangents `M` of each gradient call) for a model
    /// with `k` classes: `candidates − 1`, at least 1 and at most `k − 1`.
    fn competitors(&self, k: usize) -> usize {
        self.candidates.clamp(2, k.max(2)).min(k) - 1
    }
}

impl Default for DeepFoolOptions {
    fn default() -> Self {
        DeepFoolOptions {
            norm: Norm::L2,
            overshoot: 0.02,
            max_iter: 50,
            candidates: 10,
            clip: None,
        }
    }
}

/// One image's DeepFool result.
#[derive(Debug, Clone)]
pub struct DeepFoolOutcome {
    /// Final perturbation `x_adv − x` (`d` values, measured space).
    pub r: Vec<f32>,
    /// Whether the prediction at `x + r` differs from the clean one.
    pub success: bool,
    /// Steps taken.
    pub iterations: usize,
    /// Clean prediction `k0`.
    pub clean_class: usize,
    /// Prediction at `x + r`.
    pub adv_class: usize,
}

/// A projection applied to every gradient row: `(image position in the batch, gradient (d))`.
pub type Projection<'a> = &'a (dyn Fn(usize, &mut [f32]) + Sync);

/// Index of the largest value; ties go to the lowest index.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// ℓ2 norm (accumulated in f64).
pub fn l2(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// ℓ∞ norm.
pub fn linf(v: &[f32]) -> f64 {
    v.iter().fold(0.0f64, |m, &x| m.max(f64::from(x.abs())))
}

/// ℓ1 norm (accumulated in f64).
pub fn l1(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x.abs())).sum()
}

/// DeepFool on `n` samples `u` (`n × d`, measured space): in lockstep, every step one
/// batched gradient call, or, where gradient calls take one image each and rows are slow,
/// each image through its own steps, images concurrently (the same perturbations).
///
/// `project`, when given, is applied to every candidate gradient before the
/// step is chosen, so all steps lie in its range (docs/methods.md, subspace).
pub fn deepfool_batch(
    model: &SpacedModel,
    u: &[f32],
    n: usize,
    opts: &DeepFoolOptions,
    project: Option<Projection>,
) -> Result<Vec<DeepFoolOutcome>> {
    check_len(model, u, n)?;
    if n == 0 {
        return Ok(vec![]);
    }
    let logits0 = model.logits(u, n)?;
    deepfool_batch_at(model, u, &logits0, n, opts, project)
}

/// [`deepfool_batch`] for a caller that holds the clean logits `logits0` (`n × K`) of `u`
/// already: it saves the forward pass that would recompute them.
pub fn deepfool_batch_at(
    model: &SpacedModel,
    u: &[f32],
    logits0: &[f32],
    n: usize,
    opts: &DeepFoolOptions,
    project: Option<Projection>,
) -> Result<Vec<DeepFoolOutcome>> {
    check_len(model, u, n)?;
    let k = model.classes();
    if logits0.len() != n * k {
        return Err(Error::Config(format!(
            "deepfool: expected {n}×{k} clean logits, got {}",
            logits0.len()
        )));
    }
    if n == 0 {
        return Ok(vec![]);
    }
    let m = opts.competitors(k);
    let net = model.model;
    let slow_rows = net
        .forward_seconds_per_row()
        .is_some_and(|s| s >= PER_IMAGE_FROM_S);
    if n > 1 && slow_rows && net.concurrent_calls() > 1 && net.vjp_rows_per_call(m) == 1 {
        // Gradient calls take one image each anyway: run each image's iterations on its own
        // rather than in lockstep, so that no thread waits at the end of an iteration for the
        // others (EfficientNet-Lite0, 5 photos, 2 threads: 19 gradient rows ran as 12 rounds
        // of one or two rows).
        return deepfool_each(model, u, logits0, n, opts, project);
    }
    deepfool_from(model, u, logits0, n, opts, project)
}

/// Fails unless `u` holds `n` samples of the model's dimension.
fn check_len(model: &SpacedModel, u: &[f32], n: usize) -> Result<()> {
    let d = model.dim();
    if u.len() != n * d {
        return Err(Error::Config(format!(
            "deepfool: expected {n}×{d} values, got {}",
            u.len()
        )));
    }
    Ok(())
}

/// [`deepfool_batch`] image by image, images concurrently, from the clean logits `logits0`.
fn deepfool_each(
    model: &SpacedModel,
    u: &[f32],
    logits0: &[f32],
    n: usize,
    opts: &DeepFoolOptions,
    project: Option<Projection>,
) -> Result<Vec<DeepFoolOutcome>> {
    let (d, k) = (model.dim(), model.classes());
    model.model.map_concurrent(n, |i| {
        let ui = &u[i * d..(i + 1) * d];
        let li = &logits0[i * k..(i + 1) * k];
        let one = match project {
            Some(p) => {
                let at_i = move |_: usize, w: &mut [f32]| p(i, w);
                deepfool_from(model, ui, li, 1, opts, Some(&at_i))?
            }
            None => deepfool_from(model, ui, li, 1, opts, None)?,
        };
        Ok(one.into_iter().next().expect("one outcome per image"))
    })
}

/// Forward time per row (fastest seen) from which [`deepfool_batch`] runs images on their own
/// where gradient calls take one image each: below it (the digits CNN: 0.03 ms) the per-call
/// cost of single-image checks outweighs the waiting it saves.
const PER_IMAGE_FROM_S: f64 = 1e-3;

/// [`deepfool_batch`] in lockstep, from the clean logits `logits0` of the `n` samples `u`.
fn deepfool_from(
    model: &SpacedModel,
    u: &[f32],
    logits0: &[f32],
    n: usize,
    opts: &DeepFoolOptions,
    project: Option<Projection>,
) -> Result<Vec<DeepFoolOutcome>> {
    let d = model.dim();
    let k = model.classes();
    let m = opts.competitors(k);
    let mut k0 = Vec::with_capacity(n);
    let mut cands: Vec<Vec<usize>> = Vec::with_capacity(n);
    for row in logits0.chunks_exact(k) {
        let c0 = argmax(row);
        k0.push(c0);
        let mut c = top_k(row, m + 1);
        c.retain(|&j| j != c0);
        c.truncate(m);
        cands.push(c);
    }
    let mut out: Vec<DeepFoolOutcome> = (0..n)
        .map(|i| DeepFoolOutcome {
            r: vec![0.0; d],
            success: false,
            iterations: 0,
            clean_class: k0[i],
            adv_class: k0[i],
        })
        .collect();
    if m == 0 {
        return Ok(out);
    }
    // Accumulated steps R and current iterates.
    let mut acc = vec![0.0f32; n * d];
    let mut xs = u.to_vec();
    let mut active: Vec<usize> = (0..n).collect();
    let eta = 1.0 + opts.overshoot;
    for iter in 0..opts.max_iter {
        if active.is_empty() {
            break;
        }
        let na = active.len();
        let mut xa = Vec::with_capacity(na * d);
        let mut cot = vec![0.0f32; na * m * k];
        for (a, &i) in active.iter().enumerate() {
            xa.extend_from_slice(&xs[i * d..(i + 1) * d]);
            for (j, &c) in cands[i].iter().enumerate() {
                let row = &mut cot[(a * m + j) * k..(a * m + j + 1) * k];
                row[c] = 1.0;
                row[k0[i]] = -1.0;
            }
        }
        let (lg, mut grads) = model.vjp(&xa, na, &cot, m)?;
        // One step per active image (in parallel).
        let steps: Vec<Vec<f32>> = grads
            .par_chunks_mut(m * d)
            .enumerate()
            .map(|(a, g)| {
                let i = active[a];
                let row = &lg[a * k..(a + 1) * k];
                let mut best = (f64::INFINITY, 0usize, 0.0f64, 0.0f64);
                for (j, &c) in cands[i].iter().enumerate() {
                    let w = &mut g[j * d..(j + 1) * d];
                    if let Some(p) = project {
                        p(i, w);
                    } else if let Some((lo, hi)) = opts.clip {
                        // Coordinates pinned at a bound that the step would
                        // push further out cannot move: leave them out of
                        // the linearisation so the step goes where it can.
                        let xi = &xs[i * d..(i + 1) * d];
                        for (wt, &xt) in w.iter_mut().zip(xi) {
                            if (xt >= hi && *wt > 0.0) || (xt <= lo && *wt < 0.0) {
                                *wt = 0.0;
                            }
                        }
                    }
                    let f = (f64::from(row[c]) - f64::from(row[k0[i]])).abs();
                    let wn = match opts.norm {
                        Norm::L2 => l2(w),
                        Norm::Linf => l1(w),
                    };
                    let dist = if wn > 0.0 { f / wn } else { f64::INFINITY };
                    if dist < best.0 {
                        best = (dist, j, f, wn);
                    }
                }
                let (dist, j, f, wn) = best;
                if !dist.is_finite() {
                    return vec![0.0; d];
                }
                let w = &g[j * d..(j + 1) * d];
                match opts.norm {
                    Norm::L2 => {
                        let s = (f / (wn * wn)) as f32;
                        w.iter().map(|&x| x * s).collect()
                    }
                    Norm::Linf => {
                        let s = (f / wn) as f32;
                        w.iter()
                            .map(|&x| s * x.signum() * f32::from(x != 0.0))
                            .collect()
                    }
                }
            })
            .collect();
        for (a, &i) in active.iter().enumerate() {
            let ai = &mut acc[i * d..(i + 1) * d];
            let xi = &mut xs[i * d..(i + 1) * d];
            let ui = &u[i * d..(i + 1) * d];
            for t in 0..d {
                ai[t] += steps[a][t];
                let mut v = ui[t] + eta * ai[t];
                if let Some((lo, hi)) = opts.clip {
                    v = v.clamp(lo, hi);
                }
                xi[t] = v;
            }
            out[i].iterations = iter + 1;
        }
        // Test the new iterates with one forward pass.
        let mut xa = Vec::with_capacity(na * d);
        for &i in &active {
            xa.extend_from_slice(&xs[i * d..(i + 1) * d]);
        }
        let logits_cur = model.logits(&xa, na)?;
        let mut still = Vec::with_capacity(na);
        for (a, &i) in active.iter().enumerate() {
            let c = argmax(&logits_cur[a * k..(a + 1) * k]);
            out[i].adv_class = c;
            if c != k0[i] {
                out[i].success = true;
            } else {
                still.push(i);
            }
        }
        active = still;
    }
    for (i, o) in out.iter_mut().enumerate() {
        for t in 0..d {
            // Without a box the perturbation is exactly (1+η)·R; taking it
            // from `x_adv − x` would lose digits to cancellation.
            o.r[t] = match opts.clip {
                None => eta * acc[i * d + t],
                Some(_) => xs[i * d + t] - u[i * d + t],
            };
        }
    }
    Ok(out)
}

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// `l2` or `linf`.
    pub norm: Norm,
    /// Overshoot η.
    pub overshoot: f32,
    /// Iteration budget.
    pub max_iter: usize,
    /// Candidate classes (top N of the clean prediction, incl. it).
    pub candidates: usize,
    /// Clip every iterate to `--bounds` (when there are bounds).
    pub clip: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            norm: Norm::L2,
            overshoot: 0.02,
            max_iter: 50,
            candidates: 10,
            clip: true,
        }
    }
}

impl Params {
    /// The run options under `bounds`.
    pub fn options(&self, bounds: Option<(f32, f32)>) -> DeepFoolOptions {
        DeepFoolOptions {
            norm: self.norm,
            overshoot: self.overshoot,
            max_iter: self.max_iter,
            candidates: self.candidates,
            clip: if self.clip { bounds } else { None },
        }
    }
}

/// Images per [`deepfool_batch`] call so that the `(n, M, d)` gradients stay
/// within about 32 MB (memory stays flat however large the data set; model
/// calls are batched by the model's batch size inside).
pub fn chunk_len(d: usize, m: usize, batch: usize) -> usize {
    (8_000_000 / (d * m.max(1)).max(1))
        .clamp(1, 1024)
        .max(batch.min(64))
}

/// Which DeepFool perturbations [`run_all`] keeps besides the per-image
/// values. Each is a whole input's worth of floats (600 KB for a 224×224
/// RGB image), so a measure keeps only what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// None: the per-image values (`norm_l2`, ...) are all the caller needs.
    Nothing,
    /// The `n` fooled images with the smallest `‖r‖₂` (for pictures).
    Smallest(usize),
    /// Every attacked image's.
    All,
}

/// Runs DeepFool over the whole data set: per-image results (misclassified
/// images are not attacked) and the outcomes that `keep` asks for, by image
/// index.
pub fn run_all(
    ctx: &Context,
    opts: &DeepFoolOptions,
    what: &str,
    keep: Keep,
) -> Result<(Vec<ImageResult>, BTreeMap<usize, DeepFoolOutcome>)> {
    let sm = SpacedModel::new(ctx.model, ctx.data);
    let d = sm.dim();
    let k = sm.classes();
    let total = ctx.data.len();
    let chunk = chunk_len(d, opts.candidates.min(k), ctx.model.pass_rows());
    let bar = ctx.progress.bar(total as u64, what);
    let mut images = Vec::with_capacity(total);
    let mut outs = BTreeMap::new();
    let mut start = 0;
    while start < total {
        let len = chunk.min(total - start);
        let u = sm.load(ctx.data, start, len)?;
        let logits = sm.logits(&u, len)?;
        let preds: Vec<usize> = logits.chunks(k).map(argmax).collect();
        let attacked: Vec<bool> = (0..len)
            .map(|i| {
                ctx.data.items[start + i]
                    .label
                    .is_none_or(|l| l == preds[i])
            })
            .collect();
        let mut ua = Vec::with_capacity(len * d);
        let mut la = Vec::with_capacity(len * k);
        for i in (0..len).filter(|&i| attacked[i]) {
            ua.extend_from_slice(&u[i * d..(i + 1) * d]);
            la.extend_from_slice(&logits[i * k..(i + 1) * k]);
        }
        let n_attacked = attacked.iter().filter(|&&a| a).count();
        let res = deepfool_batch_at(&sm, &ua, &la, n_attacked, opts, None)?;
        let mut res_iter = res.into_iter();
        for i in 0..len {
            let index = start + i;
            let item = &ctx.data.items[index];
            let mut values = Values::new();
            let (outcome, o) = if attacked[i] {
                let o = res_iter.next().expect("one outcome per kept image");
                let ui = &u[i * d..(i + 1) * d];
                let (nl2, nli) = (l2(&o.r), linf(&o.r));
                values.insert("norm_l2", nl2);
                values.insert("norm_linf", nli);
                values.insert(
                    "rho",
                    match opts.norm {
                        Norm::L2 => nl2 / l2(ui).max(1e-30),
                        Norm::Linf => nli / linf(ui).max(1e-30),
                    },
                );
                values.insert("adv_pred", o.adv_class as f64);
                values.insert("iterations", o.iterations as f64);
                let outcome = if o.success {
                    Outcome::Fooled
                } else {
                    Outcome::Failed
                };
                (outcome, Some(o))
            } else {
                (Outcome::Misclassified, None)
            };
            let wanted = match keep {
                Keep::Nothing => false,
                Keep::Smallest(_) => outcome == Outcome::Fooled,
                Keep::All => true,
            };
            if let (true, Some(o)) = (wanted, o) {
                outs.insert(index, o);
            }
            if let Keep::Smallest(n) = keep {
                while outs.len() > n {
                    let largest = outs
                        .iter()
                        .max_by(|a, b| l2(&a.1.r).total_cmp(&l2(&b.1.r)))
                        .map(|(&i, _)| i);
                    outs.remove(&largest.expect("more than n kept"));
                }
            }
            images.push(ImageResult {
                index,
                name: item.name.clone(),
                label: item.label,
                pred: preds[i],
                outcome,
                values,
            });
        }
        bar.inc(len as u64);
        start += len;
    }
    bar.finish_and_clear();
    Ok((images, outs))
}

/// Saves the `count` fooled images with the smallest `‖r‖₂` as panels:
/// original | perturbed | difference scaled to ±max.
fn save_worst(
    ctx: &Context,
    dir: &std::path::Path,
    images: &[ImageResult],
    outcomes: &BTreeMap<usize, DeepFoolOutcome>,
    count: usize,
) -> Result<Vec<Artifact>> {
    let sm = SpacedModel::new(ctx.model, ctx.data);
    let spec = &ctx.model.spec;
    let shape = (spec.channels.count(), spec.height, spec.width);
    let mut fooled: Vec<&ImageResult> = images
        .iter()
        .filter(|i| i.outcome == Outcome::Fooled)
        .collect();
    fooled.sort_by(|a, b| a.values["norm_l2"].total_cmp(&b.values["norm_l2"]));
    let mut out = Vec::new();
    for img in fooled.into_iter().take(count) {
        let Some(o) = outcomes.get(&img.index) else {
            continue;
        };
        let x = sm.load(ctx.data, img.index, 1)?;
        let adv: Vec<f32> = x.iter().zip(&o.r).map(|(a, b)| a + b).collect();
        let m = linf(&o.r).max(1e-30) as f32;
        let panels = [
            picture::to_rgb(&x, shape, |v| v),
            picture::to_rgb(&adv, shape, |v| v),
            picture::to_rgb(&o.r, shape, |v| v / m * 0.5 + 0.5),
        ];
        let Some(panels) = panels.into_iter().collect::<Option<Vec<_>>>() else {
            return Ok(out); // not a 1- or 3-channel planar image
        };
        let name = format!("deepfool_{}.png", img.index);
        picture::save(&picture::panels(&panels), &dir.join(&name))?;
        out.push(Artifact {
            description: format!(
                "{}: original (class {}) | perturbed (class {}, |r|2 = {:.4}) | difference x{:.0}",
                img.name,
                img.pred,
                o.adv_class,
                img.values["norm_l2"],
                0.5 / m
            ),
            path: name,
        });
    }
    Ok(out)
}

/// Values of `key` over the fooled images.
pub fn fooled_values(images: &[ImageResult], key: &str) -> Vec<f64> {
    images
        .iter()
        .filter(|i| i.outcome == Outcome::Fooled)
        .filter_map(|i| i.values.get(key).copied())
        .collect()
}

/// The per-image values DeepFool writes (also those of the measures that run it first).
pub const VALUES: &[(&str, &str)] = &[
    ("norm_l2", "‖r‖₂ of the perturbation found"),
    ("norm_linf", "‖r‖∞ of the perturbation found"),
    ("rho", "‖r‖/‖x‖ in the chosen norm"),
    ("adv_pred", "class predicted at x + r"),
    ("iterations", "DeepFool steps taken"),
];

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "deepfool",
        about: "minimal additive perturbation (DeepFool, l2 or linf): norm_l2, norm_linf, rho = |r|/|x|",
        params: &[
            ("norm", "`l2` or `linf`."),
            ("overshoot", "Overshoot η."),
            ("max_iter", "Iteration budget."),
            ("candidates", "Candidate classes (top N of the clean prediction, incl. it)."),
            ("clip", "Clip every iterate to `--bounds` (when there are bounds)."),
        ],
        headline: &["median_rho", "median_norm_l2", "success_rate"],
        histograms: &["rho", "norm_l2"],
        values: &[VALUES],
    };

    fn run(&self, ctx: &Context) -> Result<Output> {
        let opts = self.options(ctx.bounds);
        const PICTURES: usize = 3;
        let (images, outcomes) = run_all(ctx, &opts, "deepfool", Keep::Smallest(PICTURES))?;
        let artifacts = match ctx.out_dir {
            Some(dir) => save_worst(ctx, dir, &images, &outcomes, PICTURES)?,
            None => vec![],
        };
        let counts = Counts::of(&images);
        let mut summary = BTreeMap::new();
        summary.insert("n".into(), images.len() as f64);
        let attacked = counts.fooled + counts.failed;
        summary.insert("n_attacked".into(), attacked as f64);
        if attacked > 0 {
            summary.insert(
                "success_rate".into(),
                counts.fooled as f64 / attacked as f64,
            );
        }
        let put = |s: &mut BTreeMap<String, f64>, name: &str, v: Option<f64>| {
            if let Some(v) = v {
                s.insert(name.into(), v);
            }
        };
        put(
            &mut summary,
            "median_norm_l2",
            super::median(&fooled_values(&images, "norm_l2")),
        );
        put(
            &mut summary,
            "median_norm_linf",
            super::median(&fooled_values(&images, "norm_linf")),
        );
        put(
            &mut summary,
            "mean_rho",
            super::mean(&fooled_values(&images, "rho")),
        );
        put(
            &mut summary,
            "median_rho",
            super::median(&fooled_values(&images, "rho")),
        );
        put(
            &mut summary,
            "mean_iterations",
            super::mean(&fooled_values(&images, "iterations")),
        );
        Ok(Output {
            summary,
            images,
            extra: serde_json::json!({ "clipped_to": opts.clip }),
            artifacts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_go_to_the_lowest_index() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[0.0]), 0);
    }

    #[test]
    fn norms() {
        let v = [3.0f32, -4.0];
        assert_eq!(l2(&v), 5.0);
        assert_eq!(linf(&v), 4.0);
        assert_eq!(l1(&v), 7.0);
    }

    #[test]
    fn params_parse_with_defaults() {
        let p: Params =
            super::super::parse_params("deepfool", &serde_json::json!({"norm": "linf"})).unwrap();
        assert_eq!(p.norm, Norm::Linf);
        assert_eq!(p.max_iter, 50);
        assert!(super::super::parse_params::<Params>(
            "deepfool",
            &serde_json::json!({"norm": "l3"})
        )
        .is_err());
    }

    /// Image by image (concurrently) and in lockstep give the same perturbations, with a
    /// projection that differs per image too (it must see each image's own index). The
    /// projected run honours the projection exactly, and every success is confirmed by a
    /// fresh forward pass at `u + r`. How many images the projected, clipped search fools
    /// within its budget depends on rounding (tract's kernels differ by instruction set), so
    /// the test asks only that each run fools some image, so that both branches are compared.
    #[test]
    fn images_on_their_own_match_the_lockstep_run() {
        let (model, data) = super::super::digits_on_tract(8, Some(2));
        assert!(
            model.concurrent_calls() > 1,
            "needs concurrent calls to test"
        );
        let sm = SpacedModel::new(&model, &data);
        let d = sm.dim();
        let u = sm.load(&data, 0, 8).unwrap();
        let logits0 = sm.logits(&u, 8).unwrap();
        let opts = Params::default().options(Some((0.0, 1.0)));
        let zeroed = |i: usize, t: usize| (t + i).is_multiple_of(3);
        let keep_some = |i: usize, w: &mut [f32]| {
            for (t, v) in w.iter_mut().enumerate() {
                if zeroed(i, t) {
                    *v = 0.0;
                }
            }
        };
        for project in [None, Some(&keep_some as Projection)] {
            let each = deepfool_each(&sm, &u, &logits0, 8, &opts, project).unwrap();
            let lockstep = deepfool_from(&sm, &u, &logits0, 8, &opts, project).unwrap();
            assert_eq!(each.len(), 8);
            for (a, b) in each.iter().zip(&lockstep) {
                assert_eq!(
                    (a.success, a.iterations, a.adv_class),
                    (b.success, b.iterations, b.adv_class)
                );
                assert_eq!(a.r, b.r);
            }
            for (i, o) in each.iter().enumerate() {
                let ui = &u[i * d..(i + 1) * d];
                if project.is_some() {
                    let moved = (0..d).filter(|&t| zeroed(i, t) && o.r[t] != 0.0).count();
                    assert_eq!(moved, 0, "image {i}: pixels outside the projection moved");
                }
                let adv: Vec<f32> = ui
                    .iter()
                    .zip(&o.r)
                    .map(|(a, b)| (a + b).clamp(0.0, 1.0))
                    .collect();
                let c = argmax(&sm.logits(&adv, 1).unwrap());
                if o.success {
                    assert_ne!(c, o.clean_class, "image {i}: claimed success does not fool");
                }
            }
            let fooled = each.iter().filter(|o| o.success).count();
            eprintln!("projection {}: {fooled} of 8 fooled", project.is_some());
            assert!(
                fooled > 0,
                "no image fooled: the comparison saw only failures"
            );
        }
    }
}
