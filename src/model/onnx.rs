//! Reading an ONNX file: validation as an image classifier, a summary for
//! `inspect`, and the rewrite that exposes logits when the graph ends in a
//! softmax.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tract_onnx::pb::{self, tensor_shape_proto::dimension::Value as DimValue, type_proto};

use crate::error::{Error, Result};
use crate::spec::Layout;

/// ONNX element type code of float32.
const FLOAT: i32 = 1;

/// One dimension of a declared tensor shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named or unknown (dynamic) size.
    Dynamic(String),
}

impl Dim {
    /// The fixed size, if any.
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Dynamic(_) => None,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Dynamic(s) if s.is_empty() => write!(f, "?"),
            Dim::Dynamic(s) => write!(f, "{s}"),
        }
    }
}

/// A graph input or output as declared in the file.
#[derive(Debug, Clone, Serialize)]
pub struct TensorDecl {
    /// Tensor name.
    pub name: String,
    /// Element type name (`float32`, `int64`, ...).
    pub dtype: String,
    /// Declared shape (None when the file declares none).
    pub shape: Option<Vec<Dim>>,
}

/// Summary of an ONNX file for `georob inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// Graph inputs that are not initializers.
    pub inputs: Vec<TensorDecl>,
    /// Graph outputs.
    pub outputs: Vec<TensorDecl>,
    /// Default-domain opset version.
    pub opset: i64,
    /// Program that wrote the file.
    pub producer: String,
    /// Operator type → number of nodes (custom domains prefixed).
    pub operators: BTreeMap<String, usize>,
    /// Number of scalar parameters in the initializers and `Constant` nodes.
    pub parameters: u64,
    /// Whether the graph ends in Softmax or LogSoftmax.
    pub ends_in_softmax: bool,
}

/// An ONNX model file read into memory and parsed.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    /// Where it came from.
    pub path: PathBuf,
    /// The parsed protobuf.
    pub proto: pb::ModelProto,
    /// SHA-256 of the file bytes, hex.
    pub sha256: String,
}

/// What the 4-D image input of a classifier looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInput {
    /// Input tensor name.
    pub name: String,
    /// Fixed batch size, or None when the batch dimension is dynamic.
    pub fixed_batch: Option<usize>,
    /// Layout guessed from the shape (channels of 1, 3 or 4).
    pub layout: Option<Layout>,
    /// Declared dimensions 1 to 3 (after the batch), where fixed.
    pub dims: [Option<usize>; 3],
}

impl ImageInput {
    /// (channels, height, width) as far as fixed, reading the dims in `layout`.
    pub fn chw(&self, layout: Layout) -> [Option<usize>; 3] {
        let [a, b, c] = self.dims;
        match layout {
            Layout::Nchw => [a, b, c],
            Layout::Nhwc => [c, a, b],
        }
    }
}

/// Whether a tensor's values are stored in another file.
fn is_external(t: &pb::TensorProto) -> bool {
    t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
}

/// Every tensor stored in `g` and its subgraphs: initializers and attribute tensors.
fn tensors_mut(
    g: &mut pb::GraphProto,
    f: &mut dyn FnMut(&mut pb::TensorProto) -> Result<()>,
) -> Result<()> {
    for t in &mut g.initializer {
        f(t)?;
    }
    for n in &mut g.node {
        for a in &mut n.attribute {
            for t in a.t.iter_mut().chain(a.tensors.iter_mut()) {
                f(t)?;
            }
            for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                tensors_mut(sub, f)?;
            }
        }
    }
    Ok(())
}

fn uses_external_data(proto: &pb::ModelProto) -> bool {
    fn any(g: &pb::GraphProto) -> bool {
        g.initializer.iter().any(is_external)
            || g.node.iter().flat_map(|n| &n.attribute).any(|a| {
                a.t.iter().chain(&a.tensors).any(is_external)
                    || a.g.iter().chain(&a.graphs).any(any)
            })
    }
    proto.graph.as_ref().is_some_and(any)
}

