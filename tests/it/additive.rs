//! Random subspaces, random noise, universal perturbations, curvature and margins on
//! the bundled digits models.

use georob::attack::deepfool::{deepfool_batch, DeepFoolOptions};
use georob::data::Dataset;
use georob::measure::space::SpacedModel;
use georob::measure::{self, MeasureResult};
use georob::model::Model;
use transforms::nalgebra::{DMatrix, DVector};

use crate::common::{dataset, digits, npy_f64, open, ranked, repo, try_run_measure, LinearDigits};

fn try_run(
    name: &str,
    params: serde_json::Value,
    model: &Model,
    data: &Dataset,
) -> georob::Result<MeasureResult> {
    try_run_measure(name, &params, model, data, 1)
}

fn run(name: &str, params: serde_json::Value, model: &Model, data: &Dataset) -> MeasureResult {
    let r = try_run(name, params, model, data).unwrap();
    eprintln!("{name}: {:?}", r.summary);
    r
}

#[test]
fn random_subspace_ratio_follows_sqrt_d_over_m_on_the_linear_model() {
    let model = open("onnx_models/digits/digits_linear.onnx");
    let data = digits(200);
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
    let data = digits(40);
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
    let data = dataset(
        "onnx_models/digits/train_x.npy",
        "onnx_models/digits/train_y.npy",
        300,
    );
    let params = serde_json::json!({
        "xi_fraction": 0.5,
        "delta": 0.3,
        "max_passes": 10,
        "holdout": repo("onnx_models/digits/test_x.npy"),
        "holdout_labels": repo("onnx_models/digits/test_y.npy"),
        "transfer": [
            repo("onnx_models/digits/digits_cnn.onnx"),
            repo("onnx_models/digits/digits_linear.onnx"),
        ],
    });
    let r = run("uap", params, &model, &data);
    let s = &r.summary;
    // The construction stops once it fools 1 − δ of its images, or after
    // max_passes: well before the last pass (two passes here), the rate is at
    // least 1 − δ by that rule, not by one machine's rounding.
    assert!(s["passes"] < 10.0, "{s:?}");
    assert!(s["fooling_rate"] >= 1.0 - 0.3, "{s:?}");
    // Transferred to a fresh copy of the same model: the held-out rate again.
    assert_eq!(
        s["transfer_fooling_rate_digits_cnn"],
        s["holdout_fooling_rate"]
    );
    let linear = s["transfer_fooling_rate_digits_linear"];
    assert!((0.0..=1.0).contains(&linear), "{s:?}");
    assert_eq!(r.extra["transfer"].as_array().map(|a| a.len()), Some(2));
    assert!(
        s["holdout_fooling_rate"] >= 3.0 * s["noise_fooling_rate"],
        "{s:?}"
    );
    assert!(s["norm_l2"] <= s["xi"] * (1.0 + 1e-5));
    // The curved-direction baseline is reported beside the noise one.
    assert!((0.0..=1.0).contains(&s["curved_fooling_rate"]), "{s:?}");
    eprintln!(
        "uap on the digits CNN: fooling rate {:.3} (construction), {:.3} (held out), \
         same-norm noise {:.3}, curved direction {:.3} (top shared eigenvalue {:.4})",
        s["fooling_rate"],
        s["holdout_fooling_rate"],
        s["noise_fooling_rate"],
        s["curved_fooling_rate"],
        s["curved_top_eig"]
    );
}

/// On the linear model the boundary is flat: the curved-direction baseline's shared
/// curvature is 0 (up to float rounding of the gradient differences).
#[test]
fn uap_curved_baseline_is_flat_on_the_linear_model() {
    let model = open("onnx_models/digits/digits_linear.onnx");
    let data = digits(60);
    let params = serde_json::json!({"max_passes": 1, "curvature_steps": 8});
    let r = run("uap", params, &model, &data);
    let eig = r.summary["curved_top_eig"];
    assert!(eig.abs() <= 1e-4, "{:?}", r.summary);
    assert!((0.0..=1.0).contains(&r.summary["curved_fooling_rate"]));
}

