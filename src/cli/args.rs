//! Raw command-line arguments (clap). Validation into library types happens
//! in [`super::options`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Audit how robust an ONNX image classifier is to noise, flows and geometric transforms.
#[derive(Debug, Parser)]
#[command(name = "georob", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Largest input batch georob allocates, in bytes (suffixes K, M, G, T: 512M, 4G)
    /// [default: half of this machine's memory]; larger inputs are refused before any
    /// allocation.
    #[arg(long, global = true, value_name = "BYTES", allow_hyphen_values = true)]
    pub max_memory: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a model's inputs, outputs, opset, operators, parameters and how georob will feed it.
    Inspect(InspectArgs),
    /// Classify a data set: top-1, top-5, per-class accuracy and throughput.
    Eval(EvalArgs),
    /// Run one robustness measure (`georob measure list` names them all).
    Measure(MeasureArgs),
    /// Input gradients of chosen logit combinations: G[n, m] = Σ_k C[n, m, k] ∂logits[n, k]/∂X[n].
    Grad(GradArgs),
    /// Write the gradient graph (inputs `input`, `cotangent`; outputs `logits`, `grad`) as a standalone ONNX file.
    ExportGrad(ExportGradArgs),
    /// Check exact gradients against central finite differences along random directions.
    CheckGrad(CheckGradArgs),
    /// Run a suite of measures (default suite, or SUITE.toml) and write the reports; exit 1 when a gate fails.
    Audit(AuditArgs),
    /// Check a report.json against thresholds and a baseline: exit 0 pass, 1 a gate failed, 2 error.
    Gate(GateArgs),
    /// Merge the output directories of the shards of one audit into one report.
    Merge(MergeArgs),
    /// Write corrupted copies of images (ImageNet-C corruptions) as PNG into DIR/CORRUPTION/SEVERITY/.
    Corrupt(CorruptArgs),
}

impl Command {
    /// `--threads`, for the commands that run a model.
    pub fn threads(&self) -> Option<usize> {
        let model_args = match self {
            Command::Inspect(a) => &a.model_args,
            Command::Eval(a) => &a.model_args,
            Command::Measure(a) => &a.model_args,
            Command::Grad(a) => &a.model_args,
            Command::CheckGrad(a) => &a.model_args,
            Command::Audit(a) => &a.model_args,
            Command::ExportGrad(_) | Command::Gate(_) | Command::Merge(_) | Command::Corrupt(_) => {
                return None
            }
        };
        model_args.threads
    }
}

/// `georob audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// A suite file (.toml), or a model (.onnx) audited with the default suite.
    pub target: PathBuf,
    /// Data for the default suite (as for `eval`).
    pub data: Option<PathBuf>,
    /// Integer labels (.npy) for .npy data.
    #[arg(long, value_name = "Y.npy")]
    pub labels: Option<PathBuf>,
    /// Output directory for the journal, the reports and the artifacts.
    #[arg(long, default_value = "georob-report", value_name = "DIR")]
    pub out: PathBuf,
    /// Seed (overrides the suite's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Use only the first N items of the data (overrides the suite's).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Images per work unit of the measures run in chunks (overrides the suite's; default
    /// 256): `--shard` spreads one such measure over its chunks. Shards must agree on it.
    #[arg(long, value_name = "N")]
    pub chunk: Option<usize>,
    /// Extra threshold `ID.KEY OP VALUE` (repeatable), e.g. `deepfool.median_rho>=0.002`.
    #[arg(long = "threshold", value_name = "GATE")]
    pub thresholds: Vec<String>,
    /// Run the I-th of N deterministic shares of the work units (1-based), then `georob merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Keep the journal in --out and skip the units it already holds.
    #[arg(long)]
    pub resume: bool,
    /// No progress bars or per-unit lines.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

