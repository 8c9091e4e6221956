//! Helpers shared by the integration tests: paths of bundled files, opening models and data
//! sets, running measures and the `georob` binary, reading and writing .npy files, comparing
//! gradients, building small ONNX models, and finding ONNX Runtime.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use georob::data::Dataset;
use georob::measure::{self, Context, MeasureResult};
use georob::model::{BackendChoice, BackendKind, Model, ModelOptions};
use georob::progress::Progress;
use georob::resources::Files;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use tract_onnx::prelude::*;

/// Absolute path of a file in the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Absolute path of a file under `onnx_models/`.
pub fn onnx_models(path: &str) -> PathBuf {
    repo("onnx_models").join(path)
}

/// Options that open a model on exactly `kind`, the rest default.
pub fn options_for(kind: BackendKind) -> ModelOptions {
    ModelOptions {
        backend: BackendChoice::Exactly(kind),
        ..Default::default()
    }
}

/// Options that open a model on tract, the rest default.
pub fn tract() -> ModelOptions {
    options_for(BackendKind::Tract)
}

/// Opens the model at `path` (relative to the repository) with default options.
pub fn open(path: &str) -> Model {
    Model::open(&repo(path), &ModelOptions::default()).unwrap()
}

/// The digits CNN on tract.
pub fn digits_cnn() -> Model {
    Model::open(&onnx_models("digits/digits_cnn.onnx"), &tract()).unwrap()
}

/// The first `limit` samples of the .npy data set `x` (relative to the repository) with the
/// labels in `y`.
pub fn dataset(x: &str, y: &str, limit: usize) -> Dataset {
    let mut d = Dataset::open(&repo(x), Some(&repo(y))).unwrap();
    d.items.truncate(limit);
    d
}

/// The first `n` digits test images (.npy, model space = [0,1]) with labels.
pub fn digits(n: usize) -> Dataset {
    dataset(
        "onnx_models/digits/test_x.npy",
        "onnx_models/digits/test_y.npy",
        n,
    )
}

/// What a measure's [`Context`] borrows besides the model and the data: a hidden progress
/// display and resources opened like the model.
pub struct Harness {
    progress: Progress,
    files: Files,
}

impl Harness {
    pub fn new(model: &Model) -> Self {
        Harness {
            progress: Progress::hidden(),
            files: Files {
                options: model.options().clone(),
            },
        }
    }

    /// A context for `model` on `data` with `seed`, default bounds and no output folder.
    pub fn context<'a>(&'a self, model: &'a Model, data: &'a Dataset, seed: u64) -> Context<'a> {
        Context {
            model,
            data,
            seed,
            bounds: None,
            progress: &self.progress,
            out_dir: None,
            resources: &self.files,
        }
    }
}

/// Runs the measure `name` with `params` on `model` and `data`.
pub fn try_run_measure(
    name: &str,
    params: &serde_json::Value,
    model: &Model,
    data: &Dataset,
    seed: u64,
) -> georob::Result<MeasureResult> {
    let harness = Harness::new(model);
    measure::build(name, params)?.run(&harness.context(model, data, seed))
}

/// A `georob` command run from the repository root: this build's binary, or the one
/// `GEOROB_TEST_BIN` names (to run the CLI tests against an older build, e.g. to show that a
/// regression test fails before its fix).
pub fn command() -> Command {
    let bin =
        std::env::var_os("GEOROB_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_georob").into());
    let mut c = Command::new(bin);
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// Caps the address space (RLIMIT_AS) of the process `cmd` starts at `bytes`: an allocation
/// past it fails (and aborts a Rust program) instead of growing.
#[cfg(unix)]
pub fn cap_memory(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let cap = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs the georob binary with `args` from the repository root.
pub fn georob(args: &[&str]) -> Output {
    command().args(args).output().expect("run georob")
}

/// stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A float32 .npy file as (shape, data), or why it cannot be read.
pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>), String> {
    let why = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let bytes = std::fs::read(path).map_err(|e| why(&e))?;
    let f = npyz::NpyFile::new(&bytes[..]).map_err(|e| why(&e))?;
    let shape = f.shape().iter().map(|&d| d as usize).collect();
    Ok((shape, f.into_vec::<f32>().map_err(|e| why(&e))?))
}

/// A float32 .npy file as (shape, data).
pub fn npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    read_npy_f32(path).unwrap_or_else(|e| panic!("{e}"))
}

/// The values of a float32 .npy file (relative to the repository), widened to f64.
pub fn npy_f64(path: &str) -> Vec<f64> {
    npy_f32(&repo(path)).1.into_iter().map(f64::from).collect()
}

/// The bundled linear digits model and the digits test images, in f64, for closed forms.
pub struct LinearDigits {
    /// The 450 test images, 784 values each.
    pub x: Vec<f64>,
    /// `W`, 10 × 784, row-major.
    pub w: Vec<f64>,
    /// `b`, 10 values.
    pub b: Vec<f64>,
}

