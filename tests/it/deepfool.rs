//! DeepFool and its refinement (`minnorm`) against the closed form on the bundled linear
//! digits model, success and re-checked points on the digits CNN, and which perturbations
//! `run_all` keeps.

use georob::attack::deepfool::{deepfool_batch, DeepFoolOptions, Norm};
use georob::attack::refine::{self, RefineOptions};
use georob::attack::vector::{l2, linf};
use georob::measure::deepfool::{run_all, Keep};
use georob::measure::space::{Space, SpacedModel};
use georob::measure::Outcome;
use georob::model::Model;

use crate::common::{digits, npy_f32, open, ranked, repo, try_run_measure, Harness, LinearDigits};

/// The model at `path` and the first `n` digits test images (model space = [0, 1]).
fn model_and_digits(path: &str, n: usize) -> (Model, Vec<f32>) {
    let (_, mut x) = npy_f32(&repo("onnx_models/digits/test_x.npy"));
    x.truncate(n * 784);
    (open(path), x)
}

/// `model` as a function of its own input.
fn in_model_space(model: &Model) -> SpacedModel<'_> {
    SpacedModel {
        model,
        space: Space::Model,
    }
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
    let (_, x) = npy_f32(&repo("onnx_models/digits/test_x.npy"));
    let (_, w) = npy_f32(&repo("onnx_models/digits/digits_linear_W.npy"));
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
    let n = 200;
    let (model, x) = model_and_digits("onnx_models/digits/digits_cnn.onnx", n);
    let sm = in_model_space(&model);
    let opts = DeepFoolOptions {
        clip: Some((0.0, 1.0)),
        ..Default::default()
    };
    let out = deepfool_batch(&sm, &x, n, &opts, None).unwrap();
    let fooled = out.iter().filter(|o| o.success).count();
    let norms: Vec<f64> = out.iter().map(|o| l2(&o.r)).collect();
    let med = georob::measure::median(&norms).unwrap();
    let most = out.iter().map(|o| o.iterations).max().unwrap_or(0);
    eprintln!("cnn: {fooled}/{n} fooled, median l2 {med:.3}, at most {most} of 50 iterations");
    assert_eq!(fooled, n);
    for o in &out {
        assert!(o.r.iter().all(|v| v.is_finite()));
        assert_ne!(o.adv_class, o.clean_class);
    }
}

#[test]
fn run_all_keeps_only_the_perturbations_asked_for() {
    let model = open("onnx_models/digits/digits_linear.onnx");
    let data = digits(60);
    let harness = Harness::new(&model);
    let ctx = harness.context(&model, &data, 0);
    let opts = DeepFoolOptions::default();
    let (images, all) = run_all(&ctx, &opts, "test", Keep::All).unwrap();
    let attacked: Vec<usize> = images
        .iter()
        .filter(|i| i.outcome != Outcome::Misclassified)
        .map(|i| i.index)
        .collect();
    // Attacked are the images the model classifies correctly: checked against the
    // f64 logits Wx + b wherever the top two are further apart than f32 rounding.
    let lin = LinearDigits::load();
    let mut clear = 0;
    for img in &images {
        let f = lin.logits(lin.image(img.index));
        let order = ranked(&f);
        if f[order[0]] - f[order[1]] > 1e-3 {
            clear += 1;
            assert_eq!(
                img.outcome != Outcome::Misclassified,
                img.label == Some(order[0]),
                "image {}",
                img.index
            );
        }
    }
    assert!(clear > 0 && !attacked.is_empty());
    assert_eq!(all.keys().copied().collect::<Vec<_>>(), attacked);
    for (i, o) in &all {
        assert_eq!(l2(&o.r), images[*i].values["norm_l2"]);
    }
    // The three fooled images nearest the boundary, by a sort of the values.
    let mut fooled: Vec<(f64, usize)> = images
        .iter()
        .filter(|i| i.outcome == Outcome::Fooled)
        .map(|i| (i.values["norm_l2"], i.index))
        .collect();
    fooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let want: Vec<usize> = {
        let mut w: Vec<usize> = fooled[..3].iter().map(|f| f.1).collect();
        w.sort();
        w
    };
    let (_, smallest) = run_all(&ctx, &opts, "test", Keep::Smallest(3)).unwrap();
    assert_eq!(smallest.keys().copied().collect::<Vec<_>>(), want);
    let (again, none) = run_all(&ctx, &opts, "test", Keep::Nothing).unwrap();
    assert!(none.is_empty());
    assert_eq!(again.len(), images.len());
}

