//! `georob audit`: a suite of measures over one or many models, split into
//! work units (one measure on one model) that can be sharded across
//! machines, journalled as they finish, resumed after a crash and merged.
//!
//! The report is always assembled from the journal, so a whole run, a
//! resumed run and merged shards give the same `report.json` (apart from
//! its `run` section: timings and threads).

pub mod journal;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::measure::{self, Context};
use crate::model::{Model, ModelOptions};
use crate::progress::Progress;
use crate::report::{
    MeasureEntry, ModelRecord, ModelReport, Report, RunInfo, Verdict, REPORT_SCHEMA,
};
use crate::resources::Files;
use crate::suite::Suite;
use journal::{Journal, UnitRecord};

/// This process's share of the units: those whose number `u` has
/// `u % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// The whole audit.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `i/n` (1-based `i`, as cluster array indices are written).
    pub fn parse(s: &str) -> Result<Shard> {
        let bad = || Error::Config(format!("--shard {s:?}: expected I/N with 1 <= I <= N"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (i, n): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || i == 0 || i > n {
            return Err(bad());
        }
        Ok(Shard {
            index: i - 1,
            count: n,
        })
    }

    fn owns(&self, unit: usize) -> bool {
        unit % self.count == self.index
    }
}

/// How to run an audit.
pub struct AuditOptions<'a> {
    /// How to load every model.
    pub model: ModelOptions,
    /// Output directory.
    pub out: PathBuf,
    /// Share of the units to run.
    pub shard: Shard,
    /// Keep the journal in `out` and skip the units it holds.
    pub resume: bool,
    /// Progress display.
    pub progress: &'a Progress,
    /// Set (e.g. by Ctrl-C) to stop after the current unit.
    pub stop: &'a AtomicBool,
    /// One-line status messages.
    pub log: &'a dyn Fn(&str),
}

/// Runs this shard's units of `suite` that the journal does not hold yet,
/// then assembles the report from the journal.
pub fn run(suite: &Suite, opts: &AuditOptions) -> Result<Report> {
    suite.validate()?;
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let (mut journal, done) = if opts.resume {
        Journal::resume(&opts.out, suite)?
    } else {
        (Journal::create(&opts.out, suite)?, BTreeSet::new())
    };
    if !done.is_empty() {
        (opts.log)(&format!("resuming: {} unit(s) already done", done.len()));
    }
    let names = suite.model_names();
    let per_model = suite.measures.len();
    let total = names.len() * per_model;
    let mine: Vec<usize> = (0..total).filter(|&u| opts.shard.owns(u)).collect();
    let mut position = mine.iter().filter(|u| done.contains(u)).count();
    let started = std::time::Instant::now();
    'models: for (mi, entry) in suite.models.iter().enumerate() {
        let pending: Vec<usize> = mine
            .iter()
            .copied()
            .filter(|&u| u / per_model == mi && !done.contains(&u))
            .collect();
        if pending.is_empty() {
            continue;
        }
        let model = Model::open(&entry.path, &opts.model)?;
        let mut data = Dataset::open(&suite.data, suite.labels.as_deref())?;
        if let Some(n) = suite.limit {
            data.items.truncate(n.max(1));
        }
        data.check_labels(model.classes)?;
        let (gradient, warning) = model.gradient_mode()?;
        if let Some(w) = warning {
            (opts.log)(&format!("warning: {w}"));
        }
        let bounds = match suite.bounds {
            Some([lo, hi]) => Some((lo, hi)),
            None => data.default_bounds(),
        };
        for u in pending {
            if opts.stop.load(Ordering::SeqCst) {
                break 'models;
            }
            let m = &suite.measures[u % per_model];
            let measure = measure::build(&m.name, &m.params)?;
            let rel = format!("artifacts/{}/{}", names[mi], m.id());
            let dir = opts.out.join(&rel);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let files = Files::like(&model);
            let ctx = Context {
                model: &model,
                data: &data,
                seed: suite.seed,
                bounds,
                progress: opts.progress,
                out_dir: Some(&dir),
                resources: &files,
            };
            position += 1;
            (opts.log)(&format!(
                "[{position}/{}] {} {} ...",
                mine.len(),
                names[mi],
                m.id()
            ));
            let t0 = std::time::Instant::now();
            let calls_before = model.executor().call_seconds();
            let mut result = measure.run(&ctx)?;
            let seconds = t0.elapsed().as_secs_f64();
            let model_seconds = model.executor().call_seconds() - calls_before;
            for a in &mut result.artifacts {
                a.path = format!("{rel}/{}", a.path);
            }
            let record = UnitRecord {
                unit: u,
                model: names[mi].clone(),
                measure: m.id().into(),
                info: model.info(),
                gradient,
                result,
                seconds,
                model_seconds,
            };
            journal.record(&record)?;
        }
    }
    let run = RunInfo {
        threads: opts.model.threads,
        shard: format!("{}/{}", opts.shard.index + 1, opts.shard.count),
        seconds: started.elapsed().as_secs_f64(),
        units: BTreeMap::new(),
        model_seconds: BTreeMap::new(),
    };
    // The suite and every unit as the journal gives them back, as `merge` reads
    // them: the report does not depend on whether a unit ran now, before a
    // resume or in another shard.
    let (suite, records, _) = journal::read(&opts.out.join(journal::JOURNAL))?;
    assemble(&suite, records, run)
}

