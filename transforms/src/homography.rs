//! 3×3 transform matrices acting on pixel coordinates, and the warp they define.
//!
//! # Convention
//!
//! A matrix `A` acts on homogeneous **centred** pixel coordinates `p̃ = (x − cx, y − cy, 1)`
//! with `(cx, cy) = ((w−1)/2, (h−1)/2)`, `x` the column and `y` the row (pixel centres at
//! integers, `y` down). Warping is backward: the output pixel `p` takes the input's value at
//! `A·p` (after dividing by the third homogeneous coordinate),
//!
//! ```text
//! warp(image, A)(p) = image(A·p).
//! ```
//!
//! So `A` maps output coordinates to input coordinates, and warping twice composes left to
//! right: `warp(warp(image, A), B) = warp(image, A·B)` (see [`compose`]).

use nalgebra::{Matrix3, Vector3};

use crate::error::{Error, Result};
use crate::layout::ImageShape;
use crate::warp::Warp;

/// The image centre `[cx, cy] = [(w−1)/2, (h−1)/2]` in pixel coordinates: the origin of the
/// transform groups.
pub fn centre(h: usize, w: usize) -> [f64; 2] {
    [(w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0]
}

/// The input point `[x, y]` (pixel coordinates) that output pixel `(x, y)` of an `h × w` image
/// samples under `m`: centre, multiply, divide by the homogeneous coordinate, un-centre.
pub fn map_pixel(m: &Matrix3<f64>, x: f64, y: f64, h: usize, w: usize) -> [f64; 2] {
    let [cx, cy] = centre(h, w);
    let v = m * Vector3::new(x - cx, y - cy, 1.0);
    [v.x / v.z + cx, v.y / v.z + cy]
}

/// The single matrix whose warp equals warping by `first`, then by `second`:
/// `warp(warp(image, first), second) = warp(image, compose(first, second))`.
/// It is the product `first · second`.
pub fn compose(first: &Matrix3<f64>, second: &Matrix3<f64>) -> Matrix3<f64> {
    first * second
}

/// The inverse transform, so that `compose(m, inverse(m)) = I`; fails when `m` is singular.
pub fn inverse(m: &Matrix3<f64>) -> Result<Matrix3<f64>> {
    m.try_inverse().ok_or(Error::Singular)
}

/// Re-expresses a centred-coordinate matrix as one acting on raw pixel coordinates
/// `(x, y, 1)` (origin at pixel `(0, 0)`), as used by e.g. OpenCV or scikit-image
/// `warp(inverse_map=...)`: `C · m · C⁻¹` with `C` the translation by the centre.
pub fn to_pixel_matrix(m: &Matrix3<f64>, h: usize, w: usize) -> Matrix3<f64> {
    let [cx, cy] = centre(h, w);
    let c = Matrix3::new(1.0, 0.0, cx, 0.0, 1.0, cy, 0.0, 0.0, 1.0);
    let c_inv = Matrix3::new(1.0, 0.0, -cx, 0.0, 1.0, -cy, 0.0, 0.0, 1.0);
    c * m * c_inv
}

/// Backward warp by one 3×3 matrix per image (or one matrix for the whole batch); see the
/// module documentation for the convention.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixWarp {
    matrices: Vec<Matrix3<f64>>,
}

impl MatrixWarp {
    /// One matrix per image, or a single matrix applied to every image.
    pub fn new(matrices: Vec<Matrix3<f64>>) -> Self {
        Self { matrices }
    }

    /// The same matrix for every image.
    pub fn uniform(m: Matrix3<f64>) -> Self {
        Self { matrices: vec![m] }
    }

    /// The matrices as given (length 1 or the batch size).
    pub fn matrices(&self) -> &[Matrix3<f64>] {
        &self.matrices
    }

    /// The matrix used for image `i`.
    pub fn matrix(&self, i: usize) -> &Matrix3<f64> {
        if self.matrices.len() == 1 {
            &self.matrices[0]
        } else {
            &self.matrices[i]
        }
    }
}

