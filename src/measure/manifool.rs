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
//! Two more strategies tighten the result (both on by default; `scan = 0`
//! and `refine = 0` give the search alone):
//! - **scan** ([`scan_generators`]): along each generator, both signs, the
//!   transforms of first-order score `reach·2^(j+1−scan)`, `j < scan`, in one
//!   model call (`reach` the search's score, or 2 when it failed); the rays
//!   that flip at the lowest level are narrowed to their first flip. It finds
//!   one-parameter transforms (a small rotation) the search walks past or
//!   stalls before, and is a second start.
//! - **refine** ([`refine`]): from the better of the two starts, up to
//!   `refine` rounds that move along the decision boundary towards the
//!   identity: the point of the linearised boundary closest to the identity
//!   in the metric of the path (as DeepFool's minimal perturbations are
//!   refined), then the first flip along the rays towards it; a round is
//!   kept when it lowers the score.
//!
//! Of every fooling transform met (search, scan, refinement rounds), the one
//! with the smallest score that also fools in a model call on it alone is
//! reported, with that call's class; per image the scores of the search and
//! the scan before refinement, the start the result came from and the
//! rounds that lowered it are reported beside it.
//!
//! Score: `log T` (principal logarithm) gives the parameters `θ`; the length
//! of the path `t ↦ warp(x, exp(tθ))` summed in parameter steps of 0.05
//! (image-space chords), divided by `‖x‖₂` (`transforms::geodesic_score`).
//! The network's invariance score is the mean over fooled images.


use serde::{Deserialize, Serialize};
use transforms::nalgebra::{DVector, Matrix3};
use transforms::{
    geodesic_score, image_norms, GroupWarp, MatrixWarp, PathMethod, PathSteps, Sampling, TangentSide,
    TransformGroup, Warp,
};

use super::frame::{
    describe, misclassified, result, save_panels, search_summary, warp_error, Clean, Frame,
};
use super::space::SpacedModel;
use super::Values;
use super::{Better, Context, Declaration, ImageResult, Measure, Outcome, Output, Summary, Units};
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
    /// Levels of the coarse scan along each group generator (both signs), an
    /// extra start beside the search: first-order scores up to the search's
    /// score (2 when it failed), halving from level to level (0: no scan).
    pub scan: usize,
    /// Rounds of boundary refinement of the better start (search or scan):
    /// each moves towards the point of the linearised boundary closest to the
    /// identity and keeps the first flip on that ray when it lowers the
    /// score (0: none).
    pub refine: usize,
    /// Geodesic-score budgets of the summary's `robust_accuracy@s` keys.
    pub eps: Vec<f64>,
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
            scan: 6,
            refine: 4,
            eps: vec![0.05, 0.1, 0.2, 0.5],
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

/// Where the transform a run reports comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The DeepFool-style search (`joint` or `per_class`).
    Search,
    /// The coarse scan along the group's generators.
    Scan,
}

