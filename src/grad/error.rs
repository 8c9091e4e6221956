//! Errors of the gradient-graph builder.

use std::fmt;

/// A node on the input→logits path for which no VJP rule exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedNode {
    /// ONNX operator type, e.g. `"Resize"` (prefixed with its domain when not `ai.onnx`).
    pub op_type: String,
    /// Node name, or its first output name when the node is unnamed.
    pub node_name: String,
}

impl fmt::Display for UnsupportedNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (node `{}`)", self.op_type, self.node_name)
    }
}

/// The nodes grouped by operator, in order of first appearance: `Op (node `a`)` for one
/// node, `Op ×n (first: node `a`)` for several, so that a quantised model's hundred
/// `QuantizeLinear` nodes make one line.
pub fn list(nodes: &[UnsupportedNode]) -> String {
    let mut groups: Vec<(&str, &str, usize)> = vec![];
    for n in nodes {
        match groups.iter_mut().find(|g| g.0 == n.op_type) {
            Some(g) => g.2 += 1,
            None => groups.push((&n.op_type, &n.node_name, 1)),
        }
    }
    groups
        .iter()
        .map(|&(op, first, count)| match count {
            1 => format!("{op} (node `{first}`)"),
            _ => format!("{op} ×{count} (first: node `{first}`)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a gradient graph could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GradError {
    /// Some nodes between the input and the logits have no VJP rule; callers may fall back to
    /// finite differences.
    #[error("no VJP rule for {} node(s) on the input→logits path: {}", .0.len(), list(.0))]
    MissingRules(Vec<UnsupportedNode>),
    /// A shape does not fit what the builder or a rule expects.
    #[error("shape error at {op} node `{node}`: {reason}")]
    Shape {
        /// Operator type.
        op: String,
        /// Node name.
        node: String,
        /// What was wrong.
        reason: String,
    },
    /// The node has a rule, but not for this attribute or input form.
    #[error("unsupported form of {op} node `{node}`: {reason}")]
    Unsupported {
        /// Operator type.
        op: String,
        /// Node name.
        node: String,
        /// What is not supported.
        reason: String,
    },
    /// The model itself is not a single-input float classifier the builder understands.
    #[error("unsupported model: {0}")]
    Model(String),
    /// tract could not load or run the model while inferring shapes.
    #[error("tract failed while {context}: {message}")]
    Tract {
        /// What the builder was doing.
        context: String,
        /// tract's error chain.
        message: String,
    },
}

impl GradError {
    /// Builds a [`GradError::Unsupported`] for `node`.
    pub(crate) fn unsupported(node: &tract_onnx::pb::NodeProto, reason: impl Into<String>) -> Self {
        GradError::Unsupported {
            op: node.op_type.clone(),
            node: super::onnx::node_name(node),
            reason: reason.into(),
        }
    }

    /// Builds a [`GradError::Shape`] for `node`.
    pub(crate) fn shape(node: &tract_onnx::pb::NodeProto, reason: impl Into<String>) -> Self {
        GradError::Shape {
            op: node.op_type.clone(),
            node: super::onnx::node_name(node),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_rules_name_every_operator() {
        let e = GradError::MissingRules(vec![
            UnsupportedNode {
                op_type: "Resize".into(),
                node_name: "up1".into(),
            },
            UnsupportedNode {
                op_type: "com.x.Foo".into(),
                node_name: "foo".into(),
            },
        ]);
        let s = e.to_string();
        assert!(s.contains("Resize (node `up1`)"), "{s}");
        assert!(s.contains("com.x.Foo (node `foo`)"), "{s}");
    }

    #[test]
    fn missing_rules_are_grouped_by_operator_in_order() {
        let node = |op: &str, name: &str| UnsupportedNode {
            op_type: op.into(),
            node_name: name.into(),
        };
        let nodes = [
            node("QuantizeLinear", "q0"),
            node("DequantizeLinear", "d0"),
            node("QuantizeLinear", "q1"),
            node("Erf", "e"),
            node("DequantizeLinear", "d1"),
            node("QuantizeLinear", "q2"),
        ];
        assert_eq!(
            list(&nodes),
            "QuantizeLinear ×3 (first: node `q0`), DequantizeLinear ×2 (first: node `d0`), \
             Erf (node `e`)"
        );
    }
}
