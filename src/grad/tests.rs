//! Finite-difference checks of the gradient graph, one test per rule family, in their awkward
//! forms (opset-dependent attribute/input forms, broadcasting, overlapping windows, …).

use super::onnx::*;
use super::testutil::{assert_grad, model, Rng};
use prost::Message;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};

fn w(name: &str, dims: &[usize], seed: u64) -> TensorProto {
    let n: usize = dims.iter().product();
    tensor_f32(name, dims, &Rng(seed).vec(n, 0.5))
}

fn node(op: &str, inputs: &[&str], out: &str, attrs: Vec<(&str, Attr)>) -> NodeProto {
    make_node(op, out, inputs, &[out], attrs)
}

/// `x → op → y`, checked for M = 1 and 10.
fn one(
    op: &str,
    inputs: &[&str],
    attrs: Vec<(&str, Attr)>,
    inits: Vec<TensorProto>,
    shape: &[usize],
    opset: i64,
) {
    let m = model(
        vec![node(op, inputs, "y", attrs)],
        inits,
        "x",
        shape,
        "y",
        opset,
    );
    assert_grad(&m, shape, 1.0);
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

fn chain(
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    shape: &[usize],
    opset: i64,
) -> ModelProto {
    let out = nodes.last().unwrap().output[0].clone();
    model(nodes, inits, "x", shape, &out, opset)
}

#[test]
fn conv_relu_gemm_end_to_end() {
    let nodes = vec![
        node(
            "Conv",
            &["x", "w", "b"],
            "c",
            vec![("pads", ints(&[1, 1, 1, 1]))],
        ),
        node("Relu", &["c"], "r", vec![]),
        node("Flatten", &["r"], "f", vec![]),
        node(
            "Gemm",
            &["f", "fw", "fb"],
            "y",
            vec![("transB", Attr::Int(1))],
        ),
    ];
    let inits = vec![
        w("w", &[4, 2, 3, 3], 1),
        w("b", &[4], 2),
        w("fw", &[5, 100], 3),
        w("fb", &[5], 4),
    ];
    assert_grad(&chain(nodes, inits, &[2, 2, 5, 5], 13), &[2, 2, 5, 5], 1.0);
}

/// Stride-1 convolutions go back through a flipped-kernel Conv when it lays out fewer values
/// than a ConvTranspose (C_in ≥ C_out per group, or a 1×1 kernel), else through ConvTranspose;
/// both forms must be exact.
#[test]
fn conv_stride1_vjp_takes_the_smaller_form() {
    for (dims, form) in [
        ([2usize, 4, 3, 3], "Conv"),
        ([4, 2, 3, 3], "ConvTranspose"),
        ([4, 2, 1, 1], "Conv"),
    ] {
        let pads = if dims[2] == 3 { [1, 0, 1, 2] } else { [0; 4] };
        let attrs = vec![("pads", ints(&pads))];
        let m = model(
            vec![node("Conv", &["x", "w"], "y", attrs)],
            vec![w("w", &dims, 9)],
            "x",
            &[2, dims[1], 5, 6],
            "y",
            13,
        );
        let built = super::build_gradient_graph(&m, &[2, dims[1], 5, 6], 3).unwrap();
        let backward: Vec<&str> = built.model.graph.as_ref().unwrap().node[1..]
            .iter()
            .map(|n| n.op_type.as_str())
            .filter(|op| op.starts_with("Conv"))
            .collect();
        assert_eq!(backward, [form], "weights {dims:?}");
        assert_grad(&m, &[2, dims[1], 5, 6], 1.0);
    }
}

/// TF-style "same" padding exported as Pad → Conv: the Pad's crop is folded into the pads of
/// the Conv VJP (no Slice left), for the stride-1 flipped Conv, the flipped Conv over the
/// interleaved cotangent of strided depthwise convolutions and the ConvTranspose of strided
/// dense ones; all exact.
#[test]
fn pad_then_conv_folds_the_crop_into_the_conv_vjp() {
    for (dims, group, stride, form) in [
        ([3usize, 3, 3, 3], 1i64, 1i64, "Conv"),
        ([4, 1, 3, 3], 4, 2, "Conv"),
        ([4, 1, 5, 5], 4, 2, "Conv"),
        ([4, 4, 3, 3], 1, 2, "ConvTranspose"),
    ] {
        let cin = dims[1] * group as usize;
        let shape = [2, cin, 7, 8];
        let pads = tensor_i64("p", &[8], &[0, 0, 1, 0, 0, 0, 1, 2]);
        let nodes = vec![
            node("Pad", &["x", "p"], "xp", vec![]),
            node(
                "Conv",
                &["xp", "w"],
                "y",
                vec![
                    ("group", Attr::Int(group)),
                    ("strides", ints(&[stride, stride])),
                ],
            ),
        ];
        let m = model(nodes, vec![pads, w("w", &dims, 10)], "x", &shape, "y", 13);
        let built = super::build_gradient_graph(&m, &shape, 3).unwrap();
        let ops: Vec<&str> = built.model.graph.as_ref().unwrap().node[2..]
            .iter()
            .map(|n| n.op_type.as_str())
            .collect();
        assert!(!ops.contains(&"Slice"), "{dims:?}: {ops:?}");
        assert!(ops.contains(&form), "{dims:?}: {ops:?}");
        assert_grad(&m, &shape, 1.0);
    }
}

#[test]
fn conv_grouped_strided_dilated_asymmetric_pads() {
    let attrs = vec![
        ("group", Attr::Int(2)),
        ("strides", ints(&[2, 1])),
        ("dilations", ints(&[1, 2])),
        ("pads", ints(&[1, 0, 0, 2])),
    ];
    one(
        "Conv",
        &["x", "w"],
        attrs,
        vec![w("w", &[4, 2, 3, 2], 5)],
        &[2, 4, 6, 5],
        11,
    );
}

/// Strided depthwise convolutions go back through a 1×1 ConvTranspose that puts zeros
/// between the cotangent's values and a stride-1 Conv with the flipped kernel (no k×k
/// ConvTranspose), exact for unequal strides, dilations, asymmetric pads and 1-D inputs.
#[test]
fn conv_strided_depthwise_vjp_interleaves_then_convolves() {
    type Case<'a> = (&'a [usize], &'a [usize], Vec<(&'a str, Attr)>);
    let cases: [Case; 4] = [
        (
            &[3, 1, 3, 3],
            &[2, 3, 9, 8],
            vec![("strides", ints(&[2, 2]))],
        ),
        (
            &[3, 1, 3, 2],
            &[1, 3, 11, 9],
            vec![
                ("strides", ints(&[3, 2])),
                ("dilations", ints(&[2, 1])),
                ("pads", ints(&[2, 0, 1, 1])),
            ],
        ),
        (
            &[2, 1, 5, 5],
            &[1, 2, 8, 7],
            vec![("strides", ints(&[2, 2])), ("pads", ints(&[1, 2, 2, 1]))],
        ),
        (&[4, 1, 4], &[2, 4, 13], vec![("strides", ints(&[3]))]),
    ];
    for (dims, shape, mut attrs) in cases {
        attrs.push(("group", Attr::Int(dims[0] as i64)));
        let m = model(
            vec![node("Conv", &["x", "w"], "y", attrs)],
            vec![w("w", dims, 11)],
            "x",
            shape,
            "y",
            13,
        );
        let built = super::build_gradient_graph(&m, shape, 3).unwrap();
        let kernels: Vec<(&str, Vec<i64>)> = built.model.graph.as_ref().unwrap().node[1..]
            .iter()
            .filter(|n| n.op_type.starts_with("Conv"))
            .map(|n| {
                let k = n.attribute.iter().find(|a| a.name == "kernel_shape");
                (
                    n.op_type.as_str(),
                    k.map(|a| a.ints.clone()).unwrap_or_default(),
                )
            })
            .collect();
        let ones = vec![1; dims.len() - 2];
        let kernel: Vec<i64> = dims[2..].iter().map(|&k| k as i64).collect();
        assert_eq!(
            kernels,
            [("ConvTranspose", ones), ("Conv", kernel)],
            "weights {dims:?}"
        );
        assert_grad(&m, shape, 1.0);
    }
}