#[test]
fn uap_transfer_to_a_model_of_another_input_size_is_an_error() {
    let model = open("onnx_models/digits/digits_linear.onnx");
    let data = digits(25);
    let params = serde_json::json!({
        "max_passes": 1,
        "transfer": [repo("onnx_models/efficientnet_lite0/efficientnet_lite0.onnx")],
    });
    let err = try_run("uap", params, &model, &data).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("transfer model") && msg.contains("efficientnet_lite0"),
        "{msg}"
    );
}

#[test]
fn linear_model_has_a_flat_boundary() {
    let model = open("onnx_models/digits/digits_linear.onnx");
    let data = digits(20);
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

#[test]
fn cross_sections_of_the_linear_model_are_flat_at_the_deepfool_distance() {
    let model = open("onnx_models/digits/digits_linear.onnx");
    let data = digits(10);
    let r = run(
        "crosssection",
        serde_json::json!({"images": 3}),
        &model,
        &data,
    );
    let sections = r.extra["sections"].as_array().unwrap();
    assert_eq!(sections.len(), 3);
    for s in sections {
        for plane in s["planes"].as_array().unwrap() {
            // x + r* lies at α = 1 with r* = 1.02 × the distance: on a
            // linear model the boundary crosses β = 0 at α = 1/1.02.
            let b = plane["boundary"].as_array().unwrap();
            let mid = b[b.len() / 2].as_f64().unwrap();
            assert!((mid - 1.0 / 1.02).abs() < 1e-3, "boundary at beta=0: {mid}");
            // Along a random direction it stays that straight line. (The
            // adversarial plane meets the next class's facet: a corner of
            // the linear model's polytope, which the fit sees as curvature.)
            if plane["kind"] == "random" {
                for a in b {
                    assert!((a.as_f64().unwrap() - 1.0 / 1.02).abs() < 1e-3, "{b:?}");
                }
                assert!(plane["kappa_rel"].as_f64().unwrap().abs() < 1e-3);
            }
        }
    }
}

#[test]
fn cnn_boundary_is_flatter_along_random_than_adversarial_directions() {
    let model = open("onnx_models/digits/digits_cnn.onnx");
    let data = digits(20);
    let r = run(
        "crosssection",
        serde_json::json!({"images": 8}),
        &model,
        &data,
    );
    let abs_median = |key: &str| {
        let v: Vec<f64> = r
            .images
            .iter()
            .filter_map(|i| i.values.get(key).map(|k| k.abs()))
            .collect();
        measure::median(&v).unwrap()
    };
    let (random, adversarial) = (abs_median("kappa_random"), abs_median("kappa_adversarial"));
    assert!(
        random < adversarial,
        "random {random} adversarial {adversarial}"
    );
}

/// ∇ℓ(x) = Wᵀ(softmax(Wx + b) − e_k0) of the linear model, in f64.
fn linear_loss_grad(lin: &LinearDigits, x: &[f64], k0: usize) -> Vec<f64> {
    let (d, w) = (LinearDigits::D, &lin.w);
    let f = lin.logits(x);
    let m = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = f.iter().map(|v| (v - m).exp()).sum();
    let mut c: Vec<f64> = f.iter().map(|v| (v - m).exp() / z).collect();
    c[k0] = -(0..10).filter(|&k| k != k0).map(|k| c[k]).sum::<f64>();
    (0..d)
        .map(|t| (0..10).map(|k| c[k] * w[k * d + t]).sum())
        .collect()
}

#[test]
fn cure_matches_the_closed_form_on_the_linear_model() {
    let model = open("onnx_models/digits/digits_linear.onnx");
    let data = digits(30);
    let h = 0.5;
    let r = run(
        "cure",
        serde_json::json!({"h": h, "profile": 0}),
        &model,
        &data,
    );
    let lin = LinearDigits::load();
    let mut checked = 0;
    for img in &r.images {
        let xi = lin.image(img.index);
        // CURE measures the images the model classifies correctly: decided here
        // in f64 wherever the top two logits are further apart than f32 rounding.
        let f = lin.logits(xi);
        let order = ranked(&f);
        if f[order[0]] - f[order[1]] > 1e-3 {
            assert_eq!(
                img.values.contains_key("c_h"),
                img.label == Some(order[0]),
                "image {}: measured or not against its f64 prediction",
                img.index
            );
        }
        if !img.values.contains_key("c_h") {
            continue;
        }
        let g0 = linear_loss_grad(&lin, xi, img.pred);
        let nz = g0.iter().filter(|v| **v != 0.0).count() as f64;
        let probe: Vec<f64> = xi
            .iter()
            .zip(&g0)
            .map(|(x, g)| x + h * g.signum() * f64::from(u8::from(*g != 0.0)) / nz.sqrt())
            .collect();
        let g1 = linear_loss_grad(&lin, &probe, img.pred);
        let want = g0
            .iter()
            .zip(&g1)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt()
            / h;
        let got = img.values["c_h"];
        assert!(
            (got - want).abs() <= 1e-3 * want.max(1e-6),
            "image {}: c_h {got} vs closed form {want}",
            img.index
        );
        checked += 1;
    }
    assert!(checked > 0, "no image checked");
}

#[test]
fn lanczos_finds_the_top_eigenvalues_of_a_quadratic_boundary() {
    // F(x) = ½xᵀAx + bᵀx + c with eig(A) = 4, 2.5, 1.5, then |λ| ≤ 0.5
    // (onnx_models/quadratic): the Hessian of f_1 − f_0 is A everywhere. The boundary's
    // curvature at z is that of A in the tangent space, P A P with P = I − n nᵀ and
    // n = ∇F(z)/‖∇F(z)‖ = (Az + b)/‖Az + b‖: eigenvalues strictly inside A's (interlacing) unless
    // n is orthogonal to A's top eigenvectors.
    let model = open("onnx_models/quadratic/quadratic.onnx");
    let data = dataset(
        "onnx_models/quadratic/x.npy",
        "onnx_models/quadratic/y.npy",
        8,
    );
    let r = run(
        "curvature",
        serde_json::json!({"q": 3, "steps": 20}),
        &model,
        &data,
    );
    let (a, b) = (
        npy_f64("onnx_models/quadratic/A.npy"),
        npy_f64("onnx_models/quadratic/b.npy"),
    );
    let d = b.len();
    let a = DMatrix::from_row_slice(d, d, &a);
    // The boundary points z = x + r*: DeepFool as the measure runs it (L2, unclipped).
    let sm = SpacedModel::new(&model, &data);
    let x = sm.load(&data, 0, data.len()).unwrap();
    let opts = DeepFoolOptions {
        clip: None,
        ..DeepFoolOptions::default()
    };
    let outs = deepfool_batch(&sm, &x, data.len(), &opts, None).unwrap();
    let mut checked = 0;
    for img in &r.images {
        let i = img.index;
        // The measure takes every correctly classified image whose DeepFool
        // point (the same search, run above) reached the boundary.
        let reached = outs[i].success && img.label.is_none_or(|l| l == img.pred);
        assert_eq!(img.values.contains_key("eig1"), reached, "image {i}");
        if !reached {
            continue;
        }
        let z = DVector::from_iterator(
            d,
            (0..d).map(|t| f64::from(x[i * d + t]) + f64::from(outs[i].r[t])),
        );
        let g = &a * &z + DVector::from_column_slice(&b);
        assert!(
            (g.norm() / img.values["grad_norm"] - 1.0).abs() < 1e-3,
            "image {i}: ‖∇F(z)‖ {} vs the measure's {}",
            g.norm(),
            img.values["grad_norm"]
        );
        let n = &g / g.norm();
        let p = DMatrix::identity(d, d) - &n * n.transpose();
        let mut want: Vec<f64> = (&p * &a * &p)
            .symmetric_eigen()
            .eigenvalues
            .iter()
            .copied()
            .collect();
        want.sort_by(|u, v| v.total_cmp(u));
        // Reported eigenvalues are of P H P/‖∇G‖.
        for (j, w) in want.iter().take(3).enumerate() {
            let got = img.values[&format!("eig{}", j + 1)] * img.values["grad_norm"];
            assert!(
                (got / w - 1.0).abs() <= 0.01,
                "image {i}: eig{} {got} vs the tangent space's {w}",
                j + 1
            );
        }
        checked += 1;
    }
    assert!(checked > 0, "no image reached the boundary");
}

/// `margin` on the linear model against its closed form: the margin `(w_k0 − w_k1)·x +
/// b_k0 − b_k1`, the gradient norm `‖w_k0 − w_k1‖₂` and their ratio, in f64.
#[test]
fn margin_matches_the_closed_form_on_the_linear_model() {
    let model = open("onnx_models/digits/digits_linear.onnx");
    let data = digits(60);
    let r = run("margin", serde_json::json!({}), &model, &data);
    let lin = LinearDigits::load();
    let (d, w) = (LinearDigits::D, &lin.w);
    let mut checked = 0;
    for img in &r.images {
        let f = lin.logits(lin.image(img.index));
        let order = ranked(&f);
        let (k0, k1) = (order[0], order[1]);
        // Where the top three logits are clear of f32 rounding, k0 and k1 are the model's too.
        if f[k0] - f[k1] < 1e-3 || f[k1] - f[order[2]] < 1e-3 {
            continue;
        }
        assert_eq!(img.pred, k0, "image {}", img.index);
        if img.label != Some(k0) {
            assert!(!img.values.contains_key("logit_margin"));
            continue;
        }
        let margin = f[k0] - f[k1];
        let norm = (0..d)
            .map(|t| (w[k0 * d + t] - w[k1 * d + t]).powi(2))
            .sum::<f64>()
            .sqrt();
        let v = &img.values;
        let close = |got: f64, want: f64| (got - want).abs() <= 1e-4 * want.abs().max(1.0);
        assert!(
            close(v["logit_margin"], margin),
            "image {}: {v:?} vs {margin}",
            img.index
        );
        assert!(
            close(v["gradient_norm"], norm),
            "image {}: {v:?} vs {norm}",
            img.index
        );
        assert!(
            close(v["linear_distance"], margin / norm),
            "image {}: {v:?} vs {}",
            img.index,
            margin / norm
        );
        checked += 1;
    }
    assert!(checked > 0, "no image checked");
}

/// On 5 or 12 images (4 and 1, 10 and 2 construction and held-out images with the default
/// fifth held out) no fooling rate is reported: the summary says `insufficient_data` with the
/// count, and a warning says what is missing. 25 images (20 and 5) are enough.
#[test]
fn uap_on_too_few_images_reports_insufficient_data() {
    let model = open("onnx_models/digits/digits_linear.onnx");
    let params = serde_json::json!({"max_passes": 1});
    for (n, enough) in [(5, false), (12, false), (25, true)] {
        let r = run("uap", params.clone(), &model, &digits(n));
        let s = &r.summary;
        assert_eq!(s.contains_key("holdout_fooling_rate"), enough, "{n}: {s:?}");
        assert_eq!(s.get("insufficient_data").is_some(), !enough, "{n}: {s:?}");
        if !enough {
            assert_eq!(s["insufficient_data"], n as f64);
            let warnings = georob::report::Report::warnings(&r);
            assert!(
                warnings.iter().any(|w| w.contains("held-out")),
                "{warnings:?}"
            );
        }
    }
}
