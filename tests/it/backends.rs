//! tract and ONNX Runtime agree on every bundled float model: same top-1,
//! logits within 1e-4 relative; on the int8 (QDQ) model, whose integer
//! kernels round differently in each runtime, same top-1 and probabilities
//! within 0.02. Both reproduce the references saved by the script that made
//! the models.

use georob::attack::vector::argmax;
use georob::model::{BackendKind, Model, ModelOptions};

use crate::common::{npy_f32, options_for, ort_library, rel, repo, tract, value_info};

/// (model, inputs .npy, reference logits .npy if any)
const CASES: &[(&str, &str, Option<&str>)] = &[
    (
        "onnx_models/digits/digits_cnn.onnx",
        "onnx_models/digits/test_x.npy",
        None,
    ),
    (
        "onnx_models/digits/digits_linear.onnx",
        "onnx_models/digits/test_x.npy",
        None,
    ),
    (
        "onnx_models/efficientnet_lite0/efficientnet_lite0.onnx",
        "onnx_models/efficientnet_lite0/photos_x.npy",
        None,
    ),
    (
        "onnx_models/tiny/mobilenet_v2_dyn.onnx",
        "onnx_models/tiny/tiny_x.npy",
        Some("onnx_models/tiny/mobilenet_v2_logits.npy"),
    ),
    (
        "onnx_models/tiny/mobilenet_v2_fixed.onnx",
        "onnx_models/tiny/tiny_x.npy",
        Some("onnx_models/tiny/mobilenet_v2_logits.npy"),
    ),
    (
        "onnx_models/tiny/softmax_head.onnx",
        "onnx_models/tiny/softmax_head_x.npy",
        Some("onnx_models/tiny/softmax_head_logits.npy"),
    ),
    (
        "onnx_models/tiny/nhwc_classifier.onnx",
        "onnx_models/tiny/nhwc_x.npy",
        Some("onnx_models/tiny/nhwc_logits.npy"),
    ),
];

fn logits(model: &str, x: &[f32], n: usize, backend: BackendKind) -> (Model, Vec<f32>) {
    let options = ModelOptions {
        batch: Some(4),
        ..options_for(backend)
    };
    let m = Model::open(&repo(model), &options).unwrap_or_else(|e| panic!("{model}: {e}"));
    let l = m.logits(x, n).unwrap();
    (m, l)
}

#[test]
fn tract_reproduces_the_reference_logits() {
    for (model, x, reference) in CASES {
        let Some(reference) = reference else { continue };
        let (shape, x) = npy_f32(&repo(x));
        let (_, want) = npy_f32(&repo(reference));
        let (_, got) = logits(model, &x, shape[0], BackendKind::Tract);
        let r = rel(&got, &want);
        assert!(r < 1e-4, "{model}: tract vs reference rel {r}");
    }
}

#[test]
fn tract_and_ort_agree_on_every_bundled_model() {
    let Some(_) = ort_library("tract_and_ort_agree_on_every_bundled_model") else {
        return;
    };
    for (model, x, _) in CASES {
        let (shape, x) = npy_f32(&repo(x));
        let n = shape[0].min(64);
        let d = x.len() / shape[0];
        let x = &x[..n * d];
        let (mt, lt) = logits(model, x, n, BackendKind::Tract);
        let (mo, lo) = logits(model, x, n, BackendKind::Ort);
        assert_eq!(mo.info().backend, BackendKind::Ort);
        let r = rel(&lo, &lt);
        assert!(r < 1e-4, "{model}: ort vs tract rel {r}");
        let k = mt.classes;
        for (a, b) in lt.chunks(k).zip(lo.chunks(k)) {
            assert_eq!(argmax(a), argmax(b), "{model}: top-1 differs");
        }
    }
}

