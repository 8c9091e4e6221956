//! Boundary refinement of minimal perturbations found by a search such as DeepFool
//! (docs/methods.md, minnorm): make an adversarial perturbation `r` of `u` smaller while it
//! stays adversarial.
//!
//! 1. **Line search** along `r` back towards the image: the smallest `t ∈ (0, 1]` such that
//!    `u + t·r` is still misclassified, within `2^-bisection` (a secant search on the margin,
//!    safeguarded by bisection; as precise as `bisection` halvings, in fewer model rows).
//! 2. **Boundary steps** in the manner of fast minimum-norm attacks (FMN, Pintor et al.,
//!    NeurIPS 2021): from there, `steps` projected steps that keep an ℓp ball of radius `ε`
//!    around the image and walk along the boundary. Each step takes the gradient `g` of the
//!    margin `f_k0 − f_j` to the strongest other class `j`, steps against it (`−α·g/‖g‖₂` for
//!    ℓ2, `−α·sign g` for ℓ∞), projects onto the ball and the box; `ε` shrinks by `1 − γ`
//!    after an adversarial iterate (never above the smallest adversarial norm seen) and grows
//!    by `1 + γ` after one that is not. `α` and `γ` decay from `α₀ = ε₀` and `γ₀ = 0.05` to
//!    1 % of them on a cosine schedule. The smallest adversarial iterate is kept.
//!
//! Every refined perturbation keeps its proof: the point `u + r` (clipped to the box) is
//! evaluated by a fresh forward pass and its class recorded. Candidates are tried smallest
//! first (the last iterate, which no call evaluated, then the smallest iterate a gradient
//! call saw fooling: gradient calls run another graph, whose logits may round differently),
//! down to the line search's point, which a forward pass confirmed.

use rayon::prelude::*;

use super::deepfool::{DeepFoolOutcome, Norm, PER_IMAGE_FROM_S};
use super::vector::{argmax, l2};
use crate::error::Result;
use crate::measure::space::SpacedModel;

/// Options of a refinement.
#[derive(Debug, Clone, Copy)]
pub struct RefineOptions {
    /// Norm that is made smaller.
    pub norm: Norm,
    /// Precision of the line search towards the image in halvings: its point is within
    /// `2^-bisection` of `r`'s length of the boundary along `r` (0: no line search).
    pub bisection: usize,
    /// Boundary steps after the line search (each one gradient call, one class row).
    pub steps: usize,
    /// Box every point is clipped to.
    pub clip: Option<(f32, f32)>,
}

/// The point `u + r`, clipped to `clip`.
fn point(u: &[f32], r: &[f32], clip: Option<(f32, f32)>, out: &mut Vec<f32>) {
    out.extend(u.iter().zip(r).map(|(&a, &b)| match clip {
        Some((lo, hi)) => (a + b).clamp(lo, hi),
        None => a + b,
    }));
}

