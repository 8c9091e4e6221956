//! The ONNX graph lowered for bound propagation: the nodes between the input and the logits,
//! each as one [`Op`] with its constants read out, over tensors of known shape (batch 1).

use std::collections::HashMap;

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, ValueInfoProto};
use tract_onnx::prelude::*;

use super::BoundError;
use crate::grad::fold::tensor_proto;
use crate::grad::onnx::{attr, attr_f, attr_i, attr_ints, attr_s, node_name, value_info_f32};
use crate::grad::path::analyse;
use crate::grad::probe::{as_f32, probe, Probe};
use crate::grad::UnsupportedNode;

/// Geometry of a 2-D convolution or pooling window over `(C, H, W)` maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Kernel height and width.
    pub k: (usize, usize),
    /// Strides.
    pub s: (usize, usize),
    /// Padding before (top, left).
    pub pad: (usize, usize),
    /// Dilations.
    pub d: (usize, usize),
}

/// An elementwise nonlinearity with a linear relaxation (`relax.rs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x ≥ 0`, `αx` below.
    LeakyRelu(f32),
    /// `min(max(x, lo), hi)`.
    Clip(f32, f32),
    /// `1 / (1 + e^{-x})`.
    Sigmoid,
    /// `tanh x`.
    Tanh,
    /// `clip(αx + β, 0, 1)`.
    HardSigmoid(f32, f32),
    /// `x · clip(x/6 + 1/2, 0, 1)`.
    HardSwish,
}

/// Where an output element of a data-movement op comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Src {
    /// Element `index` of active input `slot`.
    Input(u8, u32),
    /// A constant.
    Const(f32),
}

/// One lowered node.
#[derive(Debug, Clone)]
pub enum Op {
    /// 2-D convolution: weights `(Co, Ci/groups, kh, kw)`, bias `(Co)`.
    Conv {
        /// Weights.
        w: Vec<f32>,
        /// Bias (zeros when absent).
        b: Vec<f32>,
        /// Groups.
        groups: usize,
        /// Window geometry.
        win: Window,
    },
    /// `y = W x + b` on a vector: `w` is `(out, in)` row-major.
    Linear {
        /// Weights.
        w: Vec<f32>,
        /// Bias.
        b: Vec<f32>,
    },
    /// `y = a ⊙ x + c`, `a` and `c` over the whole output.
    Affine {
        /// Scale.
        a: Vec<f32>,
        /// Shift.
        c: Vec<f32>,
    },
    /// `y = x₀ + s·x₁` for two active inputs (`s = ±1`).
    Sum(f32),
    /// Elementwise nonlinearity.
    Act(Act),
    /// Max pooling.
    MaxPool(Window),
    /// Average pooling (`count_include_pad` as given).
    AvgPool(Window, bool),
    /// Mean over each channel's map.
    GlobalAvgPool,
    /// Same values, another shape (Reshape, Flatten, Identity, ...).
    Identity,
    /// Data movement (Transpose, Slice, Pad, Concat, Gather, ...): output element `i` is
    /// `map[i]`.
    Gather(Vec<Src>),
}

/// A lowered node: its op over active input tensors and one output tensor.
#[derive(Debug, Clone)]
pub struct Node {
    /// ONNX op type and node name, for messages.
    pub name: String,
    /// The op.
    pub op: Op,
    /// Active input tensors (indices into [`BoundNet::shapes`]).
    pub inputs: Vec<usize>,
    /// Output tensor.
    pub output: usize,
}

/// A classifier lowered for bound propagation.
#[derive(Debug, Clone)]
pub struct BoundNet {
    /// Shape of each tensor without the batch axis.
    pub shapes: Vec<Vec<usize>>,
    /// Nodes in graph order; tensor 0 is the input.
    pub nodes: Vec<Node>,
    /// The logits tensor (before a final softmax).
    pub logits: usize,
}

/// The `(C, H, W)` view of a shape: rank-3 shapes as they are, anything else as `(numel, 1, 1)`.
pub fn chw(shape: &[usize]) -> (usize, usize, usize) {
    match shape {
        [c, h, w] => (*c, *h, *w),
        _ => (shape.iter().product(), 1, 1),
    }
}

