//! `georob audit`, `georob gate` and `georob merge`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, Color, Table};
use georob::audit::{self, AuditOptions, Shard};
use georob::gate::{self, Threshold};
use georob::progress::Progress;
use georob::report::{Report, Verdict};
use georob::suite::Suite;

use super::args::{AuditArgs, GateArgs, MergeArgs};
use super::{EXIT_ERROR, EXIT_GATE};

pub fn run_audit(args: &AuditArgs) -> Result<ExitCode> {
    let is_suite = args.target.extension().is_some_and(|e| e == "toml");
    let mut suite = if is_suite {
        if args.data.is_some() {
            bail!("georob audit SUITE.toml takes no DATA: the suite names its data");
        }
        Suite::load(&args.target)?
    } else {
        let Some(data) = &args.data else {
            bail!("georob audit MODEL needs DATA (or give a SUITE.toml)");
        };
        Suite::default_for(&args.target, data, args.labels.as_deref())
    };
    if let Some(seed) = args.seed {
        suite.seed = seed;
    }
    if args.limit.is_some() {
        if args.limit == Some(0) {
            bail!("--limit 0: use at least 1 image");
        }
        suite.limit = args.limit;
    }
    if let Some(chunk) = args.chunk {
        suite.chunk = chunk;
    }
    for t in &args.thresholds {
        t.parse::<Threshold>()?;
        suite.thresholds.push(t.clone());
    }
    let shard = match &args.shard {
        Some(s) => Shard::parse(s)?,
        None => Shard::ALL,
    };
    // Ctrl-C, SIGTERM (a scheduler's stop) or SIGHUP: finish the unit in progress, then write
    // a partial report; a second signal exits at once (the journal keeps what finished).
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("georob: interrupted: finishing the current unit, then writing a partial report (Ctrl-C again to quit now)");
        });
    }
    let progress = Progress::new(args.quiet);
    let quiet = args.quiet;
    let log = move |msg: &str| {
        if !quiet {
            eprintln!("georob: {msg}");
        }
    };
    let opts = AuditOptions {
        model: args.model_args.options()?,
        out: args.out.clone(),
        shard,
        resume: args.resume,
        progress: &progress,
        stop: &stop,
        log: &log,
    };
    let report = audit::run(&suite, &opts)?;
    let files = report.write_all(&args.out)?;
    print_report(&report)?;
    eprintln!(
        "georob: wrote {} in {}",
        files
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(", "),
        args.out.display()
    );
    Ok(match report.verdict {
        Verdict::Pass => ExitCode::SUCCESS,
        Verdict::Fail => ExitCode::from(EXIT_GATE),
        Verdict::Partial if stop.load(Ordering::SeqCst) => {
            eprintln!("georob: partial report (interrupted); rerun with --resume to finish");
            ExitCode::from(EXIT_ERROR)
        }
        // A shard is partial by design: gates are checked after `merge`.
        Verdict::Partial => ExitCode::SUCCESS,
    })
}

/// Most missing units `merge` names one by one.
const MISSING_SHOWN: usize = 10;

pub fn run_merge(args: &MergeArgs) -> Result<ExitCode> {
    let merged = audit::merge(&args.dirs, &args.out)?;
    let report = &merged.report;
    report.write_all(&args.out)?;
    print_report(report)?;
    Ok(match report.verdict {
        Verdict::Pass => ExitCode::SUCCESS,
        Verdict::Fail => ExitCode::from(EXIT_GATE),
        Verdict::Partial => {
            let m = &merged.missing;
            let more = m.len().saturating_sub(MISSING_SHOWN);
            let dirs: Vec<String> = args.dirs.iter().map(|d| d.display().to_string()).collect();
            eprintln!(
                "georob: merged report of {} is partial: {} of {} units (a shard missing, or a journal cut short?); missing: {}{}",
                dirs.join(", "),
                report.units_done,
                report.units_total,
                m[..m.len() - more].join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
            ExitCode::from(EXIT_ERROR)
        }
    })
}

/// `ID.KEY=V` → a threshold with `op`.
fn bound(text: &str, op: &str) -> Result<Threshold> {
    let (k, v) = text
        .split_once('=')
        .with_context(|| format!("{text:?}: expected ID.KEY=VALUE"))?;
    Ok(format!("{k} {op} {v}").parse()?)
}

pub fn run_gate(args: &GateArgs) -> Result<ExitCode> {
    let mut report = Report::load(&args.report)?;
    let mut thresholds: Vec<Threshold> = Vec::new();
    if let Some(path) = &args.thresholds {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(default)]
            thresholds: Vec<String>,
        }
        let text = georob::read::text(path, georob::read::TEXT_CAP)?;
        let file: File = toml::from_str(&text)
            .with_context(|| format!("{}: bad thresholds file", path.display()))?;
        for t in file.thresholds {
            thresholds.push(t.parse().with_context(|| path.display().to_string())?);
        }
    }
    for m in &args.min {
        thresholds.push(bound(m, ">=").context("--min")?);
    }
    for m in &args.max {
        thresholds.push(bound(m, "<=").context("--max")?);
    }
    if thresholds.is_empty() {
        thresholds = report.suite.thresholds()?;
    }
    // With a baseline and no gate, every headline value whose better direction its measure
    // declares is compared: "no worse than the last release by more than --max-regression".
    let every_declared = thresholds.is_empty() && args.baseline.is_some();
    if every_declared {
        thresholds = report.declared_directions();
    }
    if thresholds.is_empty() {
        bail!("no gates: give --thresholds, --min or --max, a --baseline, or audit with a suite that has thresholds");
    }
    if !every_declared {
        report.apply_gates(&thresholds);
    }
    if let Some(old) = &args.baseline {
        let before = Report::load(old)?;
        let limit = gate::parse_fraction(&args.max_regression).context("--max-regression")?;
        for m in &report.models {
            let Some(b) = before.model(&m.name) else {
                bail!("{}: no model named {:?}", old.display(), m.name);
            };
            report.gates.extend(gate::regression(
                &m.name,
                &thresholds,
                limit,
                &|id, key| m.value(id, key),
                &|id, key| b.value(id, key),
            ));
        }
        report.set_verdict();
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        report.write_gate_files(dir)?;
    }
    print_gates(&report)?;
    Ok(match report.verdict {
        Verdict::Pass => ExitCode::SUCCESS,
        Verdict::Fail => ExitCode::from(EXIT_GATE),
        Verdict::Partial => {
            eprintln!(
                "georob: {} is partial ({} of {} units): not gating it",
                args.report.display(),
                report.units_done,
                report.units_total
            );
            ExitCode::from(EXIT_ERROR)
        }
    })
}

