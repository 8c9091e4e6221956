//! Concrete shapes, element types and small values of every tensor of a model, obtained by one
//! tract run at the concrete input shape ("probe run").
//!
//! Running the model, rather than reading tract's inference facts, gives concrete values for
//! shape subgraphs (`Shape` → `Gather` → `Concat` → `Reshape`, ...) as well, which the backward
//! pass needs as build-time constants.

use std::collections::HashMap;
use std::sync::Arc;

use tract_onnx::pb::{ModelProto, ValueInfoProto};
use tract_onnx::prelude::*;

use super::error::GradError;

/// Largest tensor (in elements) whose value the probe keeps; larger float tensors keep only
/// their shape. Non-float tensors are always kept.
const KEEP_VALUES_UP_TO: usize = 4096;

/// What the probe run learnt about every named tensor of the graph.
#[derive(Debug, Default, Clone)]
pub struct Probe {
    /// Concrete shape of every node output, initializer and the input.
    pub shapes: HashMap<String, Vec<usize>>,
    /// Element type of the same tensors.
    pub dtypes: HashMap<String, DatumType>,
    /// Values of small or non-float tensors (initializers included).
    pub values: HashMap<String, Arc<Tensor>>,
}

fn tract_err(context: &str, e: impl std::fmt::Display + std::fmt::Debug) -> GradError {
    GradError::Tract {
        context: context.to_string(),
        message: format!("{e:?}"),
    }
}

/// Converts a tract error into a [`GradError::Tract`] naming what was being done.
pub(crate) fn tract_error(context: &str) -> impl Fn(TractError) -> GradError + '_ {
    move |e| tract_err(context, e)
}

/// Runs `model` once on a deterministic pseudo-random input of `input_shape` with every node
/// output exposed, and records shapes, types and small values.
pub fn probe(model: &ModelProto, input_shape: &[usize]) -> Result<Probe, GradError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| GradError::Model("no graph".into()))?;
    let mut out = Probe::default();

    let provider = tract_onnx::data_resolver::MmapDataResolver;
    for init in &graph.initializer {
        let dims: Vec<usize> = init.dims.iter().map(|&d| d.max(0) as usize).collect();
        out.shapes.insert(init.name.clone(), dims.clone());
        let numel: usize = dims.iter().product();
        let t = tract_onnx::tensor::load_tensor(&provider, init, None)
            .map_err(tract_error("loading an initializer"))?;
        out.dtypes.insert(init.name.clone(), t.datum_type());
        if numel <= KEEP_VALUES_UP_TO || !t.datum_type().is_float() {
            out.values.insert(init.name.clone(), Arc::new(t));
        }
    }

    for inp in &graph.input {
        if !out.shapes.contains_key(&inp.name) {
            out.shapes.insert(inp.name.clone(), input_shape.to_vec());
            out.dtypes.insert(inp.name.clone(), DatumType::F32);
        }
    }

    let mut names: Vec<String> = vec![];
    let mut seen = std::collections::HashSet::new();
    for node in &graph.node {
        for o in &node.output {
            if !o.is_empty() && seen.insert(o.as_str()) {
                names.push(o.clone());
            }
        }
    }
    let mut proto = model.clone();
    let g = proto.graph.as_mut().expect("graph checked above");
    g.output = names
        .iter()
        .map(|n| ValueInfoProto {
            name: n.clone(),
            ..Default::default()
        })
        .collect();
    g.value_info.clear();

    let input = random_input(input_shape);
    // tract panics (rather than erroring) on some malformed or unsupported forms, e.g. negative
    // Pad pads; report those as errors too.
    let run = crate::model::guarded(move || -> Result<TVec<TValue>, GradError> {
        let typed = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .map_err(tract_error("loading the model for the probe run"))?
            .with_input_fact(0, f32::fact(input_shape).into())
            .map_err(tract_error("setting the input shape"))?
            .into_typed()
            .map_err(tract_error("typing the model for the probe run"))?;
        crate::limits::check_typed_model(&typed).map_err(GradError::Model)?;
        let plan = typed
            .into_runnable()
            .map_err(tract_error("planning the probe run"))?;
        plan.run(tvec!(input.into()))
            .map_err(tract_error("running the probe model"))
    });
    let results = match run {
        Ok(r) => r?,
        Err(msg) => return Err(tract_err("running the probe model", msg)),
    };
    for (name, value) in names.iter().zip(results.iter()) {
        out.shapes.insert(name.clone(), value.shape().to_vec());
        out.dtypes.insert(name.clone(), value.datum_type());
        if value.len() <= KEEP_VALUES_UP_TO || !value.datum_type().is_float() {
            out.values
                .insert(name.clone(), Arc::new(value.clone().into_tensor()));
        }
    }
    Ok(out)
}

/// A deterministic input with entries in [0, 1): the probe only needs shapes and the values of
/// shape subgraphs, which do not depend on the input values.
fn random_input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32) / ((1u64 << 24) as f32)
        })
        .collect();
    tract_ndarray::ArrayD::from_shape_vec(shape, data)
        .expect("shape matches data")
        .into()
}

/// The values of a probed integer tensor as `i64`.
pub fn as_i64(t: &Tensor) -> Option<Vec<i64>> {
    values(t)
}

/// The values of a probed float tensor as `f32`.
pub fn as_f32(t: &Tensor) -> Option<Vec<f32>> {
    values(t)
}

/// The values of a probed tensor cast to `T`.
fn values<T: Datum + Copy>(t: &Tensor) -> Option<Vec<T>> {
    let t = t.cast_to::<T>().ok()?;
    Some(t.to_plain_array_view::<T>().ok()?.iter().copied().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::onnx::*;
    use crate::grad::testutil::model;

    #[test]
    fn probe_reports_shapes_and_shape_subgraph_values() {
        // x (2,3,4) -> Shape -> Reshape(x, [2, 12]) via a computed shape.
        let nodes = vec![
            make_node("Shape", "s", &["x"], &["s"], vec![]),
            make_node(
                "Gather",
                "g",
                &["s", "zero"],
                &["n"],
                vec![("axis", Attr::Int(0))],
            ),
            make_node("Unsqueeze", "u", &["n", "ax0"], &["n1"], vec![]),
            make_node(
                "Concat",
                "c",
                &["n1", "m1"],
                &["shape"],
                vec![("axis", Attr::Int(0))],
            ),
            make_node("Reshape", "r", &["x", "shape"], &["y"], vec![]),
        ];
        let inits = vec![
            tensor_i64("zero", &[], &[0]),
            tensor_i64("ax0", &[1], &[0]),
            tensor_i64("m1", &[1], &[-1]),
        ];
        let m = model(nodes, inits, "x", &[2, 3, 4], "y", 13);
        let p = probe(&m, &[2, 3, 4]).unwrap();
        assert_eq!(p.shapes["y"], vec![2, 12]);
        assert_eq!(as_i64(&p.values["shape"]).unwrap(), vec![2, -1]);
        assert!(p.dtypes["y"].is_float());
        assert!(!p.dtypes["s"].is_float());
    }
}