/// Reads the values of every tensor of the model at `path` stored as external data into the
/// model, so that both backends see the same self-contained graph (ONNX Runtime, given the
/// model from memory, would resolve locations against the working directory; tract refuses
/// them). A location must be a plain relative path inside the model's folder (no root, no
/// `..`, no symbolic link on the way) naming a regular file; all the data read together is
/// capped like a model file.
fn inline_external_data(proto: &mut pb::ModelProto, path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut total: u64 = 0;
    let Some(g) = proto.graph.as_mut() else {
        return Ok(());
    };
    tensors_mut(g, &mut |t| {
        if !is_external(t) {
            return Ok(());
        }
        let bad = |reason: String| Error::InvalidModel {
            path: path.to_path_buf(),
            reason: format!("tensor {:?}: external data {reason}", t.name),
        };
        let key = |k: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == k)
                .map(|e| e.value.clone())
        };
        let location = key("location").ok_or_else(|| bad("without a location".into()))?;
        let number = |k: &str| -> Result<Option<u64>> {
            key(k)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| bad(format!("{k} {v:?} is not a byte count")))
                })
                .transpose()
        };
        let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
        let file = crate::write::inside(folder, Path::new(&location)).ok_or_else(|| {
            bad(format!(
                "{location:?} leaves the model's folder (georob reads external data only from \
                 plain relative paths beside the model, through no symbolic link)"
            ))
        })?;
        let mut f = crate::read::open(&file, u64::MAX).map_err(|e| bad(e.to_string()))?;
        let size = f
            .metadata()
            .map_err(|e| bad(Error::io(&file, e).to_string()))?
            .len();
        let length = length.unwrap_or(size.saturating_sub(offset));
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(bad(format!(
                "{location:?}: bytes {offset}..{offset}+{length} lie beyond its {size} bytes"
            )));
        }
        total += length;
        if total > crate::read::MODEL_CAP {
            return Err(bad(format!(
                "{location:?}: the model's external data exceed {}",
                crate::limits::format_bytes(crate::read::MODEL_CAP.into())
            )));
        }
        let mut data = Vec::new();
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| bad(Error::io(&file, e).to_string()))?;
        f.take(length)
            .read_to_end(&mut data)
            .map_err(|e| bad(Error::io(&file, e).to_string()))?;
        t.raw_data = data;
        t.data_location = None;
        t.external_data.clear();
        Ok(())
    })
}

