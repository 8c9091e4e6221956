//! Compares gradient graphs with PyTorch autograd references in `onnx_models/grad/`.
//!
//! For every model listed in `onnx_models/grad/manifest.json` (or found as
//! `onnx_models/grad/<name>.onnx`), with `<name>.input.npy` `(N, …)`, `<name>.logits.npy`
//! `(N, K)`, `<name>.cot{1,10}.npy` `(N, M, K)` and `<name>.grad{1,10}.npy` `(N, M, …)`: build
//! the gradient graph for `M = 1` and `M = 10` (the latter in both cotangent layouts), run it on
//! tract, and require cosine ≥ 0.9999 and
//! relative L2 error ≤ 1e-3 against the reference gradients. Skips (passes) when the folder is
//! absent. Set `GEOROB_GRAD_ONLY=name1,name2` to run a subset.

use std::path::{Path, PathBuf};

use georob::grad::{build_gradient_graph_probed, probe_model, CotangentLayout, GradError};
use prost::Message;
use tract_onnx::pb::ModelProto;

use crate::common::{
    assert_no_failures, compare, grad_reference, grad_references, matches_reference, plan,
    read_npy_f32, repo, run_plan, GradReference,
};

fn npy(path: &Path) -> Option<(Vec<usize>, Vec<f32>)> {
    read_npy_f32(path).ok()
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

#[test]
fn gradients_match_pytorch_references() {
    let root = repo("onnx_models");
    let names = grad_references();
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
            let Some(GradReference {
                cot_shape: cs,
                cot,
                grad: gref,
            }) = grad_reference(&dir, name, m)
            else {
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
            let run = plan(&gg.model).and_then(|p| run_plan(&p, &[(&xs, &x), (&cs, &cot)]));
            let outs = match run {
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
                    "input": x, "input_shape": xs, "cotangent": cot,
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
            if !matches_reference(cos, rel) {
                failures.push(format!(
                    "{name} M={m} {layout:?}: cos {cos:.6} rel {rel:.3e}"
                ));
            }
        }
    }
    assert_no_failures(&failures, &skipped, "tract cannot run the original model");
}

/// Inception-v1 (GoogLeNet, `arch_googlenet`): each sample's gradient for 10 cotangents is
/// within 1e-4 relative L2 of PyTorch's float64 autograd on tract, and on ONNX Runtime when its
/// library is found. Its reference input keeps every MaxPool window's two largest distinct values
/// 1e-5 apart (relative; `make_grad_models.py`): nearer ties than the float32 forward's error
/// let a backend's rounding pick the other arg-max, which moves that window's gradient
/// (`docs/methods.md`, gradients).
#[test]
fn googlenet_gradients_within_1e_4_of_pytorch_float64_on_both_backends() {
    use georob::model::{BackendKind, GradientChoice, Model, ModelOptions};

    use crate::common::{onnx_models, options_for, ort_library, rel};

    let dir = onnx_models("grad");
    let (xs, x) = read_npy_f32(&dir.join("arch_googlenet.input.npy")).unwrap();
    let GradReference {
        cot, grad: gref, ..
    } = grad_reference(&dir, "arch_googlenet", 10)
        .expect("arch_googlenet's references (onnx_models/make_grad_models.py)");
    let mut kinds = vec![BackendKind::Tract];
    if ort_library("googlenet_gradients_within_1e_4_of_pytorch_float64_on_both_backends").is_some()
    {
        kinds.push(BackendKind::Ort);
    }
    let n = xs[0];
    let per_sample = gref.len() / n;
    for kind in kinds {
        let options = ModelOptions {
            gradient: GradientChoice::Exact,
            use_sidecar: false,
            ..options_for(kind)
        };
        let model = Model::open(&dir.join("arch_googlenet.onnx"), &options).unwrap();
        let (_, grad) = model.vjp(&x, n, &cot, 10).unwrap();
        for i in 0..n {
            let part = i * per_sample..(i + 1) * per_sample;
            let rel = rel(&grad[part.clone()], &gref[part]);
            eprintln!("arch_googlenet on {kind:?}, sample {i}: rel {rel:.2e}");
            assert!(rel <= 1e-4, "{kind:?}, sample {i}: rel {rel:.2e} > 1e-4");
        }
    }
}