/// What ManiFool found for one image.
#[derive(Debug, Clone)]
pub struct Found {
    /// Final transform (warp matrix, centred coordinates, output → input).
    pub matrix: Matrix3<f64>,
    /// Iterations used (summed over the searches of `per_class`).
    pub iterations: usize,
    /// Class at the final transform, from a model call on that transform
    /// alone, and the transform's geodesic score (when fooled).
    pub fooled: Option<(usize, f64)>,
    /// The search (every search, for `per_class`) gave up before `max_iter`
    /// because it stalled.
    pub stalled: bool,
    /// Score of the search's own transform, before refinement (when it fooled).
    pub search_score: Option<f64>,
    /// Score of the scan's transform, before refinement (when it fooled).
    pub scan_score: Option<f64>,
    /// The start the final transform was refined from (when fooled).
    pub strategy: Option<Strategy>,
    /// Refinement rounds that lowered the score of that start.
    pub refined: usize,
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

/// Geodesic score of the warp `matrix` of image `x`; `None` when `matrix`
/// has no principal logarithm in `group` (a search can end at a reflection
/// or a half turn, which no path from the identity in the group reaches).
fn score_of(
    frame: &Frame,
    x: &[f32],
    group: TransformGroup,
    matrix: &Matrix3<f64>,
    sampling: Sampling,
) -> Result<Option<f64>> {
    let Ok(theta) = group.log(matrix) else {
        return Ok(None);
    };
    let batch = frame.batch(x, 1)?;
    Ok(Some(
        geodesic_score(
            &batch,
            group,
            &theta,
            PathSteps::ParamStep(0.05),
            PathMethod::Chords,
            sampling,
        )
        .map_err(warp_error)?[0],
    ))
}

/// Runs ManiFool on one image `x` with clean prediction `k0` and clean logits:
/// one joint search, or one search per candidate class (`p.search`); the
/// coarse scan along the generators (`p.scan`); boundary refinement of each
/// better fooling start (`p.refine`). Of every fooling transform met, the one with
/// the smallest score that also fools in a model call of its own is kept.
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
            // A fooling transform without a score counts as a failed search.
            found.fooled = score_of(frame, x, group, &found.matrix, sampling)?.map(|s| (c, s));
        }
        if let Some((_, score)) = found.fooled {
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
    best.search_score = best.fooled.map(|(_, s)| s);

    // Starts: the search's transform and the scan's.
    let mut starts: Vec<(Start, Strategy)> = Vec::new();
    if let Some((c, s)) = best.fooled {
        starts.push(((s, best.matrix, c), Strategy::Search));
    }
    if p.scan > 0 {
        let reach = best.search_score.unwrap_or(SCAN_REACH);
        if let Some(start) = scan_generators(sm, frame, x, k0, group, p.scan, reach, sampling)? {
            best.scan_score = Some(start.0);
            starts.push((start, Strategy::Scan));
        }
    }
    // Every fooling transform met, with the rounds of refinement that gave it.
    let mut met: Vec<(f64, Matrix3<f64>, Strategy, usize)> =
        starts.iter().map(|&((s, m, _), st)| (s, m, st, 0)).collect();
    // Only the better start is refined.
    let first = starts.iter().min_by(|a, b| a.0 .0.total_cmp(&b.0 .0));
    if let Some(&(start, st)) = first {
        for (round, (s, m, _)) in refine(sm, frame, x, k0, group, start, p.refine, sampling)?
            .into_iter()
            .enumerate()
        {
            met.push((s, m, st, round + 1));
        }
    }
    // The proof: the smallest score whose transform fools in a call of its own.
    met.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (s, m, st, rounds) in met {
        let c = argmax(&logits_at(sm, frame, x, &[m], sampling)?);
        if c != k0 {
            best.matrix = m;
            best.fooled = Some((c, s));
            best.strategy = Some(st);
            best.refined = rounds;
            best.stalled = false;
            return Ok(best);
        }
    }
    best.fooled = None;
    Ok(best)
}

/// Points tried per round of [`first_flips`].
const REFINE_POINTS: usize = 4;
/// Rounds of [`first_flips`]: the flip is bracketed to `(hi − lo)/5⁴`.
const REFINE_ROUNDS: usize = 4;

/// [`first_flips`] on one ray.
fn first_flip(
    sm: &SpacedModel,
    frame: &Frame,
    x: &[f32],
    k0: usize,
    bracket: (f64, f64),
    at: &dyn Fn(f64) -> Result<Matrix3<f64>>,
    sampling: Sampling,
) -> Result<f64> {
    let bracket = (bracket.0, bracket.1, k0);
    let flips = first_flips(sm, frame, x, k0, &[bracket], REFINE_ROUNDS, &|_, t| at(t), sampling)?;
    Ok(flips[0].0)
}

