//! The geometric measures (`grid`, `manifool`, `stadv`, `invariance`) on the
//! bundled digits CNN, against independent recomputations.

use georob::attack::vector::argmax;
use georob::data::Dataset;
use georob::measure::{Counts, MeasureResult, Outcome};
use georob::model::Model;
use transforms::nalgebra::Matrix3;
use transforms::{Batch, ImageLayout, ImageShape, MatrixWarp, Sampling, Warp};

use crate::common::{digits, digits_cnn, try_run_measure};

fn run(model: &Model, data: &Dataset, name: &str, params: serde_json::Value) -> MeasureResult {
    try_run_measure(name, &params, model, data, 7).unwrap()
}

/// Plain loop: warps each image by each grid transform (`angles` in degrees,
/// `shifts` in pixels on both axes), one model call per warped image, and
/// says per image whether every warp is still classified as its label.
fn grid_by_loop(
    model: &Model,
    x: &[f32],
    data: &Dataset,
    angles: &[f64],
    shifts: &[f64],
) -> Vec<bool> {
    let shape = ImageShape::new(1, 1, 28, 28);
    (0..data.len())
        .map(|i| {
            let img = &x[i * 784..(i + 1) * 784];
            let label = data.items[i].label.unwrap();
            let batch = Batch::new(img, shape, ImageLayout::Nchw).unwrap();
            let mut ok = argmax(&model.logits(img, 1).unwrap()) == label;
            for &a in angles {
                for &tx in shifts {
                    for &ty in shifts {
                        if !ok {
                            return false;
                        }
                        let (s, c) = a.to_radians().sin_cos();
                        let m = Matrix3::new(c, -s, tx, s, c, ty, 0.0, 0.0, 1.0);
                        let warped = MatrixWarp::uniform(m)
                            .apply(&batch, Sampling::default())
                            .unwrap();
                        ok = argmax(&model.logits(&warped, 1).unwrap()) == label;
                    }
                }
            }
            ok
        })
        .collect()
}

/// Evenly spaced values from `-max` to `max`.
fn span(max: f64, count: usize) -> Vec<f64> {
    (0..count)
        .map(|i| max * (2 * i as i64 - (count as i64 - 1)) as f64 / (count - 1) as f64)
        .collect()
}

fn check_grid_against_loop(
    n: usize,
    params: serde_json::Value,
    angles: &[f64],
    shifts: &[f64],
) -> Counts {
    let model = digits_cnn();
    let data = digits(n);
    let r = run(&model, &data, "grid", params);
    assert_eq!(
        r.summary["grid_size"],
        (angles.len() * shifts.len() * shifts.len()) as f64
    );
    let x = data.load(&model.spec, 0, n).unwrap().x;
    let by_loop = grid_by_loop(&model, &x, &data, angles, shifts);
    for (i, ok) in by_loop.iter().enumerate() {
        let reported = r.images[i].outcome;
        assert_eq!(
            *ok,
            reported == Outcome::Robust,
            "image {i}: loop says correct={ok}, measure {reported:?}"
        );
    }
    let expected = by_loop.iter().filter(|&&ok| ok).count() as f64 / n as f64;
    assert_eq!(r.summary["accuracy"], expected);
    // The accuracy under pure rotations / pure translations at the largest budget, against
    // the same loop over that part of the grid.
    for (name, angles, shifts) in [
        ("rotation_accuracy@", angles, &[0.0][..]),
        ("shift_accuracy@", &[0.0][..], shifts),
    ] {
        let (_, &got) = r
            .summary
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(name)?.parse::<f64>().ok()?, v)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .expect("a budget key");
        let ok = grid_by_loop(&model, &x, &data, angles, shifts);
        let want = ok.iter().filter(|&&ok| ok).count() as f64 / n as f64;
        assert_eq!(got, want, "{name} at the largest budget");
    }
    assert!(r.summary["accuracy"] <= r.summary["clean_accuracy"]);
    // The reported smallest flip really flips.
    let shape = ImageShape::new(1, 1, 28, 28);
    for img in r.images.iter().filter(|i| i.outcome == Outcome::Fooled) {
        let idx = img.index;
        let (s, c) = img.values["angle_deg"].to_radians().sin_cos();
        let (tx, ty) = (img.values["tx"], img.values["ty"]);
        let m = Matrix3::new(c, -s, tx, s, c, ty, 0.0, 0.0, 1.0);
        let batch = Batch::new(&x[idx * 784..(idx + 1) * 784], shape, ImageLayout::Nchw).unwrap();
        let warped = MatrixWarp::uniform(m)
            .apply(&batch, Sampling::default())
            .unwrap();
        assert_ne!(argmax(&model.logits(&warped, 1).unwrap()), img.pred);
    }
    eprintln!(
        "grid accuracy {expected} on {n} digits (clean {})",
        r.summary["clean_accuracy"]
    );
    r.counts
}

