//! Small dense matrix functions: exponential, its Fréchet derivative, square root and logarithm.
//!
//! All work on fixed-size `f64` matrices. The exponential uses scaling and squaring with a
//! Taylor series, which keeps nilpotent inputs exact: the exponential of a pure translation
//! generator is exactly `[[1, 0, tx], [0, 1, ty], [0, 0, 1]]`, so integer translations sample
//! exactly on the pixel grid.

use nalgebra::{Matrix3, SMatrix};

/// Taylor terms after scaling; with `‖X‖ ≤ 1/2` the remainder is below `0.5^21 / 21! ≈ 1e-26`.
const TAYLOR_TERMS: usize = 20;

/// Matrix exponential `exp(a)` by scaling and squaring with a Taylor series.
pub(crate) fn expm<const D: usize>(a: &SMatrix<f64, D, D>) -> SMatrix<f64, D, D> {
    let norm = a.norm();
    if !norm.is_finite() {
        return SMatrix::from_element(f64::NAN);
    }
    // Scale by a power of two (exact) until the Frobenius norm is at most 1/2.
    let mut squarings = 0i32;
    while norm / f64::powi(2.0, squarings) > 0.5 {
        squarings += 1;
    }
    let x = a / f64::powi(2.0, squarings);
    let mut result = SMatrix::<f64, D, D>::identity();
    let mut term = SMatrix::<f64, D, D>::identity();
    for k in 1..=TAYLOR_TERMS {
        term = term * x / k as f64;
        result += term;
    }
    for _ in 0..squarings {
        result = result * result;
    }
    result
}

/// Fréchet derivative of the exponential at `x` in direction `e`:
/// `d/dt exp(x + t e)` at `t = 0`, i.e. `∫₀¹ exp(s x) e exp((1−s) x) ds`.
///
/// Computed exactly (to rounding) as the upper-right block of `exp([[x, e], [0, x]])`.
pub(crate) fn expm_frechet(x: &Matrix3<f64>, e: &Matrix3<f64>) -> Matrix3<f64> {
    let mut block = SMatrix::<f64, 6, 6>::zeros();
    block.fixed_view_mut::<3, 3>(0, 0).copy_from(x);
    block.fixed_view_mut::<3, 3>(3, 3).copy_from(x);
    block.fixed_view_mut::<3, 3>(0, 3).copy_from(e);
    expm(&block).fixed_view::<3, 3>(0, 3).into_owned()
}

/// Principal square root by the Denman–Beavers iteration; `None` when it does not converge
/// (an eigenvalue on the closed negative real axis) or an iterate is singular.
pub(crate) fn sqrtm(a: &Matrix3<f64>) -> Option<Matrix3<f64>> {
    let mut y = *a;
    let mut z = Matrix3::identity();
    for _ in 0..100 {
        let y_inv = y.try_inverse()?;
        let z_inv = z.try_inverse()?;
        let y_next = (y + z_inv) * 0.5;
        let z_next = (z + y_inv) * 0.5;
        let change = (y_next - y).norm();
        y = y_next;
        z = z_next;
        if !change.is_finite() {
            return None;
        }
        if change <= 1e-15 * y.norm().max(1.0) {
            return ((y * y - a).norm() <= 1e-10 * a.norm().max(1.0)).then_some(y);
        }
    }
    None
}

