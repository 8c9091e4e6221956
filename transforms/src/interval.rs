//! Pixel bounds of a warped image over a box of transform parameters: for every output
//! pixel, an interval that holds its value under every transform of the box. Certifiers
//! propagate these boxes through a network.
//!
//! A [`ParamBox`] holds ranges of a rotation angle `θ`, a shift `(tx, ty)` and a relative
//! scale `s`. The sample point of output pixel `p` is
//! `q = (1 + s)·R(θ)·(p − c) + t + c`, the backward warp by the matrix of
//! [`similarity_matrix`] ([`crate::homography`]'s convention; `s = 0`, `t = 0` is a pure
//! rotation, `θ = 0`, `s = 0` a pure translation). Over the box, `cos θ` and `sin θ` lie in
//! intervals, so `R(θ)(p − c)` lies in a box; times the interval of `1 + s` and plus the
//! intervals of `t` it still does (interval arithmetic, exact for each family alone). Bilinear
//! interpolation is bilinear in `q` inside each cell, so over the box of `q` it takes its
//! extremes at the corners of the box's parts in each cell: the value lies between the
//! smallest and largest of those samples.

use nalgebra::Matrix3;

use crate::error::{Error, Result};
use crate::sampling::{Interpolation, Sampling};

/// A box of transform parameters: `θ` (radians), `tx`, `ty` (pixels) and the relative scale
/// `s` (the scale factor is `1 + s`), each a closed interval `[lo[i], hi[i]]` in the order of
/// [`ParamBox::THETA`], [`ParamBox::TX`], [`ParamBox::TY`], [`ParamBox::SCALE`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamBox {
    /// Lower ends.
    pub lo: [f64; 4],
    /// Upper ends.
    pub hi: [f64; 4],
}

impl ParamBox {
    /// Index of the rotation angle, radians.
    pub const THETA: usize = 0;
    /// Index of the column shift of the sample point, pixels.
    pub const TX: usize = 1;
    /// Index of the row shift of the sample point, pixels.
    pub const TY: usize = 2;
    /// Index of the relative scale `s` of the sample point (factor `1 + s`).
    pub const SCALE: usize = 3;

    /// The identity: every parameter `0`.
    pub fn identity() -> Self {
        ParamBox {
            lo: [0.0; 4],
            hi: [0.0; 4],
        }
    }

    /// Rotations by `θ ∈ [a, b]` (radians).
    pub fn rotation(a: f64, b: f64) -> Self {
        Self::identity().with(Self::THETA, a, b)
    }

    /// This box with parameter `i` in `[a, b]`.
    pub fn with(mut self, i: usize, a: f64, b: f64) -> Self {
        self.lo[i] = a;
        self.hi[i] = b;
        self
    }

    /// The two halves of the box cut at the middle of parameter `i`.
    pub fn halves(&self, i: usize) -> (Self, Self) {
        let mid = 0.5 * (self.lo[i] + self.hi[i]);
        (self.with(i, self.lo[i], mid), self.with(i, mid, self.hi[i]))
    }

    /// Checks that every range is finite and ordered and that the scale factor stays
    /// positive.
    pub fn check(&self) -> Result<()> {
        let ordered = (0..4)
            .all(|i| self.lo[i].is_finite() && self.hi[i].is_finite() && self.lo[i] <= self.hi[i]);
        if ordered && self.lo[Self::SCALE] > -1.0 {
            return Ok(());
        }
        Err(Error::Invalid {
            what: "parameter box",
            value: format!("{self:?}"),
            expected: "finite ranges lo ≤ hi and a scale s > −1",
        })
    }
}

/// The warp matrix `[[k cos θ, −k sin θ, tx], [k sin θ, k cos θ, ty], [0, 0, 1]]` with
/// `k = 1 + s` (centred coordinates, output → input, as [`crate::MatrixWarp`] takes it): the
/// sample point is rotated by `θ`, scaled by `1 + s` about the centre, then shifted by `t`.
/// With `s = 0` this is the rotation–translation matrix of the `grid` attack.
pub fn similarity_matrix(theta: f64, tx: f64, ty: f64, s: f64) -> Matrix3<f64> {
    let (sin, cos) = theta.sin_cos();
    let k = 1.0 + s;
    Matrix3::new(k * cos, -k * sin, tx, k * sin, k * cos, ty, 0.0, 0.0, 1.0)
}

