//! `manifool`: the smallest geometric transform (in one of six groups) that
//! changes the prediction, and its geodesic score (Kanbak et al., CVPR 2018).
//!
//! Iteration at transform `T` (warp matrix, output → input), warped image
//! `y = warp(x, T)`:
//! 1. one `vjp` call gives the logits at `y` and `w_l = ∇_y (f_l − f_{k0})`
//!    for the candidate classes `l` (the top `candidates` other classes of
//!    the clean image, fixed at the start);
//! 2. the tangent Jacobian `J` of `θ ↦ warp(x, exp(Σθᵢ Gᵢ)·T)` at `θ = 0`
//!    (`GroupWarp::tangent(.., Left)`) gives `a_l = Jᵀ w_l` and the metric
//!    `G = JᵀJ` (regularised by `1e-9·tr G`);
//! 3. class `l*` minimises the linearised distance `|g_l| / √(a_lᵀ G⁻¹ a_l)`
//!    in the metric, and the DeepFool step is
//!    `Δθ = |g_l*| / (aᵀG⁻¹a) · G⁻¹a` (it zeroes the linearised margin);
//! 4. line search: the step is tried at `line_search` log-spaced factors in
//!    `[0.05, 2]·(1 + overshoot)`, in one model call; the smallest factor
//!    that flips the prediction is taken, else the one that most reduces the
//!    margin `f_{k0} − max_{l≠k0} f_l`; `T ← exp(s·Δθ)·T`;
//! 5. stop on a label change, after `max_iter` iterations, or when the
//!    run stalls (both [`Outcome::Failed`]): after `stall_window` iterations
//!    the margin's decrease over the last `stall_window` iterations,
//!    extrapolated over the remaining budget with a slack of 2, no longer
//!    reaches zero (a search that wanders instead of descending gives up
//!    early instead of spending its whole budget); on a flip the last step
//!    is shrunk to (close to) the smallest still-fooling fraction by four
//!    rounds of 4-point refinement between the last non-fooling and the
//!    first fooling factor (to 1/625 of that interval);
//!    then, as the score is measured along `t ↦ exp(t log T)`, the smallest
//!    `t ≤ 1` on that path that still fools is found the same way (a search
//!    that reached `T` by a detour often fools earlier on the straight path).
//!
//! That is the `joint` search (the default). `search = per_class` is the
//! paper's multiclass ManiFool: steps 1–5 run once per candidate class `l`
//! with `l` as the only candidate and the binary margin `f_{k0} − f_l`
//! (each search with the whole budget), and the smallest score is kept.
//!
//! Score: `log T` (principal logarithm) gives the parameters `θ`; the length
//! of the path `t ↦ warp(x, exp(tθ))` summed in parameter steps of 0.05
//! (image-space chords), divided by `‖x‖₂` (`transforms::geodesic_score`).
//! The network's invariance score is the mean over fooled images.


use serde::{Deserialize, Serialize};
use transforms::nalgebra::{DVector, Matrix3};
use transforms::{
    geodesic_score, GroupWarp, MatrixWarp, PathMethod, PathSteps, Sampling, TangentSide,
    TransformGroup, Warp,
};

use super::frame::{
    describe, misclassified, result, save_panels, search_summary, warp_error, Clean, Frame,
};
use super::space::SpacedModel;
use super::Values;
use super::{Context, Declaration, Measure, Outcome, Output};
use crate::attack::vector::argmax;
use crate::error::{Error, Result};
use crate::logits::top_k;

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Transform group: translation, rotation, rigid, similarity, affine, projective.
    pub group: String,
    /// Iteration limit.
    pub max_iter: usize,
    /// Other classes considered (top by clean logit).
    pub candidates: usize,
    /// Overshoot of each step.
    pub overshoot: f64,
    /// Line-search factors per step.
    pub line_search: usize,
    /// Fill outside the image: zero, replicate or reflect.
    pub border: String,
    /// Iterations over which progress is judged for the early stop of a
    /// stalled run (0: never stop early).
    pub stall_window: usize,
    /// `joint`: one search, each step towards the closest linearised
    /// boundary among the candidate classes; `per_class`: the paper's
    /// multiclass ManiFool, one binary search towards each candidate class
    /// (each with the whole `max_iter` budget), the smallest score kept.
    pub search: String,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            group: "rotation".into(),
            max_iter: 100,
            candidates: 10,
            overshoot: 0.02,
            line_search: 8,
            border: "zero".into(),
            stall_window: 3,
            search: "joint".into(),
        }
    }
}

