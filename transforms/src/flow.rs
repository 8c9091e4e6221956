//! Dense per-pixel flow fields (stAdv, Xiao et al., ICLR 2018).
//!
//! A flow holds a displacement `(u, v)` in pixels for every output pixel; output pixel
//! `p = (x, y)` samples the input at `p + (u(p), v(p))`, bilinearly in stAdv:
//!
//! ```text
//! out(p) = in(x + u(p), y + v(p)).
//! ```
//!
//! `u` is horizontal (along columns, positive to the right) and `v` vertical (along rows,
//! positive down). The stAdv reference clamps sample points to the image, which is
//! [`crate::sampling::Border::Replicate`].
//!
//! # Layout
//!
//! `(n, 2, h, w)`, `f64`: for image `i`, plane 0 holds `u` and plane 1 holds `v`, each row-major,
//! so `u(i, y, x)` is at `((2i)·h + y)·w + x` and `v(i, y, x)` at `((2i + 1)·h + y)·w + x`.
//! The same layout is used for gradients with respect to a flow.

use crate::error::{Error, Result};
use crate::layout::{Batch, ImageShape};
use crate::sampling::Sampling;
use crate::warp::{flow_offset, Warp};

/// A borrowed flow field of `n` images of `h × w` pixels, layout `(n, 2, h, w)` (see the
/// module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flow<'a> {
    data: &'a [f64],
    shape: ImageShape,
}

/// Displacement statistics of one flow, in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowStats {
    /// Mean of `‖(u, v)‖₂` over pixels.
    pub mean: f64,
    /// Largest `‖(u, v)‖₂`.
    pub max: f64,
}

impl<'a> Flow<'a> {
    /// Wraps `2·n·h·w` values in `(n, 2, h, w)` layout; fails on a length mismatch.
    pub fn new(data: &'a [f64], n: usize, h: usize, w: usize) -> Result<Self> {
        let shape = ImageShape::new(n, 2, h, w);
        shape.check_len("flow", data.len())?;
        Ok(Self { data, shape })
    }

    /// Number of values a flow of `n` images of `h × w` needs, `2·n·h·w`.
    pub fn len_for(n: usize, h: usize, w: usize) -> usize {
        2 * n * h * w
    }

    /// The values, `(n, 2, h, w)`.
    pub fn data(&self) -> &'a [f64] {
        self.data
    }

    /// Number of images.
    pub fn n(&self) -> usize {
        self.shape.n
    }

    /// Height in pixels.
    pub fn h(&self) -> usize {
        self.shape.h
    }

    /// Width in pixels.
    pub fn w(&self) -> usize {
        self.shape.w
    }

    /// The displacement `[u, v]` (pixels) of pixel `(x, y)` of image `i`.
    pub fn displacement(&self, i: usize, x: usize, y: usize) -> [f64; 2] {
        let base = i * 2 * self.shape.pixels();
        [
            self.data[base + flow_offset(&self.shape, 0, y, x)],
            self.data[base + flow_offset(&self.shape, 1, y, x)],
        ]
    }

    /// Mean and largest displacement length per image (pixels; divide by `w` for a fraction
    /// of the width).
    pub fn stats(&self) -> Vec<FlowStats> {
        (0..self.n())
            .map(|i| {
                let mut sum = 0.0f64;
                let mut max = 0.0f64;
                for y in 0..self.h() {
                    for x in 0..self.w() {
                        let [u, v] = self.displacement(i, x, y);
                        let len = u.hypot(v);
                        sum += len;
                        max = max.max(len);
                    }
                }
                let pixels = self.shape.pixels();
                FlowStats {
                    mean: if pixels == 0 {
                        0.0
                    } else {
                        sum / pixels as f64
                    },
                    max,
                }
            })
            .collect()
    }

    /// Gradient with respect to the flow: `∂L/∂flow` in flow layout for `cotangent = ∂L/∂out`
    /// (shape and layout of `batch`). The same as [`Warp::vjp_source`], since the source point
    /// is `p + flow(p)`.
    pub fn vjp(
        &self,
        batch: &Batch<'_>,
        sampling: Sampling,
        cotangent: &[f32],
    ) -> Result<Vec<f64>> {
        self.vjp_source(batch, sampling, cotangent)
    }
}