impl OnnxModel {
    /// Reads and parses `path`. Fails on missing, empty, truncated or non-ONNX files.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = crate::read::bytes(path, crate::read::MODEL_CAP)?;
        let mut model = Self::from_bytes(bytes, path)?;
        if uses_external_data(&model.proto) {
            inline_external_data(&mut model.proto, path)?;
            super::check::model(&model.proto).map_err(|reason| Error::InvalidModel {
                path: path.to_path_buf(),
                reason,
            })?;
        }
        Ok(model)
    }

    /// Parses ONNX bytes; `path` is only used to name the model in errors.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidModel {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.is_empty() {
            return Err(invalid("the file is empty".into()));
        }
        let proto = pb::ModelProto::decode(bytes.as_slice()).map_err(|e| {
            invalid(format!(
                "protobuf decoding failed ({e}); truncated or not an ONNX file?"
            ))
        })?;
        let Some(graph) = proto.graph.as_ref() else {
            return Err(invalid("the file holds no graph".into()));
        };
        if graph.node.is_empty() {
            return Err(invalid("the graph has no nodes".into()));
        }
        if graph.output.is_empty() {
            return Err(invalid("the graph has no outputs".into()));
        }
        super::check::model(&proto).map_err(invalid)?;
        let sha256 = format!("{:x}", Sha256::digest(&bytes));
        Ok(OnnxModel {
            path: path.to_path_buf(),
            proto,
            sha256,
        })
    }

    /// The graph (present by construction).
    pub fn graph(&self) -> &pb::GraphProto {
        self.proto.graph.as_ref().expect("checked in from_bytes")
    }

    /// Serialises the (possibly rewritten) model.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.proto.encode_to_vec()
    }

    /// Default-domain opset version (0 if none is declared).
    pub fn opset(&self) -> i64 {
        self.proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .unwrap_or(0)
    }

    /// Graph inputs that are not initializers.
    pub fn real_inputs(&self) -> Vec<&pb::ValueInfoProto> {
        let g = self.graph();
        g.input
            .iter()
            .filter(|i| !g.initializer.iter().any(|t| t.name == i.name))
            .collect()
    }

    /// Summary for `inspect`.
    pub fn summary(&self) -> ModelSummary {
        let g = self.graph();
        let mut operators = BTreeMap::new();
        for n in &g.node {
            let key = if n.domain.is_empty() || n.domain == "ai.onnx" {
                n.op_type.clone()
            } else {
                format!("{}:{}", n.domain, n.op_type)
            };
            *operators.entry(key).or_insert(0) += 1;
        }
        let size = |t: &pb::TensorProto| {
            t.dims
                .iter()
                .fold(1u64, |n, &d| n.saturating_mul(d.max(0) as u64))
        };
        // Weights stored as `Constant` nodes (as PaddlePaddle exports them) count too.
        let constants = g.node.iter().filter(|n| n.op_type == "Constant").map(|n| {
            n.attribute
                .iter()
                .map(|a| match a.name.as_str() {
                    "value" => a.t.as_ref().map_or(0, size),
                    "value_floats" => a.floats.len() as u64,
                    "value_ints" => a.ints.len() as u64,
                    _ => 0,
                })
                .sum::<u64>()
        });
        let parameters = g
            .initializer
            .iter()
            .map(size)
            .chain(constants)
            .fold(0u64, u64::saturating_add);
        ModelSummary {
            inputs: self.real_inputs().into_iter().map(decl).collect(),
            outputs: g.output.iter().map(decl).collect(),
            opset: self.opset(),
            producer: format!(
                "{} {}",
                self.proto.producer_name, self.proto.producer_version
            )
            .trim()
            .to_string(),
            operators,
            parameters,
            ends_in_softmax: self.final_softmax().is_some(),
        }
    }

    /// Checks that the model is a classifier with one float 4-D image input
    /// and returns what is known of that input.
    pub fn image_input(&self) -> Result<ImageInput> {
        let not = |reason: String| Error::NotAClassifier {
            path: self.path.clone(),
            reason,
        };
        let inputs = self.real_inputs();
        let input = match inputs.as_slice() {
            [one] => *one,
            [] => return Err(not("the graph has no inputs".into())),
            many => {
                let names: Vec<_> = many.iter().map(|i| i.name.as_str()).collect();
                return Err(not(format!(
                    "it has {} inputs ({}); georob needs exactly one image input",
                    many.len(),
                    names.join(", ")
                )));
            }
        };
        let d = decl(input);
        if d.dtype != "float32" {
            return Err(not(format!(
                "input {:?} has element type {}; georob needs a float32 image tensor",
                d.name, d.dtype
            )));
        }
        let shape = d.shape.clone().unwrap_or_default();
        if shape.len() != 4 {
            return Err(not(format!(
                "input {:?} has rank {} (shape [{}]); georob needs a 4-D image batch (N,C,H,W) or (N,H,W,C)",
                d.name,
                shape.len(),
                shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        let is_ch = |d: &Dim| matches!(d.fixed(), Some(1 | 3 | 4));
        let layout = match (is_ch(&shape[1]), is_ch(&shape[3])) {
            (true, false) => Some(Layout::Nchw),
            (false, true) => Some(Layout::Nhwc),
            (true, true) => Some(Layout::Nchw),
            (false, false) => None,
        };
        Ok(ImageInput {
            name: d.name,
            fixed_batch: shape[0].fixed().filter(|&b| b > 0),
            layout,
            dims: [shape[1].fixed(), shape[2].fixed(), shape[3].fixed()],
        })
    }

    /// Fails when the first output is declared with a type that cannot hold class scores
    /// (an `ArgMax` index, a boolean): only float outputs, or undeclared ones, pass.
    pub fn check_scores(&self) -> Result<()> {
        let out = decl(&self.graph().output[0]);
        match out.dtype.as_str() {
            "float32" | "float16" | "float64" | "bfloat16" | "unknown" | "type#0" => Ok(()),
            other => Err(Error::NotAClassifier {
                path: self.path.clone(),
                reason: format!(
                    "its first output {:?} holds {other} values; georob needs float class scores",
                    out.name
                ),
            }),
        }
    }

    /// Declared class count of the first output, when its last dimension is fixed.
    pub fn declared_classes(&self) -> Option<usize> {
        let out = decl(&self.graph().output[0]);
        out.shape.and_then(|s| s.last().and_then(Dim::fixed))
    }

    /// The Softmax/LogSoftmax node whose output is (up to Identity, Reshape,
    /// Flatten or Squeeze) the first graph output, with its index.
    pub fn final_softmax(&self) -> Option<usize> {
        let g = self.graph();
        let mut name = g.output.first()?.name.clone();
        for _ in 0..8 {
            let (idx, node) = g
                .node
                .iter()
                .enumerate()
                .find(|(_, n)| n.output.contains(&name))?;
            match node.op_type.as_str() {
                "Softmax" | "LogSoftmax" if node.input.first().is_some_and(|i| !i.is_empty()) => {
                    return Some(idx)
                }
                "Identity" | "Reshape" | "Flatten" | "Squeeze" => {
                    name = node.input.first()?.clone()
                }
                _ => return None,
            }
        }
        None
    }

    /// Removes a final Softmax/LogSoftmax so that the first output holds its
    /// input, the logits. Returns false when there is none.
    pub fn strip_final_softmax(&mut self) -> bool {
        let Some(idx) = self.final_softmax() else {
            return false;
        };
        let graph = self.proto.graph.as_mut().expect("checked in from_bytes");
        let node = graph.node.remove(idx);
        let (from, to) = (node.output[0].clone(), node.input[0].clone());
        for n in &mut graph.node {
            for i in &mut n.input {
                if *i == from {
                    *i = to.clone();
                }
            }
        }
        for o in &mut graph.output {
            if o.name == from {
                o.name = to.clone();
            }
        }
        true
    }
}

fn decl(v: &pb::ValueInfoProto) -> TensorDecl {
    let (dtype, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => (
            dtype_name(t.elem_type),
            t.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(DimValue::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as usize),
                        Some(DimValue::DimParam(p)) => Dim::Dynamic(p.clone()),
                        _ => Dim::Dynamic(String::new()),
                    })
                    .collect()
            }),
        ),
        _ => ("unknown".to_string(), None),
    };
    TensorDecl {
        name: v.name.clone(),
        dtype,
        shape,
    }
}

fn dtype_name(code: i32) -> String {
    match code {
        FLOAT => "float32",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "float64",
        12 => "uint32",
        13 => "uint64",
        16 => "bfloat16",
        _ => return format!("type#{code}"),
    }
    .to_string()
}