#[test]
fn default_grid_accuracy_equals_a_plain_loop() {
    // ±30°, ±3 px, 31 × 5 × 5: this small CNN saw no augmentation and few
    // images survive the whole grid.
    check_grid_against_loop(
        20,
        serde_json::json!({"k": 0}),
        &span(30.0, 31),
        &span(3.0, 5),
    );
}

#[test]
fn small_grid_accuracy_equals_a_plain_loop() {
    // ±6°, ±1 px: most digits survive, some do not, so the comparison
    // tests both outcomes.
    let counts = check_grid_against_loop(
        60,
        serde_json::json!({"k": 0, "max_angle": 6.0, "angles": 7, "max_shift": 1.0, "shifts": 3}),
        &span(6.0, 7),
        &span(1.0, 3),
    );
    assert!(counts.robust > 0 && counts.fooled > 0, "{counts:?}");
}

#[test]
fn worst_of_k_lies_between_grid_and_clean_accuracy() {
    let model = digits_cnn();
    let data = digits(40);
    let r = run(
        &model,
        &data,
        "grid",
        serde_json::json!({"k": 10, "angles": 7, "shifts": 3}),
    );
    let s = &r.summary;
    assert!(s["worst_of_k_accuracy"] <= s["clean_accuracy"]);
    assert!(s["worst_of_k_accuracy"] <= s["random_accuracy"]);
    assert_eq!(s["grid_size"], 63.0);
}

