//! `georob corrupt` (the files it writes, their determinism, its errors) and the
//! `corruptions` measure.

use std::path::Path;

use georob::data::Dataset;
use serde_json::json;

use crate::common::{digits_cnn, georob, onnx_models, text, try_run_measure};

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

#[test]
fn writes_gray_pngs_in_the_corruption_set_layout_and_follows_the_seed() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    digits(&data);
    let out = |name: &str| d.path().join(name);
    let corrupt = |dir: &str, seed: &str| {
        let (code, err) = run(&[
            "corrupt",
            data.to_str().unwrap(),
            "--corruption",
            "fog",
            "--severity",
            "2",
            "--seed",
            seed,
            "--out",
            out(dir).to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
    };
    corrupt("a", "4");
    corrupt("b", "4");
    corrupt("c", "5");
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
    let (code, err) = run(&[
        "corrupt",
        data.to_str().unwrap(),
        "--corruption",
        "all",
        "--severity",
        "all",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
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
        assert_eq!(s[&format!("ce_{c}")], (e1 + e5) / 2.0);
    }
    let mce = (s["ce_contrast"] + s["ce_gaussian_noise"]) / 2.0;
    assert_eq!(s["mce"], mce);
    assert_eq!(s["relative_mce"], mce - s["clean_error"]);
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
