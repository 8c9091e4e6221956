//! Interval bounds (IBP) propagated forwards: each node maps boxes `[lo, hi]` on its inputs to
//! a box on its output that contains every value the node can produce from them.

use super::conv;
use super::graph::{chw, Op, Src};
use super::linear::window_taps;
use super::relax::range;

/// A box: elementwise lower and upper bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// Lower bounds.
    pub lo: Vec<f32>,
    /// Upper bounds.
    pub hi: Vec<f32>,
}

impl Interval {
    /// Centre and radius in `f64` (exact for `f32` ends).
    fn mid_rad(&self) -> (Vec<f64>, Vec<f64>) {
        self.lo
            .iter()
            .zip(&self.hi)
            .map(|(&l, &h)| {
                let (l, h) = (f64::from(l), f64::from(h));
                (0.5 * (l + h), 0.5 * (h - l))
            })
            .unzip()
    }

    fn from_mid_rad(mid: &[f64], rad: &[f64]) -> Interval {
        Interval::from_f64(
            mid.iter().zip(rad).map(|(&m, &r)| m - r),
            mid.iter().zip(rad).map(|(&m, &r)| m + r),
        )
    }

    /// Bounds computed in `f64`, rounded outwards to `f32`.
    fn from_f64(lo: impl Iterator<Item = f64>, hi: impl Iterator<Item = f64>) -> Interval {
        Interval {
            lo: lo.map(|v| (v as f32).next_down()).collect(),
            hi: hi.map(|v| (v as f32).next_up()).collect(),
        }
    }
}

/// The output box of `op` from its inputs' boxes (`ins`, shapes `shapes_in`).
pub fn forward(
    op: &Op,
    ins: &[&Interval],
    shapes_in: &[&[usize]],
    shape_out: &[usize],
) -> Interval {
    let dims_in = chw(shapes_in[0]);
    let dims_out = chw(shape_out);
    let x = ins[0];
    match op {
        Op::Identity => x.clone(),
        Op::Linear { w, b } => {
            let (mid, rad) = x.mid_rad();
            let fi = mid.len();
            let (mut m, mut r) = (vec![0.0f64; b.len()], vec![0.0f64; b.len()]);
            for (o, &bias) in b.iter().enumerate() {
                let row = &w[o * fi..(o + 1) * fi];
                m[o] = f64::from(bias)
                    + row
                        .iter()
                        .zip(&mid)
                        .map(|(&w, &x)| f64::from(w) * x)
                        .sum::<f64>();
                r[o] = row
                    .iter()
                    .zip(&rad)
                    .map(|(&w, &x)| f64::from(w.abs()) * x)
                    .sum::<f64>();
            }
            Interval::from_mid_rad(&m, &r)
        }
        Op::Conv { w, b, groups, win } => {
            let (mid, rad) = x.mid_rad();
            let w64: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
            let mut m = conv::forward(&mid, dims_in, &w64, *groups, win, dims_out);
            let aw: Vec<f64> = w64.iter().map(|v| v.abs()).collect();
            let r = conv::forward(&rad, dims_in, &aw, *groups, win, dims_out);
            let p = dims_out.1 * dims_out.2;
            for (c, &bias) in b.iter().enumerate() {
                m[c * p..(c + 1) * p]
                    .iter_mut()
                    .for_each(|v| *v += f64::from(bias));
            }
            Interval::from_mid_rad(&m, &r)
        }
        Op::Affine { a, c } => {
            let at = |i: usize, v: f32| f64::from(a[i]) * f64::from(v) + f64::from(c[i]);
            let ends = |i: usize| (at(i, x.lo[i]), at(i, x.hi[i]));
            Interval::from_f64(
                (0..a.len()).map(|i| ends(i).0.min(ends(i).1)),
                (0..a.len()).map(|i| ends(i).0.max(ends(i).1)),
            )
        }
        Op::Sum(s) => {
            let (y, s) = (ins[1], f64::from(*s));
            let (ylo, yhi) = if s >= 0.0 {
                (&y.lo, &y.hi)
            } else {
                (&y.hi, &y.lo)
            };
            Interval::from_f64(
                x.lo.iter()
                    .zip(ylo)
                    .map(|(&a, &b)| f64::from(a) + s * f64::from(b)),
                x.hi.iter()
                    .zip(yhi)
                    .map(|(&a, &b)| f64::from(a) + s * f64::from(b)),
            )
        }
        Op::Act(act) => {
            let (lo, hi) =
                x.lo.iter()
                    .zip(&x.hi)
                    .map(|(&l, &h)| range(*act, l, h))
                    .unzip();
            Interval { lo, hi }
        }
        Op::MaxPool(win) | Op::AvgPool(win, _) => {
            let (c, hi_, wi) = dims_in;
            let (_, ho, wo) = dims_out;
            let n = c * ho * wo;
            let (mut lo, mut hi) = (vec![0.0; n], vec![0.0; n]);
            for oy in 0..ho {
                for ox in 0..wo {
                    let taps = window_taps(win, oy, ox, hi_, wi);
                    for ch in 0..c {
                        let at = |v: &[f32]| -> Vec<f32> {
                            taps.iter()
                                .map(|&(y, x)| v[(ch * hi_ + y) * wi + x])
                                .collect()
                        };
                        let o = (ch * ho + oy) * wo + ox;
                        match op {
                            Op::MaxPool(_) => {
                                lo[o] = at(&x.lo).into_iter().fold(f32::NEG_INFINITY, f32::max);
                                hi[o] = at(&x.hi).into_iter().fold(f32::NEG_INFINITY, f32::max);
                            }
                            Op::AvgPool(_, include_pad) => {
                                let count = if *include_pad {
                                    win.k.0 * win.k.1
                                } else {
                                    taps.len()
                                } as f32;
                                lo[o] = at(&x.lo).iter().sum::<f32>() / count;
                                hi[o] = at(&x.hi).iter().sum::<f32>() / count;
                            }
                            _ => unreachable!(),
                        }
                    }
                }
            }
            Interval { lo, hi }
        }
        Op::GlobalAvgPool => {
            let (c, h, w) = dims_in;
            let mean = |v: &[f32], ch: usize| {
                v[ch * h * w..(ch + 1) * h * w]
                    .iter()
                    .map(|&x| f64::from(x))
                    .sum::<f64>() as f32
                    / (h * w) as f32
            };
            Interval {
                lo: (0..c).map(|ch| mean(&x.lo, ch)).collect(),
                hi: (0..c).map(|ch| mean(&x.hi, ch)).collect(),
            }
        }
        Op::Gather(map) => {
            let pick = |upper: bool, src: &Src| match *src {
                Src::Input(s, i) => {
                    let b = ins[s as usize];
                    if upper {
                        b.hi[i as usize]
                    } else {
                        b.lo[i as usize]
                    }
                }
                Src::Const(c) => c,
            };
            Interval {
                lo: map.iter().map(|s| pick(false, s)).collect(),
                hi: map.iter().map(|s| pick(true, s)).collect(),
            }
        }
    }
}