impl LinearDigits {
    /// Values per image.
    pub const D: usize = 784;

    pub fn load() -> Self {
        LinearDigits {
            x: npy_f64("onnx_models/digits/test_x.npy"),
            w: npy_f64("onnx_models/digits/digits_linear_W.npy"),
            b: npy_f64("onnx_models/digits/digits_linear_b.npy"),
        }
    }

    /// Test image `i`.
    pub fn image(&self, i: usize) -> &[f64] {
        &self.x[i * Self::D..(i + 1) * Self::D]
    }

    /// The logits `Wx + b` at `x`.
    pub fn logits(&self, x: &[f64]) -> Vec<f64> {
        let d = Self::D;
        (0..10)
            .map(|k| self.b[k] + (0..d).map(|t| self.w[k * d + t] * x[t]).sum::<f64>())
            .collect()
    }
}

/// The classes by decreasing logit `f` (equal logits in class order).
pub fn ranked(f: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..f.len()).collect();
    order.sort_by(|&p, &q| f[q].total_cmp(&f[p]));
    order
}

fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[usize], data: &[T]) {
    use npyz::WriterBuilder;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::fs::File::create(path).unwrap())
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

/// Writes a float32 .npy file.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) {
    write_npy(path, shape, data);
}

/// Writes a uint8 .npy file (an array of 8-bit images).
pub fn write_npy_u8(path: &Path, shape: &[usize], data: &[u8]) {
    write_npy(path, shape, data);
}

/// Writes an int64 .npy file.
pub fn write_npy_i64(path: &Path, data: &[i64]) {
    write_npy(path, &[data.len()], data);
}

/// Cosine similarity and relative L2 error of `a` against `b`, in f64 (cosine 1 when both
/// are zero; the relative error is `‖a‖` when `b` is zero).
pub fn compare(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let wide = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| f64::from(x)).collect() };
    georob::grad::fd::compare(&wide(a), &wide(b))
}

/// Relative L2 error of `a` against `b`.
pub fn rel(a: &[f32], b: &[f32]) -> f64 {
    compare(a, b).1
}

/// The PyTorch autograd references of `onnx_models/grad/`: the models its `manifest.json` lists
/// and every `<name>.input.npy`, sorted; only those `GEOROB_GRAD_ONLY=name1,name2` names when
/// it is set.
pub fn grad_references() -> Vec<String> {
    let dir = onnx_models("grad");
    let mut out: Vec<String> = vec![];
    if let Ok(text) = std::fs::read_to_string(dir.join("manifest.json")) {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(&text) {
            out.extend(m.keys().cloned());
        }
    }
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let f = e.file_name().to_string_lossy().to_string();
            if let Some(n) = f.strip_suffix(".input.npy") {
                if !out.iter().any(|o| o == n) {
                    out.push(n.to_string());
                }
            }
        }
    }
    out.sort();
    if let Ok(only) = std::env::var("GEOROB_GRAD_ONLY") {
        let keep: Vec<&str> = only.split(',').collect();
        out.retain(|n| keep.contains(&n.as_str()));
    }
    out
}

/// The cotangents and reference gradients of one PyTorch reference for `M` cotangents.
pub struct GradReference {
    /// The cotangents' shape, `(N, M, K)`.
    pub cot_shape: Vec<usize>,
    pub cot: Vec<f32>,
    pub grad: Vec<f32>,
}

/// `<name>.cot{m}.npy` and `<name>.grad{m}.npy` of reference `name` in `dir`, when both can be
/// read.
pub fn grad_reference(dir: &Path, name: &str, m: usize) -> Option<GradReference> {
    let (cot_shape, cot) = read_npy_f32(&dir.join(format!("{name}.cot{m}.npy"))).ok()?;
    let (_, grad) = read_npy_f32(&dir.join(format!("{name}.grad{m}.npy"))).ok()?;
    Some(GradReference {
        cot_shape,
        cot,
        grad,
    })
}

/// Whether a gradient with cosine `cos` and relative L2 error `rel` against its PyTorch
/// reference passes: cosine ≥ 0.9999 and relative error ≤ 1e-3.
pub fn matches_reference(cos: f64, rel: f64) -> bool {
    cos >= 0.9999 && rel <= 1e-3
}

/// Prints each of `skipped` (`why` says why they were), then fails listing `failures`, if any.
pub fn assert_no_failures(failures: &[String], skipped: &[String], why: &str) {
    for s in skipped {
        eprintln!("skipped ({why}): {s}");
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A runnable tract plan of `model`, at the input shapes it declares.
pub fn plan(model: &ModelProto) -> TractResult<Arc<TypedRunnableModel>> {
    tract_onnx::onnx()
        .model_for_proto_model(model)?
        .into_optimized()?
        .into_runnable()
}

fn try_tensor(shape: &[usize], data: &[f32]) -> TractResult<TValue> {
    let a = tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), data.to_vec())?;
    Ok(a.into_tensor().into())
}

