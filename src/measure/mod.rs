//! Robustness measures behind one small trait.
//!
//! A measure is one file: a `Params` struct (serde, with defaults) that
//! implements [`Measure`] with its [`Declaration`], and one line in
//! [`registry`]. The CLI (`georob measure NAME ... --param key=value`), the
//! reports and `docs/measures.md` find it there, so nothing else changes when
//! a measure is added.
//!
//! Conventions every measure follows:
//! - robustness is measured with respect to the model's *prediction* on the
//!   clean input; an image whose prediction differs from its given label is
//!   [`Outcome::Misclassified`] and left out of robustness summaries;
//! - an image where nothing was found within the budget is
//!   [`Outcome::Failed`], counted apart and never averaged in;
//! - randomness comes from [`Context::seed`] (per image: `seed` mixed with
//!   the image's position in the data set, so results do not depend on
//!   batching, threads or the chunk the image was run in);
//! - an audit may run a measure one chunk of images at a time ([`Units`]):
//!   [`Measure::run`] sees one chunk as `ctx.data`, and
//!   [`Measure::summarise`] makes the summary from every chunk's rows;
//! - perturbations live in the space of [`space::SpacedModel`]: image space
//!   `[0,1]` for images, model space for `.npy` data.

pub mod catalog;
pub mod curve;
mod frame;
pub mod picture;
pub mod space;
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
    /// Where to save artifacts (images, flows, plots) when asked to: an audit asks the run
    /// over a measure's first chunk only, so that its pictures are drawn once.
    pub out_dir: Option<&'a Path>,
    /// Opens the other data sets and models a measure names in its parameters.
    pub resources: &'a dyn Resources,
}

/// Opens the data sets and models a measure needs besides the one it measures (held-out
/// images, models to transfer to): the caller decides how, so no measure opens files.
pub trait Resources: Sync {
    /// The data set at `path`, with integer labels from `labels` for `.npy` data.
    fn dataset(&self, path: &Path, labels: Option<&Path>) -> Result<Dataset>;
    /// The model at `path`, opened like the model being measured.
    fn model(&self, path: &Path) -> Result<Model>;
}

impl Context<'_> {
    /// Random seed of item `index` of `data`: keyed by its position in the data set, so
    /// independent of batching, thread count and chunk.
    pub fn image_seed(&self, index: usize) -> u64 {
        item_seed(self.seed, self.data.position(index))
    }
}

/// Random seed of the item at `position` of a data set for run seed `seed`.
pub fn item_seed(seed: u64, position: usize) -> u64 {
    splitmix(seed ^ splitmix(position as u64 + 1))
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

impl Outcome {
    /// The outcome of a fixed budget of perturbations: misclassified when the clean prediction
    /// is wrong, fooled when any perturbation changed it, else robust.
    pub fn of_budget(correct: bool, changed: bool) -> Outcome {
        match (correct, changed) {
            (false, _) => Outcome::Misclassified,
            (true, true) => Outcome::Fooled,
            (true, false) => Outcome::Robust,
        }
    }
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
    /// The result of data-set item `item` at position `index`.
    pub fn new(
        index: usize,
        item: &crate::data::Item,
        pred: usize,
        outcome: Outcome,
        values: Values,
    ) -> Self {
        ImageResult {
            index,
            name: item.name.clone(),
            label: item.label,
            pred,
            outcome,
            values,
        }
    }

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

impl Counts {
    /// Counts the outcomes of `images`.
    pub fn of(images: &[ImageResult]) -> Counts {
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

/// What a measure declares about itself: the CLI (`georob measure list`), the reports
/// (headline tables, HTML histograms) and `docs/measures.md` are all made from it.
///
/// A key written with a `{placeholder}` (`ratio_m{m}`, `eig{j}`) stands for every key
/// with that prefix and suffix.
#[derive(Debug)]
pub struct Declaration {
    /// Name used on the command line and in suites.
    pub name: &'static str,
    /// One line on what it measures.
    pub about: &'static str,
    /// Each parameter with one line on what it sets (the defaults come from `Default`).
    pub params: &'static [(&'static str, &'static str)],
    /// Summary keys shown in headline tables, in order, where present (at most four).
    pub headline: &'static [&'static str],
    /// Summary keys (patterns: `{...}` stands for any text) whose better direction is known:
    /// `gate --baseline` without other gates compares each against the baseline report.
    pub better: &'static [(&'static str, Better)],
    /// Per-image values worth a histogram in the HTML report, in order of preference.
    pub histograms: &'static [&'static str],
    /// Each per-image value with one line on what it holds, in groups (a measure that
    /// runs DeepFool first names [`deepfool::VALUES`] as one of its groups).
    pub values: &'static [&'static [(&'static str, &'static str)]],
    /// How an audit splits the images into work units for it.
    pub units: Units,
}