impl BoundNet {
    /// Lowers `model` at the sample shape `sample` (without batch). Fails naming every node
    /// on the input→logits path without a bound rule.
    pub fn from_onnx(model: &ModelProto, sample: &[usize]) -> Result<BoundNet, BoundError> {
        let mut input_shape = vec![1];
        input_shape.extend_from_slice(sample);
        let pr = probe(model, &input_shape)?;
        let info = analyse(model, &|n| pr.dtypes.get(n).map(|d| d.is_float()))?;
        let g = model.graph.as_ref().expect("analysed above");
        let missing: Vec<UnsupportedNode> = info
            .path
            .iter()
            .map(|&i| &g.node[i])
            .filter(|n| !has_rule(&n.op_type))
            .map(|n| UnsupportedNode {
                op_type: n.op_type.clone(),
                node_name: node_name(n),
            })
            .collect();
        if !missing.is_empty() {
            return Err(BoundError::MissingRules(missing));
        }
        let weights = Weights::new(g, &pr)?;
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut shapes = vec![sample.to_vec()];
        ids.insert(info.input.clone(), 0);
        let mut nodes = Vec::with_capacity(info.path.len());
        for &i in &info.path {
            let node = &g.node[i];
            let act: Vec<&str> = node
                .input
                .iter()
                .filter(|t| info.active.contains(*t))
                .map(String::as_str)
                .collect();
            let inputs: Vec<usize> = act
                .iter()
                .map(|t| {
                    ids.get(*t)
                        .copied()
                        .ok_or_else(|| unsupported(node, "an input comes from outside the path"))
                })
                .collect::<Result<_, _>>()?;
            let out_name = &node.output[0];
            let out_shape = batchless(&pr, out_name, node)?;
            let in_shapes: Vec<Vec<usize>> = inputs.iter().map(|&t| shapes[t].clone()).collect();
            let op = lower(node, &act, &in_shapes, &out_shape, &weights, &pr, model)?;
            let output = shapes.len();
            shapes.push(out_shape);
            ids.insert(out_name.clone(), output);
            nodes.push(Node {
                name: format!("{} `{}`", node.op_type, node_name(node)),
                op,
                inputs,
                output,
            });
        }
        let logits = *ids
            .get(&info.logits)
            .ok_or_else(|| BoundError::Model("the logits are not on the input's path".into()))?;
        Ok(BoundNet {
            shapes,
            nodes,
            logits,
        })
    }

    /// Number of elements of tensor `t`.
    pub fn len(&self, t: usize) -> usize {
        self.shapes[t].iter().product()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.len(self.logits)
    }
}

/// The ops with a bound rule.
fn has_rule(op: &str) -> bool {
    matches!(
        op,
        "Conv"
            | "Gemm"
            | "MatMul"
            | "Add"
            | "Sub"
            | "Mul"
            | "Div"
            | "Neg"
            | "BatchNormalization"
            | "Relu"
            | "LeakyRelu"
            | "Clip"
            | "Sigmoid"
            | "Tanh"
            | "HardSigmoid"
            | "HardSwish"
            | "MaxPool"
            | "AveragePool"
            | "GlobalAveragePool"
    ) || is_identity(op)
        || is_movement(op)
}

fn is_identity(op: &str) -> bool {
    matches!(
        op,
        "Identity" | "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" | "Dropout" | "Cast"
    )
}

fn is_movement(op: &str) -> bool {
    matches!(
        op,
        "Transpose"
            | "Slice"
            | "Pad"
            | "Concat"
            | "Gather"
            | "Expand"
            | "Tile"
            | "DepthToSpace"
            | "SpaceToDepth"
    )
}

fn unsupported(node: &NodeProto, reason: &str) -> BoundError {
    BoundError::Unsupported {
        op: node.op_type.clone(),
        node: node_name(node),
        reason: reason.to_string(),
    }
}

/// The probed shape of `name` without its batch axis of 1.
fn batchless(pr: &Probe, name: &str, node: &NodeProto) -> Result<Vec<usize>, BoundError> {
    match pr.shapes.get(name).map(Vec::as_slice) {
        Some([1, rest @ ..]) => Ok(rest.to_vec()),
        _ => Err(unsupported(node, "its output has no batch axis of 1")),
    }
}

