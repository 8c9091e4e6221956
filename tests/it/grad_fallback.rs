//! The finite-difference fallback: a classifier with an operator that has no VJP rule (`Selu`)
//! gets finite-difference gradients with a one-line warning under `--gradient auto`, an error
//! naming the node under `--gradient exact`, and its gradients match the closed form.

use std::path::Path;

use georob::grad::ops_without_rule;
use georob::model::{GradientChoice, GradientMode, Model, ModelOptions};
use prost::Message;
use tract_onnx::pb::ModelProto;

use crate::common::{
    classifier, command, flatten_and_gemm, node, npy_f32, tensor, tract, write_npy_f32,
};

const ALPHA: f32 = 1.673_263_2;
const GAMMA: f32 = 1.050_701;
/// Pixels per sample: (1, 4, 4).
const D: usize = 16;
const K: usize = 3;

/// `W` `(K, D)` of the Gemm head.
fn weights() -> Vec<f32> {
    (0..K * D)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 11.0)
        .collect()
}

/// input `(N, 1, 4, 4)` → Flatten → Selu → Gemm (transB) → logits `(N, 3)`.
fn selu_classifier() -> ModelProto {
    let (flatten, gemm) = flatten_and_gemm("act");
    classifier(
        "selu_classifier",
        vec![flatten, node("Selu", "the_selu", &["flat"], "act"), gemm],
        vec![
            tensor("W", &[K, D], &weights()),
            tensor("b", &[K], &[0.1, -0.2, 0.3]),
        ],
        &[None, Some(1), Some(4), Some(4)],
        &[None, Some(K as i64)],
    )
}

fn open(path: &Path, gradient: GradientChoice) -> georob::Result<Model> {
    let options = ModelOptions {
        gradient,
        use_sidecar: false,
        ..tract()
    };
    Model::open(path, &options)
}

#[test]
fn a_model_without_a_rule_falls_back_to_correct_finite_differences() {
    let proto = selu_classifier();
    let missing = ops_without_rule(&proto);
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(
        (missing[0].op_type.as_str(), missing[0].node_name.as_str()),
        ("Selu", "the_selu")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("selu.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();

    // --gradient exact: an error naming the operator and the node.
    let exact = open(&path, GradientChoice::Exact).unwrap();
    let err = exact.gradient_mode().unwrap_err().to_string();
    assert!(
        err.contains("Selu") && err.contains("the_selu"),
        "error: {err}"
    );
    let x = vec![0.5f32; 2 * D];
    assert!(exact.vjp(&x, 2, &[1.0; 2 * K], 1).is_err());

    // --gradient auto: finite differences with a one-line warning naming op and node.
    let model = open(&path, GradientChoice::Auto).unwrap();
    let (mode, warning) = model.gradient_mode().unwrap();
    assert_eq!(mode, GradientMode::FiniteDifference);
    let warning = warning.expect("a warning");
    assert!(!warning.contains('\n'), "one line: {warning}");
    assert!(
        warning.contains("Selu") && warning.contains("the_selu"),
        "{warning}"
    );
    // It gives the cost: two forward passes per input value.
    assert!(
        warning.contains(&format!("{} forward passes", 2 * D)),
        "{warning}"
    );

    // The FD gradient against the closed form cᵀ W diag(selu'(x)), M = 2, at inputs off 0.
    let n = 3;
    let x: Vec<f32> = (0..n * D)
        .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0 + 0.03)
        .collect();
    let m = 2;
    let cot: Vec<f32> = (0..n * m * K)
        .map(|i| ((i * 5 % 7) as f32 - 3.0) / 3.0)
        .collect();
    let (logits, g) = model.vjp(&x, n, &cot, m).unwrap();
    let w = weights();
    let selu = |v: f32| GAMMA * if v > 0.0 { v } else { ALPHA * (v.exp() - 1.0) };
    let dselu = |v: f32| GAMMA * if v > 0.0 { 1.0 } else { ALPHA * v.exp() };
    let mut err2 = 0f64;
    let mut ref2 = 0f64;
    for i in 0..n {
        let xi = &x[i * D..(i + 1) * D];
        for k in 0..K {
            let l: f32 =
                (0..D).map(|j| w[k * D + j] * selu(xi[j])).sum::<f32>() + [0.1, -0.2, 0.3][k];
            assert!((logits[i * K + k] - l).abs() < 1e-4, "logit {i},{k}");
        }
        for mi in 0..m {
            let c = &cot[(i * m + mi) * K..(i * m + mi + 1) * K];
            for j in 0..D {
                let want: f32 = (0..K).map(|k| c[k] * w[k * D + j]).sum::<f32>() * dselu(xi[j]);
                let got = g[(i * m + mi) * D + j];
                err2 += ((got - want) as f64).powi(2);
                ref2 += (want as f64).powi(2);
            }
        }
    }
    let rel = (err2 / ref2).sqrt();
    assert!(rel < 1e-3, "FD gradient vs closed form: rel {rel:.2e}");
}

#[test]
fn the_cli_warns_once_and_computes_fd_gradients() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("selu.onnx");
    std::fs::write(&model, selu_classifier().encode_to_vec()).unwrap();
    let inspect = command()
        .args(["inspect", "--backend", "tract", "--json"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(inspect.status.success());
    let json: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        json["ops_without_gradient_rule"],
        serde_json::json!([{"op_type": "Selu", "node": "the_selu"}])
    );
    // check-grad needs the exact graph: exit 2 naming the node.
    let check = command()
        .args(["check-grad", "--backend", "tract"])
        .arg(&model)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&check.stderr).contains("the_selu"));
    // grad: one warning line, then finite-difference gradients of shape (N, C, H, W).
    let (x, c, g) = (
        dir.path().join("x.npy"),
        dir.path().join("c.npy"),
        dir.path().join("g.npy"),
    );
    write_npy_f32(&x, &[2, 1, 4, 4], &[0.25; 2 * D]);
    write_npy_f32(&c, &[2, K], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    let grad = command()
        .args(["grad", "--backend", "tract", "--input"])
        .arg(&x)
        .arg("--cotangent")
        .arg(&c)
        .arg("--out")
        .arg(&g)
        .arg(&model)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&grad.stderr);
    assert!(grad.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("Selu"), "{stderr}");
    assert!(stderr.contains("finite-difference"), "{stderr}");
    let (shape, v) = npy_f32(&g);
    assert_eq!(shape, [2, 1, 4, 4]);
    // d logit_0 / d x_j = W[0, j] · selu'(0.25) = W[0, j] · γ.
    let w = weights();
    for j in 0..D {
        assert!(
            (v[j] - w[j] * GAMMA).abs() < 1e-2,
            "{j}: {} vs {}",
            v[j],
            w[j] * GAMMA
        );
    }
    // A measure that takes gradients decides the mode up front (the warning before its work)
    // and reports it; one that takes none decides nothing: no warning, `gradient` null.
    for (measure, warned, gradient) in [
        ("deepfool", true, serde_json::json!("finite-difference")),
        ("accuracy", false, serde_json::Value::Null),
    ] {
        let json = dir.path().join(format!("{measure}.json"));
        let run = command()
            .args(["measure", measure, "-q", "--backend", "tract", "--json"])
            .arg(&json)
            .arg(&model)
            .arg(&x)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{measure}: {stderr}");
        assert_eq!(stderr.contains("warning"), warned, "{measure}: {stderr}");
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(report["gradient"], gradient, "{measure}");
    }
}
