//! `georob audit`: a suite of measures over one or many models, split into
//! work units (one measure on one model over one chunk of images, or over
//! all of them for a measure that needs them all at once) that can be
//! sharded across machines, journalled as they finish, resumed after a crash
//! and merged.
//!
//! The report is always assembled from the journal, each measure's summary
//! made from the rows of all its chunks in image order, so a whole run, a
//! resumed run and merged shards give the same `report.json` (apart from its
//! `run` section: timings and threads).

pub mod journal;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::measure::{self, Context, Units};
use crate::model::{GradientMode, Model, ModelOptions};
use crate::progress::Progress;
use crate::report::{
    MeasureEntry, ModelRecord, ModelReport, Report, RunInfo, Verdict, REPORT_SCHEMA,
};
use crate::resources::Files;
use crate::suite::Suite;
use journal::{DataRecord, Header, Journal, UnitRecord};

/// One work unit: measure `measure` of the suite on model `model` over the images at
/// positions `images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Index of the model in the suite.
    pub model: usize,
    /// Index of the measure in the suite.
    pub measure: usize,
    /// Positions of its images in the data set.
    pub images: Range<usize>,
}

/// The work units of `suite` over a data set of `images` images, in the order of their
/// numbers: model by model, measure by measure in suite order, and for a measure run in
/// chunks ([`Units::Chunks`]) chunk by chunk, `suite.chunk` images each (the last one the
/// rest); a measure run whole is one unit over every image.
pub fn plan(suite: &Suite, images: usize) -> Result<Vec<Unit>> {
    let mut units = vec![];
    for model in 0..suite.models.len() {
        for (measure, m) in suite.measures.iter().enumerate() {
            let declaration = measure::declaration(&m.name)
                .ok_or_else(|| Error::Config(format!("unknown measure {:?}", m.name)))?;
            let chunk = match declaration.units {
                Units::Chunks => suite.chunk.max(1),
                Units::Whole(_) => images.max(1),
            };
            for start in (0..images).step_by(chunk) {
                units.push(Unit {
                    model,
                    measure,
                    images: start..images.min(start + chunk),
                });
            }
        }
    }
    Ok(units)
}

