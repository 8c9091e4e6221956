//! Model cases: truncated, bit-flipped and random files, and structurally hostile graphs
//! built with prost from the ONNX protobuf types.

use std::path::Path;

use prost::Message;
use tract_onnx::pb::{self, ModelProto, NodeProto, TensorProto};

use super::{args, s, Case, Expect, Fixtures};
use crate::common::{bit_flipped, int64s, int_attr, ints_attr, node, repo, tensor, Rng};
use crate::hostile::{ending_in, external_model, pooled_after, D, TEST};

/// The shape of the digits: batch dynamic, one gray channel of 28×28.
const GRAY: [D; 4] = [D::Named("N"), D::Fixed(1), D::Fixed(28), D::Fixed(28)];

/// `input → Conv 3×3 → Relu → MaxPool 2×2 → GlobalAveragePool → Gemm → logits (N, 10)`.
fn small() -> ModelProto {
    let mut conv = node("Conv", "conv", &["input", "K"], "c");
    conv.attribute.push(ints_attr("pads", &[1, 1, 1, 1]));
    let mut pool = node("MaxPool", "pool2", &["r"], "p");
    pool.attribute.push(ints_attr("kernel_shape", &[2, 2]));
    pool.attribute.push(ints_attr("strides", &[2, 2]));
    pooled_after(
        &GRAY,
        vec![conv, node("Relu", "relu", &["c"], "r"), pool],
        vec![tensor("K", &[1, 1, 3, 3], &[0.1; 9])],
        "p",
    )
}

/// The encoded small model.
pub fn small_model() -> Vec<u8> {
    small().encode_to_vec()
}

/// A georob call that loads `model` (in the case folder) and, mostly, runs it on a digit.
fn model_call(rng: &mut Rng, fx: &Fixtures, dir: &Path, model: &str) -> Vec<String> {
    let digit = s(&repo("onnx_models/digits/test/3/0030.png"));
    let mut a = match rng.below(10) {
        0..=3 => args(&["eval", model, &digit, "-q"]),
        4 | 5 => {
            std::fs::write(dir.join("x.npy"), &fx.x_npy).unwrap();
            std::fs::write(dir.join("y.npy"), &fx.y_npy).unwrap();
            args(&["eval", model, "x.npy", "--labels", "y.npy", "-q"])
        }
        6 | 7 => args(&["inspect", model]),
        8 => args(&[
            "measure",
            "accuracy",
            model,
            &s(&repo(TEST)),
            "--limit",
            "2",
            "-q",
        ]),
        _ => args(&[
            "measure",
            "deepfool",
            model,
            &digit,
            "-p",
            "max_iter=3",
            "-q",
        ]),
    };
    a.extend(fx.backend(rng));
    a.extend(args(&["--threads", "1"]));
    a
}

/// What a model file's bytes ask of georob: a file prost cannot decode, or one without a
/// graph of nodes, inputs and outputs, must be refused.
fn expect_for(bytes: &[u8]) -> Expect {
    match ModelProto::decode(bytes) {
        Ok(m) => match m.graph {
            Some(g) if !g.node.is_empty() && !g.input.is_empty() && !g.output.is_empty() => {
                Expect::Either
            }
            _ => Expect::Refuse,
        },
        Err(_) => Expect::Refuse,
    }
}

/// A model file to mutate: mostly the small model (all structure), else a bundled one.
fn base<'a>(rng: &mut Rng, fx: &'a Fixtures) -> (&'a [u8], &'static str) {
    match rng.below(10) {
        0..=5 => (&fx.small_model, "small"),
        6..=7 => (&fx.linear, "digits_linear"),
        _ => (&fx.cnn, "digits_cnn"),
    }
}

/// Writes `bytes` as `model.onnx` and calls georob on it.
fn model_case(rng: &mut Rng, fx: &Fixtures, dir: &Path, bytes: &[u8], what: String) -> Case {
    std::fs::write(dir.join("model.onnx"), bytes).unwrap();
    let call = model_call(rng, fx, dir, "model.onnx");
    Case::new(call, expect_for(bytes), &["model.onnx"], what)
}