/// Float values of the graph's constants: initializers (all of them) and small probed values.
struct Weights<'a> {
    inits: HashMap<&'a str, Tensor>,
    pr: &'a Probe,
}

impl<'a> Weights<'a> {
    fn new(g: &'a GraphProto, pr: &'a Probe) -> Result<Self, BoundError> {
        let provider = tract_onnx::data_resolver::MmapDataResolver;
        let mut inits = HashMap::new();
        for t in &g.initializer {
            let v = tract_onnx::tensor::load_tensor(&provider, t, None)
                .map_err(|e| BoundError::Model(format!("initializer `{}`: {e}", t.name)))?;
            inits.insert(t.name.as_str(), v);
        }
        Ok(Weights { inits, pr })
    }

    fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.inits
            .get(name)
            .or_else(|| self.pr.values.get(name).map(|t| t.as_ref()))
    }

    fn f32(&self, name: &str) -> Option<Vec<f32>> {
        self.tensor(name).and_then(as_f32)
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensor(name).map(|t| t.shape().to_vec())
    }
}

/// The `ai.onnx` ops lowered one by one.
fn lower(
    node: &NodeProto,
    act: &[&str],
    ins: &[Vec<usize>],
    out: &[usize],
    w: &Weights,
    pr: &Probe,
    model: &ModelProto,
) -> Result<Op, BoundError> {
    let op = node.op_type.as_str();
    let konst = |i: usize| -> Result<Vec<f32>, BoundError> {
        node.input
            .get(i)
            .filter(|n| !n.is_empty())
            .and_then(|n| w.f32(n))
            .ok_or_else(|| unsupported(node, &format!("input {i} is not a known constant")))
    };
    // Conv, Gemm and MatMul take the data as their first input, the rest constant.
    let data_first =
        act.len() == 1 && node.input.first().map(String::as_str) == act.first().copied();
    let numel: usize = out.iter().product();
    if is_identity(op) {
        return Ok(Op::Identity);
    }
    if is_movement(op) {
        return movement(node, act, pr, w, model, numel);
    }
    match op {
        "Conv" => {
            if !data_first || ins[0].len() != 3 {
                return Err(unsupported(
                    node,
                    "only 2-D convolutions of the data by constant weights",
                ));
            }
            let wt = konst(1)?;
            let ws = w.shape(&node.input[1]).unwrap_or_default();
            let co = out[0];
            let b = if node.input.get(2).is_some_and(|n| !n.is_empty()) {
                konst(2)?
            } else {
                vec![0.0; co]
            };
            let groups = attr_i(node, "group", 1) as usize;
            let win = window(node, &ins[0], out, (ws[2], ws[3]))?;
            Ok(Op::Conv {
                w: wt,
                b,
                groups,
                win,
            })
        }
        "Gemm" | "MatMul" => {
            if !data_first || ins[0].len() != 1 {
                return Err(unsupported(
                    node,
                    "only a vector (batch × features) times constant weights",
                ));
            }
            let (fin, fout) = (ins[0][0], out[0]);
            let mut m = konst(1)?;
            let trans_b = op == "Gemm" && attr_i(node, "transB", 0) == 1;
            if op == "Gemm" && attr_i(node, "transA", 0) != 0 {
                return Err(unsupported(node, "transA"));
            }
            if !trans_b {
                // (in, out) → (out, in)
                let mut t = vec![0.0; m.len()];
                for i in 0..fin {
                    for o in 0..fout {
                        t[o * fin + i] = m[i * fout + o];
                    }
                }
                m = t;
            }
            let (alpha, beta) = if op == "Gemm" {
                (attr_f(node, "alpha", 1.0), attr_f(node, "beta", 1.0))
            } else {
                (1.0, 1.0)
            };
            m.iter_mut().for_each(|v| *v *= alpha);
            let b = if op == "Gemm" && node.input.get(2).is_some_and(|n| !n.is_empty()) {
                let c = konst(2)?;
                broadcast(&c, &w.shape(&node.input[2]).unwrap_or_default(), out)
                    .ok_or_else(|| unsupported(node, "bias shape"))?
                    .into_iter()
                    .map(|v| beta * v)
                    .collect()
            } else {
                vec![0.0; fout]
            };
            Ok(Op::Linear { w: m, b })
        }
        "Add" | "Sub" | "Mul" | "Div" => {
            if act.len() == 2 {
                if ins[0] != out || ins[1] != out {
                    return Err(unsupported(node, "two inputs broadcast against each other"));
                }
                return match op {
                    "Add" => Ok(Op::Sum(1.0)),
                    "Sub" => Ok(Op::Sum(-1.0)),
                    _ => Err(unsupported(node, "a product or quotient of two inputs")),
                };
            }
            if ins[0] != out {
                return Err(unsupported(
                    node,
                    "the input is broadcast to a larger output",
                ));
            }
            let data_first = node.input[0] == act[0];
            let ci = if data_first { 1 } else { 0 };
            let c = broadcast(
                &konst(ci)?,
                &w.shape(&node.input[ci]).unwrap_or_default(),
                out,
            )
            .ok_or_else(|| unsupported(node, "constant shape does not broadcast"))?;
            let ones = vec![1.0; numel];
            let zeros = vec![0.0; numel];
            Ok(match (op, data_first) {
                ("Add", _) => Op::Affine { a: ones, c },
                ("Sub", true) => Op::Affine {
                    a: ones,
                    c: c.iter().map(|v| -v).collect(),
                },
                ("Sub", false) => Op::Affine {
                    a: vec![-1.0; numel],
                    c,
                },
                ("Mul", _) => Op::Affine { a: c, c: zeros },
                ("Div", true) => Op::Affine {
                    a: c.iter().map(|v| 1.0 / v).collect(),
                    c: zeros,
                },
                _ => return Err(unsupported(node, "a constant divided by the data")),
            })
        }
        "BatchNormalization" => {
            let (scale, bias, mean, var) = (konst(1)?, konst(2)?, konst(3)?, konst(4)?);
            let eps = attr_f(node, "epsilon", 1e-5);
            let (c, h, wd) = chw(out);
            let per: Vec<f32> = (0..c).map(|i| scale[i] / (var[i] + eps).sqrt()).collect();
            let mut a = vec![0.0; numel];
            let mut cc = vec![0.0; numel];
            for ch in 0..c {
                for p in 0..h * wd {
                    a[ch * h * wd + p] = per[ch];
                    cc[ch * h * wd + p] = bias[ch] - mean[ch] * per[ch];
                }
            }
            if out.len() != 3 && out.len() != 1 {
                return Err(unsupported(node, "only (C, H, W) or (C) tensors"));
            }
            Ok(Op::Affine { a, c: cc })
        }
        "Neg" => Ok(Op::Affine {
            a: vec![-1.0; numel],
            c: vec![0.0; numel],
        }),
        "Relu" => Ok(Op::Act(Act::Relu)),
        "LeakyRelu" => Ok(Op::Act(Act::LeakyRelu(attr_f(node, "alpha", 0.01)))),
        "Sigmoid" => Ok(Op::Act(Act::Sigmoid)),
        "Tanh" => Ok(Op::Act(Act::Tanh)),
        "HardSwish" => Ok(Op::Act(Act::HardSwish)),
        "HardSigmoid" => Ok(Op::Act(Act::HardSigmoid(
            attr_f(node, "alpha", 0.2),
            attr_f(node, "beta", 0.5),
        ))),
        "Clip" => {
            let scalar = |i: usize, attr_name: &str, default: f32| -> Result<f32, BoundError> {
                match node.input.get(i).filter(|n| !n.is_empty()) {
                    Some(_) => konst(i)?
                        .first()
                        .copied()
                        .ok_or_else(|| unsupported(node, "empty bound")),
                    None => Ok(attr(node, attr_name).map_or(default, |a| a.f)),
                }
            };
            Ok(Op::Act(Act::Clip(
                scalar(1, "min", f32::NEG_INFINITY)?,
                scalar(2, "max", f32::INFINITY)?,
            )))
        }
        "MaxPool" | "AveragePool" => {
            if ins[0].len() != 3 || node.output.len() > 1 && !node.output[1].is_empty() {
                return Err(unsupported(
                    node,
                    "only 2-D pooling without an Indices output",
                ));
            }
            let k = attr_ints(node, "kernel_shape").unwrap_or_default();
            if k.len() != 2 {
                return Err(unsupported(node, "kernel_shape must have 2 entries"));
            }
            let win = window(node, &ins[0], out, (k[0] as usize, k[1] as usize))?;
            if op == "MaxPool" {
                Ok(Op::MaxPool(win))
            } else {
                Ok(Op::AvgPool(win, attr_i(node, "count_include_pad", 0) == 1))
            }
        }
        "GlobalAveragePool" => {
            if ins[0].len() != 3 {
                return Err(unsupported(node, "only (C, H, W) maps"));
            }
            Ok(Op::GlobalAvgPool)
        }
        _ => Err(unsupported(node, "no bound rule")),
    }
}