/// `a`, `b` and the integers between them: where a box edge crosses the cell lines.
fn breakpoints(a: f64, b: f64) -> Vec<f64> {
    let mut v = vec![a];
    let mut k = a.floor() + 1.0;
    while k < b {
        v.push(k);
        k += 1.0;
    }
    v.push(b);
    v
}

/// `[min, max]` of `cos` (or `sin` when `sine`) over `[a, b]` (radians, `a ≤ b`).
fn trig_range(a: f64, b: f64, sine: bool) -> (f64, f64) {
    let f = |t: f64| if sine { t.sin() } else { t.cos() };
    let (mut lo, mut hi) = (f(a).min(f(b)), f(a).max(f(b)));
    // Extremes inside: cos at kπ, sin at π/2 + kπ.
    let offset = if sine {
        std::f64::consts::FRAC_PI_2
    } else {
        0.0
    };
    let first = ((a - offset) / std::f64::consts::PI).ceil() as i64;
    let last = ((b - offset) / std::f64::consts::PI).floor() as i64;
    for k in first..=last {
        let v = if k % 2 == 0 { 1.0 } else { -1.0 };
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo, hi)
}

/// Per pixel of a planar `(c, h, w)` image, the range of its value when the image is rotated
/// by any `θ ∈ [a, b]` (radians) about its centre and sampled with `sampling` (bilinear):
/// [`warp_bounds`] over [`ParamBox::rotation`]. Returns `(lo, hi)`, each `c·h·w`.
pub fn rotation_bounds(
    image: &[f32],
    dims: (usize, usize, usize),
    (a, b): (f64, f64),
    sampling: Sampling,
) -> Result<(Vec<f32>, Vec<f32>)> {
    warp_bounds(image, dims, &ParamBox::rotation(a, b), sampling)
}

/// `k·[lo, hi]` for `k ∈ [k0, k1]`, `k0 > 0`.
fn times_positive((lo, hi): (f64, f64), (k0, k1): (f64, f64)) -> (f64, f64) {
    (
        if lo >= 0.0 { k0 * lo } else { k1 * lo },
        if hi >= 0.0 { k1 * hi } else { k0 * hi },
    )
}

/// Per pixel of a planar `(c, h, w)` image, the range of its value when the image is warped by
/// any transform of the box `params` ([`similarity_matrix`] of any of its points) and
/// sampled with `sampling` (bilinear). Returns `(lo, hi)`, each `c·h·w`.
pub fn warp_bounds(
    image: &[f32],
    dims: (usize, usize, usize),
    params: &ParamBox,
    sampling: Sampling,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let b = warp_linear_bounds(image, dims, params, sampling)?;
    Ok((b.lo, b.hi))
}

/// Bounds of the pixels of a warped image over a [`ParamBox`], as intervals and as linear
/// functions of the parameters: write a transform of the box as `θ = m + r ⊙ v` with `m` the
/// box's centre, `r` its half-widths and `v ∈ [−1, 1]⁴`; then pixel `i` of the warped image
/// lies in `[lo[i], hi[i]]` and in `center[i] + Σⱼ gens[j][i]·vⱼ + [err_lo[i], err_hi[i]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearBounds {
    /// Lower ends of the pixel intervals (rounded outwards to `f32`).
    pub lo: Vec<f32>,
    /// Upper ends of the pixel intervals.
    pub hi: Vec<f32>,
    /// The pixels at the box's centre.
    pub center: Vec<f64>,
    /// Per parameter ([`ParamBox`]'s order), the coefficient of `vⱼ` of each pixel (zero for a
    /// parameter whose range is a point).
    pub gens: [Vec<f64>; 4],
    /// Lower ends of the residual of the linear function.
    pub err_lo: Vec<f64>,
    /// Upper ends of the residual.
    pub err_hi: Vec<f64>,
}

/// The value at `q` of channel `plane` sampled with `sampling`.
fn sample(sampling: Sampling, plane: &[f32], (h, w): (usize, usize), q: [f64; 2]) -> f64 {
    sampling
        .stencil(q, h, w)
        .taps()
        .iter()
        .map(|t| t.weight * f64::from(plane[t.y * w + t.x]))
        .sum()
}