#[test]
fn tract_and_ort_agree_on_the_int8_model_within_quantisation() {
    let Some(_) = ort_library("tract_and_ort_agree_on_the_int8_model_within_quantisation") else {
        return;
    };
    let model = "onnx_models/efficientnet_lite0/efficientnet_lite0_int8.onnx";
    let (shape, x) = npy_f32(&repo("onnx_models/efficientnet_lite0/photos_x.npy"));
    let n = shape[0];
    let (mt, lt) = logits(model, &x, n, BackendKind::Tract);
    let (_, lo) = logits(model, &x, n, BackendKind::Ort);
    let k = mt.classes;
    let mut worst = 0.0f32;
    for (a, b) in lt.chunks(k).zip(lo.chunks(k)) {
        assert_eq!(argmax(a), argmax(b), "{model}: top-1 differs");
        for c in 0..k {
            let d = (georob::logits::softmax_at(a, c) - georob::logits::softmax_at(b, c)).abs();
            worst = worst.max(d);
        }
    }
    eprintln!(
        "int8: logits rel {:.2e}, largest probability difference {worst:.4}",
        rel(&lo, &lt)
    );
    assert!(worst <= 0.02, "{model}: probabilities differ by {worst}");
}

#[test]
fn shape_annotations_naming_the_batch_do_not_stop_tract() {
    // Exporters and `onnx.shape_inference` annotate intermediates with a
    // symbolic batch `N`; tract must still run the model at a fixed batch.
    use prost::Message;
    let bytes = std::fs::read(repo("onnx_models/digits/digits_cnn.onnx")).unwrap();
    let mut proto = tract_onnx::pb::ModelProto::decode(&bytes[..]).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let conv = graph.node.iter().find(|n| n.op_type == "Conv").unwrap();
    let annotation = value_info(&conv.output[0], &[None, Some(16), Some(28), Some(28)]);
    graph.value_info.push(annotation);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("annotated.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    let options = tract();
    let annotated = Model::open(&path, &options).unwrap();
    let plain = Model::open(&repo("onnx_models/digits/digits_cnn.onnx"), &options).unwrap();
    let (_, x) = npy_f32(&repo("onnx_models/digits/test_x.npy"));
    let x = &x[..3 * 784];
    assert_eq!(annotated.logits(x, 3).unwrap(), plain.logits(x, 3).unwrap());
}

/// With two threads, tract and (on the CPU) ONNX Runtime run concurrent calls on row chunks;
/// their results must come back in row order and equal those of one thread running whole
/// batches (logits and gradients).
#[test]
fn concurrent_calls_keep_row_order() {
    let mut kinds = vec![BackendKind::Tract];
    if ort_library("concurrent_calls_keep_row_order (ort part)").is_some() {
        kinds.push(BackendKind::Ort);
    }
    let model = repo("onnx_models/digits/digits_cnn.onnx");
    let (_, x) = npy_f32(&repo("onnx_models/digits/test_x.npy"));
    let n = 13;
    let x = &x[..n * 784];
    // Cotangent rows that differ per image, so that a row mix-up shows.
    let (k, m) = (10, 2);
    let cot: Vec<f32> = (0..n * m * k).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
    for kind in kinds {
        let open = |threads: usize, batch: usize| {
            let options = ModelOptions {
                threads: Some(threads),
                batch: Some(batch),
                ..options_for(kind)
            };
            Model::open(&model, &options).unwrap()
        };
        let (serial, concurrent) = (open(1, 16), open(2, 1));
        assert_eq!(concurrent.backend().concurrent_calls(), 2, "{kind}");
        assert_eq!(serial.backend().concurrent_calls(), 1, "{kind}");
        let (a, b) = (
            serial.logits(x, n).unwrap(),
            concurrent.logits(x, n).unwrap(),
        );
        assert!(rel(&b, &a) < 1e-5, "{kind}: logits rel {}", rel(&b, &a));
        let (la, ga) = serial.vjp(x, n, &cot, m).unwrap();
        let (lb, gb) = concurrent.vjp(x, n, &cot, m).unwrap();
        assert!(
            rel(&lb, &la) < 1e-5,
            "{kind}: vjp logits rel {}",
            rel(&lb, &la)
        );
        for (i, (gb, ga)) in gb.chunks(m * 784).zip(ga.chunks(m * 784)).enumerate() {
            assert!(
                rel(gb, ga) < 1e-4,
                "{kind} row {i}: gradient rel {}",
                rel(gb, ga)
            );
        }
    }
}
