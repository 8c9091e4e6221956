//! Warps by group elements with analytic derivatives with respect to the group parameters:
//! dense Jacobians, vector–Jacobian and Jacobian–vector products, and the induced metric.
//!
//! For output pixel `p` (centred homogeneous coordinates `p̃`) the warped value is
//! `out(p) = in(π(M(θ)·p̃))` with `π(h) = (h₀/h₂, h₁/h₂)`, so by the chain rule
//!
//! ```text
//! ∂out(p)/∂θₖ = ∇in(q) · Dπ(M p̃) · (∂M/∂θₖ) p̃,   q = π(M p̃),
//! ```
//!
//! where `∇in(q)` is the derivative of the interpolated input at the sample point (see
//! [`crate::sampling::Interpolation`]). Three parametrisations fix `M(θ)` and `∂M/∂θₖ`:
//!
//! - [`GroupWarp::at_params`]: `M = exp(Σ θᵢ Gᵢ)` at a given `θ`, with the exact derivative of
//!   the matrix exponential (the general Jacobian).
//! - [`GroupWarp::tangent`] with [`TangentSide::Left`]: `M = exp(Σ θᵢ Gᵢ)·A₀` at `θ = 0`, so
//!   `∂M/∂θₖ = Gₖ A₀` (ManiFool's update `T ← exp(Δτ)·T`).
//! - [`GroupWarp::tangent`] with [`TangentSide::Right`]: `M = A₀·exp(Σ θᵢ Gᵢ)` at `θ = 0`, so
//!   `∂M/∂θₖ = A₀ Gₖ`: a small transform of the already warped image, since
//!   `warp(x, A₀·E) = warp(warp(x, A₀), E)`.
//!
//! Rows of a Jacobian follow the batch layout inside one image: row `r` is the value at offset
//! `r` of the image's `c·h·w` block (`(c·H + y)·W + x` for NCHW, `(y·W + x)·C + c` for NHWC).

use nalgebra::{DMatrix, Matrix3, Vector3};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::group::TransformGroup;
use crate::homography::{centre, MatrixWarp};
use crate::layout::{Batch, ImageShape};
use crate::linalg::expm_frechet;
use crate::sampling::{Sampling, Stencil};
use crate::warp::{checked_cotangent, for_each_stencil, par_images, ImageRef, Real, Warp};

/// Which side a tangent step multiplies the base transform from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TangentSide {
    /// `exp(Σ θᵢ Gᵢ)·A₀`: the step acts on output coordinates after `A₀`'s sampling map,
    /// i.e. `warp(x, exp(θ)·A₀) = warp(warp(x, exp(θ)), A₀)`.
    Left,
    /// `A₀·exp(Σ θᵢ Gᵢ)`: the step transforms the warped image `warp(x, A₀)`.
    Right,
}

/// A warp by one group element per image (or one for the whole batch) together with the
/// derivatives `∂M/∂θₖ` of its matrix, which give exact Jacobians with respect to the `P`
/// group parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupWarp {
    group: TransformGroup,
    warp: MatrixWarp,
    /// Per matrix, the `P` derivative matrices `∂M/∂θₖ`.
    derivatives: Vec<Vec<Matrix3<f64>>>,
}

impl GroupWarp {
    /// `M = exp(Σ θᵢ Gᵢ)` per image, differentiated at `θ`. `params` holds `P` values (one
    /// transform for the whole batch) or `n·P` values (image-major: image `i` uses
    /// `params[i·P..(i+1)·P]`).
    pub fn at_params(group: TransformGroup, params: &[f64]) -> Result<Self> {
        let dim = group.dim();
        if params.is_empty() || !params.len().is_multiple_of(dim) {
            return Err(Error::ParamCount {
                group: group.name(),
                expected: dim,
                got: params.len(),
            });
        }
        let generators = group.generators();
        let mut matrices = Vec::with_capacity(params.len() / dim);
        let mut derivatives = Vec::with_capacity(params.len() / dim);
        for theta in params.chunks(dim) {
            let x = group.algebra(theta)?;
            matrices.push(group.exp(theta)?);
            derivatives.push(generators.iter().map(|g| expm_frechet(&x, g)).collect());
        }
        Ok(Self {
            group,
            warp: MatrixWarp::new(matrices),
            derivatives,
        })
    }

