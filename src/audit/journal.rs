//! The append-only journal of an audit: a header line with the suite and the
//! data set, then one JSON line per finished work unit, flushed as soon as it
//! is written. A run killed at any point (SIGKILL included) loses at most the
//! unit in progress; `--resume` reads the journal back and skips what is in it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::measure::MeasureResult;
use crate::model::{GradientMode, ModelInfo};
use crate::suite::Suite;

/// File name of the journal inside the output directory.
pub const JOURNAL: &str = "journal.jsonl";

/// The data set an audit ran on, as far as its units depend on it: how many images (after
/// the suite's `limit`), and a digest of their list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRecord {
    /// Images audited.
    pub images: usize,
    /// SHA-256 of the list of images: each one's name and label, in order (not the pixels).
    pub listing_sha256: String,
}

impl DataRecord {
    /// The record of `data`.
    pub fn of(data: &Dataset) -> DataRecord {
        let mut h = Sha256::new();
        for item in &data.items {
            h.update(item.name.as_bytes());
            h.update(match item.label {
                Some(l) => format!("\t{l}\n"),
                None => "\t-\n".into(),
            });
        }
        DataRecord {
            images: data.len(),
            listing_sha256: format!("{:x}", h.finalize()),
        }
    }
}

/// What every journal of one audit starts with: the units and their results are fixed by
/// these (with the seed, the models and the measures' parameters, all in the suite).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The suite, `chunk` included.
    pub suite: Suite,
    /// The data set.
    pub data: DataRecord,
}

impl Header {
    /// Why units journalled under `self` cannot join those under `other` in one report, as
    /// what `self` has: another chunk size, data set or suite. None when they can.
    pub fn mismatch(&self, other: &Header) -> Option<String> {
        let (a, b) = (&self.data, &other.data);
        if self.suite.chunk != other.suite.chunk {
            Some(format!(
                "chunks of {} images, not {}",
                self.suite.chunk, other.suite.chunk
            ))
        } else if a != b {
            Some(format!(
                "a different data set: {} images (listing sha256 {}), not {} ({})",
                a.images,
                &a.listing_sha256[..12.min(a.listing_sha256.len())],
                b.images,
                &b.listing_sha256[..12.min(b.listing_sha256.len())]
            ))
        } else if self.suite != other.suite {
            Some("a different suite".into())
        } else {
            None
        }
    }
}

/// A finished work unit: one measure on one model over a range of images.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitRecord {
    /// Unit number (see [`super::plan`]).
    pub unit: usize,
    /// Model name.
    pub model: String,
    /// Measure id.
    pub measure: String,
    /// Positions of the images in the data set.
    pub images: Range<usize>,
    /// The model as loaded.
    pub info: ModelInfo,
    /// How gradients were taken; `None` when none of the suite's measures takes them.
    pub gradient: Option<GradientMode>,
    /// What the measure found over these images: their rows, and the measure's own summary
    /// and `extra` of them ([`crate::measure::Configured::run_part`]).
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
    Header(Box<Header>),
    Unit(Box<UnitRecord>),
}

/// An open journal.
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Starts a fresh journal under `header` in `dir` (replacing any old one).
    pub fn create(dir: &Path, header: &Header) -> Result<Journal> {
        let path = dir.join(JOURNAL);
        let file = crate::write::create(&path)?;
        let mut j = Journal { path, file };
        j.append(&Line::Header(Box::new(header.clone())))?;
        Ok(j)
    }

    /// Reopens the journal in `dir` for appending, with the numbers of the units it
    /// holds. A torn last line (a kill during a write) is cut off.
    pub fn resume(dir: &Path, header: &Header) -> Result<(Journal, BTreeSet<usize>)> {
        let path = dir.join(JOURNAL);
        if !path.exists() {
            return Ok((Journal::create(dir, header)?, BTreeSet::new()));
        }
        let (found, records, good_len) = read(&path)?;
        if let Some(why) = found.mismatch(header) {
            return Err(Error::Config(format!(
                "{}: written by an audit with {why}; remove it or drop --resume",
                path.display()
            )));
        }
        let file = crate::write::open_existing(&path)?;
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

/// Reads a journal: its header, its finished units, and the length in bytes of its intact
/// part.
pub fn read(path: &Path) -> Result<(Header, BTreeMap<usize, UnitRecord>, u64)> {
    // Read line by line: no cap on its length beyond the memory its records take.
    let file = crate::read::open(path, u64::MAX)?;
    let mut reader = BufReader::new(file);
    let mut header = None;
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
            Ok(Line::Header(h)) if header.is_none() => header = Some(*h),
            Ok(Line::Unit(r)) if header.is_some() => {
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
    let header: Header = header.ok_or_else(|| {
        Error::Config(format!("{}: empty or not a georob journal", path.display()))
    })?;
    // The suite a journal carries is checked as a suite file is: its names become paths and
    // its thresholds gates.
    header
        .suite
        .validate()
        .map_err(|e| Error::Config(format!("{}: the suite it records: {e}", path.display())))?;
    Ok((header, records, good))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--resume` refuses a journal of another chunk size, data set or suite, saying which.
    #[test]
    fn a_journal_of_another_audit_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (_, data) = crate::testutil::digits_on_tract(30, None);
        let suite = Suite::default_for(Path::new("m.onnx"), Path::new("d.npy"), None);
        let header = Header {
            suite,
            data: DataRecord::of(&data),
        };
        Journal::create(dir.path(), &header).unwrap();
        assert!(Journal::resume(dir.path(), &header).unwrap().1.is_empty());
        let mut chunked = header.clone();
        chunked.suite.chunk = 8;
        let mut fewer = header.clone();
        fewer.data = DataRecord::of(&data.chunk(0..29));
        let mut seeded = header.clone();
        seeded.suite.seed = 1;
        for (other, says) in [
            (chunked, "chunks of 256 images, not 8"),
            (fewer, "a different data set: 30 images"),
            (seeded, "a different suite"),
        ] {
            let e = Journal::resume(dir.path(), &other)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(says) && e.contains("--resume"), "{e}");
        }
    }
}
