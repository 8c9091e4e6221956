//! `accuracy`: clean top-1 accuracy and each image's prediction with its
//! softmax confidence; every other measure's misclassified images are the
//! ones this one counts wrong.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Values;
use super::{Better, Context, Counts, Declaration, ImageResult, Measure, Outcome, Output, Summary, Units};
use crate::error::Result;
use crate::logits::{softmax_at, top_k};

/// Parameters (none).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "accuracy",
        about: "clean top-1 accuracy (the reference for every other measure)",
        params: &[],
        headline: &["accuracy"],
        better: &[("accuracy", Better::Higher)],
        histograms: &[],
        values: &[&[
            (
                "correct",
                "1 when the prediction equals the label (or there is no label), else 0",
            ),
            ("confidence", "softmax probability of the predicted class"),
        ]],
        units: Units::Chunks,
    };
    const GRADIENTS: bool = false;

    fn run(&self, ctx: &Context) -> Result<Output> {
        let model = ctx.model;
        let k = model.classes;
        let bar = ctx.progress.bar(ctx.data.len() as u64, "accuracy");
        let mut images = Vec::with_capacity(ctx.data.len());
        // Names of the predicted classes only (the class list can be long).
        let mut class_names = BTreeMap::new();
        for batch in ctx.data.batches(&model.spec, model.executor().pass_rows()) {
            let batch = batch?;
            let logits = model.logits(&batch.x, batch.len)?;
            for (i, row) in logits.chunks_exact(k).enumerate() {
                let index = batch.start + i;
                let item = &ctx.data.items[index];
                let pred = top_k(row, 1)[0];
                let correct = item.label.is_none_or(|l| l == pred);
                if let Some(names) = &model.class_names {
                    class_names.insert(pred.to_string(), names[pred].clone());
                }
                images.push(ImageResult {
                    index,
                    name: item.name.clone(),
                    label: item.label,
                    pred,
                    outcome: if correct {
                        Outcome::Robust
                    } else {
                        Outcome::Misclassified
                    },
                    values: Values::from([
                        ("correct", f64::from(u8::from(correct))),
                        ("confidence", f64::from(softmax_at(row, pred))),
                    ]),
                });
            }
            bar.inc(batch.len as u64);
        }
        bar.finish_and_clear();
        Ok(Output {
            images,
            extra: serde_json::json!({ "class_names": class_names }),
            ..Output::default()
        })
    }

    /// Accuracy over every row; the class names of every chunk's predictions together.
    fn summarise(&self, images: &[ImageResult], parts: Vec<Summary>) -> Result<Summary> {
        let counts = Counts::of(images);
        let labelled = images.iter().filter(|i| i.label.is_some()).count();
        let mut summary = BTreeMap::new();
        if labelled > 0 {
            summary.insert(
                "accuracy".into(),
                counts.robust as f64 / images.len() as f64,
            );
        }
        summary.insert("images".into(), images.len() as f64);
        let mut class_names = serde_json::Map::new();
        for part in parts {
            if let Some(serde_json::Value::Object(names)) = part.extra.get("class_names") {
                class_names.extend(names.clone());
            }
        }
        Ok(Summary {
            summary,
            extra: if class_names.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::json!({ "class_names": class_names })
            },
        })
    }
}
