//! `georob eval MODEL DATA`.

use std::process::ExitCode;

use anyhow::Result;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use georob::data::{Dataset, LabelSource};
use georob::eval::{evaluate, EvalReport};
use georob::model::Model;
use georob::progress::Progress;

use super::args::EvalArgs;

pub fn run(args: &EvalArgs) -> Result<ExitCode> {
    let options = args.model_args.options()?;
    let model = Model::open(&args.model, &options)?;
    let data = Dataset::open(&args.data, args.labels.as_deref())?;
    eprintln!(
        "georob: {} on {} ({}), backend {}",
        args.model.display(),
        args.data.display(),
        super::images(data.len()),
        model.backend().describe()
    );
    let report = evaluate(&model, &data, &Progress::new(args.quiet))?;
    print_report(&report, &model, args.per_image || data.len() <= 20)?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        georob::write::bytes(path, text)?;
        eprintln!("georob: wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn class_label(model: &Model, c: usize) -> String {
    match &model.class_names {
        Some(names) => format!("{c} {}", names[c]),
        None => c.to_string(),
    }
}

fn print_report(r: &EvalReport, model: &Model, per_image: bool) -> Result<()> {
    let mut out = String::new();
    if per_image {
        let mut t = super::table(&["#", "image", "label", "prediction", "confidence", "top-5"]);
        for p in &r.predictions {
            t.add_row(vec![
                Cell::new(p.index),
                Cell::new(&p.name),
                Cell::new(p.label.map_or("-".into(), |l| l.to_string())),
                Cell::new(class_label(model, p.pred)),
                Cell::new(format!("{:.3}", p.confidence)).set_alignment(CellAlignment::Right),
                Cell::new(
                    p.top5
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
            ]);
        }
        out += &format!("{t}\n");
    }
    let s = &r.summary;
    if s.per_class.len() > 1 && s.per_class.len() <= 20 {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_header(vec!["class", "images", "correct", "accuracy"]);
        for c in &s.per_class {
            t.add_row(vec![
                Cell::new(class_label(model, c.class)),
                Cell::new(c.count),
                Cell::new(c.correct),
                Cell::new(format!("{:.4}", c.accuracy)).set_alignment(CellAlignment::Right),
            ]);
        }
        out += &format!("{t}\n");
    }
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v));
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.add_row(vec!["images".to_string(), s.images.to_string()]);
    t.add_row(vec!["top-1".to_string(), pct(s.top1)]);
    t.add_row(vec!["top-5".to_string(), pct(s.top5)]);
    t.add_row(vec![
        "labels".to_string(),
        match &r.data.labels {
            LabelSource::Given(how) => format!("given ({how})"),
            LabelSource::Predicted => "none given: predictions serve as labels".into(),
        },
    ]);
    t.add_row(vec![
        "backend".to_string(),
        format!("{} — {}", r.model.backend, r.model.backend_detail),
    ]);
    t.add_row(vec![
        "throughput".to_string(),
        format!(
            "{:.1} images/s ({:.2} s, of which model {:.2} s; batch {}, {} threads)",
            s.images_per_second, s.seconds, s.model_seconds, r.model.batch, r.model.threads
        ),
    ]);
    out += &format!("{t}\n");
    super::emit(&out)
}
