//! The DeepFool solver (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016; docs/methods.md,
//! deepfool): distance to the nearest decision boundary by iterated linearisation.
//!
//! Batched: a set of active images is advanced together; each iteration is
//! one VJP call with the `N−1` candidate margins `e_k − e_k0` as cotangent
//! rows, plus one forward pass to test the new iterates. Its projection hook
//! restricts every gradient to a subspace (random, DCT, patch: the `subspace`
//! and `structured` measures).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::vector::{argmax, l1, l2, linf};
use crate::error::{Error, Result};
use crate::logits::top_k;
use crate::measure::space::SpacedModel;

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

impl Norm {
    /// `‖v‖` in this norm.
    pub fn of(self, v: &[f32]) -> f64 {
        match self {
            Norm::L2 => l2(v),
            Norm::Linf => linf(v),
        }
    }
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
    /// L2 DeepFool without a box, as the measures that start from `r*` run it.
    pub fn l2_unclipped(overshoot: f32, max_iter: usize, candidates: usize) -> Self {
        DeepFoolOptions {
            norm: Norm::L2,
            overshoot,
            max_iter,
            candidates,
            clip: None,
        }
    }

    /// Competitor classes per image (the cotangents `M` of each gradient call) for a model
    /// with `k` classes: `candidates − 1`, at least 1 and at most `k − 1`.
    pub fn competitors(&self, k: usize) -> usize {
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
        .executor()
        .forward_seconds_per_row()
        .is_some_and(|s| s >= PER_IMAGE_FROM_S);
    if n > 1 && slow_rows && net.executor().concurrent_calls() > 1 && net.vjp_rows_per_call(m) == 1
    {
        // Gradient calls take one image each anyway: run each image's iterations on its own
        // rather than in lockstep, so that no thread waits at the end of an iteration for the
        // others, whose images may need fewer steps.
        return deepfool_each(
            Solver {
                model,
                opts,
                project,
            },
            u,
            logits0,
            n,
        );
    }
    deepfool_from(
        Solver {
            model,
            opts,
            project,
        },
        u,
        logits0,
        n,
    )
}

/// What one DeepFool run keeps fixed: the model in its measured space, the options and the
/// projection.
#[derive(Clone, Copy)]
struct Solver<'a> {
    model: &'a SpacedModel<'a>,
    opts: &'a DeepFoolOptions,
    project: Option<Projection<'a>>,
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
fn deepfool_each(s: Solver, u: &[f32], logits0: &[f32], n: usize) -> Result<Vec<DeepFoolOutcome>> {
    let (d, k) = (s.model.dim(), s.model.classes());
    s.model.model.executor().map_concurrent(n, |i| {
        let ui = &u[i * d..(i + 1) * d];
        let li = &logits0[i * k..(i + 1) * k];
        let one = match s.project {
            Some(p) => {
                let at_i = move |_: usize, w: &mut [f32]| p(i, w);
                let project = Some(&at_i as Projection);
                deepfool_from(Solver { project, ..s }, ui, li, 1)?
            }
            None => deepfool_from(s, ui, li, 1)?,
        };
        Ok(one.into_iter().next().expect("one outcome per image"))
    })
}

/// Forward time per row (fastest seen) from which [`deepfool_batch`] runs images on their own
/// where gradient calls take one image each: below it (small models such as the digits CNN)
/// the per-call cost of single-image checks outweighs the waiting it saves.
pub const PER_IMAGE_FROM_S: f64 = 1e-3;

/// [`deepfool_batch`] in lockstep, from the clean logits `logits0` of the `n` samples `u`.
fn deepfool_from(s: Solver, u: &[f32], logits0: &[f32], n: usize) -> Result<Vec<DeepFoolOutcome>> {
    let Solver {
        model,
        opts,
        project,
    } = s;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::deepfool::Params;
    use crate::testutil::digits_on_tract;

    /// Image by image (concurrently) and in lockstep give the same perturbations, with a
    /// projection that differs per image too (it must see each image's own index). The
    /// projected run honours the projection exactly, and every success is confirmed by a
    /// fresh forward pass at `u + r`. How many images the projected, clipped search fools
    /// within its budget depends on rounding (tract's kernels differ by instruction set), so
    /// the test asks only that each run fools some image, so that both branches are compared.
    #[test]
    fn images_on_their_own_match_the_lockstep_run() {
        let (model, data) = digits_on_tract(8, Some(2));
        assert!(
            model.executor().concurrent_calls() > 1,
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
            let solver = Solver {
                model: &sm,
                opts: &opts,
                project,
            };
            let each = deepfool_each(solver, &u, &logits0, 8).unwrap();
            let lockstep = deepfool_from(solver, &u, &logits0, 8).unwrap();
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