/// Smallest `|angle|` (degrees) in 0.2° steps up to ±90° that flips the
/// prediction of image `x`, both directions, one model call per image.
fn scan_rotation(model: &Model, x: &[f32], k0: usize) -> Option<f64> {
    let shape = ImageShape::new(1, 1, 28, 28);
    let mut angles = Vec::new();
    for step in 1..=450 {
        let a = step as f64 * 0.2;
        angles.push(a);
        angles.push(-a);
    }
    let input: Vec<f32> = x.iter().copied().cycle().take(angles.len() * 784).collect();
    let batch = Batch::new(&input, shape.with_n(angles.len()), ImageLayout::Nchw).unwrap();
    let mats = angles
        .iter()
        .map(|a: &f64| {
            let (s, c) = a.to_radians().sin_cos();
            Matrix3::new(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
        })
        .collect();
    let warped = MatrixWarp::new(mats)
        .apply(&batch, Sampling::default())
        .unwrap();
    let logits = model.logits(&warped, angles.len()).unwrap();
    let k = model.classes;
    angles
        .iter()
        .zip(logits.chunks_exact(k))
        .find(|(_, row)| argmax(row) != k0)
        .map(|(a, _)| a.abs())
}

/// ManiFool's rotation, for each search in `searches`, against a 0.2° scan
/// (done once per image) on the first `n` digits: per search, (median ratio,
/// fraction of scan-flipped images ManiFool flips).
fn manifool_vs_scan(n: usize, searches: &[&str]) -> Vec<(f64, f64)> {
    let model = digits_cnn();
    let data = digits(n);
    let x = data.load(&model.spec, 0, n).unwrap().x;
    let mut scans: Vec<Option<Option<f64>>> = vec![None; n];
    let mut out = Vec::new();
    for search in searches {
        let r = run(
            &model,
            &data,
            "manifool",
            serde_json::json!({"group": "rotation", "search": search}),
        );
        let mut ratios = Vec::new();
        let (mut scan_flips, mut both) = (0, 0);
        for img in &r.images {
            if img.outcome == Outcome::Misclassified {
                continue;
            }
            let i = img.index;
            let scan = *scans[i]
                .get_or_insert_with(|| scan_rotation(&model, &x[i * 784..(i + 1) * 784], img.pred));
            let Some(scan) = scan else {
                continue;
            };
            scan_flips += 1;
            if img.outcome == Outcome::Fooled {
                let angle = img.values["angle_deg"].abs();
                if angle <= 90.0 {
                    both += 1;
                    ratios.push(angle / scan);
                }
            }
        }
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        eprintln!(
            "manifool ({search}) vs scan on {n} digits: {scan_flips} flipped by the scan, manifool found {both}, \
             median ratio {median:.4}, p90 ratio {:.4}, score median {:?}",
            ratios[ratios.len() * 9 / 10],
            r.summary.get("median_score")
        );
        out.push((median, both as f64 / scan_flips as f64));
    }
    out
}

/// Both searches on the first `n` digits against the scan: a median ratio of at most 1.10
/// and at least `found` of the scan's flips found.
fn assert_manifool_close_to_scan(n: usize, least_found: f64) {
    for (search, (median, found)) in ["joint", "per_class"]
        .into_iter()
        .zip(manifool_vs_scan(n, &["joint", "per_class"]))
    {
        assert!(median <= 1.10, "{search}: median ratio {median}");
        assert!(found >= least_found, "{search}: found {found}");
    }
}

/// Tolerances against the scan: a median within 10 % of the smallest flipping
/// angle, and at least 90 % of the scan's flips found (on 30 digits that leaves
/// room for two or three images whose search ends near its budget, which is
/// where rounding differences between machines show).
#[test]
fn manifool_rotation_is_close_to_the_smallest_flipping_angle() {
    assert_manifool_close_to_scan(30, 0.9);
}

#[test]
#[ignore = "slow in the dev profile; run with cargo test --release --test it -- --ignored geometric::"]
fn manifool_rotation_matches_the_scan_on_all_digits() {
    assert_manifool_close_to_scan(450, 0.95);
}

#[test]
fn stadv_fools_nearly_every_correct_digit_with_a_smooth_flow() {
    let model = digits_cnn();
    let data = digits(24);
    let r = run(&model, &data, "stadv", serde_json::json!({}));
    let s = &r.summary;
    eprintln!("stadv summary {s:?} counts {:?}", r.counts);
    // At least 90 %: on 24 digits, room for two searches that end at their
    // budget on another machine's rounding.
    assert!(s["success_rate"] >= 0.9, "success {}", s["success_rate"]);
    for img in r.images.iter().filter(|i| i.outcome == Outcome::Fooled) {
        let v = &img.values;
        assert!(v["flow_loss"].is_finite() && v["max_disp_px"] > 0.0);
        assert!(v["min_scale"] > 0.0 && v["min_scale"] <= 1.0, "{v:?}");
        assert!(v["min_flow_loss"] <= v["flow_loss"] * (1.0 + 1e-9), "{v:?}");
        assert_ne!(v["min_adv_pred"] as usize, img.pred, "{v:?}");
    }
    // L-BFGS ends on the boundary: scaled down by more than the grid step
    // (1/256), the reported flows no longer fool.
    assert!(s["median_min_scale"] >= 0.99, "{s:?}");
}

#[test]
fn invariance_curve_is_reported_beside_manifool() {
    let model = digits_cnn();
    let data = digits(10);
    let r = run(
        &model,
        &data,
        "invariance",
        serde_json::json!({"group": "rigid", "radii": [0.2, 1.0], "trials": 5}),
    );
    let s = &r.summary;
    eprintln!("invariance summary {s:?}");
    assert!(s["valid@0.2"] > 0.0);
    assert!(s.contains_key("median_manifool_score"));
    let (a, b) = (
        s["flip_prob@0.2"],
        s.get("flip_prob@1").copied().unwrap_or(1.0),
    );
    assert!((0.0..=1.0).contains(&a) && a <= b + 0.2, "{a} {b}");
}

#[test]
fn manifool_runs_on_every_group() {
    let model = digits_cnn();
    let data = digits(6);
    for group in [
        "translation",
        "rotation",
        "rigid",
        "similarity",
        "affine",
        "projective",
    ] {
        let r = run(
            &model,
            &data,
            "manifool",
            serde_json::json!({"group": group}),
        );
        eprintln!(
            "{group}: {:?} {:?}",
            r.counts,
            r.summary.get("median_score")
        );
        assert!(r.counts.fooled > 0, "{group}: nothing fooled");
        for img in r.images.iter().filter(|i| i.outcome == Outcome::Fooled) {
            assert!(img.values["score"] > 0.0);
        }
    }
}