/// Refines the successful outcomes of `found` (one per sample of `u`, `n × d`, measured
/// space): their `r` gets smaller in `opts.norm` and `adv_class` is the class a fresh
/// forward pass gives at `u + r`. Failed outcomes are left as they are.
/// `clean_logits` are the logits at `u` (`n × k`).
pub fn refine(
    model: &SpacedModel,
    u: &[f32],
    clean_logits: &[f32],
    found: &mut [DeepFoolOutcome],
    opts: &RefineOptions,
) -> Result<()> {
    let (d, k) = (model.dim(), model.classes());
    let idx: Vec<usize> = (0..found.len()).filter(|&i| found[i].success).collect();
    let n = idx.len();
    if n == 0 || (opts.bisection == 0 && opts.steps == 0) {
        return Ok(());
    }
    let us: Vec<&[f32]> = idx.iter().map(|&i| &u[i * d..(i + 1) * d]).collect();
    let k0: Vec<usize> = idx.iter().map(|&i| found[i].clean_class).collect();
    let r0: Vec<&[f32]> = idx.iter().map(|&i| &found[i].r[..]).collect();

    // 1. Line search: `hi` always fools (t = 1 is the search's confirmed answer).
    let scaled = |a: usize, t: f32| -> Vec<f32> { r0[a].iter().map(|&x| t * x).collect() };
    let clean: Vec<&[f32]> = idx
        .iter()
        .map(|&i| &clean_logits[i * k..(i + 1) * k])
        .collect();
    let (hi, hi_logits) = line_search(model, &us, &r0, &k0, &clean, opts)?;
    let confirmed: Vec<Vec<f32>> = (0..n).map(|a| scaled(a, hi[a])).collect();
    let confirmed_class: Vec<usize> = (0..n)
        .map(|a| {
            hi_logits[a]
                .as_deref()
                .map_or(found[idx[a]].adv_class, argmax)
        })
        .collect();
    let mut pts = Vec::with_capacity(n * d);

    // 2. Boundary steps from the line search's point. Each gradient call also gives the logits
    // at its iterate: the smallest iterate they show fooling is kept (`seen`), and the last
    // iterate, which no call has evaluated, is a candidate too.
    let mut seen: Vec<Option<Vec<f32>>> = vec![None; n];
    let mut last: Vec<Option<Vec<f32>>> = vec![None; n];
    if opts.steps > 0 {
        let mut delta = confirmed.clone();
        let mut best_norm: Vec<f64> = delta.iter().map(|r| opts.norm.of(r)).collect();
        let mut eps = best_norm.clone();
        let alpha0: Vec<f64> = best_norm.iter().map(|&e| e * ALPHA0).collect();
        // The strongest other class at the current iterate, from the last logits seen.
        let mut rival: Vec<usize> = (0..n)
            .map(|a| match &hi_logits[a] {
                Some(row) => runner_up(row, k0[a]),
                None => found[idx[a]].adv_class,
            })
            .collect();
        // On a model slow per row with few images, gradient calls of several rows would each
        // build a graph for their row count, which costs more than the few steps run on it.
        let one_by_one = n <= ONE_BY_ONE_UP_TO
            && model
                .model
                .executor()
                .forward_seconds_per_row()
                .is_some_and(|s| s >= PER_IMAGE_FROM_S);
        for step in 0..opts.steps {
            pts.clear();
            for a in 0..n {
                point(us[a], &delta[a], opts.clip, &mut pts);
            }
            let mut cot = vec![0.0f32; n * k];
            for a in 0..n {
                cot[a * k + k0[a]] = 1.0;
                cot[a * k + rival[a]] = -1.0;
            }
            let (logits, grads) = if one_by_one {
                // One image per call: every call runs the one single-image graph.
                let each = model.model.executor().map_concurrent(n, |a| {
                    model.vjp(&pts[a * d..(a + 1) * d], 1, &cot[a * k..(a + 1) * k], 1)
                })?;
                let (mut l, mut g) = (Vec::with_capacity(n * k), Vec::with_capacity(n * d));
                for (la, ga) in each {
                    l.extend(la);
                    g.extend(ga);
                }
                (l, g)
            } else {
                model.vjp(&pts, n, &cot, 1)?
            };
            let progress = step as f64 / opts.steps as f64;
            let decay = 0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
            let gamma = GAMMA0 * decay;
            delta
                .par_iter_mut()
                .zip(grads.par_chunks(d))
                .zip(eps.par_iter_mut())
                .zip(seen.par_iter_mut())
                .zip(best_norm.par_iter_mut())
                .zip(rival.par_iter_mut())
                .enumerate()
                .for_each(|(a, (((((delta, g), eps), seen), best_norm), rival))| {
                    let row = &logits[a * k..(a + 1) * k];
                    let adversarial = argmax(row) != k0[a];
                    let norm = opts.norm.of(delta);
                    if adversarial && norm < *best_norm {
                        *seen = Some(delta.clone());
                        *best_norm = norm;
                    }
                    *rival = runner_up(row, k0[a]);
                    *eps = if adversarial {
                        (*eps * (1.0 - gamma)).min(*best_norm)
                    } else {
                        *eps * (1.0 + gamma)
                    };
                    step_and_project(delta, g, us[a], alpha0[a] * decay, *eps, opts);
                });
        }
        for (a, delta) in delta.into_iter().enumerate() {
            if opts.norm.of(&delta) < best_norm[a] {
                last[a] = Some(delta);
            }
        }
    }

    // 3. Proof: the candidates of each image, smallest first, each checked by a fresh forward
    // pass; the first that fools is kept, else the line search's point.
    let mut queue: Vec<Vec<Vec<f32>>> = last
        .into_iter()
        .zip(seen)
        .map(|(l, s)| l.into_iter().chain(s).collect())
        .collect();
    let mut kept: Vec<Option<(Vec<f32>, usize)>> = vec![None; n];
    loop {
        let pending: Vec<usize> = (0..n).filter(|&a| !queue[a].is_empty()).collect();
        if pending.is_empty() {
            break;
        }
        pts.clear();
        for &a in &pending {
            point(us[a], &queue[a][0], opts.clip, &mut pts);
        }
        let logits = model.logits(&pts, pending.len())?;
        for (p, &a) in pending.iter().enumerate() {
            let c = argmax(&logits[p * k..(p + 1) * k]);
            let candidate = queue[a].remove(0);
            if c != k0[a] {
                kept[a] = Some((candidate, c));
                queue[a].clear();
            }
        }
    }
    for (a, (kept, confirmed)) in kept.into_iter().zip(confirmed).enumerate() {
        let o = &mut found[idx[a]];
        if let Some((r, c)) = kept {
            (o.r, o.adv_class) = (r, c);
        } else if hi[a] < 1.0 {
            (o.r, o.adv_class) = (confirmed, confirmed_class[a]);
        }
    }
    Ok(())
}

