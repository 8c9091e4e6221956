//! The append-only journal of an audit: a header line with the suite, then
//! one JSON line per finished work unit, flushed as soon as it is written.
//! A run killed at any point (SIGKILL included) loses at most the unit in
//! progress; `--resume` reads the journal back and skips what is in it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::measure::MeasureResult;
use crate::model::{GradientMode, ModelInfo};
use crate::suite::Suite;

/// File name of the journal inside the output directory.
pub const JOURNAL: &str = "journal.jsonl";

/// A finished work unit: one measure on one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitRecord {
    /// Unit number (model-major, suite order).
    pub unit: usize,
    /// Model name.
    pub model: String,
    /// Measure id.
    pub measure: String,
    /// The model as loaded.
    pub info: ModelInfo,
    /// How gradients were taken.
    pub gradient: GradientMode,
    /// What the measure found.
    pub result: MeasureResult,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Seconds inside model calls, summed over threads (absent in older journals).
    #[serde(default)]
    pub model_seconds: f64,
}

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Header { suite: Suite },
    Unit(Box<UnitRecord>),
}

/// An open journal.
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Starts a fresh journal for `suite` in `dir` (replacing any old one).
    pub fn create(dir: &Path, suite: &Suite) -> Result<Journal> {
        let path = dir.join(JOURNAL);
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut j = Journal { path, file };
        j.append(&Line::Header {
            suite: suite.clone(),
        })?;
        Ok(j)
    }

    /// Reopens the journal in `dir` for appending, with the numbers of the units it
    /// holds. A torn last line (a kill during a write) is cut off.
    pub fn resume(dir: &Path, suite: &Suite) -> Result<(Journal, BTreeSet<usize>)> {
        let path = dir.join(JOURNAL);
        if !path.exists() {
            return Ok((Journal::create(dir, suite)?, BTreeSet::new()));
        }
        let (found, records, good_len) = read(&path)?;
        if found != *suite {
            return Err(Error::Config(format!(
                "{}: written by a different suite; remove it or drop --resume",
                path.display()
            )));
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        file.set_len(good_len).map_err(|e| Error::io(&path, e))?;
        let mut file = file;
        use std::io::Seek;
        file.seek(std::io::SeekFrom::End(0))
            .map_err(|e| Error::io(&path, e))?;
        Ok((Journal { path, file }, records.into_keys().collect()))
    }

    /// Appends a finished unit and flushes it to disk.
    pub fn record(&mut self, r: &UnitRecord) -> Result<()> {
        self.append(&Line::Unit(Box::new(r.clone())))
    }

    fn append(&mut self, line: &Line) -> Result<()> {
        let mut text =
            serde_json::to_string(line).map_err(|e| Error::Config(format!("journal: {e}")))?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// Reads a journal: its suite, its finished units, and the length in bytes
/// of its intact part.
pub fn read(path: &Path) -> Result<(Suite, BTreeMap<usize, UnitRecord>, u64)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut suite = None;
    let mut records = BTreeMap::new();
    let mut good = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| Error::io(path, e))?;
        if n == 0 || !line.ends_with('\n') {
            break; // end, or a torn last line
        }
        match serde_json::from_str::<Line>(&line) {
            Ok(Line::Header { suite: s }) if suite.is_none() => suite = Some(s),
            Ok(Line::Unit(r)) if suite.is_some() => {
                records.insert(r.unit, *r);
            }
            Ok(_) => {
                return Err(Error::Config(format!(
                    "{}: not a georob journal (header misplaced)",
                    path.display()
                )))
            }
            Err(e) => {
                return Err(Error::Config(format!(
                    "{}: corrupt line after byte {good}: {e}",
                    path.display()
                )))
            }
        }
        good += n as u64;
    }
    let suite = suite.ok_or_else(|| {
        Error::Config(format!("{}: empty or not a georob journal", path.display()))
    })?;
    Ok((suite, records, good))
}
