//! Auto-PGD (APGD, Croce & Hein, "Reliable evaluation of adversarial robustness with an
//! ensemble of diverse parameter-free attacks", ICML 2020; docs/methods.md, robust_accuracy):
//! projected gradient ascent on a loss within the ε-ball, with the paper's step-size schedule
//! (step 2ε, momentum 0.75, checkpoints at 22 %, then every 3 % less down to 6 % of the budget,
//! where the step halves and the search restarts from the best point when the loss rose in
//! fewer than 75 % of the steps since the last checkpoint or the best loss did not improve).
//!
//! Losses: cross-entropy (APGD-CE) and the targeted difference-of-logits ratio (APGD-DLR-T),
//! `−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)`. Both are functions of the logits only, so their
//! input gradient is one VJP call with the loss's logit gradient as the cotangent row.
//!
//! Batched: the images of a call advance together; every step is one forward pass (the
//! logits give the loss and its cotangent) and one VJP call, for the images not yet fooled.
//! An image is fooled as soon as an iterate is classified other than its label; the iterate
//! is returned (callers re-check it with a fresh model call). Random starts come from a
//! per-image seed, so results do not depend on batching.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::deepfool::Norm;
use super::vector::{argmax, l2};
use crate::error::{Error, Result};
use crate::measure::space::SpacedModel;

/// The loss APGD ascends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Cross-entropy of the label.
    Ce,
    /// Targeted difference-of-logits ratio towards the per-image target class (needs at
    /// least 4 classes).
    DlrTargeted,
}

/// Options of one APGD run.
#[derive(Debug, Clone, Copy)]
pub struct ApgdOptions {
    /// Threat model.
    pub norm: Norm,
    /// Radius of the ball.
    pub eps: f32,
    /// Iterations after the random start (the paper's `N_iter`).
    pub steps: usize,
    /// Box every iterate is clipped to.
    pub bounds: Option<(f32, f32)>,
    /// Loss ascended.
    pub loss: Loss,
}

/// A point an attack found, classified other than the label.
#[derive(Debug, Clone)]
pub struct Found {
    /// The adversarial point (`d` values, measured space).
    pub point: Vec<f32>,
    /// The class the attack saw there.
    pub class: usize,
}

/// Momentum of the update (the paper's α).
const MOMENTUM: f32 = 0.75;
/// Fraction of steps since the last checkpoint in which the loss must rise (the paper's ρ).
const RHO: f64 = 0.75;

/// Loss value of logits `z` (label `y`, target `t`) and its gradient with respect to the
/// logits, written to `cot`.
pub fn loss_and_cotangent(loss: Loss, z: &[f32], y: usize, t: usize, cot: &mut [f32]) -> f64 {
    let z: Vec<f64> = z.iter().map(|&v| f64::from(v)).collect();
    cot.fill(0.0);
    match loss {
        Loss::Ce => {
            let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            for (c, ek) in cot.iter_mut().zip(&e) {
                *c = (ek / s) as f32;
            }
            cot[y] -= 1.0;
            m + s.ln() - z[y]
        }
        Loss::DlrTargeted => {
            let mut order: Vec<usize> = (0..z.len()).collect();
            order.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
            let (p1, p3, p4) = (order[0], order[2], order[3]);
            let den = z[p1] - 0.5 * (z[p3] + z[p4]) + 1e-12;
            let num = z[y] - z[t];
            let mut g = vec![0.0f64; z.len()];
            g[y] -= 1.0 / den;
            g[t] += 1.0 / den;
            let r = num / (den * den);
            g[p1] += r;
            g[p3] -= 0.5 * r;
            g[p4] -= 0.5 * r;
            for (c, v) in cot.iter_mut().zip(&g) {
                *c = *v as f32;
            }
            -num / den
        }
    }
}

/// Projects `v` onto the `norm`-ball of radius `eps` around `x`, then into `bounds`.
pub fn project(norm: Norm, eps: f32, bounds: Option<(f32, f32)>, x: &[f32], v: &mut [f32]) {
    match norm {
        Norm::Linf => {
            for (vt, &xt) in v.iter_mut().zip(x) {
                *vt = vt.clamp(xt - eps, xt + eps);
            }
        }
        Norm::L2 => {
            let n = v
                .iter()
                .zip(x)
                .map(|(&a, &b)| {
                    let t = f64::from(a) - f64::from(b);
                    t * t
                })
                .sum::<f64>()
                .sqrt();
            if n > f64::from(eps) {
                let s = f64::from(eps) / n;
                for (vt, &xt) in v.iter_mut().zip(x) {
                    *vt = (f64::from(xt) + (f64::from(*vt) - f64::from(xt)) * s) as f32;
                }
            }
        }
    }
    if let Some((lo, hi)) = bounds {
        for vt in v.iter_mut() {
            *vt = vt.clamp(lo, hi);
        }
    }
}

