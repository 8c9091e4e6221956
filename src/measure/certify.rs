//! `certify`: certified lower bounds beside the attacks' upper bounds (docs/methods.md,
//! certify). Per image and budget `ε`: *certified* when bound propagation through the ONNX
//! graph ([`crate::bound`]) proves that no input of the ℓp ball of radius `ε` (within
//! `--bounds`) changes the prediction, *falsified* when DeepFool with its refinement finds a
//! perturbation no larger than `ε`, else *unknown*.

use serde::{Deserialize, Serialize};

use super::deepfool::{norm_key, run_refined, Keep};
use super::space::SpacedModel;
use super::{Better, Context, Declaration, ImageResult, Measure, Outcome, Output, Summary, Units, Values};
use crate::attack::deepfool::{DeepFoolOptions, Norm};
use crate::attack::vector::argmax;
use crate::bound::{BoundError, BoundNet, InputSet, Interval, Method, Options};
use crate::error::{Error, Result};
use transforms::ParamBox;

/// The perturbation set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Set {
    /// ℓ∞ ball (a box) within `--bounds`.
    #[default]
    Linf,
    /// ℓ2 ball within `--bounds`.
    L2,
    /// Rotations by `±range` degrees about the image centre.
    Rotation,
    /// Shifts `(tx, ty) ∈ [−range, range]²` pixels.
    Translation,
    /// Scalings by a factor `1 + s`, `s ∈ ±range` percent, about the image centre.
    Scaling,
    /// Rotations by `±range` degrees jointly with shifts of `±shift` pixels per axis and
    /// scalings by `±scale` percent.
    Similarity,
}

impl Set {
    /// Whether the set is a range of warps (bounded per box of parameters).
    fn geometric(self) -> bool {
        !matches!(self, Set::Linf | Set::L2)
    }

    /// The unit of `range`, as the curves write it.
    fn unit(self) -> &'static str {
        match self {
            Set::Linf | Set::L2 => "radius",
            Set::Rotation | Set::Similarity => "range (degrees)",
            Set::Translation => "shift (pixels)",
            Set::Scaling => "scale (%)",
        }
    }
}

/// Bound propagation method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MethodParam {
    /// Interval bounds.
    Ibp,
    /// Linear bounds (CROWN).
    #[default]
    Crown,
}

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// `linf` or `l2`.
    pub set: Set,
    /// `ibp` or `crown`.
    pub method: MethodParam,
    /// Radii of the balls (default by set).
    pub eps: Option<Vec<f64>>,
    /// Ranges `±r` of the warps: degrees (`rotation`, `similarity`), pixels per axis
    /// (`translation`) or percent (`scaling`).
    pub range: Option<Vec<f64>>,
    /// `similarity`: shifts `±shift` pixels per axis (default 0.5).
    pub shift: Option<f64>,
    /// `similarity`: scalings by `±scale` percent (default 2).
    pub scale: Option<f64>,
    /// Step of the falsifying scan along the range, in its unit (default by set).
    pub scan: Option<f64>,
    /// Warps: give CROWN the pixels as linear functions of the warp parameters as well as
    /// boxes (default: true, but false for `rotation`).
    pub linear: Option<bool>,
    /// Most boxes of parameters per image and range (a box is split where it fails).
    pub pieces: usize,
    /// Fill outside the image when warping: `zero`, `replicate` or `reflect`.
    pub border: String,
    /// Bisection steps of each image's certified radius above the largest certified `ε`.
    pub bisections: usize,
    /// Run DeepFool for the upper bounds and the falsified counts.
    pub upper: bool,
    /// Most work (bounded elements × elements of the tensors before them) of CROWN on one
    /// intermediate tensor.
    pub budget: f64,
    /// Write a VNN-LIB property per unknown image and radius (`linf`), for other verifiers.
    pub vnnlib: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            set: Set::Linf,
            method: MethodParam::Crown,
            eps: None,
            range: None,
            shift: None,
            scale: None,
            scan: None,
            linear: None,
            pieces: 256,
            border: "zero".into(),
            bisections: 0,
            upper: true,
            budget: 5e8,
            vnnlib: false,
        }
    }
}

/// Default radii per set.
fn default_eps(set: Set) -> Vec<f64> {
    match set {
        Set::Linf => vec![0.002, 0.005, 0.01, 0.02],
        Set::L2 => vec![0.05, 0.1, 0.2, 0.5],
        Set::Rotation => vec![1.0, 2.0, 5.0, 10.0],
        Set::Translation => vec![0.5, 1.0, 2.0],
        Set::Scaling => vec![2.0, 5.0, 10.0],
        Set::Similarity => vec![0.5, 1.0, 2.0],
    }
}

/// Default shift (pixels per axis) and scale (percent) of `set = similarity`.
const DEFAULT_SHIFT: f64 = 0.5;
const DEFAULT_SCALE: f64 = 2.0;

/// Default steps of the falsifying scan per parameter of a [`ParamBox`], in the units of
/// the ranges: degrees, pixels, pixels, percent.
const SCAN_STEPS: [f64; 4] = [0.25, 0.1, 0.1, 0.1];

/// Most warps of one scan (a finer grid is coarsened, the axis with most points first).
const MAX_SCAN: usize = 8192;

/// Most warps per model call of a scan, and most values of their images.
const SCAN_CHUNK: usize = 1024;
const SCAN_FLOATS: usize = 1 << 22;

