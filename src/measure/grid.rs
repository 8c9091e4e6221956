//! `grid`: accuracy under the worst rotation × translation on a grid, and
//! under the worst of `k` random ones (Engstrom et al., ICML 2019).
//!
//! A transform `(θ, tx, ty)` is the backward warp `out(p) = in(R(θ)·p + t)`
//! in pixel coordinates centred on the image centre (bilinear, zero fill by
//! default): `R(θ) = exp(θ·G_rot)` of the `transforms` rotation generator,
//! so positive `θ` samples the input rotated by `+θ` and the content turns by
//! `−θ`; `t` moves the content by `−t`.
//!
//! The grid holds `angles` rotations evenly spaced in `[−max_angle,
//! max_angle]` times `shifts × shifts` translations evenly spaced in
//! `[−max_shift, max_shift]` per axis (odd counts include the identity). An
//! image is robust when every grid transform keeps the clean prediction;
//! otherwise the reported transform is the smallest flipping one, ordered by
//! `|θ|`, then `‖t‖₂`, then `θ`, `tx`, `ty` (so the ordering is total and
//! deterministic). Worst-of-k draws `k` transforms uniformly from the same
//! box (per-image seed) and counts the image correct only when all `k` keep
//! the prediction. All transforms of an image go to the model in one call
//! (chunked to bound memory).

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use transforms::{MatrixWarp, Sampling, Warp};

use super::frame::{describe, misclassified, result, warp_error, Clean, Frame};
use super::space::SpacedModel;
use super::Values;
use super::{Better, Context, Counts, Declaration, ImageResult, Measure, Outcome, Output, Summary, Units};
use crate::attack::vector::argmax;
use crate::error::{Error, Result};

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Largest rotation, degrees (both directions).
    pub max_angle: f64,
    /// Rotations on the grid.
    pub angles: usize,
    /// Largest translation per axis, pixels; default 3 px for images of
    /// 28–32 px, else 10% of the side (per axis).
    pub max_shift: Option<f64>,
    /// Translations per axis on the grid.
    pub shifts: usize,
    /// Random draws for worst-of-k (0: skip).
    pub k: usize,
    /// Fill outside the image: `zero`, `replicate` or `reflect`.
    pub border: String,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_angle: 30.0,
            angles: 31,
            max_shift: None,
            shifts: 5,
            k: 10,
            border: "zero".into(),
        }
    }
}

/// One rotation–translation: `θ` in radians, shifts in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RigidTransform {
    /// Rotation, radians.
    pub theta: f64,
    /// Column shift of the sample point, pixels.
    pub tx: f64,
    /// Row shift of the sample point, pixels.
    pub ty: f64,
}

impl RigidTransform {
    /// The warp matrix `[[cos θ, −sin θ, tx], [sin θ, cos θ, ty], [0, 0, 1]]`
    /// (centred coordinates, output → input).
    pub fn matrix(&self) -> transforms::nalgebra::Matrix3<f64> {
        let (s, c) = self.theta.sin_cos();
        transforms::nalgebra::Matrix3::new(c, -s, self.tx, s, c, self.ty, 0.0, 0.0, 1.0)
    }

    /// Translation norm, pixels.
    pub fn shift(&self) -> f64 {
        self.tx.hypot(self.ty)
    }

    /// `|θ|` in degrees when this is a pure rotation (no shift).
    pub fn rotation_deg(&self) -> Option<f64> {
        (self.tx == 0.0 && self.ty == 0.0).then(|| self.theta.to_degrees().abs())
    }

    /// `‖t‖` when this is a pure translation (no rotation).
    pub fn shift_px(&self) -> Option<f64> {
        (self.theta == 0.0).then(|| self.shift())
    }

    /// The "smaller" order: `|θ|`, then `‖t‖`, then `θ`, `tx`, `ty`.
    pub fn order(&self, other: &Self) -> std::cmp::Ordering {
        self.theta
            .abs()
            .total_cmp(&other.theta.abs())
            .then(self.shift().total_cmp(&other.shift()))
            .then(self.theta.total_cmp(&other.theta))
            .then(self.tx.total_cmp(&other.tx))
            .then(self.ty.total_cmp(&other.ty))
    }
}

/// `n` values evenly spaced in `[−max, max]`, symmetric, with an exact 0 in the middle when
/// `n` is odd (`[0]` when `n == 1`).
pub fn linspace(max: f64, n: usize) -> Vec<f64> {
    if n <= 1 {
        return vec![0.0];
    }
    (0..n)
        .map(|i| max * (2 * i as i64 - (n as i64 - 1)) as f64 / (n - 1) as f64)
        .collect()
}

impl Params {
    /// Shift range `(x, y)` in pixels for an `h × w` image.
    pub fn shift_range(&self, h: usize, w: usize) -> (f64, f64) {
        match self.max_shift {
            Some(s) => (s, s),
            None if (28..=32).contains(&h.max(w)) => (3.0, 3.0),
            None => (0.1 * w as f64, 0.1 * h as f64),
        }
    }

