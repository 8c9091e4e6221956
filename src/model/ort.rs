//! The ONNX Runtime backend (cargo feature `ort`), loaded at run time from the
//! shared library that [`super::ort_lib`] finds; optionally on CUDA.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;

use super::backend::{Backend, BackendKind, Device};
use super::ort_lib::OrtLibrary;
use crate::error::{Error, Result};

/// Runs an ONNX model with ONNX Runtime.
pub struct OrtBackend {
    path: PathBuf,
    session: Mutex<Session>,
    sample_shape: Vec<usize>,
    max_batch: usize,
    description: String,
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

impl OrtBackend {
    /// Creates a session for the ONNX bytes `model` (which came from `path`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: &Path,
        model: &[u8],
        sample_shape: Vec<usize>,
        batch: usize,
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
            let cuda = ort::ep::CUDA::default();
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
                .with_execution_providers([cuda.build().error_on_failure()])
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
        let description = format!(
            "onnxruntime ({}, {})",
            lib.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            if device == Device::Cuda {
                "CUDA"
            } else {
                "CPU"
            }
        );
        Ok(OrtBackend {
            path: path.to_path_buf(),
            session: Mutex::new(session),
            sample_shape,
            max_batch: batch.max(1),
            description,
        })
    }
}

impl Backend for OrtBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Ort
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn run_chunk(&self, x: &[f32], n: usize) -> Result<(Vec<usize>, Vec<f32>)> {
        let err = |reason: String| Error::Backend {
            path: self.path.clone(),
            backend: "ort",
            reason,
        };
        let mut shape = vec![n];
        shape.extend_from_slice(&self.sample_shape);
        let input = TensorRef::from_array_view((shape, x)).map_err(|e| err(e.to_string()))?;
        let mut session = self.session.lock().expect("ort session");
        let outputs = session
            .run(ort::inputs![input])
            .map_err(|e| err(e.to_string()))?;
        let (out_shape, values) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| err(format!("first output is not a float32 tensor: {e}")))?;
        let out_shape = out_shape.iter().map(|&d| d.max(0) as usize).collect();
        Ok((out_shape, values.to_vec()))
    }
}