#[test]
fn conv_depthwise_same_upper_and_lower() {
    for mode in ["SAME_UPPER", "SAME_LOWER"] {
        let attrs = vec![
            ("group", Attr::Int(3)),
            ("strides", ints(&[2, 2])),
            ("auto_pad", Attr::Str(mode.into())),
            ("kernel_shape", ints(&[3, 3])),
        ];
        one(
            "Conv",
            &["x", "w"],
            attrs,
            vec![w("w", &[3, 1, 3, 3], 6)],
            &[1, 3, 6, 7],
            13,
        );
    }
}

#[test]
fn conv_1d_valid() {
    let attrs = vec![
        ("auto_pad", Attr::Str("VALID".into())),
        ("strides", ints(&[3])),
    ];
    one(
        "Conv",
        &["x", "w", "b"],
        attrs,
        vec![w("w", &[3, 2, 2], 7), w("b", &[3], 8)],
        &[2, 2, 9],
        17,
    );
}

#[test]
fn gemm_transposes_alpha_beta() {
    let attrs = vec![
        ("transA", Attr::Int(0)),
        ("transB", Attr::Int(0)),
        ("alpha", Attr::Float(0.7)),
        ("beta", Attr::Float(1.3)),
    ];
    one(
        "Gemm",
        &["x", "b", "c"],
        attrs,
        vec![w("b", &[6, 3], 9), w("c", &[1, 3], 10)],
        &[2, 6],
        11,
    );
    // transA: the batch sits on axis 1 of A.
    let nodes = vec![
        node("Transpose", &["x"], "xt", vec![("perm", ints(&[1, 0]))]),
        node(
            "Gemm",
            &["xt", "b"],
            "y",
            vec![("transA", Attr::Int(1)), ("transB", Attr::Int(1))],
        ),
    ];
    assert_grad(
        &chain(nodes, vec![w("b", &[3, 6], 11)], &[2, 6], 13),
        &[2, 6],
        1.0,
    );
}

