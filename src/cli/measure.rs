//! `georob measure NAME MODEL DATA`.

use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use georob::data::Dataset;
use georob::measure::{self, Context, MeasureResult};
use georob::model::{BackendKind, GradientMode, Model, ModelInfo};
use georob::progress::Progress;
use georob::resources::Files;
use serde::Serialize;

use super::args::MeasureArgs;

/// Version of the `measure` JSON layout.
const MEASURE_SCHEMA: &str = "georob.measure/1";

/// The `--json` file: run metadata, then the measure's result fields
/// (`measure`, `params`, `space`, `summary`, `counts`, `images`, `extra`,
/// `artifacts`) at the top level. Documented in `docs/measures.md`.
#[derive(Serialize)]
struct MeasureJson<'a> {
    schema: &'static str,
    georob_version: &'static str,
    model: ModelInfo,
    backend: BackendKind,
    /// How gradients were taken; null when the measure took none.
    gradient: Option<GradientMode>,
    seed: u64,
    data: &'a std::path::Path,
    bounds: Option<(f32, f32)>,
    #[serde(flatten)]
    result: &'a MeasureResult,
    timings: Timings,
}

#[derive(Serialize)]
struct Timings {
    /// Wall-clock seconds of the measure.
    seconds: f64,
    /// Seconds inside model calls (forward and gradient), summed over the threads that
    /// made them: with one thread, `seconds − model_seconds` is the measure's own work.
    model_seconds: f64,
}

/// Parses `--param KEY=VALUE` pairs into a JSON object.
fn params(pairs: &[String]) -> Result<serde_json::Value> {
    let mut map = serde_json::Map::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--param {p:?}: expected KEY=VALUE");
        };
        let value =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        map.insert(k.trim().to_string(), value);
    }
    Ok(serde_json::Value::Object(map))
}