/// Merges the journals of several output directories (the shards of one
/// suite) into `out`: the journal, the artifacts and the report.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Report> {
    let mut suite: Option<Suite> = None;
    let mut all = BTreeMap::new();
    for dir in dirs {
        let (s, records, _) = journal::read(&dir.join(journal::JOURNAL))?;
        match &suite {
            Some(prev) if *prev != s => {
                return Err(Error::Config(format!(
                    "{}: a different suite than the other directories",
                    dir.display()
                )))
            }
            _ => suite = Some(s),
        }
        all.extend(records);
        copy_tree(&dir.join("artifacts"), &out.join("artifacts"))?;
    }
    let suite = suite.ok_or_else(|| Error::Config("merge: no directories given".into()))?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut j = Journal::create(out, &suite)?;
    for r in all.values() {
        j.record(r)?;
    }
    let run = RunInfo {
        threads: None,
        shard: format!("merged from {} directories", dirs.len()),
        seconds: 0.0,
        units: BTreeMap::new(),
        model_seconds: BTreeMap::new(),
    };
    assemble(&suite, all, run)
}

/// Copies the files under `from` (if it exists) into `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    if !from.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| Error::io(&src, e))?;
        }
    }
    Ok(())
}

/// The report of `suite` from its finished units (taken, not
/// copied: on a large data set the per-image rows are most of the memory).
fn assemble(
    suite: &Suite,
    mut done: BTreeMap<usize, UnitRecord>,
    mut run: RunInfo,
) -> Result<Report> {
    let units_done = done.len();
    let names = suite.model_names();
    let per_model = suite.measures.len();
    let mut models = Vec::with_capacity(names.len());
    for (mi, name) in names.iter().enumerate() {
        let records: Vec<UnitRecord> = (0..per_model)
            .filter_map(|si| done.remove(&(mi * per_model + si)))
            .collect();
        for r in &records {
            let unit = format!("{}/{}", r.model, r.measure);
            run.units.insert(unit.clone(), r.seconds);
            run.model_seconds.insert(unit, r.model_seconds);
        }
        models.push(ModelReport {
            name: name.clone(),
            model: records.first().map(|r| ModelRecord::from(&r.info)),
            gradient: records.first().map(|r| r.gradient),
            measures: records
                .into_iter()
                .map(|r| MeasureEntry {
                    id: r.measure,
                    result: r.result,
                })
                .collect(),
        });
    }
    let units_total = names.len() * per_model;
    let mut report = Report {
        schema: REPORT_SCHEMA.into(),
        georob_version: env!("CARGO_PKG_VERSION").into(),
        seed: suite.seed,
        suite: suite.clone(),
        units_done,
        units_total,
        models,
        gates: vec![],
        verdict: Verdict::Pass,
        run,
    };
    let thresholds = suite.thresholds()?;
    report.apply_gates(&thresholds);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_every_unit_once() {
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 1, count: 3 });
        for bad in ["0/3", "4/3", "1/0", "x", "1/x"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let shards: Vec<Shard> = (1..=3)
            .map(|i| Shard::parse(&format!("{i}/3")).unwrap())
            .collect();
        for u in 0..20 {
            assert_eq!(shards.iter().filter(|s| s.owns(u)).count(), 1);
        }
    }
}
