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
    (c, h, w): (usize, usize, usize),
    params: &ParamBox,
    sampling: Sampling,
) -> Result<(Vec<f32>, Vec<f32>)> {
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
    let (a, b) = (lo[ParamBox::THETA], hi[ParamBox::THETA]);
    let (cos, sin) = (trig_range(a, b, false), trig_range(a, b, true));
    let k = (1.0 + lo[ParamBox::SCALE], 1.0 + hi[ParamBox::SCALE]);
    let (tx, ty) = (
        (lo[ParamBox::TX], hi[ParamBox::TX]),
        (lo[ParamBox::TY], hi[ParamBox::TY]),
    );
    // The largest scale factor, for the slack.
    let reach = k.1;
    let shift = [tx.0, tx.1, ty.0, ty.1]
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let [cx, cy] = crate::homography::centre(h, w);
    let scale = |(lo, hi): (f64, f64), v: f64| {
        if v >= 0.0 {
            (lo * v, hi * v)
        } else {
            (hi * v, lo * v)
        }
    };
    let (mut out_lo, mut out_hi) = (vec![0.0f32; c * h * w], vec![0.0f32; c * h * w]);
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
            // The interpolated value is bilinear inside each cell, so over the parts of the
            // box in each cell it takes its extremes at their corners: the box's corners and
            // where the cell lines cross its edges.
            let xs = breakpoints(qx0, qx1);
            let ys = breakpoints(qy0, qy1);
            for ch in 0..c {
                let plane = &image[ch * h * w..(ch + 1) * h * w];
                let (mut l, mut u) = (f64::INFINITY, f64::NEG_INFINITY);
                for &py in &ys {
                    for &px in &xs {
                        let v: f64 = sampling
                            .stencil([px, py], h, w)
                            .taps()
                            .iter()
                            .map(|t| t.weight * f64::from(plane[t.y * w + t.x]))
                            .sum();
                        l = l.min(v);
                        u = u.max(v);
                    }
                }
                // Rounded outwards, with a hair for the rounding of the weights.
                let pad = 1e-6 * (1.0 + l.abs().max(u.abs()));
                out_lo[(ch * h + y) * w + x] = ((l - pad) as f32).next_down();
                out_hi[(ch * h + y) * w + x] = ((u + pad) as f32).next_up();
            }
        }
    }
    Ok((out_lo, out_hi))
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
        let widest = lo
            .iter()
            .zip(&hi)
            .map(|(l, u)| u - l)
            .fold(0.0f32, f32::max);
        assert!(widest < 1e-4, "widest pixel interval {widest}");
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
                let (lo, hi) = warp_bounds(&image, dims, pbox, sampling).unwrap();
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
                    }
                }
            }
        }
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
        let widest = lo
            .iter()
            .zip(&hi)
            .map(|(l, u)| u - l)
            .fold(0.0f32, f32::max);
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