    /// The grid for an `h × w` image, rotation-major.
    pub fn grid(&self, h: usize, w: usize) -> Vec<RigidTransform> {
        let (sx, sy) = self.shift_range(h, w);
        self.grid_within(sx, sy)
    }

    /// The grid with shifts up to `sx` and `sy` pixels, rotation-major.
    fn grid_within(&self, sx: f64, sy: f64) -> Vec<RigidTransform> {
        let mut out = Vec::new();
        for theta in linspace(self.max_angle.to_radians(), self.angles) {
            for &tx in &linspace(sx, self.shifts) {
                for &ty in &linspace(sy, self.shifts) {
                    out.push(RigidTransform { theta, tx, ty });
                }
            }
        }
        out
    }

    /// Sampling (bilinear) with the border in force.
    pub fn sampling(&self) -> Result<Sampling> {
        super::frame::parse_sampling("grid", &self.border)
    }
}

/// Predictions of image `image` (values `u`) under each transform, evaluated
/// in model calls of at most `cap` warped images.
pub(super) fn predictions(
    sm: &SpacedModel,
    frame: &Frame,
    u: &[f32],
    transforms: &[RigidTransform],
    sampling: Sampling,
) -> Result<Vec<usize>> {
    let d = frame.d();
    let k = sm.classes();
    let cap = ((1usize << 24) / d.max(1)).max(1);
    let mut preds = Vec::with_capacity(transforms.len());
    for chunk in transforms.chunks(cap) {
        let m = chunk.len();
        let input: Vec<f32> = u.iter().copied().cycle().take(m * d).collect();
        let batch = frame.batch(&input, m)?;
        let warp = MatrixWarp::new(chunk.iter().map(RigidTransform::matrix).collect());
        let warped = warp.apply(&batch, sampling).map_err(warp_error)?;
        let logits = sm.logits(&warped, m)?;
        preds.extend(logits.chunks_exact(k).map(argmax));
    }
    Ok(preds)
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "grid",
        about: "accuracy under the worst rotation × translation on a grid and of k random ones (Engstrom et al.)",
        params: &[
            ("max_angle", "Largest rotation, degrees (both directions)."),
            ("angles", "Rotations on the grid."),
            ("max_shift", "Largest translation per axis, pixels; default 3 px for images of 28–32 px, else 10% of the side (per axis)."),
            ("shifts", "Translations per axis on the grid."),
            ("k", "Random draws for worst-of-k (0: skip)."),
            ("border", "Fill outside the image: `zero`, `replicate` or `reflect`."),
        ],
        headline: &["accuracy", "fooling_rate", "success_rate", "worst_of_k_accuracy"],
        better: &[("accuracy", Better::Higher), ("fooling_rate", Better::Lower), ("success_rate", Better::Lower), ("worst_of_k_accuracy", Better::Higher)],
        histograms: &["angle_deg"],
        values: &[&[
            ("angle_deg", "rotation of the smallest flipping transform, degrees"),
            ("tx", "horizontal shift of that transform, pixels"),
            ("ty", "vertical shift of that transform, pixels"),
            ("shift_px", "length of that shift, pixels"),
            ("adv_pred", "class predicted under that transform"),
            ("grid_flips", "grid transforms that flipped the prediction"),
            ("rotation_flip_deg", "smallest |θ| of a pure rotation on the grid that flipped the prediction, degrees"),
            ("shift_flip_px", "smallest ‖t‖ of a pure translation on the grid that flipped the prediction, pixels"),
            ("worst_of_k_correct", "1 when all k random transforms keep the prediction, else 0"),
            ("random_correct", "1 when the first random transform keeps the prediction, else 0 (when k > 0)"),
        ]],
        units: Units::Chunks,
    };
    const GRADIENTS: bool = false;

    fn validate(&self) -> Result<()> {
        if self.angles == 0 || self.shifts == 0 {
            return Err(Error::Config(
                "grid: angles and shifts must be at least 1".into(),
            ));
        }
        self.sampling()?;
        Ok(())
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let (sm, frame) = Frame::of_context(ctx);
        let (h, w) = (frame.shape.h, frame.shape.w);
        let sampling = self.sampling()?;
        let grid = self.grid(h, w);
        let (sx, sy) = self.shift_range(h, w);
        let max_angle = self.max_angle.to_radians();
        let k = sm.classes();
        let clean = Clean::load(ctx, &sm)?;
        let bar = ctx.progress.bar(clean.n as u64, "grid");
        let mut images = Vec::with_capacity(clean.n);
        for i in 0..clean.n {
            let pred = clean.pred(i, k);
            if misclassified(ctx, i, pred) {
                images.push(result(ctx, i, pred, Outcome::Misclassified, Values::new()));
                bar.inc(1);
                continue;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(ctx.image_seed(i));
            let random: Vec<RigidTransform> = (0..self.k)
                .map(|_| RigidTransform {
                    theta: rng.random_range(-1.0..=1.0) * max_angle,
                    tx: rng.random_range(-1.0..=1.0) * sx,
                    ty: rng.random_range(-1.0..=1.0) * sy,
                })
                .collect();
            let all: Vec<RigidTransform> = grid.iter().chain(&random).copied().collect();
            let preds = predictions(&sm, &frame, &clean.image(i)?, &all, sampling)?;
            let (grid_preds, random_preds) = preds.split_at(grid.len());
            let wok_ok = random_preds.iter().all(|&c| c == pred);
            let flips: Vec<(RigidTransform, usize)> = grid
                .iter()
                .zip(grid_preds)
                .filter(|(_, &c)| c != pred)
                .map(|(t, &c)| (*t, c))
                .collect();
            let mut values = Values::from([
                ("grid_flips".to_string(), flips.len() as f64),
                (
                    "worst_of_k_correct".to_string(),
                    f64::from(u8::from(wok_ok)),
                ),
            ]);
            if let Some(&c) = random_preds.first() {
                values.insert("random_correct", f64::from(u8::from(c == pred)));
            }
            // The smallest flipping pure rotation and pure translation, for the curves.
            let smallest = |f: fn(&RigidTransform) -> Option<f64>| {
                flips
                    .iter()
                    .filter_map(|(t, _)| f(t))
                    .min_by(f64::total_cmp)
            };
            if let Some(a) = smallest(RigidTransform::rotation_deg) {
                values.insert("rotation_flip_deg", a);
            }
            if let Some(t) = smallest(RigidTransform::shift_px) {
                values.insert("shift_flip_px", t);
            }
            let outcome = match flips.iter().min_by(|a, b| a.0.order(&b.0)) {
                None => Outcome::Robust,
                Some((t, c)) => {
                    values.insert("angle_deg", t.theta.to_degrees());
                    values.insert("tx", t.tx);
                    values.insert("ty", t.ty);
                    values.insert("shift_px", t.shift());
                    values.insert("adv_pred", *c as f64);
                    Outcome::Fooled
                }
            };
            images.push(result(ctx, i, pred, outcome, values));
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(Output {
            images,
            summary: BTreeMap::from([
                ("grid_size".to_string(), grid.len() as f64),
                ("max_shift_x_px".to_string(), sx),
                ("max_shift_y_px".to_string(), sy),
            ]),
            extra: serde_json::json!({
                "order": "smallest flipping transform: |angle|, then shift norm, then angle, tx, ty",
                "warp": "out(p) = in(R(theta) p + t), centred pixel coordinates, bilinear",
            }),
            artifacts: vec![],
        })
    }

    /// Accuracies over every image (misclassified ones count as wrong), statistics of the
    /// smallest flipping transforms, and accuracy against the budget of pure rotations and
    /// of pure translations at (up to five of) the grid's own sizes; the grid's size and
    /// shift range are the first chunk's.
    fn summarise(&self, images: &[ImageResult], parts: Vec<Summary>) -> Result<Summary> {
        let counts = Counts::of(images);
        let n = images.len().max(1) as f64;
        let constant = |key: &str| Summary::first(&parts, key).unwrap_or(0.0);
        let (sx, sy) = (constant("max_shift_x_px"), constant("max_shift_y_px"));
        let mut summary = BTreeMap::from([
            ("images".to_string(), images.len() as f64),
            ("grid_size".to_string(), constant("grid_size")),
            (
                "clean_accuracy".to_string(),
                (images.len() - counts.misclassified) as f64 / n,
            ),
            ("accuracy".to_string(), counts.robust as f64 / n),
            ("max_shift_x_px".to_string(), sx),
            ("max_shift_y_px".to_string(), sy),
        ]);
        let ones = |key: &str| {
            images
                .iter()
                .filter(|i| i.values.get(key) == Some(&1.0))
                .count() as f64
        };
        if self.k > 0 {
            summary.insert("worst_of_k_accuracy".into(), ones("worst_of_k_correct") / n);
            summary.insert("random_accuracy".into(), ones("random_correct") / n);
        }
        let attacked = counts.fooled + counts.robust;
        if attacked > 0 {
            summary.insert(
                "fooling_rate".into(),
                counts.fooled as f64 / attacked as f64,
            );
        }
        let fooled = |key: &str| super::deepfool::fooled_values(images, key);
        let angles: Vec<f64> = fooled("angle_deg").iter().map(|a| a.abs()).collect();
        describe(&mut summary, "flip_angle_deg", &angles);
        describe(&mut summary, "flip_shift_px", &fooled("shift_px"));
        let grid = self.grid_within(sx, sy);
        let sizes = |f: fn(&RigidTransform) -> Option<f64>| {
            let mut b: Vec<f64> = grid.iter().filter_map(f).collect();
            b.sort_by(f64::total_cmp);
            b.dedup();
            super::curve::five_of(&b)
        };
        let rotation = super::curve::add(
            &mut summary,
            "rotation_accuracy",
            images,
            "rotation_flip_deg",
            &sizes(RigidTransform::rotation_deg),
        );
        let shift = super::curve::add(
            &mut summary,
            "shift_accuracy",
            images,
            "shift_flip_px",
            &sizes(RigidTransform::shift_px),
        );
        let mut extra = Summary::first_extra(&parts);
        extra["rotation_accuracy_curve"] = rotation;
        extra["shift_accuracy_curve"] = shift;
        Ok(Summary { summary, extra })
    }
}
