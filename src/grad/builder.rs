//! Assembles the gradient graph: forward nodes, cotangent tiling, the reverse sweep over the
//! VJP rules, and the `(N, M, …)` output layout.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tract_onnx::pb::{GraphProto, ModelProto, NodeProto};

use super::emit::Emitter;
use super::error::GradError;
use super::onnx::{node_name, opset, value_info, value_info_f32};
use super::path::{analyse, graph, missing, PathInfo};
use super::probe::{probe, Probe};
use super::rules::{reshape_layout, rule, Ctx, Facts};

/// Ops that only reshape (their batch layout comes from [`reshape_layout`]).
const RESHAPES: [&str; 4] = ["Reshape", "Flatten", "Squeeze", "Unsqueeze"];

/// Name of the model-input graph input of the gradient graph.
pub const INPUT: &str = "input";
/// Name of the cotangent graph input, shape `(N, M, K)`.
pub const COTANGENT: &str = "cotangent";
/// Name of the logits graph output, shape `(N, K)`.
pub const LOGITS: &str = "logits";
/// Name of the gradient graph output, shape `(N, M, *input_shape[1..])`.
pub const GRAD: &str = "grad";
const RESERVED: [&str; 4] = [INPUT, COTANGENT, LOGITS, GRAD];
/// Stand-in for `cotangent` inside emitted nodes until renaming is done (a forward tensor may
/// itself be called `cotangent`).
const COT_PLACEHOLDER: &str = "\u{0}cotangent";

/// A gradient graph built from a classifier.
#[derive(Debug, Clone)]
pub struct GradientGraph {
    /// The ONNX model: inputs `input` `(N, …)` and `cotangent` `(N, M, K)`, outputs `logits`
    /// `(N, K)` and `grad` `(N, M, …input_shape[1..])`, with
    /// `grad[n, m] = Σ_k cotangent[n, m, k] · ∂logits[n, k]/∂input[n]`.
    pub model: ModelProto,
    /// `N`, the batch size the graph was built for.
    pub batch: usize,
    /// `M`, the number of cotangents per sample.
    pub classes: usize,
    /// `K`, the number of logits.
    pub num_logits: usize,
    /// The concrete input shape, batch first.
    pub input_shape: Vec<usize>,
    /// Whether `logits` is the input of a final Softmax/LogSoftmax of the original model.
    pub pre_softmax: bool,
}

/// Builds the gradient graph of `model` for the concrete `input_shape` (batch first, e.g.
/// `[N, C, H, W]`) and `classes` (`M ≥ 1`) cotangents per sample.
pub fn build_gradient_graph(
    model: &ModelProto,
    input_shape: &[usize],
    classes: usize,
) -> Result<GradientGraph, GradError> {
    if classes == 0 {
        return Err(GradError::Model("classes (M) must be at least 1".into()));
    }
    let probe = probe_model(model, input_shape)?;
    build_gradient_graph_probed(model, &probe, classes, CotangentLayout::Batched)
}

/// How the `M` cotangents of a sample run through the backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CotangentLayout {
    /// One backward pass over `M·N` rows (the local derivatives broadcast over the `M` copies):
    /// ONNX Runtime's fastest form on most models (not on ReLU6 networks at 224×224, where
    /// the broadcast mask products leave its NCHWc layout: see `OrtBackend::cotangent_layout`).
    #[default]
    Batched,
    /// `M` backward passes of `N` rows side by side in one graph, sharing the local
    /// derivatives (computed once). tract lowers a batched 1×1 convolution to a matrix
    /// product with its channel axis moved last and back (copies that grow with the
    /// activations); at `N = 1` rows it needs no such copies. On ONNX Runtime every
    /// mask product then has operands of equal shape, which it keeps in its NCHWc layout.
    Split,
}