/// A parameter value as typed on the command line; f32 parameters print
/// without their binary tail (`0.02`, not `0.019999999552965164`).
fn short(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            format!("{}", x as f32)
        }
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `--bounds LO,HI|none`, or `default` (the data's) when not given.
fn bounds(text: Option<&str>, default: Option<(f32, f32)>) -> Result<Option<(f32, f32)>> {
    match text {
        None => Ok(default),
        Some("none") => Ok(None),
        Some(t) => {
            let (lo, hi) = t
                .split_once(',')
                .with_context(|| format!("--bounds {t:?}: expected LO,HI or none"))?;
            let number = |v: &str| {
                v.trim()
                    .parse::<f32>()
                    .with_context(|| format!("--bounds {t:?}: {v:?} is not a number"))
            };
            let (lo, hi) = (number(lo)?, number(hi)?);
            measure::check_bounds(lo, hi).with_context(|| format!("--bounds {t:?}"))?;
            Ok(Some((lo, hi)))
        }
    }
}

pub fn run(args: &MeasureArgs) -> Result<ExitCode> {
    if args.name == "list" && args.markdown {
        super::emit(&measure::catalog::markdown())?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.name == "list" {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(vec!["measure", "what it measures", "parameters (defaults)"]);
        for m in measure::registry() {
            let defaults = match (m.defaults)() {
                serde_json::Value::Object(map) => map
                    .iter()
                    .map(|(k, v)| format!("{k}={}", short(v)))
                    .collect::<Vec<_>>()
                    .join("\n"),
                other => other.to_string(),
            };
            t.add_row(vec![m.declaration.name, m.declaration.about, &defaults]);
        }
        super::emit(&format!("{t}\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(model_path), Some(data_path)) = (&args.model, &args.data) else {
        bail!("georob measure {} needs MODEL and DATA", args.name);
    };
    let mut params = params(&args.params)?;
    if !args.transfer.is_empty() {
        params["transfer"] = serde_json::json!(args.transfer);
    }
    let measure = measure::build(&args.name, &params)?;
    let model = Model::open(model_path, &args.model_args.options()?)?;
    let mut data = Dataset::open(data_path, args.labels.as_deref())?;
    if let Some(n) = args.limit {
        if n == 0 {
            bail!("--limit 0: use at least 1 item");
        }
        data.items.truncate(n);
    }
    data.check_labels(model.classes)?;
    // Decided up front (with its warning) only for a measure that takes gradients.
    let gradient = match measure.takes_gradients() {
        true => {
            let (gradient, warning) = model.gradient_mode()?;
            if let Some(w) = warning {
                eprintln!("georob: warning: {w}");
            }
            format!("{gradient} gradients")
        }
        false => "no gradients".to_string(),
    };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let progress = Progress::new(args.quiet);
    let files = Files::like(&model);
    let ctx = Context {
        model: &model,
        data: &data,
        seed: args.seed,
        bounds: bounds(args.bounds.as_deref(), data.default_bounds())?,
        progress: &progress,
        out_dir: args.out.as_deref(),
        resources: &files,
    };
    eprintln!(
        "georob: {} on {} ({}), backend {}, {}, seed {}",
        measure.declaration().name,
        model_path.display(),
        super::images(data.len()),
        model.backend().describe(),
        gradient,
        args.seed
    );
    let started = std::time::Instant::now();
    let calls_before = model.executor().call_seconds();
    let result = measure.run(&ctx)?;
    let seconds = started.elapsed().as_secs_f64();
    let model_seconds = model.executor().call_seconds() - calls_before;
    print_result(&result, seconds, model_seconds)?;
    if let Some(path) = &args.json {
        let json = MeasureJson {
            schema: MEASURE_SCHEMA,
            georob_version: env!("CARGO_PKG_VERSION"),
            model: model.info(),
            backend: model.backend().kind(),
            gradient: model.gradient_mode_decided(),
            seed: args.seed,
            data: data_path,
            bounds: ctx.bounds,
            result: &result,
            timings: Timings {
                seconds,
                model_seconds,
            },
        };
        georob::write::bytes(path, serde_json::to_string_pretty(&json)?)?;
        eprintln!("georob: wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_result(r: &MeasureResult, seconds: f64, model_seconds: f64) -> Result<()> {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec![r.measure.as_str(), ""]);
    for (k, v) in &r.summary {
        t.add_row(vec![k.clone(), georob::report::number(*v)]);
    }
    let c = &r.counts;
    t.add_row(vec![
        "outcomes".to_string(),
        format!(
            "fooled {}, robust {}, misclassified {}, failed {}",
            c.fooled, c.robust, c.misclassified, c.failed
        ),
    ]);
    for w in georob::report::Report::warnings(r) {
        t.add_row(vec!["warning".to_string(), w.to_string()]);
    }
    t.add_row(vec!["seconds".to_string(), format!("{seconds:.2}")]);
    t.add_row(vec![
        "in model calls (s, all threads)".to_string(),
        format!("{model_seconds:.2}"),
    ]);
    super::emit(&format!("{t}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_json_values_and_strings() {
        let p = params(&["steps=50".into(), "norm=l2".into(), "xs=[1,2]".into()]).unwrap();
        assert_eq!(p["steps"], 50);
        assert_eq!(p["norm"], "l2");
        assert_eq!(p["xs"][1], 2);
        assert!(params(&["oops".into()]).is_err());
    }

    #[test]
    fn bounds_take_the_data_default_unless_given() {
        let unit = Some((0.0, 1.0));
        assert_eq!(bounds(None, unit).unwrap(), unit);
        assert_eq!(bounds(None, None).unwrap(), None);
        assert_eq!(bounds(Some("none"), unit).unwrap(), None);
        assert_eq!(bounds(Some("-1,1"), unit).unwrap(), Some((-1.0, 1.0)));
        assert!(bounds(Some("1,0"), unit).is_err());
        assert!(bounds(Some("nan,1"), unit).is_err());
    }
}
