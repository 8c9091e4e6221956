//! `robust_accuracy`: the accuracy left under attacks of fixed strength ε, as AutoAttack
//! measures it (Croce & Hein, ICML 2020; docs/methods.md, robust_accuracy). Per ε, an
//! ensemble scored by the worst case per image: APGD with cross-entropy on every correctly
//! classified image, APGD with the targeted DLR loss towards each of the top `targets`
//! other classes on the images it left, and the gradient-free Square Attack (Andriushchenko
//! et al. 2020) on the images both left. An image is robust at ε when all fail.
//!
//! Every point an attack reports is re-checked with a fresh forward pass at the point
//! clipped to `--bounds`, its distance to the clean image checked against ε, before it
//! counts. An image Square fools where both gradient attacks failed is flagged as possible
//! gradient masking: the gradients misled the attacks that follow them.
//!
//! The ε are run in increasing order: a point found within a smaller ε lies within every
//! larger one, so an image fooled at ε counts as fooled (by the same attack) at every larger
//! ε without being attacked again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::space::{CleanPass, Space, SpacedModel};
use super::{Better, 
    splitmix, Context, Declaration, ImageResult, Measure, Outcome, Output, Summary, Units, Values,
};
use crate::attack::apgd::{apgd, ApgdOptions, Found, Loss};
use crate::attack::deepfool::Norm;
use crate::attack::square::{square_linf, Grid, SquareOptions};
use crate::attack::vector::{argmax, l2, linf};
use crate::error::{Error, Result};
use crate::logits::top_k;
use crate::spec::Layout;

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Threat model: `linf` or `l2`.
    pub norm: Norm,
    /// Radii ε, in the measured space: a list, or one number.
    #[serde(deserialize_with = "one_or_many")]
    pub eps: Vec<f64>,
    /// APGD iterations per run.
    pub steps: usize,
    /// Target classes of APGD-DLR-T: the top N classes other than the prediction
    /// (AutoAttack's standard version takes 9).
    pub targets: usize,
    /// Random restarts of every APGD run.
    pub restarts: usize,
    /// Square Attack's query budget per image.
    pub queries: usize,
    /// Run Square Attack (L∞ only) on the images the gradient attacks left.
    pub square: bool,
}

/// A list of numbers, or one number as a list of one (`-p eps=0.05`).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(f64),
        Many(Vec<f64>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(e)) => Ok(vec![e]),
        Ok(OneOrMany::Many(v)) => Ok(v),
        Err(_) => Err(serde::de::Error::custom(
            "eps: expected a number or a list of numbers",
        )),
    }
}

impl Default for Params {
    fn default() -> Self {
        Params {
            norm: Norm::Linf,
            eps: vec![0.01, 0.02, 0.05, 0.1],
            steps: 100,
            targets: 5,
            restarts: 1,
            queries: 5000,
            square: true,
        }
    }
}

/// The attacks of the ensemble, in the order they run; the number is the per-image
/// `attack@{eps}` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attack {
    /// APGD with cross-entropy.
    ApgdCe = 1,
    /// APGD with the targeted DLR loss.
    ApgdDlrT = 2,
    /// Square Attack.
    Square = 3,
}

impl Attack {
    const ALL: [Attack; 3] = [Attack::ApgdCe, Attack::ApgdDlrT, Attack::Square];

    fn key(self) -> &'static str {
        match self {
            Attack::ApgdCe => "apgd_ce",
            Attack::ApgdDlrT => "apgd_dlr_t",
            Attack::Square => "square",
        }
    }
}

/// An adversarial point the ensemble found and re-checked.
#[derive(Debug, Clone)]
pub struct Adversarial {
    /// Position in the data set.
    pub index: usize,
    /// The smallest ε of the run at which it was found (it counts at every larger one).
    pub eps: f64,
    /// The attack that found it.
    pub attack: Attack,
    /// The point, clipped to the bounds (`d` values, measured space).
    pub point: Vec<f32>,
    /// Class predicted at the point by the re-checking forward pass.
    pub class: usize,
    /// Its distance to the clean image in the run's norm.
    pub norm: f64,
}

