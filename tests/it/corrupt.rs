//! `georob corrupt` (the files it writes, their determinism, its errors) and the
//! `corruptions` measure.

use std::path::Path;

use georob::data::Dataset;
use serde_json::json;

use crate::common::{
    digits_cnn, georob, npy_f32, onnx_models, repo, text, try_run_measure, write_npy_i64,
    write_npy_u8,
};

/// A data set of two gray 28×28 digits in class folders `3` and `7`.
fn digits(dir: &Path) {
    for (class, file) in [("3", "a.png"), ("7", "b.png")] {
        let source = std::fs::read_dir(onnx_models("digits/test").join(class))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::create_dir_all(dir.join(class)).unwrap();
        std::fs::copy(source, dir.join(class).join(file)).unwrap();
    }
}

fn run(args: &[&str]) -> (i32, String) {
    let o = georob(args);
    let (_, stderr) = text(&o);
    (o.status.code().unwrap_or(-1), stderr)
}

/// `georob corrupt DATA --corruption C --severity S --seed SEED --out OUT`, which must succeed;
/// its standard error.
fn corrupt(data: &Path, corruption: &str, severity: &str, seed: &str, out: &Path) -> String {
    let (code, err) = run(&[
        "corrupt",
        data.to_str().unwrap(),
        "--corruption",
        corruption,
        "--severity",
        severity,
        "--seed",
        seed,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    err
}

#[test]
fn writes_gray_pngs_in_the_corruption_set_layout_and_follows_the_seed() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    digits(&data);
    let out = |name: &str| d.path().join(name);
    for (dir, seed) in [("a", "4"), ("b", "4"), ("c", "5")] {
        corrupt(&data, "fog", "2", seed, &out(dir));
    }
    let read = |dir: &str, f: &str| std::fs::read(out(dir).join("fog/2").join(f)).unwrap();
    for f in ["3/a.png", "7/b.png"] {
        let img = image::load_from_memory(&read("a", f)).unwrap();
        assert_eq!((img.width(), img.height()), (28, 28));
        assert_eq!(img.color(), image::ColorType::L8, "gray in, gray out");
        assert_eq!(read("a", f), read("b", f), "same seed, same image");
        assert_ne!(read("a", f), read("c", f), "fog is random");
    }
}

#[test]
fn all_corruptions_at_all_severities() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    digits(&data);
    std::fs::remove_dir_all(data.join("7")).unwrap();
    let out = d.path().join("out");
    let err = corrupt(&data, "all", "all", "0", &out);
    assert!(err.contains("95 images"), "{err}");
    for c in ["gaussian_noise", "frost", "jpeg_compression", "saturate"] {
        for s in 1..=5 {
            assert!(
                out.join(c).join(s.to_string()).join("3/a.png").is_file(),
                "{c} {s}"
            );
        }
    }
}

#[test]
fn lists_the_corruptions() {
    let o = georob(&["corrupt", "--list"]);
    let (stdout, _) = text(&o);
    assert!(o.status.success());
    for name in ["gaussian_noise", "elastic_transform", "spatter", "saturate"] {
        assert!(stdout.contains(name), "{stdout}");
    }
}