/// Per image, the line search's `t` and the logits at `u + t·r`.
type LineSearch = (Vec<f32>, Vec<Option<Vec<f32>>>);

/// The line search of step 1: per image, the smallest `t ∈ (0, 1]` found such that
/// `u + t·r` is still misclassified, within `2^-opts.bisection` of the boundary along `r`,
/// with the logits there (`None` where a fresh pass at `t = 1` did not confirm the search's
/// answer: the image then stays at `t = 1`).
///
/// A safeguarded secant search on the margin `f_k0 − max_{j≠k0} f_j`: the bracket starts at
/// `[0, 1]` (the margins there from `clean` and one forward pass), and each round evaluates
/// two points `tol/2` either side of the secant's root (the bracket's midpoint when the
/// previous round shrank the bracket by less than half), so a margin near linear along `r`
/// closes the bracket in one round. The bracket always holds: `lo` never fools, `hi` does.
fn line_search(
    model: &SpacedModel,
    us: &[&[f32]],
    r0: &[&[f32]],
    k0: &[usize],
    clean: &[&[f32]],
    opts: &RefineOptions,
) -> Result<LineSearch> {
    let (n, k) = (us.len(), model.classes());
    let mut hi = vec![1.0f32; n];
    let mut hi_logits: Vec<Option<Vec<f32>>> = vec![None; n];
    if opts.bisection == 0 {
        return Ok((hi, hi_logits));
    }
    let tol = 0.5f32.powi(opts.bisection as i32);
    let margin = |row: &[f32], k0: usize| row[k0] - row[runner_up(row, k0)];
    let eval = |probes: &[(usize, f32)]| -> Result<Vec<f32>> {
        let mut pts = Vec::with_capacity(probes.len() * us[0].len());
        for &(a, t) in probes {
            let r: Vec<f32> = r0[a].iter().map(|&x| t * x).collect();
            point(us[a], &r, opts.clip, &mut pts);
        }
        model.logits(&pts, probes.len())
    };
    let mut lo = vec![0.0f32; n];
    let mut m_lo: Vec<f32> = (0..n).map(|a| margin(clean[a], k0[a])).collect();
    let mut m_hi = vec![0.0f32; n];
    // An end that a fresh pass does not confirm (t = 1 not fooling, or the clean point not
    // classified k0) leaves the image at t = 1.
    let ends: Vec<(usize, f32)> = (0..n).map(|a| (a, 1.0)).collect();
    let logits = eval(&ends)?;
    let mut active: Vec<bool> = (0..n)
        .map(|a| {
            let row = &logits[a * k..(a + 1) * k];
            m_hi[a] = margin(row, k0[a]);
            let confirmed = argmax(row) != k0[a];
            if confirmed {
                hi_logits[a] = Some(row.to_vec());
            }
            confirmed && argmax(clean[a]) == k0[a]
        })
        .collect();
    let mut secant = vec![true; n];
    for _ in 0..opts.bisection {
        let mut probes = Vec::new();
        for a in (0..n).filter(|&a| active[a]) {
            let w = hi[a] - lo[a];
            let t = if secant[a] && m_lo[a] > m_hi[a] {
                lo[a] + w * (m_lo[a] / (m_lo[a] - m_hi[a])).clamp(0.0, 1.0)
            } else {
                lo[a] + 0.5 * w
            };
            for p in [t - 0.5 * tol, t + 0.5 * tol] {
                if p > lo[a] && p < hi[a] {
                    probes.push((a, p));
                }
            }
        }
        if probes.is_empty() {
            break;
        }
        let logits = eval(&probes)?;
        let before: Vec<f32> = (0..n).map(|a| hi[a] - lo[a]).collect();
        for (p, &(a, t)) in probes.iter().enumerate() {
            let row = &logits[p * k..(p + 1) * k];
            if t >= hi[a] || t <= lo[a] {
                continue;
            }
            if argmax(row) != k0[a] {
                (hi[a], m_hi[a]) = (t, margin(row, k0[a]));
                hi_logits[a] = Some(row.to_vec());
            } else {
                (lo[a], m_lo[a]) = (t, margin(row, k0[a]));
            }
        }
        for a in 0..n {
            let w = hi[a] - lo[a];
            secant[a] = w <= 0.5 * before[a];
            active[a] &= w > tol;
        }
    }
    Ok((hi, hi_logits))
}

