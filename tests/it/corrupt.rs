//! `georob corrupt`: the files it writes, their determinism, and its errors.

use std::path::Path;

use crate::common::{georob, onnx_models, text};

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
