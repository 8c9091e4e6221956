//! Structural checks of an ONNX model, made on load before any backend sees it, so that
//! tract and ONNX Runtime refuse the same files: the format version and opsets are sound,
//! attributes are given once and windows are positive, stored
//! tensors hold what their dimensions promise, nodes have inputs, the graph has no cycle,
//! and the generators whose output size constants fix (`ConstantOfShape`, `Range`,
//! `Expand`) stay within the memory limit. Backends allocate, loop or panic on such graphs
//! instead of refusing them.

use std::collections::HashMap;

use tract_onnx::pb;

use crate::limits;

/// Checks that a tensor stored in the file holds the values its dimensions promise (unless
/// they are stored outside it): dimensions that are negative, or whose element count
/// overflows or exceeds the data, would make every reader allocate for data that is not
/// there.
fn tensor_data(t: &pb::TensorProto) -> Result<(), String> {
    let dims: Option<Vec<usize>> = t.dims.iter().map(|&d| usize::try_from(d).ok()).collect();
    let Some(dims) = dims else {
        return Err(format!("dimensions {:?} include a negative one", t.dims));
    };
    let Some(n) = limits::elements(&dims) else {
        return Err(format!(
            "dimensions {dims:?} hold more elements than memory can address"
        ));
    };
    let external = t.data_location == Some(pb::tensor_proto::DataLocation::External as i32);
    // Bytes per element in `raw_data`, and how many values the typed field holds.
    let (width, typed) = match t.data_type {
        1 => (4, t.float_data.len()),
        2 | 3 | 9 => (1, t.int32_data.len()),
        4 | 5 | 10 | 16 => (2, t.int32_data.len()),
        6 => (4, t.int32_data.len()),
        7 => (8, t.int64_data.len()),
        11 => (8, t.double_data.len()),
        12 => (4, t.uint64_data.len()),
        13 => (8, t.uint64_data.len()),
        _ => return Ok(()), // strings, complex numbers and newer types: left to the backend
    };
    let held = match t.raw_data.len() {
        0 => typed,
        bytes if bytes % width == 0 => bytes / width,
        bytes => {
            return Err(format!(
                "{bytes} bytes of data are not a whole number of values"
            ))
        }
    };
    if external || held == n {
        return Ok(());
    }
    Err(format!(
        "dimensions {dims:?} promise {n} values but it holds {held}"
    ))
}

/// Default-domain operators that take no input.
const SOURCES: &[&str] = &["Constant", "RandomNormal", "RandomUniform"];

/// How errors name a node: by name, else by operator and first output.
fn named(n: &pb::NodeProto) -> String {
    match n.name.as_str() {
        "" => format!(
            "the {} node producing {:?}",
            n.op_type,
            n.output.first().map_or("", |o| o)
        ),
        name => format!("node {name:?} ({})", n.op_type),
    }
}

/// The oldest default-domain opset georob takes: ONNX Runtime implements the operators from
/// opset 7 on, and both backends refuse the same models.
const OLDEST_OPSET: i64 = 7;

/// All the checks of this module on `model`; the error says what is wrong where.
pub fn model(model: &pb::ModelProto) -> Result<(), String> {
    if model.ir_version <= 0 {
        return Err(format!(
            "ir_version {} (the file's format version must be positive)",
            model.ir_version
        ));
    }
    let default = |d: &str| d.is_empty() || d == "ai.onnx";
    for (i, o) in model.opset_import.iter().enumerate() {
        let same = |p: &pb::OperatorSetIdProto| {
            p.domain == o.domain || (default(&p.domain) && default(&o.domain))
        };
        if model.opset_import[..i].iter().any(same) {
            return Err(format!(
                "opset_import names the domain {:?} twice",
                o.domain
            ));
        }
    }
    let Some(g) = model.graph.as_ref() else {
        return Ok(());
    };
    let uses_default = g.node.iter().any(|n| default(&n.domain));
    match model.opset_import.iter().find(|o| default(&o.domain)) {
        None if uses_default => {
            return Err("opset_import declares no version of the default (ai.onnx) domain".into())
        }
        Some(o) if o.version < OLDEST_OPSET => {
            return Err(format!(
                "opset {}: georob takes opset {OLDEST_OPSET} and later (ONNX Runtime has no \
                 implementation of older operators)",
                o.version
            ))
        }
        _ => {}
    }
    for n in g.node.iter().filter(|n| !default(&n.domain)) {
        if !model.opset_import.iter().any(|o| o.domain == n.domain) {
            return Err(format!(
                "{} is in the domain {:?}, which opset_import does not declare",
                named(n),
                n.domain
            ));
        }
    }
    structure(g)
}

