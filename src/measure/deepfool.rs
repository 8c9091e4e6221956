//! `deepfool`: the minimal additive perturbation of every correctly classified image, found
//! by the DeepFool solver of [`crate::attack::deepfool`] (docs/methods.md, deepfool).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::space::{CleanPass, SpacedModel};
use super::Values;
use super::{Better, 
    picture, Artifact, Context, Counts, Declaration, ImageResult, Measure, Outcome, Output,
    Summary, Units,
};
use crate::attack::deepfool::{
    deepfool_batch_at, DeepFoolOptions, DeepFoolOutcome, Norm,
};
use crate::attack::refine::{self, RefineOptions};
use crate::attack::vector::{l2, linf};
use crate::error::Result;

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
    /// Refine each perturbation found by `refine_steps` boundary steps that shrink it while
    /// it stays adversarial (docs/methods.md, minnorm).
    pub refine: bool,
    /// Boundary steps of the refinement (one class gradient each).
    pub refine_steps: usize,
    /// Budgets of the summary's `robust_accuracy@ε` keys, in the chosen norm (default by norm).
    pub eps: Option<Vec<f64>>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            norm: Norm::L2,
            overshoot: 0.02,
            max_iter: 50,
            candidates: 10,
            clip: true,
            refine: true,
            refine_steps: REFINE_STEPS,
            eps: None,
        }
    }
}

/// Boundary steps of DeepFool's default refinement.
const REFINE_STEPS: usize = 1;

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

    /// The refinement under `bounds`, when asked for.
    pub fn refinement(&self, bounds: Option<(f32, f32)>) -> Option<RefineOptions> {
        self.refine.then_some(RefineOptions {
            norm: self.norm,
            bisection: 0,
            steps: self.refine_steps,
            clip: if self.clip { bounds } else { None },
        })
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
    run_refined(ctx, opts, None, what, keep)
}

/// [`run_all`], each perturbation found then refined by `refine` (when given).
pub fn run_refined(
    ctx: &Context,
    opts: &DeepFoolOptions,
    refine: Option<&RefineOptions>,
    what: &str,
    keep: Keep,
) -> Result<(Vec<ImageResult>, BTreeMap<usize, DeepFoolOutcome>)> {
    let sm = SpacedModel::new(ctx.model, ctx.data);
    let d = sm.dim();
    let k = sm.classes();
    let total = ctx.data.len();
    let chunk = chunk_len(d, opts.candidates.min(k), ctx.model.executor().pass_rows());
    let bar = ctx.progress.bar(total as u64, what);
    let mut images = Vec::with_capacity(total);
    let mut outs = BTreeMap::new();
    let mut start = 0;
    while start < total {
        let len = chunk.min(total - start);
        let CleanPass {
            u,
            logits,
            preds,
            correct: attacked,
        } = sm.clean_pass(ctx.data, start, len)?;
        let mut ua = Vec::with_capacity(len * d);
        let mut la = Vec::with_capacity(len * k);
        for i in (0..len).filter(|&i| attacked[i]) {
            ua.extend_from_slice(&u[i * d..(i + 1) * d]);
            la.extend_from_slice(&logits[i * k..(i + 1) * k]);
        }
        let n_attacked = attacked.iter().filter(|&&a| a).count();
        let mut res = deepfool_batch_at(&sm, &ua, &la, n_attacked, opts, None)?;
        if let Some(refine) = refine {
            refine::refine(&sm, &ua, &la, &mut res, refine)?;
        }
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
            images.push(ImageResult::new(index, item, preds[i], outcome, values));
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

/// Positions of the fooled images.
pub fn fooled_indices(images: &[ImageResult]) -> Vec<usize> {
    (0..images.len())
        .filter(|&i| images[i].outcome == Outcome::Fooled)
        .collect()
}

/// Values of `key` over the fooled images.
pub fn fooled_values(images: &[ImageResult], key: &str) -> Vec<f64> {
    images
        .iter()
        .filter(|i| i.outcome == Outcome::Fooled)
        .filter_map(|i| i.values.get(key).copied())
        .collect()
}

/// The per-image value holding the perturbation's norm in `norm`.
pub fn norm_key(norm: Norm) -> &'static str {
    match norm {
        Norm::L2 => "norm_l2",
        Norm::Linf => "norm_linf",
    }
}

/// The summary of a minimal-perturbation search in `norm` from its per-image results
/// (counts, the success rate, medians of the norms and of `rho`, mean iterations, robust
/// accuracy at the budgets `eps`, default by norm), and its `extra`: the first chunk's with
/// the robust-accuracy curve.
pub fn summarise(
    images: &[ImageResult],
    parts: &[Summary],
    norm: Norm,
    eps: Option<&[f64]>,
) -> Summary {
    let counts = Counts::of(images);
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
    type Statistic = fn(&[f64]) -> Option<f64>;
    let statistics: [(&str, Statistic, &str); 5] = [
        ("median_norm_l2", super::median, "norm_l2"),
        ("median_norm_linf", super::median, "norm_linf"),
        ("mean_rho", super::mean, "rho"),
        ("median_rho", super::median, "rho"),
        ("mean_iterations", super::mean, "iterations"),
    ];
    for (name, statistic, key) in statistics {
        if let Some(v) = statistic(&fooled_values(images, key)) {
            summary.insert(name.into(), v);
        }
    }
    let eps = eps.map_or_else(|| super::curve::default_eps(norm), <[f64]>::to_vec);
    let curve = super::curve::add(&mut summary, "robust_accuracy", images, norm_key(norm), &eps);
    let mut extra = Summary::first_extra(parts);
    extra["robust_accuracy_curve"] = curve;
    Summary { summary, extra }
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
            ("refine", "Refine each perturbation found by `refine_steps` boundary steps that shrink it while it stays adversarial (docs/methods.md, minnorm)."),
            ("refine_steps", "Boundary steps of the refinement (one class gradient each)."),
            ("eps", "Budgets of the summary's `robust_accuracy@ε` keys, in the chosen norm (default: 0.1, 0.25, 0.5, 1, 2 for l2; 0.004, 0.01, 0.02, 0.05, 0.1, 0.2 for linf)."),
        ],
        headline: &["median_rho", "median_norm_l2", "success_rate"],
        better: &[("median_rho", Better::Higher), ("median_norm_l2", Better::Higher), ("success_rate", Better::Lower)],
        histograms: &["rho", "norm_l2"],
        values: &[VALUES],
        units: Units::Chunks,
    };

    fn validate(&self) -> Result<()> {
        if let Some(eps) = &self.eps {
            super::curve::check_budgets("deepfool", eps)?;
        }
        super::at_least("deepfool", "candidates", self.candidates, 2)
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let opts = self.options(ctx.bounds);
        const PICTURES: usize = 3;
        let refine = self.refinement(ctx.bounds);
        let (images, outcomes) = run_refined(
            ctx,
            &opts,
            refine.as_ref(),
            "deepfool",
            Keep::Smallest(PICTURES),
        )?;
        let artifacts = match ctx.out_dir {
            Some(dir) => save_worst(ctx, dir, &images, &outcomes, PICTURES)?,
            None => vec![],
        };
        Ok(Output {
            images,
            extra: serde_json::json!({ "clipped_to": opts.clip }),
            artifacts,
            ..Output::default()
        })
    }

    fn summarise(&self, images: &[ImageResult], parts: Vec<Summary>) -> Result<Summary> {
        Ok(summarise(images, &parts, self.norm, self.eps.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
