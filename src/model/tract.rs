//! The tract backend: pure Rust, always available when the `tract` feature is on.
//!
//! A plan is optimised for each concrete batch size it is asked to run, so
//! that tract sees no symbolic dimension at run time; the model wrapper only
//! asks for a few sizes (powers of two up to the batch).
//!
//! With several threads, calls on separate row chunks run at once, one thread each: tract
//! threads its matrix products only, so im2col, col2im and elementwise work would otherwise
//! run on one core while the other threads wait for the next matrix product. A lone call
//! still threads its matrix products over the same pool.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use rayon::prelude::*;
use tract_linalg::multithread::{multithread_tract_scope, set_default_executor, Executor};

use super::backend::{guarded, Backend, BackendKind, GraphSession, Job};
use crate::error::{Error, Result};
use crate::grad::CotangentLayout;

type Plan = Arc<TypedRunnableModel>;

/// Runs an ONNX model with tract.
pub struct TractBackend {
    path: PathBuf,
    proto: ModelProto,
    sample_shape: Vec<usize>,
    max_batch: usize,
    plans: Mutex<HashMap<usize, Plan>>,
    /// The threads (`None` for one): concurrent calls, or one call's matrix products.
    pool: Option<Arc<rayon::ThreadPool>>,
}

/// A tract plan of a graph whose inputs have concrete shapes.
struct TractGraph {
    path: PathBuf,
    plan: Plan,
}

fn backend_error(path: &std::path::Path, reason: String) -> Error {
    Error::Backend {
        path: path.to_path_buf(),
        backend: "tract",
        reason,
    }
}

/// Graphs of more nodes than this are optimised within a budget (see [`optimise`]).
const LARGE_GRAPH: usize = 3_000;
/// Patches tract's optimiser may apply to a large graph, times its node count.
const PATCH_BUDGET: usize = 20_000_000;

/// Declutters and optimises `typed` for tract. Tract's optimiser applies one patch at a time,
/// and each patch, like each attempt of its axis-changing pass, walks the whole graph, while
/// a graph takes a few patches per node: the cost grows with the square of the node count or
/// faster (a chain of 2,000 `Relu`: 5 s; the gradient graph of a chain of 1,000, 6,000 nodes:
/// 13 s; of 2,000: 61 s). A graph of more than [`LARGE_GRAPH`] nodes is therefore optimised
/// without the axis-changing pass and with at most `PATCH_BUDGET / nodes` patches per stage;
/// what is left runs as it is, the same function, slower per call. The choice depends on the
/// node count only, so a model gets the same plan on every run.
fn optimise(mut typed: TypedModel) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::optim::Optimizer;
    let nodes = typed.nodes.len();
    let large = nodes > LARGE_GRAPH;
    let budget = |o: Optimizer| {
        if large {
            o.stopping_at(PATCH_BUDGET / nodes)
        } else {
            o
        }
    };
    let mut declutter = Optimizer::declutter();
    if large {
        declutter
            .passes
            .retain(|p| !format!("{p:?}").starts_with("ChangeAxes"));
    }
    typed.optimize_with_session(&mut budget(declutter).session())?;
    typed.optimize_with_session(&mut budget(Optimizer::codegen()).session())?;
    Ok(typed)
}

/// Optimises `proto`, with input 0 fixed to `shape` when given; then every tensor of known
/// shape must fit under the memory limit before tract optimises the graph
/// (which allocates some of them: im2col offsets of a convolution, constants folded).
fn compile(path: &std::path::Path, proto: &ModelProto, shape: Option<&[usize]>) -> Result<Plan> {
    let typed = guarded(|| -> TractResult<TypedModel> {
        let mut model = match shape {
            // Shape annotations of intermediates and outputs name the batch
            // dimension (`N`) and would clash with the concrete batch:
            // drop them and let tract infer every shape from the input.
            Some(_) => {
                let mut proto = proto.clone();
                if let Some(g) = proto.graph.as_mut() {
                    g.value_info.clear();
                    for o in &mut g.output {
                        o.r#type = None;
                    }
                }
                tract_onnx::onnx().model_for_proto_model(&proto)?
            }
            None => tract_onnx::onnx().model_for_proto_model(proto)?,
        };
        if let Some(shape) = shape {
            model = model.with_input_fact(0, f32::fact(shape).into())?;
        }
        model.into_typed()
    })
    .and_then(|r| r.map_err(|e| format!("{e:#}")))
    .map_err(|reason| backend_error(path, reason))?;
    crate::limits::check_typed_model(&typed)
        .map_err(|why| Error::Config(format!("{}: {why}", path.display())))?;
    guarded(|| optimise(typed)?.into_runnable())
        .and_then(|r| r.map_err(|e| format!("{e:#}")))
        .map_err(|reason| backend_error(path, reason))
}

