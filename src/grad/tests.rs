//! Finite-difference checks of whole gradient graphs: small networks whose paths run through
//! many rule families at once. Each family's own forms are tested beside its rule
//! (`rules/*.rs`), the graph machinery beside the builder and the path analysis.

use super::onnx::{tensor_f32, Attr};
use super::testutil::{assert_grad, assert_grad_seed, chain, ints, node, w};

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
    assert_grad_seed(&m, &[2, 3, 8, 8], 1.0, 100);
}
