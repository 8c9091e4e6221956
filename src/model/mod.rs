//! Loading an ONNX classifier and running it on a backend.

mod backend;
mod check;
mod executor;
mod gradients;
pub mod onnx;
#[cfg(feature = "ort")]
mod ort;
pub mod ort_lib;
mod tract;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub(crate) use backend::guarded;
pub use backend::{
    install_quiet_panic_hook, Backend, BackendChoice, BackendKind, Device, GraphSession, Job,
};
pub use executor::Executor;
pub use gradients::{GradientChoice, GradientMode};
pub use onnx::{ModelSummary, OnnxModel};

use crate::error::{Error, Result};
use crate::spec::{self, InputSpec, OutputKind, SpecOverrides};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// Which backend.
    pub backend: BackendChoice,
    /// ONNX Runtime library (`--ort-lib`).
    pub ort_lib: Option<PathBuf>,
    /// CPU or CUDA (ort only).
    pub device: Device,
    /// Threads for the backend; None = all cores.
    pub threads: Option<usize>,
    /// Samples per model call; `None`: [`default_batch`] of the backend.
    pub batch: Option<usize>,
    /// Input-spec settings given explicitly (flags); they win over the sidecar.
    pub spec: SpecOverrides,
    /// Whether to read `MODEL.georob.toml`.
    pub use_sidecar: bool,
    /// How to compute input gradients.
    pub gradient: GradientChoice,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            backend: BackendChoice::Auto,
            ort_lib: None,
            device: Device::Cpu,
            threads: None,
            batch: None,
            spec: SpecOverrides::default(),
            use_sidecar: true,
            gradient: GradientChoice::Auto,
        }
    }
}

/// How the first model output is turned into logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputTransform {
    /// The output already holds logits.
    None,
    /// The graph's final Softmax was removed; the output is its input.
    StrippedSoftmax,
    /// The output holds probabilities; logits are their logarithms.
    LogOfProbs,
}

/// A classifier loaded on a backend, with its resolved input specification.
pub struct Model {
    /// The file as read (before any rewrite).
    pub onnx: OnnxModel,
    /// The graph that runs: `onnx`, minus a final softmax when it was stripped, with its
    /// constant subgraphs folded (`grad::fold_constants`, with the `tract` feature).
    pub runnable: OnnxModel,
    /// How inputs are prepared.
    pub spec: InputSpec,
    /// Number of classes K.
    pub classes: usize,
    /// Class names, when the sidecar or `--classes` names a file.
    pub class_names: Option<Vec<String>>,
    /// How the output becomes logits.
    pub output_transform: OutputTransform,
    /// Batch size the model file fixes, if any.
    pub fixed_batch: Option<usize>,
    exec: Executor,
    threads: usize,
    gradients: gradients::GradientState,
    /// The options it was opened with (to open related models alike).
    options: ModelOptions,
}

/// What a report records about the model and how it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Model file.
    pub path: PathBuf,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Backend used.
    pub backend: BackendKind,
    /// Backend description (engine, device).
    pub backend_detail: String,
    /// Threads given to the backend.
    pub threads: usize,
    /// Samples per model call.
    pub batch: usize,
    /// Input specification.
    pub input: InputSpec,
    /// Number of classes.
    pub classes: usize,
    /// How the output became logits.
    pub output_transform: OutputTransform,
}