/// Which way a summary value gets better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Larger is better (an accuracy, a perturbation norm).
    Higher,
    /// Smaller is better (a fooling rate, an error).
    Lower,
}

/// How an audit splits a data set into work units for a measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// One unit per chunk of images (the suite's `chunk`): an image's row does not depend on
    /// the other images, and [`Measure::summarise`] makes the summary from every chunk's.
    Chunks,
    /// One unit over the whole data set, for the reason given: the result needs every image
    /// at once (a perturbation built from them all, the first images that qualify).
    Whole(&'static str),
}

impl Declaration {
    /// Which way summary key `key` gets better, where the measure declares it.
    pub fn better(&self, key: &str) -> Option<Better> {
        self.better
            .iter()
            .find(|&&(pattern, _)| key_matches(pattern, key))
            .map(|&(_, b)| b)
    }

    /// Whether `key` is one of the declared per-image values.
    pub fn declares_value(&self, key: &str) -> bool {
        self.values
            .iter()
            .flat_map(|group| group.iter())
            .any(|&(pattern, _)| key_matches(pattern, key))
    }
}

/// Whether `key` is `pattern`, where a `{...}` in `pattern` stands for any text.
fn key_matches(pattern: &str, key: &str) -> bool {
    match (pattern.find('{'), pattern.find('}')) {
        (Some(a), Some(b)) if a < b => {
            let (prefix, suffix) = (&pattern[..a], &pattern[b + 1..]);
            key.len() > prefix.len() + suffix.len()
                && key.starts_with(prefix)
                && key.ends_with(suffix)
        }
        _ => pattern == key,
    }
}

/// What a measure's run over the images of its context produces; the harness adds the
/// name, parameters, space, outcome counts and the summary keys every measure reports.
///
/// A measure run one chunk at a time ([`Units::Chunks`]) leaves its headline numbers to
/// [`Measure::summarise`]: `summary` and `extra` here hold what that needs of the chunk
/// beyond its rows (constants of the model, counts that are no per-image value).
#[derive(Debug, Default)]
pub struct Output {
    /// Per-image results, in data-set order.
    pub images: Vec<ImageResult>,
    /// Headline numbers (see [`MeasureResult::summary`]).
    pub summary: BTreeMap<String, f64>,
    /// Measure-specific structured results (curves, spectra, matrices).
    pub extra: serde_json::Value,
    /// Files written.
    pub artifacts: Vec<Artifact>,
}

/// A measure's numbers over a set of images besides their rows: the `summary` and `extra`
/// of an [`Output`] (one chunk's) or of a [`MeasureResult`] (the data set's).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Headline numbers (see [`MeasureResult::summary`]).
    pub summary: BTreeMap<String, f64>,
    /// Measure-specific structured results.
    pub extra: serde_json::Value,
}

impl Summary {
    /// The first chunk's `extra` (its constants), or null.
    pub fn first_extra(parts: &[Summary]) -> serde_json::Value {
        parts.first().map(|p| p.extra.clone()).unwrap_or_default()
    }

    /// The first chunk's summary value `key` (a constant every chunk reports).
    pub fn first(parts: &[Summary], key: &str) -> Option<f64> {
        parts.first().and_then(|p| p.summary.get(key).copied())
    }
}

/// Checks a box constraint `[lo, hi]` (`--bounds`, a suite's `bounds`): both ends finite
/// and `lo < hi`. The error says what is wrong; callers name the flag or file.
pub fn check_bounds(lo: f32, hi: f32) -> Result<()> {
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(Error::Config(format!(
            "[{lo}, {hi}] is not an interval: LO and HI must be finite numbers with LO < HI"
        )));
    }
    Ok(())
}

/// Checks an integer parameter `key` of `measure` against its least meaningful value `min`
/// (below it a measure would do nothing, or silently use another value).
pub(crate) fn at_least(measure: &str, key: &str, value: usize, min: usize) -> Result<()> {
    if value < min {
        return Err(Error::Config(format!(
            "{measure}: {key} = {value} must be at least {min}"
        )));
    }
    Ok(())
}