    /// The tangent chart at `base` (one matrix per image, or one for the batch): the warp is
    /// `base` itself, and the derivatives are those of `exp(Σ θᵢ Gᵢ)·A₀` (left) or
    /// `A₀·exp(Σ θᵢ Gᵢ)` (right) at `θ = 0`.
    pub fn tangent(group: TransformGroup, base: Vec<Matrix3<f64>>, side: TangentSide) -> Self {
        let generators = group.generators();
        let derivatives = base
            .iter()
            .map(|a| {
                generators
                    .iter()
                    .map(|g| match side {
                        TangentSide::Left => g * a,
                        TangentSide::Right => a * g,
                    })
                    .collect()
            })
            .collect();
        Self {
            group,
            warp: MatrixWarp::new(base),
            derivatives,
        }
    }

    /// The group whose parameters the derivatives refer to.
    pub fn group(&self) -> TransformGroup {
        self.group
    }

    /// The warp matrices (length 1 or the batch size), see [`crate::homography`].
    pub fn matrices(&self) -> &[Matrix3<f64>] {
        self.warp.matrices()
    }

    /// `∂M/∂θₖ`, `k = 0..P`, for image `i`.
    pub fn matrix_derivatives(&self, i: usize) -> &[Matrix3<f64>] {
        if self.derivatives.len() == 1 {
            &self.derivatives[0]
        } else {
            &self.derivatives[i]
        }
    }

    /// Dense Jacobian of the warped images with respect to the parameters: one `d × P`
    /// matrix per image (`d = c·h·w`, rows in the batch layout, see the module docs),
    /// column `k` holding `∂ warp(x)/∂θₖ`.
    pub fn jacobian(&self, batch: &Batch<'_>, sampling: Sampling) -> Result<Vec<DMatrix<f64>>> {
        let shape = batch.shape();
        let dim = self.group.dim();
        self.map_images(batch, |i, image| {
            let mut j = DMatrix::zeros(shape.image_len(), dim);
            self.for_each_pixel(i, &shape, sampling, |x, y, stencil, dq| {
                for c in 0..shape.c {
                    let g = image.gradient(stencil, c);
                    let row = image.offset(c, y, x);
                    for (k, d) in dq.iter().enumerate() {
                        j[(row, k)] = g[0] * d[0] + g[1] * d[1];
                    }
                }
            });
            j
        })
    }

    /// Vector–Jacobian product `Jᵀv` per image: `cotangent` (`∂L/∂out`, the shape and layout of
    /// `batch`) maps to `∂L/∂θ`, returned image-major as `n·P` values (also when one transform
    /// is shared by the batch).
    pub fn vjp(
        &self,
        batch: &Batch<'_>,
        sampling: Sampling,
        cotangent: &[f32],
    ) -> Result<Vec<f64>> {
        let shape = batch.shape();
        let cotangent = checked_cotangent(self, batch, cotangent)?;
        let dim = self.group.dim();
        let mut out = vec![0.0f64; shape.n * dim];
        par_images(batch, &mut out, dim, |i, image, out| {
            let cot = ImageRef::of(&cotangent, i);
            self.for_each_pixel(i, &shape, sampling, |x, y, stencil, dq| {
                let gq = image.cotangent_gradient(stencil, &cot, x, y);
                for (o, d) in out.iter_mut().zip(dq) {
                    *o += gq[0] * d[0] + gq[1] * d[1];
                }
            });
        });
        Ok(out)
    }

