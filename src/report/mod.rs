//! The audit report and the files made from it: `report.json` (schema
//! `georob.report/1`), `images.csv`, `report.html`, `junit.xml`,
//! `report.sarif` and `summary.md`.
//!
//! Writers only read [`Report`]: a new measure shows up in every file
//! through its summary, its per-image values and its artifacts.

mod csv;
mod html;
mod junit;
mod markdown;
mod plot;
mod sarif;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gate::{self, GateResult, Threshold};
use crate::measure::MeasureResult;
use crate::model::{BackendKind, GradientMode, ModelInfo, OutputTransform};
use crate::spec::InputSpec;
use crate::suite::Suite;

/// The report files that carry gate results.
const GATE_FILES: [&str; 3] = ["junit.xml", "report.sarif", "summary.md"];

/// Version of the report layout.
pub const REPORT_SCHEMA: &str = "georob.report/1";

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every gate passed (or there were none).
    Pass,
    /// A gate failed.
    Fail,
    /// Units are missing (interrupted run, or one shard).
    Partial,
}

/// The model as the report records it (what does not depend on how it ran).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelRecord {
    /// File as given.
    pub path: PathBuf,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Backend.
    pub backend: BackendKind,
    /// Backend description.
    pub backend_detail: String,
    /// Input specification.
    pub input: InputSpec,
    /// Classes.
    pub classes: usize,
    /// How the output became logits.
    pub output_transform: OutputTransform,
}

impl From<&ModelInfo> for ModelRecord {
    fn from(i: &ModelInfo) -> Self {
        ModelRecord {
            path: i.path.clone(),
            sha256: i.sha256.clone(),
            backend: i.backend,
            backend_detail: i.backend_detail.clone(),
            input: i.input.clone(),
            classes: i.classes,
            output_transform: i.output_transform,
        }
    }
}

/// One measure's result in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeasureEntry {
    /// Id in the suite.
    pub id: String,
    /// The result.
    #[serde(flatten)]
    pub result: MeasureResult,
}

/// Everything about one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelReport {
    /// Variant name.
    pub name: String,
    /// The model (absent when none of its units ran).
    pub model: Option<ModelRecord>,
    /// Gradient mode (absent when none of its units ran, or none of the suite's measures
    /// takes gradients).
    pub gradient: Option<GradientMode>,
    /// Results in suite order (a measure with a unit missing left out).
    pub measures: Vec<MeasureEntry>,
}

impl ModelReport {
    /// `id.key` of this model's summaries.
    pub fn value(&self, id: &str, key: &str) -> Option<f64> {
        self.measures
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.result.summary.get(key).copied())
    }
}

/// How this run went: everything that may differ between equal runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunInfo {
    /// `--threads`.
    pub threads: Option<usize>,
    /// Which shard ran, or how the report was merged.
    pub shard: String,
    /// Wall-clock seconds of this process.
    pub seconds: f64,
    /// Seconds per measure (`model/measure`), summed over its units (chunks).
    pub units: BTreeMap<String, f64>,
    /// Seconds inside model calls per measure, summed over its units and threads: with one
    /// thread, the rest of a measure's seconds is its own work.
    #[serde(default)]
    pub model_seconds: BTreeMap<String, f64>,
}

/// The audit report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_SCHEMA`].
    pub schema: String,
    /// georob version.
    pub georob_version: String,
    /// Seed of every random choice.
    pub seed: u64,
    /// The suite that ran.
    pub suite: Suite,
    /// Work units finished, of all units (`audit::plan`: a measure on a model over a
    /// chunk of images, or over all of them).
    pub units_done: usize,
    /// All units of the suite.
    pub units_total: usize,
    /// Per model.
    pub models: Vec<ModelReport>,
    /// Gates checked.
    pub gates: Vec<GateResult>,
    /// Verdict.
    pub verdict: Verdict,
    /// Timings and run settings (left out when comparing reports).
    pub run: RunInfo,
}

impl Report {
    /// Checks `thresholds` on every model and sets the verdict.
    pub fn apply_gates(&mut self, thresholds: &[Threshold]) {
        let mut gates = Vec::new();
        for m in &self.models {
            gates.extend(gate::check(&m.name, thresholds, &|id, key| {
                m.value(id, key)
            }));
        }
        self.gates = gates;
        self.set_verdict();
    }

