//! The six transform groups, their Lie-algebra bases, exponential and logarithm.
//!
//! # Coordinates
//!
//! A transform is a 3×3 matrix `A` acting on homogeneous **centred pixel coordinates**
//! `p̃ = (x − cx, y − cy, 1)`, where `x` is the column and `y` the row (pixel centres at
//! integers `0..w−1`, `0..h−1`, `y` pointing down) and `(cx, cy) = ((w−1)/2, (h−1)/2)` is the
//! image centre. Warping is inverse (backward) warping: output pixel `p` samples the input at
//! `A·p̃` (after the perspective division), see [`crate::homography`].
//!
//! # Basis
//!
//! Group elements are `exp(Σ θᵢ Gᵢ)` with the generators, in parameter order:
//!
//! | name | matrix | unit | effect on `A·p` |
//! |------|--------|------|-----------------|
//! | `R`  | `[[0,−1,0],[1,0,0],[0,0,0]]` | radians | rotation: `(x,y) ↦ (x cos θ − y sin θ, x sin θ + y cos θ)` |
//! | `Tx` | `e₀₂` | pixels | `x ↦ x + tx` |
//! | `Ty` | `e₁₂` | pixels | `y ↦ y + ty` |
//! | `S`  | `diag(1,1,0)` (projective: `diag(1/3,1/3,−2/3)`) | log-scale | `(x,y) ↦ eˢ (x,y)` |
//! | `H₁` | `diag(1,−1,0)` | log-stretch | `(x,y) ↦ (eʰ x, e⁻ʰ y)` |
//! | `H₂` | `[[0,1,0],[1,0,0],[0,0,0]]` | shear | symmetric shear |
//! | `P₁` | `e₂₀` | 1/pixels | perspective along x |
//! | `P₂` | `e₂₁` | 1/pixels | perspective along y |
//!
//! Each group takes a prefix of `R, Tx, Ty, S, H₁, H₂, P₁, P₂`, except translation
//! (`Tx, Ty`): rotation `R`; rigid `R, Tx, Ty`; similarity `R, Tx, Ty, S`; affine
//! `R, Tx, Ty, S, H₁, H₂`; projective all eight. This is the basis of the ManiFool reference
//! code for every group but projective, where the reference uses raw matrix entries; here the
//! projective algebra is the affine one plus `P₁, P₂`, with the trace-free scale generator, so it
//! spans `sl(3)` and `exp` lands in `SL(3)` (determinant 1). Adding a multiple of the identity
//! to an algebra element does not change the action, so projective and affine parameters with
//! `P₁ = P₂ = 0` give the same warp.
//!
//! Because sampling is backward, the image content moves the opposite way to `A`: a positive
//! `tx` moves the content left, a positive `S` shrinks it, and a positive `θ` turns it
//! counter-clockwise as displayed (`y` down): `θ = π/2` on a square image is NumPy's
//! `np.rot90(image)` (`k = 1`).

use std::str::FromStr;

use nalgebra::Matrix3;

use crate::error::{Error, Result};
use crate::linalg::{expm, logm};

/// One of the six transform groups, each a subgroup of the projective group of the plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransformGroup {
    /// Translations `(tx, ty)` in pixels (2 parameters).
    Translation,
    /// Rotations about the image centre, `θ` in radians (1 parameter).
    Rotation,
    /// Rotation and translation, `(θ, tx, ty)` (3 parameters, SE(2)).
    Rigid,
    /// Rotation, translation and isotropic log-scale, `(θ, tx, ty, s)` (4 parameters).
    Similarity,
    /// Similarity plus the two trace-free symmetric shears, `(θ, tx, ty, s, h₁, h₂)` (6 parameters).
    Affine,
    /// Affine plus two perspective terms, `(θ, tx, ty, s, h₁, h₂, p₁, p₂)` (8 parameters, SL(3)).
    Projective,
}

/// Index of each generator in the full basis `R, Tx, Ty, S, H₁, H₂, P₁, P₂`.
const BASIS_ROTATION: usize = 0;
const BASIS_TX: usize = 1;
const BASIS_TY: usize = 2;

impl TransformGroup {
    /// All six groups, smallest first.
    pub const ALL: [TransformGroup; 6] = [
        TransformGroup::Translation,
        TransformGroup::Rotation,
        TransformGroup::Rigid,
        TransformGroup::Similarity,
        TransformGroup::Affine,
        TransformGroup::Projective,
    ];