/// Principal real logarithm by inverse scaling and squaring; `None` when `a` has no real
/// principal logarithm (an eigenvalue on the closed negative real axis).
pub(crate) fn logm(a: &Matrix3<f64>) -> Option<Matrix3<f64>> {
    let identity = Matrix3::identity();
    let mut x = *a;
    let mut roots = 0i32;
    while (x - identity).norm() > 0.25 {
        x = sqrtm(&x)?;
        roots += 1;
        if roots > 60 {
            return None;
        }
    }
    // log x = 2 atanh(z) = 2 Σ z^(2j+1) / (2j+1) with z = (x − I)(x + I)⁻¹, ‖z‖ ≲ 0.15.
    let z = (x - identity) * (x + identity).try_inverse()?;
    let z2 = z * z;
    let mut power = z;
    let mut series = z;
    for j in 1..=12 {
        power *= z2;
        series += power / (2 * j + 1) as f64;
    }
    Some(series * (2.0 * f64::powi(2.0, roots)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(theta: f64) -> Matrix3<f64> {
        Matrix3::new(
            theta.cos(),
            -theta.sin(),
            0.0,
            theta.sin(),
            theta.cos(),
            0.0,
            0.0,
            0.0,
            1.0,
        )
    }

    #[test]
    fn exp_of_zero_is_identity_exactly() {
        assert_eq!(expm(&Matrix3::zeros()), Matrix3::identity());
    }

    #[test]
    fn exp_of_translation_is_exact() {
        let x = Matrix3::new(0.0, 0.0, 3.0, 0.0, 0.0, -7.0, 0.0, 0.0, 0.0);
        let expected = Matrix3::new(1.0, 0.0, 3.0, 0.0, 1.0, -7.0, 0.0, 0.0, 1.0);
        assert_eq!(expm(&x), expected);
    }

    #[test]
    fn exp_of_rotation_generator_is_rotation() {
        for theta in [0.1, 1.0, 3.0, -2.5, 10.0] {
            let x = Matrix3::new(0.0, -theta, 0.0, theta, 0.0, 0.0, 0.0, 0.0, 0.0);
            assert!((expm(&x) - rotation(theta)).norm() < 1e-12, "theta {theta}");
        }
    }

    #[test]
    fn exp_of_diagonal_is_elementwise() {
        let x = Matrix3::from_diagonal(&nalgebra::Vector3::new(0.3, -1.2, 2.0));
        let expected = Matrix3::from_diagonal(&nalgebra::Vector3::new(
            0.3f64.exp(),
            (-1.2f64).exp(),
            2.0f64.exp(),
        ));
        assert!((expm(&x) - expected).norm() < 1e-12);
    }

    #[test]
    fn frechet_matches_central_difference() {
        let x = Matrix3::new(0.1, -0.4, 2.0, 0.5, 0.2, -1.0, 0.01, -0.02, -0.3);
        let e = Matrix3::new(0.3, 0.1, -0.2, 0.0, 1.0, 0.5, 0.02, 0.0, 0.1);
        let h = 1e-6;
        let fd = (expm(&(x + e * h)) - expm(&(x - e * h))) / (2.0 * h);
        let analytic = expm_frechet(&x, &e);
        assert!((fd - analytic).norm() < 1e-8 * analytic.norm());
    }

    #[test]
    fn frechet_at_zero_is_direction() {
        let e = Matrix3::new(0.3, 0.1, -0.2, 0.0, 1.0, 0.5, 0.02, 0.0, 0.1);
        assert!((expm_frechet(&Matrix3::zeros(), &e) - e).norm() < 1e-15);
    }

    #[test]
    fn sqrt_squares_back() {
        let a = expm(&Matrix3::new(
            0.1, -2.0, 5.0, 2.0, 0.3, 1.0, 0.001, 0.0, -0.4,
        ));
        let r = sqrtm(&a).unwrap();
        assert!((r * r - a).norm() < 1e-10 * a.norm());
    }

    #[test]
    fn log_inverts_exp() {
        let cases = [
            Matrix3::new(0.0, -0.5, 3.0, 0.5, 0.0, -2.0, 0.0, 0.0, 0.0),
            Matrix3::new(0.2, -3.0, 3.0, 3.0, 0.2, -2.0, 0.0, 0.0, 0.0),
            Matrix3::new(0.1, 0.3, 1.0, -0.2, -0.1, 4.0, 0.01, -0.02, 0.0),
            Matrix3::zeros(),
        ];
        for x in cases {
            let l = logm(&expm(&x)).unwrap();
            assert!((l - x).norm() < 1e-9 * x.norm().max(1.0), "{x} vs {l}");
        }
    }

    #[test]
    fn log_of_exact_half_turn_fails() {
        // Eigenvalues −1, −1: no real principal logarithm.
        let half_turn = Matrix3::new(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0);
        assert!(logm(&half_turn).is_none());
    }

    #[test]
    fn log_of_rotation_near_half_turn() {
        for theta in [3.1, -3.1, 3.13] {
            let l = logm(&rotation(theta)).unwrap();
            assert!((l[(1, 0)] - theta).abs() < 1e-9, "{theta}: {l}");
        }
    }
}
