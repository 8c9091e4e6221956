//! `margin`: how far each correctly classified image lies from the decision boundary, to
//! first order: the logit margin `f_k0 − f_k1` to the runner-up class `k1`, and the
//! linearised distance `(f_k0 − f_k1) / ‖∇(f_k0 − f_k1)‖₂`, the length of DeepFool's first
//! step without overshoot (docs/methods.md, margin). One forward and one gradient call per
//! chunk of images: a cheap screen before the measures that search.

use serde::{Deserialize, Serialize};

use super::space::SpacedModel;
use super::{Better, Context, Declaration, ImageResult, Measure, Outcome, Output, Summary, Units, Values};
use crate::attack::vector::l2;
use crate::error::Result;
use crate::logits::top_k;

/// Parameters (none).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "margin",
        about: "logit margin to the runner-up class and the linearised distance to its boundary (DeepFool's first step), one gradient per image",
        params: &[],
        headline: &["median_linear_distance", "median_logit_margin"],
        better: &[("median_linear_distance", Better::Higher), ("median_logit_margin", Better::Higher)],
        histograms: &["linear_distance"],
        values: &[&[
            ("logit_margin", "f_k0 − f_k1, the clean logit margin to the runner-up class k1"),
            ("gradient_norm", "‖∇(f_k0 − f_k1)‖₂ at the clean image"),
            ("linear_distance", "logit_margin / gradient_norm: the boundary's distance to first order"),
        ]],
        units: Units::Chunks,
    };

    fn run(&self, ctx: &Context) -> Result<Output> {
        let sm = SpacedModel::new(ctx.model, ctx.data);
        let (d, k, total) = (sm.dim(), sm.classes(), ctx.data.len());
        let chunk = (8_000_000 / d.max(1)).clamp(1, 1024);
        let bar = ctx.progress.bar(total as u64, "margin");
        let mut images = Vec::with_capacity(total);
        for start in (0..total).step_by(chunk) {
            let len = chunk.min(total - start);
            let u = sm.load(ctx.data, start, len)?;
            let logits = sm.logits(&u, len)?;
            // One cotangent row per image: e_k0 − e_k1.
            let mut cot = vec![0.0f32; len * k];
            let mut classes = Vec::with_capacity(len);
            for (i, row) in logits.chunks_exact(k).enumerate() {
                let top = top_k(row, 2);
                let (k0, k1) = (top[0], *top.last().unwrap_or(&top[0]));
                cot[i * k + k0] += 1.0;
                cot[i * k + k1] -= 1.0;
                classes.push((k0, k1));
            }
            let (_, grads) = sm.vjp(&u, len, &cot, 1)?;
            for (i, &(k0, k1)) in classes.iter().enumerate() {
                let index = start + i;
                let item = &ctx.data.items[index];
                let correct = item.label.is_none_or(|l| l == k0);
                let mut values = Values::new();
                if correct && k1 != k0 {
                    let margin = f64::from(logits[i * k + k0]) - f64::from(logits[i * k + k1]);
                    let norm = l2(&grads[i * d..(i + 1) * d]);
                    values.insert("logit_margin", margin);
                    values.insert("gradient_norm", norm);
                    if norm > 0.0 {
                        values.insert("linear_distance", margin / norm);
                    }
                }
                images.push(ImageResult {
                    index,
                    name: item.name.clone(),
                    label: item.label,
                    pred: k0,
                    outcome: match correct {
                        true => Outcome::Robust,
                        false => Outcome::Misclassified,
                    },
                    values,
                });
            }
            bar.inc(len as u64);
        }
        bar.finish_and_clear();
        Ok(Output {
            images,
            ..Output::default()
        })
    }

    fn summarise(&self, images: &[ImageResult], _parts: Vec<Summary>) -> Result<Summary> {
        let mut summary = Summary::default();
        for (name, key) in [
            ("median_logit_margin", "logit_margin"),
            ("median_linear_distance", "linear_distance"),
        ] {
            if let Some(v) = super::median(&super::values_of(images, key)) {
                summary.summary.insert(name.into(), v);
            }
        }
        Ok(summary)
    }
}