impl Params {
    fn group(&self) -> Result<TransformGroup> {
        super::frame::parse_group("manifool", &self.group)
    }

    fn sampling(&self) -> Result<Sampling> {
        super::frame::parse_sampling("manifool", &self.border)
    }

    fn per_class(&self) -> Result<bool> {
        match self.search.as_str() {
            "joint" => Ok(false),
            "per_class" => Ok(true),
            other => Err(Error::Config(format!(
                "manifool: search must be joint or per_class, not {other:?}"
            ))),
        }
    }
}

/// What ManiFool found for one image.
#[derive(Debug, Clone)]
pub struct Found {
    /// Final transform (warp matrix, centred coordinates, output → input).
    pub matrix: Matrix3<f64>,
    /// Iterations used (summed over the searches of `per_class`).
    pub iterations: usize,
    /// Class at the final transform and the transform's geodesic score
    /// (when fooled).
    pub fooled: Option<(usize, f64)>,
    /// The search (every search, for `per_class`) gave up before `max_iter`
    /// because it stalled.
    pub stalled: bool,
}

/// Whether a run whose margins (clean first, then after each iteration) are
/// `history` cannot reach the boundary within `remaining` iterations at the
/// rate of its last `window` iterations, with a slack of 2.
fn stalled(history: &[f64], window: usize, remaining: usize) -> bool {
    if window == 0 || history.len() <= window {
        return false;
    }
    let now = history[history.len() - 1];
    let then = history[history.len() - 1 - window];
    let rate = (then - now) / window as f64;
    now > 2.0 * rate * remaining as f64
}

/// Warps one image by several matrices and returns the logits.
fn logits_at(
    sm: &SpacedModel,
    frame: &Frame,
    x: &[f32],
    mats: &[Matrix3<f64>],
    sampling: Sampling,
) -> Result<Vec<f32>> {
    let d = frame.d();
    let m = mats.len();
    let input: Vec<f32> = x.iter().copied().cycle().take(m * d).collect();
    let batch = frame.batch(&input, m)?;
    let warped = MatrixWarp::new(mats.to_vec())
        .apply(&batch, sampling)
        .map_err(warp_error)?;
    sm.logits(&warped, m)
}

/// Margin of a logit row: `f_{k0} − max_{l≠k0} f_l`, or `f_{k0} − f_l`
/// towards one `target` class.
fn margin(row: &[f32], k0: usize, target: Option<usize>) -> f64 {
    let other = match target {
        Some(l) => row[l],
        None => row
            .iter()
            .enumerate()
            .filter(|&(l, _)| l != k0)
            .map(|(_, &v)| v)
            .fold(f32::NEG_INFINITY, f32::max),
    };
    (row[k0] - other) as f64
}

/// Geodesic score of the warp `matrix` of image `x`.
fn score_of(
    frame: &Frame,
    x: &[f32],
    group: TransformGroup,
    matrix: &Matrix3<f64>,
    sampling: Sampling,
) -> Result<f64> {
    let theta = group.log(matrix).map_err(warp_error)?;
    let batch = frame.batch(x, 1)?;
    Ok(geodesic_score(
        &batch,
        group,
        &theta,
        PathSteps::ParamStep(0.05),
        PathMethod::Chords,
        sampling,
    )
    .map_err(warp_error)?[0])
}