/// `model/measure images a..b (unit u)`, for messages.
fn describe(suite: &Suite, names: &[String], number: usize, unit: &Unit) -> String {
    format!(
        "{}/{} images {}..{} (unit {number})",
        names[unit.model],
        suite.measures[unit.measure].id(),
        unit.images.start,
        unit.images.end
    )
}

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
    let mut data = Dataset::open(&suite.data, suite.labels.as_deref())?;
    if let Some(n) = suite.limit {
        data.items.truncate(n);
    }
    let header = Header {
        suite: suite.clone(),
        data: DataRecord::of(&data),
    };
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let (mut journal, done) = if opts.resume {
        Journal::resume(&opts.out, &header)?
    } else {
        (Journal::create(&opts.out, &header)?, BTreeSet::new())
    };
    if !done.is_empty() {
        (opts.log)(&format!("resuming: {} unit(s) already done", done.len()));
    }
    let names = suite.model_names();
    let units = plan(suite, data.len())?;
    let suite_measures = suite
        .measures
        .iter()
        .map(|m| measure::build(&m.name, &m.params))
        .collect::<Result<Vec<_>>>()?;
    let mine: Vec<usize> = (0..units.len()).filter(|&u| opts.shard.owns(u)).collect();
    let mut position = mine.iter().filter(|u| done.contains(u)).count();
    let started = std::time::Instant::now();
    'models: for (mi, entry) in suite.models.iter().enumerate() {
        let pending: Vec<usize> = mine
            .iter()
            .copied()
            .filter(|&u| units[u].model == mi && !done.contains(&u))
            .collect();
        if pending.is_empty() {
            continue;
        }
        let model = Model::open(&entry.path, &opts.model)?;
        data.check_labels(model.classes)?;
        // Decided when any of the suite's measures takes gradients (the suite's, not this
        // shard's: every shard then records the same mode).
        let mut gradient = None;
        if suite_measures.iter().any(|m| m.takes_gradients()) {
            let (mode, warning) = model.gradient_mode()?;
            if let Some(w) = warning {
                (opts.log)(&format!("warning: {w}"));
            }
            gradient = Some(mode);
        }
        let bounds = match suite.bounds {
            Some([lo, hi]) => Some((lo, hi)),
            None => data.default_bounds(),
        };
        let files = Files::like(&model);
        for u in pending {
            if opts.stop.load(Ordering::SeqCst) {
                break 'models;
            }
            let unit = &units[u];
            let m = &suite.measures[unit.measure];
            let measure = &suite_measures[unit.measure];
            // Pictures come from the first chunk: a measure run in chunks would otherwise
            // draw its closest perturbations once per chunk.
            let rel = format!("artifacts/{}/{}", names[mi], m.id());
            let dir = opts.out.join(&rel);
            let first = unit.images.start == 0;
            if first {
                crate::write::dirs_under(&opts.out, Path::new(&rel))?;
            }
            let chunk = data.chunk(unit.images.clone());
            let ctx = Context {
                model: &model,
                data: &chunk,
                seed: suite.seed,
                bounds,
                progress: opts.progress,
                out_dir: first.then_some(dir.as_path()),
                resources: &files,
            };
            position += 1;
            (opts.log)(&format!(
                "[{position}/{}] {} {} images {}..{} ...",
                mine.len(),
                names[mi],
                m.id(),
                unit.images.start,
                unit.images.end
            ));
            let t0 = std::time::Instant::now();
            let calls_before = model.executor().call_seconds();
            let mut result = measure.run_part(&ctx)?;
            let seconds = t0.elapsed().as_secs_f64();
            let model_seconds = model.executor().call_seconds() - calls_before;
            for a in &mut result.artifacts {
                a.path = format!("{rel}/{}", a.path);
            }
            let record = UnitRecord {
                unit: u,
                model: names[mi].clone(),
                measure: m.id().into(),
                images: unit.images.clone(),
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
    let path = opts.out.join(journal::JOURNAL);
    let (header, records, _) = journal::read(&path)?;
    Ok(assemble(&header, records, run, &|_| path.display().to_string())?.report)
}

/// A report assembled from the units at hand, and the units it lacks.
pub struct Assembled {
    /// The report: partial when units are missing.
    pub report: Report,
    /// The missing units, as `model/measure images a..b (unit u)`.
    pub missing: Vec<String>,
}

/// Merges the journals of several output directories (the shards of one
/// audit) into `out`: the journal, the artifacts and the report. Fails unless
/// every journal has the same suite (chunk size included) and data set.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Assembled> {
    let mut header: Option<(Header, &PathBuf)> = None;
    let mut all = BTreeMap::new();
    // The journal each unit came from, for errors.
    let mut from: BTreeMap<usize, PathBuf> = BTreeMap::new();
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if let Some(dir) = dirs.iter().find(|d| same(d, out)) {
        return Err(Error::Config(format!(
            "--out {}: is the shard directory {}, which merge reads; write the merged report elsewhere",
            out.display(),
            dir.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for dir in dirs {
        let path = dir.join(journal::JOURNAL);
        let (h, records, _) = journal::read(&path)?;
        from.extend(records.keys().map(|&u| (u, path.clone())));
        match &header {
            Some((first, from)) => {
                if let Some(why) = h.mismatch(first) {
                    return Err(Error::Config(format!(
                        "{} is not a shard of the audit in {}: it has {why}",
                        dir.display(),
                        from.display()
                    )));
                }
            }
            None => header = Some((h, dir)),
        }
        all.extend(records);
        copy_tree(&dir.join("artifacts"), &out.join("artifacts"))?;
    }
    let (header, _) = header.ok_or_else(|| Error::Config("merge: no directories given".into()))?;
    let mut j = Journal::create(out, &header)?;
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
    assemble(&header, all, run, &|u| {
        from.get(&u)
            .map_or_else(String::new, |p| p.display().to_string())
    })
}

/// Copies the files under `from` (if it exists) into `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    if !from.is_dir() {
        return Ok(());
    }
    crate::write::dir(to)?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        // The entry's own type: a symbolic link is not followed, and a FIFO or device,
        // which would block or never end, is not read.
        let kind = entry.file_type().map_err(|e| Error::io(&src, e))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            let mut from = crate::read::open(&src, u64::MAX)?;
            let mut into = crate::write::create(&dst)?;
            std::io::copy(&mut from, &mut into).map_err(|e| Error::io(&dst, e))?;
        } else {
            return Err(Error::Unreadable {
                path: src,
                reason: "not a regular file or folder (a symbolic link, FIFO or device); \
                         merge copies regular files only"
                    .into(),
            });
        }
    }
    Ok(())
}