    /// Verdict from completeness and gates.
    pub fn set_verdict(&mut self) {
        self.verdict = if self.units_done < self.units_total {
            Verdict::Partial
        } else if self.gates.iter().all(|g| g.passed) {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
    }

    /// Reads a `report.json`.
    pub fn load(path: &Path) -> Result<Report> {
        let text = crate::read::text(path, crate::limits::max_memory())?;
        let report: Report = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: not a georob report: {e}", path.display())))?;
        if report.schema != REPORT_SCHEMA {
            return Err(Error::Config(format!(
                "{}: schema {:?}, this georob reads {REPORT_SCHEMA:?}",
                path.display(),
                report.schema
            )));
        }
        Ok(report)
    }

    /// What `gate --baseline` compares when no gate is given: every summary key, of every
    /// model's measures, whose better direction its measure declares, as a `>=` (higher is
    /// better) or `<=` threshold whose limit is not used.
    pub fn declared_directions(&self) -> Vec<Threshold> {
        let mut out: Vec<Threshold> = vec![];
        for e in self.models.iter().flat_map(|m| &m.measures) {
            let Some(decl) = crate::measure::declaration(&e.result.measure) else {
                continue;
            };
            for key in e.result.summary.keys() {
                let Some(better) = decl.better(key) else {
                    continue;
                };
                let op = match better {
                    crate::measure::Better::Higher => gate::Op::Ge,
                    crate::measure::Better::Lower => gate::Op::Le,
                };
                if !out.iter().any(|t| t.measure == e.id && t.key == *key) {
                    out.push(Threshold {
                        measure: e.id.clone(),
                        key: key.clone(),
                        op,
                        value: 0.0,
                    });
                }
            }
        }
        out
    }

    /// The model named `name`.
    pub fn model(&self, name: &str) -> Option<&ModelReport> {
        self.models.iter().find(|m| m.name == name)
    }

    /// Writes every report file into `dir`, one at a time (`report.json`
    /// streamed), so that a large report is never held as text more than
    /// once.
    pub fn write_all(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        ["report.json", "images.csv", "report.html"]
            .into_iter()
            .chain(GATE_FILES)
            .map(|name| self.write_file(dir, name))
            .collect()
    }

    /// Writes the files that carry gate results (`junit.xml`,
    /// `report.sarif`, `summary.md`) into `dir`.
    pub fn write_gate_files(&self, dir: &Path) -> Result<()> {
        for name in GATE_FILES {
            self.write_file(dir, name)?;
        }
        Ok(())
    }

    /// Writes the report file `name` into `dir`.
    fn write_file(&self, dir: &Path, name: &str) -> Result<PathBuf> {
        let path = dir.join(name);
        let text = match name {
            "report.json" => {
                let file = crate::write::create(&path)?;
                let mut out = std::io::BufWriter::new(file);
                serde_json::to_writer_pretty(&mut out, self)
                    .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
                std::io::Write::flush(&mut out).map_err(|e| Error::io(&path, e))?;
                return Ok(path);
            }
            "images.csv" => csv::images(self)?,
            "report.html" => html::page(self, dir)?,
            "junit.xml" => junit::document(self)?,
            "report.sarif" => sarif::document(self)?,
            "summary.md" => markdown::summary(self),
            other => return Err(Error::Config(format!("no report file named {other:?}"))),
        };
        crate::write::bytes(&path, text)?;
        Ok(path)
    }

    /// The `(measure id, summary key)` rows of a comparison table: every headline key of
    /// every model's measures, in order of first appearance.
    pub fn headline_rows(&self) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = Vec::new();
        for m in &self.models {
            for e in &m.measures {
                for (k, _) in Report::headline(&e.result) {
                    let row = (e.id.clone(), k.to_string());
                    if !rows.contains(&row) {
                        rows.push(row);
                    }
                }
            }
        }
        rows
    }

    /// The warnings a measure raised, as lines of text (its `extra.warnings`, e.g.
    /// `robust_accuracy`'s gradient-masking flag): every report shows them.
    pub fn warnings(result: &MeasureResult) -> Vec<&str> {
        result.extra["warnings"]
            .as_array()
            .map_or(vec![], |w| w.iter().filter_map(|v| v.as_str()).collect())
    }

    /// The headline keys shown for each measure in tables: those its declaration names,
    /// where present, at most four.
    pub fn headline(result: &MeasureResult) -> Vec<(&str, f64)> {
        let declared = crate::measure::declaration(&result.measure).map_or(&[][..], |d| d.headline);
        // A success rate means something only where images were attacked.
        let attacked = result.counts.fooled + result.counts.failed > 0;
        let mut out: Vec<(&str, f64)> = declared
            .iter()
            .filter(|k| attacked || **k != "success_rate")
            .filter_map(|k| result.summary.get_key_value(*k))
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        out.truncate(4);
        out
    }
}

/// A value for a table: whole numbers (counts) without decimals, others to six places.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.6}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_print_whole_and_fractions_to_six_places() {
        assert_eq!(super::number(5.0), "5");
        assert_eq!(super::number(0.0), "0");
        assert_eq!(super::number(0.25), "0.250000");
        assert_eq!(super::number(f64::NAN), "NaN");
    }
}
