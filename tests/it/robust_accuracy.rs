//! `robust_accuracy` (APGD-CE, APGD-DLR-T, Square): against the exact L∞ radius of the
//! bundled linear model, every reported point re-checked by a fresh model call, and the
//! gradient-masking flag on a model whose input layer has zero gradients.

use georob::attack::vector::{argmax, linf};
use georob::measure::robust_accuracy::Params;
use georob::measure::space::{Space, SpacedModel};
use georob::measure::{self, Outcome};
use georob::model::{GradientChoice, Model, ModelOptions};
use prost::Message;

use crate::common::{
    classifier, digits, flatten_and_gemm, node, npy_f32, open, repo, tensor, tract, Harness,
};

/// Exact L∞ radius of each image under the linear model: `min_j (z_k0 − z_j) / ‖w_k0 − w_j‖₁`,
/// from the model's own f32 logits (`W` in f64) as the DeepFool test does, with the clean
/// class and the gap between the top two logits.
fn linear_radii(model: &Model, n: usize) -> Vec<(f64, usize, f64)> {
    let (_, x) = npy_f32(&repo("onnx_models/digits/test_x.npy"));
    let (_, w) = npy_f32(&repo("onnx_models/digits/digits_linear_W.npy"));
    let d = 784;
    let logits = model.logits(&x[..n * d], n).unwrap();
    (0..n)
        .map(|i| {
            let f: Vec<f64> = logits[i * 10..(i + 1) * 10]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let k0 = argmax(&logits[i * 10..(i + 1) * 10]);
            let mut best = f64::INFINITY;
            let mut gap = f64::INFINITY;
            for j in (0..10).filter(|&j| j != k0) {
                let q: f64 = (0..d)
                    .map(|t| (f64::from(w[k0 * d + t]) - f64::from(w[j * d + t])).abs())
                    .sum();
                best = best.min((f[k0] - f[j]) / q);
                gap = gap.min(f[k0] - f[j]);
            }
            (best, k0, gap)
        })
        .collect()
}

/// On the linear model without bounds, an image can be fooled within ε exactly when its
/// radius is below ε. The ensemble must fool, with a gradient attack, every image whose radius
/// is below ε·(1 − 1e-3), and never one whose radius exceeds ε·(1 + 1e-3): the band between
/// is left to f32 rounding.
#[test]
fn apgd_finds_every_image_below_the_exact_linf_radius_of_the_linear_model() {
    let model = open("onnx_models/digits/digits_linear.onnx");
    let n = 200;
    let data = digits(n);
    let radii = linear_radii(&model, n);
    let mut sorted: Vec<f64> = radii.iter().map(|r| r.0).collect();
    sorted.sort_by(f64::total_cmp);
    // Radii at the 30th and 70th percentiles: each ε splits the images.
    let eps = [
        (sorted[n * 3 / 10] * 1e4).round() / 1e4,
        (sorted[n * 7 / 10] * 1e4).round() / 1e4,
    ];
    let params = serde_json::json!({"norm": "linf", "eps": eps, "queries": 200});
    let r = measure::build("robust_accuracy", &params)
        .unwrap()
        .run(&Harness::new(&model).context(&model, &data, 3))
        .unwrap();
    eprintln!("linear: eps {eps:?}, {:?}", r.summary);
    let (mut found, mut robust, mut band) = (0, 0, 0);
    // How close to ε APGD gets: the largest radius/ε fooled, the smallest not fooled.
    let (mut reach, mut short) = (0.0f64, f64::INFINITY);
    for (img, &(radius, k0, gap)) in r.images.iter().zip(&radii) {
        if gap < 1e-4 {
            continue; // the clean class itself is a matter of rounding
        }
        assert_eq!(img.pred, k0, "image {}", img.index);
        if img.outcome == Outcome::Misclassified {
            continue;
        }
        for e in eps {
            let key = Params::eps_key(e);
            let fooled = img.values[&format!("robust@{key}")] == 0.0;
            if fooled {
                reach = reach.max(radius / e);
            } else {
                short = short.min(radius / e);
            }
            if radius < e * (1.0 - 1e-3) {
                assert!(
                    fooled,
                    "image {}: radius {radius} < ε {e}, not fooled",
                    img.index
                );
                let attack = img.values[&format!("attack@{key}")];
                assert!(
                    attack == 1.0 || attack == 2.0,
                    "image {}: radius {radius} < ε {e}, fooled by attack {attack}, not APGD",
                    img.index
                );
                assert!(img.values[&format!("norm@{key}")] <= e * (1.0 + 1e-5));
                found += 1;
            } else if radius > e * (1.0 + 1e-3) {
                assert!(
                    !fooled,
                    "image {}: radius {radius} > ε {e}, yet fooled",
                    img.index
                );
                robust += 1;
            } else {
                band += 1;
            }
        }
    }
    eprintln!(
        "linear: {found} fooled below ε, {robust} robust above, {band} in the band; \
         radius/ε at most {reach:.6} fooled, at least {short:.6} not"
    );
    assert!(found > 0 && robust > 0);
}

