//! `certify`: certified lower bounds beside the attacks' upper bounds (docs/methods.md,
//! certify). Per image and budget `ε`: *certified* when bound propagation through the ONNX
//! graph ([`crate::bound`]) proves that no input of the ℓp ball of radius `ε` (within
//! `--bounds`) changes the prediction, *falsified* when DeepFool with its refinement finds a
//! perturbation no larger than `ε`, else *unknown*.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::deepfool::{norm_key, run_refined, Keep};
use super::space::SpacedModel;
use super::{Context, Declaration, ImageResult, Measure, Outcome, Output, Summary, Units, Values};
use crate::attack::deepfool::{DeepFoolOptions, Norm};
use crate::attack::vector::argmax;
use crate::bound::{BoundNet, InputSet, Interval, Method, Options};
use crate::error::{Error, Result};

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
    /// Rotation ranges `±r`, degrees (`set = rotation`).
    pub range: Option<Vec<f64>>,
    /// Most boxes of angles per image and range (the range is split where a box fails).
    pub pieces: usize,
    /// Fill outside the image when rotating: `zero`, `replicate` or `reflect`.
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
    }
}

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
        let given = match self.set {
            Set::Rotation => &self.range,
            _ => &self.eps,
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
            Set::Rotation => unreachable!("rotations are bounded per box of angles"),
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
        about: "certified lower bounds: per image and radius ε (or rotation range), whether interval (ibp) or linear (crown) bound propagation through the ONNX graph proves the l∞ or l2 ball (or every rotation) safe, beside DeepFool's upper bound or a rotation scan (certified, falsified or unknown)",
        params: &[
            ("set", "`linf` or `l2` ball in the measured space, within `--bounds`, or `rotation` by ±range degrees about the image centre."),
            ("method", "`ibp` (interval bounds) or `crown` (linear bounds, CROWN)."),
            ("eps", "Radii (default: 0.002, 0.005, 0.01, 0.02 for linf; 0.05, 0.1, 0.2, 0.5 for l2)."),
            ("range", "Rotation ranges ±r in degrees (set = rotation; default 1, 2, 5, 10)."),
            ("pieces", "Rotation: most boxes of angles per image and range before the range counts as not certified."),
            ("border", "Rotation: fill outside the image, `zero`, `replicate` or `reflect` (as `grid`)."),
            ("bisections", "Bisection steps refining each image's certified radius between the largest certified ε and the next one (or twice it)."),
            ("upper", "Run DeepFool (refined) for the upper bounds and the falsified counts."),
            ("budget", "Most work (elements bounded × elements of the tensors before them) CROWN spends on one intermediate tensor; larger ones keep interval bounds."),
            ("vnnlib", "With `--out`: write a VNN-LIB property per image and radius left unknown (`linf`), and `instances.csv`, for α,β-CROWN or Marabou."),
        ],
        headline: &["certified_accuracy@{eps}", "median_certified_radius", "median_upper_norm"],
        histograms: &["certified_radius", "upper_norm"],
        values: &[&[
            ("certified@{eps}", "1 when the ball of radius ε is certified, else 0"),
            ("margin_lb@{eps}", "the smallest margin lower bound z_k0 − z_j over the ball (certified when above the tolerance)"),
            ("certified_radius", "largest radius certified (of eps, refined by bisections; rotation: the largest range, degrees)"),
            ("upper_norm", "norm of DeepFool's refined perturbation (an upper bound on the minimal one)"),
            ("falsified@{eps}", "1 when DeepFool's perturbation is no larger than ε (rotation: when a 0.25° scan of ±r flips the prediction)"),
            ("boxes@{range}", "rotation: boxes of angles bounded for ±r (the range split where a box failed)"),
        ]],
        units: Units::Chunks,
    };

    fn validate(&self) -> Result<()> {
        super::curve::check_budgets("certify", &self.eps())?;
        if self.vnnlib && self.set != Set::Linf {
            return Err(Error::Config(
                "certify: vnnlib properties are written for set = linf only (VNN-LIB holds linear constraints)".into(),
            ));
        }
        match (self.set, &self.eps, &self.range) {
            (Set::Rotation, Some(_), _) => {
                return Err(Error::Config("certify: set = rotation takes `range` (degrees), not `eps`".into()))
            }
            (Set::Linf | Set::L2, _, Some(_)) => {
                return Err(Error::Config("certify: `range` is for set = rotation; balls take `eps`".into()))
            }
            _ => {}
        }
        if self.set == Set::Rotation {
            super::frame::parse_sampling("certify", &self.border)?;
            if self.pieces == 0 {
                return Err(Error::Config("certify: pieces must be at least 1".into()));
            }
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
        let net = BoundNet::from_onnx(&model.runnable.proto, &model.spec.sample_shape()).map_err(|e| {
            Error::Config(format!("certify: {}: {e}", model.path().display()))
        })?;
        let sm = SpacedModel::new(model, ctx.data);
        let frame = super::frame::Frame::of(&sm);
        if self.set == Set::Rotation && frame.layout != transforms::ImageLayout::Nchw {
            return Err(Error::Config("certify: rotations need planar (C, H, W) samples; this model takes NHWC tensors".into()));
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
            let per: Vec<Result<(Values, usize, usize)>> = (0..len)
                .into_par_iter()
                .map(|i| {
                    let mut values = Values::new();
                    if !clean.correct[i] {
                        return Ok((values, 0, 0));
                    }
                    let u = &clean.u[i * d..(i + 1) * d];
                    let z = &clean.logits[i * k..(i + 1) * k];
                    let k0 = argmax(z);
                    let tol = MARGIN_TOL * (1.0 + z.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64);
                    if self.set == Set::Rotation {
                        return self.rotation_values(&net, &sm, &frame, u, k0, tol, &opts, &eps);
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
                })
                .collect();
            for (i, r) in per.into_iter().enumerate() {
                let (values, ct, ob) = r?;
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
        if self.upper && self.set != Set::Rotation {
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
        Ok(Output {
            images,
            summary,
            extra: serde_json::json!({
                "set": self.set,
                "method": self.method,
                "margin_tolerance": MARGIN_TOL,
                "clipped_to": ctx.bounds,
            }),
            artifacts,
        })
    }

    fn summarise(&self, images: &[ImageResult], parts: Vec<Summary>) -> Result<Summary> {
        let eps = self.eps();
        let summary = summarise(images, &eps);
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
    /// The values of one image under rotations: per range `r`, whether every angle of
    /// `±r` is certified (the range split into boxes of angles, each box bounded by IBP and,
    /// where that fails, by `method`; a failing box is halved until `pieces` boxes were
    /// tried), and whether a scan of the range at 0.25° steps flips the prediction.
    #[allow(clippy::too_many_arguments)]
    fn rotation_values(
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
        let mut values = Values::new();
        let mut stats = (0, 0);
        let mut margin_of = |a: f64, b: f64, method: Method| -> Result<f64> {
            let (lo, hi) = transforms::rotation_bounds(u, dims, (a, b), sampling)
                .map_err(super::frame::warp_error)?;
            let set = InputSet::Box(Interval {
                lo: sm.to_model(&lo, 1),
                hi: sm.to_model(&hi, 1),
            });
            let (lower, bounds) = net.margins(&set, k0, &Options { method, ..*opts });
            stats = (stats.0.max(bounds.crown_tensors), stats.1.max(bounds.over_budget));
            Ok(lower.iter().copied().fold(f64::INFINITY, f64::min))
        };
        let mut radius = 0.0;
        let mut failed = false;
        for &r in ranges {
            let mut ok = !failed;
            let mut queue = vec![(-r.to_radians(), r.to_radians())];
            let mut tried = 0;
            while ok {
                let Some((a, b)) = queue.pop() else { break };
                tried += 1;
                if tried > self.pieces {
                    ok = false;
                    break;
                }
                let mut m = margin_of(a, b, Method::Ibp)?;
                if m <= tol && opts.method == Method::Crown {
                    m = margin_of(a, b, Method::Crown)?;
                }
                if m <= tol {
                    let mid = 0.5 * (a + b);
                    queue.push((mid, b));
                    queue.push((a, mid));
                }
            }
            failed |= !ok;
            if ok {
                radius = r;
            }
            values.insert(key("certified", r), f64::from(u8::from(ok)));
            values.insert(key("boxes", r), tried.min(self.pieces) as f64);
            // The scan, where no certificate rules a flip out: a flip is a counterexample.
            if ok {
                values.insert(key("falsified", r), 0.0);
                continue;
            }
            let n = (2.0 * r / 0.25).ceil() as usize + 1;
            let angles: Vec<f64> = (0..n).map(|i| (-r + 2.0 * r * i as f64 / (n - 1) as f64).to_radians()).collect();
            let input: Vec<f32> = u.iter().copied().cycle().take(n * u.len()).collect();
            let batch = frame.batch(&input, n)?;
            let warp = transforms::MatrixWarp::new(
                angles
                    .iter()
                    .map(|&t| super::grid::RigidTransform { theta: t, tx: 0.0, ty: 0.0 }.matrix())
                    .collect(),
            );
            let warped = transforms::Warp::apply(&warp, &batch, sampling).map_err(super::frame::warp_error)?;
            let logits = sm.logits(&warped, n)?;
            let flips = logits.chunks_exact(sm.classes()).any(|z| argmax(z) != k0);
            values.insert(key("falsified", r), f64::from(u8::from(flips)));
        }
        values.insert("certified_radius", radius);
        Ok((values, stats.0, stats.1))
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

/// The two sides of the sandwich against the radius, as the HTML report draws them: the
/// certified accuracy at each radius (a lower bound on robust accuracy), and the accuracy
/// that DeepFool's perturbations leave (an upper bound; every radius where an image falls).
fn curves(
    images: &[ImageResult],
    eps: &[f64],
    summary: &std::collections::BTreeMap<String, f64>,
    set: Set,
) -> (serde_json::Value, serde_json::Value) {
    let value = if set == Set::Rotation { "range (degrees)" } else { "radius" };
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