/// Checks the attributes of `n`: each name once, and the window sizes of convolutions and
/// poolings (`kernel_shape`, `strides`, `dilations`) positive.
fn attributes(n: &pb::NodeProto) -> Result<(), String> {
    for (i, a) in n.attribute.iter().enumerate() {
        if n.attribute[..i].iter().any(|b| b.name == a.name) {
            return Err(format!("{} has the attribute {:?} twice", named(n), a.name));
        }
        let window = matches!(a.name.as_str(), "kernel_shape" | "strides" | "dilations");
        if window && a.ints.iter().any(|&v| v < 1) {
            return Err(format!(
                "{}: {} = {:?} must be positive",
                named(n),
                a.name,
                a.ints
            ));
        }
        if n.op_type == "Transpose" && a.name == "perm" {
            let mut seen = a.ints.clone();
            seen.sort_unstable();
            if !seen.iter().copied().eq(0..a.ints.len() as i64) {
                return Err(format!(
                    "{}: perm = {:?} is not an order of the axes 0..{}",
                    named(n),
                    a.ints,
                    a.ints.len()
                ));
            }
        }
        // A backend walks the kernel window element by element (tract lists an offset per
        // element): a window of more elements than memory holds never finishes.
        if a.name == "kernel_shape" {
            let dims: Vec<usize> = a.ints.iter().map(|&v| v as usize).collect();
            limits::check_tensor(&dims, "kernel window", 8)
                .map_err(|why| format!("{}: kernel_shape = {:?}: {why}", named(n), a.ints))?;
        }
    }
    Ok(())
}

/// The checks of this module on graph `g` alone.
fn structure(g: &pb::GraphProto) -> Result<(), String> {
    for t in &g.initializer {
        tensor_data(t).map_err(|why| format!("initializer {:?}: {why}", t.name))?;
    }
    for n in &g.node {
        let default_domain = n.domain.is_empty() || n.domain == "ai.onnx";
        if default_domain && !SOURCES.contains(&n.op_type.as_str()) && n.input.is_empty() {
            return Err(format!("{} has no input", named(n)));
        }
        attributes(n)?;
        for a in &n.attribute {
            for t in a.t.iter().chain(&a.tensors) {
                tensor_data(t)
                    .map_err(|why| format!("{}, attribute {:?}: {why}", named(n), a.name))?;
            }
        }
    }
    single_assignment(g)?;
    acyclic(g)?;
    generators(g)
}

/// Fails when two nodes write the same tensor, or a node writes a graph input or an
/// initializer: ONNX graphs assign each name once, and a backend that takes the first or
/// the last writer silently computes another model than ONNX Runtime refuses. Fails too when
/// a node reads, or the graph outputs, a tensor that nothing makes (tract panicked on an
/// output nobody writes).
fn single_assignment(g: &pb::GraphProto) -> Result<(), String> {
    let mut writers: HashMap<&str, &pb::NodeProto> = HashMap::new();
    let given: std::collections::HashSet<&str> = g
        .input
        .iter()
        .map(|i| i.name.as_str())
        .chain(g.initializer.iter().map(|t| t.name.as_str()))
        .chain(
            g.sparse_initializer
                .iter()
                .filter_map(|s| s.values.as_ref().map(|v| v.name.as_str())),
        )
        .collect();
    for n in &g.node {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if given.contains(o.as_str()) {
                return Err(format!(
                    "{} writes {o:?}, a graph input or initializer",
                    named(n)
                ));
            }
            if let Some(first) = writers.insert(o, n) {
                return Err(format!(
                    "{} and {} both write {o:?} (each tensor has one writer)",
                    named(first),
                    named(n)
                ));
            }
        }
    }
    let made = |name: &str| given.contains(name) || writers.contains_key(name);
    for n in &g.node {
        if let Some(i) = n.input.iter().find(|i| !i.is_empty() && !made(i)) {
            return Err(format!("{} reads {i:?}, which nothing makes", named(n)));
        }
    }
    if let Some(o) = g.output.iter().find(|o| !made(&o.name)) {
        return Err(format!(
            "the graph's output {:?} is made by nothing",
            o.name
        ));
    }
    Ok(())
}

