//! `subspace`: DeepFool restricted to random `m`-dimensional subspaces
//! (Fawzi, Moosavi-Dezfooli, Frossard, NIPS 2016; docs/methods.md, subspace).
//!
//! The subspace is implicit, never a `d×d` matrix: `Q = D·C⁻¹` with `D`
//! random signs and `C` the DCT-II of length `d`, and `S = Q·span(e_j, j∈M)`
//! for a random index set `M` of size `m`, so `Π_S g = D·C⁻¹(1_M ⊙ C(D g))`
//! (the DCT's per-coefficient scaling commutes with the mask, so the
//! unnormalised transform pair gives the exact orthogonal projection).
//! Reported: `‖r_S‖/‖r*‖` beside `√(d/m)` and `β = √(m/d)·‖r_S‖/‖r*‖`.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustdct::{DctPlanner, TransformType2And3};
use serde::{Deserialize, Serialize};

use super::deepfool::Keep;
use super::space::SpacedModel;
use super::{Better, Context, Counts, Declaration, ImageResult, Measure, Output, Summary, Units};
use crate::attack::deepfool::{deepfool_batch, DeepFoolOptions};
use crate::attack::vector::l2;
use crate::error::Result;

/// A random `m`-dimensional subspace of `R^d` (signs + DCT + index set).
pub struct RandomSubspace {
    signs: Vec<f32>,
    keep: Vec<bool>,
    dct: Arc<dyn TransformType2And3<f32>>,
}

impl RandomSubspace {
    /// A subspace of dimension `m` drawn from `seed`.
    pub fn new(d: usize, m: usize, seed: u64, dct: Arc<dyn TransformType2And3<f32>>) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let signs = (0..d)
            .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
            .collect();
        let mut keep = vec![false; d];
        for j in sample(&mut rng, d, m.min(d)).iter() {
            keep[j] = true;
        }
        RandomSubspace { signs, keep, dct }
    }

    /// Projects `g` (`d` values) onto the subspace in place.
    pub fn project(&self, g: &mut [f32]) {
        let d = g.len();
        for (v, s) in g.iter_mut().zip(&self.signs) {
            *v *= s;
        }
        self.dct.process_dct2(g);
        for (v, &k) in g.iter_mut().zip(&self.keep) {
            if !k {
                *v = 0.0;
            }
        }
        self.dct.process_dct3(g);
        let scale = 2.0 / d as f32;
        for (v, s) in g.iter_mut().zip(&self.signs) {
            *v *= s * scale;
        }
    }
}

/// A DCT-II/III pair of length `d`.
pub fn dct_plan(d: usize) -> Arc<dyn TransformType2And3<f32>> {
    DctPlanner::new().plan_dct2(d)
}

/// Makes, from an image's position in the data set, that image's projection (applied in place
/// to a gradient).
pub type ProjectionMaker = Box<dyn Fn(usize) -> Box<dyn Fn(&mut [f32]) + Send + Sync> + Sync>;

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Subspace dimensions; empty means `[d/4, d/16, d/64]`.
    pub dims: Vec<usize>,
    /// Overshoot η.
    pub overshoot: f32,
    /// Iteration budget of each DeepFool run.
    pub max_iter: usize,
    /// Candidate classes.
    pub candidates: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            dims: vec![],
            overshoot: 0.02,
            max_iter: 50,
            candidates: 10,
        }
    }
}

/// Runs restricted DeepFool for a family of projections on every correctly
/// classified image, beside the full-space DeepFool: shared by `subspace`
/// and `structured`. `family` lists `(key, m, projection maker)`; the maker
/// gets the image's position in the data set and returns that image's projection.
/// The output's summary holds the constants [`summarise_family`] needs: `d`, and
/// `m_{key}` and `sqrt_d_over_m_{key}` per projection.
pub fn run_family(
    ctx: &Context,
    measure: &str,
    opts: &DeepFoolOptions,
    family: &[(String, usize, ProjectionMaker)],
) -> Result<Output> {
    let sm = SpacedModel::new(ctx.model, ctx.data);
    let d = sm.dim();
    let (mut images, _) = super::deepfool::run_all(ctx, opts, measure, Keep::Nothing)?;
    let attacked = super::deepfool::fooled_indices(&images);
    let chunk = super::deepfool::chunk_len(d, opts.candidates, ctx.model.executor().pass_rows());
    let bar = ctx
        .progress
        .bar((attacked.len() * family.len()) as u64, measure);
    let mut summary = BTreeMap::new();
    for (key, m, maker) in family {
        for part in attacked.chunks(chunk) {
            let mut u = Vec::with_capacity(part.len() * d);
            for &i in part {
                u.extend(sm.load(ctx.data, i, 1)?);
            }
            let projs: Vec<_> = part.iter().map(|&i| maker(ctx.data.position(i))).collect();
            let project = |a: usize, g: &mut [f32]| projs[a](g);
            let res = deepfool_batch(&sm, &u, part.len(), opts, Some(&project))?;
            for (a, o) in res.iter().enumerate() {
                let i = part[a];
                let star = images[i].values["norm_l2"];
                if o.success && star > 0.0 {
                    let ratio = l2(&o.r) / star;
                    images[i].values.insert(format!("ratio_{key}"), ratio);
                    images[i].values.insert(format!("l2_{key}"), l2(&o.r));
                }
            }
            bar.inc(part.len() as u64);
        }
        let root = (d as f64 / *m as f64).sqrt();
        summary.insert(format!("m_{key}"), *m as f64);
        summary.insert(format!("sqrt_d_over_m_{key}"), root);
    }
    bar.finish_and_clear();
    summary.insert("d".into(), d as f64);
    Ok(Output {
        summary,
        images,
        extra: serde_json::Value::Null,
        artifacts: vec![],
    })
}