impl Model {
    /// Loads `path`, resolves its input spec (model → sidecar → options) and
    /// starts the requested backend.
    pub fn open(path: &Path, options: &ModelOptions) -> Result<Model> {
        let onnx = OnnxModel::open(path)?;
        let input = onnx.image_input()?;
        onnx.check_scores()?;
        if let Some(n) = options.threads {
            crate::threads::check(n)?;
        }
        let sidecar = if options.use_sidecar {
            spec::read_sidecar(path)?.unwrap_or_default()
        } else {
            SpecOverrides::default()
        };
        let sidecar_size = sidecar.size;
        let sidecar_file = spec::sidecar_path(path);
        let from_sidecar = sidecar.clone();
        let origin = |key: &str| {
            if options.spec.has(key) {
                format!("--{key}")
            } else if from_sidecar.has(key) {
                format!("{key} in {}", sidecar_file.display())
            } else {
                key.to_string()
            }
        };
        let settings = sidecar.overridden_by(&options.spec);
        let ends_in_softmax = matches!(onnx.final_softmax(),
            Some(i) if onnx.graph().node[i].op_type == "Softmax");
        let spec = InputSpec::resolve(
            &onnx.path,
            input.layout,
            |layout| input.chw(layout),
            ends_in_softmax,
            &settings,
            &origin,
        )?;
        let class_names = settings
            .classes
            .as_deref()
            .map(read_class_names)
            .transpose()?;

        let mut runnable = onnx.clone();
        let output_transform = match spec.output {
            OutputKind::Logits => OutputTransform::None,
            OutputKind::Probs if runnable.strip_final_softmax() => OutputTransform::StrippedSoftmax,
            OutputKind::Probs => OutputTransform::LogOfProbs,
        };
        // Constant subgraphs (exporters' static paddings) are folded once here, not by the
        // backend in each session it opens (ONNX Runtime opens one per thread).
        crate::grad::fold_constants(&mut runnable.proto);
        let threads = options
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let kind = backend_kind(options);
        let batch = input
            .fixed_batch
            .unwrap_or_else(|| options.batch.unwrap_or(default_batch(kind)).max(1));
        check_input_memory(path, &spec, batch, &input, options, sidecar_size)?;
        let backend = start_backend(kind, path, &runnable, &spec, batch, threads, options)?;
        let mut model = Model {
            onnx,
            runnable,
            spec,
            classes: 0,
            class_names,
            output_transform,
            fixed_batch: input.fixed_batch,
            exec: Executor::new(backend, input.fixed_batch),
            threads,
            gradients: gradients::GradientState::new(options.gradient),
            options: options.clone(),
        };
        // A probe call on each thread the backend runs calls on (each then holds its session
        // of the model): learns K and proves the backend can run the model.
        let probe = vec![0.0f32; model.spec.sample_len()];
        let exec = model.executor();
        let (shape, _) = exec
            .map_concurrent(exec.concurrent_calls(), |_| model.run_raw(&probe, 1))?
            .swap_remove(0);
        model.classes = shape[1..].iter().product();
        if shape.len() < 2 || model.classes < 2 {
            return Err(Error::NotAClassifier {
                path: path.to_path_buf(),
                reason: format!(
                    "its first output has shape {shape:?}; georob needs class scores (N, K) \
                     of at least 2 classes"
                ),
            });
        }
        if let Some(names) = &model.class_names {
            if names.len() != model.classes {
                return Err(Error::Config(format!(
                    "the class-name file lists {} names but {} has {} classes",
                    names.len(),
                    path.display(),
                    model.classes
                )));
            }
        }
        Ok(model)
    }

    /// The backend in use.
    pub fn backend(&self) -> &dyn Backend {
        self.exec.backend()
    }

    /// How its calls run: batch, concurrency, timing.
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// Model file path.
    pub fn path(&self) -> &Path {
        &self.onnx.path
    }

    /// Facts for reports.
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            path: self.onnx.path.clone(),
            sha256: self.onnx.sha256.clone(),
            backend: self.backend().kind(),
            backend_detail: self.backend().describe(),
            threads: self.threads,
            batch: self.exec.batch(),
            input: self.spec.clone(),
            classes: self.classes,
            output_transform: self.output_transform,
        }
    }

    /// The options this model was opened with.
    pub fn options(&self) -> &ModelOptions {
        &self.options
    }

    /// Logits `(n, K)` of `n` samples stored contiguously in `x` (model layout,
    /// model space). Any `n` works: calls are chunked to the backend's batch, and split into
    /// concurrent chunks unless the backend threads each call and the whole call is cheap
    /// (under 2 ms by the fastest per-row time seen so far). Fails with
    /// [`Error::NonFinite`] (index within `x`) on NaN or Inf.
    pub fn logits(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.exec.timed(|| self.logits_untimed(x, n))
    }

    /// The backend's first output for `n` rows of `x`.
    fn run_raw(&self, x: &[f32], n: usize) -> Result<(Vec<usize>, Vec<f32>)> {
        self.exec
            .run_rows(x, n, self.spec.sample_len(), &self.onnx.path)
    }

    fn logits_untimed(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let (_, mut out) = self.run_raw(x, n)?;
        if self.output_transform == OutputTransform::LogOfProbs {
            out.iter_mut().for_each(|p| *p = p.max(1e-30).ln());
        }
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            let row = i / self.classes.max(1);
            return Err(Error::NonFinite {
                path: self.onnx.path.clone(),
                index: row,
                item: format!("row {row} of the batch"),
            });
        }
        Ok(out)
    }
}

