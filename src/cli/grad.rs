//! `georob grad`, `georob export-grad` and `georob check-grad`: input
//! gradients from the command line, the gradient graph as a file, and a check
//! of exact gradients against finite differences.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use georob::data::Dataset;
use georob::grad::{self, build_gradient_graph_probed, probe_model, CotangentLayout};
use georob::model::{GradientChoice, GradientMode, Model};
use georob::spec::Layout;
use npyz::WriterBuilder;
use prost::Message;

use super::args::{CheckGradArgs, ExportGradArgs, GradArgs, ModelArgs};
use super::EXIT_ERROR;

/// Reads a float32 or float64 `.npy` file (C order): shape and values as float32.
fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let f = npyz::NpyFile::new(&bytes[..])
        .with_context(|| format!("{}: not a valid .npy file", path.display()))?;
    let shape: Vec<usize> = f.shape().iter().map(|&d| d as usize).collect();
    if f.order() != npyz::Order::C {
        bail!("{}: Fortran-order arrays are not supported", path.display());
    }
    let wide = matches!(f.dtype(), npyz::DType::Plain(t) if t.size_field() == 8);
    let data = match wide {
        true => f
            .into_vec::<f64>()
            .map(|v| v.into_iter().map(|x| x as f32).collect()),
        false => f.into_vec::<f32>(),
    }
    .with_context(|| format!("{}: expected float32 or float64 values", path.display()))?;
    Ok((shape, data))
}