fn run_plan(
    path: &std::path::Path,
    plan: &Plan,
    inputs: &[(&[f32], &[usize])],
) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
    guarded(|| -> TractResult<Vec<(Vec<usize>, Vec<f32>)>> {
        let tensors = inputs
            .iter()
            .map(|(data, shape)| Ok(Tensor::from_shape(shape, data)?.into()))
            .collect::<TractResult<TVec<TValue>>>()?;
        let outputs = plan.run(tensors)?;
        outputs
            .iter()
            .map(|o| {
                let t = o.cast_to::<f32>()?;
                let view = t.try_as_plain_ram()?;
                Ok((t.shape().to_vec(), view.as_slice::<f32>()?.to_vec()))
            })
            .collect()
    })
    .and_then(|r| r.map_err(|e| format!("{e:#}")))
    .map_err(|reason| backend_error(path, reason))
}

impl TractBackend {
    /// Prepares `proto` for inputs of `sample_shape` (without batch).
    /// `threads` sets tract's global thread pool.
    pub fn new(
        path: PathBuf,
        proto: ModelProto,
        sample_shape: Vec<usize>,
        batch: usize,
        threads: usize,
    ) -> Result<Self> {
        let pool = if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("georob-tract-{i}"))
                .build()
                .map_err(|e| {
                    backend_error(&path, format!("cannot start {threads} threads: {e}"))
                })?;
            Some(Arc::new(pool))
        } else {
            None
        };
        set_default_executor(match &pool {
            Some(pool) => Executor::MultiThread(pool.clone()),
            None => Executor::SingleThread,
        });
        Ok(TractBackend {
            path,
            proto,
            sample_shape,
            max_batch: batch.max(1),
            plans: Mutex::new(HashMap::new()),
            pool,
        })
    }

    fn plan(&self, n: usize) -> Result<Plan> {
        if let Some(p) = self.plans.lock().expect("plan cache").get(&n) {
            return Ok(p.clone());
        }
        // Compiled without holding the lock: a thread waiting inside the pool may run another
        // call's job, which would then wait for the lock forever.
        let mut shape = vec![n];
        shape.extend_from_slice(&self.sample_shape);
        let plan = compile(&self.path, &self.proto, Some(&shape))?;
        let mut plans = self.plans.lock().expect("plan cache");
        Ok(plans.entry(n).or_insert(plan).clone())
    }
}

/// Input size (values per sample) from which tract's gradient graphs run one backward pass per
/// cotangent: split wins clearly on photos (EfficientNet-Lite0 at 3×224×224), while at 3×32×32
/// and on the digits CNN (28×28) it gains nothing or loses (see `cotangent_layout` below).
const SPLIT_FROM: usize = 3 * 64 * 64;

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
        let mut out = run_plan(&self.path, &plan, &[(x, &shape)])?;
        Ok(out.swap_remove(0))
    }

    fn load_graph(&self, proto: &ModelProto) -> Result<Box<dyn GraphSession>> {
        Ok(Box::new(TractGraph {
            path: self.path.clone(),
            plan: compile(&self.path, proto, None)?,
        }))
    }

    fn concurrent_calls(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.current_num_threads())
    }

    /// One backward pass per cotangent for inputs of [`SPLIT_FROM`] values or more, batched
    /// below. Batched, tract moves the channel axis of every 1×1 convolution last and back, a
    /// copy that grows with the activations; split, the graph has a backward pass per
    /// cotangent, whose fixed cost per node dominates on small inputs.
    fn cotangent_layout(&self, _model: &ModelProto) -> CotangentLayout {
        match self.sample_shape.iter().product::<usize>() >= SPLIT_FROM {
            true => CotangentLayout::Split,
            false => CotangentLayout::Batched,
        }
    }

    fn in_job(&self) -> bool {
        self.pool
            .as_ref()
            .is_some_and(|p| p.current_thread_index().is_some())
    }

    fn run_jobs<'a>(&self, jobs: Vec<Job<'a>>) {
        match &self.pool {
            Some(pool) if jobs.len() > 1 => pool.install(|| {
                jobs.into_par_iter()
                    .for_each(|job| multithread_tract_scope(Executor::SingleThread, job))
            }),
            _ => jobs.into_iter().for_each(|job| job()),
        }
    }
}

impl GraphSession for TractGraph {
    fn run(&self, inputs: &[(&[f32], &[usize])]) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
        run_plan(&self.path, &self.plan, inputs)
    }
}