/// The report of the audit under `header` from its finished units (taken, not copied: on
/// a large data set the per-image rows are most of the memory). A measure appears once all
/// its units are there, its chunks combined in image order.
/// `source` names the journal unit `u` was read from, for errors.
fn assemble(
    header: &Header,
    mut done: BTreeMap<usize, UnitRecord>,
    mut run: RunInfo,
    source: &dyn Fn(usize) -> String,
) -> Result<Assembled> {
    let suite = &header.suite;
    let units = plan(suite, header.data.images)?;
    let names = suite.model_names();
    let units_done = done.len();
    if let Some((u, r)) = done.iter().find(|(&u, r)| {
        units.get(u).is_none_or(|unit| {
            r.images != unit.images
                || r.model != names[unit.model]
                || r.measure != suite.measures[unit.measure].id()
        })
    }) {
        return Err(Error::Config(format!(
            "{}: journal unit {u} ({}/{} images {}..{}) is not a unit of this audit",
            source(*u),
            r.model,
            r.measure,
            r.images.start,
            r.images.end
        )));
    }
    let mut missing = vec![];
    let mut models = Vec::with_capacity(names.len());
    for (mi, name) in names.iter().enumerate() {
        // The model as its first unit at hand ran it.
        let mut ran: Option<(ModelRecord, Option<GradientMode>, usize)> = None;
        let mut measures = vec![];
        for (si, m) in suite.measures.iter().enumerate() {
            let mut parts = vec![];
            let mut complete = true;
            for (u, unit) in units.iter().enumerate() {
                if unit.model != mi || unit.measure != si {
                    continue;
                }
                match done.remove(&u) {
                    Some(r) => parts.push(r),
                    None => {
                        missing.push(describe(suite, &names, u, unit));
                        complete = false;
                    }
                }
            }
            for r in &parts {
                let (first, _, first_unit) =
                    ran.get_or_insert_with(|| (ModelRecord::from(&r.info), r.gradient, r.unit));
                if r.info.sha256 != first.sha256 {
                    return Err(Error::Config(format!(
                        "model {name}: its units ran on different files (sha256 {} in unit {} \
                         of {}, {} in unit {} of {})",
                        first.sha256,
                        first_unit,
                        source(*first_unit),
                        r.info.sha256,
                        r.unit,
                        source(r.unit)
                    )));
                }
                let key = format!("{name}/{}", m.id());
                *run.units.entry(key.clone()).or_default() += r.seconds;
                *run.model_seconds.entry(key).or_default() += r.model_seconds;
            }
            if !complete || parts.is_empty() {
                continue;
            }
            let results = parts.into_iter().map(|r| r.result).collect();
            measures.push(MeasureEntry {
                id: m.id().into(),
                result: measure::build(&m.name, &m.params)?.combine(results)?,
            });
        }
        let (model, gradient) = ran.map(|(m, g, _)| (m, g)).unzip();
        models.push(ModelReport {
            name: name.clone(),
            model,
            gradient: gradient.flatten(),
            measures,
        });
    }
    against_baseline(suite, &mut models)?;
    let mut report = Report {
        schema: REPORT_SCHEMA.into(),
        georob_version: env!("CARGO_PKG_VERSION").into(),
        seed: suite.seed,
        suite: suite.clone(),
        units_done,
        units_total: units.len(),
        models,
        gates: vec![],
        verdict: Verdict::Pass,
        run,
    };
    let thresholds = suite.thresholds()?;
    report.apply_gates(&thresholds);
    Ok(Assembled { report, missing })
}

/// Adds to every model's summaries the keys its measures compute against the same measure
/// on the suite's `baseline_model` ([`measure::Measure::against`]), the baseline's own
/// included; a measure missing on either side (units not done) gets none.
fn against_baseline(suite: &Suite, models: &mut [ModelReport]) -> Result<()> {
    let Some(base) = suite
        .baseline_model
        .as_ref()
        .and_then(|b| models.iter().position(|m| &m.name == b))
    else {
        return Ok(());
    };
    // Computed first and added after, so that the baseline's own keys are not yet in the
    // summaries they are computed from.
    let mut added = vec![];
    for m in &suite.measures {
        let entry = |model: &ModelReport| model.measures.iter().position(|e| e.id == m.id());
        let Some(b) = entry(&models[base]) else {
            continue;
        };
        let measure = measure::build(&m.name, &m.params)?;
        for (mi, model) in models.iter().enumerate() {
            if let Some(e) = entry(model) {
                let baseline = &models[base].measures[b].result;
                added.push((mi, e, measure.against(&model.measures[e].result, baseline)?));
            }
        }
    }
    for (mi, e, keys) in added {
        models[mi].measures[e].result.summary.extend(keys);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each measure run in chunks covers the images once, chunk by chunk; `uap` (run whole)
    /// is one unit; the numbers go model by model, measure by measure.
    #[test]
    fn the_plan_covers_every_image_once_per_measure() {
        let mut suite = Suite::default_for(Path::new("m.onnx"), Path::new("d"), None);
        suite.models.push(suite.models[0].clone());
        suite.models[1].name = Some("other".into());
        suite.chunk = 8;
        let units = plan(&suite, 30).unwrap();
        let per_model = 6 * 4 + 1;
        assert_eq!(units.len(), 2 * per_model);
        for (mi, model) in units.chunks(per_model).enumerate() {
            for (si, m) in suite.measures.iter().enumerate() {
                let ranges: Vec<_> = model
                    .iter()
                    .filter(|u| u.measure == si)
                    .inspect(|u| assert_eq!(u.model, mi))
                    .map(|u| u.images.clone())
                    .collect();
                if m.name == "uap" {
                    assert_eq!(ranges, vec![Range { start: 0, end: 30 }]);
                } else {
                    assert_eq!(ranges, [0..8, 8..16, 16..24, 24..30], "{}", m.id());
                }
            }
        }
        let names = suite.model_names();
        assert_eq!(
            describe(&suite, &names, 30, &units[30]),
            "other/deepfool images 8..16 (unit 30)"
        );
    }

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