/// `ε` as written in keys (at most 9 decimals, as the curves write it).
fn key(name: &str, e: f64) -> String {
    format!("{name}@{}", (e * 1e9).round() / 1e9)
}

/// A margin lower bound must exceed this share of `1 + max|z|` at the clean input to count
/// (docs/methods.md, certify: floating point).
const MARGIN_TOL: f64 = 1e-4;

impl Params {
    /// The radii, or for rotations the ranges in degrees, ascending.
    fn eps(&self) -> Vec<f64> {
        let given = if self.set.geometric() {
            &self.range
        } else {
            &self.eps
        };
        let mut e = given.clone().unwrap_or_else(|| default_eps(self.set));
        e.sort_by(f64::total_cmp);
        e
    }

    fn norm(&self) -> Norm {
        match self.set {
            Set::L2 => Norm::L2,
            _ => Norm::Linf,
        }
    }

    /// The set of radius `eps` around `u` (measured space), in model space.
    fn set_at(&self, sm: &SpacedModel, u: &[f32], bounds: Option<(f32, f32)>, eps: f32) -> InputSet {
        let (blo, bhi) = bounds.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let map = |v: Vec<f32>| sm.to_model(&v, 1);
        let clip = Interval {
            lo: map(u.iter().map(|_| blo).collect()),
            hi: map(u.iter().map(|_| bhi).collect()),
        };
        match self.set {
            Set::Linf => InputSet::Box(Interval {
                lo: map(u.iter().map(|&x| (x - eps).max(blo)).collect()),
                hi: map(u.iter().map(|&x| (x + eps).min(bhi)).collect()),
            }),
            Set::Rotation | Set::Translation | Set::Scaling | Set::Similarity => {
                unreachable!("warps are bounded per box of parameters")
            }
            Set::L2 => {
                let zero = map(vec![0.0; u.len()]);
                let one = map(vec![1.0; u.len()]);
                InputSet::L2 {
                    center: map(u.to_vec()),
                    radius: eps,
                    scale: one.iter().zip(&zero).map(|(a, b)| a - b).collect(),
                    clip,
                }
            }
        }
    }
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "certify",
        about: "certified lower bounds: per image and radius ε (or range of warps), whether interval (ibp) or linear (crown) bound propagation through the ONNX graph proves the l∞ or l2 ball (or every rotation, translation, scaling or their combination in the range) safe, beside DeepFool's upper bound or a scan of the range (certified, falsified or unknown)",
        params: &[
            ("set", "`linf` or `l2` ball in the measured space, within `--bounds`; or warps (bilinear, as `grid`): `rotation` by ±range degrees about the image centre, `translation` by ±range pixels per axis, `scaling` by a factor 1 + s, s within ±range percent, about the centre, or `similarity`: rotation by ±range degrees jointly with ±shift pixels and ±scale percent."),
            ("method", "`ibp` (interval bounds) or `crown` (linear bounds, CROWN)."),
            ("eps", "Radii (default: 0.002, 0.005, 0.01, 0.02 for linf; 0.05, 0.1, 0.2, 0.5 for l2)."),
            ("range", "Ranges ±r of the warps: rotation degrees (default 1, 2, 5, 10), translation pixels per axis (0.5, 1, 2), scaling percent (2, 5, 10), similarity rotation degrees (0.5, 1, 2)."),
            ("shift", "Similarity: shifts of ±shift pixels per axis with every rotation of the range (default 0.5)."),
            ("scale", "Similarity: scalings by ±scale percent with every rotation of the range (default 2)."),
            ("scan", "Warps: step of the falsifying scan along the range, in its unit (default 0.25° for rotations, 0.1 px per axis, 0.1 %; similarity's shift and scale use 0.1 px and 0.1 %); at most 8192 warps per range, coarser where the grid would be larger."),
            ("linear", "Warps: CROWN also gets each pixel as a linear function of the warp parameters with a residual interval, not only its interval (default true; false for rotation, which keeps pixel boxes)."),
            ("pieces", "Warps: most boxes of parameters per image and range (a failing box is halved along its widest side) before the range counts as not certified."),
            ("border", "Warps: fill outside the image, `zero`, `replicate` or `reflect` (as `grid`)."),
            ("bisections", "Bisection steps refining each image's certified radius between the largest certified ε and the next one (or twice it)."),
            ("upper", "Run DeepFool (refined) for the upper bounds and the falsified counts."),
            ("budget", "Most work (elements bounded × elements of the tensors before them) CROWN spends on one intermediate tensor; larger ones keep interval bounds."),
            ("vnnlib", "With `--out`: write a VNN-LIB property per image and radius left unknown (`linf`), and `instances.csv`, for α,β-CROWN or Marabou."),
        ],
        headline: &["certified_accuracy@{eps}", "median_certified_radius", "median_upper_norm"],
        better: &[("certified_accuracy@{eps}", Better::Higher), ("median_certified_radius", Better::Higher), ("median_upper_norm", Better::Higher)],
        histograms: &["certified_radius", "upper_norm"],
        values: &[&[
            ("certified@{eps}", "1 when the ball of radius ε is certified, else 0"),
            ("margin_lb@{eps}", "the smallest margin lower bound z_k0 − z_j over the ball (certified when above the tolerance)"),
            ("certified_radius", "largest radius certified (of eps, refined by bisections; warps: the largest range, in its unit)"),
            ("upper_norm", "norm of DeepFool's refined perturbation (an upper bound on the minimal one)"),
            ("falsified@{eps}", "1 when DeepFool's perturbation is no larger than ε (warps: when a warp of the scan of ±r flips the prediction)"),
            ("boxes@{range}", "warps: boxes of parameters bounded for ±r (the range split where a box failed)"),
        ]],
        units: Units::Chunks,
    };

    fn validate(&self) -> Result<()> {
        self.check_foreign()?;
        if self.set.geometric() {
            self.validate_warps()?;
        }
        super::curve::check_budgets("certify", &self.eps())?;
        if self.vnnlib && self.set != Set::Linf {
            return Err(Error::Config(
                "certify: vnnlib properties are written for set = linf only (VNN-LIB holds linear constraints)".into(),
            ));
        }
        if !self.set.geometric() && self.range.is_some() {
            return Err(Error::Config(
                "certify: `range` is for the warps (rotation, translation, scaling, similarity); balls take `eps`".into(),
            ));
        }
        if self.budget.is_nan() || self.budget < 0.0 {
            return Err(Error::Config("certify: budget must be ≥ 0".into()));
        }
        Ok(())
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let model = ctx.model;
        if model.fixed_batch.is_some_and(|b| b != 1) {
            return Err(Error::Config(format!(
                "certify: {} has a fixed batch of {}; bounds need a batch of 1",
                model.path().display(),
                model.fixed_batch.unwrap_or(0)
            )));
        }
        // A model with operators that have no bound rule is audited all the same: nothing is
        // certified, the attack or scan still falsifies, and the report says why.
        let (net, not_bounded) = match BoundNet::from_onnx(&model.runnable.proto, &model.spec.sample_shape()) {
            Ok(net) => (Some(net), None),
            Err(e @ (BoundError::MissingRules(_) | BoundError::Unsupported { .. })) => (None, Some(e.to_string())),
            Err(e) => return Err(Error::Config(format!("certify: {}: {e}", model.path().display()))),
        };
        let sm = SpacedModel::new(model, ctx.data);
        let frame = super::frame::Frame::of(&sm);
        if self.set.geometric() && frame.layout != transforms::ImageLayout::Nchw {
            return Err(Error::Config("certify: warps need planar (C, H, W) samples; this model takes NHWC tensors".into()));
        }
        let eps = self.eps();
        let opts = Options {
            method: match self.method {
                MethodParam::Ibp => Method::Ibp,
                MethodParam::Crown => Method::Crown,
            },
            budget: self.budget,
        };
        let total = ctx.data.len();
        let d = sm.dim();
        let k = sm.classes();
        let bar = ctx.progress.bar(total as u64, "certify");
        let mut images = Vec::with_capacity(total);
        let (mut crown_tensors, mut over_budget) = (0usize, 0usize);
        const CHUNK: usize = 64;
        let mut start = 0;
        while start < total {
            let len = CHUNK.min(total - start);
            let clean = sm.clean_pass(ctx.data, start, len)?;
            // Images run as the backend's concurrent calls: the warps' boxes and scans call the
            // model from inside, which a plain rayon loop would nest in tract's own threads.
            let per = model.executor().map_concurrent(len, |i| {
                    let mut values = Values::new();
                    if !clean.correct[i] {
                        return Ok((values, 0, 0));
                    }
                    let u = &clean.u[i * d..(i + 1) * d];
                    let z = &clean.logits[i * k..(i + 1) * k];
                    let k0 = argmax(z);
                    let tol = MARGIN_TOL * (1.0 + z.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64);
                    let Some(net) = &net else {
                        return self.unbounded_values(&sm, &frame, u, k0, &eps).map(|v| (v, 0, 0));
                    };
                    if self.set.geometric() {
                        return self.warp_values(net, &sm, &frame, u, k0, tol, &opts, &eps);
                    }
                    let mut stats = (0, 0);
                    let mut check = |e: f64| -> (bool, f64) {
                        let set = self.set_at(&sm, u, ctx.bounds, e as f32);
                        let (lower, b) = net.margins(&set, k0, &opts);
                        stats = (b.crown_tensors, b.over_budget);
                        let worst = lower.iter().copied().fold(f64::INFINITY, f64::min);
                        (worst > tol, worst)
                    };
                    let mut radius = 0.0;
                    let mut first_fail = None;
                    for &e in &eps {
                        let (ok, worst) = check(e);
                        values.insert(key("certified", e), f64::from(u8::from(ok)));
                        values.insert(key("margin_lb", e), worst);
                        if ok && first_fail.is_none() {
                            radius = e;
                        } else if first_fail.is_none() {
                            first_fail = Some(e);
                        }
                    }
                    let (mut lo, mut hi) = (radius, first_fail.unwrap_or(2.0 * radius.max(eps[eps.len() - 1])));
                    for _ in 0..self.bisections {
                        let mid = 0.5 * (lo + hi);
                        if check(mid).0 {
                            lo = mid;
                        } else {
                            hi = mid;
                        }
                    }
                    values.insert("certified_radius", lo);
                    Ok((values, stats.0, stats.1))
                })?;
            for (i, (values, ct, ob)) in per.into_iter().enumerate() {
                let index = start + i;
                crown_tensors = crown_tensors.max(ct);
                over_budget = over_budget.max(ob);
                let outcome = if clean.correct[i] {
                    Outcome::Failed
                } else {
                    Outcome::Misclassified
                };
                images.push(ImageResult::new(index, &ctx.data.items[index], clean.preds[i], outcome, values));
            }
            bar.inc(len as u64);
            start += len;
        }
        bar.finish_and_clear();
        if self.upper && !self.set.geometric() {
            let df = DeepFoolOptions {
                norm: self.norm(),
                clip: ctx.bounds,
                ..Default::default()
            };
            let refine = super::deepfool::Params {
                norm: self.norm(),
                ..Default::default()
            }
            .refinement(ctx.bounds);
            let (upper, _) = run_refined(ctx, &df, refine.as_ref(), "certify: upper bounds", Keep::Nothing)?;
            for (img, up) in images.iter_mut().zip(&upper) {
                if up.outcome == Outcome::Fooled {
                    if let Some(&n) = up.values.get(norm_key(self.norm())) {
                        img.values.insert("upper_norm", n);
                        for &e in &eps {
                            img.values.insert(key("falsified", e), f64::from(u8::from(n <= e)));
                        }
                    }
                }
            }
        }
        // Outcome: robust when every radius is certified, fooled when the largest is falsified.
        let last = eps[eps.len() - 1];
        for img in &mut images {
            if img.outcome == Outcome::Misclassified {
                continue;
            }
            if img.values.get(&key("certified", last)) == Some(&1.0) {
                img.outcome = Outcome::Robust;
            } else if img.values.get(&key("falsified", last)) == Some(&1.0) {
                img.outcome = Outcome::Fooled;
            }
        }
        let artifacts = match (self.vnnlib, ctx.out_dir) {
            (true, Some(dir)) => self.write_vnnlib(ctx, &sm, &images, &eps, dir)?,
            _ => vec![],
        };
        let mut summary = std::collections::BTreeMap::new();
        summary.insert("crown_tensors".into(), crown_tensors as f64);
        summary.insert("interval_tensors_over_budget".into(), over_budget as f64);
        summary.insert("bounded".into(), f64::from(u8::from(net.is_some())));
        Ok(Output {
            images,
            summary,
            extra: serde_json::json!({
                "set": self.set,
                "method": self.method,
                "margin_tolerance": MARGIN_TOL,
                "clipped_to": ctx.bounds,
                "not_bounded": not_bounded,
            }),
            artifacts,
        })
    }

    fn summarise(&self, images: &[ImageResult], parts: Vec<Summary>) -> Result<Summary> {
        let eps = self.eps();
        let mut summary = summarise(images, &eps);
        // 0 when the model has operators without a bound rule (`extra.not_bounded` says which).
        let bounded = parts.iter().filter_map(|p| p.summary.get("bounded")).fold(1.0f64, |m, &v| m.min(v));
        summary.insert("bounded".into(), bounded);
        let (lower_curve, upper_curve) = curves(images, &eps, &summary, self.set);
        let mut extra = Summary::first_extra(&parts);
        let most = |k: &str| parts.iter().filter_map(|p| p.summary.get(k)).fold(0.0f64, |m, &v| m.max(v));
        extra["crown_tensors"] = serde_json::json!(most("crown_tensors"));
        extra["interval_tensors_over_budget"] = serde_json::json!(most("interval_tensors_over_budget"));
        extra["certified_accuracy_curve"] = lower_curve;
        extra["attack_accuracy_curve"] = upper_curve;
        Ok(Summary { summary, extra })
    }
}