/// Fails when a node depends on its own output, directly or through others (a cycle would
/// make every walk along the graph endless).
fn acyclic(g: &pb::GraphProto) -> Result<(), String> {
    // Kahn's algorithm over the nodes: a node is ready once every node producing one of its
    // inputs is; what never gets ready lies on a cycle or behind one.
    let mut producers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producers.entry(o.as_str()).or_default().push(i);
        }
    }
    let mut waiting: Vec<usize> = vec![0; g.node.len()];
    let mut consumers: Vec<Vec<usize>> = vec![vec![]; g.node.len()];
    for (i, n) in g.node.iter().enumerate() {
        for input in &n.input {
            for &p in producers.get(input.as_str()).into_iter().flatten() {
                waiting[i] += 1;
                consumers[p].push(i);
            }
        }
    }
    let mut ready: Vec<usize> = (0..g.node.len()).filter(|&i| waiting[i] == 0).collect();
    while let Some(i) = ready.pop() {
        for &c in &consumers[i] {
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.push(c);
            }
        }
    }
    match waiting.iter().position(|&w| w > 0) {
        Some(i) => Err(format!(
            "the graph has a cycle ({} lies on it or after it)",
            named(&g.node[i])
        )),
        None => Ok(()),
    }
}

/// The values of the small constant tensors of `g` (initializers and `Constant` nodes of at
/// most 64 values), as f64, by name: what fixes the size of a generator's output.
fn small_constants(g: &pb::GraphProto) -> HashMap<&str, Vec<f64>> {
    let mut out = HashMap::new();
    let tensors = g.initializer.iter().map(|t| (t.name.as_str(), t)).chain(
        g.node
            .iter()
            .filter(|n| n.op_type == "Constant")
            .filter_map(|n| Some((n.output.first()?.as_str(), value_attr(n)?))),
    );
    for (name, t) in tensors {
        if let Some(v) = values(t).filter(|v| v.len() <= 64) {
            out.insert(name, v);
        }
    }
    out
}

/// The tensor of a `Constant` node.
fn value_attr(n: &pb::NodeProto) -> Option<&pb::TensorProto> {
    n.attribute
        .iter()
        .find(|a| a.name == "value")
        .and_then(|a| a.t.as_ref())
}

/// The `N` little-endian bytes of `b` (of length `N`, from `chunks_exact`).
fn le<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(b);
    a
}

/// The values of a stored integer or float tensor as f64 (`None` for other types).
fn values(t: &pb::TensorProto) -> Option<Vec<f64>> {
    let raw = |width: usize| t.raw_data.chunks_exact(width);
    let v: Vec<f64> = match t.data_type {
        1 if t.raw_data.is_empty() => t.float_data.iter().map(|&x| f64::from(x)).collect(),
        1 => raw(4)
            .map(|b| f64::from(f32::from_le_bytes(le(b))))
            .collect(),
        6 if t.raw_data.is_empty() => t.int32_data.iter().map(|&x| f64::from(x)).collect(),
        6 => raw(4)
            .map(|b| f64::from(i32::from_le_bytes(le(b))))
            .collect(),
        7 if t.raw_data.is_empty() => t.int64_data.iter().map(|&x| x as f64).collect(),
        7 => raw(8).map(|b| i64::from_le_bytes(le(b)) as f64).collect(),
        11 if t.raw_data.is_empty() => t.double_data.clone(),
        11 => raw(8).map(|b| f64::from_le_bytes(le(b))).collect(),
        _ => return None,
    };
    Some(v)
}

