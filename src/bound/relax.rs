//! Elementwise nonlinearities on an interval `[l, u]`: their exact range (for interval bounds)
//! and a linear relaxation `a_lo·x + b_lo ≤ f(x) ≤ a_hi·x + b_hi` (for linear bounds).
//!
//! ReLU and LeakyReLU take the CROWN relaxation: the chord above, and below the line through
//! the origin of slope 1 or 0 (α), whichever leaves the smaller area. The other piecewise
//! linear functions (Clip, HardSigmoid) and the S-shaped ones (Sigmoid, Tanh) take the chord's
//! slope, shifted up and down to touch `f` at its extreme points (breakpoints, or where
//! `f' = slope`). HardSwish takes constant bounds (its range).

use super::graph::Act;

/// A linear relaxation on an interval: `lo.0·x + lo.1 ≤ f(x) ≤ hi.0·x + hi.1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Relaxation {
    /// Lower line (slope, intercept).
    pub lo: (f32, f32),
    /// Upper line (slope, intercept).
    pub hi: (f32, f32),
}

/// `f(x)`.
pub fn apply(act: Act, x: f32) -> f32 {
    match act {
        Act::Relu => x.max(0.0),
        Act::LeakyRelu(a) => {
            if x >= 0.0 {
                x
            } else {
                a * x
            }
        }
        Act::Clip(lo, hi) => x.max(lo).min(hi),
        Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Act::Tanh => x.tanh(),
        Act::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
        Act::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
    }
}

/// The range of `f` over `[l, u]`.
pub fn range(act: Act, l: f32, u: f32) -> (f32, f32) {
    match act {
        Act::HardSwish => {
            // Decreasing below -1.5, increasing above.
            let m = (-1.5f32).clamp(l, u);
            let (fl, fu, fm) = (apply(act, l), apply(act, u), apply(act, m));
            (fl.min(fu).min(fm), fl.max(fu))
        }
        Act::LeakyRelu(a) if a < 0.0 => {
            let m = 0.0f32.clamp(l, u);
            let (fl, fu, fm) = (apply(act, l), apply(act, u), apply(act, m));
            (fl.min(fu).min(fm), fl.max(fu).max(fm))
        }
        // Monotone non-decreasing.
        _ => (apply(act, l), apply(act, u)),
    }
}

/// Whether the relaxation of `f` on `[l, u]` depends on where `l` and `u` lie (a kink or a
/// curved part inside): elsewhere `f` is affine on the interval and the relaxation exact.
pub fn kink_inside(act: Act, l: f32, u: f32) -> bool {
    let across = |p: f32| l < p && p < u;
    match act {
        Act::Relu | Act::LeakyRelu(_) => across(0.0),
        Act::Clip(a, b) => across(a) || across(b),
        Act::HardSigmoid(a, b) if a != 0.0 => across(-b / a) || across((1.0 - b) / a),
        Act::HardSigmoid(..) => false,
        _ => true,
    }
}

/// Whether `f` is constant on `[l, u]` (ReLU off, Clip or HardSigmoid saturated): tighter
/// bounds of such an input change nothing downstream.
pub fn constant_on(act: Act, l: f32, u: f32) -> bool {
    match act {
        Act::Relu => u <= 0.0,
        Act::Clip(a, b) => u <= a || l >= b,
        Act::HardSigmoid(a, b) => {
            let (p, q) = (a * l + b, a * u + b);
            p.max(q) <= 0.0 || p.min(q) >= 1.0
        }
        _ => false,
    }
}