impl Params {
    /// Checks the parameters of the warps (`set` is not a ball).
    fn validate_warps(&self) -> Result<()> {
        if self.eps.is_some() {
            return Err(Error::Config(format!(
                "certify: set = {} takes `range` ({}), not `eps`",
                self.set_name(),
                self.set.unit()
            )));
        }
        if let Some(r) = &self.range {
            if r.is_empty() || r.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(Error::Config(format!(
                    "certify: range must be a non-empty list of finite values ≥ 0, not {r:?}"
                )));
            }
        }
        if self.set == Set::Scaling && self.eps().iter().any(|&r| r >= 100.0) {
            return Err(Error::Config(
                "certify: scaling ranges must be below 100 (percent), so that the factor 1 + s stays positive".into(),
            ));
        }
        if self.set == Set::Similarity {
            let shift = self.shift.unwrap_or(DEFAULT_SHIFT);
            if !shift.is_finite() || shift < 0.0 {
                return Err(Error::Config(format!("certify: shift must be finite and ≥ 0 (pixels), not {shift}")));
            }
            let scale = self.scale.unwrap_or(DEFAULT_SCALE);
            if !scale.is_finite() || !(0.0..100.0).contains(&scale) {
                return Err(Error::Config(format!(
                    "certify: scale must be finite, ≥ 0 and below 100 (percent), not {scale}"
                )));
            }
        }
        if let Some(step) = self.scan {
            if !step.is_finite() || step <= 0.0 {
                return Err(Error::Config(format!("certify: scan must be a finite step > 0, not {step}")));
            }
        }
        super::frame::parse_sampling("certify", &self.border)?;
        if self.pieces == 0 {
            return Err(Error::Config("certify: pieces must be at least 1".into()));
        }
        Ok(())
    }

    /// Checks that the parameters of other sets are not given.
    fn check_foreign(&self) -> Result<()> {
        let given = [
            ("shift", self.shift.is_some() && self.set != Set::Similarity),
            ("scale", self.scale.is_some() && self.set != Set::Similarity),
            ("scan", self.scan.is_some() && !self.set.geometric()),
            ("linear", self.linear.is_some() && !self.set.geometric()),
        ];
        match given.iter().find(|g| g.1) {
            Some((name, _)) => Err(Error::Config(format!(
                "certify: `{name}` does not apply to set = {}",
                self.set_name()
            ))),
            None => Ok(()),
        }
    }

    /// The set's name as `set` takes it.
    fn set_name(&self) -> String {
        serde_json::to_value(self.set)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The half-widths of the parameters' ranges for range `r`, in the units of the ranges
    /// (degrees, pixels, pixels, percent; [`ParamBox`]'s order).
    fn half_widths(&self, r: f64) -> [f64; 4] {
        match self.set {
            Set::Rotation => [r, 0.0, 0.0, 0.0],
            Set::Translation => [0.0, r, r, 0.0],
            Set::Scaling => [0.0, 0.0, 0.0, r],
            Set::Similarity => {
                let t = self.shift.unwrap_or(DEFAULT_SHIFT);
                [r, t, t, self.scale.unwrap_or(DEFAULT_SCALE)]
            }
            Set::Linf | Set::L2 => unreachable!("balls have no parameters"),
        }
    }

    /// The steps of the scan per parameter, in the units of the ranges.
    fn scan_steps(&self) -> [f64; 4] {
        let mut steps = SCAN_STEPS;
        let axes: &[usize] = match self.set {
            Set::Rotation | Set::Similarity => &[ParamBox::THETA],
            Set::Translation => &[ParamBox::TX, ParamBox::TY],
            Set::Scaling => &[ParamBox::SCALE],
            Set::Linf | Set::L2 => &[],
        };
        for &a in axes {
            steps[a] = self.scan.unwrap_or(steps[a]);
        }
        steps
    }

    /// The values of one image when the model cannot be bounded: nothing certified at any
    /// radius or range; for warps, the scan still looks for a flip (balls are falsified by the
    /// attack after all images).
    fn unbounded_values(
        &self,
        sm: &SpacedModel,
        frame: &super::frame::Frame,
        u: &[f32],
        k0: usize,
        ranges: &[f64],
    ) -> Result<Values> {
        let mut values = Values::new();
        for &r in ranges {
            values.insert(key("certified", r), 0.0);
            if self.set.geometric() {
                let sampling = super::frame::parse_sampling("certify", &self.border)?;
                let flips = self.scan_flips(sm, frame, u, k0, self.half_widths(r), sampling)?;
                values.insert(key("falsified", r), f64::from(u8::from(flips)));
            }
        }
        values.insert("certified_radius", 0.0);
        Ok(values)
    }

    /// The values of one image under warps: per range `r`, whether every warp of the box of
    /// parameters of `±r` is certified (the box bounded by IBP and, where that fails, by
    /// `method`; a failing box is halved along its widest side, measured by how far it moves
    /// the pixels, until `pieces` boxes were tried), and whether a grid scan of the range
    /// flips the prediction.
    #[allow(clippy::too_many_arguments)]
    fn warp_values(
        &self,
        net: &BoundNet,
        sm: &SpacedModel,
        frame: &super::frame::Frame,
        u: &[f32],
        k0: usize,
        tol: f64,
        opts: &Options,
        ranges: &[f64],
    ) -> Result<(Values, usize, usize)> {
        let sampling = super::frame::parse_sampling("certify", &self.border)?;
        let dims = (frame.shape.c, frame.shape.h, frame.shape.w);
        // How far a unit of each parameter moves the farthest pixel.
        let [cx, cy] = transforms::centre(dims.1, dims.2);
        let reach = cx.hypot(cy).max(1.0);
        let weight = [reach, 1.0, 1.0, reach];
        let mut values = Values::new();
        let mut stats = (0, 0);
        let linear = self.linear.unwrap_or(self.set != Set::Rotation);
        let mut margin_of = |b: &ParamBox, method: Method| -> Result<f64> {
            let set = if linear && method == Method::Crown {
                let lb = transforms::warp_linear_bounds(u, dims, b, sampling).map_err(super::frame::warp_error)?;
                linear_set(sm, &lb)
            } else {
                let (lo, hi) = transforms::warp_bounds(u, dims, b, sampling).map_err(super::frame::warp_error)?;
                InputSet::Box(Interval {
                    lo: sm.to_model(&lo, 1),
                    hi: sm.to_model(&hi, 1),
                })
            };
            let (lower, bounds) = net.margins(&set, k0, &Options { method, ..*opts });
            stats = (stats.0.max(bounds.crown_tensors), stats.1.max(bounds.over_budget));
            Ok(lower.iter().copied().fold(f64::INFINITY, f64::min))
        };
        let mut radius = 0.0;
        let mut failed = false;
        for &r in ranges {
            let half = self.half_widths(r);
            let mut whole = ParamBox::identity();
            for (i, &h) in half.iter().enumerate() {
                let h = to_param(i, h);
                whole = whole.with(i, -h, h);
            }
            let mut ok = !failed;
            // Boxes to bound, each with the looseness of its parent's bound (see `hopeless`).
            let mut queue = vec![(whole, None)];
            let mut tried = 0;
            while ok {
                let Some((b, parent_gap)) = queue.pop() else { break };
                tried += 1;
                if tried > self.pieces {
                    ok = false;
                    break;
                }
                let mut m = margin_of(&b, Method::Ibp)?;
                if m <= tol && opts.method == Method::Crown {
                    m = margin_of(&b, Method::Crown)?;
                }
                let mut gap = None;
                if m <= tol {
                    let centre = centre_margin(sm, frame, u, k0, &b, sampling)?;
                    gap = Some(centre - m);
                    if hopeless(centre, m, tol, parent_gap) {
                        ok = false;
                        break;
                    }
                }
                if m <= tol {
                    // Halve the side that moves the pixels farthest (the first of equals).
                    let widest = (0..4).fold(0, |w, i| {
                        let size = |i: usize| (b.hi[i] - b.lo[i]) * weight[i];
                        if size(i) > size(w) {
                            i
                        } else {
                            w
                        }
                    });
                    let (low, high) = b.halves(widest);
                    queue.push((high, gap));
                    queue.push((low, gap));
                }
            }
            failed |= !ok;
            if ok {
                radius = r;
            }
            values.insert(key("certified", r), f64::from(u8::from(ok)));
            values.insert(key("boxes", r), tried.min(self.pieces) as f64);
            // The scan, where no certificate rules a flip out: a flip is a counterexample.
            let flips = !ok && self.scan_flips(sm, frame, u, k0, half, sampling)?;
            values.insert(key("falsified", r), f64::from(u8::from(flips)));
        }
        values.insert("certified_radius", radius);
        Ok((values, stats.0, stats.1))
    }

    /// Whether some warp of a grid over the ranges `±half` (units of the ranges) flips the
    /// prediction `k0` of `u`: per parameter, points evenly spaced at most a scan step
    /// apart, both ends included (at most [`MAX_SCAN`] warps, the axis with most points
    /// coarsened first).
    fn scan_flips(
        &self,
        sm: &SpacedModel,
        frame: &super::frame::Frame,
        u: &[f32],
        k0: usize,
        half: [f64; 4],
        sampling: transforms::Sampling,
    ) -> Result<bool> {
        let steps = self.scan_steps();
        let mut counts: [usize; 4] =
            std::array::from_fn(|i| if half[i] > 0.0 { (2.0 * half[i] / steps[i]).ceil() as usize + 1 } else { 1 });
        while counts.iter().product::<usize>() > MAX_SCAN {
            let most = (0..4).fold(0, |m, i| if counts[i] > counts[m] { i } else { m });
            counts[most] -= 1;
        }
        let axis = |i: usize| -> Vec<f64> {
            let (h, n) = (half[i], counts[i]);
            (0..n)
                .map(|j| {
                    let v = if n == 1 { 0.0 } else { -h + 2.0 * h * j as f64 / (n - 1) as f64 };
                    to_param(i, v)
                })
                .collect()
        };
        let axes: Vec<Vec<f64>> = (0..4).map(axis).collect();
        let total: usize = counts.iter().product();
        let chunk = (SCAN_FLOATS / u.len().max(1)).clamp(1, SCAN_CHUNK);
        let mut start = 0;
        while start < total {
            let n = chunk.min(total - start);
            let matrices = (start..start + n)
                .map(|mut j| {
                    let mut p = [0.0; 4];
                    for i in (0..4).rev() {
                        p[i] = axes[i][j % counts[i]];
                        j /= counts[i];
                    }
                    transforms::similarity_matrix(p[0], p[1], p[2], p[3])
                })
                .collect();
            let input: Vec<f32> = u.iter().copied().cycle().take(n * u.len()).collect();
            let batch = frame.batch(&input, n)?;
            let warped = transforms::Warp::apply(&transforms::MatrixWarp::new(matrices), &batch, sampling)
                .map_err(super::frame::warp_error)?;
            let logits = sm.logits(&warped, n)?;
            if logits.chunks_exact(sm.classes()).any(|z| argmax(z) != k0) {
                return Ok(true);
            }
            start += n;
        }
        Ok(false)
    }

    /// Writes `certify_vnnlib/img{index}_eps{ε}.vnnlib` for every image and radius left
    /// unknown, over the model's input (model space, flattened) and outputs, and
    /// `certify_vnnlib/instances.csv` (model, property, timeout) in VNN-COMP's form.
    fn write_vnnlib(
        &self,
        ctx: &Context,
        sm: &SpacedModel,
        images: &[ImageResult],
        eps: &[f64],
        dir: &std::path::Path,
    ) -> Result<Vec<super::Artifact>> {
        use std::fmt::Write as _;
        let sub = dir.join("certify_vnnlib");
        crate::write::dir(&sub)?;
        let model = ctx.model.path().display().to_string();
        let mut instances = String::new();
        let mut written = 0;
        for img in images.iter().filter(|i| i.outcome != Outcome::Misclassified) {
            for &e in eps {
                let open = img.values.get(&key("certified", e)) != Some(&1.0)
                    && img.values.get(&key("falsified", e)) != Some(&1.0);
                if !open {
                    continue;
                }
                let u = sm.load(ctx.data, img.index, 1)?;
                let InputSet::Box(b) = self.set_at(sm, &u, ctx.bounds, e as f32) else {
                    unreachable!("vnnlib is checked to be linf")
                };
                let k = sm.classes();
                let mut t = format!(
                    "; georob certify: {} (#{}), predicted class {}, linf ball of radius {e} within the bounds, in model space\n",
                    img.name, ctx.data.position(img.index), img.pred
                );
                for i in 0..b.lo.len() {
                    let _ = writeln!(t, "(declare-const X_{i} Real)");
                }
                for j in 0..k {
                    let _ = writeln!(t, "(declare-const Y_{j} Real)");
                }
                for i in 0..b.lo.len() {
                    let _ = writeln!(t, "(assert (<= X_{i} {:e}))\n(assert (>= X_{i} {:e}))", b.hi[i], b.lo[i]);
                }
                t.push_str("; unsafe: another class reaches the predicted one\n(assert (or\n");
                for j in (0..k).filter(|&j| j != img.pred) {
                    let _ = writeln!(t, "    (and (>= Y_{j} Y_{}))", img.pred);
                }
                t.push_str("))\n");
                let name = format!("img{}_eps{}.vnnlib", ctx.data.position(img.index), (e * 1e9).round() / 1e9);
                let path = sub.join(&name);
                crate::write::bytes(&path, t)?;
                let _ = writeln!(instances, "{model},{},60", path.display());
                written += 1;
            }
        }
        let csv = sub.join("instances.csv");
        crate::write::bytes(&csv, instances)?;
        Ok(vec![super::Artifact {
            description: format!("{written} VNN-LIB properties of the images and radii left unknown, and instances.csv"),
            path: "certify_vnnlib/instances.csv".into(),
        }])
    }
}