/// The checkpoints of the step-size schedule for `steps` iterations, as AutoAttack runs
/// them: the first after 22 % of the budget, each later window 3 % shorter, at least 6 %.
fn windows(steps: usize) -> (usize, usize, usize) {
    let f = |p: f64| ((p * steps as f64) as usize).max(1);
    (f(0.22), f(0.03), f(0.06))
}

/// Per-image state of a run.
struct State {
    x: Vec<f32>,
    prev: Vec<f32>,
    grad: Vec<f32>,
    loss: f64,
    best: Vec<f32>,
    best_grad: Vec<f32>,
    best_loss: f64,
    step: f32,
    rises: usize,
    best_at_check: f64,
    reduced_at_check: bool,
}

/// APGD on `n` samples `u` (`n × d`, measured space), moving each away from `labels[i]`
/// (towards `targets[i]` for the targeted loss), with random starts from `seeds[i]`. The
/// point found per image, or `None` where every iterate kept the label.
pub fn apgd(
    model: &SpacedModel,
    u: &[f32],
    labels: &[usize],
    targets: Option<&[usize]>,
    seeds: &[u64],
    opts: &ApgdOptions,
) -> Result<Vec<Option<Found>>> {
    let (d, k) = (model.dim(), model.classes());
    let n = labels.len();
    if u.len() != n * d || seeds.len() != n || targets.is_some_and(|t| t.len() != n) {
        return Err(Error::Config(format!(
            "apgd: expected {n}×{d} values, {n} seeds and targets, got {} values and {} seeds",
            u.len(),
            seeds.len()
        )));
    }
    if opts.loss == Loss::DlrTargeted && (k < 4 || targets.is_none()) {
        return Err(Error::Config(
            "apgd: the targeted DLR loss needs targets and at least 4 classes".into(),
        ));
    }
    let target = |i: usize| targets.map_or(labels[i], |t| t[i]);
    let mut found: Vec<Option<Found>> = vec![None; n];
    if n == 0 {
        return Ok(found);
    }
    let eps = opts.eps;
    // Random start: uniform in the L∞ ball scaled so its largest entry is ε, or a Gaussian
    // direction of length ε (as AutoAttack starts).
    let mut states: Vec<State> = (0..n)
        .map(|i| {
            let xi = &u[i * d..(i + 1) * d];
            let mut rng = ChaCha8Rng::seed_from_u64(seeds[i]);
            let mut t: Vec<f32> = match opts.norm {
                Norm::Linf => (0..d).map(|_| 2.0 * rng.random::<f32>() - 1.0).collect(),
                Norm::L2 => (0..d).map(|_| rng.sample(StandardNormal)).collect(),
            };
            let scale = match opts.norm {
                Norm::Linf => t.iter().fold(0.0f32, |m, v| m.max(v.abs())),
                Norm::L2 => l2(&t) as f32,
            };
            let s = eps / (scale + 1e-12);
            for (tv, &xv) in t.iter_mut().zip(xi) {
                *tv = xv + s * *tv;
            }
            project(opts.norm, eps, opts.bounds, xi, &mut t);
            State {
                prev: t.clone(),
                best: t.clone(),
                x: t,
                grad: vec![0.0; d],
                best_grad: vec![0.0; d],
                loss: f64::NEG_INFINITY,
                best_loss: f64::NEG_INFINITY,
                step: 2.0 * eps,
                rises: 0,
                best_at_check: f64::NEG_INFINITY,
                reduced_at_check: true,
            }
        })
        .collect();
    let mut active: Vec<usize> = (0..n).collect();
    let (mut window, shrink, min_window) = windows(opts.steps);
    let mut since_check = 0;
    for iter in 0..=opts.steps {
        if iter > 0 {
            // One step per active image from its current iterate and gradient.
            let a = if iter == 1 { 1.0 } else { MOMENTUM };
            for &i in &active {
                let xi = &u[i * d..(i + 1) * d];
                let s = &mut states[i];
                let mut z = s.x.clone();
                match opts.norm {
                    Norm::Linf => {
                        for (zt, &g) in z.iter_mut().zip(&s.grad) {
                            *zt += s.step * sign(g);
                        }
                    }
                    Norm::L2 => {
                        let gn = (l2(&s.grad) + 1e-12) as f32;
                        for (zt, &g) in z.iter_mut().zip(&s.grad) {
                            *zt += s.step * g / gn;
                        }
                    }
                }
                project(opts.norm, eps, opts.bounds, xi, &mut z);
                let mut next: Vec<f32> = (0..d)
                    .map(|t| s.x[t] + a * (z[t] - s.x[t]) + (1.0 - a) * (s.x[t] - s.prev[t]))
                    .collect();
                project(opts.norm, eps, opts.bounds, xi, &mut next);
                s.prev = std::mem::replace(&mut s.x, next);
            }
        }
        // Classify the iterates: those off their label are done.
        let mut xa = Vec::with_capacity(active.len() * d);
        for &i in &active {
            xa.extend_from_slice(&states[i].x);
        }
        let logits = model.logits(&xa, active.len())?;
        let mut still = Vec::with_capacity(active.len());
        for (a, &i) in active.iter().enumerate() {
            let c = argmax(&logits[a * k..(a + 1) * k]);
            if c != labels[i] {
                found[i] = Some(Found {
                    point: states[i].x.clone(),
                    class: c,
                });
            } else {
                still.push((a, i));
            }
        }
        active = still.iter().map(|&(_, i)| i).collect();
        if active.is_empty() || iter == opts.steps {
            break;
        }
        // Loss and its logit gradient at each remaining iterate, then one VJP call.
        let mut cot = vec![0.0f32; active.len() * k];
        let mut xa = Vec::with_capacity(active.len() * d);
        for (b, &(a, i)) in still.iter().enumerate() {
            let s = &mut states[i];
            let l = loss_and_cotangent(
                opts.loss,
                &logits[a * k..(a + 1) * k],
                labels[i],
                target(i),
                &mut cot[b * k..(b + 1) * k],
            );
            if iter > 0 && l > s.loss {
                s.rises += 1;
            }
            s.loss = l;
            xa.extend_from_slice(&s.x);
        }
        let (_, grads) = model.vjp(&xa, active.len(), &cot, 1)?;
        for (b, &i) in active.iter().enumerate() {
            let s = &mut states[i];
            s.grad.copy_from_slice(&grads[b * d..(b + 1) * d]);
            if s.loss > s.best_loss || iter == 0 {
                s.best_loss = s.loss;
                s.best.copy_from_slice(&s.x);
                s.best_grad.copy_from_slice(&s.grad);
            }
        }
        if iter == 0 {
            continue;
        }
        since_check += 1;
        if since_check == window {
            for &i in &active {
                let s = &mut states[i];
                let oscillating = (s.rises as f64) <= window as f64 * RHO;
                let stalled = !s.reduced_at_check && s.best_at_check >= s.best_loss;
                let reduce = oscillating || stalled;
                s.reduced_at_check = reduce;
                s.best_at_check = s.best_loss;
                s.rises = 0;
                if reduce {
                    s.step /= 2.0;
                    s.x.copy_from_slice(&s.best);
                    s.grad.copy_from_slice(&s.best_grad);
                }
            }
            window = window.saturating_sub(shrink).max(min_window);
            since_check = 0;
        }
    }
    Ok(found)
}