/// The probe run of `model` at `input_shape` that [`build_gradient_graph_probed`] needs, after
/// the cheap checks (operators without a rule are reported before any tract run). The probe is
/// most of a build's time, and one probe serves every `M` at that shape.
pub fn probe_model(model: &ModelProto, input_shape: &[usize]) -> Result<ProbedShape, GradError> {
    if input_shape.is_empty() || input_shape[0] == 0 {
        return Err(GradError::Model(format!("bad input shape {input_shape:?}")));
    }
    let g = graph(model)?;
    let info = analyse(model, &|_| None)?;
    let miss = missing(g, &info);
    if !miss.is_empty() {
        return Err(GradError::MissingRules(miss));
    }
    Ok(ProbedShape {
        input_shape: input_shape.to_vec(),
        probe: Arc::new(probe(model, input_shape)?),
    })
}

/// A model's probe run at one concrete input shape (from [`probe_model`]).
#[derive(Debug, Clone)]
pub struct ProbedShape {
    input_shape: Vec<usize>,
    probe: Arc<Probe>,
}

/// [`build_gradient_graph`] at the shape of `probed`, which must come from [`probe_model`] on
/// the same `model`, with the cotangents laid out as `layout` says (the graph's inputs and
/// outputs are the same either way).
pub fn build_gradient_graph_probed(
    model: &ModelProto,
    probed: &ProbedShape,
    classes: usize,
    layout: CotangentLayout,
) -> Result<GradientGraph, GradError> {
    if classes == 0 {
        return Err(GradError::Model("classes (M) must be at least 1".into()));
    }
    let input_shape = probed.input_shape.as_slice();
    let g = graph(model)?;
    let pr = probed.probe.clone();
    let info = analyse(model, &|n| pr.dtypes.get(n).map(|d| d.is_float()))?;
    let n = input_shape[0];
    let mut facts = Facts {
        probe: pr,
        active: info.active.clone(),
        batch: HashMap::new(),
        outer: HashMap::new(),
        m: match layout {
            CotangentLayout::Batched => classes,
            CotangentLayout::Split => 1,
        },
        opset: opset(model),
    };

    let mut nodes: Vec<NodeProto> = g.node.clone();
    let mut taken = all_names(g);
    add_maxpool_indices(&mut nodes, &info, &mut taken, &mut facts);

    // Forward batch axes.
    facts.batch.insert(info.input.clone(), 0);
    for &i in &info.path {
        let node = &nodes[i];
        let r = rule(&node.op_type).expect("rules checked above");
        let axes = (r.batch)(&facts, node)?;
        let outer_in = (0..node.input.len())
            .find(|&j| facts.in_batch(node, j).is_some())
            .map(|j| facts.outer(&node.input[j]))
            .unwrap_or(1);
        for (o, a) in node.output.iter().zip(axes) {
            if let (Some(a), true) = (a, facts.is_active(o)) {
                facts.batch.insert(o.clone(), a);
                let outer = if RESHAPES.contains(&node.op_type.as_str()) {
                    let si = facts.in_shape(node, 0)?;
                    let so = facts.shape(node, o)?;
                    let b = facts
                        .in_batch(node, 0)
                        .expect("active reshape input has a batch");
                    reshape_layout(si, b, outer_in, so)
                        .map(|l| l.1)
                        .unwrap_or(1)
                } else {
                    outer_in
                };
                if outer != 1 {
                    facts.outer.insert(o.clone(), outer);
                }
            }
        }
    }

    let logits_shape = facts
        .probe
        .shapes
        .get(&info.logits)
        .cloned()
        .ok_or_else(|| GradError::Model(format!("no shape for logits `{}`", info.logits)))?;
    let k: usize = logits_shape.iter().product::<usize>() / n.max(1);
    if logits_shape.first() != Some(&n) || k * n != logits_shape.iter().product::<usize>() {
        return Err(GradError::Model(format!(
            "logits `{}` have shape {logits_shape:?}, expected ({n}, K)",
            info.logits
        )));
    }
    if facts.is_active(&info.logits)
        && (facts.batch_axis(&info.logits) != Some(0) || facts.outer(&info.logits) != 1)
    {
        return Err(GradError::Model(format!(
            "the batch axis of the logits `{}` is not axis 0",
            info.logits
        )));
    }

    let mut em = Emitter::new(opset(model), taken.clone());
    let mut tiles = HashMap::new();
    let m = classes;

    let mut out_shape = vec![n, m];
    out_shape.extend_from_slice(&input_shape[1..]);
    let g_final = match layout {
        CotangentLayout::Split if m > 1 => {
            // One backward pass per cotangent; the passes emit the same local derivatives,
            // which `dedupe` then keeps once.
            let mut parts = Vec::with_capacity(m);
            for j in 0..m {
                let c = em.slice(COT_PLACEHOLDER, &[j as i64], &[j as i64 + 1], &[1], &[1]);
                let cot = em.reshape(&c, &logits_shape);
                let gin = backward(&facts, &nodes, &info, &mut em, &mut tiles, cot, input_shape)?;
                parts.push(em.unsqueeze(&gin, &[1]));
            }
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            let g = em.concat(&parts, 1);
            dedupe(&mut em);
            g
        }
        _ => {
            // Cotangent (N, M, K) -> backward logits shape (M*N, ...), m-major.
            let mut bw_logits = logits_shape.clone();
            bw_logits[0] *= m;
            let cot = if m == 1 {
                em.reshape(COT_PLACEHOLDER, &bw_logits)
            } else {
                let t = em.transpose(COT_PLACEHOLDER, &[1, 0, 2]);
                em.reshape(&t, &bw_logits)
            };
            let mut bw_in = input_shape.to_vec();
            bw_in[0] *= m;
            let gin = backward(&facts, &nodes, &info, &mut em, &mut tiles, cot, &bw_in)?;
            // Input gradient (M*N, ...) -> (N, M, ...).
            if m == 1 {
                em.reshape(&gin, &out_shape)
            } else {
                let mut split = vec![m, n];
                split.extend_from_slice(&input_shape[1..]);
                let r = em.reshape(&gin, &split);
                let mut perm: Vec<usize> = (0..split.len()).collect();
                perm.swap(0, 1);
                em.transpose(&r, &perm)
            }
        }
    };
    let logits_out = em.reshape(&info.logits, &[n, k]);
    // The graph's outputs under their fixed names.
    for (value, output, stem) in [(&g_final, GRAD, "output"), (&logits_out, LOGITS, "logits")] {
        let name = em.fresh(stem);
        let node = super::onnx::make_node("Identity", &name, &[value], &[output], vec![]);
        em.nodes.push(node);
    }

    let mut model_out = assemble(
        model,
        g,
        nodes,
        &info,
        em,
        input_shape,
        (n, m, k),
        &out_shape,
        taken,
    )?;
    super::fold::fold_constants(&mut model_out);
    Ok(GradientGraph {
        model: model_out,
        batch: n,
        classes: m,
        num_logits: k,
        input_shape: input_shape.to_vec(),
        pre_softmax: info.pre_softmax,
    })
}