/// Parameter `i` of a [`ParamBox`] from the unit of the ranges: degrees to radians, percent
/// to a fraction, pixels as they are.
fn to_param(i: usize, v: f64) -> f64 {
    match i {
        ParamBox::THETA => v.to_radians(),
        ParamBox::SCALE => v / 100.0,
        _ => v,
    }
}

/// The warped pixels `lb` (measured space) as a linear input set in model space: the centre
/// mapped, the coefficients and residuals scaled by the preprocessing's per-element scale,
/// the residuals widened for the rounding to `f32` (of the centre, the coefficients and the
/// The margin `z_k0 − max_{j≠k0} z_j` of `u` warped by the centre of the box `b`.
fn centre_margin(
    sm: &SpacedModel,
    frame: &super::frame::Frame,
    u: &[f32],
    k0: usize,
    b: &ParamBox,
    sampling: transforms::Sampling,
) -> Result<f64> {
    let p: [f64; 4] = std::array::from_fn(|i| 0.5 * (b.lo[i] + b.hi[i]));
    let warp = transforms::MatrixWarp::new(vec![transforms::similarity_matrix(p[0], p[1], p[2], p[3])]);
    let warped = transforms::Warp::apply(&warp, &frame.batch(u, 1)?, sampling).map_err(super::frame::warp_error)?;
    let z = sm.logits(&warped, 1)?;
    let others = z.iter().enumerate().filter(|&(j, _)| j != k0).fold(f32::NEG_INFINITY, |m, (_, &v)| m.max(v));
    Ok(f64::from(z[k0]) - f64::from(others))
}