/// What [`Params::ensemble`] returns: per-image results, and the re-checked points (when
/// asked for).
pub struct Ensemble {
    /// Per-image results, in data-set order.
    pub images: Vec<ImageResult>,
    /// Points an attack reported that the re-check refused.
    pub unconfirmed: usize,
    /// Re-checked points, one per fooled image, when kept.
    pub points: Vec<Adversarial>,
}

/// One image's first re-checked hit: the rank of its ε (in increasing order) and the point.
struct Hit {
    rank: usize,
    attack: Attack,
    class: usize,
    norm: f64,
    point: Vec<f32>,
}

/// Relative slack of the re-check's `‖δ‖ ≤ ε`: f32 rounding of `x + δ`.
const NORM_SLACK: f64 = 1e-5;

impl Params {
    fn name() -> &'static str {
        Self::DECLARATION.name
    }

    /// The key text of ε `e` (`{}` of the value given: 0.05 → `0.05`).
    pub fn eps_key(e: f64) -> String {
        format!("{e}")
    }

    /// Runs the ensemble over the whole data set; keeps the re-checked points with `keep`.
    pub fn ensemble(&self, ctx: &Context, keep: bool) -> Result<Ensemble> {
        let sm = SpacedModel::new(ctx.model, ctx.data);
        let (d, k, total) = (sm.dim(), sm.classes(), ctx.data.len());
        let spec = &ctx.model.spec;
        let grid = Grid {
            channels: spec.channels.count(),
            height: spec.height,
            width: spec.width,
            planar: sm.space == Space::Image || spec.layout == Layout::Nchw,
        };
        let mut order: Vec<usize> = (0..self.eps.len()).collect();
        order.sort_by(|&a, &b| self.eps[a].total_cmp(&self.eps[b]));
        let chunk = (4_000_000 / d.max(1))
            .clamp(1, 1024)
            .max(ctx.model.executor().pass_rows().min(64));
        let run_square = self.square && self.queries > 0 && self.norm == Norm::Linf;
        let run_dlr = k >= 4 && self.targets > 0;
        let bar = ctx.progress.bar(total as u64, Self::name());
        let mut out = Ensemble {
            images: Vec::with_capacity(total),
            unconfirmed: 0,
            points: vec![],
        };
        for start in (0..total).step_by(chunk) {
            let len = chunk.min(total - start);
            let CleanPass {
                u,
                logits,
                preds,
                correct,
            } = sm.clean_pass(ctx.data, start, len)?;
            let mut hits: Vec<Option<Hit>> = (0..len).map(|_| None).collect();
            for (rank, &ei) in order.iter().enumerate() {
                let eps = self.eps[ei];
                let mut pending: Vec<usize> = (0..len)
                    .filter(|&i| correct[i] && hits[i].is_none())
                    .collect();
                let mut stages: Vec<(Attack, usize, usize)> = vec![];
                for r in 0..self.restarts {
                    stages.push((Attack::ApgdCe, 0, r));
                }
                if run_dlr {
                    for t in 1..=self.targets.min(k - 1) {
                        for r in 0..self.restarts {
                            stages.push((Attack::ApgdDlrT, t, r));
                        }
                    }
                }
                if run_square {
                    stages.push((Attack::Square, 0, 0));
                }
                for (attack, target, restart) in stages {
                    if pending.is_empty() {
                        break;
                    }
                    let mut ua = Vec::with_capacity(pending.len() * d);
                    for &i in &pending {
                        ua.extend_from_slice(&u[i * d..(i + 1) * d]);
                    }
                    let labels: Vec<usize> = pending.iter().map(|&i| preds[i]).collect();
                    let tag = (attack as u64) << 48
                        | (rank as u64) << 32
                        | (target as u64) << 16
                        | restart as u64;
                    let seeds: Vec<u64> = pending
                        .iter()
                        .map(|&i| splitmix(ctx.image_seed(start + i) ^ splitmix(tag)))
                        .collect();
                    let found = match attack {
                        Attack::Square => square_linf(
                            &sm,
                            &ua,
                            &labels,
                            &seeds,
                            &SquareOptions {
                                eps: eps as f32,
                                queries: self.queries,
                                p_init: 0.8,
                                bounds: ctx.bounds,
                                grid,
                            },
                        )?,
                        _ => {
                            let targets: Vec<usize> = pending
                                .iter()
                                .map(|&i| {
                                    let row = &logits[i * k..(i + 1) * k];
                                    top_k(row, k)
                                        .into_iter()
                                        .filter(|&c| c != preds[i])
                                        .nth(target.saturating_sub(1))
                                        .unwrap_or(preds[i])
                                })
                                .collect();
                            let opts = ApgdOptions {
                                norm: self.norm,
                                eps: eps as f32,
                                steps: self.steps,
                                bounds: ctx.bounds,
                                loss: match attack {
                                    Attack::ApgdCe => Loss::Ce,
                                    _ => Loss::DlrTargeted,
                                },
                            };
                            let targets = (attack == Attack::ApgdDlrT).then_some(&targets[..]);
                            apgd(&sm, &ua, &labels, targets, &seeds, &opts)?
                        }
                    };
                    let checked = self.confirm(&sm, ctx.bounds, eps, &ua, &labels, found)?;
                    let mut still = Vec::with_capacity(pending.len());
                    for (&i, c) in pending.iter().zip(checked) {
                        match c {
                            Checked::Yes(point, class, norm) => {
                                hits[i] = Some(Hit {
                                    rank,
                                    attack,
                                    class,
                                    norm,
                                    point,
                                });
                            }
                            Checked::Refused => {
                                out.unconfirmed += 1;
                                still.push(i);
                            }
                            Checked::NotFound => still.push(i),
                        }
                    }
                    pending = still;
                }
            }
            for i in 0..len {
                let index = start + i;
                let item = &ctx.data.items[index];
                let mut values = Values::new();
                let outcome = if !correct[i] {
                    Outcome::Misclassified
                } else {
                    for (rank, &ei) in order.iter().enumerate() {
                        let key = Self::eps_key(self.eps[ei]);
                        match &hits[i] {
                            Some(h) if h.rank <= rank => {
                                values.insert(format!("robust@{key}"), 0.0);
                                values.insert(format!("attack@{key}"), h.attack as u8 as f64);
                                values.insert(format!("adv_pred@{key}"), h.class as f64);
                                values.insert(format!("norm@{key}"), h.norm);
                            }
                            _ => {
                                values.insert(format!("robust@{key}"), 1.0);
                            }
                        }
                    }
                    match &hits[i] {
                        Some(h) => {
                            values.insert("fooled_at", self.eps[order[h.rank]]);
                            Outcome::Fooled
                        }
                        None => Outcome::Robust,
                    }
                };
                if keep {
                    if let Some(h) = hits[i].take() {
                        out.points.push(Adversarial {
                            index,
                            eps: self.eps[order[h.rank]],
                            attack: h.attack,
                            point: h.point,
                            class: h.class,
                            norm: h.norm,
                        });
                    }
                }
                out.images
                    .push(ImageResult::new(index, item, preds[i], outcome, values));
            }
            bar.inc(len as u64);
        }
        bar.finish_and_clear();
        Ok(out)
    }

    /// Re-checks the points `found` for the clean samples `u` (labels `labels`): each clipped
    /// to `bounds`, its distance to the clean sample at most ε (up to f32 rounding), and
    /// classified other than its label by one fresh forward pass over all of them.
    fn confirm(
        &self,
        sm: &SpacedModel,
        bounds: Option<(f32, f32)>,
        eps: f64,
        u: &[f32],
        labels: &[usize],
        found: Vec<Option<Found>>,
    ) -> Result<Vec<Checked>> {
        let (d, k) = (sm.dim(), sm.classes());
        let mut out: Vec<Checked> = Vec::with_capacity(found.len());
        let mut rows = vec![];
        let mut xs = vec![];
        for (i, f) in found.into_iter().enumerate() {
            let Some(f) = f else {
                out.push(Checked::NotFound);
                continue;
            };
            let mut p = f.point;
            if let Some((lo, hi)) = bounds {
                for v in p.iter_mut() {
                    *v = v.clamp(lo, hi);
                }
            }
            let delta: Vec<f32> = p
                .iter()
                .zip(&u[i * d..(i + 1) * d])
                .map(|(a, b)| a - b)
                .collect();
            let norm = match self.norm {
                Norm::Linf => linf(&delta),
                Norm::L2 => l2(&delta),
            };
            if norm.is_nan() || norm > eps * (1.0 + NORM_SLACK) || p.iter().any(|v| !v.is_finite()) {
                out.push(Checked::Refused);
                continue;
            }
            xs.extend_from_slice(&p);
            rows.push(out.len());
            out.push(Checked::Yes(p, usize::MAX, norm));
        }
        if rows.is_empty() {
            return Ok(out);
        }
        let logits = sm.logits(&xs, rows.len())?;
        for (a, &o) in rows.iter().enumerate() {
            let class = argmax(&logits[a * k..(a + 1) * k]);
            match &mut out[o] {
                Checked::Yes(_, c, _) if class != labels[o] => *c = class,
                slot => *slot = Checked::Refused,
            }
        }
        Ok(out)
    }
}