#[test]
fn gemm_with_active_c() {
    let nodes = vec![
        node("Relu", &["x"], "r", vec![]),
        node(
            "Gemm",
            &["x", "b", "r"],
            "y",
            vec![("beta", Attr::Float(0.5))],
        ),
    ];
    assert_grad(
        &chain(nodes, vec![w("b", &[4, 4], 12)], &[3, 4], 13),
        &[3, 4],
        1.0,
    );
}

#[test]
fn matmul_batched_broadcast_and_vector() {
    one(
        "MatMul",
        &["x", "b"],
        vec![],
        vec![w("b", &[4, 3], 13)],
        &[2, 5, 4],
        13,
    );
    one(
        "MatMul",
        &["x", "b"],
        vec![],
        vec![w("b", &[4], 14)],
        &[2, 3, 4],
        13,
    );
    // constant on the left, broadcast over the batch: (3, 5) @ (N, 5, 2)
    one(
        "MatMul",
        &["a", "x"],
        vec![],
        vec![w("a", &[3, 5], 15)],
        &[2, 5, 2],
        13,
    );
}

#[test]
fn matmul_both_active_attention_scores() {
    // s = x xᵀ per sample, then softmax, then s x.
    let nodes = vec![
        node("Transpose", &["x"], "xt", vec![("perm", ints(&[0, 2, 1]))]),
        node("MatMul", &["x", "xt"], "s", vec![]),
        node("Softmax", &["s"], "p", vec![("axis", Attr::Int(-1))]),
        node("MatMul", &["p", "x"], "o", vec![]),
        node("Flatten", &["o"], "y", vec![]),
    ];
    assert_grad(&chain(nodes, vec![], &[2, 4, 3], 13), &[2, 4, 3], 1.0);
}

#[test]
fn binary_ops_with_broadcasting() {
    for op in ["Add", "Sub", "Mul", "Div"] {
        // x (N,3,4) op c (3,1); and c op x
        let c = tensor_f32("c", &[3, 1], &[1.5, -2.0, 0.75]);
        one(op, &["x", "c"], vec![], vec![c.clone()], &[2, 3, 4], 13);
        one(op, &["c", "x"], vec![], vec![c], &[2, 3, 4], 13);
        // both active, one reduced (broadcast): x op mean(x)
        let nodes = vec![
            node(
                "ReduceMean",
                &["x"],
                "m",
                vec![("axes", ints(&[2])), ("keepdims", Attr::Int(1))],
            ),
            node("Sigmoid", &["m"], "s", vec![]),
            node(op, &["x", "s"], "y", vec![]),
        ];
        assert_grad(&chain(nodes, vec![], &[2, 3, 4], 11), &[2, 3, 4], 1.0);
    }
}

#[test]
fn pow_sum_where_max_min() {
    // Pow with constant exponent on a positive base.
    let nodes = vec![
        node("Sigmoid", &["x"], "s", vec![]),
        node("Pow", &["s", "e"], "y", vec![]),
    ];
    let e = tensor_f32("e", &[], &[2.5]);
    assert_grad(&chain(nodes, vec![e], &[2, 5], 13), &[2, 5], 1.0);
    // Pow with an active exponent.
    let nodes = vec![node("Pow", &["b", "x"], "y", vec![])];
    let b = tensor_f32("b", &[5], &[1.5, 2.0, 0.5, 3.0, 1.1]);
    assert_grad(&chain(nodes, vec![b], &[2, 5], 13), &[2, 5], 1.0);
    // Sum (variadic), Max, Min.
    for op in ["Sum", "Max", "Min"] {
        let nodes = vec![
            node("Tanh", &["x"], "t", vec![]),
            node("Neg", &["x"], "n", vec![]),
            node(op, &["x", "t", "c", "n"], "y", vec![]),
        ];
        let c = tensor_f32("c", &[5], &[0.1, -0.2, 0.3, -0.4, 0.05]);
        assert_grad(&chain(nodes, vec![c], &[2, 5], 13), &[2, 5], 1.0);
    }
    // Where with a data-dependent condition.
    let nodes = vec![
        node("Greater", &["x", "z"], "cond", vec![]),
        node("Exp", &["x"], "e", vec![]),
        node("Where", &["cond", "e", "x"], "y", vec![]),
    ];
    let z = tensor_f32("z", &[], &[0.0]);
    assert_grad(&chain(nodes, vec![z], &[2, 6], 13), &[2, 6], 1.0);
}

