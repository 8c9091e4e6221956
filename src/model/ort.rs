//! The ONNX Runtime backend (cargo feature `ort`), loaded at run time from the
//! shared library that [`super::ort_lib`] finds; optionally on CUDA.
//!
//! On the CPU with several threads, calls on separate row chunks run at once, one per thread,
//! each on its own single-threaded session of the graph (made on first use): ONNX Runtime's
//! intra-op threads gain little or nothing within one call on these models, while separate
//! calls keep every thread busy. A lone call runs on a session with every thread.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use ort::environment::{Environment, GlobalThreadPoolOptions};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use prost::Message;

use super::backend::{Backend, BackendKind, Device, GraphSession, Job};
use super::ort_lib::OrtLibrary;
use crate::error::{Error, Result};
use crate::grad::CotangentLayout;

/// Input size (values per sample) from which ONNX Runtime's gradient graphs of networks with
/// ReLU6 activations run one backward pass per cotangent ([`OrtBackend::cotangent_layout`]).
const SPLIT_FROM: usize = 3 * 128 * 128;

/// Runs an ONNX model with ONNX Runtime.
pub struct OrtBackend {
    graph: OrtGraph,
    sample_shape: Vec<usize>,
    max_batch: usize,
    threads: usize,
    device: Device,
    lib: OrtLibrary,
    /// Threads for concurrent calls (CPU, more than one thread only).
    pool: Option<Arc<rayon::ThreadPool>>,
}

/// One graph: a session with every thread, and one single-threaded session per thread of
/// the pool, made when that thread first runs the graph. Where there is a pool the wide
/// session is made on first use (work spread over the pool never needs it: a corruption run
/// never does, and making a session of a large gradient graph such as EfficientNet-Lite0's is
/// slow); without one, at once (every call is then wide).
struct OrtGraph {
    path: PathBuf,
    model: Vec<u8>,
    threads: usize,
    device: Device,
    lib: OrtLibrary,
    kind: GraphKind,
    wide: Mutex<Option<Session>>,
    pool: Option<Arc<rayon::ThreadPool>>,
    narrow: Vec<Mutex<Option<Session>>>,
}

/// What an [`OrtGraph`] holds, which decides how its sessions are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GraphKind {
    /// The model's own graph: its sessions have ONNX Runtime's defaults.
    Model,
    /// A gradient graph: its sessions plan no memory pattern. The pattern is a block per
    /// session sized for the whole run; without it the arena alone serves the tensors, which on
    /// EfficientNet-Lite0's `M = 9` graph kept peak memory lower at no cost in speed.
    Gradient,
}

/// The process-wide ONNX Runtime environment (the library can be loaded once), with the
/// library's path and the size of its shared intra-op thread pool.
static ENVIRONMENT: OnceLock<std::result::Result<(Environment, PathBuf, usize), String>> =
    OnceLock::new();

/// The environment, made on first use with a global intra-op pool of `threads` threads
/// (when more than one). Every multi-threaded session of that size runs on the one pool: each
/// session with its own pool left that pool's threads spinning after a run, and calls that
/// alternate between graphs (a forward call, then a gradient call) competed with those
/// spinning threads and ran much slower. Returns the pool's size.
fn environment(lib: &OrtLibrary, threads: usize) -> Result<(&'static Environment, usize)> {
    let unavailable = |reason: String| Error::BackendUnavailable {
        backend: "ort",
        reason,
    };
    let entry = ENVIRONMENT.get_or_init(|| {
        let builder = ort::init_from(&lib.path).map_err(|e| {
            format!(
                "cannot load {} (found via {}): {e}",
                lib.path.display(),
                lib.source
            )
        })?;
        let mut builder = builder.with_name("georob");
        if threads > 1 {
            let pool = GlobalThreadPoolOptions::default()
                .with_intra_threads(threads)
                .and_then(|p| p.with_inter_threads(1))
                .map_err(|e| format!("{}: {e}", lib.path.display()))?;
            builder = builder.with_global_thread_pool(pool);
        }
        builder
            .build()
            .map(|env| (env, lib.path.clone(), threads.max(1)))
            .map_err(|e| format!("{}: {e}", lib.path.display()))
    });
    match entry {
        Ok((env, loaded, pool)) if loaded == &lib.path => Ok((env, *pool)),
        Ok((_, loaded, _)) => Err(unavailable(format!(
            "ONNX Runtime is already loaded from {}; one process cannot load a second library ({})",
            loaded.display(),
            lib.path.display()
        ))),
        Err(e) => Err(unavailable(e.clone())),
    }
}