/// The summary of [`run_family`]'s chunks: the first chunk's constants, and per projection
/// the median of `ratio_{key}` (and over `sqrt_d_over_m_{key}`, `median_beta_{key}`) and the
/// images DeepFool fooled where the restricted search did not (`failed_{key}`); `extra` is
/// the first chunk's.
pub fn summarise_family(images: &[ImageResult], parts: &[Summary]) -> Summary {
    let mut summary = parts.first().map(|p| p.summary.clone()).unwrap_or_default();
    let keys: Vec<String> = summary
        .keys()
        .filter_map(|k| k.strip_prefix("m_").map(String::from))
        .collect();
    let counts = Counts::of(images);
    for key in keys {
        let ratios = super::deepfool::fooled_values(images, &format!("ratio_{key}"));
        let fails = counts.fooled - ratios.len();
        summary.insert(format!("failed_{key}"), fails as f64);
        if let Some(med) = super::median(&ratios) {
            let root = summary[&format!("sqrt_d_over_m_{key}")];
            summary.insert(format!("median_ratio_{key}"), med);
            summary.insert(format!("median_beta_{key}"), med / root);
        }
    }
    summary.insert("n".into(), images.len() as f64);
    summary.insert("n_attacked".into(), (counts.fooled + counts.failed) as f64);
    let stars = super::deepfool::fooled_values(images, "norm_l2");
    if let Some(v) = super::median(&stars) {
        summary.insert("median_deepfool_l2".into(), v);
    }
    Summary {
        summary,
        extra: Summary::first_extra(parts),
    }
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "subspace",
        about: "DeepFool restricted to random m-dim subspaces: |r_S|/|r*| beside sqrt(d/m)",
        params: &[
            (
                "dims",
                "Subspace dimensions; empty means `[d/4, d/16, d/64]`.",
            ),
            ("overshoot", "Overshoot η."),
            ("max_iter", "Iteration budget of each DeepFool run."),
            ("candidates", "Candidate classes."),
        ],
        headline: &["success_rate"],
        better: &[("success_rate", Better::Lower)],
        histograms: &["rho", "norm_l2"],
        values: &[
            super::deepfool::VALUES,
            &[
                (
                    "ratio_{subspace}",
                    "‖r_S‖₂/‖r*‖₂: DeepFool restricted to the subspace over unrestricted DeepFool",
                ),
                (
                    "l2_{subspace}",
                    "‖r_S‖₂ of DeepFool restricted to the subspace",
                ),
            ],
        ],
        units: Units::Chunks,
    };

    fn validate(&self) -> Result<()> {
        super::at_least(Self::DECLARATION.name, "candidates", self.candidates, 2)
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let d = ctx.model.spec.sample_len();
        let dims = if self.dims.is_empty() {
            vec![(d / 4).max(1), (d / 16).max(1), (d / 64).max(1)]
        } else {
            self.dims.clone()
        };
        let opts = DeepFoolOptions::l2_unclipped(self.overshoot, self.max_iter, self.candidates);
        let plan = dct_plan(d);
        let seed = ctx.seed;
        let family: Vec<(String, usize, ProjectionMaker)> = dims
            .iter()
            .map(|&m| {
                let plan = plan.clone();
                let maker: ProjectionMaker = Box::new(move |index: usize| {
                    let s = RandomSubspace::new(
                        d,
                        m,
                        super::splitmix(seed ^ super::splitmix(index as u64 + 1) ^ m as u64),
                        plan.clone(),
                    );
                    Box::new(move |g: &mut [f32]| s.project(g))
                        as Box<dyn Fn(&mut [f32]) + Send + Sync>
                });
                (format!("m{m}"), m, maker)
            })
            .collect();
        let mut res = run_family(ctx, "subspace", &opts, &family)?;
        res.extra = serde_json::json!({
            "construction": "random signs + DCT-II + random index set (implicit orthogonal transform)",
            "dims": dims,
            "clipped": false,});
        Ok(res)
    }

    fn summarise(&self, images: &[ImageResult], parts: Vec<Summary>) -> Result<Summary> {
        Ok(summarise_family(images, &parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_is_idempotent_and_orthogonal() {
        let d = 96;
        let s = RandomSubspace::new(d, 24, 7, dct_plan(d));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let g: Vec<f32> = (0..d).map(|_| rng.random::<f32>() - 0.5).collect();
        let mut p = g.clone();
        s.project(&mut p);
        let mut pp = p.clone();
        s.project(&mut pp);
        for (a, b) in p.iter().zip(&pp) {
            assert!((a - b).abs() < 1e-5, "{a} {b}");
        }
        // g − Πg ⟂ Πg
        let dot: f32 = g.iter().zip(&p).map(|(a, b)| (a - b) * b).sum();
        assert!(dot.abs() < 1e-4, "{dot}");
        // trace: ‖Π e‖² summed over a basis is m
        let mut tr = 0.0f32;
        for j in 0..d {
            let mut e = vec![0.0; d];
            e[j] = 1.0;
            s.project(&mut e);
            tr += e[j];
        }
        assert!((tr - 24.0).abs() < 1e-3, "{tr}");
    }
}