/// `c` (of shape `cs`) broadcast to `out` (numpy rules), row-major.
fn broadcast(c: &[f32], cs: &[usize], out: &[usize]) -> Option<Vec<f32>> {
    if cs.len() > out.len() + 1 {
        return None;
    }
    // Align trailing axes; a leading batch axis of 1 in `cs` is dropped.
    let cs: Vec<usize> = if cs.len() == out.len() + 1 {
        if cs[0] != 1 {
            return None;
        }
        cs[1..].to_vec()
    } else {
        let mut v = vec![1; out.len() - cs.len()];
        v.extend_from_slice(cs);
        v
    };
    if cs.iter().zip(out).any(|(&a, &b)| a != 1 && a != b) {
        return None;
    }
    let n: usize = out.iter().product();
    let mut res = Vec::with_capacity(n);
    for i in 0..n {
        let (mut rem, mut idx, mut stride) = (i, 0, 1);
        let mut cstrides = vec![0; out.len()];
        for ax in (0..out.len()).rev() {
            cstrides[ax] = stride;
            stride *= cs[ax];
        }
        for ax in (0..out.len()).rev() {
            let coord = rem % out[ax];
            rem /= out[ax];
            if cs[ax] != 1 {
                idx += coord * cstrides[ax];
            }
        }
        res.push(c[idx]);
    }
    Some(res)
}