#[test]
fn unary_functions() {
    for op in [
        "Neg", "Exp", "Tanh", "Erf", "Sigmoid", "Sin", "Cos", "Softplus", "Elu", "Abs",
    ] {
        one(op, &["x"], vec![], vec![], &[2, 7], 13);
    }
    // Functions needing a positive argument: through x² + 0.5.
    for op in ["Sqrt", "Log", "Reciprocal"] {
        let nodes = vec![
            node("Mul", &["x", "x"], "sq", vec![]),
            node("Add", &["sq", "h"], "p", vec![]),
            node(op, &["p"], "y", vec![]),
        ];
        let h = tensor_f32("h", &[], &[0.5]);
        assert_grad(&chain(nodes, vec![h], &[2, 7], 13), &[2, 7], 1.0);
    }
}

#[test]
fn gelu_pattern() {
    // x · ½ (1 + erf(x / √2)), as exported by PyTorch.
    let nodes = vec![
        node("Div", &["x", "r2"], "d", vec![]),
        node("Erf", &["d"], "e", vec![]),
        node("Add", &["e", "one"], "a", vec![]),
        node("Mul", &["x", "a"], "m", vec![]),
        node("Mul", &["m", "half"], "y", vec![]),
    ];
    let inits = vec![
        tensor_f32("r2", &[], &[std::f32::consts::SQRT_2]),
        tensor_f32("one", &[], &[1.0]),
        tensor_f32("half", &[], &[0.5]),
    ];
    assert_grad(&chain(nodes, inits, &[2, 8], 13), &[2, 8], 2.0);
}

#[test]
fn piecewise_activations() {
    one("Relu", &["x"], vec![], vec![], &[2, 9], 13);
    one(
        "LeakyRelu",
        &["x"],
        vec![("alpha", Attr::Float(0.1))],
        vec![],
        &[2, 9],
        13,
    );
    one(
        "HardSigmoid",
        &["x"],
        vec![("alpha", Attr::Float(0.3))],
        vec![],
        &[2, 9],
        13,
    );
    let m = model(
        vec![node("HardSwish", &["x"], "y", vec![])],
        vec![],
        "x",
        &[2, 9],
        "y",
        14,
    );
    assert_grad(&m, &[2, 9], 5.0);
    let slope = tensor_f32("s", &[3, 1], &[0.1, 0.2, -0.3]);
    one("PRelu", &["x", "s"], vec![], vec![slope], &[2, 3, 3], 13);
}

#[test]
fn clip_attribute_and_input_forms() {
    let lo = tensor_f32("lo", &[], &[-0.3]);
    let hi = tensor_f32("hi", &[], &[0.4]);
    one(
        "Clip",
        &["x", "lo", "hi"],
        vec![],
        vec![lo.clone(), hi],
        &[2, 9],
        13,
    );
    one("Clip", &["x", "lo"], vec![], vec![lo.clone()], &[2, 9], 12);
    // Relu6 at opset 6–10: min/max attributes.
    let attrs = vec![("min", Attr::Float(0.0)), ("max", Attr::Float(0.5))];
    one("Clip", &["x"], attrs.clone(), vec![], &[2, 9], 10);
    // 4-D: constant bounds take the BatchNormalization/Relu mask (one lower bound, both,
    // and the fused `Clip(0, hi)` form), as does Relu.
    let zero = tensor_f32("zero", &[], &[0.0]);
    let hi = tensor_f32("hi", &[], &[0.4]);
    let image = [2, 3, 4, 4];
    one("Clip", &["x", "lo"], vec![], vec![lo.clone()], &image, 13);
    one(
        "Clip",
        &["x", "lo", "hi"],
        vec![],
        vec![lo, hi.clone()],
        &image,
        13,
    );
    one(
        "Clip",
        &["x", "zero", "hi"],
        vec![],
        vec![zero, hi],
        &image,
        13,
    );
    one("Clip", &["x"], attrs, vec![], &image, 10);
    one("Relu", &["x"], vec![], vec![], &image, 13);
}

/// `op` followed by a scale, so that the softmax is not the final node (which would be
/// skipped as pre-softmax logits).
fn not_last(op: &str, attrs: Vec<(&str, Attr)>, shape: &[usize], opset: i64) {
    let nodes = vec![
        node(op, &["x"], "s", attrs),
        node("Mul", &["s", "k"], "y", vec![]),
    ];
    let k = tensor_f32("k", &[], &[3.0]);
    assert_grad(&chain(nodes, vec![k], shape, opset), shape, 1.0);
}

#[test]
fn softmax_axes_across_opsets() {
    // opset 11: axis 1 on a 3-D tensor coerces to 2-D: normalise over axes 1 and 2.
    not_last("Softmax", vec![("axis", Attr::Int(1))], &[2, 3, 4], 11);
    not_last("LogSoftmax", vec![("axis", Attr::Int(1))], &[2, 3, 4], 11);
    // opset 13: a single axis.
    not_last("Softmax", vec![("axis", Attr::Int(1))], &[2, 3, 4], 13);
    not_last("LogSoftmax", vec![], &[2, 3, 4], 13);
}