    /// Lower-case name as accepted by [`FromStr`]: `"translation"`, `"rotation"`, `"rigid"`,
    /// `"similarity"`, `"affine"` or `"projective"`.
    pub fn name(self) -> &'static str {
        match self {
            TransformGroup::Translation => "translation",
            TransformGroup::Rotation => "rotation",
            TransformGroup::Rigid => "rigid",
            TransformGroup::Similarity => "similarity",
            TransformGroup::Affine => "affine",
            TransformGroup::Projective => "projective",
        }
    }

    /// Number of parameters `P` (the dimension of the group).
    pub fn dim(self) -> usize {
        self.basis_indices().len()
    }

    /// Short names of the parameters, in order (e.g. `["theta", "tx", "ty"]` for rigid).
    pub fn param_names(self) -> Vec<&'static str> {
        const NAMES: [&str; 8] = ["theta", "tx", "ty", "s", "h1", "h2", "p1", "p2"];
        self.basis_indices().iter().map(|&k| NAMES[k]).collect()
    }

    /// The `P` generators `Gᵢ` (3×3, acting on centred homogeneous pixel coordinates), in
    /// parameter order; see the module documentation for the table.
    pub fn generators(self) -> Vec<Matrix3<f64>> {
        self.basis_indices()
            .iter()
            .map(|&k| self.basis_matrix(k))
            .collect()
    }

    /// The algebra element `Σ θᵢ Gᵢ`; fails unless `params.len() == dim()`.
    pub fn algebra(self, params: &[f64]) -> Result<Matrix3<f64>> {
        self.check_params(params.len(), 1)?;
        Ok(self
            .generators()
            .iter()
            .zip(params)
            .fold(Matrix3::zeros(), |acc, (g, &t)| acc + g * t))
    }

    /// The group element `exp(Σ θᵢ Gᵢ)` (exact matrix exponential, scaling and squaring);
    /// fails unless `params.len() == dim()`. `exp(0)` is exactly the identity and pure
    /// translations are exact.
    pub fn exp(self, params: &[f64]) -> Result<Matrix3<f64>> {
        Ok(expm(&self.algebra(params)?))
    }

    /// Parameters `θ` with `exp(Σ θᵢ Gᵢ) = m` (as a warp), using the principal matrix
    /// logarithm, so rotations must be below π in magnitude.
    ///
    /// `m` may be given up to a non-zero scale factor (it is normalised to `m[(2,2)] = 1` for the
    /// affine groups and to determinant 1 for the projective group). Fails when `m` has no real
    /// principal logarithm or is not (to 1e-8 relative) an element of this group.
    pub fn log(self, m: &Matrix3<f64>) -> Result<Vec<f64>> {
        let fail = |reason: String| Error::Logarithm {
            group: self.name(),
            reason,
        };
        let normalised = match self {
            TransformGroup::Projective => {
                let det = m.determinant();
                if det == 0.0 || !det.is_finite() {
                    return Err(fail("matrix is singular".into()));
                }
                m / det.cbrt()
            }
            _ => {
                let scale = m[(2, 2)];
                if scale == 0.0 || !scale.is_finite() {
                    return Err(fail("matrix has m[2][2] = 0".into()));
                }
                m / scale
            }
        };
        let l = logm(&normalised).ok_or_else(|| {
            fail("no real principal logarithm (rotation of π or a negative eigenvalue)".into())
        })?;
        // The basis is orthogonal in the Frobenius inner product, so coordinates are projections.
        let generators = self.generators();
        let params: Vec<f64> = generators
            .iter()
            .map(|g| l.dot(g) / g.norm_squared())
            .collect();
        let residual = generators
            .iter()
            .zip(&params)
            .fold(l, |acc, (g, &t)| acc - g * t)
            .norm();
        if residual > 1e-8 * l.norm().max(1.0) {
            return Err(fail(format!(
                "matrix is not in the group (logarithm residual {residual:.3e})"
            )));
        }
        Ok(params)
    }

    /// Checks that `len` values hold `n` parameter vectors.
    pub(crate) fn check_params(self, len: usize, n: usize) -> Result<()> {
        if len == self.dim() * n {
            Ok(())
        } else {
            Err(Error::ParamCount {
                group: self.name(),
                expected: self.dim() * n,
                got: len,
            })
        }
    }

    /// Checks that `len` values hold one parameter vector for a whole batch of `n` images or
    /// one per image (image-major); the error names `dim()` as the count expected.
    pub(crate) fn check_shared_params(self, len: usize, n: usize) -> Result<()> {
        let dim = self.dim();
        if len == dim || len == dim * n {
            Ok(())
        } else {
            Err(Error::ParamCount {
                group: self.name(),
                expected: dim,
                got: len,
            })
        }
    }

    /// Image `i`'s parameter vector in `params`, which passed [`Self::check_shared_params`].
    pub(crate) fn image_params(self, params: &[f64], i: usize) -> &[f64] {
        let dim = self.dim();
        if params.len() == dim {
            params
        } else {
            &params[i * dim..(i + 1) * dim]
        }
    }

    /// Which entries of the full basis `R, Tx, Ty, S, H₁, H₂, P₁, P₂` this group uses.
    fn basis_indices(self) -> &'static [usize] {
        match self {
            TransformGroup::Translation => &[BASIS_TX, BASIS_TY],
            TransformGroup::Rotation => &[BASIS_ROTATION],
            TransformGroup::Rigid => &[0, 1, 2],
            TransformGroup::Similarity => &[0, 1, 2, 3],
            TransformGroup::Affine => &[0, 1, 2, 3, 4, 5],
            TransformGroup::Projective => &[0, 1, 2, 3, 4, 5, 6, 7],
        }
    }

    /// Generator `k` of the full basis, with the trace-free scale for the projective group.
    fn basis_matrix(self, k: usize) -> Matrix3<f64> {
        let third = 1.0 / 3.0;
        #[rustfmt::skip]
        let m = match k {
            0 => Matrix3::new(0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0),
            1 => Matrix3::new(0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
            2 => Matrix3::new(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0),
            3 if self == TransformGroup::Projective => {
                Matrix3::new(third, 0.0, 0.0, 0.0, third, 0.0, 0.0, 0.0, -2.0 * third)
            }
            3 => Matrix3::new(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0),
            4 => Matrix3::new(1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0),
            5 => Matrix3::new(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0),
            6 => Matrix3::new(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0),
            7 => Matrix3::new(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0),
            _ => unreachable!("the full basis has 8 generators"),
        };
        m
    }
}