    /// Jacobian–vector product `J·θ̇` per image: the first-order change of the warped batch
    /// for parameter velocity `tangent` (`P` values for every image, or `n·P` image-major);
    /// shape and layout of `batch`.
    pub fn jvp(&self, batch: &Batch<'_>, sampling: Sampling, tangent: &[f64]) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; batch.shape().len()];
        self.jvp_into(batch, sampling, tangent, &mut out)?;
        Ok(out)
    }

    /// The metric `G = JᵀJ` (`P × P`, one per image) induced on the parameters by the
    /// Euclidean distance between images: `‖J θ̇‖² = θ̇ᵀ G θ̇`.
    pub fn metric(&self, batch: &Batch<'_>, sampling: Sampling) -> Result<Vec<DMatrix<f64>>> {
        let shape = batch.shape();
        let dim = self.group.dim();
        self.map_images(batch, |i, image| {
            let mut g = DMatrix::zeros(dim, dim);
            let mut row = vec![0.0f64; dim];
            self.for_each_pixel(i, &shape, sampling, |_, _, stencil, dq| {
                for c in 0..shape.c {
                    let grad = image.gradient(stencil, c);
                    for (r, d) in row.iter_mut().zip(dq) {
                        *r = grad[0] * d[0] + grad[1] * d[1];
                    }
                    for a in 0..dim {
                        for b in 0..=a {
                            g[(a, b)] += row[a] * row[b];
                        }
                    }
                }
            });
            g.fill_upper_triangle_with_lower_triangle();
            g
        })
    }

    pub(crate) fn jvp_into<T: Real>(
        &self,
        batch: &Batch<'_>,
        sampling: Sampling,
        tangent: &[f64],
        out: &mut [T],
    ) -> Result<()> {
        let shape = batch.shape();
        self.check(&shape)?;
        shape.check_len("jvp output", out.len())?;
        self.group.check_shared_params(tangent.len(), shape.n)?;
        par_images(batch, out, shape.image_len(), |i, image, chunk| {
            let t = self.group.image_params(tangent, i);
            self.for_each_pixel(i, &shape, sampling, |x, y, stencil, dq| {
                let mut v = [0.0f64; 2];
                for (tk, d) in t.iter().zip(dq) {
                    v[0] += tk * d[0];
                    v[1] += tk * d[1];
                }
                image.write_jvp(chunk, stencil, x, y, v);
            });
        });
        Ok(())
    }

