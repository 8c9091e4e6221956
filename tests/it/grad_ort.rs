//! Gradients on ONNX Runtime: the PyTorch autograd references of `onnx_models/grad/` through
//! `Model::open(.., BackendKind::Ort ..)` + `Model::vjp` (M = 1 and 10; cosine ≥ 0.9999,
//! relative L2 error ≤ 1e-3), and tract against ort on the bundled classifiers (logits and
//! gradients within 1e-4 relative).
//!
//! Needs the ONNX Runtime library (`ORT_DYLIB_PATH`, or a Python `onnxruntime` package; `.ci/run`
//! exports `ORT_DYLIB_PATH`). Without it, or without the `ort` feature, each test prints why it
//! is skipped. `GEOROB_GRAD_ONLY=name1,name2` restricts the reference loop.

use std::path::Path;

use georob::model::{BackendKind, GradientChoice, GradientMode, Model, ModelOptions};

use crate::common::{
    assert_no_failures, compare, grad_reference, grad_references, matches_reference, npy_f32,
    onnx_models, options_for, ort_library, read_npy_f32, GradReference,
};

fn open(path: &Path, kind: BackendKind, sidecar: bool) -> georob::Result<Model> {
    let options = ModelOptions {
        gradient: GradientChoice::Exact,
        threads: Some(2),
        use_sidecar: sidecar,
        ..options_for(kind)
    };
    Model::open(path, &options)
}

#[test]
fn gradients_match_pytorch_references_on_ort() {
    if ort_library("gradients_match_pytorch_references_on_ort").is_some() {
        references_on_ort();
    }
}

/// Each reference runs through `Model::vjp` when georob opens the file as an image
/// classifier; otherwise (vector or 3-D inputs of the rule tests) its gradient graph runs on
/// the same ort engine through `Backend::load_graph`.
fn references_on_ort() {
    use georob::grad::{build_gradient_graph, GradError};
    use prost::Message;
    use tract_onnx::pb::ModelProto;

    let dir = onnx_models("grad");
    let names = grad_references();
    assert!(!names.is_empty(), "no references under {}", dir.display());
    let host = open(
        &onnx_models("digits/digits_cnn.onnx"),
        BackendKind::Ort,
        true,
    )
    .expect("ort opens digits_cnn");
    let (mut via_model, mut via_graph) = (0, 0);
    let mut failures = vec![];
    let mut skipped = vec![];
    for name in &names {
        let path = dir.join(format!("{name}.onnx"));
        let Ok((xs, x)) = read_npy_f32(&dir.join(format!("{name}.input.npy"))) else {
            failures.push(format!("{name}: unreadable input.npy"));
            continue;
        };
        let n = xs[0];
        let model = open(&path, BackendKind::Ort, false)
            .ok()
            .filter(|m| m.spec.sample_shape()[..] == xs[1..]);
        let proto = ModelProto::decode(&*std::fs::read(&path).unwrap()).unwrap();
        for m in [1usize, 10] {
            let Some(GradReference {
                cot, grad: gref, ..
            }) = grad_reference(&dir, name, m)
            else {
                continue;
            };
            let grad = match &model {
                Some(model) => {
                    via_model += 1;
                    match model.vjp(&x, n, &cot, m) {
                        Ok((_, g)) => g,
                        Err(e) if e.to_string().contains("tract failed while") => {
                            // The builder infers shapes on tract, which cannot run this model.
                            skipped.push(format!("{name}: {e}"));
                            break;
                        }
                        Err(e) => {
                            failures.push(format!("{name} M={m}: vjp on ort: {e}"));
                            continue;
                        }
                    }
                }
                None => {
                    let gg = match build_gradient_graph(&proto, &xs, m) {
                        Ok(g) => g,
                        Err(e @ GradError::Tract { .. }) => {
                            skipped.push(format!("{name}: {e}"));
                            break;
                        }
                        Err(e) => {
                            failures.push(format!("{name} M={m}: build failed: {e}"));
                            continue;
                        }
                    };
                    via_graph += 1;
                    let session = match host.backend().load_graph(&gg.model) {
                        Ok(s) => s,
                        Err(e) => {
                            skipped.push(format!("{name}: ort cannot load the graph: {e}"));
                            break;
                        }
                    };
                    let cs = [n, m, gg.num_logits];
                    match session.run(&[(&x, &xs), (&cot, &cs)]) {
                        Ok(out) => out[1].1.clone(),
                        Err(e) => {
                            failures.push(format!("{name} M={m}: ort run: {e}"));
                            continue;
                        }
                    }
                }
            };
            let (cos, rel) = compare(&grad, &gref);
            eprintln!("{name} M={m}: cos {cos:.7} rel {rel:.2e}");
            if !matches_reference(cos, rel) {
                failures.push(format!("{name} M={m}: cos {cos:.6} rel {rel:.3e}"));
            }
        }
    }
    eprintln!(
        "{} references: {via_model} runs through Model::vjp, {via_graph} through the raw graph",
        names.len()
    );
    assert_no_failures(&failures, &skipped, "the forward model cannot run");
}

#[test]
fn tract_and_ort_agree_on_digits_cnn() {
    if ort_library("tract_and_ort_agree_on_digits_cnn").is_some() {
        tract_vs_ort("digits/digits_cnn.onnx", "digits/test_x.npy", 4);
    }
}

#[test]
fn tract_and_ort_agree_on_efficientnet_lite0() {
    if ort_library("tract_and_ort_agree_on_efficientnet_lite0").is_some() {
        tract_vs_ort(
            "efficientnet_lite0/efficientnet_lite0.onnx",
            "efficientnet_lite0/photos_x.npy",
            2,
        );
    }
}

/// Logits and gradients (M = 3 seeded cotangents) of the first `n` samples agree within 1e-4
/// relative L2 between tract and ort, and both use the exact graph.
fn tract_vs_ort(model: &str, data: &str, n: usize) {
    let (xs, x) = npy_f32(&onnx_models(data));
    let d: usize = xs[1..].iter().product();
    let x = &x[..n * d];
    let tract = open(&onnx_models(model), BackendKind::Tract, true).unwrap();
    let ort = open(&onnx_models(model), BackendKind::Ort, true).unwrap();
    assert_eq!(tract.gradient_mode().unwrap().0, GradientMode::Exact);
    assert_eq!(ort.gradient_mode().unwrap().0, GradientMode::Exact);
    let k = tract.classes;
    let m = 3;
    let cot: Vec<f32> = (0..n * m * k)
        .map(|i| ((i * 7919 % 97) as f32 - 48.0) / 48.0)
        .collect();
    let (lt, gt) = tract.vjp(x, n, &cot, m).unwrap();
    let (lo, go) = ort.vjp(x, n, &cot, m).unwrap();
    let (_, lrel) = compare(&lt, &lo);
    let (gcos, grel) = compare(&gt, &go);
    let (_, frel) = compare(&tract.logits(x, n).unwrap(), &ort.logits(x, n).unwrap());
    eprintln!(
        "{model}: logits rel {lrel:.2e} (forward {frel:.2e}); grad cos {gcos:.7} rel {grel:.2e}"
    );
    assert!(
        lrel <= 1e-4 && frel <= 1e-4,
        "logits rel {lrel:.2e} / {frel:.2e}"
    );
    assert!(grel <= 1e-4, "gradients rel {grel:.2e}");
}