/// The re-check of one image's reported point.
enum Checked {
    /// No point reported.
    NotFound,
    /// Reported, but outside the ball or not fooling the fresh forward pass.
    Refused,
    /// Confirmed: the clipped point, its class and distance.
    Yes(Vec<f32>, usize, f64),
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "robust_accuracy",
        about: "accuracy left at fixed ε under an AutoAttack-style ensemble (APGD-CE, APGD-DLR-T, Square), worst case per image; flags gradient masking",
        params: &[
            ("norm", "`linf` or `l2` (Square Attack runs for `linf` only)."),
            ("eps", "Radii ε, one (`0.05`) or several (`[0.05,0.1]`), in the measured space."),
            ("steps", "APGD iterations per run."),
            ("targets", "Target classes of APGD-DLR-T: the top N classes other than the prediction (AutoAttack's standard version takes 9)."),
            ("restarts", "Random restarts of every APGD run."),
            ("queries", "Square Attack's query budget per image."),
            ("square", "Run Square Attack on the images the gradient attacks left."),
        ],
        headline: &["clean_accuracy", "robust_accuracy", "gradient_masking"],
        better: &[("clean_accuracy", Better::Higher), ("robust_accuracy", Better::Higher), ("gradient_masking", Better::Lower)],
        histograms: &["fooled_at"],
        values: &[&[
            ("robust@{eps}", "1 when no attack fooled the image within ε, else 0"),
            ("attack@{eps}", "which attack fooled it: 1 APGD-CE, 2 APGD-DLR-T, 3 Square"),
            ("adv_pred@{eps}", "class at the adversarial point, by a fresh forward pass"),
            ("norm@{eps}", "‖δ‖ of the adversarial point in the chosen norm"),
            ("fooled_at", "the smallest ε given at which the image was fooled"),
        ]],
        units: Units::Chunks,
    };

    fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("{}: {what}", Self::name())));
        if self.eps.is_empty() {
            return bad("eps must list at least one radius");
        }
        if let Some(e) = self.eps.iter().find(|e| !(e.is_finite() && **e > 0.0)) {
            return bad(&format!("eps must be finite and > 0, got {e}"));
        }
        let mut keys: Vec<String> = self.eps.iter().map(|&e| Self::eps_key(e)).collect();
        keys.sort();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return bad("eps lists a radius twice");
        }
        if self.steps == 0 {
            return bad("steps must be ≥ 1");
        }
        if self.restarts == 0 {
            return bad("restarts must be ≥ 1");
        }
        if self.square && self.queries == 0 {
            return bad("queries must be ≥ 1 when square = true");
        }
        Ok(())
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let e = self.ensemble(ctx, false)?;
        let mut notes = vec![];
        if self.square && self.norm != Norm::Linf {
            notes.push("Square Attack runs for linf only: not run, so masking is not checked");
        }
        if ctx.model.classes < 4 {
            notes.push("APGD-DLR-T needs at least 4 classes: not run");
        }
        Ok(Output {
            images: e.images,
            extra: serde_json::json!({ "unconfirmed": e.unconfirmed, "notes": notes }),
            ..Output::default()
        })
    }

    /// Per ε, the images fooled by each attack and those only Square fooled (gradient
    /// masking), from every image's `robust@ε` and `attack@ε`; points the re-check refused,
    /// summed over the chunks.
    fn summarise(&self, images: &[ImageResult], parts: Vec<Summary>) -> Result<Summary> {
        let n = images.len();
        let correct = images
            .iter()
            .filter(|i| i.outcome != Outcome::Misclassified)
            .count();
        let mut summary = BTreeMap::new();
        if n > 0 {
            summary.insert("clean_accuracy".into(), correct as f64 / n as f64);
        }
        let mut per_eps = vec![];
        let mut warnings = vec![];
        let mut largest = (f64::NEG_INFINITY, f64::NAN);
        let mut flagged = std::collections::BTreeSet::new();
        for &eps in &self.eps {
            let key = Self::eps_key(eps);
            // The images fooled at ε, per attack in `Attack::ALL` order.
            let (robust_key, attack_key) = (format!("robust@{key}"), format!("attack@{key}"));
            let by_attack: Vec<Vec<usize>> = Attack::ALL
                .iter()
                .map(|&a| {
                    images
                        .iter()
                        .filter(|i| {
                            i.values.get(&robust_key) == Some(&0.0)
                                && i.values.get(&attack_key) == Some(&f64::from(a as u8))
                        })
                        .map(|i| i.index)
                        .collect()
                })
                .collect();
            let fooled: usize = by_attack.iter().map(Vec::len).sum();
            let robust = correct - fooled;
            if n > 0 {
                let ra = robust as f64 / n as f64;
                summary.insert(format!("robust_accuracy@{key}"), ra);
                if eps > largest.0 {
                    largest = (eps, ra);
                }
            }
            let masked = &by_attack[Attack::Square as usize - 1];
            summary.insert(format!("masking@{key}"), masked.len() as f64);
            let mut row = serde_json::json!({
                "eps": eps,
                "attacked": correct,
                "robust": robust,
                "masking": masked,
            });
            for (a, fooled) in Attack::ALL.iter().zip(&by_attack) {
                row[a.key()] = fooled.len().into();
            }
            per_eps.push(row);
            if !masked.is_empty() {
                warnings.push(format!(
                    "gradient masking suspected on {} image{} at ε={key}: Square fooled {} where APGD-CE and APGD-DLR-T did not",
                    masked.len(),
                    if masked.len() == 1 { "" } else { "s" },
                    if masked.len() == 1 { "it" } else { "them" },
                ));
            }
            flagged.extend(masked.iter().copied());
        }
        if largest.1.is_finite() {
            summary.insert("robust_accuracy".into(), largest.1);
        }
        // Every flagged image at a smaller ε is flagged at the larger ones too.
        summary.insert("gradient_masking".into(), flagged.len() as f64);
        let unconfirmed: u64 = parts
            .iter()
            .filter_map(|p| p.extra["unconfirmed"].as_u64())
            .sum();
        Ok(Summary {
            summary,
            extra: serde_json::json!({
                "norm": self.norm,
                "per_eps": per_eps,
                "masking": {
                    "images": flagged,
                    "messages": warnings.clone(),
                },
                "warnings": warnings,
                "unconfirmed": unconfirmed,
                "notes": Summary::first_extra(&parts)["notes"],
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::parse_params;

    fn check(p: serde_json::Value) -> String {
        match parse_params::<Params>("robust_accuracy", &p).and_then(|p| p.validate()) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn params_parse_and_errors_name_the_parameter() {
        let p: Params = parse_params(
            "robust_accuracy",
            &serde_json::json!({"norm": "linf", "eps": [0.05, 0.1]}),
        )
        .unwrap();
        assert_eq!((p.norm, p.eps.len(), p.steps), (Norm::Linf, 2, 100));
        let one: Params =
            parse_params("robust_accuracy", &serde_json::json!({"eps": 0.03})).unwrap();
        assert_eq!(one.eps, [0.03]);
        assert_eq!(check(serde_json::json!({})), "");
        for (p, name) in [
            (serde_json::json!({"eps": []}), "eps"),
            (serde_json::json!({"eps": [0.1, -0.1]}), "eps"),
            (serde_json::json!({"eps": [0.0]}), "eps"),
            (serde_json::json!({"eps": [0.1, 0.1]}), "eps"),
            (serde_json::json!({"eps": "big"}), "eps"),
            (serde_json::json!({"steps": 0}), "steps"),
            (serde_json::json!({"restarts": 0}), "restarts"),
            (serde_json::json!({"queries": 0}), "queries"),
            (serde_json::json!({"norm": "l3"}), "l3"),
            (serde_json::json!({"step": 3}), "step"),
        ] {
            let e = check(p.clone());
            assert!(e.contains(name), "{p}: {e}");
        }
        assert_eq!(Params::eps_key(0.05), "0.05");
    }
}
