//! Loading an ONNX classifier and running it on a backend.

mod backend;
mod gradients;
pub mod onnx;
#[cfg(feature = "ort")]
mod ort;
pub mod ort_lib;
mod tract;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use backend::{
    install_quiet_panic_hook, Backend, BackendChoice, BackendKind, Device, GraphSession, Job,
};
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
    backend: Box<dyn Backend>,
    threads: usize,
    gradients: gradients::GradientState,
    /// Fastest wall time per row seen in a forward call, in nanoseconds.
    forward_ns_per_row: AtomicU64,
    /// Time inside [`Model::logits`] and [`Model::vjp`], summed over calling threads (ns).
    call_ns: AtomicU64,
    /// The options it was opened with (to open related models alike).
    options: ModelOptions,
}

/// Forward calls estimated to take less than this run whole where a call threads itself
/// ([`Backend::threads_each_call`]): on a call that short, the overhead of splitting it into
/// concurrent single-threaded runs outweighs what the split saves.
const SPLIT_MIN_NS: u64 = 2_000_000;

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
        let sidecar = if options.use_sidecar {
            spec::read_sidecar(path)?.unwrap_or_default()
        } else {
            SpecOverrides::default()
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
        let backend = start_backend(kind, path, &runnable, &spec, batch, threads, options)?;
        let mut model = Model {
            onnx,
            runnable,
            spec,
            classes: 0,
            class_names,
            output_transform,
            fixed_batch: input.fixed_batch,
            backend,
            threads,
            gradients: gradients::GradientState::new(options.gradient),
            forward_ns_per_row: AtomicU64::new(0),
            call_ns: AtomicU64::new(0),
            options: options.clone(),
        };
        // One probe call: learns K and proves the backend can run the model.
        let probe = vec![0.0f32; model.spec.sample_len()];
        let (shape, _) = model.run_raw(&probe, 1)?;
        model.classes = shape[1..].iter().product();
        if shape.len() < 2 || model.classes == 0 {
            return Err(Error::NotAClassifier {
                path: path.to_path_buf(),
                reason: format!(
                    "its first output has shape {shape:?}; georob needs class scores (N, K)"
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
        self.backend.as_ref()
    }

    /// Samples per model call.
    pub fn batch(&self) -> usize {
        self.backend.max_batch()
    }

    /// The fastest forward time per row seen so far, in seconds (`None` before any call).
    pub fn forward_seconds_per_row(&self) -> Option<f64> {
        match self.forward_ns_per_row.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(ns as f64 * 1e-9),
        }
    }

    /// Backend calls that can run at once (one per thread where the backend runs
    /// single-threaded calls side by side), see [`Model::map_concurrent`].
    pub fn concurrent_calls(&self) -> usize {
        self.backend.concurrent_calls().max(1)
    }

    /// Samples worth handing [`Model::logits`] or [`Model::vjp`] in one call: a batch for
    /// every concurrent backend call, and at least 16 so that data streams in useful chunks.
    pub fn pass_rows(&self) -> usize {
        let unit = self.batch() * self.backend.concurrent_calls().max(1);
        unit * 16usize.div_ceil(unit)
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
            backend: self.backend.kind(),
            backend_detail: self.backend.describe(),
            threads: self.threads,
            batch: self.batch(),
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
        self.timed(|| self.logits_untimed(x, n))
    }

    /// Seconds spent inside [`Model::logits`] and [`Model::vjp`] since the model was opened,
    /// summed over the threads that made the calls (a call inside another counts once). A
    /// measure's time minus this is its own work: sampling, projections, bookkeeping.
    pub fn call_seconds(&self) -> f64 {
        self.call_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// Runs `f`, adding its wall time to [`Model::call_seconds`] unless this thread is
    /// already inside a timed call.
    fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        thread_local! {
            static IN_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        /// Clears the flag when the outermost call ends, even by a panic.
        struct Outermost;
        impl Drop for Outermost {
            fn drop(&mut self) {
                IN_CALL.with(|c| c.set(false));
            }
        }
        if IN_CALL.with(|c| c.replace(true)) {
            return f();
        }
        let _outermost = Outermost;
        let start = Instant::now();
        let out = f();
        self.call_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
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

    /// Row ranges `(start, rows)` covering `n` rows, at most `cap` each (a fixed batch
    /// overrides it); with `split`, split further, into as many chunks as the backend runs at
    /// once, when fewer would leave threads idle.
    fn row_chunks(&self, n: usize, cap: usize, split: bool) -> Vec<(usize, usize)> {
        let ways = if split {
            self.backend.concurrent_calls().max(1)
        } else {
            1
        };
        let chunk = match self.fixed_batch {
            // Every call runs the whole fixed batch: splitting it only adds padding.
            Some(b) => b,
            None => cap.min(n.div_ceil(ways)),
        }
        .max(1);
        (0..n)
            .step_by(chunk)
            .map(|start| (start, chunk.min(n - start)))
            .collect()
    }

    /// `f(start, rows)` on every chunk of [`Model::row_chunks`], concurrently where the backend
    /// allows; the results in row order, or the first error.
    fn map_chunks<T: Send>(
        &self,
        n: usize,
        cap: usize,
        split: bool,
        f: impl Fn(usize, usize) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        let chunks = self.row_chunks(n, cap, split);
        self.map_concurrent(chunks.len(), |c| f(chunks[c].0, chunks[c].1))
    }

    /// `f(0)`, …, `f(n − 1)`, as many at once as the backend runs concurrent calls (each model
    /// call inside then single-threaded), else one after another; the results in order, or
    /// the first error. For per-image work that calls the model on a row or two at a time.
    pub fn map_concurrent<T: Send>(
        &self,
        n: usize,
        f: impl Fn(usize) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        if n < 2 || self.backend.concurrent_calls() < 2 {
            return (0..n).map(f).collect();
        }
        let mut slots: Vec<Option<Result<T>>> = (0..n).map(|_| None).collect();
        let f = &f;
        let jobs: Vec<Job> = slots
            .iter_mut()
            .enumerate()
            .map(|(i, slot)| Box::new(move || *slot = Some(f(i))) as Job)
            .collect();
        self.backend.run_jobs(jobs);
        slots
            .into_iter()
            .map(|slot| slot.expect("every job ran"))
            .collect()
    }

    /// Runs the backend in chunks; pads chunks to a fixed batch when the file fixes one.
    fn run_raw(&self, x: &[f32], n: usize) -> Result<(Vec<usize>, Vec<f32>)> {
        let d = self.spec.sample_len();
        if x.len() != n * d {
            return Err(Error::Config(format!(
                "{} samples of {d} values expected, got {} values",
                n,
                x.len()
            )));
        }
        let batch = self.backend.max_batch();
        let start_time = Instant::now();
        let per_row = self.forward_ns_per_row.load(Ordering::Relaxed);
        let split = !self.backend.threads_each_call() || per_row * n as u64 >= SPLIT_MIN_NS;
        let parts = self.map_chunks(n, batch, split, |start, m| {
            let part = &x[start * d..(start + m) * d];
            // A fixed batch must be filled; tract compiles one plan per batch size,
            // so it gets a few power-of-two sizes only.
            let fill = match self.fixed_batch {
                Some(b) => Some(b),
                None if self.backend.kind() == BackendKind::Tract => {
                    Some(gradients::bucket(m, batch))
                }
                None => None,
            };
            let (s, v) = match fill {
                Some(b) if m < b => {
                    let mut padded = part.to_vec();
                    padded.resize(b * d, 0.0);
                    let (s, v) = self.backend.run_chunk(&padded, b)?;
                    let per = v.len() / b;
                    let mut s = s;
                    s[0] = m;
                    (s, v[..m * per].to_vec())
                }
                _ => self.backend.run_chunk(part, m)?,
            };
            if s.first().copied() != Some(m) {
                return Err(Error::NotAClassifier {
                    path: self.onnx.path.clone(),
                    reason: format!(
                        "its first output has shape {s:?} for a batch of {m}; georob needs (N, K)"
                    ),
                });
            }
            Ok((s, v))
        })?;
        let ns = start_time.elapsed().as_nanos() as u64 / n.max(1) as u64;
        self.forward_ns_per_row
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                (old == 0 || ns < old).then_some(ns.max(1))
            })
            .ok();
        let mut shape = parts.first().map(|(s, _)| s.clone()).unwrap_or_default();
        if let Some(b) = shape.first_mut() {
            *b = n;
        }
        let mut out = Vec::with_capacity(parts.iter().map(|(_, v)| v.len()).sum());
        for (_, v) in &parts {
            out.extend_from_slice(v);
        }
        Ok((shape, out))
    }
}

fn read_class_names(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
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
