//! The one small trait every inference backend implements, and the choices a
//! user makes between backends and devices.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::grad::CotangentLayout;

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// tract: pure Rust, embedded.
    Tract,
    /// ONNX Runtime, loaded at run time through the `ort` crate.
    Ort,
}

impl BackendKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::Ort => "ort",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The user's backend request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// ONNX Runtime when its library is found, else tract.
    #[default]
    Auto,
    /// Exactly this backend.
    Exactly(BackendKind),
}

impl std::str::FromStr for BackendChoice {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "tract" => Ok(BackendChoice::Exactly(BackendKind::Tract)),
            "ort" | "onnxruntime" => Ok(BackendChoice::Exactly(BackendKind::Ort)),
            _ => Err(crate::Error::Config(format!(
                "unknown backend {s:?}: use auto, tract or ort"
            ))),
        }
    }
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The CPU.
    #[default]
    Cpu,
    /// An NVIDIA GPU through ONNX Runtime's CUDA execution provider.
    Cuda,
}

impl std::str::FromStr for Device {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            _ => Err(crate::Error::Config(format!(
                "unknown device {s:?}: use cpu or cuda"
            ))),
        }
    }
}

/// An inference engine holding one model, ready to run batches.
///
/// Inputs are float32 batches in the model's own layout; outputs are the
/// model's first output, `(n, ...)`.
pub trait Backend: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Human-readable description (engine, version, device).
    fn describe(&self) -> String;
    /// Largest batch one call to [`Backend::run_chunk`] accepts.
    fn max_batch(&self) -> usize;
    /// Runs `n ≤ max_batch()` samples stored contiguously in `x`; returns the
    /// first output's shape (first dimension `n`) and its values.
    fn run_chunk(&self, x: &[f32], n: usize) -> Result<(Vec<usize>, Vec<f32>)>;
    /// Loads a gradient graph (concrete shapes) on the same engine, with the
    /// same threads and device.
    fn load_graph(&self, proto: &tract_onnx::pb::ModelProto) -> Result<Box<dyn GraphSession>>;
    /// How many calls on separate row chunks should run at once. Above 1, the model wrapper
    /// splits work into that many chunks and hands them to [`Backend::run_jobs`]; at 1, each
    /// call uses the backend's threads itself.
    fn concurrent_calls(&self) -> usize {
        1
    }
    /// Whether one call on a whole chunk already uses every thread well (ONNX Runtime's
    /// intra-op pool). Then forward calls too small to repay a split into concurrent chunks
    /// run whole (see [`super::Model::logits`]).
    fn threads_each_call(&self) -> bool {
        false
    }
    /// Runs `jobs` (calls on separate row chunks), up to [`Backend::concurrent_calls`] at once.
    fn run_jobs<'a>(&self, jobs: Vec<Job<'a>>) {
        jobs.into_iter().for_each(|job| job());
    }
    /// Whether the calling thread runs one of [`Backend::run_jobs`]'s jobs.
    fn in_job(&self) -> bool {
        false
    }
    /// How this backend's gradient graphs of `model` lay out the `M` cotangents of a sample.
    fn cotangent_layout(&self, _model: &tract_onnx::pb::ModelProto) -> CotangentLayout {
        CotangentLayout::Batched
    }
}

/// One backend call on a chunk of rows, with its result stored by the closure itself.
pub type Job<'a> = Box<dyn FnOnce() + Send + 'a>;

/// A loaded ONNX graph with float32 inputs and outputs of fixed shapes.
pub trait GraphSession: Send + Sync {
    /// Runs the graph on `inputs` (data and shape, in graph input order) and
    /// returns every output (shape and data, in graph output order).
    fn run(&self, inputs: &[(&[f32], &[usize])]) -> Result<Vec<(Vec<usize>, Vec<f32>)>>;
}

/// Runs `f`, turning a panic inside a backend into an error message, so that a
/// malformed model yields a clean error instead of aborting the program.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    QUIET_PANICS.with(|q| q.set(q.get() + 1));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(q.get() - 1));
    r.map_err(|payload| {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        format!("internal error in the backend: {msg}")
    })
}

thread_local! {
    static QUIET_PANICS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Installs a panic hook that stays silent for panics caught by the backend
/// guard (they become errors) and keeps the default report for all others.
pub fn install_quiet_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if QUIET_PANICS.with(|q| q.get()) == 0 {
            default(info);
        }
    }));
}
