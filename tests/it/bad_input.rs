//! Bad input never panics and never gives silently wrong numbers: each case
//! exits with status 2 and a one-line message naming the file and the
//! problem; and a fuzzer's worth of truncated and bit-flipped models, images
//! and .npy files gives a clean error or a valid result.

use std::path::Path;

use georob::data::Dataset;
use georob::model::{Model, ModelOptions};

use crate::common::{
    bit_flipped, georob, ort_library, repo, text, tract, truncated, write_npy_f32,
    write_unary_model, Rng,
};

/// Runs `georob eval` and checks exit status 2 and that stderr names `needle`s.
fn fails_with(args: &[&str], needles: &[&str]) {
    let o = georob(args);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "args {args:?}: {err}");
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "args {args:?}: {n:?} not in {err:?}");
    }
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected: {err}");
    // A cause is said once (the library's message and the error chain both carry it).
    let parts: Vec<&str> = errors[0].split(": ").collect();
    for (i, a) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(a),
            "{a:?} repeated in {:?}",
            errors[0]
        );
    }
}

const CNN: &str = "onnx_models/digits/digits_cnn.onnx";
const TEST: &str = "onnx_models/digits/test";

#[test]
fn broken_model_files_are_named_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = |name: &str| d.path().join(name).to_string_lossy().into_owned();
    fails_with(
        &["eval", &p("missing.onnx"), TEST],
        &["missing.onnx", "No such file"],
    );
    std::fs::write(p("empty.onnx"), b"").unwrap();
    fails_with(&["eval", &p("empty.onnx"), TEST], &["empty.onnx", "empty"]);
    let bytes = std::fs::read(repo(CNN)).unwrap();
    std::fs::write(p("trunc.onnx"), &bytes[..bytes.len() / 3]).unwrap();
    fails_with(
        &["eval", &p("trunc.onnx"), TEST],
        &["trunc.onnx", "not a valid ONNX model"],
    );
    let noise: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(p("noise.onnx"), noise).unwrap();
    fails_with(&["eval", &p("noise.onnx"), TEST], &["noise.onnx"]);
}

#[test]
fn valid_onnx_that_is_not_an_image_classifier_is_refused() {
    fails_with(
        &["eval", "onnx_models/tiny/two_inputs.onnx", TEST],
        &["two_inputs.onnx", "2 inputs"],
    );
    fails_with(
        &["eval", "onnx_models/tiny/int_input.onnx", TEST],
        &["int_input.onnx", "int64"],
    );
    fails_with(
        &["eval", "onnx_models/tiny/vector_input.onnx", TEST],
        &["vector_input.onnx", "rank 2"],
    );
}

#[test]
fn broken_data_are_named_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = |name: &str| d.path().join(name).to_string_lossy().into_owned();
    fails_with(&["eval", CNN, &p("nowhere")], &["nowhere", "No such file"]);
    std::fs::create_dir(p("empty")).unwrap();
    fails_with(&["eval", CNN, &p("empty")], &["empty", "no images"]);

    std::fs::create_dir_all(p("bad/1")).unwrap();
    let good = std::fs::read(repo("onnx_models/digits/test/3/0030.png")).unwrap();
    std::fs::write(p("bad/1/cut.png"), &good[..good.len() / 2]).unwrap();
    fails_with(&["eval", CNN, &p("bad")], &["cut.png", "decode"]);
    std::fs::write(p("bad/1/cut.png"), b"GIF89a not really").unwrap();
    fails_with(&["eval", CNN, &p("bad")], &["cut.png"]);

    write_npy_f32(Path::new(&p("wrong.npy")), &[2, 1, 20, 20], &[0.0; 800]);
    fails_with(
        &["eval", CNN, &p("wrong.npy")],
        &["wrong.npy", "[1, 20, 20]", "[1, 28, 28]"],
    );
    std::fs::write(p("junk.npy"), b"\x93NUMPY garbage").unwrap();
    fails_with(&["eval", CNN, &p("junk.npy")], &["junk.npy"]);
}

#[test]
fn non_finite_inputs_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let x = d.path().join("nan.npy");
    let mut data = vec![0.5f32; 3 * 784];
    data[784 + 10] = f32::NAN;
    write_npy_f32(&x, &[3, 1, 28, 28], &data);
    fails_with(
        &["eval", CNN, x.to_str().unwrap()],
        &["nan.npy", "#1", "NaN"],
    );
}