/// The reverse sweep from the cotangent `cot` of the logits (backward layout, rows `M·N` as
/// `facts.m` says) to the input: returns the input gradient, zeros of `bw_in` when no path
/// reaches the input.
fn backward(
    facts: &Facts,
    nodes: &[NodeProto],
    info: &PathInfo,
    em: &mut Emitter,
    tiles: &mut HashMap<String, String>,
    cot: String,
    bw_in: &[usize],
) -> Result<String, GradError> {
    let mut contrib: HashMap<String, Vec<String>> = HashMap::new();
    contrib.insert(info.logits.clone(), vec![cot]);
    let mut ctx = Ctx {
        f: facts,
        em,
        tiles,
    };
    for &i in info.path.iter().rev() {
        let node = &nodes[i];
        let gys: Vec<Option<String>> = node
            .output
            .iter()
            .map(|o| contrib.remove(o).map(|v| ctx.em.sum(&v)))
            .collect();
        if gys.iter().all(|g| g.is_none()) {
            continue;
        }
        let r = rule(&node.op_type).expect("rules checked above");
        let gxs = (r.vjp)(&mut ctx, node, &gys)?;
        for (inp, gx) in node.input.iter().zip(gxs) {
            if let Some(gx) = gx {
                if facts.is_active(inp) {
                    contrib.entry(inp.clone()).or_default().push(gx);
                }
            }
        }
    }
    Ok(match contrib.remove(&info.input) {
        Some(v) => ctx.em.sum(&v),
        None => ctx.em.zeros(bw_in),
    })
}