/// Narrows each bracket `(lo, hi]` of ray `r`, where `at(r, hi)` changes the
/// prediction from `k0` (to the class given with the bracket) and `at(r, lo)`
/// does not, to the first flip: each of `rounds` rounds tries `REFINE_POINTS`
/// evenly spaced points of every ray in one model call and keeps the bracket
/// around the first that flips. Returns the upper ends, points that flip
/// (`hi` itself when none inside does), with the class there: with 4 rounds,
/// 16 forwards per ray in 4 calls for 1/625 of the bracket.
#[allow(clippy::too_many_arguments)]
fn first_flips(
    sm: &SpacedModel,
    frame: &Frame,
    x: &[f32],
    k0: usize,
    brackets: &[(f64, f64, usize)],
    rounds: usize,
    at: &dyn Fn(usize, f64) -> Result<Matrix3<f64>>,
    sampling: Sampling,
) -> Result<Vec<(f64, usize)>> {
    let mut br = brackets.to_vec();
    if br.is_empty() {
        return Ok(vec![]);
    }
    let parts = (REFINE_POINTS + 1) as f64;
    for _ in 0..rounds {
        let pts: Vec<Vec<f64>> = br
            .iter()
            .map(|&(lo, hi, _)| {
                (1..=REFINE_POINTS)
                    .map(|i| lo + (hi - lo) * i as f64 / parts)
                    .collect()
            })
            .collect();
        let mut mats = Vec::with_capacity(br.len() * REFINE_POINTS);
        for (r, ts) in pts.iter().enumerate() {
            for &t in ts {
                mats.push(at(r, t)?);
            }
        }
        let ls = logits_at(sm, frame, x, &mats, sampling)?;
        for ((b, ts), rows) in br
            .iter_mut()
            .zip(&pts)
            .zip(ls.chunks_exact(sm.classes() * REFINE_POINTS))
        {
            let classes: Vec<usize> = rows.chunks_exact(sm.classes()).map(argmax).collect();
            match classes.iter().position(|&c| c != k0) {
                Some(i) => {
                    (b.1, b.2) = (ts[i], classes[i]);
                    if i > 0 {
                        b.0 = ts[i - 1];
                    }
                }
                None => b.0 = ts[REFINE_POINTS - 1],
            }
        }
    }
    Ok(br.iter().map(|b| (b.1, b.2)).collect())
}

/// How far the scan reaches, as a score, when the search did not fool.
const SCAN_REACH: f64 = 2.0;

/// One ray per generator and sign: `±eᵢ / uᵢ`, `uᵢ = √Gᵢᵢ / ‖x‖` the score
/// per unit of parameter `i` to first order at the identity (`G` the metric
/// `JᵀJ` of the warp there), so that `t` along a ray is about the score of
/// the transform `exp(t·ray)`. Generators that do not move the image are
/// left out.
fn generator_rays(
    frame: &Frame,
    x: &[f32],
    group: TransformGroup,
    sampling: Sampling,
) -> Result<Vec<Vec<f64>>> {
    let batch = frame.batch(x, 1)?;
    let norm = image_norms(&batch)[0];
    let g0 = GroupWarp::tangent(group, vec![Matrix3::identity()], TangentSide::Left)
        .metric(&batch, sampling)
        .map_err(warp_error)?
        .remove(0);
    let mut rays = Vec::new();
    for i in 0..group.dim() {
        let unit = g0[(i, i)].sqrt() / norm;
        if !(unit > 0.0 && unit.is_finite()) {
            continue;
        }
        for sign in [1.0, -1.0] {
            let mut v = vec![0.0; group.dim()];
            v[i] = sign / unit;
            rays.push(v);
        }
    }
    Ok(rays)
}

/// The coarse scan: along each ray of [`generator_rays`] (one-parameter
/// subgroups, both signs), `levels` points `t = reach·2^(j+1−levels)`,
/// `j = 0..levels`, in one model call; the rays that flip first (at the
/// lowest level) are narrowed to their first flip by [`first_flips`]
/// (between the last level that does not flip and the first that does), and
/// the transform with the smallest score is returned.
#[allow(clippy::too_many_arguments)]
fn scan_generators(
    sm: &SpacedModel,
    frame: &Frame,
    x: &[f32],
    k0: usize,
    group: TransformGroup,
    levels: usize,
    reach: f64,
    sampling: Sampling,
) -> Result<Option<Start>> {
    let mut rays = generator_rays(frame, x, group, sampling)?;
    let lv: Vec<f64> = (0..levels)
        .map(|j| reach * 0.5f64.powi((levels - 1 - j) as i32))
        .collect();
    // Rays whose farthest point overflows are left out.
    rays.retain(|v| {
        let far: Vec<f64> = v.iter().map(|a| a * reach).collect();
        group.exp(&far).is_ok_and(|m| finite(&m))
    });
    let at = |r: usize, t: f64| -> Result<Matrix3<f64>> {
        let v: Vec<f64> = rays[r].iter().map(|a| a * t).collect();
        group.exp(&v).map_err(warp_error)
    };
    let Some((r, t, c)) = earliest_flip(
        sm,
        frame,
        x,
        k0,
        rays.len(),
        &lv,
        REFINE_ROUNDS,
        &at,
        sampling,
    )?
    else {
        return Ok(None);
    };
    let m = at(r, t)?;
    Ok(score_of(frame, x, group, &m, sampling)?.map(|s| (s, m, c)))
}