impl OrtGraph {
    fn new(
        path: &Path,
        model: Vec<u8>,
        threads: usize,
        device: Device,
        lib: &OrtLibrary,
        pool: Option<Arc<rayon::ThreadPool>>,
        kind: GraphKind,
    ) -> Result<Self> {
        let wide = match pool.is_none() {
            true => Some(session(path, &model, threads, device, lib, kind)?),
            false => None,
        };
        let narrow = pool.as_ref().map_or(0, |p| p.current_num_threads());
        Ok(OrtGraph {
            path: path.to_path_buf(),
            model,
            threads,
            device,
            lib: lib.clone(),
            kind,
            wide: Mutex::new(wide),
            pool,
            narrow: (0..narrow).map(|_| Mutex::new(None)).collect(),
        })
    }
}

/// A session for the ONNX bytes `model` (a graph of `kind`) with `threads` intra-op threads on
/// `device`: the environment's shared pool when it has that many threads, else a pool of its own.
fn session(
    path: &Path,
    model: &[u8],
    threads: usize,
    device: Device,
    lib: &OrtLibrary,
    kind: GraphKind,
) -> Result<Session> {
    let (env, pool) = environment(lib, threads)?;
    let backend_err = |reason: String| Error::Backend {
        path: path.to_path_buf(),
        backend: "ort",
        reason,
    };
    let mut builder = Session::builder(env).map_err(|e| backend_err(e.to_string()))?;
    if threads.max(1) != pool || pool == 1 {
        builder = builder
            .with_independent_thread_pool()
            .map_err(|e| backend_err(e.to_string()))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| backend_err(e.to_string()))?;
    }
    if kind == GraphKind::Gradient {
        builder = builder
            .with_memory_pattern(false)
            .map_err(|e| backend_err(e.to_string()))?;
    }
    if device == Device::Cuda {
        let compiled =
            <ort::ep::CUDA as ort::ep::ExecutionProvider>::is_available().unwrap_or(false);
        if !compiled {
            return Err(Error::BackendUnavailable {
                    backend: "ort",
                    reason: format!(
                        "--device cuda: the ONNX Runtime library {} has no CUDA execution provider; install onnxruntime-gpu and point --ort-lib at its library",
                        lib.path.display()
                    ),
                });
        }
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| Error::BackendUnavailable {
                backend: "ort",
                reason: format!("--device cuda: the CUDA execution provider failed to start: {e}"),
            })?;
    }
    builder
        .commit_from_memory(model)
        .map_err(|e| backend_err(e.to_string()))
}