/// Checks the generators whose output size constants fix: `ConstantOfShape` and `Expand`
/// (a shape), `Range` (start, limit, delta). Backends compute these while loading the
/// graph, where an output of 2^40 values aborts the process.
fn generators(g: &pb::GraphProto) -> Result<(), String> {
    let constants = small_constants(g);
    let constant =
        |n: &pb::NodeProto, i: usize| n.input.get(i).and_then(|name| constants.get(name.as_str()));
    for n in &g.node {
        let why = match n.op_type.as_str() {
            "ConstantOfShape" | "Expand" => {
                let input = if n.op_type == "Expand" { 1 } else { 0 };
                let Some(shape) = constant(n, input) else {
                    continue;
                };
                if shape.iter().any(|&d| d < 0.0) {
                    Err(format!("shape {shape:?} has a negative dimension"))
                } else {
                    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
                    limits::check_tensor(&dims, "8-byte", 8).map(|_| ())
                }
            }
            "Range" => {
                let (Some(start), Some(limit), Some(delta)) =
                    (constant(n, 0), constant(n, 1), constant(n, 2))
                else {
                    continue;
                };
                match (start.as_slice(), limit.as_slice(), delta.as_slice()) {
                    (_, _, [d]) if *d == 0.0 => Err("its delta is 0: the range never ends".into()),
                    ([s], [l], [d]) => {
                        // NaN.max(0) is 0: the count is checked before it is clamped.
                        let count = ((l - s) / d).ceil();
                        if !count.is_finite() || count >= (usize::MAX / 8) as f64 {
                            Err(format!("from {s} to {l} by {d} is not a finite range"))
                        } else if count < 1.0 {
                            // An empty tensor feeds nothing to a classifier; tract divides by
                            // its size.
                            Err(format!("from {s} to {l} by {d} is empty"))
                        } else {
                            limits::check_tensor(&[count as usize], "8-byte", 8).map(|_| ())
                        }
                    }
                    _ => continue,
                }
            }
            _ => continue,
        };
        why.map_err(|why| format!("{}: {why}", named(n)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn int64s(name: &str, values: &[i64]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: 7,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    /// A graph of input `x`, `node` and `initializer`.
    fn graph(node: Vec<pb::NodeProto>, initializer: Vec<pb::TensorProto>) -> pb::GraphProto {
        pb::GraphProto {
            node,
            initializer,
            input: vec![pb::ValueInfoProto {
                name: "x".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn cycles_are_found_wherever_they_are() {
        let ok = graph(
            vec![node("Relu", &["x"], "a"), node("Relu", &["a"], "b")],
            vec![],
        );
        assert_eq!(structure(&ok), Ok(()));
        // A cycle beside the path from the input, and one through two nodes.
        let beside = graph(
            vec![node("Relu", &["x"], "a"), node("Identity", &["c"], "c")],
            vec![],
        );
        assert!(structure(&beside).unwrap_err().contains("cycle"));
        let two = graph(
            vec![node("Relu", &["b"], "a"), node("Relu", &["a"], "b")],
            vec![],
        );
        assert!(structure(&two).unwrap_err().contains("cycle"));
    }

    #[test]
    fn stored_tensors_must_hold_what_their_dims_promise() {
        let mut t = int64s("t", &[1, 2, 3]);
        assert_eq!(tensor_data(&t), Ok(()));
        t.dims = vec![4];
        assert!(tensor_data(&t)
            .unwrap_err()
            .contains("promise 4 values but it holds 3"));
        t.dims = vec![1 << 40, 1 << 40];
        assert!(tensor_data(&t).unwrap_err().contains("more elements"));
        t.dims = vec![-3];
        assert!(tensor_data(&t).unwrap_err().contains("negative"));
        t.dims = vec![1 << 40];
        t.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
        assert_eq!(tensor_data(&t), Ok(()));
    }

    #[test]
    fn generator_sizes_fixed_by_constants_are_checked() {
        let cos = |n: i64| {
            graph(
                vec![node("ConstantOfShape", &["s"], "z")],
                vec![int64s("s", &[n, n])],
            )
        };
        assert_eq!(generators(&cos(8)), Ok(()));
        let e = generators(&cos(1 << 30)).unwrap_err();
        assert!(
            e.contains("\"z\" (ConstantOfShape)") && e.contains("--max-memory"),
            "{e}"
        );
        assert!(generators(&cos(-1)).unwrap_err().contains("negative"));
        // Range(0, 10, 0) on scalars (dims [] hold one value).
        let mut g = graph(
            vec![node("Range", &["a", "b", "c"], "r")],
            vec![int64s("a", &[0]), int64s("b", &[10]), int64s("c", &[0])],
        );
        for t in &mut g.initializer {
            t.dims.clear();
        }
        assert!(generators(&g).unwrap_err().contains("delta is 0"));
        g.initializer[2].raw_data = 1i64.to_le_bytes().to_vec();
        assert_eq!(generators(&g), Ok(()));
        // Backwards by a positive step: empty; by NaN: no range at all.
        g.initializer[2].raw_data = (-1i64).to_le_bytes().to_vec();
        assert!(generators(&g).unwrap_err().contains("is empty"));
        g.initializer[2] = pb::TensorProto {
            name: "c".into(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: vec![f32::NAN],
            ..Default::default()
        };
        assert!(generators(&g).unwrap_err().contains("not a finite range"));
    }

    #[test]
    fn every_tensor_read_is_made_once() {
        let ok = graph(vec![node("Relu", &["x"], "a")], vec![]);
        assert_eq!(structure(&ok), Ok(()));
        let twice = graph(
            vec![node("Relu", &["x"], "a"), node("Neg", &["x"], "a")],
            vec![],
        );
        assert!(structure(&twice).unwrap_err().contains("both write \"a\""));
        let nowhere = graph(vec![node("Relu", &["y"], "a")], vec![]);
        assert!(structure(&nowhere).unwrap_err().contains("nothing makes"));
        let mut unmade = ok.clone();
        unmade.output.push(pb::ValueInfoProto {
            name: "b".into(),
            ..Default::default()
        });
        assert!(structure(&unmade).unwrap_err().contains("made by nothing"));
    }
}
