//! The command line end to end: the README's command, eval on the bundled
//! models, JSON output, and `inspect`.

use crate::common::{
    classifier, flatten_and_gemm, georob, node, repo, tensor, text, write_npy_i64,
};

#[test]
fn readme_command_prints_the_expected_photo_predictions() {
    let o = georob(&[
        "eval",
        "onnx_models/efficientnet_lite0/efficientnet_lite0.onnx",
        "onnx_models/efficientnet_lite0/photos",
        "--backend",
        "tract",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("onnx_models/expected.json")).unwrap())
            .unwrap();
    for photo in expected["photos"].as_array().unwrap() {
        let file = photo["file"]
            .as_str()
            .unwrap()
            .trim_start_matches("photos/");
        let line = out
            .lines()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("{file} missing from:\n{out}"));
        let label = format!(
            "{} {}",
            photo["label"],
            photo["class_name"].as_str().unwrap()
        );
        assert!(line.contains(&label), "{file}: expected {label} in {line}");
    }
    assert!(out.contains("top-1") && out.contains("100.00%"), "{out}");
    assert!(err.contains("tract"), "{err}");
}

#[test]
fn digits_cnn_reaches_the_listed_accuracy_on_png_and_npy_input() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("onnx_models/expected.json")).unwrap())
            .unwrap();
    let want = expected["digits_cnn_test_accuracy"].as_f64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut tops = vec![];
    for data in [
        vec!["onnx_models/digits/test"],
        vec![
            "onnx_models/digits/test_x.npy",
            "--labels",
            "onnx_models/digits/test_y.npy",
        ],
    ] {
        let json = dir.path().join("out.json");
        let mut args = vec!["eval", "onnx_models/digits/digits_cnn.onnx"];
        args.extend(data);
        args.extend(["--json", json.to_str().unwrap(), "--backend", "tract"]);
        let o = georob(&args);
        assert!(o.status.success(), "{}", text(&o).1);
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(r["model"]["backend"], "tract");
        assert_eq!(r["predictions"].as_array().unwrap().len(), 450);
        let p0 = &r["predictions"][0];
        for key in ["index", "name", "label", "pred", "top5", "confidence"] {
            assert!(!p0[key].is_null(), "prediction lacks {key}: {p0}");
        }
        tops.push(r["summary"]["top1"].as_f64().unwrap());
    }
    assert!(
        (tops[0] - want).abs() < 1e-9,
        "PNG top-1 {} vs listed {want}",
        tops[0]
    );
    assert_eq!(tops[0], tops[1], "PNG and .npy inputs must agree");
}

#[test]
fn torchvision_exports_with_dynamic_and_fixed_batch_give_the_same_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let mut preds = vec![];
    for model in ["mobilenet_v2_dyn", "mobilenet_v2_fixed"] {
        let json = dir.path().join(format!("{model}.json"));
        let o = georob(&[
            "eval",
            &format!("onnx_models/tiny/{model}.onnx"),
            "onnx_models/tiny/tiny_x.npy",
            "--labels",
            "onnx_models/tiny/tiny_y.npy",
            "--batch",
            "4",
            "--json",
            json.to_str().unwrap(),
            "--backend",
            "tract",
        ]);
        assert!(o.status.success(), "{}", text(&o).1);
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        preds.push(
            r["predictions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["pred"].as_u64().unwrap())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        preds[0],
        vec![4, 1, 5, 4, 4, 8],
        "predictions listed in onnx_models/README.md"
    );
    assert_eq!(preds[0], preds[1]);
}

#[test]
fn unlabelled_data_use_predictions_as_labels_and_say_so() {
    let o = georob(&[
        "eval",
        "onnx_models/digits/digits_cnn.onnx",
        "onnx_models/digits/test/3/0030.png",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("predictions serve as labels"), "{out}");
}

#[test]
fn inspect_describes_the_model_and_names_the_backend() {
    let o = georob(&[
        "inspect",
        "onnx_models/efficientnet_lite0/efficientnet_lite0.onnx",
        "--json",
        "--backend",
        "tract",
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["run"]["backend"], "tract");
    assert_eq!(j["run"]["classes"], 1000);
    assert!(j["opset"].as_i64().unwrap() >= 13);
    assert!(j["operators"]["Conv"].as_u64().unwrap() > 10);
    assert!(j["parameters"].as_u64().unwrap() > 4_000_000);
    assert!((j["run"]["input"]["mean"][0].as_f64().unwrap() - 0.498).abs() < 1e-6);
}

/// Weights stored as `Constant` nodes (as PaddlePaddle exports them) are counted as parameters:
/// a Gemm head on 2×2 gray images with its 4×3 weights and 3 biases held in Constant nodes
/// has 15.
#[test]
fn inspect_counts_weights_held_in_constant_nodes() {
    use prost::Message;
    let constant = |name: &str, t: tract_onnx::pb::TensorProto| {
        let mut n = node("Constant", name, &[], name);
        n.attribute.push(tract_onnx::pb::AttributeProto {
            name: "value".into(),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::Tensor as i32,
            t: Some(t),
            ..Default::default()
        });
        n
    };
    let (flatten, gemm) = flatten_and_gemm("flat");
    let model = classifier(
        "constants",
        vec![
            constant("W", tensor("", &[3, 4], &[0.1; 12])),
            constant("b", tensor("", &[3], &[0.0; 3])),
            flatten,
            gemm,
        ],
        vec![],
        &[None, Some(1), Some(2), Some(2)],
        &[None, Some(3)],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("constants.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    let o = georob(&[
        "inspect",
        path.to_str().unwrap(),
        "--json",
        "--backend",
        "tract",
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["parameters"], 15);
}

#[test]
fn label_count_and_range_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // `georob eval` on the digits with `labels` written to `file`: exit status 2, and stderr.
    let eval_labelled = |file: &str, labels: &[i64]| -> String {
        let path = dir.path().join(file);
        write_npy_i64(&path, labels);
        let o = georob(&[
            "eval",
            "onnx_models/digits/digits_cnn.onnx",
            "onnx_models/digits/test_x.npy",
            "--labels",
            path.to_str().unwrap(),
        ]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2));
        err
    };
    let err = eval_labelled("few.npy", &[1, 2, 3]);
    assert!(
        err.contains("few.npy") && err.contains("3 labels for 450 samples"),
        "{err}"
    );

    let err = eval_labelled("big.npy", &[12; 450]);
    assert!(
        err.contains("label 12") && err.contains("10 classes"),
        "{err}"
    );
}