/// Fractions of the current radius tried along each refinement ray.
const RAY_POINTS: usize = 5;
/// Rounds of [`first_flips`] on a refinement ray: to 1/125 of a fifth of
/// the radius, below the 0.1 % a round must gain.
const RAY_ROUNDS: usize = 3;

/// A fooling transform: its score, matrix and class.
type Start = (f64, Matrix3<f64>, usize);

/// The earliest flip along `rays` rays, each sampled at the increasing fractions `levels`
/// through `at(ray, t)`: the first level where any ray flips, refined on every ray that flips
/// there by `rounds` rounds against the level before; `(ray, t, class)` of the smallest `t`,
/// or `None` when no ray flips or a transform is not finite.
#[allow(clippy::too_many_arguments)]
fn earliest_flip(
    sm: &SpacedModel,
    frame: &Frame,
    x: &[f32],
    k0: usize,
    rays: usize,
    levels: &[f64],
    rounds: usize,
    at: &dyn Fn(usize, f64) -> Result<Matrix3<f64>>,
    sampling: Sampling,
) -> Result<Option<(usize, f64, usize)>> {
    let mut mats = Vec::with_capacity(rays * levels.len());
    for r in 0..rays {
        for &t in levels {
            mats.push(at(r, t)?);
        }
    }
    if mats.is_empty() || !mats.iter().all(finite) {
        return Ok(None);
    }
    let ls = logits_at(sm, frame, x, &mats, sampling)?;
    let firsts = first_flipping(&ls, sm.classes(), k0, levels.len());
    let Some(jmin) = firsts.iter().flatten().map(|f| f.0).min() else {
        return Ok(None);
    };
    let lo = if jmin == 0 { 0.0 } else { levels[jmin - 1] };
    let (chosen, brackets): (Vec<usize>, Vec<_>) = firsts
        .iter()
        .enumerate()
        .filter_map(|(r, f)| f.filter(|f| f.0 == jmin).map(|f| (r, (lo, levels[jmin], f.1))))
        .unzip();
    let his = first_flips(sm, frame, x, k0, &brackets, rounds, &|i, t| at(chosen[i], t), sampling)?;
    let (i, &(t, c)) = his
        .iter()
        .enumerate()
        .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
        .expect("a ray flips");
    Ok(Some((chosen[i], t, c)))
}

/// Per ray of `points` consecutive logit rows of `ls` (`k` classes): the
/// first point whose class is not `k0`, and that class.
fn first_flipping(ls: &[f32], k: usize, k0: usize, points: usize) -> Vec<Option<(usize, usize)>> {
    ls.chunks_exact(k * points)
        .map(|rows| {
            rows.chunks_exact(k)
                .map(argmax)
                .enumerate()
                .find(|&(_, c)| c != k0)
        })
        .collect()
}
/// Blends `s` of the refinement directions `θ_b + s·(θ* − θ_b)`.
const BLENDS: [f64; 2] = [1.0, 0.5];