/// [`LinearBounds`] of the image warped over the box `params` (bilinear `sampling`).
///
/// Per pixel, the source point is `q = q(m) + J·(θ − m) + ρ` with `J` the Jacobian at the
/// centre and `|ρ|` at most the Taylor remainder of `cos`, `sin` and their product with the
/// scale; `q` also lies in the box of interval arithmetic. With a slope `g` (the secants of
/// the interpolated image across that box), `e(q) = v(q) − v(q(m)) − g·(q − q(m))` is
/// bilinear inside each cell, so its range over the box comes from the same corner samples as
/// the range of `v`; then `v = v(q(m)) + g·J·(θ − m) + g·ρ + e`.
pub fn warp_linear_bounds(
    image: &[f32],
    (c, h, w): (usize, usize, usize),
    params: &ParamBox,
    sampling: Sampling,
) -> Result<LinearBounds> {
    if sampling.interpolation != Interpolation::Bilinear {
        return Err(Error::Invalid {
            what: "interpolation",
            value: sampling.interpolation.name().into(),
            expected: "bilinear for pixel bounds",
        });
    }
    if image.len() != c * h * w {
        return Err(Error::Invalid {
            what: "warp bounds",
            value: format!("{} values for ({c}, {h}, {w})", image.len()),
            expected: "c·h·w values",
        });
    }
    params.check()?;
    let (lo, hi) = (params.lo, params.hi);
    let mid: [f64; 4] = std::array::from_fn(|i| 0.5 * (lo[i] + hi[i]));
    let half: [f64; 4] = std::array::from_fn(|i| 0.5 * (hi[i] - lo[i]));
    let (a, b) = (lo[ParamBox::THETA], hi[ParamBox::THETA]);
    let (cos, sin) = (trig_range(a, b, false), trig_range(a, b, true));
    let k = (1.0 + lo[ParamBox::SCALE], 1.0 + hi[ParamBox::SCALE]);
    let (tx, ty) = (
        (lo[ParamBox::TX], hi[ParamBox::TX]),
        (lo[ParamBox::TY], hi[ParamBox::TY]),
    );
    // The largest scale factor and shift, for the slack.
    let reach = k.1;
    let shift = [tx.0, tx.1, ty.0, ty.1]
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let (sin_m, cos_m) = mid[ParamBox::THETA].sin_cos();
    let k_m = 1.0 + mid[ParamBox::SCALE];
    let (h_t, h_s) = (half[ParamBox::THETA], half[ParamBox::SCALE]);
    let [cx, cy] = crate::homography::centre(h, w);
    let scale = |(lo, hi): (f64, f64), v: f64| {
        if v >= 0.0 {
            (lo * v, hi * v)
        } else {
            (hi * v, lo * v)
        }
    };
    let n = c * h * w;
    let mut out = LinearBounds {
        lo: vec![0.0; n],
        hi: vec![0.0; n],
        center: vec![0.0; n],
        gens: std::array::from_fn(|_| vec![0.0; n]),
        err_lo: vec![0.0; n],
        err_hi: vec![0.0; n],
    };
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            // x' = k (x cos θ − y sin θ) + tx, y' = k (x sin θ + y cos θ) + ty (centred).
            let (a1, b1) = (scale(cos, dx), scale(sin, -dy));
            let (a2, b2) = (scale(sin, dx), scale(cos, dy));
            let rx = times_positive((a1.0 + b1.0, a1.1 + b1.1), k);
            let ry = times_positive((a2.0 + b2.0, a2.1 + b2.1), k);
            // A hair of slack for the rounding of the sample points.
            let slack = 1e-9 * (1.0 + reach * dx.abs() + reach * dy.abs() + shift);
            let (qx0, qx1) = (rx.0 + tx.0 + cx - slack, rx.1 + tx.1 + cx + slack);
            let (qy0, qy1) = (ry.0 + ty.0 + cy - slack, ry.1 + ty.1 + cy + slack);
            // The sample point at the centre, its Jacobian and the remainder's bound.
            let (fx, fy) = (cos_m * dx - sin_m * dy, sin_m * dx + cos_m * dy);
            let q_m = [
                k_m * fx + mid[ParamBox::TX] + cx,
                k_m * fy + mid[ParamBox::TY] + cy,
            ];
            let jac = [[-k_m * fy, 1.0, 0.0, fx], [k_m * fx, 0.0, 1.0, fy]];
            let norm = dx.hypot(dy);
            let rho = norm * (0.5 * k_m * h_t * h_t + h_s * h_t + 0.5 * h_s * h_t * h_t) + slack;
            // The interpolated value is bilinear inside each cell, so over the parts of the
            // box in each cell it takes its extremes at their corners: the box's corners and
            // where the cell lines cross its edges.
            let xs = breakpoints(qx0, qx1);
            let ys = breakpoints(qy0, qy1);
            for ch in 0..c {
                let plane = &image[ch * h * w..(ch + 1) * h * w];
                let at = |q: [f64; 2]| sample(sampling, plane, (h, w), q);
                let v_m = at(q_m);
                let secant = |q0: [f64; 2], q1: [f64; 2], width: f64| {
                    if width > 1e-12 {
                        (at(q1) - at(q0)) / width
                    } else {
                        0.0
                    }
                };
                let g = [
                    secant([qx0, q_m[1]], [qx1, q_m[1]], qx1 - qx0),
                    secant([q_m[0], qy0], [q_m[0], qy1], qy1 - qy0),
                ];
                let (mut l, mut u) = (f64::INFINITY, f64::NEG_INFINITY);
                let (mut el, mut eu) = (f64::INFINITY, f64::NEG_INFINITY);
                for &py in &ys {
                    for &px in &xs {
                        let v = at([px, py]);
                        l = l.min(v);
                        u = u.max(v);
                        let e = v - v_m - g[0] * (px - q_m[0]) - g[1] * (py - q_m[1]);
                        el = el.min(e);
                        eu = eu.max(e);
                    }
                }
                let i = (ch * h + y) * w + x;
                // Rounded outwards, with a hair for the rounding of the weights.
                let pad = 1e-6 * (1.0 + l.abs().max(u.abs()));
                out.lo[i] = ((l - pad) as f32).next_down();
                out.hi[i] = ((u + pad) as f32).next_up();
                out.center[i] = v_m;
                for (j, gen) in out.gens.iter_mut().enumerate() {
                    gen[i] = (g[0] * jac[0][j] + g[1] * jac[1][j]) * half[j];
                }
                let spill = (g[0].abs() + g[1].abs()) * rho + pad;
                out.err_lo[i] = el - spill;
                out.err_hi[i] = eu + spill;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::homography::MatrixWarp;
    use crate::layout::{Batch, ImageLayout, ImageShape};
    use crate::warp::Warp;
    use crate::TransformGroup;

    /// Every rotation of a 0.002° scan of the range warps the image inside the bounds.
    #[test]
    fn rotated_images_stay_inside_the_bounds() {
        let (c, h, w) = (2, 9, 11);
        let image: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 37 % 101) as f32 / 100.0).sin())
            .collect();
        for border in ["zero", "replicate", "reflect"] {
            let sampling = Sampling::new(Interpolation::Bilinear, border.parse().unwrap());
            for (a, b) in [(-0.05f64, 0.05), (0.3, 0.35), (-3.2, -3.0)] {
                let (lo, hi) = rotation_bounds(&image, (c, h, w), (a, b), sampling).unwrap();
                for s in 0..=50 {
                    let t = a + (b - a) * s as f64 / 50.0;
                    let m = TransformGroup::Rotation.exp(&[t]).unwrap();
                    let batch =
                        Batch::new(&image, ImageShape::new(1, c, h, w), ImageLayout::Nchw).unwrap();
                    let out = MatrixWarp::uniform(m).apply(&batch, sampling).unwrap();
                    for (i, &v) in out.iter().enumerate() {
                        assert!(
                            lo[i] - 1e-6 <= v && v <= hi[i] + 1e-6,
                            "{border} θ {t}: pixel {i} = {v} outside [{}, {}]",
                            lo[i],
                            hi[i]
                        );
                    }
                }
            }
        }
    }

    /// The bounds close on the warped image as the range shrinks to one angle.
    #[test]
    fn bounds_shrink_with_the_range() {
        let (c, h, w) = (1, 9, 11);
        let image: Vec<f32> = (0..h * w)
            .map(|i| ((i * 37 % 101) as f32 / 100.0).sin())
            .collect();
        let sampling = Sampling::new(Interpolation::Bilinear, "zero".parse().unwrap());
        let (lo, hi) = rotation_bounds(&image, (c, h, w), (0.3, 0.3 + 1e-7), sampling).unwrap();
        let widest = widest_interval(&lo, &hi);
        assert!(widest < 1e-4, "widest pixel interval {widest}");
    }

    /// The widest of the pixel intervals `[lo, hi]`.
    fn widest_interval(lo: &[f32], hi: &[f32]) -> f32 {
        lo.iter().zip(hi).map(|(l, u)| u - l).fold(0.0f32, f32::max)
    }

    /// A test image of `(c, h, w)`: smooth, not symmetric, signed.
    fn test_image((c, h, w): (usize, usize, usize)) -> Vec<f32> {
        (0..c * h * w)
            .map(|i| ((i * 37 % 101) as f32 / 100.0).sin())
            .collect()
    }

    /// The warp by `θ`, shift `t` and scale factor `1 + s`, built independently of
    /// [`similarity_matrix`]: translation · scaling · the rotation group's exponential.
    fn oracle_matrix(p: [f64; 4]) -> nalgebra::Matrix3<f64> {
        let r = TransformGroup::Rotation.exp(&[p[0]]).unwrap();
        let k = 1.0 + p[3];
        let s = nalgebra::Matrix3::new(k, 0.0, 0.0, 0.0, k, 0.0, 0.0, 0.0, 1.0);
        let t = nalgebra::Matrix3::new(1.0, 0.0, p[1], 0.0, 1.0, p[2], 0.0, 0.0, 1.0);
        t * s * r
    }

    /// For each family (rotation, translation, scaling) and a combination of all four
    /// parameters, and each border: the image warped at the box's 16 corners and at 1,500
    /// random points inside it lies inside the pixel bounds of the box.
    #[test]
    fn warped_images_stay_inside_the_parameter_box_bounds() {
        let dims = (2, 9, 11);
        let (c, h, w) = dims;
        let image = test_image(dims);
        let batch = Batch::new(&image, ImageShape::new(1, c, h, w), ImageLayout::Nchw).unwrap();
        let boxes = [
            ParamBox::rotation(-0.07, 0.04),
            ParamBox::identity()
                .with(ParamBox::TX, -1.3, 0.7)
                .with(ParamBox::TY, -0.4, 2.1),
            ParamBox::identity().with(ParamBox::SCALE, -0.1, 0.08),
            ParamBox {
                lo: [-0.05, -0.6, 0.2, -0.04],
                hi: [0.03, 0.5, 0.9, 0.06],
            },
        ];
        let mut rng = crate::testutil::Rng::new(7);
        for border in ["zero", "replicate", "reflect"] {
            let sampling = Sampling::new(Interpolation::Bilinear, border.parse().unwrap());
            for pbox in &boxes {
                let lin = warp_linear_bounds(&image, dims, pbox, sampling).unwrap();
                let (lo, hi) = (&lin.lo, &lin.hi);
                for s in 0..1516 {
                    let p: [f64; 4] = std::array::from_fn(|i| {
                        if s < 16 {
                            [pbox.lo[i], pbox.hi[i]][(s >> i) & 1]
                        } else {
                            rng.uniform(pbox.lo[i], pbox.hi[i])
                        }
                    });
                    let out = MatrixWarp::uniform(oracle_matrix(p))
                        .apply(&batch, sampling)
                        .unwrap();
                    for (i, &v) in out.iter().enumerate() {
                        assert!(
                            lo[i] <= v && v <= hi[i],
                            "{border} {pbox:?} at {p:?}: pixel {i} = {v} outside [{}, {}]",
                            lo[i],
                            hi[i]
                        );
                        // The linear bounds, up to the rounding of the warped pixel to f32.
                        let at: f64 = lin.center[i]
                            + (0..4)
                                .filter(|&j| pbox.hi[j] > pbox.lo[j])
                                .map(|j| {
                                    let m = 0.5 * (pbox.lo[j] + pbox.hi[j]);
                                    lin.gens[j][i] * (p[j] - m) / (0.5 * (pbox.hi[j] - pbox.lo[j]))
                                })
                                .sum::<f64>();
                        let (v, ulp) = (f64::from(v), 1e-7 * (1.0 + f64::from(v).abs()));
                        assert!(
                            at + lin.err_lo[i] - ulp <= v && v <= at + lin.err_hi[i] + ulp,
                            "{border} {pbox:?} at {p:?}: pixel {i} = {v} outside the linear bounds [{}, {}]",
                            at + lin.err_lo[i],
                            at + lin.err_hi[i]
                        );
                    }
                }
            }
        }
    }

    /// Over a box of shifts, the linear bounds' residuals are narrower than the pixel
    /// intervals: the pixels move with the shift, which the linear part carries.
    #[test]
    fn linear_bounds_are_tighter_than_intervals_for_shifts() {
        let dims = (1, 16, 16);
        let image: Vec<f32> = (0..256)
            .map(|i| {
                let (y, x) = ((i / 16) as f32, (i % 16) as f32);
                (-((x - 7.5).powi(2) + (y - 7.0).powi(2)) / 18.0).exp()
            })
            .collect();
        let sampling = Sampling::new(Interpolation::Bilinear, "zero".parse().unwrap());
        let pbox = ParamBox::identity()
            .with(ParamBox::TX, -0.2, 0.2)
            .with(ParamBox::TY, -0.2, 0.2);
        let lin = warp_linear_bounds(&image, dims, &pbox, sampling).unwrap();
        let box_width: f64 = lin
            .lo
            .iter()
            .zip(&lin.hi)
            .map(|(l, u)| f64::from(u - l))
            .sum();
        let residual: f64 = lin.err_lo.iter().zip(&lin.err_hi).map(|(l, u)| u - l).sum();
        assert!(
            residual < 0.5 * box_width,
            "residuals {residual} against intervals {box_width}"
        );
    }

    /// The matrix of a parameter point is the backward warp the group exponential gives for
    /// rotation and log-scale, and the rigid matrix for rotation and shift.
    #[test]
    fn similarity_matrix_follows_the_group_convention() {
        let m = similarity_matrix(0.3, 0.0, 0.0, 0.25);
        let e = TransformGroup::Similarity
            .exp(&[0.3, 0.0, 0.0, 1.25f64.ln()])
            .unwrap();
        assert!((m - e).norm() < 1e-12, "{m} vs {e}");
        let m = similarity_matrix(-0.2, 1.5, -0.5, 0.0);
        assert!((m - oracle_matrix([-0.2, 1.5, -0.5, 0.0])).norm() < 1e-12);
    }

    /// A single translation is bounded tightly; a box with its ends swapped, a non-finite end
    /// or a scale factor ≤ 0 is refused.
    #[test]
    fn point_boxes_are_tight_and_bad_boxes_refused() {
        let dims = (1, 9, 11);
        let image = test_image(dims);
        let sampling = Sampling::new(Interpolation::Bilinear, "zero".parse().unwrap());
        let at = ParamBox::identity()
            .with(ParamBox::TX, 0.3, 0.3)
            .with(ParamBox::TY, -1.2, -1.2);
        let (lo, hi) = warp_bounds(&image, dims, &at, sampling).unwrap();
        let widest = widest_interval(&lo, &hi);
        assert!(widest < 1e-4, "widest pixel interval {widest}");
        for bad in [
            ParamBox::rotation(0.2, 0.1),
            ParamBox::identity().with(ParamBox::TX, f64::NAN, 1.0),
            ParamBox::identity().with(ParamBox::SCALE, -1.0, 0.0),
        ] {
            assert!(
                warp_bounds(&image, dims, &bad, sampling).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn trig_ranges_include_the_extremes_inside() {
        assert_eq!(trig_range(-0.1, 0.1, false).1, 1.0);
        assert_eq!(trig_range(1.5, 1.7, true).1, 1.0);
        assert_eq!(trig_range(3.0, 3.3, false).0, -1.0);
        let (l, u) = trig_range(0.1, 0.2, true);
        assert!((l - 0.1f64.sin()).abs() < 1e-15 && (u - 0.2f64.sin()).abs() < 1e-15);
    }
}