impl Warp for Flow<'_> {
    fn check(&self, shape: &ImageShape) -> Result<()> {
        if (self.shape.n, self.shape.h, self.shape.w) == (shape.n, shape.h, shape.w) {
            Ok(())
        } else {
            Err(Error::FlowShape {
                flow_n: self.shape.n,
                flow_h: self.shape.h,
                flow_w: self.shape.w,
                n: shape.n,
                h: shape.h,
                w: shape.w,
            })
        }
    }

    fn source(&self, image: usize, x: usize, y: usize, _shape: &ImageShape) -> [f64; 2] {
        let [u, v] = self.displacement(image, x, y);
        [x as f64 + u, y as f64 + v]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::TransformGroup;
    use crate::homography::MatrixWarp;
    use crate::layout::{convert_layout, ImageLayout};
    use crate::sampling::{Border, Interpolation};
    use crate::testutil::{
        central_gradient, dot, gaussian_images, random_f32, random_values, rel_err, to_f64, LAYOUTS,
    };

    fn constant_flow(n: usize, h: usize, w: usize, u: f64, v: f64) -> Vec<f64> {
        let plane = h * w;
        let mut data = vec![0.0; Flow::len_for(n, h, w)];
        for i in 0..n {
            data[2 * i * plane..(2 * i + 1) * plane].fill(u);
            data[(2 * i + 1) * plane..(2 * i + 2) * plane].fill(v);
        }
        data
    }

    #[test]
    fn zero_flow_is_bit_exact() {
        let shape = ImageShape::new(2, 3, 7, 9);
        let mut data = random_f32(shape.len(), 1);
        data[0] = -0.0;
        let zero = vec![0.0; Flow::len_for(2, 7, 9)];
        let flow = Flow::new(&zero, 2, 7, 9).unwrap();
        for layout in LAYOUTS {
            let batch = Batch::new(&data, shape, layout).unwrap();
            for interpolation in [Interpolation::Nearest, Interpolation::Bilinear] {
                for border in [Border::Zero, Border::Replicate, Border::Reflect] {
                    let out = flow
                        .apply(&batch, Sampling::new(interpolation, border))
                        .unwrap();
                    assert!(out
                        .iter()
                        .zip(&data)
                        .all(|(a, b)| a.to_bits() == b.to_bits()));
                }
            }
        }
    }

    #[test]
    fn constant_integer_flow_is_a_shift() {
        let shape = ImageShape::new(1, 3, 10, 12);
        let layout = ImageLayout::Nhwc;
        let data = gaussian_images(shape, layout, 2);
        let batch = Batch::new(&data, shape, layout).unwrap();
        let f = constant_flow(1, 10, 12, -2.0, 1.0);
        let out = Flow::new(&f, 1, 10, 12)
            .unwrap()
            .apply(&batch, Sampling::default())
            .unwrap();
        for c in 0..shape.c {
            for y in 0..shape.h - 1 {
                for x in 2..shape.w {
                    let expected = data[layout.index(&shape, 0, c, y + 1, x - 2)];
                    assert_eq!(out[layout.index(&shape, 0, c, y, x)], expected);
                }
            }
        }
    }

    #[test]
    fn constant_flow_equals_translation() {
        let shape = ImageShape::new(1, 2, 9, 11);
        let data = gaussian_images(shape, ImageLayout::Nchw, 3);
        let batch = Batch::new(&data, shape, ImageLayout::Nchw).unwrap();
        let (u, v) = (1.37, -0.61);
        let f = constant_flow(1, 9, 11, u, v);
        let by_flow = Flow::new(&f, 1, 9, 11)
            .unwrap()
            .apply_f64(&batch, Sampling::default())
            .unwrap();
        let m = TransformGroup::Translation.exp(&[u, v]).unwrap();
        let by_matrix = MatrixWarp::uniform(m)
            .apply_f64(&batch, Sampling::default())
            .unwrap();
        assert!(rel_err(&by_flow, &by_matrix) < 1e-12);
    }

    /// A random flow of small displacements (±0.8 px), so samples fall between pixel centres.
    fn random_flow(n: usize, h: usize, w: usize, seed: u64) -> Vec<f64> {
        random_values(Flow::len_for(n, h, w), seed)
            .iter()
            .map(|v| 0.8 * v)
            .collect()
    }

    #[test]
    fn flow_gradient_matches_finite_differences() {
        let (n, h, w) = (2, 8, 10);
        let shape = ImageShape::new(n, 3, h, w);
        for layout in LAYOUTS {
            let data = gaussian_images(shape, layout, 4);
            let batch = Batch::new(&data, shape, layout).unwrap();
            let f = random_flow(n, h, w, 5);
            let cot = random_f32(shape.len(), 6);
            let cot64 = to_f64(&cot);
            for border in [Border::Zero, Border::Replicate, Border::Reflect] {
                let sampling = Sampling::new(Interpolation::Bilinear, border);
                let grad = Flow::new(&f, n, h, w)
                    .unwrap()
                    .vjp(&batch, sampling, &cot)
                    .unwrap();
                // Coordinate-wise central differences of ⟨cotangent, warp(flow)⟩.
                let fd = central_gradient(&f, 1e-6, |g| {
                    let out = Flow::new(g, n, h, w)
                        .unwrap()
                        .apply_f64(&batch, sampling)
                        .unwrap();
                    dot(&out, &cot64)
                });
                let err = rel_err(&grad, &fd);
                assert!(err < 1e-3, "{layout} {border}: relative error {err:.3e}");
            }
        }
    }

    #[test]
    fn flow_jvp_matches_finite_differences() {
        let (n, h, w) = (2, 8, 10);
        let shape = ImageShape::new(n, 3, h, w);
        let data = gaussian_images(shape, ImageLayout::Nchw, 7);
        let batch = Batch::new(&data, shape, ImageLayout::Nchw).unwrap();
        let f = random_flow(n, h, w, 8);
        let dir = random_values(f.len(), 9);
        let sampling = Sampling::new(Interpolation::Bilinear, Border::Reflect);
        let flow = Flow::new(&f, n, h, w).unwrap();
        let jvp = to_f64(&flow.jvp_source(&batch, sampling, &dir).unwrap());
        let step = 1e-6;
        let at = |s: f64| {
            let g: Vec<f64> = f.iter().zip(&dir).map(|(a, d)| a + s * d).collect();
            Flow::new(&g, n, h, w)
                .unwrap()
                .apply_f64(&batch, sampling)
                .unwrap()
        };
        let (plus, minus) = (at(step), at(-step));
        let fd: Vec<f64> = plus
            .iter()
            .zip(&minus)
            .map(|(p, m)| (p - m) / (2.0 * step))
            .collect();
        // The JVP is returned in f32, hence the looser bound than the f64 paths.
        let err = rel_err(&jvp, &fd);
        assert!(err < 1e-3, "relative error {err:.3e}");
    }

    #[test]
    fn flow_layouts_agree() {
        let shape = ImageShape::new(2, 3, 6, 7);
        let nchw = gaussian_images(shape, ImageLayout::Nchw, 10);
        let nhwc = convert_layout(&nchw, shape, ImageLayout::Nchw, ImageLayout::Nhwc).unwrap();
        let f = random_flow(2, 6, 7, 11);
        let flow = Flow::new(&f, 2, 6, 7).unwrap();
        let s = Sampling::default();
        let a = flow
            .apply(&Batch::new(&nchw, shape, ImageLayout::Nchw).unwrap(), s)
            .unwrap();
        let b = flow
            .apply(&Batch::new(&nhwc, shape, ImageLayout::Nhwc).unwrap(), s)
            .unwrap();
        assert_eq!(
            a,
            convert_layout(&b, shape, ImageLayout::Nhwc, ImageLayout::Nchw).unwrap()
        );
    }

    #[test]
    fn stats_and_shape_checks() {
        let f = constant_flow(2, 3, 4, 3.0, -4.0);
        let flow = Flow::new(&f, 2, 3, 4).unwrap();
        assert_eq!(
            flow.stats(),
            vec![
                FlowStats {
                    mean: 5.0,
                    max: 5.0
                };
                2
            ]
        );
        assert!(Flow::new(&f[1..], 2, 3, 4).is_err());
        let shape = ImageShape::new(2, 1, 3, 5);
        let data = vec![0.0f32; shape.len()];
        let batch = Batch::new(&data, shape, ImageLayout::Nchw).unwrap();
        assert!(matches!(
            flow.apply(&batch, Sampling::default()),
            Err(Error::FlowShape { .. })
        ));
    }
}
