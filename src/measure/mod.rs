//! Robustness measures behind one small trait.
//!
//! A measure is one file: a `Params` struct (serde, with defaults), a type
//! implementing [`Measure`], and one line in [`registry`]. The CLI
//! (`georob measure NAME ... --param key=value`) and the reports find it
//! there, so nothing else changes when a measure is added.
//!
//! Conventions every measure follows:
//! - robustness is measured with respect to the model's *prediction* on the
//!   clean input; an image whose prediction differs from its given label is
//!   [`Outcome::Misclassified`] and left out of robustness summaries;
//! - an image where nothing was found within the budget is
//!   [`Outcome::Failed`], counted apart and never averaged in;
//! - randomness comes from [`Context::seed`] (per image: `seed` mixed with
//!   the image index, so results do not depend on batching or threads);
//! - perturbations live in the space of [`space::SpacedModel`]: image space
//!   `[0,1]` for images, model space for `.npy` data.

mod accuracy;
pub mod crosssection;
pub mod cure;
pub mod curvature;
pub mod deepfool;
mod geometric;
mod grid;
mod invariance;
mod manifool;
pub mod noise;
pub mod picture;
pub mod space;
mod stadv;
pub mod structured;
pub mod subspace;
pub mod uap;
mod values;

pub use values::{Name, Values};

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::progress::Progress;

/// Everything a measure may use.
pub struct Context<'a> {
    /// The model.
    pub model: &'a Model,
    /// The data.
    pub data: &'a Dataset,
    /// Seed of every random choice.
    pub seed: u64,
    /// Box constraint in the measured space (`--bounds`); default `[0,1]`
    /// for images, none for `.npy`.
    pub bounds: Option<(f32, f32)>,
    /// Progress display.
    pub progress: &'a Progress,
    /// Where to save artifacts (images, flows, plots) when asked to.
    pub out_dir: Option<&'a Path>,
}

impl Context<'_> {
    /// Per-image random seed: independent of batching and thread count.
    pub fn image_seed(&self, index: usize) -> u64 {
        splitmix(self.seed ^ splitmix(index as u64 + 1))
    }
}

/// SplitMix64 finaliser: a cheap, well-mixed hash of a 64-bit value.
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What happened to one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A perturbation changed the prediction.
    Fooled,
    /// Nothing changed the prediction within the measure's search (for
    /// measures with a fixed budget, e.g. a grid: the model withstood it).
    Robust,
    /// The clean prediction already differs from the label.
    Misclassified,
    /// The search ran out of budget without an answer.
    Failed,
}

/// One image's result.
#[derive(Debug, Clone)]
pub struct ImageResult {
    /// Position in the data set.
    pub index: usize,
    /// Item name.
    pub name: String,
    /// Given label, if any.
    pub label: Option<usize>,
    /// Clean prediction.
    pub pred: usize,
    /// Outcome.
    pub outcome: Outcome,
    /// Scalar results (e.g. `norm_l2`, `rho`, `iterations`, `adv_pred`).
    pub values: Values,
}

impl ImageResult {
    /// Whether a perturbation changed the prediction.
    pub fn success(&self) -> bool {
        self.outcome == Outcome::Fooled
    }
}

/// JSON form of an image: `{index, name, label, pred, success, outcome, ...values}`.
impl Serialize for ImageResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Row<'a> {
            index: usize,
            name: &'a str,
            label: Option<usize>,
            pred: usize,
            success: bool,
            outcome: Outcome,
            #[serde(flatten)]
            values: &'a Values,
        }
        Row {
            index: self.index,
            name: &self.name,
            label: self.label,
            pred: self.pred,
            success: self.success(),
            outcome: self.outcome,
            values: &self.values,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ImageResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Row {
            index: usize,
            name: String,
            label: Option<usize>,
            pred: usize,
            #[serde(rename = "success")]
            _success: bool,
            outcome: Outcome,
            // JSON has no NaN: serde_json writes it as null, read back as NaN.
            #[serde(flatten)]
            values: Values,
        }
        let r = Row::deserialize(d)?;
        Ok(ImageResult {
            index: r.index,
            name: r.name,
            label: r.label,
            pred: r.pred,
            outcome: r.outcome,
            values: r.values,
        })
    }
}

/// Outcome counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    /// Images fooled.
    pub fooled: usize,
    /// Images that withstood the measure.
    pub robust: usize,
    /// Images misclassified before any perturbation.
    pub misclassified: usize,
    /// Images where the search failed.
    pub failed: usize,
}

/// A file a measure wrote (picture, flow field, CSV).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    /// What it shows.
    pub description: String,
    /// Path relative to the output directory.
    pub path: String,
}

/// Everything a measure returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeasureResult {
    /// Measure name.
    pub measure: String,
    /// Parameters in force (defaults filled in).
    pub params: serde_json::Value,
    /// Space perturbations were measured in.
    pub space: space::Space,
    /// Headline numbers, keyed by name (e.g. `median_norm_l2`, `fooling_rate`);
    /// thresholds refer to them as `MEASURE.KEY`.
    #[serde(deserialize_with = "nan_map")]
    pub summary: BTreeMap<String, f64>,
    /// Outcome counts.
    pub counts: Counts,
    /// Per-image results, in data-set order.
    pub images: Vec<ImageResult>,
    /// Measure-specific structured results (curves, spectra, matrices).
    pub extra: serde_json::Value,
    /// Files written.
    pub artifacts: Vec<Artifact>,
}