/// Sign with `sign(0) = 0`.
fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The logit gradients match central differences of the loss values.
    #[test]
    fn cotangents_are_the_logit_gradients_of_the_losses() {
        let z = [0.3f32, 2.0, -1.0, 0.7, 1.1, -0.4];
        for loss in [Loss::Ce, Loss::DlrTargeted] {
            let mut cot = vec![0.0; 6];
            loss_and_cotangent(loss, &z, 1, 3, &mut cot);
            for j in 0..6 {
                let h = 1e-3f32;
                let mut zp = z;
                zp[j] += h;
                let mut zm = z;
                zm[j] -= h;
                let mut scratch = vec![0.0; 6];
                let fp = loss_and_cotangent(loss, &zp, 1, 3, &mut scratch);
                let fm = loss_and_cotangent(loss, &zm, 1, 3, &mut scratch);
                let fd = (fp - fm) / (2.0 * f64::from(h));
                assert!(
                    (fd - f64::from(cot[j])).abs() < 1e-3,
                    "{loss:?} logit {j}: {fd} vs {}",
                    cot[j]
                );
            }
        }
    }

    #[test]
    fn projection_keeps_the_ball_and_the_box() {
        let x = [0.0f32, 0.5, 1.0];
        let mut v = [0.5f32, 0.9, 0.2];
        project(Norm::Linf, 0.1, Some((0.0, 1.0)), &x, &mut v);
        assert_eq!(v, [0.1, 0.6, 0.9]);
        let mut v = [3.0f32, 0.5, 1.0];
        project(Norm::L2, 1.0, None, &x, &mut v);
        assert!((v[0] - 1.0).abs() < 1e-6 && v[1] == 0.5 && v[2] == 1.0);
    }

    #[test]
    fn schedule_windows_follow_the_paper() {
        assert_eq!(windows(100), (22, 3, 6));
        assert_eq!(windows(10), (2, 1, 1));
    }
}