/// The window of a Conv or pooling node from its attributes and the probed shapes (explicit
/// pads or `auto_pad`).
fn window(
    node: &NodeProto,
    input: &[usize],
    out: &[usize],
    k: (usize, usize),
) -> Result<Window, BoundError> {
    let two = |name: &str, default: usize| -> (usize, usize) {
        attr_ints(node, name)
            .filter(|v| v.len() == 2)
            .map_or((default, default), |v| (v[0] as usize, v[1] as usize))
    };
    let s = two("strides", 1);
    let d = two("dilations", 1);
    let pad = match attr_s(node, "auto_pad", "NOTSET").as_str() {
        "SAME_UPPER" | "SAME_LOWER" => {
            let lower = attr_s(node, "auto_pad", "") == "SAME_LOWER";
            let total = |o: usize, i: usize, k: usize, s: usize, d: usize| {
                ((o - 1) * s + (k - 1) * d + 1).saturating_sub(i)
            };
            let th = total(out[1], input[1], k.0, s.0, d.0);
            let tw = total(out[2], input[2], k.1, s.1, d.1);
            if lower {
                (th.div_ceil(2), tw.div_ceil(2))
            } else {
                (th / 2, tw / 2)
            }
        }
        _ => {
            let p = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
            if p.len() != 4 || p.iter().any(|&v| v < 0) {
                return Err(unsupported(node, "pads must be 4 non-negative values"));
            }
            (p[0] as usize, p[1] as usize)
        }
    };
    Ok(Window { k, s, pad, d })
}

