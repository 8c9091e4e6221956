//! `eval`: run a model over a data set; top-1, top-5, per-class accuracy,
//! per-image predictions and throughput.

use std::time::Instant;

use serde::Serialize;

use crate::data::{Dataset, LabelSource};
use crate::error::{Error, Result};
use crate::logits::{softmax_at, top_k};
use crate::model::{Model, ModelInfo};
use crate::progress::Progress;

/// Version of the `eval` JSON layout.
pub const EVAL_SCHEMA: &str = "georob.eval/1";

/// One image's prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// Position in the data set.
    pub index: usize,
    /// Item name (relative path or `#row`).
    pub name: String,
    /// Ground-truth label, when given.
    pub label: Option<usize>,
    /// Predicted class (arg-max of the logits; ties go to the lowest index).
    pub pred: usize,
    /// The five highest-scoring classes, best first.
    pub top5: Vec<usize>,
    /// Softmax probability of the predicted class.
    pub confidence: f32,
}

/// Accuracy of one class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassAccuracy {
    /// Class index.
    pub class: usize,
    /// Class name, when known.
    pub name: Option<String>,
    /// Labelled images of this class.
    pub count: usize,
    /// Of which predicted correctly.
    pub correct: usize,
    /// correct / count.
    pub accuracy: f64,
}

/// Summary of an evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalSummary {
    /// Number of images.
    pub images: usize,
    /// Top-1 accuracy (None without labels).
    pub top1: Option<f64>,
    /// Top-5 accuracy (None without labels).
    pub top5: Option<f64>,
    /// Per-class accuracy, for classes that occur in the labels.
    pub per_class: Vec<ClassAccuracy>,
    /// Images per second, decoding included.
    pub images_per_second: f64,
    /// Wall-clock seconds, decoding included.
    pub seconds: f64,
    /// Seconds spent in model calls.
    pub model_seconds: f64,
}

/// Where the data came from.
#[derive(Debug, Clone, Serialize)]
pub struct DataInfo {
    /// Data path.
    pub path: std::path::PathBuf,
    /// Kind of data set.
    pub kind: crate::data::DataKind,
    /// Number of items.
    pub images: usize,
    /// Where labels come from (`predicted` = the model's clean predictions).
    pub labels: LabelSource,
}

/// Everything `eval` produces; serialised as its JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Layout version of this JSON.
    pub schema: &'static str,
    /// georob version.
    pub georob_version: &'static str,
    /// Model and backend.
    pub model: ModelInfo,
    /// Data set.
    pub data: DataInfo,
    /// Aggregate figures.
    pub summary: EvalSummary,
    /// Per-image predictions, in data-set order.
    pub predictions: Vec<Prediction>,
}

/// Runs `model` over `data` in batches of the model's batch size.
pub fn evaluate(model: &Model, data: &Dataset, progress: &Progress) -> Result<EvalReport> {
    data.check_labels(model.classes)?;
    let k = model.classes;
    let started = Instant::now();
    let mut model_seconds = 0.0;
    let mut predictions = Vec::with_capacity(data.len());
    let bar = progress.bar(data.len() as u64, "eval");
    for batch in data.batches(&model.spec, model.executor().pass_rows()) {
        let batch = batch?;
        let t = Instant::now();
        let logits = model.logits(&batch.x, batch.len).map_err(|e| match e {
            Error::NonFinite { path, index, .. } => Error::NonFinite {
                path,
                index: batch.start + index,
                item: data.items[batch.start + index].name.clone(),
            },
            other => other,
        })?;
        model_seconds += t.elapsed().as_secs_f64();
        for (i, row) in logits.chunks_exact(k).enumerate() {
            let index = batch.start + i;
            let top5 = top_k(row, 5);
            predictions.push(Prediction {
                index,
                name: data.items[index].name.clone(),
                label: data.items[index].label,
                pred: top5[0],
                confidence: softmax_at(row, top5[0]),
                top5,
            });
        }
        bar.inc(batch.len as u64);
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let summary = summarise(&predictions, model, seconds, model_seconds);
    Ok(EvalReport {
        schema: EVAL_SCHEMA,
        georob_version: env!("CARGO_PKG_VERSION"),
        model: model.info(),
        data: DataInfo {
            path: data.path.clone(),
            kind: data.kind,
            images: data.len(),
            labels: data.labels.clone(),
        },
        summary,
        predictions,
    })
}

fn summarise(p: &[Prediction], model: &Model, seconds: f64, model_seconds: f64) -> EvalSummary {
    let labelled: Vec<&Prediction> = p.iter().filter(|x| x.label.is_some()).collect();
    let frac = |n: usize| (!labelled.is_empty()).then(|| n as f64 / labelled.len() as f64);
    let top1 = frac(labelled.iter().filter(|x| x.label == Some(x.pred)).count());
    let top5 = frac(
        labelled
            .iter()
            .filter(|x| x.top5.contains(&x.label.expect("labelled")))
            .count(),
    );
    let mut counts = std::collections::BTreeMap::<usize, (usize, usize)>::new();
    for x in &labelled {
        let e = counts.entry(x.label.expect("labelled")).or_default();
        e.0 += 1;
        e.1 += usize::from(x.label == Some(x.pred));
    }
    let per_class = counts
        .into_iter()
        .map(|(class, (count, correct))| ClassAccuracy {
            class,
            name: model.class_names.as_ref().map(|n| n[class].clone()),
            count,
            correct,
            accuracy: correct as f64 / count as f64,
        })
        .collect();
    EvalSummary {
        images: p.len(),
        top1,
        top5,
        per_class,
        images_per_second: p.len() as f64 / seconds.max(1e-9),
        seconds,
        model_seconds,
    }
}
