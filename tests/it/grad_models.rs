//! Gradient graphs of the bundled classifiers (`onnx_models/digits`, `efficientnet_lite0`,
//! `tiny`), run on tract, against PyTorch float64 autograd (`tests/data/grad/make_refs.py`) or
//! central differences along random directions.
//!
//! FD: for each sample `n`, cotangent `m` and random unit direction `v`, the graph's
//! `⟨grad[n, m], v⟩` must match `cotangent[n, m] · (J v)` from central differences of the
//! forward logits (best of three steps per direction). Bar: cosine ≥ 0.9999 and relative L2
//! error ≤ 1e-3 over all compared values.

use std::time::Instant;

use georob::grad::{build_gradient_graph, fd, GradError, GradientGraph};
use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use crate::common::{self, compare, npy_f32, onnx_models, repo, run_plan};

fn load(rel: &str) -> ModelProto {
    ModelProto::decode(&*std::fs::read(onnx_models(rel)).unwrap()).unwrap()
}

fn npy(rel: &str) -> (Vec<usize>, Vec<f32>) {
    npy_f32(&onnx_models(rel))
}

/// The first `n` samples of an `(B, …)` array.
fn take(a: &(Vec<usize>, Vec<f32>), n: usize) -> (Vec<usize>, Vec<f32>) {
    let d: usize = a.0[1..].iter().product();
    let mut s = a.0.clone();
    s[0] = n;
    (s, a.1[..n * d].to_vec())
}

struct Rng(u64);
impl Rng {
    fn normal(&mut self) -> f32 {
        let mut u = || {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (a, b) = (u(), u());
        ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32
    }
}

type Plan = Arc<TypedRunnableModel>;

fn plan(m: &ModelProto) -> Plan {
    common::plan(m).unwrap()
}

/// Runs a gradient graph: (logits, grad), flattened.
fn run(p: &Plan, g: &GradientGraph, x: &[f32], cot: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let cs = [g.batch, g.classes, g.num_logits];
    let mut out = run_plan(p, &[(&g.input_shape, x), (&cs, cot)]).unwrap();
    let grad = out.remove(1);
    (out.remove(0), grad)
}

/// Checks the gradient graph of `model` for input `x` and `M = m` against directional FD.
fn check(model: &ModelProto, x: &(Vec<usize>, Vec<f32>), m: usize, dirs: usize) -> GradientGraph {
    let (shape, x) = x;
    let n = shape[0];
    let d: usize = shape[1..].iter().product();
    let t0 = Instant::now();
    let gg = build_gradient_graph(model, shape, m).unwrap();
    let gp = plan(&gg.model);
    let built = t0.elapsed();
    let k = gg.num_logits;
    let mut rng = Rng(7);
    let cot: Vec<f32> = (0..n * m * k).map(|_| rng.normal()).collect();
    let t1 = Instant::now();
    let (_, grad) = run(&gp, &gg, x, &cot);
    let ran = t1.elapsed();

    // Forward logits for FD: an M = 1 graph with a zero cotangent; each perturbed row is
    // evaluated at its own batch position.
    let g1 = build_gradient_graph(model, shape, 1).unwrap();
    let p1 = plan(&g1.model);
    let zero = vec![0f32; n * k];
    let f_at = |s: usize, rows: &[f32]| -> Result<Vec<f32>, ()> {
        let mut out = vec![];
        for row in rows.chunks(d) {
            let mut b = x.clone();
            b[s * d..(s + 1) * d].copy_from_slice(row);
            let (l, _) = run(&p1, &g1, &b, &zero);
            out.extend_from_slice(&l[s * k..(s + 1) * k]);
        }
        Ok(out)
    };

    let mut a = vec![];
    let mut b = vec![];
    for s in 0..n {
        let xs = &x[s * d..(s + 1) * d];
        let h0 = fd::default_step(xs);
        for _ in 0..dirs {
            let mut v: Vec<f32> = (0..d).map(|_| rng.normal()).collect();
            let norm = v.iter().map(|t| t * t).sum::<f32>().sqrt();
            v.iter_mut().for_each(|t| *t /= norm);
            let exact: Vec<f64> = (0..m)
                .map(|mi| {
                    let g = &grad[(s * m + mi) * d..(s * m + mi + 1) * d];
                    g.iter().zip(&v).map(|(g, v)| *g as f64 * *v as f64).sum()
                })
                .collect();
            let mut best: Option<(f64, Vec<f64>)> = None;
            for h in [h0 * 10.0, h0, h0 * 0.1] {
                let jv = fd::jvp(|r: &[f32]| f_at(s, r), xs, &v, h).unwrap();
                let est: Vec<f64> = (0..m)
                    .map(|mi| {
                        let c = &cot[(s * m + mi) * k..(s * m + mi + 1) * k];
                        c.iter().zip(&jv).map(|(c, j)| *c as f64 * j).sum()
                    })
                    .collect();
                let err: f64 = est.iter().zip(&exact).map(|(e, x)| (e - x).abs()).sum();
                if best.as_ref().is_none_or(|(b, _)| err < *b) {
                    best = Some((err, est));
                }
            }
            a.extend(exact);
            b.extend(best.unwrap().1);
        }
    }
    let (cos, rel) = fd::compare(&a, &b);
    eprintln!(
        "input {shape:?} M={m}: cos {cos:.7} rel {rel:.2e} (build {built:.1?}, gradient run {ran:.1?})"
    );
    assert!(cos >= 0.9999 && rel <= 1e-3, "cos {cos} rel {rel}");
    gg
}

/// Compares with the float64 PyTorch autograd references of `tests/data/grad/make_refs.py`.
fn torch_reference(model: &str, input: &str, name: &str) {
    let data = repo("tests/data/grad");
    let (cs, cot) = npy_f32(&data.join(format!("{name}.cot.npy")));
    let (_, want) = npy_f32(&data.join(format!("{name}.grad.npy")));
    let x = take(&npy(input), cs[0]);
    let t0 = Instant::now();
    let g = build_gradient_graph(&load(model), &x.0, cs[1]).unwrap();
    let p = plan(&g.model);
    let built = t0.elapsed();
    let t1 = Instant::now();
    let (logits, grad) = run(&p, &g, &x.1, &cot);
    let ran = t1.elapsed();
    if let Ok(dir) = std::env::var("GRAD_DUMP") {
        // For cross-runtime checks (e.g. onnxruntime) of the emitted graph.
        std::fs::write(format!("{dir}/{name}.onnx"), g.model.encode_to_vec()).unwrap();
        let j = serde_json::json!({
            "input": x.1, "input_shape": x.0, "cotangent": cot, "cotangent_shape": cs,
            "logits": logits, "grad": grad,
        });
        std::fs::write(format!("{dir}/{name}.json"), j.to_string()).unwrap();
    }
    let (cos, rel) = compare(&grad, &want);
    eprintln!("{name} vs torch: cos {cos:.7} rel {rel:.2e} (build {built:.1?}, run {ran:.1?})");
    assert!(cos >= 0.9999 && rel <= 1e-3, "{name}: cos {cos} rel {rel}");
}

// Random-direction finite differences are no oracle for these ReLU/ReLU6/MaxPool networks in
// float32 (every usable step crosses kinks somewhere in thousands of units), so they are
// checked against PyTorch autograd instead.
#[test]
fn digits_cnn_matches_torch() {
    torch_reference("digits/digits_cnn.onnx", "digits/test_x.npy", "digits_cnn");
}

#[test]
fn efficientnet_lite0_matches_torch() {
    torch_reference(
        "efficientnet_lite0/efficientnet_lite0.onnx",
        "efficientnet_lite0/photos_x.npy",
        "efficientnet_lite0",
    );
}

#[test]
fn tiny_mobilenet_fixed_batch_agrees_with_dynamic() {
    let x = take(&npy("tiny/tiny_x.npy"), 1);
    let mut rng = Rng(11);
    let cot: Vec<f32> = (0..10 * 10).map(|_| rng.normal()).collect();
    let mut grads = vec![];
    for f in ["tiny/mobilenet_v2_dyn.onnx", "tiny/mobilenet_v2_fixed.onnx"] {
        let g = build_gradient_graph(&load(f), &x.0, 10).unwrap();
        grads.push(run(&plan(&g.model), &g, &x.1, &cot).1);
    }
    let (cos, rel) = compare(&grads[0], &grads[1]);
    assert!(cos > 0.999999 && rel < 1e-5, "cos {cos} rel {rel}");
}

#[test]
fn nhwc_input_keeps_its_layout() {
    let x = npy("tiny/nhwc_x.npy");
    let g = check(&load("tiny/nhwc_classifier.onnx"), &x, 10, 4);
    assert_eq!(g.input_shape, vec![3, 16, 16, 3]);
}

#[test]
fn softmax_head_differentiates_pre_softmax_values() {
    let m = load("tiny/softmax_head.onnx");
    let x = npy("tiny/softmax_head_x.npy");
    let g = check(&m, &x, 10, 4);
    assert!(g.pre_softmax);
    let (_, want) = npy("tiny/softmax_head_logits.npy");
    let (logits, _) = run(&plan(&g.model), &g, &x.1, &vec![0.0; 4 * 10 * 10]);
    let err = logits
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-4, "pre-softmax logits differ by {err}");
}

