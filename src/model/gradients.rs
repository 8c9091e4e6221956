//! Input gradients of a loaded model: exact ones from the gradient graph
//! ([`crate::grad`]) run on the model's own backend, or batched central
//! finite differences when the graph has an operator without a VJP rule (or
//! when asked).
//!
//! Graphs are built lazily per `(rows, M)` and cached; row counts are rounded
//! up to a power of two (at most the batch size) so that a shrinking set of
//! active images reuses a few graphs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::backend::GraphSession;
use super::{Model, OutputTransform};
use crate::error::{Error, Result};
use crate::grad::{self, GradError};

/// How gradients are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GradientMode {
    /// From the differentiated ONNX graph.
    Exact,
    /// Central finite differences of the logits.
    FiniteDifference,
}

impl std::fmt::Display for GradientMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GradientMode::Exact => "exact",
            GradientMode::FiniteDifference => "finite-difference",
        })
    }
}

/// The user's gradient request (`--gradient`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GradientChoice {
    /// Exact when every operator has a rule, else finite differences with a warning.
    #[default]
    Auto,
    /// Exact or an error naming the operators without a rule.
    Exact,
    /// Always finite differences.
    Fd,
}

impl std::str::FromStr for GradientChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(GradientChoice::Auto),
            "exact" => Ok(GradientChoice::Exact),
            "fd" | "finite-difference" => Ok(GradientChoice::Fd),
            _ => Err(Error::Config(format!(
                "unknown gradient mode {s:?}: use auto, exact or fd"
            ))),
        }
    }
}

/// Gradient state of a model: the mode in force and the cached graphs.
pub(crate) struct GradientState {
    choice: GradientChoice,
    /// Fewest rows a graph is built for: 2 when the builder cannot tell the batch axis apart
    /// from other axes of size 1 at one row (attention blocks of ViT and Swin); single rows are
    /// then padded.
    min_rows: std::sync::atomic::AtomicUsize,
    mode: Mutex<Option<(GradientMode, Option<String>)>>,
    graphs: Mutex<HashMap<(usize, usize), Arc<dyn GraphSession>>>,
    /// Probe runs by row count: one serves the graphs of every `M` at that many rows.
    probes: Mutex<HashMap<usize, grad::ProbedShape>>,
}

impl GradientState {
    pub fn new(choice: GradientChoice) -> Self {
        GradientState {
            choice,
            min_rows: std::sync::atomic::AtomicUsize::new(1),
            mode: Mutex::new(None),
            graphs: Mutex::new(HashMap::new()),
            probes: Mutex::new(HashMap::new()),
        }
    }
}

/// Smallest power of two ≥ `n`, capped at `max` (and never below `n` when `n > max`).
pub(crate) fn bucket(n: usize, max: usize) -> usize {
    n.next_power_of_two().min(max).max(n)
}

/// Logits `(n, K)` and input gradients `(n, M, d)` of one VJP call.
type LogitsAndGrads = (Vec<f32>, Vec<f32>);

impl Model {
    /// The gradient mode if it has been decided ([`Model::gradient_mode`]), without deciding it.
    pub fn gradient_mode_decided(&self) -> Option<GradientMode> {
        let mode = self.gradients.mode.lock().expect("gradient mode");
        mode.as_ref().map(|(m, _)| *m)
    }

    /// The gradient mode in force, and why finite differences are used when
    /// they are (the one-line warning `--gradient auto` prints).
    pub fn gradient_mode(&self) -> Result<(GradientMode, Option<String>)> {
        if let Some(m) = self.gradients.mode.lock().expect("gradient mode").as_ref() {
            return Ok(m.clone());
        }
        // Decided without holding the lock: a thread that waits inside a build (rayon) may
        // run another job that asks for the mode. Two first callers may both decide; the
        // first answer stays.
        let decided = match self.gradients.choice {
            GradientChoice::Fd => (GradientMode::FiniteDifference, None),
            choice => {
                // Emitting the graph at one row and one class checks every rule and shape; where
                // one row is ambiguous (a batch axis of size 1 among others), two rows decide.
                // The backend compiles only the graphs that calls need: compiling is costly,
                // and some are never run (DeepFool never runs the M = 1 graph).
                let first = self.emit_graph(1, 1);
                let built = match first {
                    Err(GraphFailure::Grad(_)) if self.fixed_batch.is_none() => self
                        .emit_graph(2, 1)
                        .map(|_| 2)
                        .map_err(|_| first.expect_err("first build failed")),
                    other => other.map(|_| 1),
                };
                match built {
                    Ok(rows) => {
                        self.gradients
                            .min_rows
                            .store(rows, std::sync::atomic::Ordering::Relaxed);
                        (GradientMode::Exact, None)
                    }
                    Err(GraphFailure::Grad(e)) if choice == GradientChoice::Auto => (
                        GradientMode::FiniteDifference,
                        Some(format!(
                            "{}: exact gradients unavailable ({e}); using finite differences, \
                             {} forward passes per image and gradient (2 per input value): \
                             slow on large inputs",
                            self.onnx.path.display(),
                            2 * self.spec.sample_len()
                        )),
                    ),
                    Err(GraphFailure::Grad(e)) => {
                        return Err(Error::Backend {
                            path: self.onnx.path.clone(),
                            backend: "gradient",
                            reason: format!("--gradient exact: {e}"),
                        })
                    }
                    Err(GraphFailure::Other(e)) => return Err(e),
                }
            }
        };
        let mut mode = self.gradients.mode.lock().expect("gradient mode");
        Ok(mode.get_or_insert(decided).clone())
    }

