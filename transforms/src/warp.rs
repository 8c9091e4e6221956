//! The [`Warp`] trait: any backward warp given by a per-pixel source point, and the sampling
//! engine behind it (apply, adjoint to the input image, derivative with respect to the source
//! points).
//!
//! A warp keeps the image size: output pixel `(x, y)` of image `i` takes the input's value at
//! the real point `q = source(i, x, y)`, read with a [`Sampling`] (interpolation and border).
//! Work is split across images with rayon.

use rayon::prelude::*;

use crate::error::Result;
use crate::flow::Flow;
use crate::layout::{Batch, ImageShape, Strides};
use crate::sampling::{Sampling, Stencil};

/// A backward warp: for every output pixel, the input point it samples.
///
/// Implementors only say where each output pixel reads ([`Warp::source`]) and which batches
/// they fit ([`Warp::check`]); applying the warp and differentiating it come for free.
pub trait Warp: Sync {
    /// Checks that this warp can act on a batch of `shape` (e.g. one matrix or flow per image).
    fn check(&self, shape: &ImageShape) -> Result<()>;

    /// The input point `[x, y]`, in pixel coordinates (pixel centres at integers, `x` the
    /// column, `y` the row), that output pixel `(x, y)` of image `image` samples.
    fn source(&self, image: usize, x: usize, y: usize, shape: &ImageShape) -> [f64; 2];

    /// Warps the batch: `out(i, c, p) = in(i, c, source(i, p))`, same shape and layout as
    /// `batch`.
    fn apply(&self, batch: &Batch<'_>, sampling: Sampling) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; batch.shape().len()];
        apply_into(self, batch, sampling, &mut out)?;
        Ok(out)
    }

    /// [`Warp::apply`] without the final rounding to `f32` (interpolation runs in `f64`
    /// either way); useful for finite differences and path lengths.
    fn apply_f64(&self, batch: &Batch<'_>, sampling: Sampling) -> Result<Vec<f64>> {
        let mut out = vec![0.0f64; batch.shape().len()];
        apply_into(self, batch, sampling, &mut out)?;
        Ok(out)
    }

    /// Adjoint of [`Warp::apply`] with respect to the input images (scatter-add of the
    /// interpolation weights): given `∂L/∂out` (`cotangent`, the shape and layout of the
    /// images), returns `∂L/∂in` in the same shape and layout.
    fn vjp_input(&self, cotangent: &Batch<'_>, sampling: Sampling) -> Result<Vec<f32>> {
        vjp_input(self, cotangent, sampling)
    }

    /// Vector–Jacobian product with respect to the source points: given `∂L/∂out`
    /// (`cotangent`, shape and layout of `batch`), returns `∂L/∂q` for every output pixel's
    /// source point, laid out as a flow `(n, 2, h, w)`: plane 0 the `x` (column) derivative,
    /// plane 1 the `y` (row) derivative. For a dense flow warp this is the gradient with
    /// respect to the flow.
    fn vjp_source(
        &self,
        batch: &Batch<'_>,
        sampling: Sampling,
        cotangent: &[f32],
    ) -> Result<Vec<f64>> {
        vjp_source(self, batch, sampling, cotangent)
    }

    /// Jacobian–vector product with respect to the source points: given a displacement of
    /// every source point (`tangent`, flow layout `(n, 2, h, w)`, pixels), returns the first
    /// order change of the output, shape and layout of `batch`.
    fn jvp_source(
        &self,
        batch: &Batch<'_>,
        sampling: Sampling,
        tangent: &[f64],
    ) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; batch.shape().len()];
        jvp_source_into(self, batch, sampling, tangent, &mut out)?;
        Ok(out)
    }
}

/// Output element types the engine can write.
pub(crate) trait Real: Copy + Send + Sync + Default + 'static {
    fn from_f64(v: f64) -> Self;
}

impl Real for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Real for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// One image of a batch, with the strides of its layout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImageRef<'a> {
    data: &'a [f32],
    strides: Strides,
    channels: usize,
}

