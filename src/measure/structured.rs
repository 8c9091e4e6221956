//! `structured`: DeepFool restricted to structured subspaces (docs/methods.md, structured):
//! low-frequency 2-D DCT per channel (keep `i + j < B`) and square spatial
//! patches (all channels, at a seeded random position per image). Reported
//! like `subspace`: `‖r_S‖/‖r*‖` beside `√(d/m)`; a ratio far below `√(d/m)`
//! means the boundary normals concentrate in that subspace. Unclipped.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustdct::{DctPlanner, TransformType2And3};
use serde::{Deserialize, Serialize};

use super::subspace::{run_family, summarise_family, ProjectionMaker};
use super::{Better, Context, Declaration, ImageResult, Measure, Output, Summary, Units};
use crate::attack::deepfool::DeepFoolOptions;
use crate::error::Result;

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Low-frequency bands `B` (keep DCT coefficients with `i + j < B`); empty: `H/8, H/4`.
    pub dct_bands: Vec<usize>,
    /// Patch sides in pixels; empty: `H/2, H/4`.
    pub patches: Vec<usize>,
    /// Overshoot η.
    pub overshoot: f32,
    /// Iteration budget.
    pub max_iter: usize,
    /// Candidate classes.
    pub candidates: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            dct_bands: vec![],
            patches: vec![],
            overshoot: 0.02,
            max_iter: 50,
            candidates: 10,
        }
    }
}

/// Projection onto the low-frequency 2-D DCT subspace of planar `(C, H, W)` data.
pub struct LowFrequency {
    c: usize,
    h: usize,
    w: usize,
    band: usize,
    row: Arc<dyn TransformType2And3<f32>>,
    col: Arc<dyn TransformType2And3<f32>>,
}

impl LowFrequency {
    /// Keeps coefficients `(i, j)` with `i + j < band`.
    pub fn new(c: usize, h: usize, w: usize, band: usize) -> Self {
        let mut p = DctPlanner::new();
        LowFrequency {
            c,
            h,
            w,
            band,
            row: p.plan_dct2(w),
            col: p.plan_dct2(h),
        }
    }

    /// Dimension of the subspace.
    pub fn dim(&self) -> usize {
        self.c
            * (0..self.h)
                .map(|i| (0..self.w).filter(|j| i + j < self.band).count())
                .sum::<usize>()
    }

    /// Projects `g` (`C·H·W`) in place.
    pub fn project(&self, g: &mut [f32]) {
        let (h, w) = (self.h, self.w);
        let mut col = vec![0.0f32; h];
        for plane in g.chunks_mut(h * w) {
            for r in plane.chunks_mut(w) {
                self.row.process_dct2(r);
            }
            for j in 0..w {
                (0..h).for_each(|i| col[i] = plane[i * w + j]);
                self.col.process_dct2(&mut col);
                for i in 0..h {
                    plane[i * w + j] = if i + j < self.band { col[i] } else { 0.0 };
                }
            }
            for j in 0..w {
                (0..h).for_each(|i| col[i] = plane[i * w + j]);
                self.col.process_dct3(&mut col);
                (0..h).for_each(|i| plane[i * w + j] = col[i]);
            }
            let s = 4.0 / (h * w) as f32;
            for r in plane.chunks_mut(w) {
                self.row.process_dct3(r);
                r.iter_mut().for_each(|v| *v *= s);
            }
        }
    }
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "structured",
        about: "DeepFool restricted to low-frequency DCT and spatial patch subspaces: |r_S|/|r*| beside sqrt(d/m)",
        params: &[
            ("dct_bands", "Low-frequency bands `B` (keep DCT coefficients with `i + j < B`); empty: `H/8, H/4`."),
            ("patches", "Patch sides in pixels; empty: `H/2, H/4`."),
            ("overshoot", "Overshoot η."),
            ("max_iter", "Iteration budget."),
            ("candidates", "Candidate classes."),
        ],
        headline: &["success_rate"],
        better: &[("success_rate", Better::Lower)],
        histograms: &["rho", "norm_l2"],
        values: &[super::deepfool::VALUES, &[
            ("ratio_{subspace}", "‖r_S‖₂/‖r*‖₂: DeepFool restricted to the subspace over unrestricted DeepFool"),
            ("l2_{subspace}", "‖r_S‖₂ of DeepFool restricted to the subspace"),
        ]],
        units: Units::Chunks,
    };

    fn validate(&self) -> Result<()> {
        super::at_least(Self::DECLARATION.name, "candidates", self.candidates, 2)
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let spec = &ctx.model.spec;
        let (c, h, w) = (spec.channels.count(), spec.height, spec.width);
        let bands = if self.dct_bands.is_empty() {
            vec![(h / 8).max(1), (h / 4).max(1)]
        } else {
            self.dct_bands.clone()
        };
        let patches = if self.patches.is_empty() {
            vec![(h / 2).max(1), (h / 4).max(1)]
        } else {
            self.patches.clone()
        };
        let mut family: Vec<(String, usize, ProjectionMaker)> = vec![];
        for &b in &bands {
            let lf = Arc::new(LowFrequency::new(c, h, w, b));
            let m = lf.dim();
            let maker: ProjectionMaker = Box::new(move |_| {
                let lf = lf.clone();
                Box::new(move |g: &mut [f32]| lf.project(g))
            });
            family.push((format!("dct{b}"), m, maker));
        }
        let seed = ctx.seed;
        for &s in &patches {
            let s = s.min(h).min(w);
            let maker: ProjectionMaker = Box::new(move |index| {
                let mut rng = ChaCha8Rng::seed_from_u64(
                    super::splitmix(seed ^ super::splitmix(index as u64 + 1)) ^ s as u64,
                );
                let y0 = rng.random_range(0..=h - s);
                let x0 = rng.random_range(0..=w - s);
                Box::new(move |g: &mut [f32]| {
                    for (t, v) in g.iter_mut().enumerate() {
                        let (y, x) = ((t / w) % h, t % w);
                        if y < y0 || y >= y0 + s || x < x0 || x >= x0 + s {
                            *v = 0.0;
                        }
                    }
                })
            });
            family.push((format!("patch{s}"), c * s * s, maker));
        }
        let opts = DeepFoolOptions::l2_unclipped(self.overshoot, self.max_iter, self.candidates);
        let mut res = run_family(ctx, "structured", &opts, &family)?;
        res.extra = serde_json::json!({
            "dct": "orthonormal 2-D DCT-II per channel, keep i + j < B",
            "patch": "square window, all channels, seeded random position per image",
            "clipped": false,
        });
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
    fn low_frequency_projection_is_idempotent_with_the_right_trace() {
        let lf = LowFrequency::new(2, 6, 5, 3);
        assert_eq!(lf.dim(), 2 * 6);
        let d = 60;
        let mut tr = 0.0f32;
        for j in 0..d {
            let mut e = vec![0.0; d];
            e[j] = 1.0;
            lf.project(&mut e);
            tr += e[j];
            let mut e2 = e.clone();
            lf.project(&mut e2);
            for (a, b) in e.iter().zip(&e2) {
                assert!((a - b).abs() < 1e-5);
            }
        }
        assert!((tr - 12.0).abs() < 1e-3, "{tr}");
    }
}
