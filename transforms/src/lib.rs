//! Differentiable image warps for geometric robustness audits: the six transform groups of
//! ManiFool (translation to projective) with exponential and logarithm maps, backward warping
//! of `f32` image batches (NCHW or NHWC, bilinear or nearest, zero / replicate / reflect
//! borders), dense stAdv flow fields with their smoothness loss, analytic Jacobians and
//! vector–Jacobian products, and the image-space metric and path lengths on a group.
//!
//! # Conventions
//!
//! - **Pixels.** Pixel centres sit at integer coordinates: `x` is the column in `0..w−1`, `y`
//!   the row in `0..h−1`, `y` pointing down.
//! - **Backward warping.** Output pixel `p` takes the input's value at a source point `q(p)`:
//!   `q = A·p` for a 3×3 matrix `A` in centred homogeneous coordinates (origin at the image
//!   centre `((w−1)/2, (h−1)/2)`), `q = p + flow(p)` for a flow. So `A` maps output to input
//!   coordinates and `warp(warp(x, A), B) = warp(x, A·B)`.
//! - **Parameters.** Translations in pixels, angles in radians, scales and stretches as logs;
//!   see [`group`] for the generator basis.
//! - **Precision.** Images are `f32`; coordinates, parameters, flows and derivatives are `f64`.
//!   Interpolation runs in `f64` and rounds once.
//! - **Batches.** One [`Batch`] of `n` images; warps take one transform (or flow) per image or
//!   one for all, and work is split across images with rayon.
//!
//! # Example
//!
//! One ManiFool-style tangent step: rotate a batch, then get `Jᵀw` for a gradient `w` of the
//! classifier at the rotated images.
//!
//! ```
//! use transforms::{Batch, GroupWarp, ImageLayout, ImageShape, Sampling, TangentSide,
//!                  TransformGroup, Warp};
//!
//! let shape = ImageShape::new(1, 3, 8, 8);
//! let pixels: Vec<f32> = (0..shape.len()).map(|k| (k % 7) as f32 / 7.0).collect();
//! let batch = Batch::new(&pixels, shape, ImageLayout::Nchw)?;
//!
//! let group = TransformGroup::Rigid; // (θ radians, tx px, ty px)
//! let a0 = group.exp(&[0.1, 0.5, -0.25])?;
//! let chart = GroupWarp::tangent(group, vec![a0], TangentSide::Left);
//! let warped = chart.apply(&batch, Sampling::default())?;
//! assert_eq!(warped.len(), shape.len());
//!
//! let w = vec![1.0f32; shape.len()]; // ∂g/∂(warped image), from the model
//! let jt_w = chart.vjp(&batch, Sampling::default(), &w)?;
//! assert_eq!(jt_w.len(), group.dim());
//! // The step exp(Δθ)·A₀ maps back to the group: T ← group.exp(Δθ) · A₀.
//! # Ok::<(), transforms::Error>(())
//! ```

#![warn(missing_docs)]

/// Implements `Display` for types that have a `name()`, writing that name.
macro_rules! display_by_name {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

pub mod error;
pub mod flow;
pub mod geodesic;
pub mod group;
pub mod group_warp;
pub mod homography;
pub mod interval;
pub mod layout;
mod linalg;
pub mod sampling;
pub mod smoothness;
#[cfg(test)]
mod testutil;
pub mod warp;

pub use error::{Error, Result};
pub use flow::{Flow, FlowStats};
pub use geodesic::{geodesic_score, image_norms, path_length, path_times, PathMethod, PathSteps};
pub use group::TransformGroup;
pub use group_warp::{GroupWarp, TangentSide};
pub use homography::{centre, compose, inverse, map_pixel, to_pixel_matrix, MatrixWarp};
pub use interval::{
    rotation_bounds, similarity_matrix, warp_bounds, warp_linear_bounds, LinearBounds, ParamBox,
};
pub use layout::{convert_layout, Batch, ImageLayout, ImageShape};
pub use nalgebra;
pub use sampling::{Border, Interpolation, Sampling};
pub use smoothness::{FlowSmoothness, Neighbourhood};
pub use warp::Warp;
