//! Pixel bounds of a warped image over a range of transform parameters: for every output
//! pixel, an interval that holds its value under every transform of the range. Certifiers
//! propagate these boxes through a network.
//!
//! The sample point of output pixel `p` under rotation `θ` is `q(θ) = R(θ)·(p − c) + c`
//! ([`crate::homography`]'s convention). Over `θ ∈ [a, b]`, `cos θ` and `sin θ` lie in
//! intervals, so `q` lies in a box (interval arithmetic). Bilinear interpolation is bilinear
//! in `q` inside each cell, so over the box it takes its extremes at the corners of the box's
//! parts in each cell: the value lies between the smallest and largest of those samples.

use crate::error::{Error, Result};
use crate::sampling::{Interpolation, Sampling};

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
/// by any `θ ∈ [a, b]` (radians) about its centre and sampled with `sampling` (bilinear).
/// Returns `(lo, hi)`, each `c·h·w`.
pub fn rotation_bounds(
    image: &[f32],
    (c, h, w): (usize, usize, usize),
    (a, b): (f64, f64),
    sampling: Sampling,
) -> Result<(Vec<f32>, Vec<f32>)> {
    if sampling.interpolation != Interpolation::Bilinear {
        return Err(Error::Invalid {
            what: "interpolation",
            value: sampling.interpolation.name().into(),
            expected: "bilinear for pixel bounds",
        });
    }
    if image.len() != c * h * w || a > b {
        return Err(Error::Invalid {
            what: "rotation bounds",
            value: format!(
                "{} values for ({c}, {h}, {w}), range [{a}, {b}]",
                image.len()
            ),
            expected: "c·h·w values and a ≤ b",
        });
    }
    let (cos, sin) = (trig_range(a, b, false), trig_range(a, b, true));
    let [cx, cy] = crate::homography::centre(h, w);
    let scale = |(lo, hi): (f64, f64), v: f64| {
        if v >= 0.0 {
            (lo * v, hi * v)
        } else {
            (hi * v, lo * v)
        }
    };
    let (mut lo, mut hi) = (vec![0.0f32; c * h * w], vec![0.0f32; c * h * w]);
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            // x' = x cos θ − y sin θ, y' = x sin θ + y cos θ (centred).
            let (a1, b1) = (scale(cos, dx), scale(sin, -dy));
            let (a2, b2) = (scale(sin, dx), scale(cos, dy));
            // A hair of slack for the rounding of the sample points.
            let slack = 1e-9 * (1.0 + dx.abs() + dy.abs());
            let (qx0, qx1) = (a1.0 + b1.0 + cx - slack, a1.1 + b1.1 + cx + slack);
            let (qy0, qy1) = (a2.0 + b2.0 + cy - slack, a2.1 + b2.1 + cy + slack);
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
                lo[(ch * h + y) * w + x] = ((l - pad) as f32).next_down();
                hi[(ch * h + y) * w + x] = ((u + pad) as f32).next_up();
            }
        }
    }
    Ok((lo, hi))
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

    #[test]
    fn trig_ranges_include_the_extremes_inside() {
        assert_eq!(trig_range(-0.1, 0.1, false).1, 1.0);
        assert_eq!(trig_range(1.5, 1.7, true).1, 1.0);
        assert_eq!(trig_range(3.0, 3.3, false).0, -1.0);
        let (l, u) = trig_range(0.1, 0.2, true);
        assert!((l - 0.1f64.sin()).abs() < 1e-15 && (u - 0.2f64.sin()).abs() < 1e-15);
    }
}