/// The source map of a data-movement node, found by running the node on tract twice: once
/// with each active input holding its element numbers (offset per input, from 1) and every
/// float constant zero, once with active inputs zero and constants as they are.
fn movement(
    node: &NodeProto,
    act: &[&str],
    pr: &Probe,
    w: &Weights,
    model: &ModelProto,
    numel: usize,
) -> Result<Op, BoundError> {
    let sizes: Vec<usize> = act
        .iter()
        .map(|t| pr.shapes.get(*t).map_or(0, |s| s.iter().product()))
        .collect();
    let total: usize = sizes.iter().sum();
    if total >= 1 << 24 {
        return Err(unsupported(node, "more than 2^24 input elements"));
    }
    let run = |numbered: bool| -> Result<Vec<f32>, BoundError> {
        let mut inits = vec![];
        let mut inputs = vec![];
        let mut offset = 0usize;
        for name in node.input.iter().filter(|n| !n.is_empty()) {
            if let Some(slot) = act.iter().position(|a| a == name) {
                let shape = pr.shapes[name.as_str()].clone();
                let n = sizes[slot];
                let v: Vec<f32> = if numbered {
                    (0..n).map(|i| (offset + i + 1) as f32).collect()
                } else {
                    vec![0.0; n]
                };
                offset += n;
                let t = tract_ndarray::ArrayD::from_shape_vec(shape, v)
                    .map_err(|e| unsupported(node, &e.to_string()))?;
                inputs.push(Tensor::from(t));
                let _ = slot;
            } else {
                let t = w.tensor(name).cloned().ok_or_else(|| {
                    unsupported(node, &format!("input `{name}` is not a known constant"))
                })?;
                let t = if numbered && t.datum_type().is_float() {
                    Tensor::zero_dt(t.datum_type(), t.shape())
                        .map_err(|e| unsupported(node, &e.to_string()))?
                } else {
                    t
                };
                let declared = (t.datum_type() == DatumType::TDim).then_some(DataType::Int64);
                inits.push(tensor_proto(name, &t, declared).ok_or_else(|| {
                    unsupported(node, &format!("constant `{name}` of an unsupported type"))
                })?);
            }
        }
        let sub = ModelProto {
            ir_version: model.ir_version.max(4),
            opset_import: model.opset_import.clone(),
            graph: Some(GraphProto {
                name: "movement".into(),
                node: vec![NodeProto {
                    output: vec![node.output[0].clone()],
                    ..node.clone()
                }],
                initializer: inits,
                input: act
                    .iter()
                    .map(|n| value_info_f32(n, &pr.shapes[*n]))
                    .collect(),
                output: vec![ValueInfoProto {
                    name: node.output[0].clone(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let res = crate::model::guarded(|| -> TractResult<Vec<f32>> {
            let mut m = tract_onnx::onnx().model_for_proto_model(&sub)?;
            for (i, t) in inputs.iter().enumerate() {
                m = m.with_input_fact(i, TypedFact::shape_and_dt_of(t).into())?;
            }
            let out = m
                .into_typed()?
                .into_runnable()?
                .run(inputs.iter().cloned().map(|t| t.into_tvalue()).collect())?;
            let t = out[0].cast_to::<f32>()?;
            Ok(t.to_plain_array_view::<f32>()?.iter().copied().collect())
        });
        match res {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unsupported(node, &format!("tract: {e}"))),
            Err(_) => Err(unsupported(node, "tract panicked")),
        }
    };
    let idx = run(true)?;
    let consts = run(false)?;
    if idx.len() != numel {
        return Err(unsupported(node, "output size differs from the probe's"));
    }
    let starts: Vec<usize> = sizes
        .iter()
        .scan(0, |acc, &s| {
            let v = *acc;
            *acc += s;
            Some(v)
        })
        .collect();
    let map = idx
        .iter()
        .zip(&consts)
        .map(|(&i, &c)| {
            if i == 0.0 {
                Ok(Src::Const(c))
            } else if i.fract() == 0.0 && i >= 1.0 && i as usize <= total && c == 0.0 {
                let flat = i as usize - 1;
                let slot = starts.iter().rposition(|&s| s <= flat).unwrap_or(0);
                Ok(Src::Input(slot as u8, (flat - starts[slot]) as u32))
            } else {
                Err(unsupported(node, "it does not only move values"))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Op::Gather(map))
}