#[test]
fn final_softmax_is_skipped() {
    let nodes = vec![
        node("Gemm", &["x", "b"], "z", vec![]),
        node("Softmax", &["z"], "p", vec![("axis", Attr::Int(1))]),
        node("Identity", &["p"], "y", vec![]),
    ];
    let m = chain(nodes, vec![w("b", &[4, 3], 21)], &[2, 4], 13);
    let g = super::build_gradient_graph(&m, &[2, 4], 2).unwrap();
    assert!(g.pre_softmax);
    assert_eq!((g.batch, g.classes, g.num_logits), (2, 2, 3));
    assert_grad(&m, &[2, 4], 1.0);
}

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
    let probed = super::probe_model(&m, &shape).unwrap();
    for classes in [3, 1, 3, 2] {
        let shared = super::build_gradient_graph_probed(
            &m,
            &probed,
            classes,
            super::CotangentLayout::Batched,
        )
        .unwrap();
        let fresh = super::build_gradient_graph(&m, &shape, classes).unwrap();
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
    use super::testutil::{plan, run, Rng};
    use super::CotangentLayout::{Batched, Split};
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
    let probed = super::probe_model(&m, &shape).unwrap();
    let classes = 3;
    let batched = super::build_gradient_graph_probed(&m, &probed, classes, Batched).unwrap();
    let split = super::build_gradient_graph_probed(&m, &probed, classes, Split).unwrap();
    let count = |g: &super::GradientGraph, op: &str| {
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
fn max_pool_overlapping_ceil_dilated() {
    // ResNet stem: 3×3, stride 2, pad 1 (overlapping windows).
    let attrs = vec![
        ("kernel_shape", ints(&[3, 3])),
        ("strides", ints(&[2, 2])),
        ("pads", ints(&[1, 1, 1, 1])),
    ];
    one("MaxPool", &["x"], attrs, vec![], &[2, 2, 7, 6], 13);
    // ceil_mode with asymmetric pads and dilation.
    let attrs = vec![
        ("kernel_shape", ints(&[2, 3])),
        ("strides", ints(&[2, 2])),
        ("pads", ints(&[0, 1, 1, 0])),
        ("dilations", ints(&[2, 1])),
        ("ceil_mode", Attr::Int(1)),
    ];
    one("MaxPool", &["x"], attrs, vec![], &[1, 2, 8, 7], 12);
    // auto_pad SAME_UPPER, 1-D.
    let attrs = vec![
        ("kernel_shape", ints(&[3])),
        ("strides", ints(&[2])),
        ("auto_pad", Attr::Str("SAME_UPPER".into())),
    ];
    one("MaxPool", &["x"], attrs, vec![], &[2, 3, 9], 11);
}

#[test]
fn average_pool_count_include_pad_both_ways() {
    for cip in [0, 1] {
        for ceil in [0, 1] {
            let attrs = vec![
                ("kernel_shape", ints(&[3, 3])),
                ("strides", ints(&[2, 2])),
                ("pads", ints(&[1, 1, 1, 1])),
                ("count_include_pad", Attr::Int(cip)),
                ("ceil_mode", Attr::Int(ceil)),
            ];
            one("AveragePool", &["x"], attrs, vec![], &[2, 2, 6, 7], 11);
        }
    }
}

#[test]
fn global_pools() {
    one(
        "GlobalAveragePool",
        &["x"],
        vec![],
        vec![],
        &[2, 3, 4, 5],
        13,
    );
    one("GlobalMaxPool", &["x"], vec![], vec![], &[2, 3, 4, 5], 13);
}

#[test]
fn reductions_attr_and_input_axes() {
    for op in [
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "ReduceL2",
        "ReduceSumSquare",
    ] {
        for keep in [0, 1] {
            let attrs = vec![("axes", ints(&[1, -1])), ("keepdims", Attr::Int(keep))];
            one(op, &["x"], attrs, vec![], &[2, 3, 2, 4], 11);
            let axes = tensor_i64("axes", &[2], &[1, -1]);
            let opset = if op == "ReduceSum" { 13 } else { 18 };
            one(
                op,
                &["x", "axes"],
                vec![("keepdims", Attr::Int(keep))],
                vec![axes],
                &[2, 3, 2, 4],
                opset,
            );
        }
    }
}

#[test]
fn batch_norm_instance_norm_layer_norm() {
    let c = 3;
    let bn = vec![
        w("s", &[c], 30),
        w("b", &[c], 31),
        w("mu", &[c], 32),
        tensor_f32("var", &[c], &[0.5, 1.0, 2.0]),
    ];
    one(
        "BatchNormalization",
        &["x", "s", "b", "mu", "var"],
        vec![("epsilon", Attr::Float(1e-3))],
        bn,
        &[2, 3, 4, 2],
        15,
    );
    let inn = vec![w("s", &[c], 33), w("b", &[c], 34)];
    one(
        "InstanceNormalization",
        &["x", "s", "b"],
        vec![],
        inn,
        &[2, 3, 5, 2],
        13,
    );
    let ln = vec![w("s", &[4], 35), w("b", &[4], 36)];
    one(
        "LayerNormalization",
        &["x", "s", "b"],
        vec![],
        ln,
        &[2, 3, 4],
        17,
    );
    let ln = vec![w("s", &[3, 4], 37)];
    one(
        "LayerNormalization",
        &["x", "s"],
        vec![("axis", Attr::Int(1))],
        ln,
        &[2, 3, 4],
        17,
    );
}

#[test]
fn reshape_family_across_opsets() {
    let shape = tensor_i64("shape", &[3], &[0, 4, -1]);
    one(
        "Reshape",
        &["x", "shape"],
        vec![],
        vec![shape],
        &[2, 2, 6],
        13,
    );
    let nodes = vec![
        node("Flatten", &["x"], "f", vec![("axis", Attr::Int(2))]),
        node("Reshape", &["f", "back"], "y", vec![]),
    ];
    let back = tensor_i64("back", &[2], &[2, -1]);
    assert_grad(
        &chain(nodes, vec![back], &[2, 3, 2, 2], 13),
        &[2, 3, 2, 2],
        1.0,
    );
    one(
        "Transpose",
        &["x"],
        vec![("perm", ints(&[0, 2, 3, 1]))],
        vec![],
        &[2, 3, 2, 2],
        13,
    );
    one(
        "Unsqueeze",
        &["x"],
        vec![("axes", ints(&[1, -1]))],
        vec![],
        &[2, 3],
        11,
    );
    one(
        "Unsqueeze",
        &["x", "a"],
        vec![],
        vec![tensor_i64("a", &[1], &[2])],
        &[2, 3],
        13,
    );
    one(
        "Squeeze",
        &["x"],
        vec![("axes", ints(&[2]))],
        vec![],
        &[2, 3, 1],
        11,
    );
    one(
        "Squeeze",
        &["x", "a"],
        vec![],
        vec![tensor_i64("a", &[1], &[-1])],
        &[2, 3, 1],
        13,
    );
    one("Identity", &["x"], vec![], vec![], &[2, 3], 13);
    one("Dropout", &["x"], vec![], vec![], &[2, 3], 13);
    one(
        "Cast",
        &["x"],
        vec![("to", Attr::Int(1))],
        vec![],
        &[2, 3],
        13,
    );
}

#[test]
fn reshape_computed_by_shape_subgraph() {
    // y = Reshape(x, concat(shape(x)[0:1], [-1])) — the PyTorch flatten export.
    let nodes = vec![
        node("Shape", &["x"], "s", vec![]),
        node("Gather", &["s", "zero"], "n", vec![("axis", Attr::Int(0))]),
        node("Unsqueeze", &["n", "ax0"], "n1", vec![]),
        node(
            "Concat",
            &["n1", "m1"],
            "shape",
            vec![("axis", Attr::Int(0))],
        ),
        node("Relu", &["x"], "r", vec![]),
        node("Reshape", &["r", "shape"], "y", vec![]),
    ];
    let inits = vec![
        tensor_i64("zero", &[], &[0]),
        tensor_i64("ax0", &[1], &[0]),
        tensor_i64("m1", &[1], &[-1]),
    ];
    assert_grad(&chain(nodes, inits, &[2, 3, 2, 2], 13), &[2, 3, 2, 2], 1.0);
}

#[test]
fn concat_and_split_forms() {
    let c = w("c", &[2, 2, 3], 40);
    let nodes = vec![
        node("Tanh", &["x"], "t", vec![]),
        node(
            "Concat",
            &["x", "c", "t"],
            "y",
            vec![("axis", Attr::Int(1))],
        ),
    ];
    assert_grad(&chain(nodes, vec![c], &[2, 2, 3], 13), &[2, 2, 3], 1.0);
    // Split with sizes as attribute (11), as input (13), num_outputs (18); one output unused.
    for opset in [11, 13, 18] {
        let (inputs, attrs, inits): (Vec<&str>, Vec<(&str, Attr)>, Vec<TensorProto>) = match opset {
            11 => (
                vec!["x"],
                vec![("axis", Attr::Int(1)), ("split", ints(&[2, 1, 3]))],
                vec![],
            ),
            13 => (
                vec!["x", "sp"],
                vec![("axis", Attr::Int(1))],
                vec![tensor_i64("sp", &[3], &[2, 1, 3])],
            ),
            _ => (
                vec!["x"],
                vec![("axis", Attr::Int(1)), ("num_outputs", Attr::Int(3))],
                vec![],
            ),
        };
        let nodes = vec![
            make_node("Split", "split", &inputs, &["a", "b", "c"], attrs),
            node("Sigmoid", &["c"], "sc", vec![]),
            node("Concat", &["sc", "a"], "y", vec![("axis", Attr::Int(1))]),
        ];
        assert_grad(&chain(nodes, inits, &[2, 6, 2], opset), &[2, 6, 2], 1.0);
    }
}

#[test]
fn slice_steps_negative_and_axes() {
    let t = |n: &str, v: &[i64]| tensor_i64(n, &[v.len()], v);
    // steps 2 on axis 2, negative step on axis 1, default axes omitted elsewhere.
    let inits = vec![
        t("st", &[3, 0]),
        t("en", &[i64::MIN, 7]),
        t("ax", &[1, 2]),
        t("sp", &[-2, 2]),
    ];
    one(
        "Slice",
        &["x", "st", "en", "ax", "sp"],
        vec![],
        inits,
        &[2, 5, 7],
        13,
    );
    let inits = vec![t("st", &[0, 1]), t("en", &[i64::MAX, -1])];
    one("Slice", &["x", "st", "en"], vec![], inits, &[2, 5], 11);
    // step 3 that overshoots the end; negative start.
    let inits = vec![
        t("st", &[-6]),
        t("en", &[100]),
        t("ax", &[-1]),
        t("sp", &[3]),
    ];
    one(
        "Slice",
        &["x", "st", "en", "ax", "sp"],
        vec![],
        inits,
        &[2, 3, 7],
        13,
    );
}

#[test]
fn gather_constant_indices_with_repeats() {
    let idx = tensor_i64("i", &[2, 2], &[0, 2, -1, 0]);
    one(
        "Gather",
        &["x", "i"],
        vec![("axis", Attr::Int(1))],
        vec![idx],
        &[2, 4, 3],
        13,
    );
    let idx = tensor_i64("i", &[], &[1]);
    one(
        "Gather",
        &["x", "i"],
        vec![("axis", Attr::Int(2))],
        vec![idx],
        &[2, 4, 3],
        13,
    );
}

#[test]
fn pad_modes_and_forms() {
    for mode in ["constant", "reflect", "edge"] {
        let attrs = vec![("mode", Attr::Str(mode.into()))];
        let p = tensor_i64("p", &[6], &[0, 2, 1, 0, 1, 2]);
        one("Pad", &["x", "p"], attrs.clone(), vec![p], &[2, 4, 5], 13);
        let mut a = attrs.clone();
        a.push(("pads", ints(&[0, 1, 2, 0, 2, 1])));
        one("Pad", &["x"], a, vec![], &[2, 4, 5], 10);
        // opset 18 axes input.
        let p = tensor_i64("p", &[2], &[2, 1]);
        let ax = tensor_i64("ax", &[1], &[-1]);
        one(
            "Pad",
            &["x", "p", "", "ax"],
            attrs,
            vec![p, ax],
            &[2, 4, 5],
            18,
        );
    }
    // `wrap` (opset 19) and negative pads (crop) have rules, but tract cannot run them, so
    // they are not tested here.
}

#[test]
fn expand_broadcast() {
    let s = tensor_i64("s", &[4], &[2, 3, 2, 4]);
    one("Expand", &["x", "s"], vec![], vec![s], &[2, 1, 2, 1], 13);
}

#[test]
fn resize_nearest_and_linear() {
    let scales = tensor_f32("sc", &[4], &[1.0, 1.0, 2.0, 1.5]);
    let roi = tensor_f32("roi", &[0], &[]);
    for (mode, ctm, nearest) in [
        ("nearest", "asymmetric", "floor"),
        ("nearest", "half_pixel", "round_prefer_floor"),
        ("linear", "half_pixel", "round_prefer_floor"),
        ("linear", "align_corners", "round_prefer_floor"),
        ("linear", "pytorch_half_pixel", "round_prefer_floor"),
        ("linear", "asymmetric", "round_prefer_floor"),
    ] {
        let attrs = vec![
            ("mode", Attr::Str(mode.into())),
            ("coordinate_transformation_mode", Attr::Str(ctm.into())),
            ("nearest_mode", Attr::Str(nearest.into())),
        ];
        one(
            "Resize",
            &["x", "roi", "sc"],
            attrs,
            vec![scales.clone(), roi.clone()],
            &[2, 2, 3, 4],
            13,
        );
    }
    // sizes instead of scales.
    let sizes = tensor_i64("sz", &[4], &[2, 2, 5, 3]);
    let attrs = vec![("mode", Attr::Str("linear".into()))];
    one(
        "Resize",
        &["x", "", "", "sz"],
        attrs,
        vec![sizes],
        &[2, 2, 3, 4],
        13,
    );
}

#[test]
fn attention_with_moving_batch_axis() {
    // PyTorch MHA export pattern: (N, L, E) -> (L, N, E) -> (L, N·h, d) -> (N·h, L, d).
    let (n, l, e, h) = (2usize, 3usize, 4usize, 2usize);
    let d = e / h;
    let s = |name: &str, v: &[i64]| tensor_i64(name, &[v.len()], v);
    let nodes = vec![
        node("MatMul", &["x", "wq"], "q0", vec![]),
        node("Transpose", &["q0"], "q1", vec![("perm", ints(&[1, 0, 2]))]),
        node("Reshape", &["q1", "s1"], "q2", vec![]),
        node("Transpose", &["q2"], "q", vec![("perm", ints(&[1, 0, 2]))]),
        node("Transpose", &["q"], "kt", vec![("perm", ints(&[0, 2, 1]))]),
        node("MatMul", &["q", "kt"], "sc", vec![]),
        node("Softmax", &["sc"], "p", vec![("axis", Attr::Int(-1))]),
        node("MatMul", &["p", "q"], "o", vec![]),
        node("Transpose", &["o"], "o1", vec![("perm", ints(&[1, 0, 2]))]),
        node("Reshape", &["o1", "s2"], "o2", vec![]),
        node("Transpose", &["o2"], "o3", vec![("perm", ints(&[1, 0, 2]))]),
        node(
            "ReduceMean",
            &["o3"],
            "y",
            vec![("axes", ints(&[1])), ("keepdims", Attr::Int(0))],
        ),
    ];
    let inits = vec![
        w("wq", &[e, e], 50),
        s("s1", &[l as i64, (n * h) as i64, d as i64]),
        s("s2", &[l as i64, n as i64, e as i64]),
    ];
    assert_grad(&chain(nodes, inits, &[n, l, e], 13), &[n, l, e], 1.0);
}

#[test]
fn small_cnn_with_residual_bn_pools() {
    let c = 4;
    let nodes = vec![
        node(
            "Conv",
            &["x", "w1"],
            "c1",
            vec![("pads", ints(&[1, 1, 1, 1])), ("strides", ints(&[2, 2]))],
        ),
        node(
            "BatchNormalization",
            &["c1", "s", "b", "mu", "var"],
            "bn",
            vec![],
        ),
        node("HardSwish", &["bn"], "a1", vec![]),
        node(
            "MaxPool",
            &["a1"],
            "p1",
            vec![("kernel_shape", ints(&[2, 2])), ("strides", ints(&[1, 1]))],
        ),
        node(
            "Conv",
            &["p1", "w2"],
            "c2",
            vec![
                ("pads", ints(&[1, 1, 1, 1])),
                ("group", Attr::Int(c as i64)),
            ],
        ),
        node("Clip", &["c2", "zero", "six"], "a2", vec![]),
        node("Add", &["a2", "p1"], "res", vec![]),
        node("GlobalAveragePool", &["res"], "g", vec![]),
        node("Flatten", &["g"], "f", vec![]),
        node(
            "Gemm",
            &["f", "fw", "fb"],
            "z",
            vec![("transB", Attr::Int(1))],
        ),
        node("Softmax", &["z"], "y", vec![("axis", Attr::Int(1))]),
    ];
    let inits = vec![
        w("w1", &[c, 3, 3, 3], 60),
        w("s", &[c], 61),
        w("b", &[c], 62),
        w("mu", &[c], 63),
        tensor_f32("var", &[c], &[1.0, 0.5, 2.0, 1.5]),
        w("w2", &[c, 1, 3, 3], 64),
        tensor_f32("zero", &[], &[0.0]),
        tensor_f32("six", &[], &[6.0]),
        w("fw", &[5, c], 65),
        w("fb", &[5], 66),
    ];
    // Seed 17 puts two MaxPool window entries within 1e-4 of each other, closer than any
    // usable float32 FD step.
    let m = chain(nodes, inits, &[2, 3, 8, 8], 14);
    super::testutil::assert_grad_seed(&m, &[2, 3, 8, 8], 1.0, 100);
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
    let miss = super::ops_without_rule(&m);
    let names: Vec<_> = miss
        .iter()
        .map(|u| (u.op_type.as_str(), u.node_name.as_str()))
        .collect();
    assert_eq!(names, vec![("com.example.Foo", "f"), ("Hardmax", "y")]);
    let err = super::build_gradient_graph(&m, &[2, 3], 1).unwrap_err();
    assert!(
        matches!(err, super::GradError::MissingRules(ref v) if v.len() == 2),
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
    let err = super::build_gradient_graph(&m, &[2, 3], 1).unwrap_err();
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
    let miss: Vec<String> = super::ops_without_rule(&m)
        .iter()
        .map(|u| u.op_type.clone())
        .collect();
    assert_eq!(miss, ["QuantizeLinear", "DequantizeLinear"]);
}