impl<'a> ImageRef<'a> {
    /// Image `i` of `batch`.
    pub(crate) fn of(batch: &Batch<'a>, i: usize) -> Self {
        Self {
            data: batch.image(i),
            strides: batch.layout().strides(&batch.shape()),
            channels: batch.shape().c,
        }
    }

    /// Offset of `(channel, y, x)` inside this image (and inside any image of the same shape
    /// and layout).
    pub(crate) fn offset(&self, c: usize, y: usize, x: usize) -> usize {
        self.strides.offset(c, y, x)
    }

    /// The stored value of channel `c` at pixel `(x, y)`.
    fn at(&self, c: usize, y: usize, x: usize) -> f64 {
        self.data[self.offset(c, y, x)] as f64
    }

    /// The interpolated value of channel `c` (`f64` arithmetic). Taps with zero weight are
    /// skipped and the sum starts from `−0`, so a sample exactly on a pixel centre returns that
    /// pixel bit for bit.
    pub(crate) fn value(&self, stencil: &Stencil, c: usize) -> f64 {
        let mut acc = -0.0f64;
        let mut any = false;
        for tap in stencil.taps() {
            if tap.weight != 0.0 {
                acc += tap.weight * self.at(c, tap.y, tap.x);
                any = true;
            }
        }
        if any {
            acc
        } else {
            0.0
        }
    }

    /// Derivative of the interpolated value of channel `c` with respect to the sample point.
    pub(crate) fn gradient(&self, stencil: &Stencil, c: usize) -> [f64; 2] {
        let mut g = [0.0f64; 2];
        for tap in stencil.taps() {
            let v = self.at(c, tap.y, tap.x);
            g[0] += tap.dx * v;
            g[1] += tap.dy * v;
        }
        g
    }

    /// `Σ_c cot(c, y, x)·∇value_c`: the derivative of `⟨cot, out⟩` with respect to the sample
    /// point of output pixel `(x, y)`, which reads this image through `stencil` (`cot` has the
    /// shape and layout of this image).
    pub(crate) fn cotangent_gradient(
        &self,
        stencil: &Stencil,
        cot: &ImageRef<'_>,
        x: usize,
        y: usize,
    ) -> [f64; 2] {
        let mut g = [0.0f64; 2];
        for c in 0..self.channels {
            let v = cot.at(c, y, x);
            let grad = self.gradient(stencil, c);
            g[0] += v * grad[0];
            g[1] += v * grad[1];
        }
        g
    }

    /// Writes into `out` (an image of this shape and layout), for every channel of output pixel
    /// `(x, y)`, the first-order change of its value when its sample point moves by `d`.
    pub(crate) fn write_jvp<T: Real>(
        &self,
        out: &mut [T],
        stencil: &Stencil,
        x: usize,
        y: usize,
        d: [f64; 2],
    ) {
        for c in 0..self.channels {
            let g = self.gradient(stencil, c);
            out[self.offset(c, y, x)] = T::from_f64(g[0] * d[0] + g[1] * d[1]);
        }
    }
}

/// Index of `(plane, y, x)` inside one image's flow block of `2·h·w` values.
pub(crate) fn flow_offset(shape: &ImageShape, plane: usize, y: usize, x: usize) -> usize {
    (plane * shape.h + y) * shape.w + x
}