#[test]
fn nan_logits_are_reported_not_averaged() {
    // log(x) of a negative pixel is NaN: the model itself produces it.
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("log.onnx");
    write_unary_model(&model, "Log");
    let x = d.path().join("x.npy");
    let mut data = vec![0.5f32; 3 * 4];
    data[4 + 2] = -1.0;
    write_npy_f32(&x, &[3, 1, 2, 2], &data);
    for backend in ["tract", "ort"] {
        if backend == "ort" && ort_library("nan_logits (ort)").is_none() {
            continue;
        }
        fails_with(
            &[
                "eval",
                model.to_str().unwrap(),
                x.to_str().unwrap(),
                "--backend",
                backend,
            ],
            &["log.onnx", "NaN", "#1"],
        );
    }
}

/// 100 truncations and 100 bit-flipped copies of `bytes`; bit flips land in
/// the first `flip_span` bytes (the graph structure of a large model; its
/// weights would only change numbers).
fn mutants(bytes: &[u8], flip_span: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut out: Vec<Vec<u8>> = (0..100).map(|_| truncated(bytes, &mut rng)).collect();
    out.extend((0..100).map(|_| bit_flipped(bytes, flip_span, &mut rng)));
    out
}

/// Opening and running a mutant must give Ok or Err, never a panic.
fn survives(path: &Path) -> Result<(), String> {
    let options = ModelOptions {
        batch: Some(2),
        threads: Some(1),
        ..tract()
    };
    std::panic::catch_unwind(|| {
        if let Ok(m) = Model::open(path, &options) {
            let x = vec![0.25f32; 2 * m.spec.sample_len()];
            let _ = m.logits(&x, 2);
        }
    })
    .map_err(|_| format!("panic on {}", path.display()))
}

#[test]
fn truncated_and_bit_flipped_models_never_panic() {
    let d = tempfile::tempdir().unwrap();
    for (i, (model, span)) in [
        ("onnx_models/digits/digits_cnn.onnx", usize::MAX),
        ("onnx_models/digits/digits_linear.onnx", usize::MAX),
        (
            "onnx_models/efficientnet_lite0/efficientnet_lite0.onnx",
            64 * 1024,
        ),
    ]
    .iter()
    .enumerate()
    {
        let bytes = std::fs::read(repo(model)).unwrap();
        let stem = Path::new(model)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        // Keep the sidecar beside the mutants so the spec resolves as for the original.
        let sidecar = georob::spec::sidecar_path(&repo(model));
        for (j, m) in mutants(&bytes, *span, 1000 + i as u64)
            .into_iter()
            .enumerate()
        {
            let dir = d.path().join(format!("{stem}_{j}"));
            std::fs::create_dir(&dir).unwrap();
            let path = dir.join(format!("{stem}.onnx"));
            std::fs::write(&path, m).unwrap();
            if sidecar.exists() {
                std::fs::copy(&sidecar, georob::spec::sidecar_path(&path)).unwrap();
            }
            survives(&path).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn truncated_and_bit_flipped_images_and_npy_never_panic() {
    let d = tempfile::tempdir().unwrap();
    let spec = Model::open(&repo(CNN), &tract()).unwrap().spec;
    let cases = [
        ("onnx_models/digits/test/3/0030.png", "png"),
        (
            "onnx_models/efficientnet_lite0/photos/285/chelsea.jpg",
            "jpg",
        ),
        ("onnx_models/digits/test_y.npy", "npy"),
    ];
    for (i, (file, ext)) in cases.iter().enumerate() {
        let bytes = std::fs::read(repo(file)).unwrap();
        let bytes = &bytes[..bytes.len().min(20_000)];
        for (j, m) in mutants(bytes, usize::MAX, 77 + i as u64)
            .into_iter()
            .enumerate()
        {
            let path = d.path().join(format!("m{j}.{ext}"));
            std::fs::write(&path, m).unwrap();
            let r = std::panic::catch_unwind(|| {
                if let Ok(ds) = Dataset::open(&path, None) {
                    let _ = ds.load(&spec, 0, 1);
                }
            });
            assert!(r.is_ok(), "panic on a mutant of {file}");
        }
    }
}