/// Common-subexpression elimination over the emitted nodes: a node with the op, inputs and
/// attributes of an earlier one is dropped and its outputs read the earlier node's (equal
/// constants already share one initializer, see [`Emitter::const_f32`]). Backward nodes are
/// deterministic, so the local derivatives that several passes emit alike are computed once.
fn dedupe(em: &mut Emitter) {
    use prost::Message;
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut seen: HashMap<Vec<u8>, Vec<String>> = HashMap::new();
    em.nodes.retain_mut(|node| {
        for input in node.input.iter_mut() {
            if let Some(r) = renamed.get(input) {
                *input = r.clone();
            }
        }
        if node.output.iter().any(|o| RESERVED.contains(&o.as_str())) {
            return true;
        }
        let key = NodeProto {
            name: String::new(),
            output: vec![],
            ..node.clone()
        }
        .encode_to_vec();
        match seen.get(&key) {
            Some(first) => {
                for (o, f) in node.output.iter().zip(first) {
                    renamed.insert(o.clone(), f.clone());
                }
                false
            }
            None => {
                seen.insert(key, node.output.clone());
                true
            }
        }
    });
}

/// Every tensor name of the graph.
fn all_names(g: &GraphProto) -> HashSet<String> {
    let mut s: HashSet<String> = HashSet::new();
    s.extend(g.input.iter().map(|i| i.name.clone()));
    s.extend(g.output.iter().map(|i| i.name.clone()));
    s.extend(g.initializer.iter().map(|i| i.name.clone()));
    for n in &g.node {
        s.extend(n.input.iter().cloned());
        s.extend(n.output.iter().cloned());
        s.insert(n.name.clone());
    }
    s.extend(RESERVED.iter().map(|r| r.to_string()));
    s
}

/// Gives every MaxPool on the path an `Indices` output (its VJP scatters through it).
fn add_maxpool_indices(
    nodes: &mut [NodeProto],
    info: &PathInfo,
    taken: &mut HashSet<String>,
    facts: &mut Facts,
) {
    for &i in &info.path {
        let node = &mut nodes[i];
        if node.op_type == "MaxPool" && (node.output.len() < 2 || node.output[1].is_empty()) {
            let mut k = 0;
            let name = loop {
                let c = format!(
                    "{}/indices{}",
                    node.output[0],
                    if k == 0 { String::new() } else { k.to_string() }
                );
                if !taken.contains(&c) {
                    break c;
                }
                k += 1;
            };
            taken.insert(name.clone());
            if let Some(s) = facts.probe.shapes.get(&node.output[0]).cloned() {
                Arc::make_mut(&mut facts.probe)
                    .shapes
                    .insert(name.clone(), s);
            }
            node.output.truncate(1);
            node.output.push(name);
        }
    }
}

