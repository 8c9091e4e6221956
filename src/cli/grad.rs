//! `georob grad`, `georob export-grad` and `georob check-grad`: input
//! gradients from the command line, the gradient graph as a file, and a check
//! of exact gradients against finite differences.

use std::process::ExitCode;

use anyhow::{bail, Result};
use comfy_table::{Cell, CellAlignment};
use georob::data::{read_f32, write_f32, Dataset};
use georob::grad::{self, build_gradient_graph_probed, probe_model, CotangentLayout};
use georob::model::{GradientChoice, GradientMode, Model};
use prost::Message;

use super::args::{CheckGradArgs, ExportGradArgs, GradArgs, ModelArgs};
use super::EXIT_ERROR;

/// Prints the one-line fallback warning, when there is one; returns the mode.
fn announce_mode(model: &Model) -> Result<GradientMode> {
    let (mode, warning) = model.gradient_mode()?;
    if let Some(w) = warning {
        eprintln!("georob: warning: {w}");
    }
    Ok(mode)
}

/// `georob grad MODEL --input X.npy --cotangent C.npy --out G.npy`.
pub fn run_grad(args: &GradArgs) -> Result<ExitCode> {
    let options = args.model_args.options()?;
    let model = Model::open(&args.model, &options)?;
    let sample = model.spec.sample_shape();
    let (xs, x) = read_f32(&args.input)?;
    if xs.len() != 4 || xs[1..] != sample {
        bail!(
            "{}: shape {xs:?}, but {} takes (N, {}, {}, {}) in model space",
            args.input.display(),
            args.model.display(),
            sample[0],
            sample[1],
            sample[2]
        );
    }
    let n = xs[0];
    let k = model.classes;
    let (cs, cot) = read_f32(&args.cotangent)?;
    let (m, with_m) = match cs.as_slice() {
        [cn, ck] if *cn == n && *ck == k => (1, false),
        [cn, cm, ck] if *cn == n && *ck == k && *cm > 0 => (*cm, true),
        _ => bail!(
            "{}: shape {cs:?}, expected ({n}, {k}) or ({n}, M, {k}) for {n} inputs and {k} classes",
            args.cotangent.display()
        ),
    };
    let mode = announce_mode(&model)?;
    let t0 = std::time::Instant::now();
    let (logits, g) = model.vjp(&x, n, &cot, m)?;
    let mut shape = vec![n];
    if with_m {
        shape.push(m);
    }
    shape.extend_from_slice(&sample);
    write_f32(&args.out, &shape, &g)?;
    if let Some(path) = &args.logits {
        write_f32(path, &[n, k], &logits)?;
    }
    eprintln!(
        "georob: wrote {} {shape:?} (gradient: {mode}, backend {}, {:.1?})",
        args.out.display(),
        model.backend().describe(),
        t0.elapsed()
    );
    Ok(ExitCode::SUCCESS)
}

/// `georob export-grad MODEL --out MODEL.grad.onnx [--batch N] [--classes M] [--cotangents ..]`.
pub fn run_export(args: &ExportGradArgs) -> Result<ExitCode> {
    if args.batch == 0 || args.classes == 0 {
        bail!("--batch and --classes must be at least 1");
    }
    let layout = match args.cotangents.as_str() {
        "batched" => CotangentLayout::Batched,
        "split" => CotangentLayout::Split,
        other => bail!("--cotangents {other:?}: use batched or split"),
    };
    let model_args = ModelArgs {
        backend: "tract".into(),
        ort_lib: None,
        device: "cpu".into(),
        threads: Some(1),
        batch: Some(args.batch),
        layout: args.layout.clone(),
        size: args.size.clone(),
        channels: None,
        scale: None,
        mean: None,
        std: None,
        output: args.output.clone(),
        classes: None,
        gradient: "exact".into(),
        no_sidecar: args.no_sidecar,
    };
    let model = Model::open(&args.model, &model_args.options()?)?;
    let n = model.fixed_batch.unwrap_or(args.batch);
    let mut shape = vec![n];
    shape.extend_from_slice(&model.spec.sample_shape());
    let built = match probe_model(&model.runnable.proto, &shape).and_then(|probed| {
        build_gradient_graph_probed(&model.runnable.proto, &probed, args.classes, layout)
    }) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("georob: error: {}: {e}", args.model.display());
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    georob::write::bytes(&args.out, built.model.encode_to_vec())?;
    let dims = |d: &[usize]| {
        d.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (m, k) = (built.classes, built.num_logits);
    let rest = dims(&shape[1..]);
    let mut out = format!("wrote {}\n", args.out.display());
    out += &format!("input      {} float32 ({n}, {rest})\n", grad::INPUT);
    out += &format!("input      {} float32 ({n}, {m}, {k})\n", grad::COTANGENT);
    out += &format!("output     {} float32 ({n}, {k})\n", grad::LOGITS);
    out += &format!("output     {} float32 ({n}, {m}, {rest})\n", grad::GRAD);
    out += &format!(
        "            {}[n, m] = Σ_k {}[n, m, k] · ∂{}[n, k]/∂{}[n]\n",
        grad::GRAD,
        grad::COTANGENT,
        grad::LOGITS,
        grad::INPUT
    );
    if built.pre_softmax {
        out += "note       `logits` is the input of the model's final softmax\n";
    }
    super::emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// `georob check-grad MODEL [DATA] [--directions D]`.
pub fn run_check(args: &CheckGradArgs) -> Result<ExitCode> {
    if args.directions == 0 || args.samples == 0 {
        bail!("--directions and --samples must be at least 1");
    }
    let mut options = args.model_args.options()?;
    options.gradient = GradientChoice::Exact;
    let model = Model::open(&args.model, &options)?;
    if let Err(e) = model.gradient_mode() {
        eprintln!("georob: error: {e}");
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    let data = match &args.data {
        Some(path) => Some(Dataset::open(path, None)?),
        None => None,
    };
    let dirs = args.directions;
    let rows = grad::check::check(
        &model,
        data.as_ref(),
        args.samples,
        dirs,
        args.seed ^ 0x6765_6f72_6f62,
    )?;
    let min_cos = rows.iter().map(|r| r.cosine).fold(f64::INFINITY, f64::min);
    let max_rel = rows.iter().map(|r| r.rel).fold(0.0, f64::max);
    let mut t = super::table(&["sample", "top class", "cosine", "rel. error", "max |FD|"]);
    for r in &rows {
        t.add_row(vec![
            Cell::new(&r.sample),
            Cell::new(r.top),
            Cell::new(format!("{:.6}", r.cosine)).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.2e}", r.rel)).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.3e}", r.scale)).set_alignment(CellAlignment::Right),
        ]);
    }
    let pass = min_cos >= args.min_cosine;
    let out = format!(
        "{}: exact gradients vs central differences ({} directions × 2 cotangents per sample{}, backend {})\n{t}\nmodel {}  min cosine {min_cos:.6}  max rel. error {max_rel:.2e}  {}\n",
        args.model.display(),
        dirs,
        if args.data.is_some() {
            format!(
                "; samples moved by ±{}·max(1, ‖x‖∞) off ties",
                grad::check::JITTER
            )
        } else {
            String::new()
        },
        model.backend().describe(),
        args.model.display(),
        if pass { "PASS" } else { "FAIL" }
    );
    super::emit(&out)?;
    Ok(if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