/// The refinement on the linear model: DeepFool lands at `1.02×` the closed-form distance
/// along the optimal direction; the line search brings it within `1.02 · 2⁻¹²` of the
/// distance, and the boundary steps can only keep it or find another point that a forward
/// pass confirms, which no point closer than the closed form can be.
#[test]
fn refinement_reaches_the_closed_form_on_the_linear_model() {
    let n = 120;
    let (model, x) = model_and_digits("onnx_models/digits/digits_linear.onnx", n);
    let sm = in_model_space(&model);
    let (_, w) = npy_f32(&repo("onnx_models/digits/digits_linear_W.npy"));
    let logits = model.logits(&x, n).unwrap();
    for norm in [Norm::L2, Norm::Linf] {
        let opts = DeepFoolOptions {
            norm,
            ..Default::default()
        };
        let mut out = deepfool_batch(&sm, &x, n, &opts, None).unwrap();
        let refine = RefineOptions {
            norm,
            bisection: 12,
            steps: 20,
            clip: None,
        };
        refine::refine(&sm, &x, &logits, &mut out, &refine).unwrap();
        let mut worst = 0.0f64;
        for (i, o) in out.iter().enumerate() {
            let (dist, k0) = closed_form(&w, &logits[i * 10..(i + 1) * 10], norm == Norm::Linf);
            assert!(o.success, "{norm:?} image {i}");
            let got = norm.of(&o.r);
            let over = got / dist - 1.0;
            worst = worst.max(over);
            assert!(
                (-1e-4..=1.02 / 4096.0 + 1e-4).contains(&over),
                "{norm:?} image {i}: {got} against the closed form {dist}"
            );
            let adv: Vec<f32> = x[i * 784..(i + 1) * 784]
                .iter()
                .zip(&o.r)
                .map(|(a, b)| a + b)
                .collect();
            let c = georob::attack::vector::argmax(&model.logits(&adv, 1).unwrap());
            assert!(c != k0 && c == o.adv_class, "{norm:?} image {i}: class {c}");
        }
        eprintln!("{norm:?}: at most {worst:.2e} above the closed form");
    }
}

/// On the CNN in the box [0, 1]: every refined perturbation is confirmed by a fresh forward
/// pass at its clipped point, stays in the box, is no longer than DeepFool's, and the median
/// shrinks (the line search alone removes most of DeepFool's 2 % overshoot).
#[test]
fn refined_points_are_rechecked_and_no_longer_than_deepfools() {
    let n = 60;
    let (model, x) = model_and_digits("onnx_models/digits/digits_cnn.onnx", n);
    let sm = in_model_space(&model);
    for norm in [Norm::L2, Norm::Linf] {
        let opts = DeepFoolOptions {
            norm,
            clip: Some((0.0, 1.0)),
            ..Default::default()
        };
        let before = deepfool_batch(&sm, &x, n, &opts, None).unwrap();
        let logits = sm.logits(&x, n).unwrap();
        let mut after = before.clone();
        let refine = RefineOptions {
            norm,
            bisection: 12,
            steps: 10,
            clip: Some((0.0, 1.0)),
        };
        refine::refine(&sm, &x, &logits, &mut after, &refine).unwrap();
        let (mut sum_before, mut sum_after) = (vec![], vec![]);
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            assert_eq!(a.success, b.success);
            if !a.success {
                continue;
            }
            let u = &x[i * 784..(i + 1) * 784];
            let adv: Vec<f32> = u
                .iter()
                .zip(&a.r)
                .map(|(p, q)| (p + q).clamp(0.0, 1.0))
                .collect();
            assert!(u
                .iter()
                .zip(&a.r)
                .all(|(p, q)| (-1e-6..=1.0 + 1e-6).contains(&(p + q))));
            let c = georob::attack::vector::argmax(&model.logits(&adv, 1).unwrap());
            assert!(c != a.clean_class && c == a.adv_class, "{norm:?} image {i}");
            assert!(
                norm.of(&a.r) <= norm.of(&b.r) * (1.0 + 1e-6),
                "{norm:?} image {i}"
            );
            sum_before.push(norm.of(&b.r));
            sum_after.push(norm.of(&a.r));
        }
        let (mb, ma) = (
            georob::measure::median(&sum_before).unwrap(),
            georob::measure::median(&sum_after).unwrap(),
        );
        eprintln!("{norm:?}: median {mb:.4} -> {ma:.4}");
        assert!(ma < mb, "{norm:?}: median {mb} -> {ma}");
    }
}

/// `minnorm`'s robust accuracy on the linear model without a box against the closed form:
/// an image is robust at ε exactly when it is correctly classified and its closed-form
/// distance exceeds ε, up to images within the search's resolution of ε.
#[test]
fn minnorm_robust_accuracy_matches_the_closed_form_on_the_linear_model() {
    let model = open("onnx_models/digits/digits_linear.onnx");
    let data = digits(150);
    let (_, w) = npy_f32(&repo("onnx_models/digits/digits_linear_W.npy"));
    let (_, x) = npy_f32(&repo("onnx_models/digits/test_x.npy"));
    let logits = model.logits(&x[..150 * 784], 150).unwrap();
    for (norm, eps) in [("l2", [0.25, 0.5, 1.0]), ("linf", [0.01, 0.02, 0.05])] {
        let params = serde_json::json!({"norm": norm, "steps": 5, "eps": eps});
        let r = try_run_measure("minnorm", &params, &model, &data, 0).unwrap();
        for e in eps {
            let (mut robust, mut unsure) = (0usize, 0usize);
            for (i, img) in data.items.iter().enumerate() {
                let (dist, k0) = closed_form(&w, &logits[i * 10..(i + 1) * 10], norm == "linf");
                if img.label != Some(k0) {
                    continue;
                }
                if (dist / e - 1.0).abs() < 2e-3 {
                    unsure += 1;
                } else if dist > e {
                    robust += 1;
                }
            }
            let got = r.summary[&format!("robust_accuracy@{e}")] * 150.0;
            eprintln!(
                "{norm} ε={e}: {got} robust, closed form {robust} (+ {unsure} within resolution)"
            );
            assert!(
                got.round() as usize >= robust && got.round() as usize <= robust + unsure,
                "{norm} ε={e}: {got} robust, closed form {robust} (+ {unsure})"
            );
        }
    }
}
