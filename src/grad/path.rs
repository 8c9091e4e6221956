//! Graph analysis independent of shapes: the model input, the logits tensor, which tensors lie
//! on the float data path from the input ("active"), and which nodes need VJP rules.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, ValueInfoProto};

use super::error::{GradError, UnsupportedNode};
use super::onnx::{attr_i, node_name, value_info_elem};
use super::rules::rule;

/// Ops whose outputs never carry a gradient: integer/boolean results, piecewise-constant
/// functions (zero derivative almost everywhere) and value-independent generators.
const NON_DIFFERENTIABLE: &[&str] = &[
    "Shape",
    "Size",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Not",
    "ArgMax",
    "ArgMin",
    "NonZero",
    "IsNaN",
    "IsInf",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
    "ConstantOfShape",
    "Range",
    "EyeLike",
    "RandomUniformLike",
    "RandomNormalLike",
    "Bernoulli",
    "OneHot",
];

/// ONNX `DataType` codes of float types.
fn is_float_code(code: i64) -> bool {
    matches!(code, 1 | 10 | 11 | 16)
}

/// Whether output `i` of `node` can carry a gradient, judged from the op alone.
fn output_may_be_float(node: &NodeProto, i: usize) -> bool {
    if !node.domain.is_empty() && node.domain != "ai.onnx" {
        return true;
    }
    let op = node.op_type.as_str();
    if NON_DIFFERENTIABLE.contains(&op) {
        return false;
    }
    match op {
        "Cast" => is_float_code(attr_i(node, "to", 1)),
        "MaxPool" | "Dropout" | "TopK" => i == 0,
        _ => true,
    }
}

/// The analysed structure of a model graph.
#[derive(Debug)]
pub struct PathInfo {
    /// Name of the single float input.
    pub input: String,
    /// Name of the tensor differentiated (pre-softmax when the graph ends in a softmax).
    pub logits: String,
    /// Whether `logits` is the input of a final Softmax/LogSoftmax.
    pub pre_softmax: bool,
    /// Tensors on the float data path from the input.
    pub active: HashSet<String>,
    /// Tensors the logits depend on (any path, shape subgraphs included).
    pub needed: HashSet<String>,
    /// Indices (into `graph.node`) of the nodes with an active input and an active output
    /// the logits depend on, in graph order.
    pub path: Vec<usize>,
}

/// The graph of a model, or an error.
pub fn graph(model: &ModelProto) -> Result<&GraphProto, GradError> {
    model
        .graph
        .as_ref()
        .ok_or_else(|| GradError::Model("model has no graph".into()))
}

/// Finds the single non-initializer input, which must be float32 (or untyped).
pub fn find_input(g: &GraphProto) -> Result<String, GradError> {
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&ValueInfoProto> = g
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .collect();
    match inputs.as_slice() {
        [one] => match value_info_elem(one) {
            0 | 1 => Ok(one.name.clone()),
            t => Err(GradError::Model(format!(
                "input `{}` has ONNX element type {t}, not float32",
                one.name
            ))),
        },
        _ => Err(GradError::Model(format!(
            "expected exactly one non-initializer input, found {}: {:?}",
            inputs.len(),
            inputs.iter().map(|i| &i.name).collect::<Vec<_>>()
        ))),
    }
}

/// Finds the logits: the first graph output, or the input of a final Softmax/LogSoftmax
/// (possibly followed by Identity, Reshape, Flatten, Squeeze or Unsqueeze).
pub fn find_logits(g: &GraphProto) -> Result<(String, bool), GradError> {
    let out = g
        .output
        .first()
        .ok_or_else(|| GradError::Model("graph has no output".into()))?;
    let producer: HashMap<&str, &NodeProto> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let mut t = out.name.as_str();
    // A walk back from the output, each tensor visited once (a cyclic graph would loop).
    let mut seen: HashSet<&str> = HashSet::new();
    while let Some(node) = producer.get(t) {
        if !seen.insert(t) {
            return Err(GradError::Model(format!(
                "the graph has a cycle through `{t}`"
            )));
        }
        let first = || {
            node.input.first().filter(|i| !i.is_empty()).ok_or_else(|| {
                GradError::Model(format!(
                    "{} node `{}` has no input",
                    node.op_type,
                    node_name(node)
                ))
            })
        };
        match node.op_type.as_str() {
            "Identity" | "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => t = first()?,
            "Softmax" | "LogSoftmax" => return Ok((first()?.clone(), true)),
            _ => break,
        }
    }
    Ok((out.name.clone(), false))
}

