//! Helpers shared by the integration tests: paths of bundled files, running
//! the `georob` binary, reading .npy files, and finding ONNX Runtime.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Absolute path of a file in the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs the georob binary with `args` from the repository root.
pub fn georob(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_georob"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run georob")
}

/// stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A float32 .npy file as (shape, data).
pub fn npy_f32(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let f = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = f.shape().to_vec();
    (shape, f.into_vec::<f32>().unwrap())
}

/// Writes a float32 .npy file.
pub fn write_npy_f32(path: &Path, shape: &[u64], data: &[f32]) {
    use npyz::WriterBuilder;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(std::fs::File::create(path).unwrap())
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

/// Writes an int64 .npy file.
pub fn write_npy_i64(path: &Path, data: &[i64]) {
    use npyz::WriterBuilder;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[data.len() as u64])
        .writer(std::fs::File::create(path).unwrap())
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

/// The ONNX Runtime library, or None after printing why the caller skips.
pub fn ort_library(test: &str) -> Option<PathBuf> {
    if !cfg!(feature = "ort") {
        eprintln!("SKIPPED {test}: built without the `ort` feature (run with --all-features)");
        return None;
    }
    match georob::model::ort_lib::find(None) {
        Ok(lib) => Some(lib.path),
        Err(why) if std::env::var_os("GEOROB_REQUIRE_ORT").is_some() => {
            panic!("{test}: GEOROB_REQUIRE_ORT is set but {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// Writes a classifier `input (N,1,2,2) → OP → Flatten → logits (N,4)` built
/// from the ONNX protobuf types, for behaviours no bundled model shows.
pub fn write_unary_model(path: &Path, op: &str) {
    use prost::Message;
    use tract_onnx::pb::{
        tensor_shape_proto::{dimension::Value, Dimension},
        type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto,
        TypeProto, ValueInfoProto,
    };
    let dims = |d: &[Option<i64>]| TensorShapeProto {
        dim: d
            .iter()
            .map(|v| Dimension {
                value: Some(match v {
                    Some(n) => Value::DimValue(*n),
                    None => Value::DimParam("N".into()),
                }),
                ..Default::default()
            })
            .collect(),
    };
    let info = |name: &str, d: &[Option<i64>]| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(dims(d)),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let node = |op: &str, i: &str, o: &str| NodeProto {
        op_type: op.into(),
        name: format!("{op}_0"),
        input: vec![i.into()],
        output: vec![o.into()],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            name: "unary".into(),
            node: vec![node(op, "input", "y"), node("Flatten", "y", "logits")],
            input: vec![info("input", &[None, Some(1), Some(2), Some(2)])],
            output: vec![info("logits", &[None, Some(4)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(path, model.encode_to_vec()).unwrap();
}