/// A robustness measure: its parameters (a serde struct with defaults) are the measure.
///
/// Adding one is one file that implements this trait and one line in [`registry`]
/// (`docs/adding-a-measure.md`).
pub trait Measure:
    Serialize + serde::de::DeserializeOwned + Default + Send + Sync + 'static
{
    /// Name, description, parameters, headline keys, histograms and per-image values.
    const DECLARATION: &'static Declaration;
    /// Whether the measure may take input gradients. Where it never does (forward passes
    /// only), running it decides no gradient mode: deciding costs a probe run and a graph
    /// build when the model opens, and the report's `gradient` stays empty.
    const GRADIENTS: bool = true;
    /// Checks parameters that serde cannot (ranges, combinations).
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// Runs over the images of `ctx.data`: the whole data set, or one chunk of it when the
    /// declaration says [`Units::Chunks`].
    fn run(&self, ctx: &Context) -> Result<Output>;
    /// The summary and `extra` of the data set from `images`, every chunk's rows in
    /// data-set order, and `parts`, each chunk's `summary` and `extra` from [`Measure::run`]
    /// in the same order. Computed from these alone, it is the same whether the chunks ran
    /// in one process, were resumed or came from merged shards.
    ///
    /// The default, for a measure run whole ([`Units::Whole`]), is its one run's.
    fn summarise(&self, images: &[ImageResult], parts: Vec<Summary>) -> Result<Summary> {
        let _ = images;
        Ok(parts.into_iter().next().unwrap_or_default())
    }
    /// Summary keys of `own` measured against `baseline`, this measure's result with the same
    /// parameters and data on the model a suite names as its `baseline_model` (e.g. errors
    /// normalised by the baseline's). An audit adds them to `own`'s summary once both are
    /// complete. The default adds none.
    fn against(
        &self,
        own: &MeasureResult,
        baseline: &MeasureResult,
    ) -> Result<BTreeMap<String, f64>> {
        let _ = (own, baseline);
        Ok(BTreeMap::new())
    }
}

/// A measure with its parameters set, as the audit and the CLI hold it.
pub trait Configured: Send + Sync {
    /// The measure's declaration.
    fn declaration(&self) -> &'static Declaration;
    /// The measure's [`Measure::GRADIENTS`].
    fn takes_gradients(&self) -> bool;
    /// Parameters in force, as JSON.
    fn params(&self) -> serde_json::Value;
    /// Runs the measure over the images of `ctx.data` (a chunk or the whole data set): their
    /// rows, indexed by their position in the data set, with the chunk's own `summary` and
    /// `extra` as the measure's run gives them, for [`Configured::combine`].
    fn run_part(&self, ctx: &Context) -> Result<MeasureResult>;
    /// The result over the data set from the results of [`Configured::run_part`] over its
    /// chunks, in data-set order: their rows and artifacts together, the outcome counts, the
    /// measure's [`Measure::summarise`], and the summary keys every measure reports, `n`
    /// (images), `n_attacked` (images not misclassified) and `success_rate` (fooled /
    /// attacked), where the measure did not set them.
    fn combine(&self, parts: Vec<MeasureResult>) -> Result<MeasureResult>;
    /// The measure's [`Measure::against`]: summary keys of `own` against `baseline`.
    fn against(
        &self,
        own: &MeasureResult,
        baseline: &MeasureResult,
    ) -> Result<BTreeMap<String, f64>>;
    /// Runs the measure over every image of `ctx.data` in one go.
    fn run(&self, ctx: &Context) -> Result<MeasureResult> {
        self.combine(vec![self.run_part(ctx)?])
    }
}