pub fn truncated(_: usize, rng: &mut Rng, dir: &Path, fx: &Fixtures) -> Case {
    let (b, name) = base(rng, fx);
    let cut = crate::common::truncated(b, rng);
    let what = format!("{name} cut to {} of {} bytes", cut.len(), b.len());
    model_case(rng, fx, dir, &cut, what)
}

pub fn bit_flips(_: usize, rng: &mut Rng, dir: &Path, fx: &Fixtures) -> Case {
    let (b, name) = base(rng, fx);
    // Half the time in the first 4 KiB, where a bundled model keeps its graph.
    let span = if rng.chance(0.5) { 4096 } else { b.len() };
    let flipped = bit_flipped(b, span, rng);
    model_case(rng, fx, dir, &flipped, format!("{name} with bits flipped"))
}

pub fn random_bytes(_: usize, rng: &mut Rng, dir: &Path, fx: &Fixtures) -> Case {
    let n = *rng.pick(&[0usize, 1, 2, 7, 64, 500, 4096, 65536]);
    let mut b = rng.bytes(n);
    if rng.chance(0.5) {
        // A valid start (ir_version, the graph's tag and length), then noise.
        let keep = fx.small_model.len().min(rng.below(40) + 1);
        b.splice(0..0, fx.small_model[..keep].iter().copied());
    }
    model_case(rng, fx, dir, &b, format!("{} random bytes", b.len()))
}

/// A large number, a small one, zero or a negative one, for dimensions and attributes.
fn hostile_int(rng: &mut Rng) -> i64 {
    match rng.below(8) {
        0 => 0,
        1 => -1,
        2 => -(1 << rng.below(63)),
        3 => i64::MAX,
        4 => 1 << (20 + rng.below(43)),
        5 => 100_000,
        _ => rng.below(40) as i64,
    }
}

