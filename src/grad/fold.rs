//! Constant folding of an ONNX graph before a backend opens it: nodes that compute from a
//! few constant values alone (initializers, `Constant` nodes, and what follows from them) are
//! evaluated once with tract and replaced by initializers holding their results.
//!
//! ONNX Runtime folds them itself, but it does so in every session it opens, and georob opens
//! several per graph (one per thread). Exported models carry many such subgraphs:
//! EfficientNet-Lite0's static paddings (`Constant` → `ConstantOfShape` → `Concat` → `Slice`
//! → `Transpose` → `Cast` → `Pad`) are 341 of its 456 nodes: folded once here, no session
//! folds them again. Nodes that read large constants (the backward pass's reordered weights)
//! are left to the backend: folding those made the graph larger and gained nothing.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto, ValueInfoProto};
use tract_onnx::prelude::*;

use super::onnx::value_info;

/// Ops never folded: their results are random, they hold subgraphs, or they are the
/// quantisation markers that ONNX Runtime fuses with the ops around them into integer kernels
/// (a folded `DequantizeLinear` of int8 weights would turn a `QLinearConv` back into a float
/// convolution and change the results of a quantised model).
const NOT_FOLDED: &[&str] = &[
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "If",
    "Loop",
    "Scan",
];

/// Most constant values a folded node may be computed from, and most values a folded result
/// may hold beyond that (a `ConstantOfShape` or `Expand` of a few values stays a node rather
/// than become a large initializer).
const SMALL: usize = 4096;

