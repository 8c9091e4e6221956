//! The `stability` measure against oracles: a model that thresholds the mean pixel flips
//! exactly once along a brightness sweep that crosses its threshold and never along one that
//! does not; and on the digits CNN, every per-image FP and T5D equals a brute-force count over
//! the same frames, with the top-5 distance written as the reference's loop.

use georob::corrupt::Perturbation;
use georob::model::Model;
use prost::Message;

use crate::common::*;

/// Two classes on gray 28×28 images: class 0 when the mean pixel exceeds `t`.
fn mean_above(dir: &std::path::Path, t: f32) -> Model {
    let (flatten, gemm) = flatten_and_gemm("flat");
    let mut w = vec![1.0 / 784.0; 784];
    w.extend(vec![0.0; 784]);
    let model = classifier(
        "mean_above",
        vec![flatten, gemm],
        vec![tensor("W", &[2, 784], &w), tensor("b", &[2], &[-t, 0.0])],
        &[None, Some(1), Some(28), Some(28)],
        &[None, Some(2)],
    );
    let path = dir.join("mean_above.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    Model::open(&path, &tract()).unwrap()
}

/// Brightness shifts every pixel by (j − 15)·0.02 for frames j = 0..30, so the frames' mean
/// pixel rises monotonically from about mean(max(x − 0.3, 0)) to mean(min(x + 0.3, 1)) (8-bit
/// rounding moves it by under 1/255). Where the threshold lies inside that range by a margin,
/// the prediction flips exactly once (FP = 1/30); outside it, never. With two classes a flip
/// swaps the two ranks, a top-5 distance of 2.
#[test]
fn a_mean_threshold_flips_once_where_the_brightness_sweep_crosses_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = digits(100);
    let x = data.load(&digits_cnn().spec, 0, 100).unwrap().x;
    let range = |i: usize| {
        let u = &x[i * 784..(i + 1) * 784];
        let mean = |f: &dyn Fn(f32) -> f32| u.iter().map(|&v| f(v)).sum::<f32>() / 784.0;
        (mean(&|v| (v - 0.3).max(0.0)), mean(&|v| (v + 0.3).min(1.0)))
    };
    // The threshold at the median top of the sweeps: half the images reach it.
    let mut tops: Vec<f32> = (0..100).map(|i| range(i).1).collect();
    tops.sort_by(f32::total_cmp);
    let t = tops[50];
    let model = mean_above(dir.path(), t);
    let params = serde_json::json!({"perturbations": ["brightness"]});
    let res = try_run_measure("stability", &params, &model, &data, 0).unwrap();
    let (mut crossing, mut short) = (0, 0);
    for img in &res.images {
        let (lo, hi) = range(img.index);
        let fp = img.values["fp_brightness"];
        if lo + 0.01 < t && t < hi - 0.01 {
            crossing += 1;
            assert_eq!(
                fp,
                1.0 / 30.0,
                "image {}: mean {lo}..{hi} crosses {t}",
                img.index
            );
        } else if hi + 0.01 < t || t < lo - 0.01 {
            short += 1;
            assert_eq!(fp, 0.0, "image {}: mean {lo}..{hi} misses {t}", img.index);
        }
        assert_eq!(
            img.values["t5d_brightness"],
            2.0 * fp,
            "image {}",
            img.index
        );
    }
    assert!(
        crossing >= 10 && short >= 10,
        "{crossing} crossing, {short} short"
    );
}

/// The reference's top-5 distance, as its commented-out loop: for `i` in 1..=5, count the `j`
/// in `(min(i, σ(i)), max(i, σ(i))]` with `1 ≤ j − 1 ≤ 5`, where `σ(i)` is the rank in `b` of
/// the class ranked `i` in `a`.
fn top5_loop(a: &[f32], b: &[f32]) -> f64 {
    let rank_of = |z: &[f32], class: usize| 1 + z.iter().filter(|&&v| v > z[class]).count();
    let mut by_rank: Vec<usize> = (0..a.len()).collect();
    by_rank.sort_by_key(|&c| rank_of(a, c));
    let mut result = 0;
    for i in 1..=5usize {
        let s = rank_of(b, by_rank[i - 1]);
        for j in i.min(s) + 1..=i.max(s) {
            result += usize::from((1..=5).contains(&(j - 1)));
        }
    }
    result as f64
}

#[test]
fn per_image_values_equal_a_brute_force_count_over_the_same_frames() {
    let model = digits_cnn();
    let data = digits(5);
    let res = try_run_measure("stability", &serde_json::json!({}), &model, &data, 9).unwrap();
    let x = data.load(&model.spec, 0, 5).unwrap().x;
    let spec = &model.spec;
    for img in &res.images {
        let u = &x[img.index * 784..(img.index + 1) * 784];
        let seed = georob::corrupt::image_seed(9, img.index);
        for p in Perturbation::ALL {
            let frames = p.sequence(u, spec.channels, (28, 28), seed).unwrap();
            let f = p.frames();
            let z = model.logits(&frames, f).unwrap();
            let frame = |j: usize| &z[j * 10..(j + 1) * 10];
            let (mut flips, mut distance) = (0, 0.0);
            for j in 1..f {
                let before = if p.is_noise() { 0 } else { j - 1 };
                let top = |z: &[f32]| georob::attack::vector::argmax(z);
                flips += usize::from(top(frame(before)) != top(frame(j)));
                distance += top5_loop(frame(before), frame(j));
            }
            let fp = img.values[&format!("fp_{p}")];
            let t5d = img.values[&format!("t5d_{p}")];
            assert_eq!(fp, flips as f64 / (f - 1) as f64, "image {} {p}", img.index);
            let want = distance / (f - 1) as f64;
            assert!(
                (t5d - want).abs() < 1e-12,
                "image {} {p}: {t5d} against {want}",
                img.index
            );
        }
    }
    let mean_fp: f64 = Perturbation::ALL
        .iter()
        .map(|p| res.summary[&format!("fp_{p}")])
        .sum::<f64>()
        / 8.0;
    assert!((res.summary["mean_fp"] - mean_fp).abs() < 1e-12);
}
