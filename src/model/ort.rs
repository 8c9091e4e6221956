//! The ONNX Runtime backend (cargo feature `ort`), loaded at run time from the
//! shared library that [`super::ort_lib`] finds; optionally on CUDA.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use prost::Message;

use super::backend::{Backend, BackendKind, Device, GraphSession};
use super::ort_lib::OrtLibrary;
use crate::error::{Error, Result};

/// Runs an ONNX model with ONNX Runtime.
pub struct OrtBackend {
    graph: OrtGraph,
    sample_shape: Vec<usize>,
    max_batch: usize,
    threads: usize,
    device: Device,
    lib: OrtLibrary,
}

/// One ONNX Runtime session.
struct OrtGraph {
    path: PathBuf,
    session: Mutex<Session>,
}

/// The process-wide ONNX Runtime environment: the library can be loaded once.
static ENVIRONMENT: OnceLock<std::result::Result<(Environment, PathBuf), String>> = OnceLock::new();

fn environment(lib: &OrtLibrary) -> Result<&'static Environment> {
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
        builder
            .with_name("georob")
            .build()
            .map(|env| (env, lib.path.clone()))
            .map_err(|e| format!("{}: {e}", lib.path.display()))
    });
    match entry {
        Ok((env, loaded)) if loaded == &lib.path => Ok(env),
        Ok((_, loaded)) => Err(unavailable(format!(
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
        model: &[u8],
        threads: usize,
        device: Device,
        lib: &OrtLibrary,
    ) -> Result<Self> {
        let env = environment(lib)?;
        let backend_err = |reason: String| Error::Backend {
            path: path.to_path_buf(),
            backend: "ort",
            reason,
        };
        let mut builder = Session::builder(env)
            .map_err(|e| backend_err(e.to_string()))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| backend_err(e.to_string()))?;
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
                    reason: format!(
                        "--device cuda: the CUDA execution provider failed to start: {e}"
                    ),
                })?;
        }
        let session = builder
            .commit_from_memory(model)
            .map_err(|e| backend_err(e.to_string()))?;
        Ok(OrtGraph {
            path: path.to_path_buf(),
            session: Mutex::new(session),
        })
    }
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
        let mut session = self.session.lock().expect("ort session");
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
        Ok(OrtBackend {
            graph: OrtGraph::new(path, model, threads, device, lib)?,
            sample_shape,
            max_batch: batch.max(1),
            threads,
            device,
            lib: lib.clone(),
        })
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
            &proto.encode_to_vec(),
            self.threads,
            self.device,
            &self.lib,
        )?))
    }
}