/// Runs `plan` on float `inputs` (shape, data): its float outputs, flattened.
pub fn run_plan(
    plan: &Arc<TypedRunnableModel>,
    inputs: &[(&[usize], &[f32])],
) -> TractResult<Vec<Vec<f32>>> {
    let tv = inputs
        .iter()
        .map(|(s, d)| try_tensor(s, d))
        .collect::<TractResult<TVec<TValue>>>()?;
    plan.run(tv)?
        .iter()
        .map(|t| Ok(t.to_plain_array_view::<f32>()?.iter().copied().collect()))
        .collect()
}

/// The ONNX Runtime library, or None after printing why the caller skips: straight to the
/// process's stderr, past the test harness's capture, so that it shows for passing tests too
/// and no one mistakes a skip for a pass.
pub fn ort_library(test: &str) -> Option<PathBuf> {
    use std::io::Write;
    let why = if !cfg!(feature = "ort") {
        "built without the `ort` feature".to_string()
    } else {
        match georob::model::ort_lib::find(None) {
            Ok(lib) => return Some(lib.path),
            Err(why) if std::env::var_os("GEOROB_REQUIRE_ORT").is_some() => {
                panic!("{test}: GEOROB_REQUIRE_ORT is set but {why}")
            }
            Err(why) => why.to_string(),
        }
    };
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    None
}

/// A float tensor's value info; `None` dimensions are the batch, `N`.
pub fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    float_value_info(
        name,
        dims.iter().map(|d| match d {
            Some(v) => dimension::Value::DimValue(*v),
            None => dimension::Value::DimParam("N".into()),
        }),
    )
}

/// A float tensor's value info with the given dimensions (fixed or named).
pub fn float_value_info(
    name: &str,
    dims: impl Iterator<Item = dimension::Value>,
) -> ValueInfoProto {
    let dim = dims
        .map(|d| Dimension {
            value: Some(d),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A node `op` named `name`, with one output.
pub fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

/// `Flatten(input, axis = 1) → flat` and `Gemm(features, W, b, transB = 1) → logits`: the two
/// ends of a test classifier whose middle turns `flat` into `features`.
pub fn flatten_and_gemm(features: &str) -> (NodeProto, NodeProto) {
    let one = |name: &str| int_attr(name, 1);
    let mut flatten = node("Flatten", "flatten", &["input"], "flat");
    flatten.attribute.push(one("axis"));
    let mut gemm = node("Gemm", "head", &[features, "W", "b"], "logits");
    gemm.attribute.push(one("transB"));
    (flatten, gemm)
}

/// A float initializer `name` of shape `dims` holding `data`.
pub fn tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: tract_onnx::pb::tensor_proto::DataType::Float as i32,
        raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An integer-list attribute.
pub fn ints_attr(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

/// A float attribute.
pub fn float_attr(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

/// An int64 initializer `name` of shape `[values.len()]`.
pub fn int64s(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: tract_onnx::pb::tensor_proto::DataType::Int64 as i32,
        raw_data: values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A classifier (opset 17) named `name`: `input` of `input_dims` → `nodes` → `logits` of
/// `logits_dims`.
pub fn classifier(
    name: &str,
    nodes: Vec<NodeProto>,
    initializer: Vec<TensorProto>,
    input_dims: &[Option<i64>],
    logits_dims: &[Option<i64>],
) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            name: name.into(),
            node: nodes,
            initializer,
            input: vec![value_info("input", input_dims)],
            output: vec![value_info("logits", logits_dims)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Writes a classifier `input (N,1,2,2) → OP → Flatten → logits (N,4)` built
/// from the ONNX protobuf types, for behaviours no bundled model shows.
pub fn write_unary_model(path: &Path, op: &str) {
    use prost::Message;
    let model = classifier(
        "unary",
        vec![
            node(op, &format!("{op}_0"), &["input"], "y"),
            node("Flatten", "Flatten_0", &["y"], "logits"),
        ],
        vec![],
        &[None, Some(1), Some(2), Some(2)],
        &[None, Some(4)],
    );
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

/// Deterministic pseudo-random numbers for the fuzz cases (splitmix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = georob::measure::splitmix(self.0);
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Fewer than `max` random bytes.
    pub fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }
}

/// A copy of `bytes` cut short at a random length.
pub fn truncated(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    bytes[..rng.below(bytes.len())].to_vec()
}

/// A copy of `bytes` with 1 to 8 bits flipped in its first `span` bytes.
pub fn bit_flipped(bytes: &[u8], span: usize, rng: &mut Rng) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for _ in 0..1 + rng.below(8) {
        let i = rng.below(span.min(b.len()));
        b[i] ^= 1 << rng.below(8);
    }
    b
}