/// Builds the output model: renamed forward nodes the logits need, backward nodes, initializers.
#[allow(clippy::too_many_arguments)]
fn assemble(
    model: &ModelProto,
    g: &GraphProto,
    nodes: Vec<NodeProto>,
    info: &PathInfo,
    em: Emitter,
    input_shape: &[usize],
    (n, m, k): (usize, usize, usize),
    grad_shape: &[usize],
    mut taken: HashSet<String>,
) -> Result<ModelProto, GradError> {
    // Renaming: the model input becomes `input`; other tensors with reserved names move aside.
    let mut rename: HashMap<String, String> = HashMap::new();
    for r in RESERVED {
        let used = g.initializer.iter().any(|t| t.name == r)
            || g.node.iter().any(|nd| nd.output.iter().any(|o| o == r))
            || g.input.iter().any(|i| i.name == r);
        if used && info.input != r {
            let mut j = 0;
            let new = loop {
                let c = format!("fwd/{r}{j}");
                if taken.insert(c.clone()) {
                    break c;
                }
                j += 1;
            };
            rename.insert(r.to_string(), new);
        }
    }
    rename.insert(info.input.clone(), INPUT.to_string());
    let rn = |s: &String| rename.get(s).cloned().unwrap_or_else(|| s.clone());

    let mut out_nodes: Vec<NodeProto> = vec![];
    for node in nodes {
        if !node.output.iter().any(|o| info.needed.contains(o)) {
            continue;
        }
        let mut node = node;
        node.input = node.input.iter().map(rn).collect();
        node.output = node
            .output
            .iter()
            .map(|o| if o.is_empty() { o.clone() } else { rn(o) })
            .collect();
        if node.name.is_empty() {
            node.name = node_name(&node);
        }
        // tract names nodes (graph inputs included) by these; keep them clear of the inputs.
        if RESERVED.contains(&node.name.as_str()) {
            node.name = format!("fwd/{}", node.name);
        }
        out_nodes.push(node);
    }
    for mut node in em.nodes {
        node.input = node
            .input
            .iter()
            .map(|s| {
                if s == COT_PLACEHOLDER {
                    COTANGENT.to_string()
                } else {
                    rn(s)
                }
            })
            .collect();
        out_nodes.push(node);
    }

    let used: HashSet<&str> = out_nodes
        .iter()
        .flat_map(|nd| nd.input.iter().map(|s| s.as_str()))
        .collect();
    let mut inits: Vec<_> = g
        .initializer
        .iter()
        .filter(|t| used.contains(rn(&t.name).as_str()))
        .cloned()
        .map(|mut t| {
            t.name = rn(&t.name);
            t
        })
        .collect();
    // Constants a rule created but did not use are dropped.
    inits.extend(
        em.initializers
            .into_iter()
            .filter(|t| used.contains(t.name.as_str())),
    );

    let mut inputs = vec![
        value_info_f32(INPUT, input_shape),
        value_info_f32(COTANGENT, &[n, m, k]),
    ];
    if model.ir_version < 4 {
        for t in &inits {
            inputs.push(value_info(
                &t.name,
                t.data_type,
                &t.dims.iter().map(|&d| d as usize).collect::<Vec<_>>(),
            ));
        }
    }
    let graph = GraphProto {
        name: format!("{}_grad", g.name),
        node: out_nodes,
        initializer: inits,
        input: inputs,
        output: vec![
            value_info_f32(LOGITS, &[n, k]),
            value_info_f32(GRAD, grad_shape),
        ],
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: model.ir_version,
        opset_import: model.opset_import.clone(),
        producer_name: "georob-grad".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use crate::grad::onnx::Attr;
    use crate::grad::testutil::{assert_grad, ints, model, node, w};
    use crate::grad::{
        build_gradient_graph, build_gradient_graph_probed, probe_model, CotangentLayout,
        GradientGraph,
    };

    /// One probe run serves the graphs of every M at its shape: each is byte for byte the graph a
    /// fresh build makes, also for a MaxPool (whose rule adds the `Indices` output to the shapes
    /// it reads, which must not leak from one build into the next) followed by a Conv.
    #[test]
    fn one_probe_builds_every_m() {
        let attrs = vec![
            ("kernel_shape", ints(&[3, 3])),
            ("strides", ints(&[2, 2])),
            ("pads", ints(&[1, 1, 1, 1])),
        ];
        let shape = [2, 2, 7, 6];
        let m = model(
            vec![
                node("MaxPool", &["x"], "p", attrs),
                node("Conv", &["p", "w"], "y", vec![]),
            ],
            vec![w("w", &[3, 2, 2, 2], 4)],
            "x",
            &shape,
            "y",
            13,
        );
        let probed = probe_model(&m, &shape).unwrap();
        for classes in [3, 1, 3, 2] {
            let shared =
                build_gradient_graph_probed(&m, &probed, classes, CotangentLayout::Batched)
                    .unwrap();
            let fresh = build_gradient_graph(&m, &shape, classes).unwrap();
            assert_eq!(shared.classes, classes);
            assert_eq!(
                shared.model.encode_to_vec(),
                fresh.model.encode_to_vec(),
                "M = {classes}"
            );
        }
    }

    /// The split layout (one backward pass per cotangent, tract's) computes what the batched one
    /// does, and emits each local derivative once: the ReLU6 masks (BatchNormalization steps) and
    /// the MaxPool indices' scatter are not repeated per cotangent.
    #[test]
    fn split_cotangents_match_the_batched_layout_and_share_local_derivatives() {
        use crate::grad::testutil::{plan, run, Rng};
        use crate::grad::CotangentLayout::{Batched, Split};
        let shape = [2usize, 3, 8, 7];
        let clip = vec![("min", Attr::Float(0.0)), ("max", Attr::Float(6.0))];
        let pool = vec![("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))];
        let m = model(
            vec![
                node(
                    "Conv",
                    &["x", "w1"],
                    "c1",
                    vec![("pads", ints(&[1, 1, 1, 1]))],
                ),
                node("Clip", &["c1"], "a1", clip),
                node("MaxPool", &["a1"], "p", pool),
                node("Conv", &["p", "w2"], "y", vec![]),
            ],
            vec![w("w1", &[4, 3, 3, 3], 5), w("w2", &[5, 4, 2, 2], 6)],
            "x",
            &shape,
            "y",
            10,
        );
        let probed = probe_model(&m, &shape).unwrap();
        let classes = 3;
        let batched = build_gradient_graph_probed(&m, &probed, classes, Batched).unwrap();
        let split = build_gradient_graph_probed(&m, &probed, classes, Split).unwrap();
        let count = |g: &GradientGraph, op: &str| {
            let nodes = &g.model.graph.as_ref().unwrap().node;
            nodes.iter().filter(|n| n.op_type == op).count()
        };
        for op in ["BatchNormalization", "Relu"] {
            assert!(count(&batched, op) > 0, "{op}");
            assert_eq!(count(&split, op), count(&batched, op), "{op}");
        }
        // The two forward convolutions once, each pass's own convolution VJPs per cotangent.
        let convs = |g| count(g, "ConvTranspose") + count(g, "Conv");
        assert_eq!(convs(&split) - 2, classes * (convs(&batched) - 2));
        let k = batched.num_logits;
        let mut rng = Rng(11);
        let x = rng.vec(shape.iter().product(), 4.0);
        let cot = rng.vec(shape[0] * classes * k, 1.0);
        let cs = [shape[0], classes, k];
        let outs: Vec<_> = [&batched, &split]
            .iter()
            .map(|g| {
                run(
                    &plan(&g.model, &[&shape, &cs]),
                    &[(&shape, &x), (&cs, &cot)],
                )
            })
            .collect();
        assert_eq!(outs[0][0], outs[1][0], "logits");
        assert_eq!(outs[0][1].0, outs[1][1].0, "grad shape");
        let scale = outs[0][1].1.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert!(scale > 0.0);
        for (a, b) in outs[0][1].1.iter().zip(&outs[1][1].1) {
            assert!((a - b).abs() <= 1e-5 * scale, "{a} vs {b}");
        }
    }

    #[test]
    fn reserved_names_are_renamed() {
        // The model input is called `logits` and an inner tensor `input`.
        let nodes = vec![
            node("Relu", &["logits"], "input", vec![]),
            node("Gemm", &["input", "b"], "grad", vec![]),
        ];
        let m = model(
            nodes,
            vec![w("b", &[4, 3], 70)],
            "logits",
            &[2, 4],
            "grad",
            13,
        );
        assert_grad(&m, &[2, 4], 1.0);
    }
}