/// Fills `out` image by image, in parallel: `f(i, image, chunk)` for image `i` of `batch` and
/// its `chunk_len` values of `out`. Calls nothing for an empty batch.
pub(crate) fn par_images<T, F>(batch: &Batch<'_>, out: &mut [T], chunk_len: usize, f: F)
where
    T: Send,
    F: Fn(usize, ImageRef<'_>, &mut [T]) + Sync + Send,
{
    if batch.shape().is_empty() {
        return;
    }
    out.par_chunks_mut(chunk_len)
        .enumerate()
        .for_each(|(i, chunk)| f(i, ImageRef::of(batch, i), chunk));
}

/// Calls `f(x, y, stencil)` for every output pixel of image `i`, with the stencil that reads
/// its source point.
pub(crate) fn for_each_stencil<W, F>(
    warp: &W,
    i: usize,
    shape: &ImageShape,
    sampling: Sampling,
    mut f: F,
) where
    W: Warp + ?Sized,
    F: FnMut(usize, usize, &Stencil),
{
    for y in 0..shape.h {
        for x in 0..shape.w {
            let q = warp.source(i, x, y, shape);
            f(x, y, &sampling.stencil(q, shape.h, shape.w));
        }
    }
}

/// Checks that `warp` fits `batch` and wraps `cotangent` (`∂L/∂out`) as a batch of the same
/// shape and layout.
pub(crate) fn checked_cotangent<'a, W: Warp + ?Sized>(
    warp: &W,
    batch: &Batch<'_>,
    cotangent: &'a [f32],
) -> Result<Batch<'a>> {
    let shape = batch.shape();
    warp.check(&shape)?;
    shape.check_len("cotangent", cotangent.len())?;
    Batch::new(cotangent, shape, batch.layout())
}

/// Warps `batch` into `out` (same shape and layout), in parallel over images.
pub(crate) fn apply_into<W: Warp + ?Sized, T: Real>(
    warp: &W,
    batch: &Batch<'_>,
    sampling: Sampling,
    out: &mut [T],
) -> Result<()> {
    let shape = batch.shape();
    warp.check(&shape)?;
    shape.check_len("warp output", out.len())?;
    par_images(batch, out, shape.image_len(), |i, image, chunk| {
        for_each_stencil(warp, i, &shape, sampling, |x, y, stencil| {
            for c in 0..shape.c {
                chunk[image.offset(c, y, x)] = T::from_f64(image.value(stencil, c));
            }
        });
    });
    Ok(())
}

fn vjp_input<W: Warp + ?Sized>(
    warp: &W,
    cotangent: &Batch<'_>,
    sampling: Sampling,
) -> Result<Vec<f32>> {
    let shape = cotangent.shape();
    warp.check(&shape)?;
    let mut out = vec![0.0f32; shape.len()];
    par_images(cotangent, &mut out, shape.image_len(), |i, cot, chunk| {
        let mut acc = vec![0.0f64; shape.image_len()];
        for_each_stencil(warp, i, &shape, sampling, |x, y, stencil| {
            for c in 0..shape.c {
                let v = cot.at(c, y, x);
                if v == 0.0 {
                    continue;
                }
                for tap in stencil.taps() {
                    acc[cot.offset(c, tap.y, tap.x)] += tap.weight * v;
                }
            }
        });
        for (o, a) in chunk.iter_mut().zip(&acc) {
            *o = *a as f32;
        }
    });
    Ok(out)
}

fn vjp_source<W: Warp + ?Sized>(
    warp: &W,
    batch: &Batch<'_>,
    sampling: Sampling,
    cotangent: &[f32],
) -> Result<Vec<f64>> {
    let shape = batch.shape();
    let cotangent = checked_cotangent(warp, batch, cotangent)?;
    let flow_len = 2 * shape.pixels();
    let mut out = vec![0.0f64; shape.n * flow_len];
    par_images(batch, &mut out, flow_len, |i, image, chunk| {
        let cot = ImageRef::of(&cotangent, i);
        for_each_stencil(warp, i, &shape, sampling, |x, y, stencil| {
            let g = image.cotangent_gradient(stencil, &cot, x, y);
            chunk[flow_offset(&shape, 0, y, x)] = g[0];
            chunk[flow_offset(&shape, 1, y, x)] = g[1];
        });
    });
    Ok(out)
}