#[test]
fn bad_names_severities_and_data_are_named_errors() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    digits(&data);
    let out = d.path().join("out");
    let with = |corruption: &str, severity: &str, data: &str| {
        run(&[
            "corrupt",
            data,
            "--corruption",
            corruption,
            "--severity",
            severity,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let data = data.to_str().unwrap();
    let (code, err) = with("rain", "1", data);
    assert_eq!(code, 2);
    assert!(
        err.contains("--corruption") && err.contains("\"rain\"") && err.contains("motion_blur"),
        "{err}"
    );
    for bad in ["0", "6", "high"] {
        let (code, err) = with("fog", bad, data);
        assert_eq!(code, 2);
        assert!(
            err.contains("--severity") && err.contains("1, 2, 3, 4, 5"),
            "{err}"
        );
    }
    let npy = onnx_models("digits/test_x.npy");
    let (code, err) = with("fog", "1", npy.to_str().unwrap());
    assert_eq!(code, 2);
    assert!(
        err.contains("test_x.npy") && err.contains("image files"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written on errors");
}

#[test]
fn the_measure_reports_errors_per_corruption_and_severity_and_their_means() {
    let d = tempfile::tempdir().unwrap();
    digits(d.path());
    let data = Dataset::open(d.path(), None).unwrap();
    let model = digits_cnn();
    let params = json!({"corruptions": ["contrast", "gaussian_noise"], "severities": [1, 5]});
    let r = try_run_measure("corruptions", &params, &model, &data, 3).unwrap();
    let s = &r.summary;
    for c in ["contrast", "gaussian_noise"] {
        let e1 = s[&format!("error_{c}_1")];
        let e5 = s[&format!("error_{c}_5")];
        assert!(
            (0.0..=1.0).contains(&e1) && (0.0..=1.0).contains(&e5),
            "{s:?}"
        );
        assert_eq!(s[&format!("accuracy_{c}_1")], 1.0 - e1);
        assert_eq!(s[&format!("mean_error_{c}")], (e1 + e5) / 2.0);
    }
    let mean = (s["mean_error_contrast"] + s["mean_error_gaussian_noise"]) / 2.0;
    assert_eq!(s["mean_error"], mean);
    assert_eq!(s["mean_error_rise"], mean - s["clean_error"]);
    assert!(!s.contains_key("mce"), "mCE needs a baseline model: {s:?}");
    let row = &r.images[0];
    let wrong: f64 = [
        "contrast_1",
        "contrast_5",
        "gaussian_noise_1",
        "gaussian_noise_5",
    ]
    .iter()
    .map(|k| 1.0 - row.values.get(&format!("correct_{k}")).copied().unwrap())
    .sum();
    assert_eq!(row.values.get("corrupted_errors").copied(), Some(wrong));
    let again = try_run_measure("corruptions", &params, &model, &data, 3).unwrap();
    assert_eq!(again.summary, r.summary, "same seed, same result");
}

#[test]
fn the_measure_refuses_unknown_corruptions_and_tensors_that_are_not_pixels() {
    let model = digits_cnn();
    let d = tempfile::tempdir().unwrap();
    digits(d.path());
    let data = Dataset::open(d.path(), None).unwrap();
    let e = try_run_measure(
        "corruptions",
        &json!({"corruptions": ["rain"]}),
        &model,
        &data,
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("\"rain\"") && e.contains("fog"), "{e}");
    let e = try_run_measure("corruptions", &json!({"severities": [0]}), &model, &data, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("severity 0"), "{e}");
    // .npy tensors are pixels when the preprocessing is the identity (the digits CNN) and
    // are refused otherwise.
    let npy = crate::common::digits(2);
    let r = try_run_measure(
        "corruptions",
        &json!({"corruptions": ["fog"]}),
        &model,
        &npy,
        0,
    )
    .unwrap();
    assert_eq!(r.images.len(), 2);
    let options = georob::model::ModelOptions {
        spec: georob::spec::SpecOverrides {
            mean: Some(vec![0.5]),
            ..Default::default()
        },
        ..crate::common::tract()
    };
    let normalised =
        georob::model::Model::open(&onnx_models("digits/digits_cnn.onnx"), &options).unwrap();
    let e = try_run_measure("corruptions", &json!({}), &normalised, &npy, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("test_x.npy") && e.contains("identity"), "{e}");
}

/// An audit of the digits CNN and the linear model with the CNN as `baseline_model`: each
/// model's CE per corruption is the sum of its errors over the severities divided by the
/// CNN's, computed here from the report's own per-cell errors (and per-cell errors from the
/// per-image rows); the CNN against itself has mCE 1; gates on `corruptions.mce` decide the
/// exit code.
#[test]
fn an_audit_normalises_corruption_errors_by_the_baseline_model() {
    let d = tempfile::tempdir().unwrap();
    let corruptions = ["contrast", "gaussian_blur", "impulse_noise", "saturate"];
    let suite = |gate: &str| {
        let path = d.path().join("suite.toml");
        std::fs::write(
            &path,
            format!(
                r#"
data = {data:?}
labels = {labels:?}
limit = 40
baseline_model = "cnn"
thresholds = [{gate:?}]

[[models]]
name = "cnn"
path = {cnn:?}

[[models]]
name = "linear"
path = {linear:?}

[[measures]]
name = "corruptions"
params = {{ corruptions = {corruptions:?}, severities = [3, 5] }}
"#,
                data = repo("onnx_models/digits/test_x.npy"),
                labels = repo("onnx_models/digits/test_y.npy"),
                cnn = repo("onnx_models/digits/digits_cnn.onnx"),
                linear = repo("onnx_models/digits/digits_linear.onnx"),
            ),
        )
        .unwrap();
        path
    };
    let out = d.path().join("out");
    let audit = |gate: &str| {
        let s = suite(gate);
        let o = georob(&[
            "audit",
            s.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
            "--backend",
            "tract",
        ]);
        o.status.code()
    };
    let code = audit("corruptions.mce <= 1");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let summary = |model: usize| report["models"][model]["measures"][0]["summary"].clone();
    let (cnn, linear) = (summary(0), summary(1));
    let get = |s: &serde_json::Value, k: &str| s[k].as_f64().unwrap_or(f64::NAN);
    // Per-cell errors from the rows.
    let rows = report["models"][1]["measures"][0]["images"]
        .as_array()
        .unwrap();
    let wrong = rows
        .iter()
        .filter(|r| r["correct_contrast_5"].as_f64() == Some(0.0))
        .count();
    assert_eq!(get(&linear, "error_contrast_5"), wrong as f64 / 40.0);
    // Gaussian blur and saturate are among the 4 extras, which mCE leaves out.
    let extra = |c: &str| ["speckle_noise", "gaussian_blur", "spatter", "saturate"].contains(&c);
    let mut ces = vec![];
    let mut relative = vec![];
    for c in corruptions {
        let sum = |s: &serde_json::Value, rise: bool| {
            let clean = if rise { get(s, "clean_error") } else { 0.0 };
            [3, 5]
                .iter()
                .map(|v| get(s, &format!("error_{c}_{v}")) - clean)
                .sum::<f64>()
        };
        let ce = sum(&linear, false) / sum(&cnn, false);
        let rel = sum(&linear, true) / sum(&cnn, true);
        if sum(&cnn, false) > 0.0 {
            assert!((get(&linear, &format!("ce_{c}")) - ce).abs() < 1e-12, "{c}");
            assert_eq!(get(&cnn, &format!("ce_{c}")), 1.0, "{c}");
            if !extra(c) {
                ces.push(ce);
            }
        } else {
            assert!(linear.get(format!("ce_{c}")).is_none(), "{c}");
        }
        if sum(&cnn, true) > 0.0 {
            assert!(
                (get(&linear, &format!("relative_ce_{c}")) - rel).abs() < 1e-12,
                "{c}"
            );
            if !extra(c) {
                relative.push(rel);
            }
        }
    }
    assert!(ces.len() >= 2, "the CNN errs on few corruptions: {cnn}");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!((get(&linear, "mce") - mean(&ces)).abs() < 1e-12);
    assert_eq!(get(&linear, "mce_corruptions"), ces.len() as f64);
    assert!((get(&linear, "relative_mce") - mean(&relative)).abs() < 1e-12);
    assert_eq!(get(&cnn, "mce"), 1.0);
    // The gate holds for the CNN (mCE 1) and for the linear model as its mCE says; the exit
    // code follows.
    let gates = report["gates"].as_array().unwrap();
    assert_eq!(gates.len(), 2);
    assert_eq!(gates[0]["passed"], true);
    let linear_passes = get(&linear, "mce") <= 1.0;
    assert_eq!(gates[1]["passed"], linear_passes, "{linear}");
    assert_eq!(code, Some(if linear_passes { 0 } else { 1 }));
    // The HTML draws accuracy against severity per family, and the grid of the first image:
    // one row per corruption, the clean image then severities 3 and 5, tiles of 64 pixels.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for family in ["noise", "digital", "extra"] {
        assert!(
            html.contains(&format!(
                "corruptions · accuracy against severity: {family}"
            )),
            "{family}"
        );
    }
    let grid = image::open(out.join("artifacts/cnn/corruptions/corruptions.png"))
        .unwrap()
        .to_luma8();
    assert_eq!(grid.dimensions(), (3 * 68 - 4, 4 * 68 - 4));
    let tile = |row: u32, col: u32| {
        image::imageops::crop_imm(&grid, col * 68, row * 68, 64, 64)
            .to_image()
            .into_raw()
    };
    for row in 1..4 {
        assert_eq!(tile(row, 0), tile(0, 0), "the clean image heads every row");
    }
    let spread = |t: Vec<u8>| {
        let m = t.iter().map(|&v| f64::from(v)).sum::<f64>() / t.len() as f64;
        t.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / t.len() as f64
    };
    assert!(
        spread(tile(0, 2)) < 0.05 * spread(tile(0, 0)),
        "contrast at severity 5 (c = .05) flattens the digit"
    );
    assert!(html.contains("data:image/png;base64,"));
}

/// The first `n` digits test images as 8-bit pixels and their labels.
fn digit_bytes(n: usize) -> (Vec<u8>, Vec<i64>) {
    let (_, x) = npy_f32(&onnx_models("digits/test_x.npy"));
    let labels = crate::common::digits(n)
        .items
        .iter()
        .map(|i| i.label.unwrap() as i64)
        .collect();
    let pixels = x[..n * 784]
        .iter()
        .map(|v| (v * 255.0).round() as u8)
        .collect();
    (pixels, labels)
}

/// Data-set mode on a CIFAR-10-C-shaped folder made here: `contrast.npy` and `fog.npy` of
/// 5·N uint8 images (severity `s` in rows `(s−1)N..sN`, each a known darkening or a bright
/// square over the clean digit) with `labels.npy`, the clean digits as a uint8 `.npy`. Each
/// image's `correct_{c}_{s}` and each cell's error equal the digits CNN's predictions on the
/// same pixels, computed here with the model directly; a set out of the clean order is refused.
#[test]
fn the_measure_reads_a_cifar_10_c_shaped_set() {
    let n = 12;
    let d = tempfile::tempdir().unwrap();
    let (clean, labels) = digit_bytes(n);
    write_npy_u8(&d.path().join("clean.npy"), &[n, 28, 28], &clean);
    write_npy_i64(&d.path().join("clean_labels.npy"), &labels);
    let set = d.path().join("set");
    std::fs::create_dir(&set).unwrap();
    let darken = |s: usize, v: u8| (f64::from(v) * (1.0 - 0.19 * s as f64)) as u8;
    let square = |s: usize, i: usize, v: u8| {
        let (y, x) = (i / 28, i % 28);
        if y < 4 * s + 2 && x < 4 * s + 2 {
            255
        } else {
            v
        }
    };
    let corrupted = |c: &str, s: usize| -> Vec<u8> {
        clean
            .chunks(784)
            .flat_map(|img| {
                img.iter().enumerate().map(move |(i, &v)| match c {
                    "contrast" => darken(s, v),
                    _ => square(s, i, v),
                })
            })
            .collect()
    };
    for c in ["contrast", "fog"] {
        let all: Vec<u8> = (1..=5).flat_map(|s| corrupted(c, s)).collect();
        write_npy_u8(&set.join(format!("{c}.npy")), &[5 * n, 28, 28], &all);
    }
    let five: Vec<i64> = (0..5).flat_map(|_| labels.clone()).collect();
    write_npy_i64(&set.join("labels.npy"), &five);
    let data = Dataset::open(
        &d.path().join("clean.npy"),
        Some(&d.path().join("clean_labels.npy")),
    )
    .unwrap();
    let model = digits_cnn();
    let params = json!({"corruptions": ["contrast", "fog"], "severities": [1, 3, 5], "set": set});
    let r = try_run_measure("corruptions", &params, &model, &data, 0).unwrap();
    for c in ["contrast", "fog"] {
        for s in [1, 3, 5] {
            let x: Vec<f32> = corrupted(c, s)
                .iter()
                .map(|&v| f32::from(v) / 255.0)
                .collect();
            let logits = model.logits(&x, n).unwrap();
            let correct: Vec<f64> = logits
                .chunks(10)
                .zip(&labels)
                .map(|(row, &l)| {
                    let pred = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
                    f64::from(u8::from(pred as i64 == l))
                })
                .collect();
            let key = format!("correct_{c}_{s}");
            let got: Vec<f64> = r
                .images
                .iter()
                .map(|i| i.values.get(&key).copied().unwrap())
                .collect();
            assert_eq!(got, correct, "{key}");
            let error = correct.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
            assert_eq!(r.summary[&format!("error_{c}_{s}")], error, "{c} {s}");
        }
    }
    assert!(
        r.summary["error_contrast_5"] > r.summary["error_contrast_1"],
        "{:?}",
        r.summary
    );
    // Labels out of the clean order: refused, naming the item.
    let shifted: Vec<i64> = five.iter().map(|l| (l + 1) % 10).collect();
    write_npy_i64(&set.join("labels.npy"), &shifted);
    let e = try_run_measure("corruptions", &params, &model, &data, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("contrast.npy") && e.contains("same order"),
        "{e}"
    );
}

/// A set written by `georob corrupt` (the ImageNet-C layout, `CORRUPTION/SEVERITY/CLASS/NAME`)
/// read back in data-set mode gives the rows of corrupting in memory with the same seed: the
/// digits are at the model's size and the PNGs hold the same 8-bit values.
#[test]
fn a_set_written_by_georob_corrupt_reads_back_as_corrupting_in_memory() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    digits(&data);
    let out = d.path().join("set");
    for c in ["contrast", "gaussian_noise"] {
        corrupt(&data, c, "all", "7", &out);
    }
    let clean = Dataset::open(&data, None).unwrap();
    let model = digits_cnn();
    let grid = json!({"corruptions": ["contrast", "gaussian_noise"], "severities": [2, 5]});
    let memory = try_run_measure("corruptions", &grid, &model, &clean, 7).unwrap();
    let mut params = grid.clone();
    params["set"] = json!(out);
    let read = try_run_measure("corruptions", &params, &model, &clean, 7).unwrap();
    assert_eq!(read.summary, memory.summary);
    for (a, b) in read.images.iter().zip(&memory.images) {
        assert_eq!(a.values, b.values, "{}", a.name);
    }
    // Another seed corrupts the noise differently in memory; the set does not change.
    let other = try_run_measure("corruptions", &params, &model, &clean, 8).unwrap();
    assert_eq!(other.summary, read.summary);
    // A missing severity folder is a named error.
    std::fs::remove_dir_all(out.join("contrast/5")).unwrap();
    let e = try_run_measure("corruptions", &params, &model, &clean, 7)
        .unwrap_err()
        .to_string();
    assert!(e.contains("contrast/5"), "{e}");
}
