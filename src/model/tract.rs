//! The tract backend: pure Rust, always available when the `tract` feature is on.
//!
//! A plan is optimised for each concrete batch size it is asked to run (the
//! configured batch and, at most, the size of a last partial chunk), so that
//! tract sees no symbolic dimension at run time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;

use super::backend::{guarded, Backend, BackendKind};
use crate::error::{Error, Result};

type Plan = Arc<TypedRunnableModel>;

/// Runs an ONNX model with tract.
pub struct TractBackend {
    path: PathBuf,
    proto: tract_onnx::pb::ModelProto,
    sample_shape: Vec<usize>,
    max_batch: usize,
    plans: Mutex<HashMap<usize, Plan>>,
}

impl TractBackend {
    /// Prepares `proto` for inputs of `sample_shape` (without batch).
    /// `threads` sets tract's global thread pool.
    pub fn new(
        path: PathBuf,
        proto: tract_onnx::pb::ModelProto,
        sample_shape: Vec<usize>,
        batch: usize,
        threads: usize,
    ) -> Result<Self> {
        use tract_linalg::multithread::{set_default_executor, Executor};
        if threads > 1 {
            set_default_executor(Executor::multithread(threads));
        } else {
            set_default_executor(Executor::SingleThread);
        }
        let backend = TractBackend {
            path,
            proto,
            sample_shape,
            max_batch: batch.max(1),
            plans: Mutex::new(HashMap::new()),
        };
        // Build the main plan now so that unsupported models fail at load time.
        backend.plan(backend.max_batch)?;
        Ok(backend)
    }

    fn plan(&self, n: usize) -> Result<Plan> {
        if let Some(p) = self.plans.lock().expect("plan cache").get(&n) {
            return Ok(p.clone());
        }
        let mut shape = vec![n];
        shape.extend_from_slice(&self.sample_shape);
        let proto = &self.proto;
        let plan = guarded(|| -> TractResult<Plan> {
            tract_onnx::onnx()
                .model_for_proto_model(proto)?
                .with_input_fact(0, f32::fact(&shape).into())?
                .into_optimized()?
                .into_runnable()
        })
        .and_then(|r| r.map_err(|e| format!("{e:#}")))
        .map_err(|reason| self.error(reason))?;
        self.plans
            .lock()
            .expect("plan cache")
            .insert(n, plan.clone());
        Ok(plan)
    }

    fn error(&self, reason: String) -> Error {
        Error::Backend {
            path: self.path.clone(),
            backend: "tract",
            reason,
        }
    }
}

impl Backend for TractBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Tract
    }

    fn describe(&self) -> String {
        "tract (CPU, pure Rust)".to_string()
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn run_chunk(&self, x: &[f32], n: usize) -> Result<(Vec<usize>, Vec<f32>)> {
        let plan = self.plan(n)?;
        let mut shape = vec![n];
        shape.extend_from_slice(&self.sample_shape);
        let out = guarded(|| -> TractResult<(Vec<usize>, Vec<f32>)> {
            let input = Tensor::from_shape(&shape, x)?;
            let outputs = plan.run(tvec!(input.into()))?;
            let t = outputs[0].clone().into_tensor();
            let t = t.cast_to::<f32>()?;
            let view = t.try_as_plain_ram()?;
            Ok((t.shape().to_vec(), view.as_slice::<f32>()?.to_vec()))
        })
        .and_then(|r| r.map_err(|e| format!("{e:#}")))
        .map_err(|reason| self.error(reason))?;
        Ok(out)
    }
}