fn verdict_cell(v: Verdict) -> Cell {
    match v {
        Verdict::Pass => Cell::new("PASS").fg(Color::Green),
        Verdict::Fail => Cell::new("FAIL").fg(Color::Red),
        Verdict::Partial => Cell::new("PARTIAL").fg(Color::Yellow),
    }
}

/// Compact table: headline values per model and measure, then gates.
fn print_report(report: &Report) -> Result<()> {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    let mut header = vec![Cell::new("value")];
    header.extend(report.models.iter().map(|m| Cell::new(&m.name)));
    t.set_header(header);
    let rows = report.headline_rows();
    for (id, key) in &rows {
        let mut row = vec![Cell::new(format!("{id}.{key}"))];
        row.extend(report.models.iter().map(|m| {
            Cell::new(
                m.value(id, key)
                    .map(|v| format!("{v:.4}"))
                    .unwrap_or_else(|| "—".into()),
            )
        }));
        t.add_row(row);
    }
    super::emit(&format!("{t}\n"))?;
    print_predictions(report)?;
    print_gates(report)
}

/// Most images whose predictions the terminal shows (`images.csv` has all).
const PREDICTIONS_SHOWN: usize = 20;

/// Each image's prediction per model, from the `accuracy` unit, for small data.
fn print_predictions(report: &Report) -> Result<()> {
    let entries: Vec<_> = report
        .models
        .iter()
        .map(|m| m.measures.iter().find(|e| e.result.measure == "accuracy"))
        .collect();
    let Some(first) = entries.iter().flatten().next() else {
        return Ok(());
    };
    if first.result.images.len() > PREDICTIONS_SHOWN {
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    let mut header = vec![Cell::new("image")];
    header.extend(
        report
            .models
            .iter()
            .map(|m| Cell::new(format!("{} prediction", m.name))),
    );
    t.set_header(header);
    for (i, img) in first.result.images.iter().enumerate() {
        let mut row = vec![Cell::new(&img.name)];
        row.extend(entries.iter().map(|e| {
            let Some(img) = e.and_then(|e| e.result.images.get(i).map(|im| (e, im))) else {
                return Cell::new("—");
            };
            let (e, im) = img;
            let name = e.result.extra["class_names"][im.pred.to_string()]
                .as_str()
                .map(|n| format!("{} {n}", im.pred))
                .unwrap_or_else(|| format!("class {}", im.pred));
            match im.values.get("confidence") {
                Some(c) => Cell::new(format!("{name} ({c:.3})")),
                None => Cell::new(name),
            }
        }));
        t.add_row(row);
    }
    super::emit(&format!("{t}\n"))
}

fn print_gates(report: &Report) -> Result<()> {
    let mut out = String::new();
    if !report.gates.is_empty() {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_header(vec!["model", "gate", "value", "result"]);
        for g in &report.gates {
            t.add_row(vec![
                Cell::new(&g.model),
                Cell::new(&g.gate),
                Cell::new(
                    g.actual
                        .map(georob::report::number)
                        .unwrap_or_else(|| "—".into()),
                ),
                if g.passed {
                    Cell::new("pass").fg(Color::Green)
                } else {
                    Cell::new("FAIL").fg(Color::Red)
                },
            ]);
        }
        out.push_str(&format!("{t}\n"));
        for g in report.gates.iter().filter(|g| !g.passed) {
            out.push_str(&format!("failed: {}\n", g.message));
        }
    }
    let mut v = Table::new();
    v.load_preset(UTF8_FULL_CONDENSED)
        .add_row(vec![Cell::new("verdict"), verdict_cell(report.verdict)]);
    out.push_str(&format!("{v}\n"));
    super::emit(&out)
}