/// Writes `data` as a float32 `.npy` file of `shape`.
fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()?;
    Ok(())
}

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
    let (xs, x) = read_npy(&args.input)?;
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
    let (cs, cot) = read_npy(&args.cotangent)?;
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
    write_npy(&args.out, &shape, &g)?;
    if let Some(path) = &args.logits {
        write_npy(path, &[n, k], &logits)?;
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
    std::fs::write(&args.out, built.model.encode_to_vec())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
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

/// A small deterministic generator (SplitMix64) for inputs, directions and cotangents.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f32 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

/// `n` seeded random inputs: uniform pixels in `[0, 1]` taken to model space.
fn random_inputs(model: &Model, n: usize, rng: &mut Rng) -> Vec<f32> {
    let spec = &model.spec;
    let (c, hw) = (spec.channels.count(), spec.height * spec.width);
    let mut x = Vec::with_capacity(n * spec.sample_len());
    for _ in 0..n {
        for i in 0..spec.sample_len() {
            let ch = match spec.layout {
                Layout::Nchw => i / hw,
                Layout::Nhwc => i % c,
            };
            x.push(spec.normalise(ch, rng.uniform() as f32));
        }
    }
    x
}

/// Moves data samples off ties (flat image borders make MaxPool and ReLU ties, where no
/// gradient matches every one-sided difference) by uniform noise of `±JITTER · max(1, ‖x‖∞)`.
fn jitter(x: &mut [f32], d: usize, rng: &mut Rng) {
    for row in x.chunks_mut(d) {
        let scale = JITTER * row.iter().fold(1f32, |m, v| m.max(v.abs()));
        for v in row {
            *v += scale * (2.0 * rng.uniform() as f32 - 1.0);
        }
    }
}

/// Relative size of the noise [`jitter`] adds to data samples.
const JITTER: f32 = 5e-3;

/// Step multipliers of the finite differences (unit directions, base step
/// `fd::default_step`): small steps lose digits to float32 rounding, large ones cross kinks.
const STEPS: [f32; 3] = [1.0, 10.0, 100.0];

/// The finite difference to trust among those at increasing [`STEPS`]: of the two neighbouring
/// steps that agree best, the smaller. Chosen without looking at the exact gradient.
fn consistent(values: &[f64]) -> f64 {
    let best = (0..values.len() - 1)
        .min_by(|&a, &b| {
            let da = (values[a] - values[a + 1]).abs();
            let db = (values[b] - values[b + 1]).abs();
            da.total_cmp(&db)
        })
        .unwrap_or(0);
    values[best]
}

/// One row of the check-grad table.
struct CheckRow {
    sample: String,
    top: usize,
    cosine: f64,
    rel: f64,
    scale: f64,
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
    let d = model.spec.sample_len();
    let k = model.classes;
    let mut rng = Rng(args.seed ^ 0x6765_6f72_6f62);
    let (x, names): (Vec<f32>, Vec<String>) = match &args.data {
        Some(path) => {
            let data = Dataset::open(path, None)?;
            let n = args.samples.min(data.len());
            let mut x = data.load(&model.spec, 0, n)?.x;
            jitter(&mut x, d, &mut rng);
            let names = data.items[..n].iter().map(|i| i.name.clone()).collect();
            (x, names)
        }
        None => {
            let n = args.samples;
            let names = (0..n).map(|i| format!("random #{i}")).collect();
            (random_inputs(&model, n, &mut rng), names)
        }
    };
    let dirs = args.directions;
    let mut rows = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        let xi = &x[i * d..(i + 1) * d];
        // Two cotangents: the top class alone, and a random mix of all classes.
        let logits = model.logits(xi, 1)?;
        let top = (0..k)
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap_or(0);
        let mut cot = vec![0.0f32; 2 * k];
        cot[top] = 1.0;
        for c in &mut cot[k..] {
            *c = rng.normal();
        }
        let (_, g) = model.vjp(xi, 1, &cot, 2)?;
        let mut v: Vec<f32> = (0..dirs * d).map(|_| rng.normal()).collect();
        // Unit L2 norm: the step moves x by `h`, so few kinks are crossed.
        for row in v.chunks_mut(d) {
            let norm = row.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-30);
            row.iter_mut().for_each(|a| *a /= norm);
        }
        let h = grad::fd::default_step(xi);
        let f = |rows: &[f32]| model.logits(rows, rows.len() / d);
        let jvs = STEPS
            .iter()
            .map(|s| grad::fd::jvp(f, xi, &v, h * s))
            .collect::<georob::Result<Vec<_>>>()?;
        let mut exact: Vec<f64> = Vec::with_capacity(2 * dirs);
        let mut fd: Vec<f64> = Vec::with_capacity(2 * dirs);
        for mi in 0..2 {
            let (gm, cm) = (&g[mi * d..(mi + 1) * d], &cot[mi * k..(mi + 1) * k]);
            for j in 0..dirs {
                let vj = &v[j * d..(j + 1) * d];
                exact.push(gm.iter().zip(vj).map(|(a, b)| *a as f64 * *b as f64).sum());
                let at = |jv: &Vec<f64>| -> f64 {
                    jv[j * k..(j + 1) * k]
                        .iter()
                        .zip(cm)
                        .map(|(a, b)| a * *b as f64)
                        .sum()
                };
                fd.push(consistent(&jvs.iter().map(at).collect::<Vec<_>>()));
            }
        }
        let (cosine, rel) = grad::fd::compare(&exact, &fd);
        let scale = fd.iter().fold(0f64, |m, v| m.max(v.abs()));
        rows.push(CheckRow {
            sample: name,
            top,
            cosine,
            rel,
            scale,
        });
    }
    let min_cos = rows.iter().map(|r| r.cosine).fold(f64::INFINITY, f64::min);
    let max_rel = rows.iter().map(|r| r.rel).fold(0.0, f64::max);
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "sample",
        "top class",
        "cosine",
        "rel. error",
        "max |FD|",
    ]);
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
            format!("; samples moved by ±{JITTER}·max(1, ‖x‖∞) off ties")
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

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn the_generator_is_seeded_and_roughly_normal() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        let xs: Vec<f32> = (0..4000).map(|_| a.normal()).collect();
        assert_eq!(xs[..5], (0..5).map(|_| b.normal()).collect::<Vec<_>>()[..]);
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 0.1 && (var - 1.0).abs() < 0.1, "{mean} {var}");
    }
}
