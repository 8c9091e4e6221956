//! VJP rules, one module per op family, and the context they run in.
//!
//! A rule has two parts:
//! - `batch`: given the batch axes of the node's active inputs, the batch axis of each output
//!   (the forward pass is batch-`N`; the backward pass multiplies that axis by `M`);
//! - `vjp`: given the cotangents of the outputs (backward shapes, `None` when no gradient
//!   flows back through that output), emits nodes computing the cotangent of each *active*
//!   input (`None` for inactive ones).
//!
//! Backward tensors carry the `M` cotangents as the outermost factor of the batch axis
//! ("m-major"): a forward tensor of shape `(…, B, …)` with batch axis size `B = N·r` has a
//! backward cotangent of shape `(…, M·B, …)`. Forward values needed by a rule are tiled `M` times
//! along their batch axis (`Ctx::tile`), which keeps that layout through reshapes.

mod activation;
mod conv;
mod elementwise;
mod linalg;
mod norm;
mod pool;
mod reduce;
mod resize;
mod shape;

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::NodeProto;

pub use shape::reshape_layout;

use super::emit::Emitter;
use super::error::GradError;
use super::onnx::input;
use super::probe::{as_f32, as_i64, Probe};

/// Batch-axis propagation of a rule: batch axis of each output.
pub type BatchFn = fn(&Facts, &NodeProto) -> Result<Vec<Option<usize>>, GradError>;
/// The cotangents of a node's outputs (`None`: no gradient flows through that output).
pub type Cotangents = [Option<String>];
/// The cotangents of a node's inputs, or why they cannot be built.
pub type InputCotangents = Result<Vec<Option<String>>, GradError>;
/// VJP of a rule: cotangent of each input from the cotangents of the outputs.
pub type VjpFn = fn(&mut Ctx, &NodeProto, &Cotangents) -> InputCotangents;

/// One VJP rule.
#[derive(Clone, Copy)]
pub struct Rule {
    /// Batch-axis propagation.
    pub batch: BatchFn,
    /// Backward emission.
    pub vjp: VjpFn,
}

/// The rule for `op_type` of the default domain, if any.
pub fn rule(op_type: &str) -> Option<Rule> {
    let r = |batch: BatchFn, vjp: VjpFn| Some(Rule { batch, vjp });
    match op_type {
        "Conv" => r(conv::batch, conv::conv),
        "Gemm" => r(linalg::gemm_batch, linalg::gemm),
        "MatMul" => r(linalg::matmul_batch, linalg::matmul),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Sum" | "Where" | "Max" | "Min" => {
            r(broadcast_batch, elementwise::binary)
        }
        "Neg" | "Sqrt" | "Exp" | "Log" | "Tanh" | "Erf" | "Sigmoid" | "Reciprocal" | "Abs"
        | "Sin" | "Cos" | "Softplus" | "Elu" => r(same_batch, elementwise::unary),
        "Relu" | "LeakyRelu" | "PRelu" | "Clip" | "HardSigmoid" | "HardSwish" => {
            r(same_batch, activation::activation)
        }
        "Softmax" | "LogSoftmax" => r(activation::softmax_batch, activation::softmax),
        "Identity" | "Dropout" | "Cast" => r(same_batch, shape::identity),
        "MaxPool" => r(conv::batch, pool::max_pool),
        "AveragePool" => r(conv::batch, pool::average_pool),
        "GlobalAveragePool" | "GlobalMaxPool" => r(conv::batch, pool::global_pool),
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceL2" | "ReduceSumSquare" => {
            r(reduce::batch, reduce::reduce)
        }
        "BatchNormalization" => r(conv::batch, norm::batch_norm),
        "InstanceNormalization" => r(conv::batch, norm::instance_norm),
        "LayerNormalization" => r(norm::layer_norm_batch, norm::layer_norm),
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => r(shape::reshape_batch, shape::reshape),
        "Transpose" => r(shape::transpose_batch, shape::transpose),
        "Concat" => r(shape::concat_batch, shape::concat),
        "Split" => r(shape::split_batch, shape::split),
        "Slice" => r(shape::slice_batch, shape::slice),
        "Gather" => r(shape::gather_batch, shape::gather),
        "Pad" => r(shape::pad_batch, shape::pad),
        "Expand" => r(broadcast_batch, shape::expand),
        "Resize" => r(resize::batch, resize::resize),
        _ => None,
    }
}