/// `georob corrupt`.
#[derive(Debug, Args)]
pub struct CorruptArgs {
    /// Images: an ImageFolder directory, a folder of images, a CSV manifest or one PNG/JPEG image.
    pub data: Option<PathBuf>,
    /// Corruption name (e.g. `fog`; `--list` names them all), or `all`.
    #[arg(long, value_name = "NAME|all")]
    pub corruption: Option<String>,
    /// Severity, 1 (mildest) to 5, or `all`.
    #[arg(long, value_name = "1-5|all")]
    pub severity: Option<String>,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Seed; image i draws from a seed mixed from it and i.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// List the corruptions and exit.
    #[arg(long)]
    pub list: bool,
    /// No progress bar or summary line.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `georob gate`.
#[derive(Debug, Args)]
pub struct GateArgs {
    /// The report.json to check.
    pub report: PathBuf,
    /// A TOML file with `thresholds = [...]` (a suite file works); default: the report's own suite thresholds.
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,
    /// Require ID.KEY >= V (repeatable).
    #[arg(long, value_name = "ID.KEY=V")]
    pub min: Vec<String>,
    /// Require ID.KEY <= V (repeatable).
    #[arg(long, value_name = "ID.KEY=V")]
    pub max: Vec<String>,
    /// An earlier report.json to compare against (same model names).
    #[arg(long, value_name = "OLD.json")]
    pub baseline: Option<PathBuf>,
    /// Largest allowed regression against the baseline, as a percentage or fraction.
    #[arg(
        long,
        default_value = "5%",
        value_name = "P%",
        allow_hyphen_values = true
    )]
    pub max_regression: String,
    /// Rewrite junit.xml, report.sarif and summary.md with these gates into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `georob merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Output directories of the shards.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Where to write the merged journal, artifacts and reports.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `georob grad`.