/// Whether splitting a failing box further is not worth its cost: its centre is not safe by
/// the tolerance (no split can certify it; the scan decides), or halving its parent took off
/// less than a tenth of the bound's looseness (`centre − bound`) while the looseness is still
/// more than twice what certifying needs. Bounds of deep networks over a box of pixels stay
/// loose until the box is tiny; without this rule such a model spends `pieces` bound
/// propagations per image and range to end unknown. It decides only when to stop trying, so
/// it never makes a certificate wrong.
fn hopeless(centre: f64, bound: f64, tol: f64, parent_gap: Option<f64>) -> bool {
    let gap = centre - bound;
    let need = centre - tol;
    need <= 0.0 || parent_gap.is_some_and(|p| gap > 0.9 * p && gap > 2.0 * need)
}

/// mapping), and the pixel intervals as the box it is intersected with.
fn linear_set(sm: &SpacedModel, lb: &transforms::LinearBounds) -> InputSet {
    let d = lb.center.len();
    let zero = sm.to_model(&vec![0.0; d], 1);
    let one = sm.to_model(&vec![1.0; d], 1);
    let scale: Vec<f64> = one.iter().zip(&zero).map(|(o, z)| f64::from(o - z)).collect();
    let rounded: Vec<f32> = lb.center.iter().map(|&c| c as f32).collect();
    let center = sm.to_model(&rounded, 1);
    let active: Vec<&Vec<f64>> = lb.gens.iter().filter(|g| g.iter().any(|&v| v != 0.0)).collect();
    let gens = active
        .iter()
        .map(|g| g.iter().zip(&scale).map(|(&g, &s)| (g * s) as f32).collect())
        .collect();
    let (mut lo, mut hi) = (vec![0.0f32; d], vec![0.0f32; d]);
    for i in 0..d {
        let s = scale[i];
        let moved = lb.center[i] - f64::from(rounded[i]);
        let (a, b) = ((lb.err_lo[i] + moved) * s, (lb.err_hi[i] + moved) * s);
        let (a, b) = (a.min(b), a.max(b));
        let spread: f64 = active.iter().map(|g| g[i].abs()).sum();
        let size = lb.center[i].abs() + spread + lb.err_lo[i].abs().max(lb.err_hi[i].abs());
        let pad = 1e-6 * (s.abs() * (1.0 + size) + f64::from(center[i].abs()));
        lo[i] = ((a - pad) as f32).next_down();
        hi[i] = ((b + pad) as f32).next_up();
    }
    InputSet::Linear {
        center,
        gens,
        err: Interval { lo, hi },
        clip: Interval {
            lo: sm.to_model(&lb.lo, 1),
            hi: sm.to_model(&lb.hi, 1),
        },
    }
}