impl Warp for MatrixWarp {
    fn check(&self, shape: &ImageShape) -> Result<()> {
        let got = self.matrices.len();
        if got == 1 || got == shape.n {
            Ok(())
        } else {
            Err(Error::WarpCount {
                what: "matrix warp",
                batch: shape.n,
                got,
            })
        }
    }

    fn source(&self, image: usize, x: usize, y: usize, shape: &ImageShape) -> [f64; 2] {
        map_pixel(self.matrix(image), x as f64, y as f64, shape.h, shape.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_is_between_middle_pixels() {
        assert_eq!(centre(16, 20), [9.5, 7.5]);
        assert_eq!(centre(3, 5), [2.0, 1.0]);
    }

    #[test]
    fn identity_maps_pixels_to_themselves_exactly() {
        let id = Matrix3::identity();
        for (x, y) in [(0.0, 0.0), (19.0, 15.0), (3.0, 7.0)] {
            assert_eq!(map_pixel(&id, x, y, 16, 20), [x, y]);
        }
    }

    #[test]
    fn rotation_turns_about_the_centre() {
        // θ = π/2: (x', y') ↦ (−y', x') in centred coordinates.
        let r = Matrix3::new(0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0);
        // 5×5 image, centre (2, 2): pixel (4, 2) is (2, 0) centred ↦ (0, 2) ↦ pixel (2, 4).
        assert_eq!(map_pixel(&r, 4.0, 2.0, 5, 5), [2.0, 4.0]);
        assert_eq!(map_pixel(&r, 2.0, 2.0, 5, 5), [2.0, 2.0]);
    }

    #[test]
    fn compose_applies_first_matrix_last_to_points() {
        // warp(warp(x, A), B)(p) = warp(x, A)(B p) = x(A B p).
        let a = Matrix3::new(1.0, 0.2, 3.0, -0.1, 0.9, 1.0, 0.0, 0.0, 1.0);
        let b = Matrix3::new(0.8, 0.0, -2.0, 0.3, 1.1, 0.5, 0.001, 0.0, 1.0);
        let ab = compose(&a, &b);
        let (h, w) = (10, 12);
        let via_b = map_pixel(&b, 4.0, 6.0, h, w);
        let two_step = map_pixel(&a, via_b[0], via_b[1], h, w);
        let one_step = map_pixel(&ab, 4.0, 6.0, h, w);
        assert!((two_step[0] - one_step[0]).abs() < 1e-12);
        assert!((two_step[1] - one_step[1]).abs() < 1e-12);
    }

    #[test]
    fn inverse_undoes() {
        let a = Matrix3::new(1.0, 0.2, 3.0, -0.1, 0.9, 1.0, 0.002, 0.0, 1.0);
        let inv = inverse(&a).unwrap();
        assert!((compose(&a, &inv) - Matrix3::identity()).norm() < 1e-12);
        assert_eq!(inverse(&Matrix3::zeros()), Err(Error::Singular));
    }

    #[test]
    fn pixel_matrix_agrees_with_map_pixel() {
        let a = Matrix3::new(1.0, 0.2, 3.0, -0.1, 0.9, 1.0, 0.002, 0.0, 1.0);
        let p = to_pixel_matrix(&a, 10, 12) * Vector3::new(4.0, 6.0, 1.0);
        let q = map_pixel(&a, 4.0, 6.0, 10, 12);
        assert!((p.x / p.z - q[0]).abs() < 1e-12);
        assert!((p.y / p.z - q[1]).abs() < 1e-12);
    }

    #[test]
    fn warp_count_is_checked() {
        let w = MatrixWarp::new(vec![Matrix3::identity(); 2]);
        assert!(w.check(&ImageShape::new(2, 1, 3, 3)).is_ok());
        assert!(w.check(&ImageShape::new(3, 1, 3, 3)).is_err());
        assert!(MatrixWarp::uniform(Matrix3::identity())
            .check(&ImageShape::new(3, 1, 3, 3))
            .is_ok());
    }
}
