//! Suite files: which models, which data, which measures with which
//! parameters, and the thresholds that decide the verdict.
//!
//! ```toml
//! seed = 0
//! data = "digits/test_x.npy"        # paths are relative to the suite file
//! labels = "digits/test_y.npy"
//! limit = 200                        # optional: the first N items
//! chunk = 256                        # optional: images per work unit (docs/scale.md)
//! bounds = [0.0, 1.0]                # optional: default [0,1] for images, none for .npy
//! thresholds = ["deepfool.median_rho >= 0.05", "grid.accuracy >= 0.2"]
//! baseline_model = "cnn"             # optional: measures that compare add keys against it
//!
//! [[models]]
//! name = "cnn"                       # optional: default the file stem
//! path = "digits/digits_cnn.onnx"
//!
//! [[measures]]
//! name = "deepfool"
//!
//! [[measures]]
//! id = "manifool_rigid"              # needed when a measure appears twice
//! name = "manifool"
//! params = { group = "rigid" }
//! ```
//!
//! `examples/suite.toml` is a commented, runnable example.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gate::Threshold;

/// One model of a suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Variant name used in reports; default: the file stem.
    #[serde(default)]
    pub name: Option<String>,
    /// The ONNX file.
    pub path: PathBuf,
}

/// One measure of a suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureEntry {
    /// Id used in reports and thresholds; default: the name.
    #[serde(default)]
    pub id: Option<String>,
    /// Registry name (`georob measure list`).
    pub name: String,
    /// Parameters; missing keys take the measure's defaults.
    #[serde(default)]
    pub params: serde_json::Value,
}

impl MeasureEntry {
    /// The id in reports.
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.name)
    }

    fn new(id: Option<&str>, name: &str, params: serde_json::Value) -> Self {
        MeasureEntry {
            id: id.map(Into::into),
            name: name.into(),
            params,
        }
    }
}

/// A suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// Seed of every random choice.
    #[serde(default)]
    pub seed: u64,
    /// Data (image folder, CSV manifest, image, or `.npy`).
    pub data: PathBuf,
    /// Labels for `.npy` data.
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// Use only the first N items.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Images per work unit of a measure run in chunks ([`crate::measure::Units`]): an audit
    /// spreads one such measure over `ceil(images / chunk)` units. Shards and resumed runs
    /// must use the same chunk, which the report records.
    #[serde(default = "default_chunk")]
    pub chunk: usize,
    /// Box constraint in the measured space.
    #[serde(default, deserialize_with = "two_bounds")]
    pub bounds: Option<[f32; 2]>,
    /// Models (variants) audited on the same data with the same seeds.
    pub models: Vec<ModelEntry>,
    /// The model (by name) every model's results are also measured against, e.g. the fp32
    /// model of int8 variants: measures that compare add keys to each model's summary
    /// (`corruptions`: CE and mCE normalised by the baseline's errors), the baseline's own
    /// included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_model: Option<String>,
    /// Measures; default: [`default_measures`].
    #[serde(default = "default_measures")]
    pub measures: Vec<MeasureEntry>,
    /// Thresholds, `ID.KEY OP VALUE`.
    #[serde(default)]
    pub thresholds: Vec<String>,
}

/// Images per work unit when the suite does not say: 50,000 images make 196 units of each
/// measure run in chunks (docs/scale.md).
pub const DEFAULT_CHUNK: usize = 256;

fn default_chunk() -> usize {
    DEFAULT_CHUNK
}

/// The default suite: accuracy, DeepFool L2, random noise (4 directions), a
/// universal perturbation at ξ = 0.2 of the mean image norm (2 passes),
/// ManiFool on the rigid and affine groups (3 candidate classes, 15
/// iterations), and a rotation/translation grid (11 × 3 × 3 over ±30° and
/// ±3 px or ±10%). Budgets are set so that an audit of a few photos stays
/// within minutes on a laptop-class CPU.
pub fn default_measures() -> Vec<MeasureEntry> {
    use serde_json::json;
    vec![
        MeasureEntry::new(None, "accuracy", json!({})),
        MeasureEntry::new(None, "deepfool", json!({})),
        MeasureEntry::new(None, "noise", json!({"directions": 4})),
        MeasureEntry::new(None, "uap", json!({"xi_fraction": 0.2, "max_passes": 2})),
        MeasureEntry::new(
            Some("manifool_rigid"),
            "manifool",
            json!({"group": "rigid", "candidates": 3, "max_iter": 15}),
        ),
        MeasureEntry::new(
            Some("manifool_affine"),
            "manifool",
            json!({"group": "affine", "candidates": 3, "max_iter": 15}),
        ),
        MeasureEntry::new(None, "grid", json!({"angles": 11, "shifts": 3, "k": 10})),
    ]
}

/// `bounds = [LO, HI]`: exactly two numbers (a longer list is refused, not cut short).
fn two_bounds<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<[f32; 2]>, D::Error> {
    match Option::<Vec<f32>>::deserialize(d)? {
        None => Ok(None),
        Some(v) => match v.as_slice() {
            [lo, hi] => Ok(Some([*lo, *hi])),
            _ => Err(serde::de::Error::custom(format!(
                "bounds = {v:?}: expected two numbers [LO, HI]"
            ))),
        },
    }
}

/// Whether `name` is one plain file name: not empty, not `.` or `..`, no separator.
fn plain_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    let one = matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(n)), None) if n == name
    );
    one && !name.contains(['/', '\\', '\0'])
}