/// The two sides of the sandwich against the radius, as the HTML report draws them: the
/// certified accuracy at each radius (a lower bound on robust accuracy), and the accuracy
/// that DeepFool's perturbations leave (an upper bound; every radius where an image falls).
fn curves(
    images: &[ImageResult],
    eps: &[f64],
    summary: &std::collections::BTreeMap<String, f64>,
    set: Set,
) -> (serde_json::Value, serde_json::Value) {
    let value = set.unit();
    let n = images.len().max(1) as f64;
    let correct = images.iter().filter(|i| i.outcome != Outcome::Misclassified).count() as f64 / n;
    let mut lower = vec![serde_json::json!([0.0, correct])];
    for &e in eps {
        if let Some(a) = summary.get(&key("certified_accuracy", e)) {
            lower.push(serde_json::json!([e, a]));
        }
    }
    let mut falls: Vec<f64> = images.iter().filter_map(|i| i.values.get("upper_norm").copied()).collect();
    falls.sort_by(f64::total_cmp);
    let mut upper = vec![serde_json::json!([0.0, correct])];
    for (k, &f) in falls.iter().enumerate() {
        upper.push(serde_json::json!([f, correct - (k + 1) as f64 / n]));
    }
    (
        serde_json::json!({ "value": value, "points": lower }),
        serde_json::json!({ "value": value, "points": if falls.is_empty() { vec![] } else { upper } }),
    )
}

