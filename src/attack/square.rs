//! Square Attack (Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient
//! black-box adversarial attack via random search", ECCV 2020; docs/methods.md,
//! robust_accuracy): random search over the vertices of the L∞ ball, one square window of
//! the image changed per query, kept when the margin loss `z_y − max_{j≠y} z_j` falls. The
//! window's side follows the paper's schedule of `p`, the fraction of pixels changed, halved
//! at fixed fractions of the query budget (as AutoAttack runs it, p_init = 0.8).
//!
//! It uses forward passes only, so it is blind to gradient masking: where it fools an image
//! that the gradient attacks did not, the gradients mislead them (Athalye et al. 2018).
//!
//! Batched: every query is one forward pass over the images not yet fooled; each image draws
//! its windows and signs from its own seed, so results do not depend on batching.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::apgd::Found;
use super::vector::argmax;
use crate::error::{Error, Result};
use crate::measure::space::SpacedModel;

/// Where pixel `(channel, row, column)` of a sample lies among its `d` values.
#[derive(Debug, Clone, Copy)]
pub struct Grid {
    /// Channels.
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Planar `(C, H, W)`, else interleaved `(H, W, C)`.
    pub planar: bool,
}

impl Grid {
    fn at(&self, c: usize, r: usize, col: usize) -> usize {
        if self.planar {
            (c * self.height + r) * self.width + col
        } else {
            (r * self.width + col) * self.channels + c
        }
    }

    fn len(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Options of one Square Attack run.
#[derive(Debug, Clone, Copy)]
pub struct SquareOptions {
    /// L∞ radius.
    pub eps: f32,
    /// Model calls per image, the initial point included.
    pub queries: usize,
    /// Initial fraction of pixels a window covers.
    pub p_init: f64,
    /// Box every point is clipped to.
    pub bounds: Option<(f32, f32)>,
    /// The samples' pixel grid.
    pub grid: Grid,
}

/// The fraction of pixels changed at query `it` of `queries`: the paper's schedule, which
/// halves `p` at 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10 000 queries,
/// rescaled to the budget.
pub fn p_schedule(p_init: f64, it: usize, queries: usize) -> f64 {
    let it = it * 10_000 / queries.max(1);
    let halvings = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000]
        .iter()
        .filter(|&&t| it > t)
        .count();
    p_init / f64::from(1u32 << halvings)
}

/// Margin `z_y − max_{j≠y} z_j` (negative once another class leads).
fn margin(z: &[f32], y: usize) -> f64 {
    let other = z
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != y)
        .map(|(_, &v)| f64::from(v))
        .fold(f64::NEG_INFINITY, f64::max);
    f64::from(z[y]) - other
}

