//! Random subspaces, random noise, universal perturbations and curvature on
//! the bundled digits models.

use std::path::{Path, PathBuf};

use georob::data::Dataset;
use georob::measure::{self, Context, MeasureResult};
use georob::model::{Model, ModelOptions};
use georob::progress::Progress;

fn path(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn open(p: &str) -> Model {
    Model::open(&path(p), &ModelOptions::default()).unwrap()
}

fn data(x: &str, y: &str, limit: usize) -> Dataset {
    let mut d = Dataset::open(&path(x), Some(&path(y))).unwrap();
    d.items.truncate(limit);
    d
}

fn run(name: &str, params: serde_json::Value, model: &Model, data: &Dataset) -> MeasureResult {
    let progress = Progress::hidden();
    let ctx = Context {
        model,
        data,
        seed: 1,
        bounds: None,
        progress: &progress,
        out_dir: None,
    };
    let m = measure::build(name, &params).unwrap();
    let r = m.run(&ctx).unwrap();
    eprintln!("{name}: {:?}", r.summary);
    r
}

#[test]
fn random_subspace_ratio_follows_sqrt_d_over_m_on_the_linear_model() {
    let model = open("onnx_models/digits/digits_linear.onnx");
    let data = data(
        "onnx_models/digits/test_x.npy",
        "onnx_models/digits/test_y.npy",
        200,
    );
    let r = run("subspace", serde_json::json!({}), &model, &data);
    for m in [196, 49, 12] {
        let want = (784.0f64 / m as f64).sqrt();
        let got = r.summary[&format!("median_ratio_m{m}")];
        assert!(
            (got / want - 1.0).abs() <= 0.10,
            "m={m}: median ratio {got} vs sqrt(d/m) {want}"
        );
        assert_eq!(r.summary[&format!("failed_m{m}")], 0.0);
    }
}

#[test]
fn random_noise_needs_about_sqrt_d_times_deepfool_on_the_cnn() {
    let model = open("onnx_models/digits/digits_cnn.onnx");
    let data = data(
        "onnx_models/digits/test_x.npy",
        "onnx_models/digits/test_y.npy",
        40,
    );
    let r = run(
        "noise",
        serde_json::json!({"directions": 20}),
        &model,
        &data,
    );
    let ratio = r.summary["median_ratio"];
    let root = r.summary["sqrt_d"];
    assert_eq!(root, 28.0);
    // Far above the worst case, within an order of magnitude of √d.
    assert!(ratio > 3.0 && ratio < 3.0 * root, "ratio {ratio}");
}

#[test]
fn universal_perturbation_fools_more_than_same_norm_noise() {
    let model = open("onnx_models/digits/digits_cnn.onnx");
    let data = data(
        "onnx_models/digits/train_x.npy",
        "onnx_models/digits/train_y.npy",
        300,
    );
    let params = serde_json::json!({
        "xi_fraction": 0.5,
        "delta": 0.3,
        "max_passes": 5,
        "holdout": path("onnx_models/digits/test_x.npy"),
        "holdout_labels": path("onnx_models/digits/test_y.npy"),
    });
    let r = run("uap", params, &model, &data);
    let s = &r.summary;
    assert!(s["fooling_rate"] >= 0.7, "{s:?}");
    assert!(
        s["holdout_fooling_rate"] >= 3.0 * s["noise_fooling_rate"],
        "{s:?}"
    );
    assert!(s["norm_l2"] <= s["xi"] * (1.0 + 1e-5));
}

#[test]
fn linear_model_has_a_flat_boundary() {
    let model = open("onnx_models/digits/digits_linear.onnx");
    let data = data(
        "onnx_models/digits/test_x.npy",
        "onnx_models/digits/test_y.npy",
        20,
    );
    let r = run(
        "curvature",
        serde_json::json!({"q": 3, "steps": 8}),
        &model,
        &data,
    );
    // Eigenvalues are of H/|∇G| (1/length); times the boundary distance they
    // are relative to the gradient scale.
    for img in r.images.iter().filter(|i| i.values.contains_key("eig1")) {
        let scale = img.values["h"] * 10.0;
        for j in 1..=3 {
            if let Some(v) = img.values.get(&format!("eig{j}")) {
                assert!(v.abs() * scale <= 1e-5, "image {}: eig{j} {v}", img.index);
            }
        }
    }
    assert!(r.summary["mean_top_eig"].abs() <= 1e-5);
}
