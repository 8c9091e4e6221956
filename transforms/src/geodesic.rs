//! Lengths of transform paths measured in image space (ManiFool's geodesic score).
//!
//! The path is the one-parameter subgroup `t ↦ exp(t·Σ θᵢ Gᵢ)`, `t ∈ [0, 1]`, from the identity
//! to the transform; its image-space length is `∫₀¹ ‖d/dt warp(x, exp(tθ))‖₂ dt =
//! ∫₀¹ sqrt(θᵀ G(tθ) θ) dt` with `G = JᵀJ` the metric of [`crate::group_warp::GroupWarp::metric`].
//! Two discretisations are offered ([`PathMethod`]) over a grid of `t` values ([`PathSteps`]).
//!
//! ManiFool's score divides the length by `‖x‖₂` ([`geodesic_score`]); lengths are in the units
//! of the images given (e.g. `[0, 1]` pixel values), summed over all channels.
//!
//! This is the length of one particular path, so it over-estimates the true geodesic distance;
//! the chord sum slightly under-estimates that path's own length. To score a transform matrix
//! rather than parameters, take its principal logarithm first with
//! [`crate::group::TransformGroup::log`].

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::group::TransformGroup;
use crate::group_warp::{GroupWarp, TangentSide};
use crate::homography::MatrixWarp;
use crate::layout::Batch;
use crate::sampling::Sampling;
use crate::warp::Warp;

/// How the path `t ∈ [0, 1]` is cut into steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PathSteps {
    /// `k` equal steps in `t`.
    Uniform(usize),
    /// Steps of this Euclidean length in parameter space, `t_k = k·step/‖θ‖` for
    /// `k = 1..⌊‖θ‖/step⌋`, then a last, shorter step to `t = 1`. ManiFool's reference code
    /// uses `0.05`.
    ParamStep(f64),
}

/// How the length of each step is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PathMethod {
    /// Sum of image distances `‖warp(x, exp(t_{k+1}θ)) − warp(x, exp(t_kθ))‖₂` (ManiFool's
    /// reference code). Exact images, so it also sees interpolation effects.
    #[default]
    Chords,
    /// Midpoint rule on the metric: `Σ_k (t_{k+1} − t_k)·‖J(t_mid θ)·θ‖₂`, with the analytic
    /// Jacobian–vector product.
    Metric,
}

/// The `t` grid `0 = t₀ < t₁ < … < t_K = 1` for parameters with Euclidean norm `norm`.
pub fn path_times(steps: PathSteps, norm: f64) -> Result<Vec<f64>> {
    match steps {
        PathSteps::Uniform(0) => Err(Error::PathSteps("uniform steps must be at least 1".into())),
        PathSteps::Uniform(k) => Ok((0..=k).map(|j| j as f64 / k as f64).collect()),
        PathSteps::ParamStep(step) if !(step > 0.0 && step.is_finite()) => Err(Error::PathSteps(
            format!("parameter step must be positive and finite, got {step}"),
        )),
        PathSteps::ParamStep(step) => {
            let mut times = vec![0.0];
            if norm > 0.0 {
                let full = (norm / step).floor() as usize;
                times.extend(
                    (1..=full)
                        .map(|k| k as f64 * step / norm)
                        .filter(|&t| t < 1.0),
                );
                times.push(1.0);
            }
            Ok(times)
        }
    }
}

/// Image-space length of the path `t ↦ warp(x, exp(tθ))`, `t ∈ [0, 1]`, per image.
///
/// `params` holds `P` values (the same `θ` for every image) or `n·P` (image-major). Images are
/// processed in parallel. A zero `θ` has length 0.
pub fn path_length(
    batch: &Batch<'_>,
    group: TransformGroup,
    params: &[f64],
    steps: PathSteps,
    method: PathMethod,
    sampling: Sampling,
) -> Result<Vec<f64>> {
    let shape = batch.shape();
    group.check_shared_params(params.len(), shape.n)?;
    // Validate the schedule once, even for an empty batch.
    path_times(steps, 1.0)?;
    (0..shape.n)
        .into_par_iter()
        .map(|i| {
            let theta = group.image_params(params, i);
            let one = Batch::new(batch.image(i), shape.with_n(1), batch.layout())?;
            image_path_length(&one, group, theta, steps, method, sampling)
        })
        .collect()
}