/// Analyses `model`: input, logits, active tensors and the nodes needing rules. `is_float`
/// refines activity with known element types (`None`: unknown).
pub fn analyse(
    model: &ModelProto,
    is_float: &dyn Fn(&str) -> Option<bool>,
) -> Result<PathInfo, GradError> {
    let g = graph(model)?;
    let input = find_input(g)?;
    let (logits, pre_softmax) = find_logits(g)?;

    let mut active: HashSet<String> = HashSet::new();
    active.insert(input.clone());
    for node in &g.node {
        if !node.input.iter().any(|i| active.contains(i)) {
            continue;
        }
        for (i, o) in node.output.iter().enumerate() {
            let float = output_may_be_float(node, i) && is_float(o).unwrap_or(true);
            // QuantizeLinear's integer output still depends on the input:
            // keep it on the path so that the missing rule is named (and
            // finite differences take over) instead of a zero gradient.
            if !o.is_empty() && (float || node.op_type == "QuantizeLinear") {
                active.insert(o.clone());
            }
        }
    }
    if !active.contains(&logits) {
        return Err(GradError::Model(format!(
            "the output `{logits}` does not depend on the input `{input}` through operations \
             that carry a gradient (integer or piecewise-constant steps on the way)"
        )));
    }

    let mut needed: HashSet<String> = HashSet::new();
    needed.insert(logits.clone());
    for node in g.node.iter().rev() {
        if node.output.iter().any(|o| needed.contains(o)) {
            for i in &node.input {
                if !i.is_empty() {
                    needed.insert(i.clone());
                }
            }
        }
    }

    let path = g
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            n.input.iter().any(|i| active.contains(i))
                && n.output
                    .iter()
                    .any(|o| active.contains(o) && needed.contains(o))
        })
        .map(|(i, _)| i)
        .collect();
    Ok(PathInfo {
        input,
        logits,
        pre_softmax,
        active,
        needed,
        path,
    })
}

/// The nodes on the input→logits path that have no VJP rule.
pub fn ops_without_rule(model: &ModelProto) -> Vec<UnsupportedNode> {
    let Ok(info) = analyse(model, &|_| None) else {
        return vec![];
    };
    let Ok(g) = graph(model) else { return vec![] };
    missing(g, &info)
}