impl<M: Measure> Configured for M {
    fn declaration(&self) -> &'static Declaration {
        M::DECLARATION
    }

    fn takes_gradients(&self) -> bool {
        M::GRADIENTS
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn run_part(&self, ctx: &Context) -> Result<MeasureResult> {
        let Output {
            mut images,
            summary,
            extra,
            artifacts,
        } = Measure::run(self, ctx)?;
        for image in &mut images {
            image.index = ctx.data.position(image.index);
        }
        if cfg!(debug_assertions) {
            let undeclared: std::collections::BTreeSet<&str> = images
                .iter()
                .flat_map(|i| i.values.keys())
                .filter(|k| !M::DECLARATION.declares_value(k))
                .collect();
            assert!(
                undeclared.is_empty(),
                "{}: per-image values not declared: {undeclared:?}",
                M::DECLARATION.name
            );
        }
        Ok(MeasureResult {
            measure: M::DECLARATION.name.into(),
            params: Configured::params(self),
            space: space::SpacedModel::new(ctx.model, ctx.data).space,
            summary,
            counts: Counts::of(&images),
            images,
            extra,
            artifacts,
        })
    }

    fn against(
        &self,
        own: &MeasureResult,
        baseline: &MeasureResult,
    ) -> Result<BTreeMap<String, f64>> {
        Measure::against(self, own, baseline)
    }

    fn combine(&self, parts: Vec<MeasureResult>) -> Result<MeasureResult> {
        let space = match parts.first() {
            Some(p) => p.space,
            None => {
                return Err(Error::Config(format!(
                    "{}: no results to combine",
                    M::DECLARATION.name
                )))
            }
        };
        let mut images = Vec::with_capacity(parts.iter().map(|p| p.images.len()).sum());
        let mut artifacts = vec![];
        let mut summaries = Vec::with_capacity(parts.len());
        for p in parts {
            images.extend(p.images);
            artifacts.extend(p.artifacts);
            summaries.push(Summary {
                summary: p.summary,
                extra: p.extra,
            });
        }
        let Summary { mut summary, extra } = self.summarise(&images, summaries)?;
        let counts = Counts::of(&images);
        let n = images.len();
        let attacked = n - counts.misclassified;
        summary.entry("n".into()).or_insert(n as f64);
        summary
            .entry("n_attacked".into())
            .or_insert(attacked as f64);
        if attacked > 0 {
            summary
                .entry("success_rate".into())
                .or_insert(counts.fooled as f64 / attacked as f64);
        }
        Ok(MeasureResult {
            measure: M::DECLARATION.name.into(),
            params: Configured::params(self),
            space,
            summary,
            counts,
            images,
            extra,
            artifacts,
        })
    }
}

/// A registry entry: a measure's declaration, its defaults and how to build it.
pub struct Entry {
    /// What the measure declares.
    pub declaration: &'static Declaration,
    /// Default parameters, as JSON.
    pub defaults: fn() -> serde_json::Value,
    /// Builds the measure from parameters (a JSON object; missing keys take defaults).
    pub build: fn(&serde_json::Value) -> Result<Box<dyn Configured>>,
}

/// The registry entry of measure `M`.
fn entry<M: Measure>() -> Entry {
    Entry {
        declaration: M::DECLARATION,
        defaults: || serde_json::to_value(M::default()).unwrap_or_default(),
        build: |p| {
            let m: M = parse_params(M::DECLARATION.name, p)?;
            m.validate()?;
            Ok(Box::new(m))
        },
    }
}

/// Declares each measure's module and lists it in [`registry`]: adding a measure is its
/// file plus its name here.
macro_rules! measures {
    ($($name:ident),* $(,)?) => {
        $(pub mod $name;)*

        /// Every measure georob knows, in the order `georob measure list` shows them.
        pub fn registry() -> Vec<Entry> {
            vec![$(entry::<$name::Params>()),*]
        }
    };
}

measures! {
    accuracy,
    deepfool,
    noise,
    subspace,
    structured,
    uap,
    curvature,
    crosssection,
    cure,
    grid,
    manifool,
    stadv,
    invariance,
    margin,
    minnorm,
    robust_accuracy,
    certify,
    corruptions,
    stability,
}

/// A result holding only `summary`, for tests of [`Measure::against`].
#[cfg(test)]
pub(crate) fn summary_only(measure: &str, summary: &[(&str, f64)]) -> MeasureResult {
    MeasureResult {
        measure: measure.into(),
        params: serde_json::Value::Null,
        space: space::Space::Image,
        summary: summary.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
        counts: Counts::default(),
        images: vec![],
        extra: serde_json::Value::Null,
        artifacts: vec![],
    }
}

/// The declaration of measure `name`, if georob knows it.
pub fn declaration(name: &str) -> Option<&'static Declaration> {
    registry()
        .into_iter()
        .map(|e| e.declaration)
        .find(|d| d.name == name)
}