    /// Rows per backend call of a gradient call with `m` cotangents (fewer when the model
    /// fixes its batch): the backward pass runs `m·rows` rows, kept within a batch.
    /// Activations of `m·batch` rows leave the caches, so one wide call runs slower than
    /// several narrow ones (as EfficientNet-Lite0 at M = 9 on ONNX Runtime does).
    pub fn vjp_rows_per_call(&self, m: usize) -> usize {
        (self.exec.batch() / m.max(1)).max(1)
    }

    /// Logits `(n, K)` and gradients `(n, M, d)` of `Σ_k cot[i, m, k] · logit_k(x_i)`
    /// with respect to the model-space input `x_i` (model layout), for `n`
    /// samples `x` and cotangents `cot` `(n, M, K)`.
    pub fn vjp(&self, x: &[f32], n: usize, cot: &[f32], m: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        self.exec.timed(|| self.vjp_untimed(x, n, cot, m))
    }

    fn vjp_untimed(&self, x: &[f32], n: usize, cot: &[f32], m: usize) -> Result<LogitsAndGrads> {
        let d = self.spec.sample_len();
        let k = self.classes;
        if x.len() != n * d || cot.len() != n * m * k {
            return Err(Error::Config(format!(
                "vjp: expected {n}×{d} inputs and {n}×{m}×{k} cotangents, got {} and {}",
                x.len(),
                cot.len()
            )));
        }
        let (mode, _) = self.gradient_mode()?;
        match mode {
            GradientMode::Exact => self.exact_vjp(x, n, cot, m),
            GradientMode::FiniteDifference => self.fd_vjp(x, n, cot, m),
        }
    }

    fn exact_vjp(&self, x: &[f32], n: usize, cot: &[f32], m: usize) -> Result<LogitsAndGrads> {
        let d = self.spec.sample_len();
        let k = self.classes;
        let min_rows = self
            .gradients
            .min_rows
            .load(std::sync::atomic::Ordering::Relaxed);
        // A probe run (most of a graph's build, and it grows with the rows) serves every `M`
        // at its row count: once graphs exist, calls run at most as many rows as the widest
        // of them, so a call for another `M` (a refinement's one class row after DeepFool's
        // nine) reuses their probe instead of probing a wider batch.
        let built = self
            .gradients
            .graphs
            .lock()
            .expect("graphs")
            .keys()
            .map(|&(r, _)| r)
            .max();
        let cap = built.map_or_else(
            || self.vjp_rows_per_call(m),
            |widest| self.vjp_rows_per_call(m).min(widest),
        );
        let run_rows = |rows: usize| match self.fixed_batch {
            Some(b) => b,
            None => bucket(rows, cap).max(min_rows),
        };
        let mut sizes: Vec<usize> = self
            .exec
            .row_chunks(n, cap, true)
            .iter()
            .map(|&(_, rows)| run_rows(rows))
            .collect();
        sizes.dedup();
        for &rows in &sizes {
            self.graph(rows, m)?;
        }
        let parts = self.exec.map_chunks(n, cap, true, |start, rows| {
            let run = run_rows(rows);
            let mut xs = x[start * d..(start + rows) * d].to_vec();
            xs.resize(run * d, 0.0);
            let mut cs = cot[start * m * k..(start + rows) * m * k].to_vec();
            if self.output_transform == OutputTransform::LogOfProbs {
                // d log p = dp / p: scale the cotangent by 1/p.
                let (_, probs) = self.run_raw(&xs[..rows * d], rows)?;
                for (i, c) in cs.chunks_mut(m * k).enumerate() {
                    for (j, v) in c.iter_mut().enumerate() {
                        *v /= probs[i * k + j % k].max(1e-30);
                    }
                }
            }
            cs.resize(run * m * k, 0.0);
            let graph = self.graph(run, m)?;
            let mut shape = vec![run];
            shape.extend_from_slice(&self.spec.sample_shape());
            let mut out = graph.run(&[(&xs, &shape), (&cs, &[run, m, k])])?;
            let (mut lg, mut gr) = (out.swap_remove(0).1, out.swap_remove(0).1);
            lg.truncate(rows * k);
            gr.truncate(rows * m * d);
            Ok((lg, gr))
        })?;
        let (mut logits, grads) = match <[_; 1]>::try_from(parts) {
            // One call (a photo's DeepFool step: 9 × 150,528 values): its outputs as they are.
            Ok([one]) => one,
            Err(parts) => {
                let mut logits = Vec::with_capacity(n * k);
                let mut grads = Vec::with_capacity(n * m * d);
                for (lg, gr) in parts {
                    logits.extend_from_slice(&lg);
                    grads.extend_from_slice(&gr);
                }
                (logits, grads)
            }
        };
        if self.output_transform == OutputTransform::LogOfProbs {
            logits.iter_mut().for_each(|p| *p = p.max(1e-30).ln());
        }
        if let Some(i) = logits.iter().chain(&grads).position(|v| !v.is_finite()) {
            let row = if i < logits.len() {
                i / k
            } else {
                (i - logits.len()) / (m * d)
            };
            return Err(Error::NonFinite {
                path: self.onnx.path.clone(),
                index: row,
                item: format!("row {row} of the gradient batch"),
            });
        }
        Ok((logits, grads))
    }