/// L∞ Square Attack on `n` samples `u` (`n × d`, measured space), moving each away from
/// `labels[i]`, drawing from `seeds[i]`. The point found per image, or `None`.
pub fn square_linf(
    model: &SpacedModel,
    u: &[f32],
    labels: &[usize],
    seeds: &[u64],
    opts: &SquareOptions,
) -> Result<Vec<Option<Found>>> {
    let (d, k) = (model.dim(), model.classes());
    let n = labels.len();
    let g = opts.grid;
    if u.len() != n * d || seeds.len() != n || g.len() != d {
        return Err(Error::Config(format!(
            "square: expected {n}×{d} values on a {}×{}×{} grid, got {}",
            g.channels,
            g.height,
            g.width,
            u.len()
        )));
    }
    let mut found: Vec<Option<Found>> = vec![None; n];
    if n == 0 || opts.queries == 0 {
        return Ok(found);
    }
    let eps = opts.eps;
    let clip = |v: f32| opts.bounds.map_or(v, |(lo, hi)| v.clamp(lo, hi));
    let mut rngs: Vec<ChaCha8Rng> = seeds
        .iter()
        .map(|&s| ChaCha8Rng::seed_from_u64(s))
        .collect();
    // Start: vertical stripes of ±ε, one sign per channel and column.
    let mut best: Vec<f32> = Vec::with_capacity(n * d);
    for (i, rng) in rngs.iter_mut().enumerate() {
        let xi = &u[i * d..(i + 1) * d];
        let mut p = xi.to_vec();
        for c in 0..g.channels {
            for col in 0..g.width {
                let s = if rng.random_bool(0.5) { eps } else { -eps };
                for r in 0..g.height {
                    let t = g.at(c, r, col);
                    p[t] = clip(xi[t] + s);
                }
            }
        }
        best.extend_from_slice(&p);
    }
    let logits = model.logits(&best, n)?;
    let mut loss: Vec<f64> = (0..n)
        .map(|i| margin(&logits[i * k..(i + 1) * k], labels[i]))
        .collect();
    let mut active = Vec::with_capacity(n);
    for i in 0..n {
        let c = argmax(&logits[i * k..(i + 1) * k]);
        if c != labels[i] {
            found[i] = Some(Found {
                point: best[i * d..(i + 1) * d].to_vec(),
                class: c,
            });
        } else {
            active.push(i);
        }
    }
    let side_max = g.height.min(g.width).max(1);
    for it in 1..opts.queries {
        if active.is_empty() {
            break;
        }
        let p = p_schedule(opts.p_init, it, opts.queries);
        let side = ((p * (g.height * g.width) as f64).sqrt().round() as usize).clamp(1, side_max);
        let mut xa = Vec::with_capacity(active.len() * d);
        for &i in &active {
            let xi = &u[i * d..(i + 1) * d];
            let bi = &best[i * d..(i + 1) * d];
            let rng = &mut rngs[i];
            let r0 = rng.random_range(0..=g.height - side);
            let c0 = rng.random_range(0..=g.width - side);
            let mut cand = bi.to_vec();
            // Signs per channel; drawn again (a few times) while the window would not change.
            for _ in 0..16 {
                let signs: Vec<f32> = (0..g.channels)
                    .map(|_| if rng.random_bool(0.5) { eps } else { -eps })
                    .collect();
                let mut changed = false;
                for (c, &s) in signs.iter().enumerate() {
                    for r in r0..r0 + side {
                        for col in c0..c0 + side {
                            let t = g.at(c, r, col);
                            let v = clip(xi[t] + s);
                            changed |= (v - bi[t]).abs() >= 1e-7;
                            cand[t] = v;
                        }
                    }
                }
                if changed {
                    break;
                }
            }
            xa.extend_from_slice(&cand);
        }
        let logits = model.logits(&xa, active.len())?;
        let mut still = Vec::with_capacity(active.len());
        for (a, &i) in active.iter().enumerate() {
            let z = &logits[a * k..(a + 1) * k];
            let cand = &xa[a * d..(a + 1) * d];
            let c = argmax(z);
            if c != labels[i] {
                found[i] = Some(Found {
                    point: cand.to_vec(),
                    class: c,
                });
                continue;
            }
            let m = margin(z, labels[i]);
            if m < loss[i] {
                loss[i] = m;
                best[i * d..(i + 1) * d].copy_from_slice(cand);
            }
            still.push(i);
        }
        active = still;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p_halves_on_the_papers_schedule() {
        assert_eq!(p_schedule(0.8, 0, 10_000), 0.8);
        assert_eq!(p_schedule(0.8, 10, 10_000), 0.8);
        assert_eq!(p_schedule(0.8, 11, 10_000), 0.4);
        assert_eq!(p_schedule(0.8, 9000, 10_000), 0.8 / 512.0);
        // Rescaled: query 100 of 1000 is query 1000 of 10 000.
        assert_eq!(p_schedule(0.8, 100, 1000), 0.8 / 16.0);
    }

    #[test]
    fn grid_indices_are_planar_or_interleaved() {
        let planar = Grid {
            channels: 3,
            height: 2,
            width: 4,
            planar: true,
        };
        assert_eq!(planar.at(1, 1, 2), 8 + 4 + 2);
        let hwc = Grid {
            planar: false,
            ..planar
        };
        assert_eq!(hwc.at(1, 1, 2), (4 + 2) * 3 + 1);
    }
}