/// Everything known about the forward graph at build time.
#[derive(Debug)]
pub struct Facts {
    /// Shapes, types and small values from the probe run.
    pub probe: std::sync::Arc<Probe>,
    /// Tensors on the float data path from the input.
    pub active: HashSet<String>,
    /// Batch axis of each active tensor.
    pub batch: HashMap<String, usize>,
    /// Layout of the batch axis where it is not plain: its extent is `[outer][rest]` and the
    /// backward pass inserts the `M` copies between the two (1, m-major, when absent). Arises
    /// when a reshape merges the batch with axes before it, e.g. `(L, N, E) → (L·N, E)`.
    pub outer: HashMap<String, usize>,
    /// Number of cotangents per sample `M`.
    pub m: usize,
    /// `ai.onnx` opset of the model.
    pub opset: i64,
}

impl Facts {
    /// Forward shape of `name`.
    pub fn shape(&self, node: &NodeProto, name: &str) -> Result<&[usize], GradError> {
        self.probe
            .shapes
            .get(name)
            .map(|s| s.as_slice())
            .ok_or_else(|| GradError::shape(node, format!("no shape known for tensor `{name}`")))
    }

    /// Forward shape of input `i` of `node`.
    pub fn in_shape(&self, node: &NodeProto, i: usize) -> Result<&[usize], GradError> {
        let name =
            input(node, i).ok_or_else(|| GradError::shape(node, format!("missing input {i}")))?;
        self.shape(node, name)
    }

    /// Forward shape of output `i` of `node`.
    pub fn out_shape(&self, node: &NodeProto, i: usize) -> Result<&[usize], GradError> {
        self.shape(node, &node.output[i])
    }

    /// Whether `name` is on the float data path from the input.
    pub fn is_active(&self, name: &str) -> bool {
        self.active.contains(name)
    }

    /// Whether input `i` of `node` is active.
    pub fn in_active(&self, node: &NodeProto, i: usize) -> bool {
        input(node, i).is_some_and(|n| self.is_active(n))
    }

    /// Batch axis of an active tensor.
    pub fn batch_axis(&self, name: &str) -> Option<usize> {
        self.batch.get(name).copied()
    }

    /// Outer factor of the batch axis layout of `name` (see [`Facts::outer`]).
    pub fn outer(&self, name: &str) -> usize {
        self.outer.get(name).copied().unwrap_or(1)
    }

    /// Batch axis of input `i` of `node` (when active).
    pub fn in_batch(&self, node: &NodeProto, i: usize) -> Option<usize> {
        input(node, i).and_then(|n| self.batch_axis(n))
    }

    /// Constant integer value of input `i` of `node` (initializer, `Constant` or shape
    /// subgraph), if known.
    pub fn in_i64(&self, node: &NodeProto, i: usize) -> Option<Vec<i64>> {
        input(node, i)
            .and_then(|n| self.probe.values.get(n))
            .and_then(|t| as_i64(t))
    }

    /// Constant float value of input `i` of `node`, if known and not active.
    pub fn in_f32(&self, node: &NodeProto, i: usize) -> Option<Vec<f32>> {
        let name = input(node, i)?;
        if self.is_active(name) {
            return None;
        }
        self.probe.values.get(name).and_then(|t| as_f32(t))
    }

    /// Backward shape of an active tensor: forward shape with the batch axis times `M`.
    pub fn bw_shape(&self, node: &NodeProto, name: &str) -> Result<Vec<usize>, GradError> {
        let mut s = self.shape(node, name)?.to_vec();
        if let Some(b) = self.batch_axis(name) {
            s[b] *= self.m;
        }
        Ok(s)
    }
}

/// The context a VJP rule emits into.
pub struct Ctx<'a> {
    /// Forward facts.
    pub f: &'a Facts,
    /// Backward-pass emitter.
    pub em: &'a mut Emitter,
    /// Cache of forward values tiled to the backward batch.
    pub tiles: &'a mut HashMap<String, String>,
}

