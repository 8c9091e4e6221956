//! Gradients on ONNX Runtime: the PyTorch autograd references of `onnx_models/grad/` through
//! `Model::open(.., BackendKind::Ort ..)` + `Model::vjp` (M = 1 and 10; cosine ≥ 0.9999,
//! relative L2 error ≤ 1e-3), and tract against ort on the bundled classifiers (logits and
//! gradients within 1e-4 relative).
//!
//! Needs the ONNX Runtime library (`ORT_DYLIB_PATH`, or a Python `onnxruntime` package; `.ci/run`
//! exports `ORT_DYLIB_PATH`). Without it, or without the `ort` feature, each test prints why it
//! is skipped. `GEOROB_GRAD_ONLY=name1,name2` restricts the reference loop.
#![cfg(feature = "tract")]

#[cfg(feature = "ort")]
use std::path::{Path, PathBuf};

#[cfg(feature = "ort")]
use georob::model::{
    BackendChoice, BackendKind, GradientChoice, GradientMode, Model, ModelOptions,
};

#[cfg(feature = "ort")]
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx_models")
}

/// Why the ort tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if !cfg!(feature = "ort") {
        return Some("built without the `ort` feature (cargo test --features ort)".into());
    }
    georob::model::ort_lib::find(None)
        .err()
        .map(|e| format!("{e} (set ORT_DYLIB_PATH)"))
}

/// Prints the skip reason in a form no one mistakes for a pass: straight to the process's
/// stderr, past the test harness's capture, so it shows for passing tests too.
fn skipped(test: &str) -> bool {
    use std::io::Write;
    match skip_reason() {
        Some(why) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
            true
        }
        None => false,
    }
}

#[cfg(feature = "ort")]
fn npy(path: &Path) -> Option<(Vec<usize>, Vec<f32>)> {
    let f = npyz::NpyFile::new(std::fs::File::open(path).ok()?).ok()?;
    let shape = f.shape().iter().map(|&d| d as usize).collect();
    Some((shape, f.into_vec::<f32>().ok()?))
}

/// Cosine similarity and relative L2 error of `a` against `b`.
#[cfg(feature = "ort")]
fn compare(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let cos = if na == 0.0 && nb == 0.0 {
        1.0
    } else {
        dot / (na * nb).max(f64::MIN_POSITIVE)
    };
    (cos, if nb == 0.0 { na } else { diff / nb })
}

#[cfg(feature = "ort")]
fn open(path: &Path, kind: BackendKind, sidecar: bool) -> georob::Result<Model> {
    let options = ModelOptions {
        backend: BackendChoice::Exactly(kind),
        gradient: GradientChoice::Exact,
        threads: Some(2),
        use_sidecar: sidecar,
        ..Default::default()
    };
    Model::open(path, &options)
}

/// Reference names: every `<name>.input.npy` under `onnx_models/grad/`.
#[cfg(feature = "ort")]
fn names() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root().join("grad"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let f = e.file_name().to_string_lossy().to_string();
                    f.strip_suffix(".input.npy").map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    if let Ok(only) = std::env::var("GEOROB_GRAD_ONLY") {
        let keep: Vec<&str> = only.split(',').collect();
        out.retain(|n| keep.contains(&n.as_str()));
    }
    out
}

#[test]
fn gradients_match_pytorch_references_on_ort() {
    #[cfg(feature = "ort")]
    if !skipped("gradients_match_pytorch_references_on_ort") {
        references_on_ort();
    }
    #[cfg(not(feature = "ort"))]
    skipped("gradients_match_pytorch_references_on_ort");
}

/// Each reference runs through `Model::vjp` when georob opens the file as an image
/// classifier; otherwise (vector or 3-D inputs of the rule tests) its gradient graph runs on
/// the same ort engine through `Backend::load_graph`.
#[cfg(feature = "ort")]
fn references_on_ort() {
    use georob::grad::{build_gradient_graph, GradError};
    use prost::Message;
    use tract_onnx::pb::ModelProto;

    let dir = root().join("grad");
    let names = names();
    assert!(!names.is_empty(), "no references under {}", dir.display());
    let host = open(
        &root().join("digits/digits_cnn.onnx"),
        BackendKind::Ort,
        true,
    )
    .expect("ort opens digits_cnn");
    let (mut via_model, mut via_graph) = (0, 0);
    let mut failures = vec![];
    let mut skipped = vec![];
    for name in &names {
        let path = dir.join(format!("{name}.onnx"));
        let Some((xs, x)) = npy(&dir.join(format!("{name}.input.npy"))) else {
            failures.push(format!("{name}: unreadable input.npy"));
            continue;
        };
        let n = xs[0];
        let model = open(&path, BackendKind::Ort, false)
            .ok()
            .filter(|m| m.spec.sample_shape()[..] == xs[1..]);
        let proto = ModelProto::decode(&*std::fs::read(&path).unwrap()).unwrap();
        for m in [1usize, 10] {
            let (Some((_, cot)), Some((_, gref))) = (
                npy(&dir.join(format!("{name}.cot{m}.npy"))),
                npy(&dir.join(format!("{name}.grad{m}.npy"))),
            ) else {
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
            if !(cos >= 0.9999 && rel <= 1e-3) {
                failures.push(format!("{name} M={m}: cos {cos:.6} rel {rel:.3e}"));
            }
        }
    }
    eprintln!(
        "{} references: {via_model} runs through Model::vjp, {via_graph} through the raw graph",
        names.len()
    );
    for s in &skipped {
        eprintln!("skipped (the forward model cannot run): {s}");
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn tract_and_ort_agree_on_digits_cnn() {
    #[cfg(feature = "ort")]
    if !skipped("tract_and_ort_agree_on_digits_cnn") {
        tract_vs_ort("digits/digits_cnn.onnx", "digits/test_x.npy", 4);
    }
    #[cfg(not(feature = "ort"))]
    skipped("tract_and_ort_agree_on_digits_cnn");
}

#[test]
fn tract_and_ort_agree_on_efficientnet_lite0() {
    #[cfg(feature = "ort")]
    if !skipped("tract_and_ort_agree_on_efficientnet_lite0") {
        tract_vs_ort(
            "efficientnet_lite0/efficientnet_lite0.onnx",
            "efficientnet_lite0/photos_x.npy",
            2,
        );
    }
    #[cfg(not(feature = "ort"))]
    skipped("tract_and_ort_agree_on_efficientnet_lite0");
}

/// Logits and gradients (M = 3 seeded cotangents) of the first `n` samples agree within 1e-4
/// relative L2 between tract and ort, and both use the exact graph.
#[cfg(feature = "ort")]
fn tract_vs_ort(model: &str, data: &str, n: usize) {
    let (xs, x) = npy(&root().join(data)).expect("data");
    let d: usize = xs[1..].iter().product();
    let x = &x[..n * d];
    let tract = open(&root().join(model), BackendKind::Tract, true).unwrap();
    let ort = open(&root().join(model), BackendKind::Ort, true).unwrap();
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