/// The relaxation of `f` over `[l, u]`.
pub fn relax(act: Act, l: f32, u: f32) -> Relaxation {
    let (fl, fu) = (apply(act, l), apply(act, u));
    if u - l <= f32::EPSILON * (l.abs() + u.abs()).max(1e-30) {
        let (a, b) = range(act, l, u);
        return Relaxation {
            lo: (0.0, a),
            hi: (0.0, b),
        };
    }
    let slope = (fu - fl) / (u - l);
    match act {
        Act::Relu | Act::LeakyRelu(_) => {
            let alpha = match act {
                Act::LeakyRelu(a) => a,
                _ => 0.0,
            };
            if l >= 0.0 {
                return Relaxation {
                    lo: (1.0, 0.0),
                    hi: (1.0, 0.0),
                };
            }
            if u <= 0.0 {
                return Relaxation {
                    lo: (alpha, 0.0),
                    hi: (alpha, 0.0),
                };
            }
            if alpha > 1.0 {
                return chord(act, l, u, &[0.0]);
            }
            let lo_slope = if u >= -l { 1.0 } else { alpha };
            Relaxation {
                lo: (lo_slope, 0.0),
                hi: (slope, fl - slope * l),
            }
        }
        Act::Clip(a, b) => chord(act, l, u, &[a, b]),
        Act::HardSigmoid(a, b) if a != 0.0 => chord(act, l, u, &[-b / a, (1.0 - b) / a]),
        Act::HardSigmoid(..) => chord(act, l, u, &[]),
        Act::Sigmoid => {
            // f' = σ(1-σ) = slope at σ = (1 ± √(1-4·slope))/2.
            let disc = (1.0 - 4.0 * slope).max(0.0).sqrt();
            let pts: Vec<f32> = [(1.0 - disc) / 2.0, (1.0 + disc) / 2.0]
                .iter()
                .filter(|&&s| s > 0.0 && s < 1.0)
                .map(|&s| (s / (1.0 - s)).ln())
                .collect();
            chord(act, l, u, &pts)
        }
        Act::Tanh => {
            // f' = 1 - tanh² = slope at tanh = ±√(1-slope).
            let t = (1.0 - slope).max(0.0).sqrt().min(1.0 - 1e-7);
            chord(act, l, u, &[t.atanh(), -t.atanh()])
        }
        Act::HardSwish => {
            let (a, b) = range(act, l, u);
            Relaxation {
                lo: (0.0, a),
                hi: (0.0, b),
            }
        }
    }
}

/// The chord's slope, with the intercepts that make the lines touch `f` at the extreme of
/// `f(x) − slope·x` over `l`, `u` and the points `pts` inside `[l, u]`.
fn chord(act: Act, l: f32, u: f32, pts: &[f32]) -> Relaxation {
    let slope = (apply(act, u) - apply(act, l)) / (u - l);
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &x in [l, u].iter().chain(pts.iter().filter(|&&p| p > l && p < u)) {
        let g = apply(act, x) - slope * x;
        lo = lo.min(g);
        hi = hi.max(g);
    }
    Relaxation {
        lo: (slope, lo),
        hi: (slope, hi),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every relaxation holds at a dense grid of points in its interval, and every range
    /// contains the values there (with a rounding margin).
    #[test]
    fn relaxations_and_ranges_hold_on_a_grid() {
        let acts = [
            Act::Relu,
            Act::LeakyRelu(0.1),
            Act::Clip(0.0, 6.0),
            Act::Sigmoid,
            Act::Tanh,
            Act::HardSigmoid(0.2, 0.5),
            Act::HardSwish,
        ];
        let ends = [-9.0f32, -3.5, -1.0, -0.2, 0.0, 0.3, 1.0, 2.5, 5.0, 7.0];
        for act in acts {
            for &l in &ends {
                for &u in ends.iter().filter(|&&u| u > l) {
                    let r = relax(act, l, u);
                    let (a, b) = range(act, l, u);
                    for i in 0..=200 {
                        let x = l + (u - l) * i as f32 / 200.0;
                        let f = apply(act, x);
                        let tol = 1e-5 * (1.0 + x.abs());
                        assert!(
                            r.lo.0 * x + r.lo.1 <= f + tol,
                            "{act:?} [{l},{u}] lower at {x}"
                        );
                        assert!(
                            r.hi.0 * x + r.hi.1 >= f - tol,
                            "{act:?} [{l},{u}] upper at {x}"
                        );
                        assert!(
                            a <= f + tol && f <= b + tol,
                            "{act:?} [{l},{u}] range at {x}"
                        );
                    }
                }
            }
        }
    }
}