/// ManiFool's geodesic score: [`path_length`] divided by `‖x‖₂` of each image (0 for an image
/// that is all zeros and a zero path).
pub fn geodesic_score(
    batch: &Batch<'_>,
    group: TransformGroup,
    params: &[f64],
    steps: PathSteps,
    method: PathMethod,
    sampling: Sampling,
) -> Result<Vec<f64>> {
    let lengths = path_length(batch, group, params, steps, method, sampling)?;
    Ok(lengths
        .iter()
        .zip(image_norms(batch))
        .map(|(&l, norm)| if l == 0.0 { 0.0 } else { l / norm })
        .collect())
}

/// Euclidean norm `‖x‖₂` of each image of the batch (all channels).
pub fn image_norms(batch: &Batch<'_>) -> Vec<f64> {
    (0..batch.shape().n)
        .map(|i| {
            batch
                .image(i)
                .iter()
                .map(|&v| (v as f64) * (v as f64))
                .sum::<f64>()
                .sqrt()
        })
        .collect()
}

fn image_path_length(
    one: &Batch<'_>,
    group: TransformGroup,
    theta: &[f64],
    steps: PathSteps,
    method: PathMethod,
    sampling: Sampling,
) -> Result<f64> {
    let norm = theta.iter().map(|t| t * t).sum::<f64>().sqrt();
    if norm == 0.0 {
        return Ok(0.0);
    }
    let times = path_times(steps, norm)?;
    let at = |t: f64| -> Result<nalgebra::Matrix3<f64>> {
        let scaled: Vec<f64> = theta.iter().map(|p| p * t).collect();
        group.exp(&scaled)
    };
    let mut length = 0.0;
    match method {
        PathMethod::Chords => {
            let mut previous = MatrixWarp::uniform(at(times[0])?).apply_f64(one, sampling)?;
            for &t in &times[1..] {
                let next = MatrixWarp::uniform(at(t)?).apply_f64(one, sampling)?;
                length += previous
                    .iter()
                    .zip(&next)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
                    .sqrt();
                previous = next;
            }
        }
        PathMethod::Metric => {
            // d/dt exp(tX) = X·exp(tX): a left tangent step with velocity θ.
            let mut velocity = vec![0.0f64; one.shape().len()];
            for pair in times.windows(2) {
                let mid = 0.5 * (pair[0] + pair[1]);
                let chart = GroupWarp::tangent(group, vec![at(mid)?], TangentSide::Left);
                chart.jvp_into(one, sampling, theta, &mut velocity)?;
                let speed = velocity.iter().map(|v| v * v).sum::<f64>().sqrt();
                length += (pair[1] - pair[0]) * speed;
            }
        }
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{convert_layout, ImageLayout};
    use crate::testutil::{gaussian_images, rel_err, to_f64, SHAPE};

    #[test]
    fn times_follow_the_reference_schedule() {
        let t = path_times(PathSteps::ParamStep(0.05), 0.12).unwrap();
        let expected = [0.0, 0.05 / 0.12, 0.1 / 0.12, 1.0];
        assert_eq!(t.len(), expected.len());
        for (a, b) in t.iter().zip(expected) {
            assert!((a - b).abs() < 1e-15);
        }
        // An exact multiple does not repeat t = 1.
        assert_eq!(
            path_times(PathSteps::ParamStep(0.25), 0.5).unwrap(),
            [0.0, 0.5, 1.0]
        );
        assert_eq!(
            path_times(PathSteps::Uniform(4), 7.0).unwrap(),
            [0.0, 0.25, 0.5, 0.75, 1.0]
        );
        assert!(path_times(PathSteps::Uniform(0), 1.0).is_err());
        assert!(path_times(PathSteps::ParamStep(0.0), 1.0).is_err());
    }

    #[test]
    fn identity_has_zero_length() {
        let data = gaussian_images(SHAPE, ImageLayout::Nchw, 1);
        let batch = Batch::new(&data, SHAPE, ImageLayout::Nchw).unwrap();
        for group in TransformGroup::ALL {
            for method in [PathMethod::Chords, PathMethod::Metric] {
                let zero = vec![0.0; group.dim()];
                let l = path_length(
                    &batch,
                    group,
                    &zero,
                    PathSteps::ParamStep(0.05),
                    method,
                    Sampling::default(),
                )
                .unwrap();
                assert_eq!(l, vec![0.0; SHAPE.n]);
            }
        }
    }

    #[test]
    fn length_grows_along_a_one_parameter_path() {
        let data = gaussian_images(SHAPE, ImageLayout::Nchw, 2);
        let batch = Batch::new(&data, SHAPE, ImageLayout::Nchw).unwrap();
        let direction = [0.1, 0.8, -0.5, 0.05];
        for method in [PathMethod::Chords, PathMethod::Metric] {
            let mut last = vec![0.0; SHAPE.n];
            for scale in [0.25, 0.5, 1.0, 2.0] {
                let theta: Vec<f64> = direction.iter().map(|d| d * scale).collect();
                let l = path_length(
                    &batch,
                    TransformGroup::Similarity,
                    &theta,
                    PathSteps::ParamStep(0.05),
                    method,
                    Sampling::default(),
                )
                .unwrap();
                for (a, b) in l.iter().zip(&last) {
                    assert!(a > b, "{method:?}: {a} after {b}");
                }
                last = l;
            }
        }
    }

    #[test]
    fn chords_and_metric_agree_on_fine_grids() {
        let data = gaussian_images(SHAPE, ImageLayout::Nchw, 3);
        let batch = Batch::new(&data, SHAPE, ImageLayout::Nchw).unwrap();
        for (group, theta) in [
            (TransformGroup::Rotation, vec![0.6]),
            (TransformGroup::Translation, vec![2.5, -1.0]),
            (
                TransformGroup::Projective,
                vec![0.2, 1.0, -1.0, 0.1, 0.05, -0.05, 0.003, 0.002],
            ),
        ] {
            // Both converge to the same integral; at 100 steps they differ by about 2e-3
            // (bilinear sampling makes the velocity jump where samples cross grid lines).
            let steps = PathSteps::Uniform(100);
            let s = Sampling::default();
            let chords = path_length(&batch, group, &theta, steps, PathMethod::Chords, s).unwrap();
            let metric = path_length(&batch, group, &theta, steps, PathMethod::Metric, s).unwrap();
            assert!(
                rel_err(&chords, &metric) < 1e-2,
                "{group}: {chords:?} vs {metric:?}"
            );
        }
    }

    #[test]
    fn metric_velocity_is_the_general_jacobian_times_theta() {
        let data = gaussian_images(SHAPE, ImageLayout::Nchw, 4);
        let batch = Batch::new(&data, SHAPE, ImageLayout::Nchw).unwrap();
        let group = TransformGroup::Affine;
        let theta = [0.3, 1.0, -2.0, 0.1, -0.05, 0.07];
        let t = 0.4;
        let at: Vec<f64> = theta.iter().map(|p| p * t).collect();
        let general = GroupWarp::at_params(group, &at).unwrap();
        let left = GroupWarp::tangent(group, vec![group.exp(&at).unwrap()], TangentSide::Left);
        let mut a = vec![0.0f64; SHAPE.len()];
        let mut b = vec![0.0f64; SHAPE.len()];
        general
            .jvp_into(&batch, Sampling::default(), &theta, &mut a)
            .unwrap();
        left.jvp_into(&batch, Sampling::default(), &theta, &mut b)
            .unwrap();
        assert!(rel_err(&a, &b) < 1e-10);
    }

    #[test]
    fn score_is_length_over_image_norm_and_layout_free() {
        let nchw = gaussian_images(SHAPE, ImageLayout::Nchw, 5);
        let nhwc = convert_layout(&nchw, SHAPE, ImageLayout::Nchw, ImageLayout::Nhwc).unwrap();
        let a = Batch::new(&nchw, SHAPE, ImageLayout::Nchw).unwrap();
        let b = Batch::new(&nhwc, SHAPE, ImageLayout::Nhwc).unwrap();
        let group = TransformGroup::Rigid;
        let theta = [0.2, 1.0, 0.5, -0.3, 0.0, 2.0];
        let steps = PathSteps::ParamStep(0.05);
        let s = Sampling::default();
        let length = path_length(&a, group, &theta, steps, PathMethod::Chords, s).unwrap();
        let score = geodesic_score(&a, group, &theta, steps, PathMethod::Chords, s).unwrap();
        let norms = image_norms(&a);
        for i in 0..SHAPE.n {
            let direct = to_f64(a.image(i)).iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!((norms[i] - direct).abs() < 1e-12);
            assert!((score[i] - length[i] / norms[i]).abs() < 1e-15);
        }
        let other = geodesic_score(&b, group, &theta, steps, PathMethod::Chords, s).unwrap();
        assert!(rel_err(&other, &score) < 1e-12);
        assert!(path_length(&a, group, &theta[..2], steps, PathMethod::Chords, s).is_err());
    }
}