/// Every point the ensemble reports on the digits CNN lies in the box and the ε-ball and is
/// classified other than the label by a fresh forward pass of its own; the fooled images are
/// exactly those with a point.
#[test]
fn every_reported_point_fools_a_fresh_forward_pass() {
    let model = open("onnx_models/digits/digits_cnn.onnx");
    let data = digits(40);
    let harness = Harness::new(&model);
    let mut ctx = harness.context(&model, &data, 5);
    ctx.bounds = Some((0.0, 1.0));
    let params = Params {
        eps: vec![0.1, 0.05],
        steps: 30,
        targets: 3,
        queries: 300,
        ..Params::default()
    };
    let e = params.ensemble(&ctx, true).unwrap();
    let sm = SpacedModel {
        model: &model,
        space: Space::Model,
    };
    let fooled: Vec<usize> = e
        .images
        .iter()
        .filter(|i| i.outcome == Outcome::Fooled)
        .map(|i| i.index)
        .collect();
    assert_eq!(e.points.iter().map(|p| p.index).collect::<Vec<_>>(), fooled);
    assert!(!fooled.is_empty());
    for p in &e.points {
        let x = sm.load(&data, p.index, 1).unwrap();
        assert!(p.point.iter().all(|v| (0.0..=1.0).contains(v)));
        let delta: Vec<f32> = p.point.iter().zip(&x).map(|(a, b)| a - b).collect();
        assert!(linf(&delta) <= p.eps * (1.0 + 1e-5), "image {}", p.index);
        let z = sm.logits(&p.point, 1).unwrap();
        let label = data.items[p.index].label.unwrap();
        assert_ne!(
            argmax(&z),
            label,
            "image {}: the point does not fool",
            p.index
        );
        assert_eq!(argmax(&z), p.class, "image {}", p.index);
        let img = &e.images[p.index];
        let key = Params::eps_key(p.eps);
        assert_eq!(img.values[&format!("adv_pred@{key}")], p.class as f64);
        assert_eq!(img.values[&format!("attack@{key}")], p.attack as u8 as f64);
    }
    // Fooled at 0.05 means fooled at 0.1.
    for img in &e.images {
        if img.values.get("robust@0.05") == Some(&0.0) {
            assert_eq!(img.values["robust@0.1"], 0.0);
        }
    }
    assert_eq!(e.unconfirmed, 0);
}

/// Steepness of the binarising input layer: its ramp is 1/1000 wide around 0.5, between the
/// data's grey levels 127/255 and 128/255.
const STEEP: f32 = 1000.0;

/// The linear digits model behind a binarising input layer,
/// `Clip(1000·(x − 0.5), −0.5, 0.5) + 0.5`: its gradient is exactly zero wherever no pixel
/// lies on the ramp, at every clean image among them.
fn binarised_linear(path: &std::path::Path) {
    let (_, w) = npy_f32(&repo("onnx_models/digits/digits_linear_W.npy"));
    let (_, b) = npy_f32(&repo("onnx_models/digits/digits_linear_b.npy"));
    // W·(c + 0.5) + b = W·c + (b + 0.5·W·1).
    let b: Vec<f32> = (0..10)
        .map(|k| b[k] + 0.5 * w[k * 784..(k + 1) * 784].iter().sum::<f32>())
        .collect();
    let (flatten, gemm) = flatten_and_gemm("bin");
    let model = classifier(
        "binarised_linear",
        vec![
            flatten,
            node("Sub", "centre", &["flat", "half"], "centred"),
            node("Mul", "steep", &["centred", "steepness"], "scaled"),
            node("Clip", "binarise", &["scaled", "lo", "hi"], "bin"),
            gemm,
        ],
        vec![
            tensor("half", &[], &[0.5]),
            tensor("steepness", &[], &[STEEP]),
            tensor("lo", &[], &[-0.5]),
            tensor("hi", &[], &[0.5]),
            tensor("W", &[10, 784], &w),
            tensor("b", &[10], &b),
        ],
        &[None, Some(1), Some(28), Some(28)],
        &[None, Some(10)],
    );
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

/// A binarising input layer masks the gradients: they are exactly zero at the clean images,
/// so APGD cannot move, while Square Attack, which uses forward passes only, fools some of
/// the images APGD left. The measure flags those images, and only images Square fooled.
#[test]
fn square_fooling_what_apgd_cannot_is_flagged_as_gradient_masking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("binarised.onnx");
    binarised_linear(&path);
    let options = ModelOptions {
        gradient: GradientChoice::Exact,
        use_sidecar: false,
        ..tract()
    };
    let model = Model::open(&path, &options).unwrap();
    let n = 60;
    let data = digits(n);
    let sm = SpacedModel {
        model: &model,
        space: Space::Model,
    };
    // The oracle behind the flag: zero gradients at every clean image.
    let x = sm.load(&data, 0, n).unwrap();
    let mut cot = vec![0.0f32; n * 10];
    for (i, c) in cot.chunks_mut(10).enumerate() {
        c[i % 10] = 1.0;
        c[(i + 3) % 10] = -1.0;
    }
    let (_, g) = sm.vjp(&x, n, &cot, 1).unwrap();
    assert!(
        g.iter().all(|&v| v == 0.0),
        "the binarised model has gradients"
    );

    let harness = Harness::new(&model);
    let mut ctx = harness.context(&model, &data, 11);
    ctx.bounds = Some((0.0, 1.0));
    let params = Params {
        eps: vec![0.3],
        steps: 20,
        targets: 3,
        queries: 500,
        ..Params::default()
    };
    let r = measure::build("robust_accuracy", &serde_json::to_value(&params).unwrap())
        .unwrap()
        .run(&ctx)
        .unwrap();
    eprintln!("binarised: {:?}\n{}", r.summary, r.extra);
    let flagged: Vec<usize> = r.extra["masking"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert!(r.summary["gradient_masking"] > 0.0, "{:?}", r.summary);
    assert_eq!(r.summary["gradient_masking"], flagged.len() as f64);
    assert_eq!(r.summary["masking@0.3"], flagged.len() as f64);
    for img in &r.images {
        let square = img.values.get("attack@0.3") == Some(&3.0);
        assert_eq!(square, flagged.contains(&img.index), "image {}", img.index);
    }
    let warnings = r.extra["warnings"].as_array().unwrap();
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("gradient masking suspected"),
        "{warnings:?}"
    );
}