    /// Central differences along all `d` basis directions ([`grad::fd::vjp`]), many per
    /// model call.
    fn fd_vjp(&self, x: &[f32], n: usize, cot: &[f32], m: usize) -> Result<LogitsAndGrads> {
        let (d, k) = (self.spec.sample_len(), self.classes);
        let logits = self.logits(x, n)?;
        let per_call = (self.exec.batch().max(64) / 2).max(1);
        let f = |rows: &[f32]| self.logits(rows, rows.len() / d);
        let mut grads = Vec::with_capacity(n * m * d);
        for i in 0..n {
            let xi = &x[i * d..(i + 1) * d];
            let h = grad::fd::default_step(xi);
            let g = grad::fd::vjp(f, xi, &cot[i * m * k..(i + 1) * m * k], h, per_call)?;
            grads.extend(g.into_iter().map(|v| v as f32));
        }
        Ok((logits, grads))
    }

    fn graph(&self, rows: usize, m: usize) -> Result<Arc<dyn GraphSession>> {
        if let Some(g) = self
            .gradients
            .graphs
            .lock()
            .expect("graphs")
            .get(&(rows, m))
        {
            return Ok(g.clone());
        }
        // Built without holding the lock (see `gradient_mode`); `exact_vjp` builds the graphs
        // a call needs before it spreads the call over threads, so duplicates are rare.
        let g = self.build_graph(rows, m).map_err(|e| match e {
            GraphFailure::Grad(e) => Error::Backend {
                path: self.onnx.path.clone(),
                backend: "gradient",
                reason: e.to_string(),
            },
            GraphFailure::Other(e) => e,
        })?;
        let mut graphs = self.gradients.graphs.lock().expect("graphs");
        Ok(graphs.entry((rows, m)).or_insert(g).clone())
    }

    /// The gradient graph for `rows` rows and `M = m` in the backend's cotangent layout,
    /// emitted from the probe run of that row count (made once).
    fn emit_graph(&self, rows: usize, m: usize) -> Result<grad::GradientGraph, GraphFailure> {
        let cached = self
            .gradients
            .probes
            .lock()
            .expect("probes")
            .get(&rows)
            .cloned();
        let probed = match cached {
            Some(p) => p,
            None => {
                let mut shape = vec![rows];
                shape.extend_from_slice(&self.spec.sample_shape());
                let p =
                    grad::probe_model(&self.runnable.proto, &shape).map_err(GraphFailure::Grad)?;
                let mut probes = self.gradients.probes.lock().expect("probes");
                probes.entry(rows).or_insert(p).clone()
            }
        };
        let layout = self.backend().cotangent_layout(&self.runnable.proto);
        grad::build_gradient_graph_probed(&self.runnable.proto, &probed, m, layout)
            .map_err(GraphFailure::Grad)
    }

    fn build_graph(&self, rows: usize, m: usize) -> Result<Arc<dyn GraphSession>, GraphFailure> {
        // The graph's output alone holds M gradients of every row: sized before a backend
        // allocates it (ONNX Runtime has no check of its own and grows past any cap).
        let mut dims = vec![rows, m];
        dims.extend_from_slice(&self.spec.sample_shape());
        crate::limits::check_f32_tensor(&dims).map_err(|why| {
            GraphFailure::Other(Error::Config(format!(
                "{}: the gradients of {rows} row(s) for {m} logit combination(s) are too \
                 large: {why}",
                self.onnx.path.display()
            )))
        })?;
        let built = self.emit_graph(rows, m)?;
        let session = self
            .backend()
            .load_graph(&built.model)
            .map_err(GraphFailure::Other)?;
        Ok(Arc::from(session))
    }
}

enum GraphFailure {
    Grad(GradError),
    Other(Error),
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_are_powers_of_two_up_to_the_batch() {
        assert_eq!(bucket(1, 16), 1);
        assert_eq!(bucket(3, 16), 4);
        assert_eq!(bucket(9, 16), 16);
        assert_eq!(bucket(16, 16), 16);
        assert_eq!(bucket(5, 6), 6);
    }
}