/// Images up to which a model slow per row gets its gradient calls one image at a time.
const ONE_BY_ONE_UP_TO: usize = 16;

/// First step length of the boundary steps, as a fraction of the starting norm.
const ALPHA0: f64 = 1.0;
/// First factor by which the ball's radius shrinks or grows.
const GAMMA0: f64 = 0.05;

/// The class with the largest logit other than `k0`.
fn runner_up(row: &[f32], k0: usize) -> usize {
    let mut best = usize::from(k0 == 0);
    for (j, &v) in row.iter().enumerate() {
        if j != k0 && v > row[best] {
            best = j;
        }
    }
    best
}

/// One boundary step of `delta` against the margin gradient `g`, then the projection onto
/// the `eps` ball of `opts.norm` and the box.
fn step_and_project(
    delta: &mut [f32],
    g: &[f32],
    u: &[f32],
    alpha: f64,
    eps: f64,
    opts: &RefineOptions,
) {
    match opts.norm {
        Norm::L2 => {
            let gn = l2(g);
            if gn > 0.0 {
                let s = (alpha / gn) as f32;
                for (x, &gt) in delta.iter_mut().zip(g) {
                    *x -= s * gt;
                }
            }
            let norm = l2(delta);
            if norm > eps {
                let s = (eps / norm) as f32;
                delta.iter_mut().for_each(|x| *x *= s);
            }
        }
        Norm::Linf => {
            let (a, e) = (alpha as f32, eps as f32);
            for (x, &gt) in delta.iter_mut().zip(g) {
                *x = (*x - a * gt.signum() * f32::from(gt != 0.0)).clamp(-e, e);
            }
        }
    }
    if let Some((lo, hi)) = opts.clip {
        for (x, &ut) in delta.iter_mut().zip(u) {
            *x = (ut + *x).clamp(lo, hi) - ut;
        }
    }
}