/// Boundary refinement of a fooling transform `T_b = exp(θ_b)` with score
/// `score`, for up to `rounds` rounds. Each round:
/// 1. the class `c` at `T_b` (a model call) and, in one `vjp` call, the
///    margin `g = f_c − f_{k0}` there and its gradient `a = J_θᵀ ∇_y g` in
///    the parameters (`J_θ` the exact Jacobian of `θ ↦ warp(x, exp θ)` at
///    `θ_b`);
/// 2. the score is about `√(θᵀ Ḡ θ) / ‖x‖`, `Ḡ` the metric of that warp at
///    the midpoint `θ_b/2` (the path's length by the midpoint rule), and the
///    point of the linearised boundary `g + aᵀ(θ − θ_b) = 0` closest to the
///    identity in that metric is `θ* = λ Ḡ⁻¹a`, `λ = (aᵀθ_b − g)/(aᵀḠ⁻¹a)`;
/// 3. the directions `θ_b + s(θ* − θ_b)`, `s ∈ BLENDS`, are scaled to the
///    metric length of `θ_b` and tried at `RAY_POINTS` fractions of it in
///    one model call; the rays that flip at the smallest fraction are
///    narrowed to their first flip ([`first_flips`]), which is where the score
///    along a ray is smallest;
/// 4. the one with the smallest (exact) score becomes `T_b` if it lowers the
///    score by more than 0.1 %, else the refinement ends.
///
/// Returns the accepted transforms with their scores, in order.
#[allow(clippy::too_many_arguments)]
fn refine(
    sm: &SpacedModel,
    frame: &Frame,
    x: &[f32],
    k0: usize,
    group: TransformGroup,
    (score, t_mat, class): Start,
    rounds: usize,
    sampling: Sampling,
) -> Result<Vec<Start>> {
    let mut out = Vec::new();
    let Ok(theta) = group.log(&t_mat) else {
        return Ok(out);
    };
    let batch = frame.batch(x, 1)?;
    let k = sm.classes();
    let dim = group.dim();
    let (mut best, mut t_b, mut class) = (score, t_mat, class);
    let mut theta = DVector::from_vec(theta);
    for _ in 0..rounds {
        let y = MatrixWarp::uniform(t_b)
            .apply(&batch, sampling)
            .map_err(warp_error)?;
        let c = class;
        if c == k0 {
            break;
        }
        let mut cot = vec![0.0f32; k];
        cot[c] = 1.0;
        cot[k0] = -1.0;
        let (logits, w) = sm.vjp(&y, 1, &cot, 1)?;
        let g = (logits[c] - logits[k0]) as f64;
        let a = GroupWarp::at_params(group, theta.as_slice())
            .and_then(|gw| gw.vjp(&batch, sampling, &w))
            .map_err(warp_error)?;
        let a = DVector::from_vec(a);
        let half: Vec<f64> = theta.iter().map(|v| v / 2.0).collect();
        let mut gm = GroupWarp::at_params(group, &half)
            .and_then(|gw| gw.metric(&batch, sampling))
            .map_err(warp_error)?
            .remove(0);
        let reg = 1e-9 * gm.trace().max(1e-12);
        for i in 0..dim {
            gm[(i, i)] += reg;
        }
        let Some(chol) = gm.clone().cholesky() else {
            break;
        };
        let u = chol.solve(&a);
        let q = a.dot(&u);
        let lambda = (a.dot(&theta) - g) / q;
        if !(q > 0.0 && lambda > 0.0 && lambda.is_finite()) {
            break;
        }
        let target = u * lambda;
        let len = |v: &DVector<f64>| v.dot(&(&gm * v)).sqrt();
        let radius = len(&theta);
        let dirs: Vec<DVector<f64>> = BLENDS
            .iter()
            .map(|s| &theta + (&target - &theta) * *s)
            .filter_map(|d| {
                let l = len(&d);
                (l > 0.0 && l.is_finite()).then(|| d * (radius / l))
            })
            .collect();
        let at = |r: usize, t: f64| -> Result<Matrix3<f64>> {
            let v: Vec<f64> = dirs[r].iter().map(|a| a * t).collect();
            group.exp(&v).map_err(warp_error)
        };
        let fracs: Vec<f64> = (1..=RAY_POINTS)
            .map(|i| i as f64 / RAY_POINTS as f64)
            .collect();
        // The rays have the same metric length: the smallest `t` is the smallest score to
        // first order, and only it is scored.
        let Some((r, t, c)) = earliest_flip(
            sm,
            frame,
            x,
            k0,
            dirs.len(),
            &fracs,
            RAY_ROUNDS,
            &at,
            sampling,
        )?
        else {
            break;
        };
        let m = at(r, t)?;
        let th = &dirs[r] * t;
        match score_of(frame, x, group, &m, sampling)? {
            Some(s) if s < best * (1.0 - 1e-3) => {
                out.push((s, m, c));
                (best, t_b, class, theta) = (s, m, c, th);
            }
            _ => break,
        }
    }
    Ok(out)
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
                fooled: Some((now, 0.0)),
                ..unfooled(t_mat, iter, false)
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
        // Factors whose transform overflows (a step towards a class the
        // linearisation puts very far) are left out.
        let mut factors = factors.clone();
        let mut mats = Vec::with_capacity(factors.len());
        factors.retain(|&s| match exp_at(s) {
            Ok(m) if finite(&m) => {
                mats.push(m);
                true
            }
            _ => false,
        });
        if mats.is_empty() {
            break;
        }
        let ls = logits_at(sm, frame, x, &mats, sampling)?;
        let rows: Vec<&[f32]> = ls.chunks_exact(k).collect();
        if let Some(j) = rows.iter().position(|r| argmax(r) != k0) {
            // Refine between the last non-fooling factor and the first fooling one.
            let lo = if j == 0 { 0.0 } else { factors[j - 1] };
            let hi = first_flip(sm, frame, x, k0, (lo, factors[j]), &exp_at, sampling)?;
            let final_mat = shortest_on_path(sm, frame, x, k0, group, exp_at(hi)?, sampling)?;
            let fl = logits_at(sm, frame, x, &[final_mat], sampling)?;
            return Ok(Found {
                fooled: Some((argmax(&fl), 0.0)),
                ..unfooled(final_mat, iter + 1, false)
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
            return Ok(unfooled(t_mat, iter + 1, true));
        }
    }
    Ok(unfooled(t_mat, p.max_iter, false))
}

/// Whether every entry of `m` is finite.
fn finite(m: &Matrix3<f64>) -> bool {
    m.iter().all(|v| v.is_finite())
}

/// A search's result that did not fool (yet).
fn unfooled(matrix: Matrix3<f64>, iterations: usize, stalled: bool) -> Found {
    Found {
        matrix,
        iterations,
        fooled: None,
        stalled,
        search_score: None,
        scan_score: None,
        strategy: None,
        refined: 0,
    }
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
            ("scan", "Levels of the coarse scan along each group generator (both signs), an extra start beside the search: first-order scores up to the search's score (2 when it failed), halving from level to level (0: no scan)."),
            ("refine", "Rounds of boundary refinement of the better start (search or scan): each moves towards the point of the linearised boundary closest to the identity and keeps the first flip on that ray when it lowers the score (0: none)."),
            ("eps", "Geodesic-score budgets of the summary's `robust_accuracy@s` keys (robust: correct, and no transform of a smaller score found)."),
        ],
        headline: &["median_score", "success_rate"],
        better: &[("median_score", Better::Higher), ("success_rate", Better::Lower)],
        histograms: &["score", "angle_deg"],
        values: &[&[
            ("score", "geodesic score of the transform found (its distance from the identity on the transform manifold)"),
            ("angle_deg", "rotation part of the transform, degrees"),
            ("param_{name}", "the transform's Lie parameters"),
            ("adv_pred", "class predicted under the transform"),
            ("iterations", "ManiFool steps taken"),
            ("stalled", "1 when a failed search stopped early for lack of progress"),
            ("score_search", "score of the search's own transform, before refinement (when it fooled)"),
            ("score_scan", "score of the scan's transform, before refinement (when it fooled)"),
            ("strategy", "the start the reported transform was refined from: 0 the search, 1 the scan"),
            ("refine_rounds", "refinement rounds that lowered the score"),
        ]],
        units: Units::Chunks,
    };

    fn validate(&self) -> Result<()> {
        self.group()?;
        self.sampling()?;
        self.per_class()?;
        super::curve::check_budgets("manifool", &self.eps)?;
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
        let mut per_image = Vec::new();
        let mut found_all: Vec<(f64, usize, Matrix3<f64>, usize)> = Vec::new();
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
            if let Some(s) = found.search_score {
                values.insert("score_search", s);
            }
            if let Some(s) = found.scan_score {
                values.insert("score_scan", s);
            }
            let outcome = match found.fooled {
                None => {
                    values.insert("stalled", f64::from(u8::from(found.stalled)));
                    Outcome::Failed
                }
                Some((c, score)) => {
                    let theta = group.log(&found.matrix).map_err(warp_error)?;
                    values.insert("score", score);
                    values.insert(
                        "strategy",
                        match found.strategy {
                            Some(Strategy::Scan) => 1.0,
                            _ => 0.0,
                        },
                    );
                    values.insert("refine_rounds", found.refined as f64);
                    values.insert("adv_pred", c as f64);
                    for (name, v) in names.iter().zip(&theta) {
                        values.insert(format!("param_{name}"), *v);
                    }
                    if names.contains(&"theta") {
                        values.insert("angle_deg", theta[0].to_degrees());
                    }
                    found_all.push((score, i, found.matrix, c));
                    per_image.push(serde_json::json!({
                        "index": ctx.data.position(i),
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
        Ok(Output {
            images,
            extra: serde_json::json!({ "transforms": per_image }),
            artifacts,
            ..Output::default()
        })
    }

    /// Rates over the images searched, statistics of the scores and iterations of the fooled
    /// ones, robust accuracy against the score, and every chunk's transforms.
    fn summarise(&self, images: &[ImageResult], parts: Vec<Summary>) -> Result<Summary> {
        let group = self.group()?;
        let (counts, mut summary) = search_summary(images);
        let attacked = counts.fooled + counts.failed;
        if attacked > 0 {
            let stalls = images
                .iter()
                .filter(|i| i.outcome == Outcome::Failed && i.values.get("stalled") == Some(&1.0))
                .count();
            summary.insert(
                "failure_rate".into(),
                counts.failed as f64 / attacked as f64,
            );
            summary.insert("stalled_rate".into(), stalls as f64 / attacked as f64);
        }
        let scores = super::deepfool::fooled_values(images, "score");
        if let Some(m) = super::mean(&scores) {
            summary.insert("invariance_score".into(), m);
        }
        describe(&mut summary, "score", &scores);
        let iters = super::deepfool::fooled_values(images, "iterations");
        describe(&mut summary, "iterations", &iters);
        let curve =
            super::curve::add(&mut summary, "robust_accuracy", images, "score", &self.eps);
        let mut transforms = vec![];
        for part in parts {
            if let Some(serde_json::Value::Array(t)) = part.extra.get("transforms") {
                transforms.extend(t.iter().cloned());
            }
        }
        Ok(Summary {
            summary,
            extra: serde_json::json!({
                "group": group.name(),
                "param_names": group.param_names(),
                "score": "path length of t -> warp(x, exp(t log T)) in parameter steps of 0.05, divided by ||x||_2",
                "transforms": transforms,
                "robust_accuracy_curve": curve,
            }),
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

#[cfg(test)]
mod refine_tests {
    use transforms::{Sampling, TransformGroup};

    use super::{
        argmax, generator_rays, logits_at, manifool_one, scan_generators, Frame, Params,
        SpacedModel,
    };

    /// On digits and the affine group: the default (scan and refinement) never
    /// reports a larger score than the search alone, since the search's
    /// transform is among those it chooses from; its transform fools in a
    /// model call of its own, with the class it records; and the refinement
    /// lowers the score of some digits.
    #[test]
    fn refinement_never_raises_the_score_and_its_transform_fools() {
        let (model, data) = crate::testutil::digits_on_tract(12, None);
        let x = data.load(&model.spec, 0, 12).unwrap().x;
        let sm = SpacedModel::new(&model, &data);
        let frame = Frame::of(&sm);
        let sampling = Sampling::default();
        let group = TransformGroup::Affine;
        let plain = Params {
            scan: 0,
            refine: 0,
            ..Params::default()
        };
        let (mut compared, mut lower) = (0, 0);
        for img in x.chunks_exact(784) {
            let clean = model.logits(img, 1).unwrap();
            let k0 = argmax(&clean);
            let a = manifool_one(&sm, &frame, img, &clean, group, &plain, sampling).unwrap();
            let b = manifool_one(&sm, &frame, img, &clean, group, &Params::default(), sampling)
                .unwrap();
            let Some((c, score)) = b.fooled else {
                assert!(a.fooled.is_none(), "the default lost a fooling transform");
                continue;
            };
            let fresh = argmax(&logits_at(&sm, &frame, img, &[b.matrix], sampling).unwrap());
            assert_ne!(fresh, k0, "the transform reported fools");
            assert_eq!(fresh, c, "the class recorded is the one a fresh call gives");
            if let Some((_, plain_score)) = a.fooled {
                compared += 1;
                assert!(score <= plain_score, "{score} > {plain_score} without refinement");
                assert_eq!(b.search_score, Some(plain_score));
                lower += usize::from(score < plain_score * 0.99);
            }
        }
        eprintln!("{compared} digits compared, {lower} lowered by more than 1 %");
        assert!(compared > 0 && lower > 0);
    }

    fn angle_of(m: &transforms::nalgebra::Matrix3<f64>) -> f64 {
        m[(1, 0)].atan2(m[(0, 0)]).to_degrees()
    }

    /// The scan on the rotation group against a 0.1° scan of both signs up to
    /// 60°: where the fine scan stays flipped from its first flip to 60° on
    /// both sides, a coarse level flips exactly when its angle is past the
    /// first flip of its side, so the rays refined hold the smaller first
    /// flip in their bracket, and the angle found is within the resolution
    /// after it: the widest bracket is half the reach (30°), narrowed to
    /// 1/625 (0.048°); 0.01° more for points on the boundary to rounding.
    #[test]
    fn the_scan_finds_the_smallest_flipping_rotation() {
        let (model, data) = crate::testutil::digits_on_tract(20, None);
        let x = data.load(&model.spec, 0, 20).unwrap().x;
        let sm = SpacedModel::new(&model, &data);
        let frame = Frame::of(&sm);
        let sampling = Sampling::default();
        let group = TransformGroup::Rotation;
        let mut checked = 0;
        for img in x.chunks_exact(784) {
            let k0 = argmax(&model.logits(img, 1).unwrap());
            let mut firsts = Vec::new();
            let mut monotone = true;
            for sign in [1.0, -1.0] {
                let mats: Vec<_> = (1..=600)
                    .map(|i| group.exp(&[sign * (i as f64 * 0.1).to_radians()]).unwrap())
                    .collect();
                let ls = logits_at(&sm, &frame, img, &mats, sampling).unwrap();
                let flipped: Vec<bool> = ls.chunks_exact(10).map(|r| argmax(r) != k0).collect();
                let first = flipped.iter().position(|&f| f);
                monotone &= first.is_some_and(|f| flipped[f..].iter().all(|&v| v));
                firsts.push(first.map(|f| (f + 1) as f64 * 0.1));
            }
            if !monotone {
                continue;
            }
            let smallest = firsts.iter().flatten().fold(f64::INFINITY, |a, &b| a.min(b));
            // Radians per unit of t along the rays: reach 60°.
            let per_t = generator_rays(&frame, img, group, sampling).unwrap()[0][0].abs();
            let reach = 60f64.to_radians() / per_t;
            let (score, m, c) = scan_generators(&sm, &frame, img, k0, group, 6, reach, sampling)
                .unwrap()
                .expect("the scan flips where the fine scan does");
            let angle = angle_of(&m).abs();
            assert_ne!(c, k0);
            assert!(score > 0.0);
            assert!(
                angle >= smallest - 0.1 - 1e-9 && angle - smallest <= 30.0 / 625.0 + 0.01,
                "{angle}° vs the fine scan's first flip {smallest}°"
            );
            checked += 1;
        }
        eprintln!("{checked} digits flip and stay flipped within 60° on both sides");
        assert!(checked > 0, "no digit to compare with the fine scan");
    }
}
