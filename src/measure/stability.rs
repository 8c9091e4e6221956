//! `stability`: how steady predictions stay along sequences of small perturbations, in the
//! style of ImageNet-P (Hendrycks & Dietterich, ICLR 2019; [`crate::corrupt::Perturbation`]).
//! Per sequence kind, the flip probability FP (the share of frames whose prediction differs
//! from the frame before it, or from the first frame for noise) and the top-5 distance T5D
//! between the same pairs of frames, and their means over the kinds; against a suite's
//! baseline model, each kind's FP and T5D divided by the baseline's and their means, mFP and
//! mT5D, as the paper divides by AlexNet's.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::space::SpacedModel;
use super::{Better, 
    Context, Declaration, ImageResult, Measure, MeasureResult, Outcome, Output, Summary, Units,
    Values,
};
use crate::attack::vector::argmax;
use crate::corrupt::Perturbation;
use crate::error::{Error, Result};

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Sequence kinds (`gaussian_noise`, `shot_noise`, `brightness`, `gaussian_blur`,
    /// `translate`, `rotate`, `tilt`, `scale`).
    pub perturbations: Vec<String>,
}

impl Default for Params {
    /// Every kind.
    fn default() -> Self {
        Params {
            perturbations: Perturbation::ALL.iter().map(|p| p.name().into()).collect(),
        }
    }
}

impl Params {
    fn kinds(&self) -> Result<Vec<Perturbation>> {
        if self.perturbations.is_empty() {
            return Err(Error::Config(
                "stability: `perturbations` must not be empty".into(),
            ));
        }
        self.perturbations.iter().map(|p| p.parse()).collect()
    }
}

/// Most frame values held at once (about 128 MB of f32).
const FRAME_VALUES: usize = 32 << 20;

/// Of two rankings, the top-5 distance of the reference (`ImageNet-P/test.py`): with `σ(i)`
/// the rank in `b` of the class ranked `i` in `a`, `Σ_{i=1..5} |i − min(σ(i), 6)|`.
pub fn top5_distance(a: &[f32], b: &[f32]) -> f64 {
    let ranked_a = ranking(a);
    let mut rank_b = vec![0usize; b.len()];
    for (r, &class) in ranking(b).iter().enumerate() {
        rank_b[class] = r + 1;
    }
    ranked_a
        .iter()
        .take(5)
        .enumerate()
        .map(|(i, &class)| ((i + 1) as f64 - rank_b[class].min(6) as f64).abs())
        .sum()
}

/// Classes from the highest logit down (ties: the lower class first).
fn ranking(z: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..z.len()).collect();
    order.sort_by(|&x, &y| z[y].total_cmp(&z[x]).then(x.cmp(&y)));
    order
}

