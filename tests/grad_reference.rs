//! Compares gradient graphs with PyTorch autograd references in `onnx_models/grad/`.
//!
//! For every model listed in `onnx_models/grad/manifest.json` (or found as
//! `onnx_models/grad/<name>.onnx`), with `<name>.input.npy` `(N, …)`, `<name>.logits.npy`
//! `(N, K)`, `<name>.cot{1,10}.npy` `(N, M, K)` and `<name>.grad{1,10}.npy` `(N, M, …)`: build
//! the gradient graph for `M = 1` and `M = 10` (the latter in both cotangent layouts), run it on
//! tract, and require cosine ≥ 0.9999 and
//! relative L2 error ≤ 1e-3 against the reference gradients. Skips (passes) when the folder is
//! absent. Set `GEOROB_GRAD_ONLY=name1,name2` to run a subset.
#![cfg(feature = "tract")]

use std::fs::File;
use std::path::{Path, PathBuf};

use georob::grad::{build_gradient_graph_probed, probe_model, CotangentLayout, GradError};
use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

fn npy(path: &Path) -> Option<(Vec<usize>, Vec<f32>)> {
    let f = npyz::NpyFile::new(File::open(path).ok()?).ok()?;
    let shape = f.shape().iter().map(|&d| d as usize).collect();
    Some((shape, f.into_vec::<f32>().ok()?))
}

fn compare(a: &[f32], b: &[f32]) -> (f64, f64) {
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

fn dir_cot(root: &Path, name: &str, m: usize) -> PathBuf {
    root.join("grad").join(format!("{name}.cot{m}.npy"))
}

fn model_path(root: &Path, name: &str) -> Option<PathBuf> {
    let p = root.join("grad").join(format!("{name}.onnx"));
    if p.exists() {
        return Some(p);
    }
    std::fs::read_dir(root)
        .ok()?
        .flatten()
        .map(|e| e.path().join(format!("{name}.onnx")))
        .find(|p| p.exists())
}

fn names(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    if let Ok(text) = std::fs::read_to_string(root.join("grad/manifest.json")) {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(&text) {
            out.extend(m.keys().cloned());
        }
    }
    if let Ok(rd) = std::fs::read_dir(root.join("grad")) {
        for e in rd.flatten() {
            let f = e.file_name().to_string_lossy().to_string();
            if let Some(n) = f.strip_suffix(".input.npy") {
                if !out.iter().any(|o| o == n) {
                    out.push(n.to_string());
                }
            }
        }
    }
    out.sort();
    if let Ok(only) = std::env::var("GEOROB_GRAD_ONLY") {
        let keep: Vec<&str> = only.split(',').collect();
        out.retain(|n| keep.contains(&n.as_str()));
    }
    out
}

fn run(model: &ModelProto, inputs: Vec<(Vec<usize>, Vec<f32>)>) -> TractResult<Vec<Vec<f32>>> {
    let plan = tract_onnx::onnx()
        .model_for_proto_model(model)?
        .into_optimized()?
        .into_runnable()?;
    let tv: TVec<TValue> = inputs
        .into_iter()
        .map(|(s, d)| {
            Ok(tract_ndarray::ArrayD::from_shape_vec(s, d)?
                .into_tensor()
                .into())
        })
        .collect::<TractResult<_>>()?;
    plan.run(tv)?
        .iter()
        .map(|t| Ok(t.to_plain_array_view::<f32>()?.iter().copied().collect()))
        .collect()
}

#[test]
fn gradients_match_pytorch_references() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx_models");
    let names = names(&root);
    if names.is_empty() {
        eprintln!(
            "no references under {}: skipped",
            root.join("grad").display()
        );
        return;
    }
    let mut failures = vec![];
    let mut skipped = vec![];
    for name in &names {
        let dir = root.join("grad");
        let Some(path) = model_path(&root, name) else {
            failures.push(format!("{name}: model file not found"));
            continue;
        };
        let Some((xs, x)) = npy(&dir.join(format!("{name}.input.npy"))) else {
            failures.push(format!("{name}: no input.npy"));
            continue;
        };
        let proto = ModelProto::decode(&*std::fs::read(&path).unwrap()).unwrap();
        // M = 10 twice: batched (ONNX Runtime's layout) and split (tract's).
        for (m, layout) in [
            (1usize, CotangentLayout::Batched),
            (10, CotangentLayout::Batched),
            (10, CotangentLayout::Split),
        ] {
            let (Some((cs, cot)), Some((_, gref))) = (
                npy(&dir.join(format!("{name}.cot{m}.npy"))),
                npy(&dir.join(format!("{name}.grad{m}.npy"))),
            ) else {
                continue;
            };
            let t0 = std::time::Instant::now();
            let built = probe_model(&proto, &xs)
                .and_then(|p| build_gradient_graph_probed(&proto, &p, m, layout));
            let gg = match built {
                Ok(g) => g,
                Err(e @ GradError::Tract { .. }) => {
                    // tract cannot run the forward model itself: not a gradient failure.
                    skipped.push(format!("{name}: {e}"));
                    break;
                }
                Err(e) => {
                    failures.push(format!("{name} M={m} {layout:?}: build failed: {e}"));
                    continue;
                }
            };
            let outs = match run(&gg.model, vec![(xs.clone(), x.clone()), (cs.clone(), cot)]) {
                Ok(o) => o,
                Err(e) => {
                    failures.push(format!("{name} M={m} {layout:?}: tract failed: {e:?}"));
                    continue;
                }
            };
            if let Ok(dir) = std::env::var("GRAD_DUMP") {
                // For cross-runtime checks (e.g. onnxruntime) of the emitted graphs.
                let stem = format!("{dir}/{name}_m{m}_{layout:?}");
                std::fs::write(format!("{stem}.onnx"), gg.model.encode_to_vec()).unwrap();
                let j = serde_json::json!({
                    "input": x, "input_shape": xs, "cotangent": npy(&dir_cot(&root, name, m)).unwrap().1,
                    "cotangent_shape": cs, "logits": outs[0], "grad": outs[1],
                });
                std::fs::write(format!("{stem}.json"), j.to_string()).unwrap();
            }
            let (cos, rel) = compare(&outs[1], &gref);
            let lref = npy(&dir.join(format!("{name}.logits.npy"))).map(|l| l.1);
            let (lcos, lrel) = lref.map(|l| compare(&outs[0], &l)).unwrap_or((1.0, 0.0));
            eprintln!(
                "{name} M={m} {layout:?}: grad cos {cos:.7} rel {rel:.2e}; logits cos {lcos:.7} rel {lrel:.2e} ({:.1?})",
                t0.elapsed()
            );
            if !(cos >= 0.9999 && rel <= 1e-3) {
                failures.push(format!(
                    "{name} M={m} {layout:?}: cos {cos:.6} rel {rel:.3e}"
                ));
            }
        }
    }
    for s in &skipped {
        eprintln!("skipped (tract cannot run the original model): {s}");
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