fn float_attr(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

/// The digits-shaped classifier with `nodes` between `input` and `features` (one channel).
fn between(nodes: Vec<NodeProto>, init: Vec<TensorProto>, features: &str) -> ModelProto {
    pooled_after(&GRAY, nodes, init, features)
}

/// One node `op` on `input` (plus `extra` inputs) with `attrs`, then the pooled head.
fn one_op(
    op: &str,
    extra: &[&str],
    attrs: Vec<pb::AttributeProto>,
    init: Vec<TensorProto>,
) -> ModelProto {
    let inputs: Vec<&str> = std::iter::once("input")
        .chain(extra.iter().copied())
        .collect();
    let mut n = node(op, "op", &inputs, "y");
    n.attribute = attrs;
    between(vec![n], init, "y")
}

/// A structurally hostile graph: what the generator knows of it, and why.
fn graph(i: usize, rng: &mut Rng) -> (ModelProto, Expect, String) {
    use Expect::{Either, Refuse};
    let kind = i % 17;
    match kind {
        0 => {
            let op = *rng.pick(&[
                "Softmax",
                "Identity",
                "LogSoftmax",
                "Relu",
                "Gemm",
                "Add",
                "Conv",
            ]);
            (
                ending_in(op, &[]),
                Refuse,
                format!("final {op} with no input"),
            )
        }
        1 => {
            let mut m = small();
            let g = m.graph.as_mut().unwrap();
            let what = match rng.below(3) {
                0 => {
                    g.node.push(node("Relu", "loop", &["z"], "z"));
                    "a node consuming its own output"
                }
                1 => {
                    g.node.push(node("Relu", "a", &["b"], "a_out"));
                    g.node.push(node("Relu", "b", &["a_out"], "b"));
                    "a disconnected cycle of two"
                }
                _ => {
                    // Relu reads the pooled features' successor: a cycle through the path.
                    let k = rng.below(g.node.len());
                    let out = g.node[g.node.len() - 1].output[0].clone();
                    g.node[k].input[0] = out;
                    "a cycle through the path to the logits"
                }
            };
            (m, Refuse, what.into())
        }
        2 => {
            let mut dims = [D::Named("N"), D::Fixed(1), D::Fixed(28), D::Fixed(28)];
            for _ in 0..1 + rng.below(2) {
                let k = rng.below(4);
                dims[k] = D::Fixed(hostile_int(rng));
            }
            let fixed: Vec<i64> = dims
                .iter()
                .map(|d| match d {
                    D::Fixed(v) => *v,
                    D::Named(_) => 1,
                })
                .collect();
            let bytes = fixed
                .iter()
                .try_fold(4i128, |n, &d| n.checked_mul(d as i128));
            let expect = match bytes {
                // A fixed batch of 0 or less reads as a dynamic one (exporters write 0 or -1
                // for "any"); a sample of no values cannot be fed.
                _ if fixed[1..].iter().any(|&d| d <= 0) => Refuse,
                _ if fixed[0] <= 0 => Either,
                _ if fixed[1] != 1 => Refuse,
                Some(b) if b <= 1 << 30 => Either,
                _ => Refuse,
            };
            (
                pooled_after(&dims, vec![], vec![], "input"),
                expect,
                format!("input dims {fixed:?}"),
            )
        }
        3 => {
            // Generators of constant-fixed size: ConstantOfShape, Expand, Range, Tile.
            let shape: Vec<i64> = (0..1 + rng.below(4))
                .map(|_| hostile_int(rng).abs().max(1))
                .collect();
            let (nodes, init, what) = match rng.below(4) {
                0 => (
                    vec![node("ConstantOfShape", "gen", &["S"], "g")],
                    vec![int64s("S", &shape)],
                    format!("ConstantOfShape {shape:?}"),
                ),
                1 => (
                    vec![node("Expand", "gen", &["one", "S"], "g")],
                    vec![tensor("one", &[1], &[1.0]), int64s("S", &shape)],
                    format!("Expand to {shape:?}"),
                ),
                2 => {
                    let (a, b, d) = (
                        hostile_int(rng) as f32,
                        hostile_int(rng) as f32,
                        *rng.pick(&[0.0f32, 1.0, -1.0, 1e-30, f32::NAN, f32::INFINITY]),
                    );
                    (
                        vec![node("Range", "gen", &["a", "b", "d"], "g")],
                        vec![
                            tensor("a", &[], &[a]),
                            tensor("b", &[], &[b]),
                            tensor("d", &[], &[d]),
                        ],
                        format!("Range {a}..{b} by {d}"),
                    )
                }
                _ => (
                    vec![node("Tile", "gen", &["input", "S"], "g")],
                    vec![int64s("S", &[shape[0], 1, 1, 1])],
                    format!("Tile by {}", shape[0]),
                ),
            };
            let mut nodes = nodes;
            nodes.push(node("ReduceSum", "sum", &["g"], "sum"));
            nodes.push(node("Add", "add", &["input", "sum"], "y"));
            (between(nodes, init, "y"), Either, what)
        }
        4 => {
            let mut attrs = vec![];
            let mut what = String::from("Conv");
            let mut refuse = false;
            for name in ["pads", "strides", "dilations", "kernel_shape"] {
                if rng.chance(0.5) {
                    let n = if name == "pads" { 4 } else { 2 };
                    let v: Vec<i64> = (0..n).map(|_| hostile_int(rng)).collect();
                    refuse |= name != "pads" && v.iter().any(|&x| x < 1);
                    what += &format!(" {name}={v:?}");
                    attrs.push(ints_attr(name, &v));
                }
            }
            if rng.chance(0.2) {
                let g = hostile_int(rng);
                what += &format!(" group={g}");
                attrs.push(int_attr("group", g));
            }
            let k = tensor("K", &[1, 1, 3, 3], &[0.1; 9]);
            (
                one_op("Conv", &["K"], attrs, vec![k]),
                if refuse { Refuse } else { Either },
                what,
            )
        }
        5 => {
            let op = *rng.pick(&["MaxPool", "AveragePool", "LpPool"]);
            let k = vec![hostile_int(rng), hostile_int(rng)];
            let mut attrs = vec![ints_attr("kernel_shape", &k)];
            if rng.chance(0.5) {
                attrs.push(ints_attr("pads", &[hostile_int(rng); 4]));
            }
            let refuse = k.iter().any(|&x| x < 1);
            (
                one_op(op, &[], attrs, vec![]),
                if refuse { Refuse } else { Either },
                format!("{op} kernel {k:?}"),
            )
        }
        6 => {
            // Shape-changing nodes with hostile attributes or operands.
            let v: Vec<i64> = (0..1 + rng.below(5)).map(|_| hostile_int(rng)).collect();
            let (m, what) = match rng.below(7) {
                0 => (
                    one_op("Reshape", &["S"], vec![], vec![int64s("S", &v)]),
                    format!("Reshape to {v:?}"),
                ),
                1 => (
                    one_op("Transpose", &[], vec![ints_attr("perm", &v)], vec![]),
                    format!("Transpose perm {v:?}"),
                ),
                2 => (
                    one_op("Softmax", &[], vec![int_attr("axis", v[0])], vec![]),
                    format!("Softmax axis {}", v[0]),
                ),
                3 => (
                    one_op(
                        "Gather",
                        &["I"],
                        vec![int_attr("axis", v[0] % 5)],
                        vec![int64s("I", &v)],
                    ),
                    format!("Gather {v:?}"),
                ),
                4 => (
                    one_op(
                        "Slice",
                        &["st", "en"],
                        vec![],
                        vec![
                            int64s("st", &v),
                            int64s(
                                "en",
                                &v.iter().map(|x| x.wrapping_add(1)).collect::<Vec<_>>(),
                            ),
                        ],
                    ),
                    format!("Slice {v:?}"),
                ),
                5 => (
                    one_op("Concat", &["input"], vec![int_attr("axis", v[0])], vec![]),
                    format!("Concat axis {}", v[0]),
                ),
                _ => (
                    one_op(
                        "Pad",
                        &["P"],
                        vec![],
                        vec![int64s("P", &[v[0], 0, 0, 0, v[0], 0, 0, 0])],
                    ),
                    format!("Pad {}", v[0]),
                ),
            };
            (m, Either, what)
        }
        7 => {
            // Stored tensors that do not hold what they promise, or of odd types.
            let mut k = tensor("K", &[1, 1, 1, 1], &[1.0]);
            let what;
            let mut expect = Refuse;
            match rng.below(4) {
                0 => {
                    k.dims = (0..1 + rng.below(4)).map(|_| hostile_int(rng)).collect();
                    what = format!("initializer dims {:?} for 1 value", k.dims);
                    if k.dims.iter().all(|&d| d == 1) || k.dims.is_empty() {
                        expect = Either;
                    }
                }
                1 => {
                    k.data_type = *rng.pick(&[0, 8, 14, 15, 17, 21, 99, -3]);
                    what = format!("initializer of data_type {}", k.data_type);
                    expect = Either;
                }
                2 => {
                    k.raw_data.truncate(rng.below(4));
                    what = format!("initializer of {} bytes", k.raw_data.len());
                }
                _ => {
                    k.float_data = vec![1.0; rng.below(3)];
                    what = format!("raw data and {} float_data values", k.float_data.len());
                    expect = Either;
                }
            }
            let m = between(
                vec![node("Mul", "scale", &["input", "K"], "y")],
                vec![k],
                "y",
            );
            (m, expect, what)
        }
        8 => {
            let mut m = small();
            let (expect, what) = match rng.below(5) {
                0 => {
                    m.ir_version = hostile_int(rng);
                    (
                        if m.ir_version <= 0 { Refuse } else { Either },
                        format!("ir_version {}", m.ir_version),
                    )
                }
                1 => {
                    m.opset_import[0].version = hostile_int(rng);
                    (
                        if m.opset_import[0].version < 7 {
                            Refuse
                        } else {
                            Either
                        },
                        format!("opset {}", m.opset_import[0].version),
                    )
                }
                2 => {
                    m.opset_import.clear();
                    (Refuse, "no opset_import".into())
                }
                3 => {
                    m.opset_import.push(pb::OperatorSetIdProto {
                        domain: "ai.onnx".into(),
                        version: 13,
                    });
                    (Refuse, "the default domain imported twice".into())
                }
                _ => {
                    let g = m.graph.as_mut().unwrap();
                    g.node[0].domain = "com.example".into();
                    (Refuse, "an undeclared domain".into())
                }
            };
            (m, expect, what)
        }
        9 => {
            let mut m = small();
            let g = m.graph.as_mut().unwrap();
            let k = rng.below(g.node.len());
            let (expect, what) = match rng.below(3) {
                0 => {
                    let a = g.node[k]
                        .attribute
                        .first()
                        .cloned()
                        .unwrap_or_else(|| int_attr("axis", 1));
                    g.node[k].attribute.push(a.clone());
                    g.node[k].attribute.push(a);
                    (Refuse, "an attribute given twice".to_string())
                }
                1 => {
                    let name = g.node[k]
                        .attribute
                        .first()
                        .map_or("axis".to_string(), |a| a.name.clone());
                    g.node[k].attribute = vec![float_attr(&name, f32::NAN)];
                    (Either, format!("{name} as a float NaN"))
                }
                _ => {
                    g.node[k].op_type = rng
                        .pick(&["NoSuchOp", "", "relu", "Loop", "If"])
                        .to_string();
                    (Refuse, format!("operator {:?}", g.node[k].op_type))
                }
            };
            (m, expect, what)
        }
        10 => {
            // Outputs that are not class scores.
            let mut m = small();
            let g = m.graph.as_mut().unwrap();
            let what = match rng.below(4) {
                0 => {
                    g.node.push(node("Softmax", "sm", &["input"], "probs"));
                    g.output[0].name = "probs".into();
                    "Softmax of the input as the output"
                }
                1 => {
                    let mut top = node("ArgMax", "top", &["logits"], "top");
                    top.attribute.push(int_attr("axis", 1));
                    g.node.push(top);
                    g.output[0].name = "top".into();
                    "ArgMax as the output"
                }
                2 => {
                    g.output[0].name = "input".into();
                    "the input as the output"
                }
                _ => {
                    g.node.push(node("ReduceSum", "sum", &["logits"], "total"));
                    g.output[0].name = "total".into();
                    "one value as the output"
                }
            };
            (m, Either, what.into())
        }
        11 => {
            // Names: the same output twice, an input nobody produces, an output nobody makes.
            let mut m = small();
            let g = m.graph.as_mut().unwrap();
            let what = match rng.below(3) {
                0 => {
                    let out = g.node[0].output[0].clone();
                    g.node.insert(1, node("Relu", "again", &["input"], &out));
                    "two nodes writing the same tensor"
                }
                1 => {
                    let k = rng.below(g.node.len());
                    g.node[k].input[0] = "nowhere".into();
                    "a node reading a tensor nobody makes"
                }
                _ => {
                    g.output[0].name = "nothing".into();
                    "an output nobody makes"
                }
            };
            (m, Refuse, what.into())
        }
        12 => {
            // Tract's optimiser grows with the square of the node count; georob caps its
            // work on graphs of over 3,000 nodes (a gradient graph of 1,000 nodes or more).
            // hostile::a_chain_of_5000_nodes_does_not_hang takes the longest chain.
            let n = *rng.pick(&[50usize, 200, 500, 1000]);
            let mut nodes = vec![];
            for k in 0..n {
                let from = if k == 0 {
                    "input".to_string()
                } else {
                    format!("r{}", k - 1)
                };
                nodes.push(node(
                    "Relu",
                    &format!("relu{k}"),
                    &[&from],
                    &format!("r{k}"),
                ));
            }
            let last = format!("r{}", n - 1);
            (
                between(nodes, vec![], &last),
                Either,
                format!("a chain of {n} Relu"),
            )
        }
        13 => {
            // A Constant node whose value is odd.
            let mut c = node("Constant", "c", &[], "K");
            let mut t = tensor("", &[1], &[1.0]);
            t.dims = vec![hostile_int(rng)];
            c.attribute.push(pb::AttributeProto {
                name: "value".into(),
                r#type: pb::attribute_proto::AttributeType::Tensor as i32,
                t: Some(t.clone()),
                ..Default::default()
            });
            let expect = if t.dims == [1] { Either } else { Refuse };
            let m = between(
                vec![c, node("Mul", "scale", &["input", "K"], "y")],
                vec![],
                "y",
            );
            (m, expect, format!("Constant of dims {:?}", t.dims))
        }
        14 => {
            // Long names and many attributes.
            let mut m = small();
            let g = m.graph.as_mut().unwrap();
            let big = "n".repeat(1 << (10 + rng.below(10)));
            g.node[0].name = big.clone();
            g.node[0].doc_string = big;
            for k in 0..rng.below(2000) {
                g.node[1]
                    .attribute
                    .push(int_attr(&format!("a{k}"), k as i64));
            }
            (m, Either, "long names, many attributes".into())
        }
        16 => {
            // External data: beside the model, or leaving its folder, or special.
            let (location, entries, expect) = *rng.pick(&[
                ("w.bin", &[][..], Either),
                ("w.bin", &[("offset", "2")][..], Refuse),
                (
                    "w.bin",
                    &[("offset", "18446744073709551615"), ("length", "4")][..],
                    Refuse,
                ),
                ("w.bin", &[("length", "x")][..], Refuse),
                ("../w.bin", &[][..], Refuse),
                ("/etc/hostname", &[][..], Refuse),
                ("/dev/zero", &[][..], Refuse),
                ("", &[][..], Refuse),
                ("link.bin", &[][..], Refuse),
                ("fifo.bin", &[][..], Refuse),
                ("missing.bin", &[][..], Refuse),
            ]);
            let what = format!("external data {location:?} {entries:?}");
            (external_model(location, entries), expect, what)
        }
        _ => {
            // Resize by hostile scales.
            let sc = *rng.pick(&[0.0f32, -1.0, 1e6, 1e20, f32::NAN, f32::INFINITY, 2.0]);
            let scales = tensor("sc", &[4], &[1.0, 1.0, sc, sc]);
            let roi = tensor("roi", &[0], &[]);
            (
                one_op("Resize", &["roi", "sc"], vec![], vec![roi, scales]),
                Either,
                format!("Resize by {sc}"),
            )
        }
    }
}

pub fn hostile_graph(i: usize, rng: &mut Rng, dir: &Path, fx: &Fixtures) -> Case {
    let (m, expect, what) = graph(i, rng);
    if what.starts_with("external") {
        std::fs::write(dir.join("w.bin"), 2.0f32.to_le_bytes()).unwrap();
        std::fs::write(dir.parent().unwrap().join("w.bin"), 2.0f32.to_le_bytes()).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("link.bin")).unwrap();
        crate::hostile::fifo(&dir.join("fifo.bin"));
    }
    std::fs::write(dir.join("model.onnx"), m.encode_to_vec()).unwrap();
    let call = model_call(rng, fx, dir, "model.onnx");
    Case::new(call, expect, &["model.onnx"], what)
}