#[test]
fn vector_input() {
    let mut rng = Rng(3);
    let x: Vec<f32> = (0..20).map(|_| rng.normal()).collect();
    check(&load("tiny/vector_input.onnx"), &(vec![2, 10], x), 10, 4);
}

#[test]
fn unsupported_inputs_are_model_errors() {
    for (f, shape) in [
        ("tiny/two_inputs.onnx", [1, 3, 16, 16]),
        ("tiny/int_input.onnx", [1, 3, 16, 16]),
    ] {
        match build_gradient_graph(&load(f), &shape, 1) {
            Err(GradError::Model(msg)) => eprintln!("{f}: {msg}"),
            other => panic!(
                "{f}: expected a model error, got {:?}",
                other.map(|g| g.num_logits)
            ),
        }
    }
}

/// Folding EfficientNet-Lite0's constant subgraphs (its static paddings) leaves the 115 nodes
/// that read the input, and the logits of the photos as they were, bit for bit.
#[test]
fn efficientnet_lite0_folds_its_paddings_without_changing_the_logits() {
    let model = load("efficientnet_lite0/efficientnet_lite0.onnx");
    let mut folded = model.clone();
    let before = model.graph.as_ref().unwrap().node.len();
    let removed = georob::grad::fold_constants(&mut folded);
    assert_eq!((before, removed), (456, 341));
    let (shape, x) = take(&npy("efficientnet_lite0/photos_x.npy"), 2);
    let logits = |m: &ModelProto| -> Vec<f32> {
        let p = tract_onnx::onnx()
            .model_for_proto_model(m)
            .unwrap()
            .with_input_fact(0, f32::fact(&shape).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        run_plan(&p, &[(&shape, &x)]).unwrap().remove(0)
    };
    assert_eq!(logits(&folded), logits(&model));
}