/// Runs ManiFool on one image `x` with clean prediction `k0` and clean logits:
/// one joint search, or one search per candidate class (`p.search`).
pub(super) fn manifool_one(
    sm: &SpacedModel,
    frame: &Frame,
    x: &[f32],
    clean_logits: &[f32],
    group: TransformGroup,
    p: &Params,
    sampling: Sampling,
) -> Result<Found> {
    let k0 = argmax(clean_logits);
    let cands: Vec<usize> = top_k(clean_logits, sm.classes())
        .into_iter()
        .filter(|&l| l != k0)
        .take(p.candidates)
        .collect();
    let searches: Vec<(&[usize], Option<usize>)> = if p.per_class()? {
        cands
            .iter()
            .map(|l| (std::slice::from_ref(l), Some(*l)))
            .collect()
    } else {
        vec![(&cands[..], None)]
    };
    let mut best: Option<Found> = None;
    let (mut iterations, mut stalls) = (0, 0);
    for &(set, target) in &searches {
        let mut found = search(sm, frame, x, clean_logits, set, target, group, p, sampling)?;
        iterations += found.iterations;
        stalls += usize::from(found.stalled);
        if let Some((c, _)) = found.fooled {
            let score = score_of(frame, x, group, &found.matrix, sampling)?;
            found.fooled = Some((c, score));
            let better = match best.as_ref().and_then(|b| b.fooled) {
                Some((_, s)) => score < s,
                None => true,
            };
            if better {
                best = Some(found);
            }
        } else if best.is_none() {
            best = Some(found);
        }
    }
    let mut best = best.expect("at least one search");
    best.iterations = iterations;
    best.stalled = best.fooled.is_none() && stalls == searches.len();
    Ok(best)
}

/// Points tried per round of [`first_flip`].
const REFINE_POINTS: usize = 4;
/// Rounds of [`first_flip`]: the flip is bracketed to `(hi − lo)/5⁴`.
const REFINE_ROUNDS: usize = 4;

/// Narrows `(lo, hi]`, where `at(hi)` changes the prediction from `k0` and
/// `at(lo)` does not, to the first flip: each round tries `REFINE_POINTS`
/// evenly spaced points in one model call and keeps the bracket around the
/// first that flips. Returns the upper end, a point that flips (`hi` itself
/// when none inside does): 16 forwards in 4 calls for 1/625 of the bracket.
fn first_flip(
    sm: &SpacedModel,
    frame: &Frame,
    x: &[f32],
    k0: usize,
    (mut lo, mut hi): (f64, f64),
    at: &dyn Fn(f64) -> Result<Matrix3<f64>>,
    sampling: Sampling,
) -> Result<f64> {
    let parts = (REFINE_POINTS + 1) as f64;
    for _ in 0..REFINE_ROUNDS {
        let pts: Vec<f64> = (1..=REFINE_POINTS)
            .map(|i| lo + (hi - lo) * i as f64 / parts)
            .collect();
        let mats = pts.iter().map(|&t| at(t)).collect::<Result<Vec<_>>>()?;
        let ls = logits_at(sm, frame, x, &mats, sampling)?;
        match ls.chunks_exact(sm.classes()).position(|r| argmax(r) != k0) {
            Some(i) => {
                hi = pts[i];
                if i > 0 {
                    lo = pts[i - 1];
                }
            }
            None => lo = pts[REFINE_POINTS - 1],
        }
    }
    Ok(hi)
}