impl GraphSession for OrtGraph {
    fn run(&self, inputs: &[(&[f32], &[usize])]) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
        let err = |reason: String| Error::Backend {
            path: self.path.clone(),
            backend: "ort",
            reason,
        };
        let values = inputs
            .iter()
            .map(|(data, shape)| {
                TensorRef::from_array_view((shape.to_vec(), *data))
                    .map(SessionInputValue::from)
                    .map_err(|e| err(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let slot = self
            .pool
            .as_ref()
            .and_then(|p| p.current_thread_index())
            .and_then(|i| self.narrow.get(i));
        let (mut wide, mut narrow);
        let session = match slot {
            Some(slot) => {
                narrow = slot.lock().expect("ort session");
                if narrow.is_none() {
                    *narrow = Some(session(
                        &self.path,
                        &self.model,
                        1,
                        self.device,
                        &self.lib,
                        self.kind,
                    )?);
                }
                narrow.as_mut().expect("session just made")
            }
            None => {
                wide = self.wide.lock().expect("ort session");
                if wide.is_none() {
                    *wide = Some(session(
                        &self.path,
                        &self.model,
                        self.threads,
                        self.device,
                        &self.lib,
                        self.kind,
                    )?);
                }
                wide.as_mut().expect("session just made")
            }
        };
        let outputs = session.run(&values[..]).map_err(|e| err(e.to_string()))?;
        outputs
            .values()
            .map(|v| {
                let (shape, data) = v
                    .try_extract_tensor::<f32>()
                    .map_err(|e| err(format!("an output is not a float32 tensor: {e}")))?;
                Ok((
                    shape.iter().map(|&d| d.max(0) as usize).collect(),
                    data.to_vec(),
                ))
            })
            .collect()
    }
}

impl OrtBackend {
    /// Creates a session for the ONNX bytes `model` (which came from `path`).
    pub fn new(
        path: &Path,
        model: &[u8],
        sample_shape: Vec<usize>,
        batch: usize,
        threads: usize,
        device: Device,
        lib: &OrtLibrary,
    ) -> Result<Self> {
        let pool = if device == Device::Cpu && threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("georob-ort-{i}"))
                .build()
                .map_err(|e| Error::Backend {
                    path: path.to_path_buf(),
                    backend: "ort",
                    reason: format!("cannot start {threads} threads: {e}"),
                })?;
            Some(Arc::new(pool))
        } else {
            None
        };
        Ok(OrtBackend {
            graph: OrtGraph::new(
                path,
                model.to_vec(),
                threads,
                device,
                lib,
                pool.clone(),
                GraphKind::Model,
            )?,
            sample_shape,
            max_batch: batch.max(1),
            threads,
            device,
            lib: lib.clone(),
            pool,
        })
    }
}

/// The cotangent layout of [`OrtBackend::cotangent_layout`] for `model` on `device` with
/// `sample_values` values per input sample.
fn layout_for(
    device: Device,
    sample_values: usize,
    model: &tract_onnx::pb::ModelProto,
) -> CotangentLayout {
    let clipped = model
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .any(|n| n.op_type == "Clip");
    match device == Device::Cpu && sample_values >= SPLIT_FROM && clipped {
        true => CotangentLayout::Split,
        false => CotangentLayout::Batched,
    }
}

impl Backend for OrtBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Ort
    }

    fn describe(&self) -> String {
        format!(
            "onnxruntime ({}, {})",
            self.lib
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            if self.device == Device::Cuda {
                "CUDA"
            } else {
                "CPU"
            }
        )
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn run_chunk(&self, x: &[f32], n: usize) -> Result<(Vec<usize>, Vec<f32>)> {
        let mut shape = vec![n];
        shape.extend_from_slice(&self.sample_shape);
        let mut out = self.graph.run(&[(x, &shape)])?;
        Ok(out.swap_remove(0))
    }

    fn load_graph(&self, proto: &tract_onnx::pb::ModelProto) -> Result<Box<dyn GraphSession>> {
        Ok(Box::new(OrtGraph::new(
            &self.graph.path,
            proto.encode_to_vec(),
            self.threads,
            self.device,
            &self.lib,
            self.pool.clone(),
            GraphKind::Gradient,
        )?))
    }

    fn concurrent_calls(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.current_num_threads())
    }

    fn threads_each_call(&self) -> bool {
        self.pool.is_some()
    }

    /// Batched, except on the CPU for inputs of [`SPLIT_FROM`] values or more to networks with
    /// ReLU6 activations (`Clip`: MobileNetV2, EfficientNet-Lite). There the batched layout
    /// multiplies the cotangents by masks broadcast over the `M` copies, which ONNX Runtime
    /// cannot keep in its blocked NCHWc layout: it reorders around every mask product. In the
    /// split layout the mask products have equal shapes and stay in NCHWc. Split wins on
    /// EfficientNet-Lite0 and MobileNetV2 at 224×224; ResNet-18, ShuffleNetV2 and
    /// MobileNetV3-Large at 224×224 lose with it, and so does every model below 128×128
    /// (docs/gradients.md, `georob export-grad`).
    fn cotangent_layout(&self, model: &tract_onnx::pb::ModelProto) -> CotangentLayout {
        layout_for(self.device, self.sample_shape.iter().product(), model)
    }

    fn in_job(&self) -> bool {
        self.pool
            .as_ref()
            .is_some_and(|p| p.current_thread_index().is_some())
    }

    fn run_jobs<'a>(&self, jobs: Vec<Job<'a>>) {
        match &self.pool {
            Some(pool) if jobs.len() > 1 => {
                pool.install(|| jobs.into_par_iter().for_each(|job| job()))
            }
            _ => jobs.into_iter().for_each(|job| job()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx::OnnxModel;

    fn proto(rel: &str) -> tract_onnx::pb::ModelProto {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("onnx_models")
            .join(rel);
        OnnxModel::open(&path).expect("bundled model").proto
    }

    #[test]
    fn split_layout_only_for_large_inputs_to_relu6_networks_on_the_cpu() {
        let effnet = proto("efficientnet_lite0/efficientnet_lite0.onnx");
        let digits = proto("digits/digits_cnn.onnx");
        let photo = 3 * 224 * 224;
        assert_eq!(
            layout_for(Device::Cpu, photo, &effnet),
            CotangentLayout::Split
        );
        // Below 3×128×128 values, on CUDA, or without ReLU6 (`Clip`): batched.
        assert_eq!(
            layout_for(Device::Cpu, 3 * 96 * 96, &effnet),
            CotangentLayout::Batched
        );
        assert_eq!(
            layout_for(Device::Cuda, photo, &effnet),
            CotangentLayout::Batched
        );
        assert_eq!(
            layout_for(Device::Cpu, photo, &digits),
            CotangentLayout::Batched
        );
    }
}