/// Per radius: certified accuracy, falsified and unknown rates (all over every image), and
/// the medians of the certified radius and the upper bound over the correctly classified.
fn summarise(images: &[ImageResult], eps: &[f64]) -> std::collections::BTreeMap<String, f64> {
    let mut s = std::collections::BTreeMap::new();
    let n = images.len();
    s.insert("n".into(), n as f64);
    if n == 0 {
        return s;
    }
    let flag = |img: &ImageResult, k: &str| img.values.get(k) == Some(&1.0);
    for &e in eps {
        let (ck, fk) = (key("certified", e), key("falsified", e));
        let cert = images.iter().filter(|i| flag(i, &ck)).count();
        let fals = images.iter().filter(|i| flag(i, &fk)).count();
        let mis = images.iter().filter(|i| i.outcome == Outcome::Misclassified).count();
        s.insert(key("certified_accuracy", e), cert as f64 / n as f64);
        s.insert(key("falsified_rate", e), fals as f64 / n as f64);
        s.insert(key("unknown_rate", e), (n - cert - fals - mis) as f64 / n as f64);
    }
    let values = |k: &str| -> Vec<f64> { images.iter().filter_map(|i| i.values.get(k).copied()).collect() };
    if let Some(m) = super::median(&values("certified_radius")) {
        s.insert("median_certified_radius".into(), m);
    }
    if let Some(m) = super::median(&values("upper_norm")) {
        s.insert("median_upper_norm".into(), m);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_stops_only_where_it_cannot_pay() {
        // The centre itself is not safe by the tolerance: no split certifies it.
        assert!(hopeless(0.05, -1.0, 0.1, None));
        // A first box is always split.
        assert!(!hopeless(3.0, -5.0, 0.01, None));
        // Halving took off half the looseness: keep going.
        assert!(!hopeless(3.0, -1.0, 0.01, Some(8.0)));
        // Halving took off under a tenth while the looseness is far above the need: stop.
        assert!(hopeless(3.0, -300.0, 0.01, Some(310.0)));
        // Little progress, but near the need: one more split may certify.
        assert!(!hopeless(3.0, -2.0, 0.01, Some(5.1)));
    }

    /// Non-finite or negative ranges, shifts, scales and scan steps are refused with a
    /// configuration error naming the parameter, not a panic.
    #[test]
    fn non_finite_warp_parameters_are_refused() {
        let cases = [
            (Params { set: Set::Translation, range: Some(vec![f64::NAN]), ..Default::default() }, "range"),
            (Params { set: Set::Scaling, range: Some(vec![f64::INFINITY]), ..Default::default() }, "range"),
            (Params { set: Set::Similarity, shift: Some(f64::NAN), ..Default::default() }, "shift"),
            (Params { set: Set::Similarity, scale: Some(-2.0), ..Default::default() }, "scale"),
            (Params { set: Set::Rotation, scan: Some(f64::NAN), ..Default::default() }, "scan"),
        ];
        for (p, word) in cases {
            match p.validate() {
                Err(Error::Config(m)) => assert!(m.contains(word), "{p:?}: {m}"),
                other => panic!("{p:?}: {other:?}"),
            }
        }
    }

    /// The boxes of each set: rotation in radians, shifts in pixels, scales as fractions.
    #[test]
    fn ranges_map_to_parameter_boxes() {
        let p = |set| Params { set, ..Default::default() };
        assert_eq!(p(Set::Translation).half_widths(1.5), [0.0, 1.5, 1.5, 0.0]);
        assert_eq!(p(Set::Scaling).half_widths(5.0), [0.0, 0.0, 0.0, 5.0]);
        assert_eq!(p(Set::Similarity).half_widths(2.0), [2.0, DEFAULT_SHIFT, DEFAULT_SHIFT, DEFAULT_SCALE]);
        let scan = Params { set: Set::Translation, scan: Some(0.05), ..Default::default() };
        assert_eq!(scan.scan_steps(), [0.25, 0.05, 0.05, 0.1]);
    }
}