/// The transform `exp(t log T)` with the smallest `t ∈ (0, 1]` (to 1/5⁴)
/// that still changes the prediction from `k0`: the score is measured along
/// that path, and a search that reached `T` by a detour may fool earlier on
/// it. `T` itself when no earlier point fools (or `log T` does not exist).
fn shortest_on_path(
    sm: &SpacedModel,
    frame: &Frame,
    x: &[f32],
    k0: usize,
    group: TransformGroup,
    t_mat: Matrix3<f64>,
    sampling: Sampling,
) -> Result<Matrix3<f64>> {
    let Ok(theta) = group.log(&t_mat) else {
        return Ok(t_mat);
    };
    let at = |t: f64| -> Result<Matrix3<f64>> {
        let scaled: Vec<f64> = theta.iter().map(|v| v * t).collect();
        group.exp(&scaled).map_err(warp_error)
    };
    let hi = first_flip(sm, frame, x, k0, (0.0, 1.0), &at, sampling)?;
    if hi < 1.0 {
        at(hi)
    } else {
        Ok(t_mat)
    }
}

/// One ManiFool search from the identity: each step towards the closest
/// linearised boundary among the classes `cands`, progress judged on the
/// margin towards `target` (or towards every class when `None`). The score
/// of a fooling transform is left for the caller (`fooled.1` is 0).
#[allow(clippy::too_many_arguments)]
fn search(
    sm: &SpacedModel,
    frame: &Frame,
    x: &[f32],
    clean_logits: &[f32],
    cands: &[usize],
    target: Option<usize>,
    group: TransformGroup,
    p: &Params,
    sampling: Sampling,
) -> Result<Found> {
    let k = sm.classes();
    let k0 = argmax(clean_logits);
    let m = cands.len();
    let mut cot = vec![0.0f32; m * k];
    for (j, &l) in cands.iter().enumerate() {
        cot[j * k + l] = 1.0;
        cot[j * k + k0] = -1.0;
    }
    let batch = frame.batch(x, 1)?;
    let dim = group.dim();
    let factors: Vec<f64> = (0..p.line_search)
        .map(|j| {
            let t = if p.line_search == 1 {
                1.0
            } else {
                j as f64 / (p.line_search - 1) as f64
            };
            0.05f64.powf(1.0 - t) * 2.0f64.powf(t) * (1.0 + p.overshoot)
        })
        .collect();
    let mut t_mat = Matrix3::identity();
    let mut history = vec![margin(clean_logits, k0, target)];
    for iter in 0..p.max_iter {
        let y = MatrixWarp::uniform(t_mat)
            .apply(&batch, sampling)
            .map_err(warp_error)?;
        let (logits, grads) = sm.vjp(&y, 1, &cot, m)?;
        let now = argmax(&logits);
        if now != k0 {
            return Ok(Found {
                matrix: t_mat,
                iterations: iter,
                fooled: Some((now, 0.0)),
                stalled: false,
            });
        }
        let chart = GroupWarp::tangent(group, vec![t_mat], TangentSide::Left);
        let jac = chart
            .jacobian(&batch, sampling)
            .map_err(warp_error)?
            .remove(0);
        let mut g = jac.transpose() * &jac;
        let reg = 1e-9 * g.trace().max(1e-12);
        for i in 0..dim {
            g[(i, i)] += reg;
        }
        let Some(chol) = g.clone().cholesky() else {
            break;
        };
        // Closest linearised boundary in the metric.
        let mut best: Option<(f64, DVector<f64>)> = None;
        for (j, &l) in cands.iter().enumerate() {
            let gl = (logits[l] - logits[k0]) as f64;
            let w = DVector::from_iterator(
                grads[j * y.len()..(j + 1) * y.len()].len(),
                grads[j * y.len()..(j + 1) * y.len()]
                    .iter()
                    .map(|&v| v as f64),
            );
            let a = jac.transpose() * w;
            let u = chol.solve(&a);
            let q = a.dot(&u);
            if !(q > 0.0 && q.is_finite()) {
                continue;
            }
            let dist = gl.abs() / q.sqrt();
            if best.as_ref().is_none_or(|(b, _)| dist < *b) {
                best = Some((dist, u * (gl.abs() / q)));
            }
        }
        let Some((_, step)) = best else {
            break;
        };
        let step: Vec<f64> = step.iter().copied().collect();
        let exp_at = |s: f64| -> Result<Matrix3<f64>> {
            let scaled: Vec<f64> = step.iter().map(|v| v * s).collect();
            Ok(group.exp(&scaled).map_err(warp_error)? * t_mat)
        };
        let mats = factors
            .iter()
            .map(|&s| exp_at(s))
            .collect::<Result<Vec<_>>>()?;
        let ls = logits_at(sm, frame, x, &mats, sampling)?;
        let rows: Vec<&[f32]> = ls.chunks_exact(k).collect();
        if let Some(j) = rows.iter().position(|r| argmax(r) != k0) {
            // Refine between the last non-fooling factor and the first fooling one.
            let lo = if j == 0 { 0.0 } else { factors[j - 1] };
            let hi = first_flip(sm, frame, x, k0, (lo, factors[j]), &exp_at, sampling)?;
            let final_mat = shortest_on_path(sm, frame, x, k0, group, exp_at(hi)?, sampling)?;
            let fl = logits_at(sm, frame, x, &[final_mat], sampling)?;
            return Ok(Found {
                matrix: final_mat,
                iterations: iter + 1,
                fooled: Some((argmax(&fl), 0.0)),
                stalled: false,
            });
        }
        let (jbest, _) = rows
            .iter()
            .enumerate()
            .map(|(j, r)| (j, margin(r, k0, target)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("line search has at least one factor");
        t_mat = mats[jbest];
        history.push(margin(rows[jbest], k0, target));
        if stalled(&history, p.stall_window, p.max_iter - iter - 1) {
            return Ok(Found {
                matrix: t_mat,
                iterations: iter + 1,
                fooled: None,
                stalled: true,
            });
        }
    }
    Ok(Found {
        matrix: t_mat,
        iterations: p.max_iter,
        fooled: None,
        stalled: false,
    })
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "manifool",
        about: "smallest transform in a group (rotation … projective) that flips the prediction; geodesic score (ManiFool)",
        params: &[
            ("group", "Transform group: translation, rotation, rigid, similarity, affine, projective."),
            ("max_iter", "Iteration limit."),
            ("candidates", "Other classes considered (top by clean logit)."),
            ("overshoot", "Overshoot of each step."),
            ("line_search", "Line-search factors per step."),
            ("border", "Fill outside the image: zero, replicate or reflect."),
            ("stall_window", "Iterations over which progress is judged for the early stop of a stalled run (0: never stop early)."),
            ("search", "`joint`: one search, each step towards the closest linearised boundary among the candidate classes; `per_class`: the paper's multiclass ManiFool, one binary search towards each candidate class (each with the whole `max_iter` budget), the smallest score kept."),
        ],
        headline: &["median_score", "success_rate"],
        histograms: &["score", "angle_deg"],
        values: &[&[
            ("score", "geodesic score of the transform found (its distance from the identity on the transform manifold)"),
            ("angle_deg", "rotation part of the transform, degrees"),
            ("param_{name}", "the transform's Lie parameters"),
            ("adv_pred", "class predicted under the transform"),
            ("iterations", "ManiFool steps taken"),
            ("stalled", "1 when a failed search stopped early for lack of progress"),
        ]],
    };

    fn validate(&self) -> Result<()> {
        self.group()?;
        self.sampling()?;
        self.per_class()?;
        if self.max_iter == 0 || self.candidates == 0 || self.line_search == 0 {
            return Err(Error::Config(
                "manifool: max_iter, candidates and line_search must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let group = self.group()?;
        let sampling = self.sampling()?;
        let (sm, frame) = Frame::of_context(ctx);
        let k = sm.classes();
        let clean = Clean::load(ctx, &sm)?;
        let bar = ctx.progress.bar(clean.n as u64, "manifool");
        let names = group.param_names();
        let mut images = Vec::with_capacity(clean.n);
        let mut scores = Vec::new();
        let mut iters = Vec::new();
        let mut per_image = Vec::new();
        let mut found_all: Vec<(f64, usize, Matrix3<f64>, usize)> = Vec::new();
        let mut stalls = 0usize;
        // Images are independent: several at once where the backend runs concurrent calls.
        let searches = ctx.model.executor().map_concurrent(clean.n, |i| {
            let row = &clean.logits[i * k..(i + 1) * k];
            if misclassified(ctx, i, argmax(row)) {
                bar.inc(1);
                return Ok(None);
            }
            let found = manifool_one(&sm, &frame, &clean.image(i)?, row, group, self, sampling);
            bar.inc(1);
            found.map(Some)
        })?;
        for (i, found) in searches.into_iter().enumerate() {
            let row = &clean.logits[i * k..(i + 1) * k];
            let pred = argmax(row);
            let Some(found) = found else {
                images.push(result(ctx, i, pred, Outcome::Misclassified, Values::new()));
                continue;
            };
            let mut values = Values::from([("iterations", found.iterations as f64)]);
            let outcome = match found.fooled {
                None => {
                    values.insert("stalled", f64::from(u8::from(found.stalled)));
                    stalls += usize::from(found.stalled);
                    Outcome::Failed
                }
                Some((c, score)) => {
                    let theta = group.log(&found.matrix).map_err(warp_error)?;
                    values.insert("score", score);
                    values.insert("adv_pred", c as f64);
                    for (name, v) in names.iter().zip(&theta) {
                        values.insert(format!("param_{name}"), *v);
                    }
                    if names.contains(&"theta") {
                        values.insert("angle_deg", theta[0].to_degrees());
                    }
                    scores.push(score);
                    iters.push(found.iterations as f64);
                    found_all.push((score, i, found.matrix, c));
                    per_image.push(serde_json::json!({
                        "index": i,
                        "params": theta,
                        "matrix": (0..3).map(|r| (0..3).map(|c| found.matrix[(r, c)]).collect::<Vec<_>>()).collect::<Vec<_>>(),
                    }));
                    Outcome::Fooled
                }
            };
            images.push(result(ctx, i, pred, outcome, values));
        }
        bar.finish_and_clear();
        let mut artifacts = vec![];
        if let Some(dir) = ctx.out_dir {
            // The three most vulnerable images: smallest geodesic score.
            found_all.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut shown = Vec::new();
            for (score, i, m, c) in found_all.into_iter().take(3) {
                let image = clean.image(i)?;
                let batch = frame.batch(&image, 1)?;
                let warped = MatrixWarp::uniform(m)
                    .apply(&batch, sampling)
                    .map_err(warp_error)?;
                let caption = format!(
                    "{}: original (class {}) | {} transform (class {c}, score {score:.4})",
                    ctx.data.items[i].name,
                    clean.pred(i, k),
                    group.name()
                );
                shown.push((i, warped, caption));
            }
            artifacts = save_panels(dir, "manifool", &frame, &clean, &shown)?;
        }
        let (counts, mut summary) = search_summary(&images);
        let attacked = counts.fooled + counts.failed;
        if attacked > 0 {
            summary.insert(
                "failure_rate".into(),
                counts.failed as f64 / attacked as f64,
            );
            summary.insert("stalled_rate".into(), stalls as f64 / attacked as f64);
        }
        if let Some(m) = super::mean(&scores) {
            summary.insert("invariance_score".into(), m);
        }
        describe(&mut summary, "score", &scores);
        describe(&mut summary, "iterations", &iters);
        Ok(Output {
            summary,
            images,
            extra: serde_json::json!({
                "group": group.name(),
                "param_names": names,
                "score": "path length of t -> warp(x, exp(t log T)) in parameter steps of 0.05, divided by ||x||_2",
                "transforms": per_image,
            }),
            artifacts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::stalled;

    #[test]
    fn a_run_on_course_to_the_boundary_continues() {
        // Margin falls by 1 per iteration and 3 remain: it reaches zero.
        assert!(!stalled(&[6.0, 5.0, 4.0, 3.0], 3, 3));
        // Falls by 0.1 per iteration, 20 remain: 2·0.1·20 = 4 > 3.7.
        assert!(!stalled(&[4.0, 3.9, 3.8, 3.7], 3, 20));
    }

    #[test]
    fn a_flat_or_slow_run_stops() {
        assert!(stalled(&[2.0, 2.1, 1.9, 2.0], 3, 100));
        // Falls by 0.1 per iteration, 10 remain: 2·0.1·10 = 2 < 3.7.
        assert!(stalled(&[4.0, 3.9, 3.8, 3.7], 3, 10));
    }

    #[test]
    fn the_window_must_fill_and_zero_disables_the_rule() {
        assert!(!stalled(&[2.0, 2.0, 2.0], 3, 100));
        assert!(!stalled(&[2.0; 10], 0, 100));
    }
}

#[cfg(test)]
mod path_tests {
    use transforms::nalgebra::Matrix3;
    use transforms::{Sampling, TransformGroup};

    use super::{argmax, logits_at, shortest_on_path, Frame, SpacedModel};

    fn rotation(deg: f64) -> Matrix3<f64> {
        let (s, c) = deg.to_radians().sin_cos();
        Matrix3::new(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    }

    /// Against a 0.1° scan of the same path: the point found on
    /// `exp(t log T)`, `T` a 60° rotation, fools and is never before the
    /// first flip. Where the scan stays flipped from its first flip to 60°,
    /// every bracket of the search holds the first flip, so the point found
    /// lies within the search's resolution (60°/5⁴ = 0.096°) after it, and the
    /// first flip is at most the scan's; 0.01° more allows for points that
    /// sit on the boundary to rounding.
    #[test]
    fn the_shortest_point_on_the_path_matches_a_fine_scan() {
        let (model, data) = crate::testutil::digits_on_tract(20, None);
        let x = data.load(&model.spec, 0, 20).unwrap().x;
        let sm = SpacedModel::new(&model, &data);
        let frame = Frame::of(&sm);
        let sampling = Sampling::default();
        let (mut checked, mut monotone) = (0, 0);
        for img in x.chunks_exact(784) {
            let k0 = argmax(&model.logits(img, 1).unwrap());
            let angles: Vec<f64> = (1..=600).map(|i| i as f64 * 0.1).collect();
            let mats: Vec<_> = angles.iter().map(|&a| rotation(a)).collect();
            let ls = logits_at(&sm, &frame, img, &mats, sampling).unwrap();
            let flipped: Vec<bool> = ls.chunks_exact(10).map(|r| argmax(r) != k0).collect();
            let Some(first) = flipped.iter().position(|&f| f) else {
                continue;
            };
            let scan = angles[first];
            let found = shortest_on_path(
                &sm,
                &frame,
                img,
                k0,
                TransformGroup::Rotation,
                rotation(60.0),
                sampling,
            )
            .unwrap();
            let angle = found[(1, 0)].atan2(found[(0, 0)]).to_degrees();
            let fl = logits_at(&sm, &frame, img, &[found], sampling).unwrap();
            assert_ne!(argmax(&fl), k0, "the point found fools");
            assert!(
                angle >= scan - 0.1 - 1e-9,
                "{angle}° before the scan's first flip {scan}°"
            );
            checked += 1;
            if flipped[first..].iter().all(|&f| f) {
                monotone += 1;
                assert!(
                    angle - scan <= 60.0 / 625.0 + 0.01,
                    "{angle}° vs the scan's first flip {scan}° on a path that stays flipped"
                );
            }
        }
        eprintln!("{checked} digits flip within 60°, {monotone} stay flipped after the first flip");
        assert!(monotone > 0, "no digit to compare with the scan");
    }
}