    /// Checks that this warp fits `batch`, then maps every image `i` to `f(i, image)`, in
    /// parallel.
    fn map_images<R, F>(&self, batch: &Batch<'_>, f: F) -> Result<Vec<R>>
    where
        R: Send,
        F: Fn(usize, ImageRef<'_>) -> R + Sync + Send,
    {
        self.check(&batch.shape())?;
        Ok((0..batch.shape().n)
            .into_par_iter()
            .map(|i| f(i, ImageRef::of(batch, i)))
            .collect())
    }

    /// Calls `f(x, y, stencil, dq)` for every output pixel of image `i`, with `dq[k]` the
    /// derivative of the source point with respect to `θₖ`.
    fn for_each_pixel<F>(&self, i: usize, shape: &ImageShape, sampling: Sampling, mut f: F)
    where
        F: FnMut(usize, usize, &Stencil, &[[f64; 2]]),
    {
        let m = self.warp.matrix(i);
        let dms = self.matrix_derivatives(i);
        let [cx, cy] = centre(shape.h, shape.w);
        let mut dq = vec![[0.0f64; 2]; dms.len()];
        for_each_stencil(&self.warp, i, shape, sampling, |x, y, stencil| {
            let p = Vector3::new(x as f64 - cx, y as f64 - cy, 1.0);
            let h = m * p;
            let (u, v) = (h.x / h.z, h.y / h.z);
            for (d, dm) in dq.iter_mut().zip(dms) {
                let e = dm * p;
                *d = [(e.x - u * e.z) / h.z, (e.y - v * e.z) / h.z];
            }
            f(x, y, stencil, &dq);
        });
    }
}

impl Warp for GroupWarp {
    fn check(&self, shape: &ImageShape) -> Result<()> {
        self.warp.check(shape)
    }

    fn source(&self, image: usize, x: usize, y: usize, shape: &ImageShape) -> [f64; 2] {
        self.warp.source(image, x, y, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{convert_layout, ImageLayout};
    use crate::sampling::{Border, Interpolation};
    use crate::testutil::{
        gaussian_images, random_f32, random_values, rel_err, to_f64, Rng, LAYOUTS, SHAPE,
    };

    /// Random non-identity parameters: angles ±0.4 rad, translations ±3 px, log-scales and
    /// stretches ±0.12, perspective ±0.004 / px.
    fn random_params(group: TransformGroup, rng: &mut Rng) -> Vec<f64> {
        let ranges = [0.4, 3.0, 3.0, 0.12, 0.12, 0.12, 0.004, 0.004];
        let names = group.param_names();
        names
            .iter()
            .map(|name| {
                let k = ["theta", "tx", "ty", "s", "h1", "h2", "p1", "p2"]
                    .iter()
                    .position(|n| n == name)
                    .unwrap();
                rng.uniform(-ranges[k], ranges[k])
            })
            .collect()
    }

    const FD_STEP: f64 = 1e-6;
    /// The acceptance tolerance (relative, per column); the observed error is below 1e-7.
    const TOL: f64 = 1e-3;

    /// Central difference of the warped batch along each parameter, for matrices built by
    /// `make(image, k, step)`; returns per image a list of `P` columns.
    fn fd_columns(
        batch: &Batch<'_>,
        sampling: Sampling,
        dim: usize,
        make: impl Fn(usize, usize, f64) -> Matrix3<f64>,
    ) -> Vec<Vec<Vec<f64>>> {
        let shape = batch.shape();
        let len = shape.image_len();
        let mut cols = vec![vec![Vec::new(); dim]; shape.n];
        for k in 0..dim {
            let warp_at = |step: f64| {
                let ms = (0..shape.n).map(|i| make(i, k, step)).collect();
                MatrixWarp::new(ms).apply_f64(batch, sampling).unwrap()
            };
            let (plus, minus) = (warp_at(FD_STEP), warp_at(-FD_STEP));
            for (i, col) in cols.iter_mut().enumerate() {
                col[k] = (i * len..(i + 1) * len)
                    .map(|r| (plus[r] - minus[r]) / (2.0 * FD_STEP))
                    .collect();
            }
        }
        cols
    }

    fn assert_columns_match(j: &[DMatrix<f64>], fd: &[Vec<Vec<f64>>], what: &str) {
        for (ji, fdi) in j.iter().zip(fd) {
            for (k, col) in fdi.iter().enumerate() {
                let analytic: Vec<f64> = ji.column(k).iter().copied().collect();
                let err = rel_err(&analytic, col);
                assert!(err < TOL, "{what}, column {k}: relative error {err:.3e}");
            }
        }
    }

    fn with_offset(base: &[f64], k: usize, step: f64) -> Vec<f64> {
        let mut p = base.to_vec();
        p[k] += step;
        p
    }

    fn unit(dim: usize, k: usize, step: f64) -> Vec<f64> {
        let mut p = vec![0.0; dim];
        p[k] = step;
        p
    }

    #[test]
    fn general_jacobian_matches_finite_differences() {
        let mut rng = Rng::new(20);
        for layout in LAYOUTS {
            let data = gaussian_images(SHAPE, layout, 21);
            let batch = Batch::new(&data, SHAPE, layout).unwrap();
            for group in TransformGroup::ALL {
                let params: Vec<f64> = (0..SHAPE.n)
                    .flat_map(|_| random_params(group, &mut rng))
                    .collect();
                let dim = group.dim();
                let sampling = Sampling::default();
                let gw = GroupWarp::at_params(group, &params).unwrap();
                let j = gw.jacobian(&batch, sampling).unwrap();
                let fd = fd_columns(&batch, sampling, dim, |i, k, step| {
                    group
                        .exp(&with_offset(&params[i * dim..(i + 1) * dim], k, step))
                        .unwrap()
                });
                assert_columns_match(&j, &fd, &format!("{group} {layout} at θ"));
            }
        }
    }

    #[test]
    fn tangent_jacobians_match_finite_differences() {
        let mut rng = Rng::new(30);
        let layout = ImageLayout::Nchw;
        let data = gaussian_images(SHAPE, layout, 31);
        let batch = Batch::new(&data, SHAPE, layout).unwrap();
        for group in TransformGroup::ALL {
            let dim = group.dim();
            let base: Vec<Matrix3<f64>> = (0..SHAPE.n)
                .map(|_| group.exp(&random_params(group, &mut rng)).unwrap())
                .collect();
            for side in [TangentSide::Left, TangentSide::Right] {
                for border in [Border::Zero, Border::Replicate, Border::Reflect] {
                    let sampling = Sampling::new(Interpolation::Bilinear, border);
                    let gw = GroupWarp::tangent(group, base.clone(), side);
                    let j = gw.jacobian(&batch, sampling).unwrap();
                    let fd = fd_columns(&batch, sampling, dim, |i, k, step| {
                        let e = group.exp(&unit(dim, k, step)).unwrap();
                        match side {
                            TangentSide::Left => e * base[i],
                            TangentSide::Right => base[i] * e,
                        }
                    });
                    assert_columns_match(&j, &fd, &format!("{group} {side:?} {border}"));
                }
            }
        }
    }

    #[test]
    fn tangent_at_identity_equals_general_at_zero() {
        let data = gaussian_images(SHAPE, ImageLayout::Nchw, 40);
        let batch = Batch::new(&data, SHAPE, ImageLayout::Nchw).unwrap();
        for group in TransformGroup::ALL {
            let zero = vec![0.0; group.dim()];
            let a = GroupWarp::at_params(group, &zero).unwrap();
            let b = GroupWarp::tangent(group, vec![Matrix3::identity()], TangentSide::Right);
            let ja = a.jacobian(&batch, Sampling::default()).unwrap();
            let jb = b.jacobian(&batch, Sampling::default()).unwrap();
            for (x, y) in ja.iter().zip(&jb) {
                assert!((x - y).norm() <= 1e-12 * y.norm());
            }
        }
    }

    #[test]
    fn right_tangent_is_the_gradient_field_of_the_warped_image() {
        // At the identity, the rotation column is −y ∂ₓI + x ∂ᵧI (docs/methods.md, manifool), checked here
        // against the translation columns ∂ₓI, ∂ᵧI of the same chart.
        let shape = ImageShape::new(1, 1, 9, 11);
        let data = gaussian_images(shape, ImageLayout::Nchw, 41);
        let batch = Batch::new(&data, shape, ImageLayout::Nchw).unwrap();
        let gw = GroupWarp::tangent(
            TransformGroup::Rigid,
            vec![Matrix3::identity()],
            TangentSide::Right,
        );
        let j = &gw.jacobian(&batch, Sampling::default()).unwrap()[0];
        let [cx, cy] = centre(shape.h, shape.w);
        for y in 0..shape.h {
            for x in 0..shape.w {
                let r = y * shape.w + x;
                let expected = -(y as f64 - cy) * j[(r, 1)] + (x as f64 - cx) * j[(r, 2)];
                assert!((j[(r, 0)] - expected).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn products_agree_with_the_dense_jacobian() {
        let mut rng = Rng::new(50);
        for layout in LAYOUTS {
            let data = gaussian_images(SHAPE, layout, 51);
            let batch = Batch::new(&data, SHAPE, layout).unwrap();
            let v = random_f32(SHAPE.len(), 52);
            for group in TransformGroup::ALL {
                let dim = group.dim();
                let params: Vec<f64> = (0..SHAPE.n)
                    .flat_map(|_| random_params(group, &mut rng))
                    .collect();
                let gw = GroupWarp::at_params(group, &params).unwrap();
                let s = Sampling::default();
                let j = gw.jacobian(&batch, s).unwrap();
                let vjp = gw.vjp(&batch, s, &v).unwrap();
                let t = random_values(SHAPE.n * dim, 53);
                let mut jvp = vec![0.0f64; SHAPE.len()];
                gw.jvp_into(&batch, s, &t, &mut jvp).unwrap();
                let metric = gw.metric(&batch, s).unwrap();
                let len = SHAPE.image_len();
                for i in 0..SHAPE.n {
                    let vi =
                        nalgebra::DVector::from_iterator(len, to_f64(&v[i * len..(i + 1) * len]));
                    let expected = j[i].transpose() * vi;
                    assert!(rel_err(&vjp[i * dim..(i + 1) * dim], expected.as_slice()) < 1e-12);
                    let ti = nalgebra::DVector::from_column_slice(&t[i * dim..(i + 1) * dim]);
                    let expected = &j[i] * ti;
                    assert!(rel_err(&jvp[i * len..(i + 1) * len], expected.as_slice()) < 1e-12);
                    let expected = j[i].transpose() * &j[i];
                    assert!((&metric[i] - &expected).norm() <= 1e-12 * expected.norm());
                }
                // Shared transform and shared tangent broadcast over the batch.
                let shared = GroupWarp::at_params(group, &params[..dim]).unwrap();
                let one = shared.jvp(&batch, s, &t[..dim]).unwrap();
                let twice: Vec<f64> = t[..dim].iter().chain(&t[..dim]).copied().collect();
                let two = shared.jvp(&batch, s, &twice).unwrap();
                assert_eq!(one, two);
            }
        }
    }

    #[test]
    fn jacobian_rows_follow_the_layout() {
        let nchw = gaussian_images(SHAPE, ImageLayout::Nchw, 60);
        let nhwc = convert_layout(&nchw, SHAPE, ImageLayout::Nchw, ImageLayout::Nhwc).unwrap();
        let gw = GroupWarp::at_params(
            TransformGroup::Projective,
            &[0.2, 1.0, -1.5, 0.05, 0.03, -0.02, 0.002, -0.001],
        )
        .unwrap();
        let a = gw
            .jacobian(
                &Batch::new(&nchw, SHAPE, ImageLayout::Nchw).unwrap(),
                Sampling::default(),
            )
            .unwrap();
        let b = gw
            .jacobian(
                &Batch::new(&nhwc, SHAPE, ImageLayout::Nhwc).unwrap(),
                Sampling::default(),
            )
            .unwrap();
        let one = SHAPE.with_n(1);
        for c in 0..SHAPE.c {
            for y in 0..SHAPE.h {
                for x in 0..SHAPE.w {
                    let ra = ImageLayout::Nchw.index(&one, 0, c, y, x);
                    let rb = ImageLayout::Nhwc.index(&one, 0, c, y, x);
                    for i in 0..SHAPE.n {
                        assert_eq!(a[i].row(ra), b[i].row(rb));
                    }
                }
            }
        }
    }

    #[test]
    fn parameter_count_is_checked() {
        assert!(GroupWarp::at_params(TransformGroup::Rigid, &[0.1, 0.2]).is_err());
        assert!(GroupWarp::at_params(TransformGroup::Rigid, &[]).is_err());
        let data = gaussian_images(SHAPE, ImageLayout::Nchw, 70);
        let batch = Batch::new(&data, SHAPE, ImageLayout::Nchw).unwrap();
        let gw = GroupWarp::at_params(TransformGroup::Rigid, &[0.1, 0.2, 0.3]).unwrap();
        assert!(gw.jvp(&batch, Sampling::default(), &[1.0; 4]).is_err());
        let three = GroupWarp::at_params(TransformGroup::Rigid, &[0.0; 9]).unwrap();
        assert!(three.jacobian(&batch, Sampling::default()).is_err());
    }
}