/// Reads a map of numbers where JSON `null` stands for NaN.
fn nan_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<String, f64>, D::Error> {
    let m: BTreeMap<String, Option<f64>> = Deserialize::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

impl MeasureResult {
    /// Counts the outcomes of `images`.
    pub fn count(images: &[ImageResult]) -> Counts {
        let mut c = Counts::default();
        for i in images {
            match i.outcome {
                Outcome::Fooled => c.fooled += 1,
                Outcome::Robust => c.robust += 1,
                Outcome::Misclassified => c.misclassified += 1,
                Outcome::Failed => c.failed += 1,
            }
        }
        c
    }
}

/// A robustness measure.
pub trait Measure: Send + Sync {
    /// Registry name (`deepfool`, `grid`, ...).
    fn name(&self) -> &'static str;
    /// Parameters in force, as JSON.
    fn params(&self) -> serde_json::Value;
    /// Runs over the whole data set in `ctx`.
    fn run(&self, ctx: &Context) -> Result<MeasureResult>;
}

/// A registry entry.
pub struct MeasureInfo {
    /// Name used on the command line and in suites.
    pub name: &'static str,
    /// One line on what it measures.
    pub about: &'static str,
    /// Default parameters, as JSON (what `--list` prints).
    pub defaults: fn() -> serde_json::Value,
    /// Builds the measure from parameters (a JSON object; missing keys take defaults).
    pub build: fn(&serde_json::Value) -> Result<Box<dyn Measure>>,
}

/// A measure's default parameters as JSON.
pub fn defaults<P: Default + Serialize>() -> serde_json::Value {
    serde_json::to_value(P::default()).unwrap_or_default()
}

/// Runs `measure` and fills in the summary keys every measure reports:
/// `n` (images), `n_attacked` (images not misclassified) and
/// `success_rate` (fooled / attacked), where the measure did not set them.
pub fn run(measure: &dyn Measure, ctx: &Context) -> Result<MeasureResult> {
    let mut r = measure.run(ctx)?;
    let c = &r.counts;
    let n = r.images.len();
    let attacked = n - c.misclassified;
    let fooled = c.fooled as f64;
    r.summary.entry("n".into()).or_insert(n as f64);
    r.summary
        .entry("n_attacked".into())
        .or_insert(attacked as f64);
    if attacked > 0 {
        r.summary
            .entry("success_rate".into())
            .or_insert(fooled / attacked as f64);
    }
    Ok(r)
}

/// Every measure georob knows.
pub fn registry() -> Vec<MeasureInfo> {
    vec![
        accuracy::info(),
        deepfool::info(),
        noise::info(),
        subspace::info(),
        structured::info(),
        uap::info(),
        curvature::info(),
        crosssection::info(),
        cure::info(),
        grid::info(),
        manifool::info(),
        stadv::info(),
        invariance::info(),
    ]
}

/// Builds measure `name` with `params`.
pub fn build(name: &str, params: &serde_json::Value) -> Result<Box<dyn Measure>> {
    let all = registry();
    match all.iter().find(|m| m.name == name) {
        Some(m) => (m.build)(params),
        None => Err(Error::Config(format!(
            "unknown measure {name:?}; known: {}",
            all.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Deserialises a measure's parameters, naming the measure on error.
pub fn parse_params<T: serde::de::DeserializeOwned>(
    measure: &str,
    params: &serde_json::Value,
) -> Result<T> {
    let value = if params.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        params.clone()
    };
    serde_json::from_value(value)
        .map_err(|e| Error::Config(format!("{measure}: bad parameters: {e}")))
}

/// Median of finite values (None when empty).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

/// Mean of finite values (None when empty).
pub fn mean(values: &[f64]) -> Option<f64> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The digits CNN on tract (`threads`, default all) and its first `images` test images.
#[cfg(test)]
pub(crate) fn digits_on_tract(images: usize, threads: Option<usize>) -> (Model, Dataset) {
    use crate::model::{BackendChoice, BackendKind, ModelOptions};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx_models/digits");
    let options = ModelOptions {
        backend: BackendChoice::Exactly(BackendKind::Tract),
        threads,
        ..Default::default()
    };
    let model = Model::open(&root.join("digits_cnn.onnx"), &options).unwrap();
    let mut data = Dataset::open(&root.join("test_x.npy"), None).unwrap();
    data.items.truncate(images);
    (model, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mean_skip_non_finite() {
        assert_eq!(median(&[3.0, 1.0, f64::NAN, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(mean(&[1.0, f64::INFINITY, 3.0]), Some(2.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn unknown_measures_and_parameters_are_named() {
        let e = build("nope", &serde_json::Value::Null)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("nope") && e.contains("accuracy"), "{e}");
        let e = build("accuracy", &serde_json::json!({"bogus": 1}))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