/// The frames each frame of a sequence of kind `p` is compared with: the one before it, or
/// the first for noise.
fn pairs(p: Perturbation) -> impl Iterator<Item = (usize, usize)> {
    (1..p.frames()).map(move |j| (if p.is_noise() { 0 } else { j - 1 }, j))
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "stability",
        about: "flip probability and top-5 distance along ImageNet-P-style perturbation sequences; mFP and mT5D against a suite's baseline model",
        params: &[(
            "perturbations",
            "sequence kinds: gaussian_noise, shot_noise, brightness, gaussian_blur, translate, rotate, tilt, scale [all]",
        )],
        headline: &["mfp", "mt5d", "mean_fp", "mean_t5d"],
        better: &[("mfp", Better::Lower), ("mt5d", Better::Lower), ("mean_fp", Better::Lower), ("mean_t5d", Better::Lower)],
        histograms: &["flips"],
        values: &[&[
            (
                "fp_{perturbation}",
                "share of the sequence's frames whose prediction differs from the frame compared with",
            ),
            ("t5d_{perturbation}", "mean top-5 distance between the compared frames"),
            ("flips", "frames, over every sequence, whose prediction differs from the frame compared with"),
        ]],
        units: Units::Chunks,
    };
    const GRADIENTS: bool = false;

    fn validate(&self) -> Result<()> {
        self.kinds().map(|_| ())
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let kinds = self.kinds()?;
        let sm = SpacedModel::new(ctx.model, ctx.data);
        let spec = &ctx.model.spec;
        sm.require_pixels(ctx.data, "stability")?;
        let (d, k) = (sm.dim(), sm.classes());
        let n = ctx.data.len();
        let most_frames = kinds.iter().map(|p| p.frames()).max().unwrap_or(1);
        let rows = ctx
            .model
            .executor()
            .pass_rows()
            .clamp(1, (FRAME_VALUES / (most_frames * d)).max(1));
        let bar = ctx.progress.bar((n * kinds.len()) as u64, "stability");
        let mut images = Vec::with_capacity(n);
        for start in (0..n).step_by(rows) {
            let len = rows.min(n - start);
            let clean = sm.clean_pass(ctx.data, start, len)?;
            let mut values: Vec<Values> = vec![Values::default(); len];
            let mut flips = vec![0usize; len];
            for &p in &kinds {
                let f = p.frames();
                let frames = (0..len)
                    .into_par_iter()
                    .map(|i| {
                        let u = &clean.u[i * d..(i + 1) * d];
                        let seed = ctx.image_seed(start + i);
                        p.sequence(u, spec.channels, (spec.width, spec.height), seed)
                    })
                    .collect::<Result<Vec<_>>>()?
                    .concat();
                let logits = sm.logits(&frames, len * f)?;
                for (i, seq) in logits.chunks_exact(f * k).enumerate() {
                    let frame = |j: usize| &seq[j * k..(j + 1) * k];
                    let (mut flipped, mut distance) = (0usize, 0.0);
                    for (a, b) in pairs(p) {
                        flipped += usize::from(argmax(frame(a)) != argmax(frame(b)));
                        distance += top5_distance(frame(a), frame(b));
                    }
                    let compared = (f - 1) as f64;
                    values[i].insert(format!("fp_{p}"), flipped as f64 / compared);
                    values[i].insert(format!("t5d_{p}"), distance / compared);
                    flips[i] += flipped;
                }
                bar.inc(len as u64);
            }
            for (i, mut v) in values.into_iter().enumerate() {
                v.insert("flips", flips[i] as f64);
                let outcome = Outcome::of_budget(clean.correct[i], flips[i] > 0);
                let item = &ctx.data.items[start + i];
                images.push(ImageResult::new(start + i, item, clean.preds[i], outcome, v));
            }
        }
        bar.finish_and_clear();
        Ok(Output {
            images,
            ..Output::default()
        })
    }

    /// Per kind, FP and T5D averaged over every image (misclassified ones too, as ImageNet-P
    /// averages over every video); `mean_fp` and `mean_t5d`, their means over the kinds.
    fn summarise(&self, images: &[ImageResult], _parts: Vec<Summary>) -> Result<Summary> {
        let kinds = self.kinds()?;
        if images.is_empty() {
            return Ok(Summary::default());
        }
        let n = images.len() as f64;
        let mut summary = BTreeMap::new();
        let (mut fps, mut t5ds) = (vec![], vec![]);
        for p in kinds {
            let mean = |key: String| {
                images
                    .iter()
                    .map(|i| i.values.get(&key).copied().unwrap_or(0.0))
                    .sum::<f64>()
                    / n
            };
            let (fp, t5d) = (mean(format!("fp_{p}")), mean(format!("t5d_{p}")));
            summary.insert(format!("fp_{p}"), fp);
            summary.insert(format!("t5d_{p}"), t5d);
            fps.push(fp);
            t5ds.push(t5d);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        summary.insert("mean_fp".into(), mean(&fps));
        summary.insert("mean_t5d".into(), mean(&t5ds));
        Ok(Summary {
            summary,
            extra: serde_json::Value::Null,
        })
    }

    /// Per kind, `fp_ratio_{kind}` and `t5d_ratio_{kind}`, FP and T5D divided by the
    /// baseline's (left out where the baseline's is 0); `mfp` and `mt5d`, their means over the
    /// kinds where defined, with `mfp_kinds` and `mt5d_kinds` counting them.
    fn against(
        &self,
        own: &MeasureResult,
        baseline: &MeasureResult,
    ) -> Result<BTreeMap<String, f64>> {
        let mut out = BTreeMap::new();
        for (stat, mean_key) in [("fp", "mfp"), ("t5d", "mt5d")] {
            let mut ratios = vec![];
            for p in self.kinds()? {
                let key = format!("{stat}_{p}");
                let (Some(a), Some(b)) = (own.summary.get(&key), baseline.summary.get(&key)) else {
                    return Ok(BTreeMap::new());
                };
                if *b > 0.0 {
                    out.insert(format!("{stat}_ratio_{p}"), a / b);
                    ratios.push(a / b);
                }
            }
            if let Some(m) = super::mean(&ratios) {
                out.insert(mean_key.to_string(), m);
            }
            out.insert(format!("{mean_key}_kinds"), ratios.len() as f64);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's formula, written as its commented-out loop: for `i` in 1..=5, count
    /// the `j` in `(min(i, σ(i)), max(i, σ(i))]` with `1 ≤ j − 1 ≤ 5`.
    fn reference(sigma: &[usize]) -> f64 {
        let mut result = 0;
        for i in 1..=5usize {
            let s = sigma[i - 1];
            for j in i.min(s) + 1..=i.max(s) {
                if (1..=5).contains(&(j - 1)) {
                    result += 1;
                }
            }
        }
        f64::from(result)
    }

    #[test]
    fn top5_distance_matches_the_reference_loop() {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..500 {
            let k = 10;
            let a: Vec<f32> = (0..k).map(|c| c as f32 * 0.37 % 1.0 + c as f32 * 1e-3).collect();
            let mut b = a.clone();
            b.shuffle(&mut rng);
            // σ(i): the rank in b of the class ranked i in a.
            let (ra, rb) = (ranking(&a), ranking(&b));
            let sigma: Vec<usize> = ra
                .iter()
                .map(|&c| rb.iter().position(|&x| x == c).unwrap() + 1)
                .collect();
            assert_eq!(top5_distance(&a, &b), reference(&sigma));
        }
        let z = [0.1f32, 0.5, 0.3, 0.9, 0.2, 0.7, 0.0];
        assert_eq!(top5_distance(&z, &z), 0.0);
    }

    fn result(summary: &[(&str, f64)]) -> MeasureResult {
        crate::measure::summary_only("stability", summary)
    }

    /// Against a baseline each kind's FP and T5D are divided by the baseline's; a kind whose
    /// baseline value is 0 is left out of the mean, and a model against itself gives 1.
    #[test]
    fn against_a_baseline_divides_by_its_values() {
        let params = Params {
            perturbations: vec!["rotate".into(), "brightness".into()],
        };
        let own = result(&[
            ("fp_rotate", 0.3),
            ("t5d_rotate", 1.2),
            ("fp_brightness", 0.1),
            ("t5d_brightness", 0.4),
        ]);
        let base = result(&[
            ("fp_rotate", 0.2),
            ("t5d_rotate", 0.8),
            ("fp_brightness", 0.0),
            ("t5d_brightness", 0.5),
        ]);
        let out = params.against(&own, &base).unwrap();
        assert!((out["fp_ratio_rotate"] - 1.5).abs() < 1e-12);
        assert!(!out.contains_key("fp_ratio_brightness"));
        assert!((out["mfp"] - 1.5).abs() < 1e-12);
        assert_eq!(out["mfp_kinds"], 1.0);
        assert!((out["mt5d"] - 0.5 * (1.5 + 0.8)).abs() < 1e-12);
        let same = params.against(&own, &own).unwrap();
        assert_eq!((same["mfp"], same["mt5d"]), (1.0, 1.0));
    }

    #[test]
    fn noise_compares_with_the_first_frame_and_sweeps_with_the_previous() {
        let noise: Vec<_> = pairs(Perturbation::GaussianNoise).take(3).collect();
        assert_eq!(noise, [(0, 1), (0, 2), (0, 3)]);
        let sweep: Vec<_> = pairs(Perturbation::Rotate).take(3).collect();
        assert_eq!(sweep, [(0, 1), (1, 2), (2, 3)]);
        assert_eq!(pairs(Perturbation::Translate).count(), 40);
    }
}