/// Checks, before the backend allocates it, that one input batch (`batch` samples of
/// `spec`) can be counted and fits under the memory limit; the error names where the batch
/// and the sample size came from.
fn check_input_memory(
    path: &Path,
    spec: &InputSpec,
    batch: usize,
    input: &onnx::ImageInput,
    options: &ModelOptions,
    sidecar_size: Option<(usize, usize)>,
) -> Result<()> {
    let mut dims = vec![batch];
    dims.extend_from_slice(&spec.sample_shape());
    let Err(why) = crate::limits::check_input_batch(&dims) else {
        return Ok(());
    };
    let size = match (options.spec.size, sidecar_size) {
        (Some((h, w)), _) => format!("--size {h}x{w}"),
        (None, Some((h, w))) => format!(
            "size = [{h}, {w}] in {}",
            spec::sidecar_path(path).display()
        ),
        (None, None) => "the model's input size".into(),
    };
    let batch = match (input.fixed_batch, options.batch) {
        (Some(b), _) => format!("the batch of {b} the model fixes"),
        (None, Some(b)) => format!("--batch {b}"),
        (None, None) => format!("a batch of {batch}"),
    };
    Err(Error::Config(format!(
        "{}: one input batch ({batch}, {size}) is too large: {why}",
        path.display()
    )))
}

fn read_class_names(path: &Path) -> Result<Vec<String>> {
    let text = crate::read::text(path, crate::read::TEXT_CAP)?;
    Ok(text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// The backend `options` ask for: `auto` is ort when its library is found, else tract.
fn backend_kind(options: &ModelOptions) -> BackendKind {
    match options.backend {
        BackendChoice::Exactly(k) => k,
        BackendChoice::Auto
            if cfg!(feature = "ort") && ort_lib::find(options.ort_lib.as_deref()).is_ok() =>
        {
            BackendKind::Ort
        }
        BackendChoice::Auto => BackendKind::Tract,
    }
}

/// Samples per model call when `--batch` is not given. tract runs one sample per call
/// fastest (its batched plans cost more per sample than single calls, for forward and
/// gradient calls alike) and spreads concurrent calls over its threads;
/// ONNX Runtime gains from batches.
pub fn default_batch(kind: BackendKind) -> usize {
    match kind {
        BackendKind::Tract => 1,
        BackendKind::Ort => 16,
    }
}

fn start_backend(
    kind: BackendKind,
    path: &Path,
    onnx: &OnnxModel,
    spec: &InputSpec,
    batch: usize,
    threads: usize,
    options: &ModelOptions,
) -> Result<Box<dyn Backend>> {
    let sample_shape = spec.sample_shape().to_vec();
    if options.device == Device::Cuda && kind != BackendKind::Ort {
        return Err(Error::BackendUnavailable {
            backend: "tract",
            reason: "--device cuda needs the ort backend (tract runs on the CPU only); build with --features ort and install an ONNX Runtime with CUDA".into(),
        });
    }
    match kind {
        BackendKind::Tract => Ok(Box::new(tract::TractBackend::new(
            path.to_path_buf(),
            onnx.proto.clone(),
            sample_shape,
            batch,
            threads,
        )?)),
        BackendKind::Ort => {
            #[cfg(feature = "ort")]
            {
                let lib = ort_lib::find(options.ort_lib.as_deref()).map_err(|reason| {
                    Error::BackendUnavailable {
                        backend: "ort",
                        reason,
                    }
                })?;
                Ok(Box::new(ort::OrtBackend::new(
                    path,
                    &onnx.to_bytes(),
                    sample_shape,
                    batch,
                    threads,
                    options.device,
                    &lib,
                )?))
            }
            #[cfg(not(feature = "ort"))]
            {
                let _ = (path, onnx, sample_shape, batch, threads);
                Err(Error::BackendUnavailable {
                    backend: "ort",
                    reason: "this georob was built without the `ort` feature; rebuild with `cargo build --release --features ort`".into(),
                })
            }
        }
    }
}