impl Ctx<'_> {
    /// `name` (a forward tensor) repeated `M` times along its batch axis, so that it lines up
    /// with backward tensors; `name` itself when `M = 1` or it has no batch axis.
    pub fn tile(&mut self, name: &str) -> String {
        if self.f.batch_axis(name).is_none() || self.f.m == 1 {
            return name.to_string();
        }
        if let Some(t) = self.tiles.get(name) {
            return t.clone();
        }
        let t = self.tile_as(name, name);
        self.tiles.insert(name.to_string(), t.clone());
        t
    }

    /// Tiles `name`, a tensor computed from forward values with the shape and batch layout of
    /// the forward tensor `like` (a local derivative), to the backward batch.
    pub fn tile_as(&mut self, name: &str, like: &str) -> String {
        let shape = self.f.probe.shapes.get(like).cloned().unwrap_or_default();
        let b = self.f.batch_axis(like);
        let outer = self.f.outer(like);
        self.tile_shaped(name, &shape, b, outer)
    }

    /// Tiles `name` (forward shape `shape`, batch axis `b` whose extent is laid out as
    /// `[outer][rest]`) `M` times, inserting the copies between `outer` and `rest`.
    pub fn tile_shaped(
        &mut self,
        name: &str,
        shape: &[usize],
        b: Option<usize>,
        outer: usize,
    ) -> String {
        let Some(b) = b else { return name.to_string() };
        if self.f.m == 1 {
            return name.to_string();
        }
        if outer == 1 {
            let mut reps = vec![1; shape.len()];
            reps[b] = self.f.m;
            return self.em.tile(name, &reps);
        }
        let mut split: Vec<usize> = shape[..b].to_vec();
        split.push(outer);
        split.push(shape[b] / outer);
        split.extend_from_slice(&shape[b + 1..]);
        let r = self.em.reshape(name, &split);
        let mut reps = vec![1; split.len()];
        reps[b + 1] = self.f.m;
        let t = self.em.tile(&r, &reps);
        let mut bw = shape.to_vec();
        bw[b] *= self.f.m;
        self.em.reshape(&t, &bw)
    }

    /// `g ⊙ d`, where `g` is a backward tensor and `d` a local derivative computed on the
    /// forward batch, both with the shape and batch layout of the forward tensor `like`.
    pub fn mul_tiled(&mut self, g: &str, d: &str, like: &str) -> String {
        let shape = self.f.probe.shapes.get(like).cloned().unwrap_or_default();
        let b = self.f.batch_axis(like);
        let outer = self.f.outer(like);
        self.mul_tiled_shaped(g, &shape, d, &shape, b, outer)
    }

    /// `g ⊙ d` for a backward tensor `g` (shape `g_shape` per forward batch, i.e. its first
    /// axis without the factor `M`) and a forward tensor `d` of shape `shape` (batch axis `b`,
    /// laid out `[outer][rest]`) that broadcast against each other. Where the batch axis leads,
    /// `g` is viewed as `(M, g_shape…)` and `d` broadcast over `M`: no `M`-fold copy of `d` (on
    /// EfficientNet-Lite0 those Tiles were a large share of ONNX Runtime's backward pass).
    /// Otherwise `d` is tiled.
    pub fn mul_tiled_shaped(
        &mut self,
        g: &str,
        g_shape: &[usize],
        d: &str,
        shape: &[usize],
        b: Option<usize>,
        outer: usize,
    ) -> String {
        if self.f.m == 1 || b.is_none() {
            return self.em.mul(g, d);
        }
        let lined_up = g_shape.len() == shape.len()
            && g_shape.first() == shape.first()
            && g_shape
                .iter()
                .zip(shape)
                .all(|(&a, &c)| a == c || a == 1 || c == 1);
        if b == Some(0) && outer == 1 && lined_up {
            let mut split = vec![self.f.m];
            split.extend_from_slice(g_shape);
            let gs = self.em.reshape(g, &split);
            let p = self.em.mul(&gs, d);
            let mut bw: Vec<usize> = g_shape.iter().zip(shape).map(|(&a, &c)| a.max(c)).collect();
            bw[0] *= self.f.m;
            return self.em.reshape(&p, &bw);
        }
        let t = self.tile_shaped(d, shape, b, outer);
        self.em.mul(g, &t)
    }

    /// A forward operand `name` of a broadcasting op whose output is `out`, lined up with
    /// backward tensors: active operands are tiled; inactive ones too when they span the
    /// output's batch extent (size > 1) at the aligned axis (e.g. a mask computed from the data).
    pub fn tile_operand(&mut self, name: &str, out: &str) -> String {
        if self.f.is_active(name) || self.f.m == 1 {
            return self.tile(name);
        }
        let (Some(b), Some(s), Some(so)) = (
            self.f.batch_axis(out),
            self.f.probe.shapes.get(name),
            self.f.probe.shapes.get(out),
        ) else {
            return name.to_string();
        };
        let lead = so.len().saturating_sub(s.len());
        if b < lead || s[b - lead] != so[b] || so[b] <= 1 {
            return name.to_string();
        }
        let key = format!("{name}\u{0}{}", b - lead);
        if let Some(t) = self.tiles.get(&key) {
            return t.clone();
        }
        let s = s.clone();
        let t = self.tile_shaped(name, &s, Some(b - lead), self.f.outer(out));
        self.tiles.insert(key, t.clone());
        t
    }

    /// Sums `g` (backward shape `from`) down to backward shape `to` (numpy broadcasting in
    /// reverse: leading axes and axes where `to` is 1), then reshapes to `to`.
    pub fn reduce_to(&mut self, g: &str, from: &[usize], to: &[usize]) -> String {
        if from == to {
            return g.to_string();
        }
        let lead = from.len() - to.len().min(from.len());
        let mut axes = vec![];
        for (i, &d) in from.iter().enumerate() {
            if i < lead || (to[i - lead] == 1 && d != 1) {
                axes.push(i);
            }
        }
        let r = if axes.is_empty() {
            g.to_string()
        } else {
            self.em.reduce_sum(g, &axes, true)
        };
        self.em.reshape(&r, to)
    }
}

