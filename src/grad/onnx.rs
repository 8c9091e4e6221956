//! Small helpers over the prost-generated ONNX protobuf types: attribute access, node, tensor
//! and value-info construction.

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::type_proto::{self, Value};
use tract_onnx::pb::{
    AttributeProto, ModelProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// The name used for a node in messages: its name, else its first output.
pub fn node_name(node: &NodeProto) -> String {
    if !node.name.is_empty() {
        node.name.clone()
    } else {
        node.output.first().cloned().unwrap_or_default()
    }
}

/// The `ai.onnx` opset version imported by `model` (0 when absent).
pub fn opset(model: &ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(0)
}

/// Finds attribute `name` of `node`.
pub fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// Integer attribute, or `default`.
pub fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map(|a| a.i).unwrap_or(default)
}

/// Float attribute, or `default`.
pub fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map(|a| a.f).unwrap_or(default)
}

/// Integer-list attribute, if present.
pub fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

/// String attribute, or `default`.
pub fn attr_s(node: &NodeProto, name: &str, default: &str) -> String {
    attr(node, name)
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_else(|| default.to_string())
}

/// The `i`-th input name of `node` when present and non-empty.
pub fn input(node: &NodeProto, i: usize) -> Option<&str> {
    node.input
        .get(i)
        .map(|s| s.as_str())
        .filter(|s| !s.is_empty())
}

/// An attribute value for [`make_node`].
#[derive(Debug, Clone)]
#[cfg_attr(not(test), allow(dead_code))] // Str and Tensor build test graphs
pub enum Attr {
    /// `INT`.
    Int(i64),
    /// `FLOAT`.
    Float(f32),
    /// `INTS`.
    Ints(Vec<i64>),
    /// `STRING`.
    Str(String),
    /// `TENSOR`.
    Tensor(Box<TensorProto>),
}

/// Builds one attribute.
pub fn make_attr(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => {
            a.i = i;
            a.r#type = AttributeType::Int as i32;
        }
        Attr::Float(f) => {
            a.f = f;
            a.r#type = AttributeType::Float as i32;
        }
        Attr::Ints(v) => {
            a.ints = v;
            a.r#type = AttributeType::Ints as i32;
        }
        Attr::Str(s) => {
            a.s = s.into_bytes();
            a.r#type = AttributeType::String as i32;
        }
        Attr::Tensor(t) => {
            a.t = Some(*t);
            a.r#type = AttributeType::Tensor as i32;
        }
    }
    a
}

/// Builds a node of the default domain.
pub fn make_node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<(&str, Attr)>,
) -> NodeProto {
    NodeProto {
        op_type: op.to_string(),
        name: name.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs.into_iter().map(|(n, v)| make_attr(n, v)).collect(),
        ..Default::default()
    }
}

/// A float32 tensor of shape `dims` (row-major data).
pub fn tensor_f32(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    tensor(name, dims, data.len(), DataType::Float, bytes)
}

/// An int64 tensor of shape `dims`.
pub fn tensor_i64(name: &str, dims: &[usize], data: &[i64]) -> TensorProto {
    let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    tensor(name, dims, data.len(), DataType::Int64, bytes)
}

/// A tensor of `len` elements of `data_type` in `raw_data` (little-endian), shape `dims`.
fn tensor(
    name: &str,
    dims: &[usize],
    len: usize,
    data_type: DataType,
    raw: Vec<u8>,
) -> TensorProto {
    assert_eq!(
        dims.iter().product::<usize>(),
        len,
        "tensor {name}: data/dims mismatch"
    );
    TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type as i32,
        raw_data: raw,
        ..Default::default()
    }
}

/// A value info with element type `elem` (an ONNX `DataType` code) and a concrete shape.
pub fn value_info(name: &str, elem: i32, dims: &[usize]) -> ValueInfoProto {
    let shape = TensorShapeProto {
        dim: dims
            .iter()
            .map(|&d| Dimension {
                value: Some(dimension::Value::DimValue(d as i64)),
                ..Default::default()
            })
            .collect(),
    };
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(Value::TensorType(type_proto::Tensor {
                elem_type: elem,
                shape: Some(shape),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A float32 value info with a concrete shape.
pub fn value_info_f32(name: &str, dims: &[usize]) -> ValueInfoProto {
    value_info(name, DataType::Float as i32, dims)
}

/// The element type code of a value info (0 when unknown).
pub fn value_info_elem(vi: &ValueInfoProto) -> i32 {
    match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Value::TensorType(t)) => t.elem_type,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let n = make_node(
            "Conv",
            "c",
            &["x", "w"],
            &["y"],
            vec![("strides", Attr::Ints(vec![2, 2])), ("group", Attr::Int(3))],
        );
        assert_eq!(attr_ints(&n, "strides"), Some(vec![2, 2]));
        assert_eq!(attr_i(&n, "group", 1), 3);
        assert_eq!(attr_i(&n, "missing", 7), 7);
        assert_eq!(input(&n, 1), Some("w"));
        assert_eq!(input(&n, 2), None);
        assert_eq!(node_name(&n), "c");
    }

    #[test]
    fn tensors_have_le_raw_data() {
        let t = tensor_f32("a", &[2], &[1.0, -2.0]);
        assert_eq!(t.raw_data.len(), 8);
        let t = tensor_i64("b", &[1, 2], &[3, 4]);
        assert_eq!(t.dims, vec![1, 2]);
        assert_eq!(t.raw_data.len(), 16);
    }
}
