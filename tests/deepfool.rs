//! DeepFool against the closed form on the bundled linear digits model, and
//! success on the digits CNN.

use std::path::Path;

use georob::measure::deepfool::{deepfool_batch, l2, linf, DeepFoolOptions, Norm};
use georob::measure::space::{Space, SpacedModel};
use georob::model::{Model, ModelOptions};

fn npy_f32(path: &str) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    let f = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = f.shape().to_vec();
    (shape, f.into_vec::<f32>().unwrap())
}

fn open(path: &str) -> Model {
    Model::open(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(path),
        &ModelOptions::default(),
    )
    .unwrap()
}

/// Closed-form distance `min_k |f_k − f_k0| / ‖w_k − w_k0‖_q` (q = 2, or 1
/// for L∞) and the clean class `k0`, in f64, from `W` (10, 784) and the
/// model's logits `f` at the image. The logits come from the model because
/// near the boundary `f_k − f_k0` is a difference of nearly equal f32
/// numbers: recomputing it in f64 would measure f32 rounding, not DeepFool.
fn closed_form(w: &[f32], f: &[f32], q1: bool) -> (f64, usize) {
    let d = w.len() / 10;
    let f: Vec<f64> = f.iter().map(|&v| f64::from(v)).collect();
    let k0 = (0..10).fold(0, |best, k| if f[k] > f[best] { k } else { best });
    let mut best = f64::INFINITY;
    for k in (0..10).filter(|&k| k != k0) {
        let diff = (0..d).map(|t| f64::from(w[k * d + t]) - f64::from(w[k0 * d + t]));
        let n = if q1 {
            diff.map(f64::abs).sum::<f64>()
        } else {
            diff.map(|v| v * v).sum::<f64>().sqrt()
        };
        best = best.min((f[k] - f[k0]).abs() / n);
    }
    (best, k0)
}

#[test]
fn deepfool_matches_the_closed_form_on_the_linear_model() {
    let model = open("onnx_models/digits/digits_linear.onnx");
    let sm = SpacedModel {
        model: &model,
        space: Space::Model,
    };
    let (_, x) = npy_f32("onnx_models/digits/test_x.npy");
    let (_, w) = npy_f32("onnx_models/digits/digits_linear_W.npy");
    let d = 784;
    let n = x.len() / d;
    let logits = model.logits(&x, n).unwrap();
    for norm in [Norm::L2, Norm::Linf] {
        let opts = DeepFoolOptions {
            norm,
            ..Default::default()
        };
        let out = deepfool_batch(&sm, &x, n, &opts, None).unwrap();
        let mut worst = 0.0f64;
        for (i, o) in out.iter().enumerate() {
            let (dist, k0) = closed_form(&w, &logits[i * 10..(i + 1) * 10], norm == Norm::Linf);
            assert_eq!(o.clean_class, k0, "image {i}");
            assert!(
                o.success && o.iterations <= 2,
                "image {i}: {o:?}",
                o = (o.success, o.iterations)
            );
            let got = match norm {
                Norm::L2 => l2(&o.r),
                Norm::Linf => linf(&o.r),
            };
            let want = 1.02 * dist;
            let rel = (got - want).abs() / want;
            worst = worst.max(rel);
            assert!(
                rel <= 1e-4,
                "{norm:?} image {i}: {got} vs {want} (rel {rel})"
            );
        }
        eprintln!("{norm:?}: worst relative error {worst:.2e} over {n} images");
    }
}

#[test]
fn deepfool_fools_every_correct_image_of_the_cnn() {
    let model = open("onnx_models/digits/digits_cnn.onnx");
    let sm = SpacedModel {
        model: &model,
        space: Space::Model,
    };
    let (_, x) = npy_f32("onnx_models/digits/test_x.npy");
    let n = 200;
    let x = &x[..n * 784];
    let opts = DeepFoolOptions {
        clip: Some((0.0, 1.0)),
        ..Default::default()
    };
    let out = deepfool_batch(&sm, x, n, &opts, None).unwrap();
    let fooled = out.iter().filter(|o| o.success).count();
    let norms: Vec<f64> = out.iter().map(|o| l2(&o.r)).collect();
    let med = georob::measure::median(&norms).unwrap();
    eprintln!("cnn: {fooled}/{n} fooled, median l2 {med:.3}");
    assert_eq!(fooled, n);
    for o in &out {
        assert!(o.r.iter().all(|v| v.is_finite()));
        assert_ne!(o.adv_class, o.clean_class);
    }
}
