//! `georob grad`, `export-grad`, `check-grad` and the gradient line of `inspect`, run as the
//! binary on digits_cnn (tract, so no ONNX Runtime is needed).

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{self, command, npy_f32, onnx_models, run_plan, write_npy_f32};

fn cnn_path() -> PathBuf {
    onnx_models("digits/digits_cnn.onnx")
}

fn georob(args: &[&str], paths: &[&Path]) -> Output {
    let mut cmd = command();
    cmd.args(args).args(paths);
    if args[0] != "export-grad" {
        // export-grad always builds on tract.
        cmd.args(["--backend", "tract"]);
    }
    cmd.output().expect("runs georob")
}

/// `georob grad` on digits_cnn with the input `x`, cotangent `cot` and gradient `out`, then
/// `extra` arguments.
fn grad(x: &Path, cot: &Path, out: &Path, extra: &[&Path]) -> Output {
    let cnn = cnn_path();
    let mut paths = vec![
        cnn.as_path(),
        Path::new("--input"),
        x,
        Path::new("--cotangent"),
        cot,
        Path::new("--out"),
        out,
    ];
    paths.extend_from_slice(extra);
    georob(&["grad"], &paths)
}

/// Three digits `(3, 1, 28, 28)` and cotangents `(3, 2, 10)`.
fn inputs(dir: &Path) -> (PathBuf, PathBuf, Vec<f32>, Vec<f32>) {
    let (_, x) = npy_f32(&onnx_models("digits/test_x.npy"));
    let x = x[..3 * 784].to_vec();
    let cot: Vec<f32> = (0..3 * 2 * 10)
        .map(|i| ((i * 3) % 7) as f32 - 3.0)
        .collect();
    let (xp, cp) = (dir.join("x.npy"), dir.join("c.npy"));
    write_npy_f32(&xp, &[3, 1, 28, 28], &x);
    write_npy_f32(&cp, &[3, 2, 10], &cot);
    (xp, cp, x, cot)
}

#[test]
fn grad_writes_what_the_library_computes() {
    let dir = tempfile::tempdir().unwrap();
    let (xp, cp, x, cot) = inputs(dir.path());
    let (gp, lp) = (dir.path().join("g.npy"), dir.path().join("l.npy"));
    let out = grad(&xp, &cp, &gp, &[Path::new("--logits"), &lp]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("gradient: exact"), "{stderr}");
    let (gs, g) = npy_f32(&gp);
    assert_eq!(gs, [3, 2, 1, 28, 28]);
    let (ls, l) = npy_f32(&lp);
    assert_eq!(ls, [3, 10]);
    let (lref, gref) = common::digits_cnn().vjp(&x, 3, &cot, 2).unwrap();
    assert_eq!(g, gref);
    assert_eq!(l, lref);

    // (N, K) cotangents give (N, C, H, W) gradients.
    let c1 = dir.path().join("c1.npy");
    write_npy_f32(&c1, &[3, 10], &cot[..30]);
    let out = grad(&xp, &c1, &gp, &[]);
    assert!(out.status.success());
    assert_eq!(npy_f32(&gp).0, [3, 1, 28, 28]);

    // A cotangent of the wrong width is an error naming the expected shape.
    write_npy_f32(&c1, &[3, 9], &cot[..27]);
    let out = grad(&xp, &c1, &gp, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("(3, 10)"));
}

#[test]
fn export_grad_writes_a_graph_that_reproduces_grad() {
    use prost::Message;

    let dir = tempfile::tempdir().unwrap();
    let (_, _, x, cot) = inputs(dir.path());
    let (_, gref) = common::digits_cnn().vjp(&x, 3, &cot, 2).unwrap();
    let mut concats = vec![];
    for cotangents in ["batched", "split"] {
        let path = dir
            .path()
            .join(format!("digits_cnn.{cotangents}.grad.onnx"));
        let out = georob(
            &[
                "export-grad",
                "--batch",
                "3",
                "--classes",
                "2",
                "--cotangents",
                cotangents,
            ],
            &[&cnn_path(), Path::new("--out"), &path],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in [
            "input      input float32 (3, 1, 28, 28)",
            "input      cotangent float32 (3, 2, 10)",
            "output     logits float32 (3, 10)",
            "output     grad float32 (3, 2, 1, 28, 28)",
        ] {
            assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
        }
        let proto = tract_onnx::pb::ModelProto::decode(&*std::fs::read(&path).unwrap()).unwrap();
        let g = proto.graph.as_ref().unwrap();
        let names = |v: &[tract_onnx::pb::ValueInfoProto]| -> Vec<String> {
            v.iter().map(|i| i.name.clone()).collect()
        };
        assert_eq!(names(&g.input), ["input", "cotangent"]);
        assert_eq!(names(&g.output), ["logits", "grad"]);
        // The split graph gathers its passes with a Concat along the cotangent axis.
        concats.push(g.node.iter().filter(|n| n.op_type == "Concat").count());
        let plan = common::plan(&proto).unwrap();
        let res = run_plan(&plan, &[(&[3, 1, 28, 28], &x), (&[3, 2, 10], &cot)]).unwrap();
        let grad = &res[1];
        let err: f32 = grad.iter().zip(&gref).map(|(a, b)| (a - b).abs()).sum();
        let norm: f32 = gref.iter().map(|b| b.abs()).sum();
        assert!(
            err <= 1e-5 * norm,
            "exported {cotangents} graph differs: {err} vs {norm}"
        );
    }
    assert!(concats[1] > concats[0], "Concat nodes {concats:?}");
    let out = georob(
        &["export-grad", "--cotangents", "sideways"],
        &[&cnn_path(), Path::new("--out"), &dir.path().join("x.onnx")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("use batched or split"));
}

#[test]
fn check_grad_passes_on_data_and_on_random_inputs() {
    let data = onnx_models("digits/test_x.npy");
    let out = georob(
        &["check-grad", "--directions", "4", "--samples", "2"],
        &[&cnn_path(), &data],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("min cosine") && stdout.contains("PASS"),
        "{stdout}"
    );
    let out = georob(&["check-grad", "--directions", "4"], &[&cnn_path()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("random #1"), "{stdout}");
}

#[test]
fn inspect_says_every_operator_has_a_rule() {
    let out = georob(&["inspect"], &[&cnn_path()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("all operators have a rule"), "{stdout}");
    let out = georob(&["inspect", "--json"], &[&cnn_path()]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ops_without_gradient_rule"], serde_json::json!([]));
}