/// Right-aligned position in `out_rank` of axis `axis` of a rank-`in_rank` operand.
pub fn align(axis: usize, in_rank: usize, out_rank: usize) -> usize {
    axis + out_rank - in_rank
}

/// Batch propagation for elementwise ops with numpy broadcasting (all outputs).
pub fn broadcast_batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let out = f.out_shape(node, 0)?.to_vec();
    let mut axis = None;
    for i in 0..node.input.len() {
        let Some(b) = f.in_batch(node, i) else {
            continue;
        };
        let s = f.in_shape(node, i)?;
        let a = align(b, s.len(), out.len());
        if i > 0 && f.outer(&node.input[i]) != f.outer(&node.input[0]) && f.in_active(node, 0) {
            return Err(GradError::unsupported(
                node,
                "inputs lay out the batch differently",
            ));
        }
        if s[b] != out[a] {
            return Err(GradError::shape(
                node,
                "an active input is broadcast along its batch axis",
            ));
        }
        match axis {
            Some(x) if x != a => {
                return Err(GradError::unsupported(
                    node,
                    "active inputs have different batch axes",
                ))
            }
            _ => axis = Some(a),
        }
    }
    Ok(vec![axis; node.output.len()])
}

/// Batch propagation: every output has the batch axis of the first active input.
pub fn same_batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let b = (0..node.input.len()).find_map(|i| f.in_batch(node, i));
    Ok(vec![b; node.output.len()])
}

/// The batch axis of input 0, which must be axis 0 (Conv, pooling, normalisations).
pub fn batch_first(f: &Facts, node: &NodeProto) -> Result<Option<usize>, GradError> {
    if input(node, 0).is_some_and(|x| f.outer(x) != 1) {
        return Err(GradError::unsupported(
            node,
            "the batch is merged with a leading axis",
        ));
    }
    match f.in_batch(node, 0) {
        Some(0) | None => Ok(f.in_batch(node, 0)),
        Some(b) => Err(GradError::unsupported(
            node,
            format!("batch axis is {b}, expected 0"),
        )),
    }
}

/// Error for an input that would need a gradient this rule cannot give.
pub fn active_input_unsupported(node: &NodeProto, i: usize) -> GradError {
    GradError::unsupported(
        node,
        format!("input {i} (`{}`) depends on the model input", node.input[i]),
    )
}

/// Normalises a possibly negative axis.
pub fn norm_axis(node: &NodeProto, axis: i64, rank: usize) -> Result<usize, GradError> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank.max(1) {
        return Err(GradError::shape(
            node,
            format!("axis {axis} out of range for rank {rank}"),
        ));
    }
    Ok(a as usize)
}