/// The nodes of `info.path` without a rule.
pub fn missing(g: &GraphProto, info: &PathInfo) -> Vec<UnsupportedNode> {
    info.path
        .iter()
        .map(|&i| &g.node[i])
        .filter(|n| {
            let default_domain = n.domain.is_empty() || n.domain == "ai.onnx";
            !default_domain || rule(&n.op_type).is_none()
        })
        .map(|n| UnsupportedNode {
            op_type: if n.domain.is_empty() || n.domain == "ai.onnx" {
                n.op_type.clone()
            } else {
                format!("{}.{}", n.domain, n.op_type)
            },
            node_name: node_name(n),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::build_gradient_graph;
    use crate::grad::onnx::*;
    use crate::grad::testutil::{assert_grad, chain, model, node, w};

    #[test]
    fn finds_pre_softmax_logits_and_skips_shape_paths() {
        let nodes = vec![
            make_node("Shape", "s", &["x"], &["s"], vec![]),
            make_node("Reshape", "r", &["x", "s2"], &["flat"], vec![]),
            make_node("MatMul", "mm", &["flat", "w"], &["z"], vec![]),
            make_node("Foo", "foo", &["z"], &["z2"], vec![]),
            make_node(
                "Softmax",
                "sm",
                &["z2"],
                &["p"],
                vec![("axis", Attr::Int(1))],
            ),
            make_node("Identity", "id", &["p"], &["out"], vec![]),
        ];
        let inits = vec![
            tensor_i64("s2", &[2], &[2, 6]),
            tensor_f32("w", &[6, 2], &[0.0; 12]),
        ];
        let m = model(nodes, inits, "x", &[2, 3, 2], "out", 13);
        let info = analyse(&m, &|_| None).unwrap();
        assert_eq!(info.logits, "z2");
        assert!(info.pre_softmax);
        assert!(!info.active.contains("s"));
        let missing = ops_without_rule(&m);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].op_type, "Foo");
        assert_eq!(missing[0].node_name, "foo");
    }

    #[test]
    fn final_softmax_is_skipped() {
        let nodes = vec![
            node("Gemm", &["x", "b"], "z", vec![]),
            node("Softmax", &["z"], "p", vec![("axis", Attr::Int(1))]),
            node("Identity", &["p"], "y", vec![]),
        ];
        let m = chain(nodes, vec![w("b", &[4, 3], 21)], &[2, 4], 13);
        let g = build_gradient_graph(&m, &[2, 4], 2).unwrap();
        assert!(g.pre_softmax);
        assert_eq!((g.batch, g.classes, g.num_logits), (2, 2, 3));
        assert_grad(&m, &[2, 4], 1.0);
    }

    #[test]
    fn cycles_and_input_less_final_nodes_are_errors() {
        let m = chain(
            vec![node("Identity", &["y"], "y", vec![])],
            vec![],
            &[2, 3],
            13,
        );
        let e = find_logits(graph(&m).unwrap()).unwrap_err().to_string();
        assert!(e.contains("cycle through `y`"), "{e}");
        for op in ["Identity", "Softmax"] {
            let m = chain(vec![node(op, &[], "y", vec![])], vec![], &[2, 3], 13);
            let e = find_logits(graph(&m).unwrap()).unwrap_err().to_string();
            assert!(e.contains("has no input"), "{op}: {e}");
        }
    }

    #[test]
    fn missing_rules_are_listed_by_name() {
        let mut custom = node("Foo", &["x"], "f", vec![]);
        custom.domain = "com.example".into();
        let nodes = vec![
            custom,
            node("Relu", &["f"], "r", vec![]),
            node("Hardmax", &["r"], "y", vec![]),
        ];
        let m = chain(nodes, vec![], &[2, 3], 13);
        let miss = ops_without_rule(&m);
        let names: Vec<_> = miss
            .iter()
            .map(|u| (u.op_type.as_str(), u.node_name.as_str()))
            .collect();
        assert_eq!(names, vec![("com.example.Foo", "f"), ("Hardmax", "y")]);
        let err = build_gradient_graph(&m, &[2, 3], 1).unwrap_err();
        assert!(
            matches!(err, GradError::MissingRules(ref v) if v.len() == 2),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("Hardmax (node `y`)") && msg.contains("com.example.Foo (node `f`)"),
            "{msg}"
        );
    }

    #[test]
    fn constant_nodes_and_initializer_inputs() {
        let mut m = chain(
            vec![
                make_node(
                    "Constant",
                    "k",
                    &[],
                    &["k"],
                    vec![(
                        "value",
                        Attr::Tensor(Box::new(tensor_f32("", &[3], &[1.0, 2.0, 3.0]))),
                    )],
                ),
                node("Mul", &["x", "k"], "m", vec![]),
                node("Gemm", &["m", "b"], "y", vec![]),
            ],
            vec![w("b", &[3, 2], 71)],
            &[2, 3],
            13,
        );
        // List the initializer as a graph input too (old exporters did).
        let g = m.graph.as_mut().unwrap();
        g.input.push(value_info_f32("b", &[3, 2]));
        assert_grad(&m, &[2, 3], 1.0);
    }

    #[test]
    fn a_path_cut_by_integer_steps_is_an_error_not_a_zero_gradient() {
        let nodes = vec![
            node("Cast", &["x"], "i", vec![("to", Attr::Int(7))]),
            node("Cast", &["i"], "y", vec![("to", Attr::Int(1))]),
        ];
        let m = chain(nodes, vec![], &[2, 3], 13);
        let err = build_gradient_graph(&m, &[2, 3], 1).unwrap_err();
        assert!(
            err.to_string().contains("does not depend on the input"),
            "{err}"
        );
        // Fake quantisation stays on the path: its operators are named instead.
        let nodes = vec![
            node("QuantizeLinear", &["x", "s"], "q", vec![]),
            node("DequantizeLinear", &["q", "s"], "y", vec![]),
        ];
        let m = chain(nodes, vec![w("s", &[], 1)], &[2, 3], 13);
        let miss: Vec<String> = ops_without_rule(&m)
            .iter()
            .map(|u| u.op_type.clone())
            .collect();
        assert_eq!(miss, ["QuantizeLinear", "DequantizeLinear"]);
    }
}