display_by_name!(TransformGroup);

impl FromStr for TransformGroup {
    type Err = Error;

    /// Parses a group name, ignoring ASCII case and surrounding whitespace.
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        TransformGroup::ALL
            .into_iter()
            .find(|g| g.name() == lower)
            .ok_or_else(|| Error::UnknownGroup(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Non-identity parameters for each group, moderate in size (pixels / radians).
    fn sample_params(group: TransformGroup) -> Vec<f64> {
        let full = [0.3, 2.5, -1.5, 0.1, -0.08, 0.12, 0.004, -0.003];
        match group {
            TransformGroup::Translation => vec![2.5, -1.5],
            _ => full[..group.dim()].to_vec(),
        }
    }

    #[test]
    fn names_round_trip() {
        for g in TransformGroup::ALL {
            assert_eq!(g.name().parse::<TransformGroup>().unwrap(), g);
            assert_eq!(g.to_string(), g.name());
        }
        assert_eq!(
            " Affine ".parse::<TransformGroup>().unwrap(),
            TransformGroup::Affine
        );
        assert!(matches!(
            "shear".parse::<TransformGroup>(),
            Err(Error::UnknownGroup(_))
        ));
    }

    #[test]
    fn dims_and_generators() {
        let dims: Vec<usize> = TransformGroup::ALL.iter().map(|g| g.dim()).collect();
        assert_eq!(dims, [2, 1, 3, 4, 6, 8]);
        for g in TransformGroup::ALL {
            assert_eq!(g.generators().len(), g.dim());
            assert_eq!(g.param_names().len(), g.dim());
        }
    }

    #[test]
    fn basis_is_orthogonal() {
        for g in TransformGroup::ALL {
            let gens = g.generators();
            for (i, a) in gens.iter().enumerate() {
                for b in &gens[i + 1..] {
                    assert_eq!(a.dot(b), 0.0, "{g}");
                }
            }
        }
    }

    #[test]
    fn projective_algebra_is_trace_free() {
        for gen in TransformGroup::Projective.generators() {
            assert!(gen.trace().abs() < 1e-15);
        }
        let m = TransformGroup::Projective
            .exp(&sample_params(TransformGroup::Projective))
            .unwrap();
        assert!((m.determinant() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn exp_of_zero_is_identity() {
        for g in TransformGroup::ALL {
            assert_eq!(g.exp(&vec![0.0; g.dim()]).unwrap(), Matrix3::identity());
        }
    }

    #[test]
    fn exp_of_negative_is_inverse() {
        for g in TransformGroup::ALL {
            let p = sample_params(g);
            let minus: Vec<f64> = p.iter().map(|t| -t).collect();
            let product = g.exp(&p).unwrap() * g.exp(&minus).unwrap();
            assert!((product - Matrix3::identity()).norm() < 1e-6, "{g}");
            assert!((product - Matrix3::identity()).norm() < 1e-12, "{g}");
        }
    }

    #[test]
    fn exp_of_rotation_is_rotation_matrix() {
        for theta in [0.0, 0.3, -1.2, 3.0] {
            let m = TransformGroup::Rotation.exp(&[theta]).unwrap();
            let (s, c) = theta.sin_cos();
            let expected = Matrix3::new(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0);
            assert!((m - expected).norm() < 1e-12);
        }
    }

    #[test]
    fn exp_of_translation_is_exact() {
        let m = TransformGroup::Translation.exp(&[3.0, -2.0]).unwrap();
        assert_eq!(
            m,
            Matrix3::new(1.0, 0.0, 3.0, 0.0, 1.0, -2.0, 0.0, 0.0, 1.0)
        );
    }

    #[test]
    fn exp_of_scale_is_isotropic_scaling() {
        let s = 0.4f64;
        let m = TransformGroup::Similarity.exp(&[0.0, 0.0, 0.0, s]).unwrap();
        let expected = Matrix3::new(s.exp(), 0.0, 0.0, 0.0, s.exp(), 0.0, 0.0, 0.0, 1.0);
        assert!((m - expected).norm() < 1e-12);
        // The projective group's trace-free scale gives the same warp up to a factor.
        let p = TransformGroup::Projective
            .exp(&[0.0, 0.0, 0.0, s, 0.0, 0.0, 0.0, 0.0])
            .unwrap();
        assert!((p / p[(2, 2)] - expected).norm() < 1e-12);
    }

    #[test]
    fn smaller_groups_are_prefixes() {
        let affine = sample_params(TransformGroup::Affine);
        let m = TransformGroup::Affine
            .exp(&[affine[0], affine[1], affine[2], affine[3], 0.0, 0.0])
            .unwrap();
        let s = TransformGroup::Similarity.exp(&affine[..4]).unwrap();
        assert!((m - s).norm() < 1e-14);
        let mut proj = affine.clone();
        proj.extend([0.0, 0.0]);
        let p = TransformGroup::Projective.exp(&proj).unwrap();
        assert!((p / p[(2, 2)] - TransformGroup::Affine.exp(&affine).unwrap()).norm() < 1e-12);
    }

    #[test]
    fn compose_with_inverse_is_identity() {
        for g in TransformGroup::ALL {
            let m = g.exp(&sample_params(g)).unwrap();
            let inv = m.try_inverse().unwrap();
            assert!((m * inv - Matrix3::identity()).norm() < 1e-6, "{g}");
            assert!((inv * m - Matrix3::identity()).norm() < 1e-6, "{g}");
        }
    }

    #[test]
    fn log_inverts_exp() {
        for g in TransformGroup::ALL {
            let p = sample_params(g);
            let m = g.exp(&p).unwrap();
            let back = g.log(&m).unwrap();
            for (a, b) in p.iter().zip(&back) {
                assert!((a - b).abs() < 1e-9, "{g}: {p:?} vs {back:?}");
            }
            // A scaled matrix is the same warp.
            let back = g.log(&(m * 2.5)).unwrap();
            for (a, b) in p.iter().zip(&back) {
                assert!((a - b).abs() < 1e-9, "{g} scaled");
            }
        }
    }

    #[test]
    fn log_rejects_matrices_outside_the_group() {
        let affine = TransformGroup::Affine
            .exp(&sample_params(TransformGroup::Affine))
            .unwrap();
        assert!(matches!(
            TransformGroup::Similarity.log(&affine),
            Err(Error::Logarithm { .. })
        ));
        let half_turn = Matrix3::new(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0);
        assert!(TransformGroup::Rotation.log(&half_turn).is_err());
    }

    #[test]
    fn wrong_param_count_is_an_error() {
        let err = TransformGroup::Rigid.exp(&[0.1, 0.2]).unwrap_err();
        assert_eq!(
            err,
            Error::ParamCount {
                group: "rigid",
                expected: 3,
                got: 2
            }
        );
    }
}