/// Builds measure `name` with `params`.
pub fn build(name: &str, params: &serde_json::Value) -> Result<Box<dyn Configured>> {
    let all = registry();
    match all.iter().find(|m| m.declaration.name == name) {
        Some(m) => (m.build)(params),
        None => Err(Error::Config(format!(
            "unknown measure {name:?}; known: {}",
            all.iter()
                .map(|m| m.declaration.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Deserialises a measure's parameters, naming the measure, and the parameter at fault when
/// one alone fails (serde's message does not say which field a bad value belongs to).
pub fn parse_params<T: serde::de::DeserializeOwned>(
    measure: &str,
    params: &serde_json::Value,
) -> Result<T> {
    let value = if params.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        params.clone()
    };
    serde_json::from_value(value.clone()).map_err(|e| {
        // Every measure's parameters have defaults: each key can be tried on its own.
        let culprit = value.as_object().and_then(|map| {
            map.iter().find(|(k, v)| {
                let alone = serde_json::json!({ k.as_str(): v });
                serde_json::from_value::<T>(alone).is_err()
            })
        });
        match culprit {
            Some((key, v)) => Error::Config(format!("{measure}: parameter {key} = {v}: {e}")),
            None => Error::Config(format!("{measure}: bad parameters: {e}")),
        }
    })
}

/// The values named `key` of the images that have one, in image order.
pub fn values_of(images: &[ImageResult], key: &str) -> Vec<f64> {
    images
        .iter()
        .filter_map(|i| i.values.get(key).copied())
        .collect()
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

    /// Every measure an audit runs in chunks gives, from its runs over two chunks combined,
    /// the result of one run over all the images: rows keyed by data-set position, and a
    /// summary made from the rows alone.
    #[test]
    fn chunks_combined_give_the_result_of_one_run() {
        let (model, _) = crate::testutil::digits_on_tract(1, None);
        let mut data = crate::testutil::labelled_digits(10);
        // Two wrong labels, so that some rows are misclassified ones.
        for i in [1, 6] {
            data.items[i].label = data.items[i].label.map(|l| (l + 1) % 10);
        }
        let progress = Progress::hidden();
        let files = crate::resources::Files::like(&model);
        let context = |data| Context {
            model: &model,
            data,
            seed: 5,
            bounds: Some((0.0, 1.0)),
            progress: &progress,
            out_dir: None,
            resources: &files,
        };
        // Small budgets: the point is the bookkeeping, not the search.
        let params = |name: &str| match name {
            "noise" => serde_json::json!({"directions": 4}),
            "grid" => serde_json::json!({"angles": 5, "shifts": 3, "k": 3}),
            "manifool" => serde_json::json!({"max_iter": 10, "scan": 2, "refine": 1}),
            "stadv" => serde_json::json!({"max_iter": 10, "budget_grid": 4}),
            "invariance" => serde_json::json!({"radii": [0.1, 0.5], "trials": 4}),
            "robust_accuracy" => serde_json::json!({
                "eps": [0.05, 0.2], "steps": 5, "targets": 2, "queries": 20
            }),
            "certify" => serde_json::json!({"eps": [0.005, 0.02], "budget": 1e6}),
            // Random (per-image seeds) and deterministic ones, two severities.
            "corruptions" => serde_json::json!({
                "corruptions": ["gaussian_noise", "glass_blur", "elastic_transform", "jpeg_compression"],
                "severities": [2, 5]
            }),
            "stability" => serde_json::json!({"perturbations": ["gaussian_noise", "rotate"]}),
            _ => serde_json::json!({}),
        };
        let chunks: Vec<Dataset> = [0..3, 3..10].map(|r| data.chunk(r)).into();
        let chunked: Vec<Entry> = registry()
            .into_iter()
            .filter(|e| e.declaration.units == Units::Chunks)
            .collect();
        assert!(chunked.len() > 10, "{} chunked measures", chunked.len());
        for entry in chunked {
            let name = entry.declaration.name;
            let m = (entry.build)(&params(name)).unwrap();
            let whole = m.run(&context(&data)).unwrap();
            let parts = chunks
                .iter()
                .map(|chunk| m.run_part(&context(chunk)))
                .collect::<Result<Vec<_>>>()
                .unwrap();
            let combined = m.combine(parts).unwrap();
            assert_eq!(
                serde_json::to_string(&combined).unwrap(),
                serde_json::to_string(&whole).unwrap(),
                "{name}"
            );
        }
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