impl Suite {
    /// The default suite for one model and one data set.
    pub fn default_for(model: &Path, data: &Path, labels: Option<&Path>) -> Suite {
        Suite {
            seed: 0,
            data: data.into(),
            labels: labels.map(Into::into),
            limit: None,
            chunk: DEFAULT_CHUNK,
            bounds: None,
            models: vec![ModelEntry {
                name: None,
                path: model.into(),
            }],
            baseline_model: None,
            measures: default_measures(),
            thresholds: vec![],
        }
    }

    /// Reads a suite file; relative paths become relative to its folder.
    pub fn load(path: &Path) -> Result<Suite> {
        let text = crate::read::text(path, crate::read::TEXT_CAP)?;
        let mut suite: Suite =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let empty = [("data", &suite.data)]
            .into_iter()
            .chain(suite.labels.iter().map(|l| ("labels", l)))
            .chain(suite.models.iter().map(|m| ("a model's path", &m.path)))
            .find(|(_, p)| p.as_os_str().is_empty());
        if let Some((key, _)) = empty {
            return Err(Error::Config(format!(
                "{}: {key} is empty; give a path",
                path.display()
            )));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut suite.data);
        if let Some(l) = suite.labels.as_mut() {
            rebase(l);
        }
        for m in &mut suite.models {
            rebase(&mut m.path);
        }
        suite
            .validate()
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Ok(suite)
    }

    /// Checks names are unique, measures exist, the chunk is not empty and thresholds parse.
    pub fn validate(&self) -> Result<()> {
        if self.models.is_empty() {
            return Err(Error::Config("the suite has no models".into()));
        }
        if self.chunk == 0 {
            return Err(Error::Config("chunk must be at least 1 image".into()));
        }
        if self.limit == Some(0) {
            return Err(Error::Config("limit = 0: use at least 1 image".into()));
        }
        if self.measures.is_empty() {
            return Err(Error::Config(
                "measures = []: the suite measures nothing, so it could only pass".into(),
            ));
        }
        if let Some([lo, hi]) = self.bounds {
            crate::measure::check_bounds(lo, hi)
                .map_err(|e| Error::Config(format!("bounds: {e}")))?;
        }
        let names = self.model_names();
        let ids: Vec<&str> = self.measures.iter().map(MeasureEntry::id).collect();
        for (what, name) in names
            .iter()
            .map(|n| ("model name", n.as_str()))
            .chain(ids.iter().map(|id| ("measure id", *id)))
        {
            if !plain_name(name) {
                return Err(Error::Config(format!(
                    "{what} {name:?} cannot name a folder: artifacts go to artifacts/MODEL/ID \
                     inside --out, so a name is one plain file name (no '/', '\\', '.' or '..')"
                )));
            }
        }
        if let Some(b) = &self.baseline_model {
            if !names.contains(b) {
                return Err(Error::Config(format!(
                    "baseline_model = {b:?}: no model of that name (models: {})",
                    names.join(", ")
                )));
            }
        }
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(Error::Config(format!(
                    "two models are named {n:?}: give them names"
                )));
            }
        }
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                return Err(Error::Config(format!(
                    "measure id {id:?} appears twice: give one an `id`"
                )));
            }
        }
        for m in &self.measures {
            crate::measure::build(&m.name, &m.params)?;
        }
        for t in self.thresholds()? {
            if !ids.contains(&t.measure.as_str()) {
                return Err(Error::Config(format!(
                    "threshold {t}: no measure with id {:?} in the suite",
                    t.measure
                )));
            }
        }
        Ok(())
    }

    /// Model names, in suite order.
    pub fn model_names(&self) -> Vec<String> {
        self.models
            .iter()
            .map(|m| {
                m.name.clone().unwrap_or_else(|| {
                    m.path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "model".into())
                })
            })
            .collect()
    }

    /// Parsed thresholds.
    pub fn thresholds(&self) -> Result<Vec<Threshold>> {
        self.thresholds.iter().map(|t| t.parse()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_parse_with_defaults_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            r#"
data = "x.npy"
labels = "y.npy"
thresholds = ["deepfool.median_rho >= 0.01"]
[[models]]
path = "a.onnx"
[[models]]
name = "b"
path = "/abs/a.onnx"
"#,
        )
        .unwrap();
        let s = Suite::load(&path).unwrap();
        assert_eq!(s.data, dir.path().join("x.npy"));
        assert_eq!(s.models[1].path, PathBuf::from("/abs/a.onnx"));
        assert_eq!(s.model_names(), ["a", "b"]);
        assert_eq!(s.measures, default_measures());
        assert_eq!(s.chunk, DEFAULT_CHUNK);
        assert_eq!(s.thresholds().unwrap()[0].key, "median_rho");
    }

    #[test]
    fn bad_suites_are_named() {
        let mut s = Suite::default_for(Path::new("m.onnx"), Path::new("d"), None);
        s.thresholds = vec!["nope.x >= 1".into()];
        assert!(s.validate().unwrap_err().to_string().contains("nope"));
        s.thresholds.clear();
        s.measures
            .push(MeasureEntry::new(None, "deepfool", serde_json::json!({})));
        assert!(s.validate().unwrap_err().to_string().contains("twice"));
        s.measures.pop();
        s.measures.push(MeasureEntry::new(
            Some("x"),
            "deepfool",
            serde_json::json!({"bogus": 1}),
        ));
        assert!(s.validate().unwrap_err().to_string().contains("bogus"));
        s.measures.pop();
        s.baseline_model = Some("fp32".into());
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("\"fp32\"") && e.contains("models: m"), "{e}");
        s.baseline_model = Some("m".into());
        s.validate().unwrap();
        s.chunk = 0;
        assert!(s.validate().unwrap_err().to_string().contains("chunk"));
    }
}