pub(crate) fn jvp_source_into<W: Warp + ?Sized, T: Real>(
    warp: &W,
    batch: &Batch<'_>,
    sampling: Sampling,
    tangent: &[f64],
    out: &mut [T],
) -> Result<()> {
    let shape = batch.shape();
    warp.check(&shape)?;
    ImageShape::new(shape.n, 2, shape.h, shape.w).check_len("source tangent", tangent.len())?;
    shape.check_len("jvp output", out.len())?;
    let tangent = Flow::new(tangent, shape.n, shape.h, shape.w)?;
    par_images(batch, out, shape.image_len(), |i, image, chunk| {
        for_each_stencil(warp, i, &shape, sampling, |x, y, stencil| {
            image.write_jvp(chunk, stencil, x, y, tangent.displacement(i, x, y));
        });
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::TransformGroup;
    use crate::homography::{compose, MatrixWarp};
    use crate::layout::convert_layout;
    use crate::layout::ImageLayout;
    use crate::sampling::{Border, Interpolation};
    use crate::testutil::{
        dot, gaussian_images, random_f32, random_values, rel_err, to_f64, LAYOUTS,
    };
    use nalgebra::Matrix3;

    const BORDERS: [Border; 3] = [Border::Zero, Border::Replicate, Border::Reflect];
    const INTERPOLATIONS: [Interpolation; 2] = [Interpolation::Nearest, Interpolation::Bilinear];

    fn all_samplings() -> Vec<Sampling> {
        INTERPOLATIONS
            .iter()
            .flat_map(|&i| BORDERS.iter().map(move |&b| Sampling::new(i, b)))
            .collect()
    }

    fn affine_warp() -> MatrixWarp {
        MatrixWarp::uniform(
            TransformGroup::Affine
                .exp(&[0.35, 1.7, -2.3, 0.12, -0.07, 0.09])
                .unwrap(),
        )
    }

    #[test]
    fn identity_is_bit_exact() {
        let shape = ImageShape::new(2, 3, 7, 9);
        let mut data: Vec<f32> = random_values(shape.len(), 1)
            .iter()
            .map(|&v| (v * 1e3) as f32)
            .collect();
        data[4] = -0.0;
        data[5] = f32::MIN_POSITIVE / 4.0;
        for layout in LAYOUTS {
            let batch = Batch::new(&data, shape, layout).unwrap();
            for sampling in all_samplings() {
                let out = MatrixWarp::uniform(Matrix3::identity())
                    .apply(&batch, sampling)
                    .unwrap();
                let same = out
                    .iter()
                    .zip(&data)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{layout} {sampling:?}");
            }
        }
    }

    #[test]
    fn integer_translation_is_an_exact_shift() {
        let shape = ImageShape::new(1, 3, 16, 20);
        let layout = ImageLayout::Nchw;
        let data = gaussian_images(shape, layout, 2);
        let batch = Batch::new(&data, shape, layout).unwrap();
        let (tx, ty) = (3i64, -2i64);
        let m = TransformGroup::Translation
            .exp(&[tx as f64, ty as f64])
            .unwrap();
        for interpolation in INTERPOLATIONS {
            let sampling = Sampling::new(interpolation, Border::Zero);
            let out = MatrixWarp::uniform(m).apply(&batch, sampling).unwrap();
            for c in 0..shape.c {
                for y in 0..shape.h {
                    for x in 0..shape.w {
                        // out(p) = in(p + t): content moves by −t.
                        let (sx, sy) = (x as i64 + tx, y as i64 + ty);
                        let inside =
                            (0..shape.w as i64).contains(&sx) && (0..shape.h as i64).contains(&sy);
                        let expected = if inside {
                            data[layout.index(&shape, 0, c, sy as usize, sx as usize)]
                        } else {
                            0.0
                        };
                        let got = out[layout.index(&shape, 0, c, y, x)];
                        assert_eq!(got.to_bits(), expected.to_bits(), "({c}, {y}, {x})");
                    }
                }
            }
        }
    }

    /// NumPy's `np.rot90(a)` (k = 1) of one `n × n` plane: `out[y][x] = a[x][n − 1 − y]`.
    fn rot90(plane: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0.0; n * n];
        for y in 0..n {
            for x in 0..n {
                out[y * n + x] = plane[x * n + (n - 1 - y)];
            }
        }
        out
    }

    #[test]
    fn quarter_turn_is_rot90() {
        for n in [16, 15] {
            let shape = ImageShape::new(1, 3, n, n);
            let data = gaussian_images(shape, ImageLayout::Nchw, 3);
            let batch = Batch::new(&data, shape, ImageLayout::Nchw).unwrap();
            let m = TransformGroup::Rotation
                .exp(&[std::f64::consts::FRAC_PI_2])
                .unwrap();
            let out = MatrixWarp::uniform(m)
                .apply(&batch, Sampling::default())
                .unwrap();
            for c in 0..shape.c {
                let plane = &data[c * n * n..(c + 1) * n * n];
                let expected = rot90(plane, n);
                let got = &out[c * n * n..(c + 1) * n * n];
                for (a, b) in got.iter().zip(&expected) {
                    assert!((a - b).abs() < 1e-5, "n = {n}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn composition_matches_matrix_product() {
        // Grid-preserving transforms, so both sides sample on pixel centres only.
        let n = 12;
        let shape = ImageShape::new(1, 2, n, n);
        let data = gaussian_images(shape, ImageLayout::Nchw, 4);
        let batch = Batch::new(&data, shape, ImageLayout::Nchw).unwrap();
        let a = TransformGroup::Translation.exp(&[2.0, -1.0]).unwrap();
        let b = TransformGroup::Rotation
            .exp(&[std::f64::consts::FRAC_PI_2])
            .unwrap();
        let s = Sampling::default();
        let once = MatrixWarp::uniform(a).apply(&batch, s).unwrap();
        let once = Batch::new(&once, shape, ImageLayout::Nchw).unwrap();
        let twice = MatrixWarp::uniform(b).apply(&once, s).unwrap();
        let direct = MatrixWarp::uniform(compose(&a, &b))
            .apply(&batch, s)
            .unwrap();
        for (x, y) in twice.iter().zip(&direct) {
            assert!((x - y).abs() < 1e-5);
        }
        // The other order differs, so the test would notice a swapped convention.
        let swapped = MatrixWarp::uniform(compose(&b, &a))
            .apply(&batch, s)
            .unwrap();
        assert!(twice
            .iter()
            .zip(&swapped)
            .any(|(x, y)| (x - y).abs() > 1e-2));
    }

    #[test]
    fn layouts_agree_after_transposition() {
        let shape = ImageShape::new(2, 3, 16, 20);
        let nchw = gaussian_images(shape, ImageLayout::Nchw, 5);
        let nhwc = convert_layout(&nchw, shape, ImageLayout::Nchw, ImageLayout::Nhwc).unwrap();
        let cot = random_f32(shape.len(), 6);
        let cot_nhwc = convert_layout(&cot, shape, ImageLayout::Nchw, ImageLayout::Nhwc).unwrap();
        let warp = affine_warp();
        for sampling in all_samplings() {
            let a = Batch::new(&nchw, shape, ImageLayout::Nchw).unwrap();
            let b = Batch::new(&nhwc, shape, ImageLayout::Nhwc).unwrap();
            let out_a = warp.apply(&a, sampling).unwrap();
            let out_b = warp.apply(&b, sampling).unwrap();
            let out_b =
                convert_layout(&out_b, shape, ImageLayout::Nhwc, ImageLayout::Nchw).unwrap();
            assert_eq!(out_a, out_b, "{sampling:?}");

            let va = warp.vjp_source(&a, sampling, &cot).unwrap();
            let vb = warp.vjp_source(&b, sampling, &cot_nhwc).unwrap();
            assert_eq!(va, vb);

            let ca = Batch::new(&cot, shape, ImageLayout::Nchw).unwrap();
            let cb = Batch::new(&cot_nhwc, shape, ImageLayout::Nhwc).unwrap();
            let ia = warp.vjp_input(&ca, sampling).unwrap();
            let ib = warp.vjp_input(&cb, sampling).unwrap();
            let ib = convert_layout(&ib, shape, ImageLayout::Nhwc, ImageLayout::Nchw).unwrap();
            assert_eq!(ia, ib);
        }
    }

    #[test]
    fn per_image_matrices_match_single_warps() {
        let shape = ImageShape::new(2, 1, 8, 10);
        let data = gaussian_images(shape, ImageLayout::Nchw, 7);
        let batch = Batch::new(&data, shape, ImageLayout::Nchw).unwrap();
        let ms = vec![
            TransformGroup::Rigid.exp(&[0.2, 1.0, 0.5]).unwrap(),
            TransformGroup::Rigid.exp(&[-0.4, -0.3, 2.0]).unwrap(),
        ];
        let both = MatrixWarp::new(ms.clone())
            .apply(&batch, Sampling::default())
            .unwrap();
        for (i, m) in ms.iter().enumerate() {
            let one = Batch::new(batch.image(i), shape.with_n(1), ImageLayout::Nchw).unwrap();
            let single = MatrixWarp::uniform(*m)
                .apply(&one, Sampling::default())
                .unwrap();
            assert_eq!(
                &both[i * shape.image_len()..(i + 1) * shape.image_len()],
                &single[..]
            );
        }
    }

    #[test]
    fn vjp_input_is_the_adjoint() {
        let shape = ImageShape::new(2, 3, 16, 20);
        let layout = ImageLayout::Nhwc;
        let x = gaussian_images(shape, layout, 8);
        let v = random_f32(shape.len(), 9);
        let warp = affine_warp();
        for sampling in all_samplings() {
            let xb = Batch::new(&x, shape, layout).unwrap();
            let wx = warp.apply_f64(&xb, sampling).unwrap();
            let vb = Batch::new(&v, shape, layout).unwrap();
            let wtv = warp.vjp_input(&vb, sampling).unwrap();
            let lhs = dot(&wx, &to_f64(&v));
            let rhs = dot(&to_f64(&x), &to_f64(&wtv));
            assert!(
                (lhs - rhs).abs() < 1e-5 * lhs.abs().max(1.0),
                "{sampling:?}: {lhs} vs {rhs}"
            );
        }
    }

    #[test]
    fn jvp_and_vjp_source_are_transposes() {
        let shape = ImageShape::new(2, 3, 9, 11);
        let layout = ImageLayout::Nchw;
        let x = gaussian_images(shape, layout, 10);
        let batch = Batch::new(&x, shape, layout).unwrap();
        let v = random_f32(shape.len(), 11);
        let t = random_values(2 * shape.n * shape.pixels(), 12);
        let warp = affine_warp();
        for sampling in all_samplings() {
            let mut jt = vec![0.0f64; shape.len()];
            jvp_source_into(&warp, &batch, sampling, &t, &mut jt).unwrap();
            let jtv = warp.vjp_source(&batch, sampling, &v).unwrap();
            let lhs = dot(&jt, &to_f64(&v));
            let rhs = dot(&t, &jtv);
            assert!(
                (lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0),
                "{sampling:?}"
            );
        }
    }

    #[test]
    fn f32_output_is_the_rounded_f64_output() {
        let shape = ImageShape::new(1, 2, 6, 7);
        let x = gaussian_images(shape, ImageLayout::Nchw, 13);
        let batch = Batch::new(&x, shape, ImageLayout::Nchw).unwrap();
        let warp = affine_warp();
        let wide = warp.apply_f64(&batch, Sampling::default()).unwrap();
        let narrow = warp.apply(&batch, Sampling::default()).unwrap();
        assert!(narrow.iter().zip(&wide).all(|(a, b)| *a == *b as f32));
        assert!(rel_err(&to_f64(&narrow), &wide) < 1e-6);
    }

    #[test]
    fn shape_errors_are_reported() {
        let shape = ImageShape::new(3, 1, 4, 4);
        let x = vec![0.0f32; shape.len()];
        let batch = Batch::new(&x, shape, ImageLayout::Nchw).unwrap();
        let two = MatrixWarp::new(vec![Matrix3::identity(); 2]);
        assert!(two.apply(&batch, Sampling::default()).is_err());
        let id = MatrixWarp::uniform(Matrix3::identity());
        assert!(id.vjp_source(&batch, Sampling::default(), &x[1..]).is_err());
    }

    #[test]
    fn empty_batch_is_fine() {
        let shape = ImageShape::new(0, 3, 4, 4);
        let batch = Batch::new(&[], shape, ImageLayout::Nchw).unwrap();
        let out = affine_warp().apply(&batch, Sampling::default()).unwrap();
        assert!(out.is_empty());
    }
}