#[derive(Debug, Args)]
pub struct GradArgs {
    /// The ONNX model file.
    pub model: PathBuf,
    /// Inputs X in model space: float32 or float64 .npy (N, sample shape), in the model's layout.
    #[arg(long, value_name = "X.npy")]
    pub input: PathBuf,
    /// Cotangents C: float32 or float64 .npy (N, K) or (N, M, K).
    #[arg(long, value_name = "C.npy")]
    pub cotangent: PathBuf,
    /// Output gradients G: float32 .npy (N, [M,] sample shape); M appears when C has it.
    #[arg(long, value_name = "G.npy")]
    pub out: PathBuf,
    /// Also write the logits (N, K) as float32 .npy.
    #[arg(long, value_name = "L.npy")]
    pub logits: Option<PathBuf>,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

/// `georob export-grad` (builds on tract; the graph runs on any ONNX runtime).
#[derive(Debug, Args)]
pub struct ExportGradArgs {
    /// The ONNX model file.
    pub model: PathBuf,
    /// Where to write the gradient graph.
    #[arg(long, value_name = "MODEL.grad.onnx")]
    pub out: PathBuf,
    /// Batch size N the graph is built for (ignored when the model fixes its batch).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub batch: usize,
    /// Number M of cotangents (classes) per sample.
    #[arg(long, default_value_t = 1, value_name = "M")]
    pub classes: usize,
    /// How the M cotangents run: `batched` (one backward pass over M·N rows, fastest on ONNX
    /// Runtime for most models) or `split` (M passes of N rows, fastest on tract for large
    /// inputs, and on ONNX Runtime for ReLU6 networks at 224×224).
    #[arg(long, default_value = "batched", value_name = "batched|split")]
    pub cotangents: String,
    /// Input layout, overriding the model and sidecar.
    #[arg(long, value_name = "NCHW|NHWC")]
    pub layout: Option<String>,
    /// Input size as HxW, overriding the model and sidecar.
    #[arg(long, value_name = "HxW", allow_hyphen_values = true)]
    pub size: Option<String>,
    /// What the model outputs: logits, or probs (a final softmax is then removed).
    #[arg(long, value_name = "logits|probs")]
    pub output: Option<String>,
    /// Ignore MODEL.georob.toml beside the model.
    #[arg(long)]
    pub no_sidecar: bool,
}

/// `georob check-grad`.
#[derive(Debug, Args)]
pub struct CheckGradArgs {
    /// The ONNX model file.
    pub model: PathBuf,
    /// Samples to check at (as for `eval`); default: seeded random inputs in the model's range.
    pub data: Option<PathBuf>,
    /// Random directions per sample.
    #[arg(long, default_value_t = 8, value_name = "D")]
    pub directions: usize,
    /// Number of samples (the first N of DATA).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub samples: usize,
    /// Seed of the random inputs, directions and cotangents.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Minimum cosine similarity to pass (exit 1 below it).
    #[arg(long, default_value_t = 0.999)]
    pub min_cosine: f64,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

/// `georob measure`.
#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// Measure name, or `list` to list the measures.
    pub name: String,
    /// The ONNX model file (required unless NAME is `list`).
    pub model: Option<PathBuf>,
    /// Data, as for `eval` (required unless NAME is `list`).
    pub data: Option<PathBuf>,
    /// Integer labels (.npy) for .npy data.
    #[arg(long, value_name = "Y.npy")]
    pub labels: Option<PathBuf>,
    /// A measure parameter, KEY=VALUE (repeatable); VALUE is read as JSON when it parses, else as a string.
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Another model to transfer the result to (`uap`: its held-out fooling rate), repeatable
    /// or comma-separated; same as `-p transfer=[...]`. One value per flag, so that it cannot
    /// take MODEL and DATA for models to transfer to.
    #[arg(long, value_name = "MODEL", value_delimiter = ',')]
    pub transfer: Vec<PathBuf>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Box constraint LO,HI in the measured space, or `none` (default 0,1 for images, none for .npy).
    #[arg(long, value_name = "LO,HI|none", allow_hyphen_values = true)]
    pub bounds: Option<String>,
    /// Use only the first N items of the data.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Write the result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Directory for artifacts (pictures, flows, CSV) that measures save on request.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// With `list`: print the catalogue as Markdown (what `docs/measures.md` holds).
    #[arg(long)]
    pub markdown: bool,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

/// `georob inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The ONNX model file.
    pub model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

/// `georob eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The ONNX model file.
    pub model: PathBuf,
    /// Data: an ImageFolder directory, a folder of images, a CSV manifest (path,label), one PNG/JPEG image, or a float32 .npy tensor in model space.
    pub data: PathBuf,
    /// Integer labels (.npy, one per row) for .npy data.
    #[arg(long, value_name = "Y.npy")]
    pub labels: Option<PathBuf>,
    /// Write the full results (summary and per-image predictions) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Print one row per image (default: when there are at most 20 images).
    #[arg(long)]
    pub per_image: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

/// How to load and feed the model (shared by every subcommand).
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Inference backend: auto (ONNX Runtime when its library is found, else tract), tract or ort.
    #[arg(long, default_value = "auto", value_name = "auto|tract|ort")]
    pub backend: String,
    /// Path of the ONNX Runtime shared library (else ORT_DYLIB_PATH, else the one inside a Python onnxruntime package).
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Device for the ort backend.
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda")]
    pub device: String,
    /// Threads for the backend (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Samples per model call (ignored when the model fixes its batch size) [default: 1 on
    /// tract, which runs concurrent single-sample calls on its threads; 16 on ort].
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// Input layout, overriding the model and sidecar.
    #[arg(long, value_name = "NCHW|NHWC")]
    pub layout: Option<String>,
    /// Input size as HxW (e.g. 224x224), overriding the model and sidecar.
    #[arg(long, value_name = "HxW", allow_hyphen_values = true)]
    pub size: Option<String>,
    /// Channel order the model expects.
    #[arg(long, value_name = "gray|rgb|bgr")]
    pub channels: Option<String>,
    /// Multiplier applied to pixels in [0,1] before mean/std (e.g. 255).
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    pub scale: Option<f32>,
    /// Per-channel mean subtracted after scaling, comma-separated (one value = all channels).
    #[arg(long, value_name = "M[,M,M]", allow_hyphen_values = true)]
    pub mean: Option<String>,
    /// Per-channel standard deviation, comma-separated (one value = all channels).
    #[arg(long, value_name = "S[,S,S]", allow_hyphen_values = true)]
    pub std: Option<String>,
    /// What the model outputs: logits, or probs (a final softmax is then removed, or logs taken).
    #[arg(long, value_name = "logits|probs")]
    pub output: Option<String>,
    /// File with one class name per line.
    #[arg(long, value_name = "FILE")]
    pub classes: Option<PathBuf>,
    /// Input gradients: auto (exact from the ONNX graph, finite differences when an operator has no rule), exact (error instead of falling back) or fd.
    #[arg(long, default_value = "auto", value_name = "auto|exact|fd")]
    pub gradient: String,
    /// Ignore MODEL.georob.toml beside the model.
    #[arg(long)]
    pub no_sidecar: bool,
}