/// Replaces the nodes of `model` that compute from at most 4,096 constant values by
/// initializers holding their results (a result of more values stays a node); returns how many
/// nodes went. The model stays as it was where tract cannot evaluate them (the backend then
/// folds them itself) and on big-endian platforms (initializer bytes are little-endian).
pub fn fold_constants(model: &mut ModelProto) -> usize {
    let Some(g) = model.graph.as_ref() else {
        return 0;
    };
    if cfg!(target_endian = "big") {
        return 0;
    }
    let init_len: HashMap<&str, usize> = g
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), numel(&t.dims)))
        .collect();
    let outputs: HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    // Foldable nodes, and how many constant values each of their outputs comes from.
    let mut source_len: HashMap<&str, usize> = init_len.clone();
    let mut fold: Vec<bool> = vec![false; g.node.len()];
    for (i, node) in g.node.iter().enumerate() {
        let candidate = node.domain.is_empty()
            && !NOT_FOLDED.contains(&node.op_type.as_str())
            && node.output.iter().all(|o| !outputs.contains(o.as_str()))
            && node
                .input
                .iter()
                .all(|x| x.is_empty() || source_len.contains_key(x.as_str()));
        if !candidate {
            continue;
        }
        let own: usize = node
            .attribute
            .iter()
            .filter_map(|a| a.t.as_ref())
            .map(|t| numel(&t.dims))
            .sum();
        let from: usize = own
            + node
                .input
                .iter()
                .filter_map(|x| source_len.get(x.as_str()))
                .sum::<usize>();
        if from > SMALL {
            continue;
        }
        for o in node.output.iter().filter(|o| !o.is_empty()) {
            source_len.insert(o.as_str(), from);
        }
        fold[i] = true;
    }
    if !fold.iter().any(|&f| f) {
        return 0;
    }
    let Some(values) = evaluate(model, &fold) else {
        return 0;
    };
    let g = model.graph.as_ref().expect("graph checked above");
    let producer: HashMap<&str, usize> = g
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let types = declared_types(g);
    // Folded values that kept nodes read become initializers, unless they grew large or
    // cannot be written; their producers then stay nodes too, whose own inputs may then be
    // needed: repeat until nothing changes.
    let mut inits: HashMap<&str, TensorProto> = HashMap::new();
    loop {
        let mut changed = false;
        for (i, node) in g.node.iter().enumerate() {
            if fold[i] {
                continue;
            }
            for x in &node.input {
                let Some(&p) = producer.get(x.as_str()) else {
                    continue;
                };
                if !fold[p] || inits.contains_key(x.as_str()) {
                    continue;
                }
                let written = values
                    .get(x.as_str())
                    .filter(|t| t.len() <= SMALL)
                    .and_then(|t| tensor_proto(x, t, types.get(x.as_str()).copied()));
                match written {
                    Some(t) => {
                        inits.insert(x, t);
                    }
                    None => {
                        fold[p] = false;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    inits.retain(|name, _| fold[producer[name]]);
    let mut new_inits: Vec<TensorProto> = inits.into_values().collect();
    new_inits.sort_by(|a, b| a.name.cmp(&b.name));
    let init_names: HashSet<String> = init_len.keys().map(|s| s.to_string()).collect();
    let list_inits = model.ir_version < 4;
    let g = model.graph.as_mut().expect("graph checked above");
    let nodes = std::mem::take(&mut g.node);
    let before = nodes.len();
    g.node = nodes
        .into_iter()
        .zip(&fold)
        .filter(|(_, &f)| !f)
        .map(|(n, _)| n)
        .collect();
    // Models of IR version < 4 list initializers among the inputs too.
    if list_inits {
        g.input.extend(new_inits.iter().map(|t| {
            let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
            value_info(&t.name, t.data_type, &dims)
        }));
    }
    g.initializer.extend(new_inits);
    let used: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(g.output.iter().map(|o| o.name.clone()))
        .collect();
    g.initializer.retain(|t| used.contains(&t.name));
    g.input
        .retain(|i| !init_names.contains(&i.name) || used.contains(&i.name));
    before - g.node.len()
}

/// Values in a tensor of shape `dims`.
fn numel(dims: &[i64]) -> usize {
    dims.iter().map(|&d| d.max(0) as usize).product()
}

/// Runs the nodes marked in `fold` (they read initializers and each other only) on tract and
/// returns every output by name; `None` where tract cannot.
fn evaluate(model: &ModelProto, fold: &[bool]) -> Option<HashMap<String, Tensor>> {
    let g = model.graph.as_ref()?;
    let nodes: Vec<NodeProto> = g
        .node
        .iter()
        .zip(fold)
        .filter(|(_, &f)| f)
        .map(|(n, _)| n.clone())
        .collect();
    let read: HashSet<&str> = nodes
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let names: Vec<String> = nodes
        .iter()
        .flat_map(|n| n.output.iter().filter(|o| !o.is_empty()).cloned())
        .collect();
    let sub = ModelProto {
        ir_version: model.ir_version.max(4),
        opset_import: model.opset_import.clone(),
        graph: Some(tract_onnx::pb::GraphProto {
            name: "constants".into(),
            initializer: g
                .initializer
                .iter()
                .filter(|t| read.contains(t.name.as_str()))
                .cloned()
                .collect(),
            node: nodes,
            output: names
                .iter()
                .map(|n| ValueInfoProto {
                    name: n.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // tract panics rather than errs on some malformed forms: no folding then either.
    let run = crate::model::guarded(move || -> TractResult<TVec<TValue>> {
        tract_onnx::onnx()
            .model_for_proto_model(&sub)?
            .into_typed()?
            .into_runnable()?
            .run(tvec![])
    });
    let values = run.ok()?.ok()?;
    Some(
        names
            .into_iter()
            .zip(values)
            .map(|(n, v)| (n, v.into_tensor()))
            .collect(),
    )
}

/// `t` as an initializer named `name` (little-endian raw data), for the element types ONNX
/// and tract share a byte layout for; `None` where its type is not the one the graph
/// declares (`declared`, when known). tract holds integer shape values as `TDim`; those take
/// the declared type, which must be an integer type.
pub(crate) fn tensor_proto(
    name: &str,
    t: &Tensor,
    declared: Option<DataType>,
) -> Option<TensorProto> {
    let cast;
    let t = if t.datum_type() == DatumType::TDim {
        let dt = match declared? {
            DataType::Int64 => DatumType::I64,
            DataType::Int32 => DatumType::I32,
            _ => return None,
        };
        cast = t.cast_to_dt(dt).ok()?.into_owned();
        &cast
    } else {
        t
    };
    let data_type = match t.datum_type() {
        DatumType::F32 => DataType::Float,
        DatumType::F64 => DataType::Double,
        DatumType::F16 => DataType::Float16,
        DatumType::I64 => DataType::Int64,
        DatumType::I32 => DataType::Int32,
        DatumType::I16 => DataType::Int16,
        DatumType::I8 => DataType::Int8,
        DatumType::U64 => DataType::Uint64,
        DatumType::U32 => DataType::Uint32,
        DatumType::U16 => DataType::Uint16,
        DatumType::U8 => DataType::Uint8,
        DatumType::Bool => DataType::Bool,
        _ => return None,
    };
    if declared.is_some_and(|d| d != data_type) || !t.is_plain_ram() {
        return None;
    }
    let bytes = t.as_bytes();
    Some(TensorProto {
        name: name.to_string(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: data_type as i32,
        raw_data: bytes.to_vec(),
        ..Default::default()
    })
}

/// The element type of every tensor whose type the graph fixes where tract may hold `TDim`:
/// initializers, `Constant`, `Cast`, `Shape`, `Size`, `ConstantOfShape`, and ops whose output
/// has their first input's type.
fn declared_types(g: &tract_onnx::pb::GraphProto) -> HashMap<&str, DataType> {
    const SAME_AS_FIRST: &[&str] = &[
        "Identity",
        "Reshape",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Transpose",
        "Concat",
        "Slice",
        "Gather",
        "Expand",
        "Tile",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Neg",
        "Abs",
        "Min",
        "Max",
    ];
    let mut types: HashMap<&str, DataType> = g
        .initializer
        .iter()
        .filter_map(|t| Some((t.name.as_str(), DataType::try_from(t.data_type).ok()?)))
        .collect();
    for node in &g.node {
        let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
        let dt = match node.op_type.as_str() {
            "Shape" | "Size" => Some(DataType::Int64),
            "Cast" => attr("to").and_then(|a| DataType::try_from(a.i as i32).ok()),
            "Constant" => match node.attribute.first() {
                Some(a) if a.name == "value" => {
                    a.t.as_ref()
                        .and_then(|t| DataType::try_from(t.data_type).ok())
                }
                Some(a) if a.name == "value_int" || a.name == "value_ints" => Some(DataType::Int64),
                Some(a) if a.name == "value_float" || a.name == "value_floats" => {
                    Some(DataType::Float)
                }
                _ => None,
            },
            "ConstantOfShape" => match attr("value").and_then(|a| a.t.as_ref()) {
                Some(t) => DataType::try_from(t.data_type).ok(),
                None => Some(DataType::Float),
            },
            op if SAME_AS_FIRST.contains(&op) => node
                .input
                .first()
                .and_then(|x| types.get(x.as_str()).copied()),
            _ => None,
        };
        if let (Some(dt), Some(o)) = (dt, node.output.first()) {
            types.insert(o.as_str(), dt);
        }
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::onnx::{make_node, tensor_f32, tensor_i64, Attr};
    use crate::grad::testutil::{model, plan, Rng};

    /// Runs `m` on tract at input `x` of `shape`.
    fn run(m: &ModelProto, shape: &[usize], x: &[f32]) -> Vec<f32> {
        let input = tract_ndarray::ArrayD::from_shape_vec(shape, x.to_vec()).unwrap();
        let out = plan(m, &[shape])
            .run(tvec![Tensor::from(input).into()])
            .unwrap();
        out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    fn ops(m: &ModelProto) -> Vec<&str> {
        let g = m.graph.as_ref().unwrap();
        g.node.iter().map(|n| n.op_type.as_str()).collect()
    }

    /// A static-padding subgraph as PyTorch exports it (integer pads computed from
    /// constants), a small weight reshaped by a constant shape, and a large
    /// `ConstantOfShape` added to the result.
    fn padded_conv(big: usize) -> ModelProto {
        let i64_zero = tensor_i64("", &[1], &[0]);
        let nodes = vec![
            make_node(
                "ConstantOfShape",
                "zeros",
                &["two"],
                &["z"],
                vec![("value", Attr::Tensor(Box::new(i64_zero)))],
            ),
            make_node(
                "Concat",
                "half",
                &["z", "ones"],
                &["h"],
                vec![("axis", Attr::Int(0))],
            ),
            make_node(
                "Concat",
                "all",
                &["h", "h"],
                &["p"],
                vec![("axis", Attr::Int(0))],
            ),
            make_node(
                "Cast",
                "cast",
                &["p"],
                &["pads"],
                vec![("to", Attr::Int(7))],
            ),
            make_node("Pad", "pad", &["x", "pads"], &["xp"], vec![]),
            make_node("Reshape", "w", &["w_flat", "w_shape"], &["w"], vec![]),
            make_node("Conv", "conv", &["xp", "w"], &["y"], vec![]),
            make_node(
                "ConstantOfShape",
                "bias",
                &["y_shape"],
                &["b"],
                vec![(
                    "value",
                    Attr::Tensor(Box::new(tensor_f32("", &[1], &[0.5]))),
                )],
            ),
            make_node("Add", "add", &["y", "b"], &["out"], vec![]),
        ];
        let mut rng = Rng(7);
        let inits = vec![
            tensor_i64("two", &[1], &[2]),
            tensor_i64("ones", &[2], &[1, 1]),
            tensor_f32("w_flat", &[18], &rng.vec(18, 0.5)),
            tensor_i64("w_shape", &[4], &[1, 2, 3, 3]),
            tensor_i64("y_shape", &[4], &[1, 1, big as i64, big as i64]),
        ];
        model(nodes, inits, "x", &[1, 2, big, big], "out", 13)
    }

    #[test]
    fn constant_chains_become_initializers_with_the_same_results() {
        let m = padded_conv(8);
        let mut folded = m.clone();
        assert_eq!(fold_constants(&mut folded), 6);
        assert_eq!(ops(&folded), ["Pad", "Conv", "Add"]);
        let g = folded.graph.as_ref().unwrap();
        let pads = g.initializer.iter().find(|t| t.name == "pads").unwrap();
        assert_eq!(pads.data_type, DataType::Int64 as i32);
        assert_eq!(pads.dims, [8]);
        // Inputs of folded nodes only are gone.
        assert!(g
            .initializer
            .iter()
            .all(|t| t.name != "two" && t.name != "w_flat"));
        let x = Rng(3).vec(2 * 8 * 8, 1.0);
        assert_eq!(run(&folded, &[1, 2, 8, 8], &x), run(&m, &[1, 2, 8, 8], &x));
    }

    #[test]
    fn large_results_and_random_ops_stay_nodes() {
        // The bias is 80×80 values from 4: it stays a ConstantOfShape.
        let m = padded_conv(80);
        let mut folded = m.clone();
        assert_eq!(fold_constants(&mut folded), 5);
        assert_eq!(ops(&folded), ["Pad", "Conv", "ConstantOfShape", "Add"]);
        let x = Rng(5).vec(2 * 80 * 80, 1.0);
        assert_eq!(
            run(&folded, &[1, 2, 80, 80], &x),
            run(&m, &[1, 2, 80, 80], &x)
        );

        let nodes = vec![
            make_node(
                "RandomUniform",
                "r",
                &[],
                &["r"],
                vec![("shape", Attr::Ints(vec![1, 4]))],
            ),
            make_node("Add", "a", &["x", "r"], &["y"], vec![]),
        ];
        let mut m = model(nodes, vec![], "x", &[1, 4], "y", 13);
        assert_eq!(fold_constants(&mut m), 0);
        assert_eq!(ops(&m), ["RandomUniform", "Add"]);
    }

    /// ONNX Runtime fuses `DequantizeLinear` of int8 weights with the op that reads them into
    /// an integer kernel: the pattern must reach it intact.
    #[test]
    fn dequantized_weights_stay_nodes() {
        let w_q = TensorProto {
            name: "w_q".into(),
            dims: vec![1, 4],
            data_type: DataType::Int8 as i32,
            raw_data: vec![1, 2, 0xff, 4],
            ..Default::default()
        };
        let nodes = vec![
            make_node("DequantizeLinear", "dq", &["w_q", "scale"], &["w"], vec![]),
            make_node("Add", "a", &["x", "w"], &["y"], vec![]),
        ];
        let inits = vec![w_q, tensor_f32("scale", &[], &[0.5])];
        let mut m = model(nodes, inits, "x", &[1, 4], "y", 13);
        assert_eq!(fold_constants(&mut m), 0);
        assert_eq!(ops(&m), ["DequantizeLinear", "Add"]);
    }
}
