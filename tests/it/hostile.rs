//! Hostile inputs (issue #29): structurally valid files and flags built to make georob panic,
//! abort on allocation or hang. Each case must end with exit status 2 and an error that names
//! the file, flag or key at fault; hang cases run under a timeout and fail when it expires.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use tract_onnx::pb::tensor_shape_proto::dimension;
use tract_onnx::pb::{type_proto, ModelProto, NodeProto, TensorProto, ValueInfoProto};

use crate::common::{
    classifier, command, float_value_info, int64s, int_attr, ints_attr, node, onnx_models, tensor,
    text,
};

pub(crate) const CNN: &str = "onnx_models/digits/digits_cnn.onnx";
pub(crate) const TEST: &str = "onnx_models/digits/test";

/// How long a case may run before it counts as a hang.
const HANG: Duration = Duration::from_secs(20);

/// Runs georob with `args`, killing it after [`HANG`] (a hang fails the test).
fn run(args: &[&str]) -> Output {
    let mut child = command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run georob");
    let start = Instant::now();
    while child.try_wait().expect("wait for georob").is_none() {
        if start.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("georob {args:?} still ran after {HANG:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("georob output")
}

/// Runs georob with `args` and checks it refuses them: exit status 2, no panic, and stderr
/// naming each of `needles`.
fn refused(args: &[&str], needles: &[&str]) {
    let o = run(args);
    let (_, err) = text(&o);
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    assert_eq!(o.status.code(), Some(2), "args {args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "args {args:?}: {n:?} not in {err:?}");
    }
}

/// `export-grad` of the digits CNN with `--batch batch`, into `dir`, must be refused naming
/// each of `needles`.
fn export_grad_refused(dir: &Path, batch: &str, needles: &[&str]) {
    let out = dir.join("g.onnx");
    let out = out.to_string_lossy();
    refused(
        &["export-grad", CNN, "--out", &out, "--batch", batch],
        needles,
    );
}

/// A dimension of a declared input: fixed, or named (dynamic).
#[derive(Clone, Copy)]
pub(crate) enum D {
    Fixed(i64),
    Named(&'static str),
}

fn input_info(dims: &[D]) -> ValueInfoProto {
    float_value_info(
        "input",
        dims.iter().map(|d| match d {
            D::Fixed(v) => dimension::Value::DimValue(*v),
            D::Named(n) => dimension::Value::DimParam((*n).into()),
        }),
    )
}

/// `input (dims) → GlobalAveragePool → Flatten → Gemm → logits (N, 10)`: a classifier of one
/// channel at any size (ten classes, as the digits' labels need).
pub(crate) fn pooled(dims: &[D]) -> ModelProto {
    pooled_after(dims, vec![], vec![], "input")
}

/// `input (dims) → nodes → features → GlobalAveragePool → Flatten → Gemm → logits (N, 10)`,
/// `features` of one channel.
pub(crate) fn pooled_after(
    dims: &[D],
    nodes: Vec<NodeProto>,
    initializer: Vec<TensorProto>,
    features: &str,
) -> ModelProto {
    let mut flatten = node("Flatten", "flatten", &["pool"], "flat");
    flatten.attribute.push(int_attr("axis", 1));
    let mut gemm = node("Gemm", "head", &["flat", "W", "b"], "logits");
    gemm.attribute.push(int_attr("transB", 1));
    let mut m = classifier(
        "pooled",
        nodes
            .into_iter()
            .chain([
                node("GlobalAveragePool", "pool", &[features], "pool"),
                flatten,
                gemm,
            ])
            .collect(),
        [
            tensor("W", &[10, 1], &[1.0; 10]),
            tensor("b", &[10], &[0.0; 10]),
        ]
        .into_iter()
        .chain(initializer)
        .collect(),
        &[None, Some(1), Some(1), Some(1)],
        &[None, Some(10)],
    );
    m.graph.as_mut().unwrap().input = vec![input_info(dims)];
    m
}

/// A model of one gray channel at any size, batch dynamic.
pub(crate) fn dynamic_size() -> ModelProto {
    pooled(&[D::Named("N"), D::Fixed(1), D::Named("H"), D::Named("W")])
}

/// Writes `model` to `dir/name` and returns the path as text.
pub(crate) fn write(dir: &Path, name: &str, model: &ModelProto) -> String {
    let p = dir.join(name);
    std::fs::write(&p, model.encode_to_vec()).unwrap();
    p.to_string_lossy().into_owned()
}

/// A classifier whose last node `op` (producing `logits`) takes `inputs`.
pub(crate) fn ending_in(op: &str, inputs: &[&str]) -> ModelProto {
    let mut flatten = node("Flatten", "flatten", &["input"], "flat");
    flatten.attribute.push(int_attr("axis", 1));
    classifier(
        "ending",
        vec![flatten, node(op, "last", inputs, "logits")],
        vec![],
        &[None, Some(1), Some(2), Some(2)],
        &[None, Some(4)],
    )
}

#[test]
fn a_final_node_without_inputs_is_refused() {
    let d = tempfile::tempdir().unwrap();
    for op in ["Softmax", "Identity", "LogSoftmax"] {
        let m = write(d.path(), &format!("{op}.onnx"), &ending_in(op, &[]));
        for cmd in ["inspect", "eval"] {
            let mut args = vec![cmd, &m];
            if cmd == "eval" {
                args.push(TEST);
            }
            refused(&args, &[&format!("{op}.onnx"), "no input"]);
        }
    }
}

#[test]
fn a_node_consuming_its_own_output_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut m = ending_in("Identity", &["logits"]);
    m.graph
        .as_mut()
        .unwrap()
        .node
        .insert(1, node("Relu", "r", &["flat"], "unused"));
    let m = write(d.path(), "cycle.onnx", &m);
    refused(&["inspect", &m], &["cycle.onnx", "cycle"]);
    refused(
        &["eval", &m, TEST, "--threads", "1"],
        &["cycle.onnx", "cycle"],
    );
}

/// Writes a float32 `.npy` header claiming `shape`, followed by `data_bytes` zero bytes.
pub(crate) fn npy_claiming(path: &Path, shape: &[u64], data_bytes: usize) {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}",
        dims.join(", ")
    );
    npy_with_header(path, &dict, data_bytes);
}

/// Writes a version 1 `.npy` file of header `dict` (padded as NumPy pads it), followed by
/// `data_bytes` zero bytes.
pub(crate) fn npy_with_header(path: &Path, dict: &str, data_bytes: usize) {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_bytes, 0);
    std::fs::write(path, bytes).unwrap();
}

/// A chain of 5,000 `Relu` nodes is prepared well within the hang limit by every command that
/// compiles it: tract's optimiser walks the whole graph for every patch it applies, so before
/// its work was capped this took 54 s to `eval`, about 34 s to `inspect` and minutes to
/// `export-grad` (whose probe run asked tract to optimise a graph of 5,000 outputs). The chain
/// is put in front of the digits linear model, where it is the identity (pixels are in [0, 1]),
/// so the capped plan must give that model's per-class counts (its smallest gap between the
/// top two logits on these digits is 0.02, far above float rounding).
#[test]
fn a_chain_of_5000_nodes_does_not_hang() {
    let d = tempfile::tempdir().unwrap();
    let linear = "onnx_models/digits/digits_linear.onnx";
    let mut m =
        ModelProto::decode(&std::fs::read(onnx_models("digits/digits_linear.onnx")).unwrap()[..])
            .unwrap();
    let g = m.graph.as_mut().unwrap();
    let mut nodes: Vec<NodeProto> = (0..5000)
        .map(|k| {
            let from = if k == 0 {
                "input".to_string()
            } else {
                format!("r{}", k - 1)
            };
            node("Relu", &format!("relu{k}"), &[&from], &format!("r{k}"))
        })
        .collect();
    for n in &mut g.node {
        for i in n.input.iter_mut().filter(|i| *i == "input") {
            *i = "r4999".into();
        }
    }
    nodes.append(&mut g.node);
    g.node = nodes;
    let m = write(d.path(), "chain.onnx", &m);
    let grad = d.path().join("chain.grad.onnx");
    let accuracy = |model: &str| {
        let o = run(&["eval", model, TEST, "-q", "--backend", "tract"]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "eval {model}: {err}");
        // The per-class rows and the top-k lines.
        out.lines()
            .filter(|l| {
                let cell = l.trim_start_matches('│').trim_start();
                l.contains("top-") || cell.starts_with(|c: char| c.is_ascii_digit())
            })
            .map(|l| {
                l.split(['│', '┆'])
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect::<Vec<_>>()
    };
    let expected = accuracy(linear);
    assert_eq!(expected.len(), 12, "{expected:?}");
    assert_eq!(accuracy(&m), expected);
    for args in [
        vec!["inspect", &m],
        vec!["export-grad", &m, "--out", grad.to_str().unwrap()],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o).1);
    }
}

#[test]
fn element_counts_that_overflow_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let huge = 1i64 << 31;
    let m = write(
        d.path(),
        "wide.onnx",
        &pooled(&[D::Named("N"), D::Fixed(3), D::Fixed(huge), D::Fixed(huge)]),
    );
    refused(&["eval", &m, TEST], &["wide.onnx"]);
    for shape in [
        [1u64 << 62, 1, 1, 1],
        [1 << 32, 1 << 32, 1, 1],
        [1 << 31, 1 << 31, 1, 1],
    ] {
        let x = d.path().join("x.npy");
        npy_claiming(&x, &shape, 64);
        refused(&["eval", CNN, &x.to_string_lossy()], &["x.npy"]);
    }
    let dynamic = write(d.path(), "dyn.onnx", &dynamic_size());
    refused(
        &["eval", &dynamic, TEST, "--size", "3000000000x3000000000"],
        &["--size"],
    );
    export_grad_refused(d.path(), "18446744073709551615", &["--batch"]);
}

#[test]
fn a_sidecar_size_of_zero_or_too_large_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let m = write(d.path(), "dyn.onnx", &dynamic_size());
    for size in ["[0, 0]", "[3000000000, 3000000000]"] {
        std::fs::write(
            d.path().join("dyn.georob.toml"),
            format!("[input]\nsize = {size}\n"),
        )
        .unwrap();
        refused(&["eval", &m, TEST], &["dyn.georob.toml", "size"]);
    }
}

#[test]
fn bounds_that_are_not_a_finite_interval_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let model = onnx_models("digits/digits_cnn.onnx");
    let data = onnx_models("digits/test");
    for bounds in ["[1.0, 0.0]", "[nan, 1.0]", "[inf, -inf]", "[-inf, inf]"] {
        let suite = d.path().join("suite.toml");
        std::fs::write(
            &suite,
            format!(
                "data = {:?}\nlimit = 1\nbounds = {bounds}\n[[models]]\npath = {:?}\n[[measures]]\nname = \"deepfool\"\n",
                data, model
            ),
        )
        .unwrap();
        let out = d.path().join("out");
        refused(
            &[
                "audit",
                &suite.to_string_lossy(),
                "--out",
                &out.to_string_lossy(),
                "-q",
            ],
            &["suite.toml", "bounds"],
        );
    }
    for bounds in ["nan,1", "0,inf", "1,0"] {
        refused(
            &[
                "measure", "deepfool", CNN, TEST, "--limit", "1", "--bounds", bounds, "-q",
            ],
            &["--bounds"],
        );
    }
}

#[test]
fn measure_parameters_out_of_range_are_refused() {
    for (measure, param) in [
        ("noise", "directions=0"),
        ("uap", "holdout_fraction=-0.5"),
        ("uap", "holdout_fraction=1.5"),
        ("deepfool", "candidates=\"abc\""),
        ("deepfool", "max_iter=-1"),
    ] {
        let key = param.split('=').next().unwrap();
        refused(
            &[
                "measure", measure, CNN, TEST, "--limit", "2", "-p", param, "-q",
            ],
            &[measure, key],
        );
    }
}

/// Makes a FIFO at `path` (nothing ever writes to it: opening it to read blocks).
#[cfg(unix)]
pub(crate) fn fifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo")
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

#[cfg(unix)]
#[test]
fn fifos_are_refused_not_waited_on() {
    let d = tempfile::tempdir().unwrap();
    let p = |name: &str| d.path().join(name);
    // An image.
    fifo(&p("image.png"));
    refused(
        &["eval", CNN, &p("image.png").to_string_lossy()],
        &["image.png", "not a regular file"],
    );
    // The sidecar's class-name file.
    std::fs::copy(onnx_models("digits/digits_cnn.onnx"), p("m.onnx")).unwrap();
    let sidecar = std::fs::read_to_string(onnx_models("digits/digits_cnn.georob.toml")).unwrap();
    std::fs::write(
        p("m.georob.toml"),
        format!("{sidecar}classes = \"names.txt\"\n"),
    )
    .unwrap();
    fifo(&p("names.txt"));
    refused(
        &["eval", &p("m.onnx").to_string_lossy(), TEST],
        &["names.txt", "not a regular file"],
    );
    // A shard's journal and artifacts.
    std::fs::create_dir_all(p("shard/artifacts/m/deepfool")).unwrap();
    fifo(&p("shard/journal.jsonl"));
    refused(
        &[
            "merge",
            &p("shard").to_string_lossy(),
            "--out",
            &p("merged").to_string_lossy(),
        ],
        &["journal.jsonl", "not a regular file"],
    );
    // The model itself.
    fifo(&p("model.onnx"));
    refused(
        &["inspect", &p("model.onnx").to_string_lossy()],
        &["model.onnx", "not a regular file"],
    );
}

#[test]
fn thread_counts_beyond_reason_are_refused() {
    for n in ["100000", "18446744073709551615"] {
        refused(&["eval", CNN, TEST, "--threads", n], &["--threads"]);
    }
}

#[test]
fn inputs_too_large_for_memory_are_refused_before_allocating() {
    let d = tempfile::tempdir().unwrap();
    // A fixed input of 1e5 × 1e5 pixels (40 GB a sample).
    let big = write(
        d.path(),
        "big.onnx",
        &pooled(&[
            D::Named("N"),
            D::Fixed(1),
            D::Fixed(100_000),
            D::Fixed(100_000),
        ]),
    );
    refused(&["eval", &big, TEST], &["big.onnx", "--max-memory"]);
    // A fixed batch of 2^40 small samples.
    let batch = write(
        d.path(),
        "batch.onnx",
        &pooled(&[D::Fixed(1 << 40), D::Fixed(1), D::Fixed(28), D::Fixed(28)]),
    );
    refused(&["eval", &batch, TEST], &["batch.onnx", "--max-memory"]);
    // --size on a dynamic model.
    let dynamic = write(d.path(), "dyn.onnx", &dynamic_size());
    refused(
        &["eval", &dynamic, TEST, "--size", "100000x100000"],
        &["--size", "--max-memory"],
    );
    // export-grad --batch 1e9.
    export_grad_refused(d.path(), "1000000000", &["--batch", "--max-memory"]);
    // A limit given explicitly applies to an ordinary model too.
    refused(
        &["eval", CNN, TEST, "--batch", "64", "--max-memory", "100K"],
        &["--max-memory"],
    );
    refused(
        &["eval", CNN, TEST, "--max-memory", "lots"],
        &["--max-memory"],
    );
    let o = run(&["eval", CNN, TEST, "--max-memory", "1G", "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
}

#[test]
fn intermediate_tensors_too_large_for_memory_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let gray = [D::Named("N"), D::Fixed(1), D::Fixed(28), D::Fixed(28)];
    // A 1×1 convolution padded by 1e5 on every side: 160 GB of output from a 28×28 image.
    let mut conv = node("Conv", "conv", &["input", "K"], "wide");
    conv.attribute.push(ints_attr("pads", &[100_000; 4]));
    let padded = pooled_after(
        &gray,
        vec![conv],
        vec![tensor("K", &[1, 1, 1, 1], &[1.0])],
        "wide",
    );
    let m = write(d.path(), "pads.onnx", &padded);
    refused(
        &["eval", &m, TEST, "--backend", "tract"],
        &["pads.onnx", "--max-memory"],
    );
}

/// Writes `model` to `dir/name`: `eval` on tract must refuse it naming the file and each of
/// `needles`.
fn tract_refuses(dir: &Path, name: &str, model: &ModelProto, needles: &[&str]) {
    let m = write(dir, name, model);
    let mut all = vec![name];
    all.extend_from_slice(needles);
    refused(&["eval", &m, TEST, "--backend", "tract"], &all);
}

/// The digits-shaped classifier whose input is shifted by the sum of
/// `Range(start, limit, delta)`, the three constant scalars.
fn ranged(start: f32, limit: f32, delta: f32) -> ModelProto {
    let gray = [D::Named("N"), D::Fixed(1), D::Fixed(28), D::Fixed(28)];
    let nodes = vec![
        node("Range", "range", &["start", "limit", "delta"], "ramp"),
        node("ReduceSum", "sum", &["ramp"], "sum"),
        node("Add", "add", &["input", "sum"], "shifted"),
    ];
    let scalars = vec![
        tensor("start", &[], &[start]),
        tensor("limit", &[], &[limit]),
        tensor("delta", &[], &[delta]),
    ];
    pooled_after(&gray, nodes, scalars, "shifted")
}

#[test]
fn tensors_generated_or_stored_beyond_memory_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let gray = [D::Named("N"), D::Fixed(1), D::Fixed(28), D::Fixed(28)];
    // ConstantOfShape of 2^31 and 2^40 values, summed into the image.
    for (name, n) in [("cos31.onnx", 1i64 << 31), ("cos40.onnx", 1 << 40)] {
        let nodes = vec![
            node("ConstantOfShape", "zeros", &["S"], "zeros"),
            node("ReduceSum", "sum", &["zeros"], "sum"),
            node("Add", "add", &["input", "sum"], "shifted"),
        ];
        let m = pooled_after(&gray, nodes, vec![int64s("S", &[n])], "shifted");
        let m = write(d.path(), name, &m);
        refused(&["eval", &m, TEST, "--backend", "tract"], &[name]);
    }
    // Range from 0 to 1e12 by 1, and from 0 to 1 by 0.
    for (name, delta, limit) in [("range12.onnx", 1.0, 1e12), ("range0.onnx", 0.0, 1.0)] {
        tract_refuses(d.path(), name, &ranged(0.0, limit, delta), &["\"range\""]);
    }
    // Initializers whose dimensions promise more than they hold.
    for (name, dims) in [
        ("overflow.onnx", vec![1i64 << 40, 1 << 40]),
        ("short.onnx", vec![1 << 20, 1 << 20]),
        ("negative.onnx", vec![-1, 4]),
    ] {
        let mut k = tensor("K", &[1, 1, 1, 1], &[1.0]);
        k.dims = dims;
        let nodes = vec![node("Mul", "scale", &["input", "K"], "scaled")];
        let m = pooled_after(&gray, nodes, vec![k], "scaled");
        let m = write(d.path(), name, &m);
        for cmd in ["inspect", "eval"] {
            let mut args = vec![cmd, &m];
            if cmd == "eval" {
                args.push(TEST);
            }
            refused(&args, &[name, "initializer \"K\""]);
        }
    }
}

/// A suite of the digits CNN on its first two test images (unless `extra` sets the limit),
/// with `extra` TOML lines at the top and `measures` (TOML tables) at the end.
fn digits_suite(dir: &Path, extra: &str, measures: &str) -> String {
    let suite = dir.join("suite.toml");
    std::fs::write(
        &suite,
        format!(
            "{extra}\ndata = {:?}\n{}[[models]]\npath = {:?}\n{measures}",
            onnx_models("digits/test"),
            if extra.contains("limit") {
                ""
            } else {
                "limit = 2\n"
            },
            onnx_models("digits/digits_cnn.onnx"),
        ),
    )
    .unwrap();
    suite.to_string_lossy().into_owned()
}

#[test]
fn names_that_would_leave_the_output_folder_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out").to_string_lossy().into_owned();
    let cases = [
        (
            "[[measures]]\nname = \"accuracy\"\nid = \"../../escape\"\n",
            "measure id",
        ),
        (
            "[[measures]]\nname = \"accuracy\"\nid = \"/tmp\"\n",
            "measure id",
        ),
        (
            "[[measures]]\nname = \"accuracy\"\nid = \"..\"\n",
            "measure id",
        ),
    ];
    for (measures, key) in cases {
        let suite = digits_suite(d.path(), "", measures);
        refused(
            &["audit", &suite, "--out", &out, "-q"],
            &["suite.toml", key],
        );
    }
    let suite = d.path().join("named.toml");
    std::fs::write(
        &suite,
        format!(
            "data = {:?}\n[[models]]\nname = \"../../escape\"\npath = {:?}\n",
            onnx_models("digits/test"),
            onnx_models("digits/digits_cnn.onnx"),
        ),
    )
    .unwrap();
    refused(
        &["audit", &suite.to_string_lossy(), "--out", &out, "-q"],
        &["named.toml", "model name"],
    );
    assert!(!d.path().parent().unwrap().join("escape").exists());
}

/// Audits the digits CNN with the measure `measure` (the suite in `dir`) into `dir/out`.
fn audited(dir: &Path, measure: &str, out: &str) -> std::path::PathBuf {
    let suite = digits_suite(dir, "", &format!("[[measures]]\nname = {measure:?}\n"));
    let out = dir.join(out);
    let o = run(&["audit", &suite, "--out", &out.to_string_lossy(), "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    out
}

#[cfg(unix)]
#[test]
fn merge_and_reports_stay_inside_their_folders() {
    use base64::Engine;
    let d = tempfile::tempdir().unwrap();
    let p = |name: &str| d.path().join(name);
    let s = |path: &Path| path.to_string_lossy().into_owned();
    let secret = b"\x89PNG not for the report";
    std::fs::write(p("secret.png"), secret).unwrap();
    audited(d.path(), "deepfool", "s1");

    // Merging a shard into itself would truncate what it reads.
    let journal = std::fs::read_to_string(p("s1/journal.jsonl")).unwrap();
    refused(
        &["merge", &s(&p("s1")), "--out", &s(&p("s1"))],
        &["--out", "s1"],
    );
    assert_eq!(
        std::fs::read_to_string(p("s1/journal.jsonl")).unwrap(),
        journal
    );

    // Artifact paths edited in the journal to point outside the shard are not embedded.
    assert!(
        journal.contains(".png\""),
        "the audit saved no picture: {journal}"
    );
    let escaped: String = journal
        .split('"')
        .map(
            |part| match part.ends_with(".png") && part.starts_with("artifacts/") {
                true => "../secret.png",
                false => part,
            },
        )
        .collect::<Vec<_>>()
        .join("\"");
    std::fs::write(p("s1/journal.jsonl"), escaped).unwrap();
    let o = run(&["merge", &s(&p("s1")), "--out", &s(&p("m1"))]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let html = std::fs::read_to_string(p("m1/report.html")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    assert!(
        !html.contains(&b64),
        "report.html embeds a file outside its folder"
    );

    // A symbolic link among the artifacts is not copied.
    std::os::unix::fs::symlink(p("secret.png"), p("s1/artifacts/link.png")).unwrap();
    refused(
        &["merge", &s(&p("s1")), "--out", &s(&p("m2"))],
        &["link.png", "symbolic link"],
    );

    // A link planted where a report goes is not written through.
    std::fs::write(p("target.txt"), "keep").unwrap();
    std::fs::remove_file(p("s1/artifacts/link.png")).unwrap();
    std::fs::remove_file(p("m1/report.json")).unwrap();
    std::os::unix::fs::symlink(p("target.txt"), p("m1/report.json")).unwrap();
    refused(
        &["merge", &s(&p("s1")), "--out", &s(&p("m1"))],
        &["report.json", "symbolic link"],
    );
    assert_eq!(std::fs::read_to_string(p("target.txt")).unwrap(), "keep");
}

/// Copies the digits CNN to `dir/m.onnx`; for each `(line, key)`, `eval` with the sidecar
/// `[input] line` beside it must be refused naming the sidecar and `key`. Returns the model.
fn sidecars_refused(dir: &Path, cases: &[(&str, &str)]) -> String {
    let m = dir.join("m.onnx");
    std::fs::copy(onnx_models("digits/digits_cnn.onnx"), &m).unwrap();
    let m = m.to_string_lossy().into_owned();
    for (line, key) in cases {
        std::fs::write(dir.join("m.georob.toml"), format!("[input]\n{line}\n")).unwrap();
        refused(&["eval", &m, TEST], &["m.georob.toml", key]);
    }
    m
}

/// `uap` parameters that keep a run short.
pub(crate) const QUICK_UAP: [&str; 6] = [
    "-p",
    "max_passes=1",
    "-p",
    "noise_trials=1",
    "-p",
    "curvature_steps=0",
];

#[test]
fn settings_that_were_silently_accepted_are_refused() {
    let d = tempfile::tempdir().unwrap();
    // Sidecar values that are not numbers a model can take, or one value too many.
    sidecars_refused(
        d.path(),
        &[
            ("size = [28, 28, 1]", "size"),
            ("size = [28, 28]\nscale = nan", "scale"),
            ("size = [28, 28]\nscale = 1e39", "scale"),
            ("size = [28, 28]\nmean = [inf]", "mean"),
        ],
    );
    for (flag, value) in [("--scale", "NaN"), ("--mean", "0,inf"), ("--std", "nan")] {
        refused(&["eval", CNN, TEST, flag, value], &[flag]);
    }
    // Suites: a third bound, no measures, no images.
    let out = d.path().join("out").to_string_lossy().into_owned();
    let accuracy = "[[measures]]\nname = \"accuracy\"\n";
    for (extra, measures, key) in [
        ("bounds = [0.0, 1.0, 2.0]", accuracy, "bounds"),
        ("measures = []", "", "measures"),
        ("limit = 0", accuracy, "limit = 0"),
    ] {
        let suite = digits_suite(d.path(), extra, measures);
        refused(
            &["audit", &suite, "--out", &out, "-q"],
            &["suite.toml", key],
        );
    }
    let suite = digits_suite(d.path(), "", accuracy);
    refused(
        &["audit", &suite, "--out", &out, "--limit", "0", "-q"],
        &["--limit"],
    );
    refused(
        &["measure", "deepfool", CNN, TEST, "--limit", "0", "-q"],
        &["--limit"],
    );
    refused(
        &["measure", "deepfool", CNN, TEST, "-p", "candidates=0", "-q"],
        &["deepfool", "candidates"],
    );
}

#[test]
fn images_cut_short_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let jpeg = std::fs::read(onnx_models("efficientnet_lite0/photos/285/chelsea.jpg")).unwrap();
    let png = std::fs::read(onnx_models("digits/test/3/0030.png")).unwrap();
    // Cut anywhere past the headers, a JPEG still decodes (grey blocks); a PNG missing its
    // last byte too.
    for (name, bytes) in [
        ("cut.jpg", &jpeg[..jpeg.len() * 2 / 3]),
        ("cut.png", &png[..png.len() - 1]),
    ] {
        let p = d.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        refused(&["eval", CNN, &p.to_string_lossy()], &[name, "truncated"]);
    }
}

#[test]
fn outputs_that_are_not_class_scores_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let gray = [D::Named("N"), D::Fixed(1), D::Fixed(28), D::Fixed(28)];
    // The index of the top class (ArgMax, int64) instead of the scores.
    let mut argmax = pooled_after(&gray, vec![], vec![], "input");
    let g = argmax.graph.as_mut().unwrap();
    let mut top = node("ArgMax", "top", &["logits"], "top");
    top.attribute.push(int_attr("axis", 1));
    g.node.push(top);
    g.output[0].name = "top".into();
    let declared_float = write(d.path(), "argmax_float.onnx", &argmax);
    if let Some(type_proto::Value::TensorType(t)) = argmax.graph.as_mut().unwrap().output[0]
        .r#type
        .as_mut()
        .and_then(|t| t.value.as_mut())
    {
        t.elem_type = 7;
    }
    let declared_int = write(d.path(), "argmax_int.onnx", &argmax);
    refused(
        &["eval", &declared_int, TEST],
        &["argmax_int.onnx", "int64"],
    );
    // Declared float, it gives one value a sample: one class is no classifier (tract runs it;
    // ONNX Runtime refuses the declared type itself).
    refused(
        &["eval", &declared_float, TEST, "--backend", "tract"],
        &["argmax_float.onnx", "at least 2 classes"],
    );
}

#[test]
fn models_onnx_runtime_rejects_are_refused_on_tract_too() {
    use tract_onnx::pb::OperatorSetIdProto;
    let d = tempfile::tempdir().unwrap();
    let gray = [D::Named("N"), D::Fixed(1), D::Fixed(28), D::Fixed(28)];
    let plain = || pooled_after(&gray, vec![], vec![], "input");
    let mut cases: Vec<(&str, ModelProto, &str)> = vec![];
    for (name, ir) in [("ir0.onnx", 0), ("ir_negative.onnx", -1)] {
        let mut m = plain();
        m.ir_version = ir;
        cases.push((name, m, "ir_version"));
    }
    for (name, opset) in [("opset1.onnx", 1), ("opset6.onnx", 6)] {
        let mut m = plain();
        m.opset_import[0].version = opset;
        cases.push((name, m, "opset"));
    }
    let mut m = plain();
    m.opset_import.clear();
    cases.push(("no_opset.onnx", m, "opset_import"));
    let mut m = plain();
    m.opset_import.push(OperatorSetIdProto {
        domain: "ai.onnx".into(),
        version: 13,
    });
    cases.push(("two_opsets.onnx", m, "opset_import"));
    let mut m = plain();
    m.graph.as_mut().unwrap().node[1]
        .attribute
        .push(int_attr("axis", 1));
    cases.push(("two_axes.onnx", m, "\"axis\" twice"));
    let mut custom = node("Relu", "custom", &["input"], "r");
    custom.domain = "com.example".into();
    cases.push((
        "custom.onnx",
        pooled_after(&gray, vec![custom], vec![], "r"),
        "com.example",
    ));
    let mut conv = node("Conv", "conv", &["input", "K"], "c");
    conv.attribute.push(ints_attr("dilations", &[0, 0]));
    let k = tensor("K", &[1, 1, 3, 3], &[1.0; 9]);
    cases.push((
        "dilations.onnx",
        pooled_after(&gray, vec![conv], vec![k], "c"),
        "dilations",
    ));
    for (name, m, why) in cases {
        let m = write(d.path(), name, &m);
        refused(&["eval", &m, TEST, "--backend", "tract"], &[name, why]);
    }
}

#[test]
fn transfer_models_do_not_take_the_model_and_data() {
    // `--transfer` took every value after it: MODEL and DATA too, then "MODEL is required".
    let mut args = vec![
        "measure",
        "uap",
        "--transfer",
        "onnx_models/digits/digits_linear.onnx",
        CNN,
        TEST,
        "--limit",
        "25",
        "-q",
    ];
    args.extend(QUICK_UAP);
    let o = run(&args);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.contains("transfer_fooling_rate_digits_linear"), "{out}");
}

// Found by the fuzz set (`fuzz.rs`), one test per class.

#[cfg(unix)]
#[test]
fn an_address_space_limit_lowers_the_default_memory_limit() {
    // Under `ulimit -v 2G`, a 1.6 GB input was allocated (the default limit was half of the
    // machine's memory) and the process aborted; now the default is half of the cap.
    let d = tempfile::tempdir().unwrap();
    let m = write(d.path(), "dyn.onnx", &dynamic_size());
    let mut cmd = command();
    cmd.args(["eval", &m, TEST, "--size", "20000x20000", "-q"]);
    crate::common::cap_memory(&mut cmd, 2 << 30);
    let o = cmd.output().expect("run georob");
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--max-memory") && err.contains("--size"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn fifos_named_as_outputs_are_refused_not_waited_on() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out.json");
    fifo(&out);
    refused(
        &["eval", CNN, TEST, "-q", "--json", &out.to_string_lossy()],
        &["out.json", "FIFO"],
    );
}

#[test]
fn pooling_windows_beyond_memory_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let gray = [D::Named("N"), D::Fixed(1), D::Fixed(28), D::Fixed(28)];
    for op in ["MaxPool", "AveragePool"] {
        let mut pool = node(op, "pool1", &["input"], "p");
        pool.attribute
            .push(ints_attr("kernel_shape", &[1 << 28, 37]));
        let m = pooled_after(&gray, vec![pool], vec![], "p");
        tract_refuses(d.path(), "pool.onnx", &m, &["kernel_shape", "--max-memory"]);
    }
}

#[test]
fn tensors_written_twice_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let gray = [D::Named("N"), D::Fixed(1), D::Fixed(28), D::Fixed(28)];
    let nodes = vec![
        node("Relu", "first", &["input"], "r"),
        node("Neg", "second", &["input"], "r"),
    ];
    let m = pooled_after(&gray, nodes, vec![], "r");
    tract_refuses(d.path(), "twice.onnx", &m, &["both write \"r\""]);
    let nodes = vec![node("Relu", "over", &["input"], "input")];
    let m = write(
        d.path(),
        "input.onnx",
        &pooled_after(&gray, nodes, vec![], "input"),
    );
    refused(&["inspect", &m], &["input.onnx", "graph input"]);
}

#[test]
fn gate_limits_that_are_not_numbers_are_refused_naming_the_flag() {
    let d = tempfile::tempdir().unwrap();
    let report = audited(d.path(), "accuracy", "s1").join("report.json");
    let report = report.to_string_lossy();
    for (flag, value) in [
        ("--min", "accuracy.accuracy=nan"),
        ("--max", "accuracy.accuracy=1e400"),
        ("--min", "accuracy=1"),
    ] {
        refused(&["gate", &report, flag, value], &[flag]);
    }
    let thresholds = d.path().join("t.toml");
    std::fs::write(&thresholds, "thresholds = [\"accuracy.accuracy >= nan\"]\n").unwrap();
    refused(
        &[
            "gate",
            &report,
            "--thresholds",
            &thresholds.to_string_lossy(),
        ],
        &["t.toml", "finite"],
    );
    refused(
        &[
            "gate",
            &report,
            "--min",
            "accuracy.accuracy=0",
            "--baseline",
            &report,
            "--max-regression",
            "-5%",
        ],
        &["--max-regression"],
    );
    refused(
        &["eval", CNN, TEST, "--max-memory", "-1G"],
        &["--max-memory"],
    );
}

#[cfg(unix)]
#[test]
fn folder_entries_that_are_not_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let png = onnx_models("digits/test/3/0030.png");
    for (i, special) in ["fifo", "device"].into_iter().enumerate() {
        let class = d.path().join(format!("imgs{i}/3"));
        std::fs::create_dir_all(&class).unwrap();
        std::fs::copy(&png, class.join("a.png")).unwrap();
        let bad = class.join("b.png");
        match special {
            "fifo" => fifo(&bad),
            _ => std::os::unix::fs::symlink("/dev/zero", &bad).unwrap(),
        }
        refused(
            &["eval", CNN, &class.parent().unwrap().to_string_lossy()],
            &["b.png", "not a regular file"],
        );
    }
}

#[test]
fn settings_errors_name_the_flag_or_the_sidecar_key() {
    let d = tempfile::tempdir().unwrap();
    let m = sidecars_refused(
        d.path(),
        &[
            ("mean = [0.5, 0.5, 0.5]", "mean in"),
            ("std = [0.0]", "std in"),
            ("size = [56, 56]", "size in"),
            ("channels = \"rgb\"", "channels in"),
            ("layout = \"NHWC\"", "layout in"),
        ],
    );
    for (flag, value) in [
        ("--mean", "0.5,0.5,0.5,0.5"),
        ("--channels", "rgb"),
        ("--layout", "NHWC"),
    ] {
        refused(&["eval", CNN, TEST, "--no-sidecar", flag, value], &[flag]);
    }
    // A suite's empty data path.
    let suite = d.path().join("suite.toml");
    std::fs::write(&suite, format!("data = \"\"\n[[models]]\npath = {m:?}\n")).unwrap();
    refused(
        &[
            "audit",
            &suite.to_string_lossy(),
            "--out",
            &d.path().join("o").to_string_lossy(),
        ],
        &["suite.toml", "data is empty"],
    );
    // Labels out of range name the labels file.
    let (x, y) = (d.path().join("x.npy"), d.path().join("y.npy"));
    crate::common::write_npy_f32(&x, &[1, 1, 28, 28], &[0.5; 784]);
    crate::common::write_npy_i64(&y, &[10]);
    refused(
        &[
            "eval",
            CNN,
            &x.to_string_lossy(),
            "--labels",
            &y.to_string_lossy(),
        ],
        &["y.npy", "out of range"],
    );
}

#[test]
fn journal_errors_name_the_journal() {
    let d = tempfile::tempdir().unwrap();
    let s1 = audited(d.path(), "accuracy", "s1");
    let journal = s1.join("journal.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    let merged = d.path().join("m").to_string_lossy().into_owned();
    let s1 = s1.to_string_lossy().into_owned();
    for (from, to) in [
        ("\"model\":\"digits_cnn\"", "\"model\":\"elsewhere\""),
        ("\"thresholds\":[]", "\"thresholds\":[\"garbage\"]"),
    ] {
        assert!(text.contains(from), "{from} not in {text}");
        std::fs::write(&journal, text.replacen(from, to, 1)).unwrap();
        refused(&["merge", &s1, "--out", &merged], &["journal.jsonl"]);
    }
}

/// `K` (1×1×1×1, the value 2) of `pooled_after(input × K)` stored as external data at
/// `location`, with `entries` overriding the location entry's neighbours (offset, length).
pub(crate) fn external_model(location: &str, entries: &[(&str, &str)]) -> ModelProto {
    use tract_onnx::pb::{tensor_proto::DataLocation, StringStringEntryProto};
    let gray = [D::Named("N"), D::Fixed(1), D::Fixed(28), D::Fixed(28)];
    let mut k = tensor("K", &[1, 1, 1, 1], &[]);
    k.data_location = Some(DataLocation::External as i32);
    k.external_data = std::iter::once(("location", location))
        .chain(entries.iter().copied())
        .map(|(key, value)| StringStringEntryProto {
            key: key.into(),
            value: value.into(),
        })
        .collect();
    let nodes = vec![node("Mul", "scale", &["input", "K"], "scaled")];
    pooled_after(&gray, nodes, vec![k], "scaled")
}

#[cfg(unix)]
#[test]
fn external_data_is_read_from_the_model_folder_only() {
    let d = tempfile::tempdir().unwrap();
    let models = d.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let two = 2.0f32.to_le_bytes();
    std::fs::write(models.join("w.bin"), [[0u8; 4], two].concat()).unwrap();
    std::fs::write(d.path().join("outside.bin"), two).unwrap();
    std::os::unix::fs::symlink(d.path().join("outside.bin"), models.join("link.bin")).unwrap();
    fifo(&models.join("fifo.bin"));
    // A valid location beside the model runs on both backends, whatever the working folder.
    let m = write(
        &models,
        "ok.onnx",
        &external_model("w.bin", &[("offset", "4"), ("length", "4")]),
    );
    let digit = onnx_models("digits/test/3/0030.png")
        .to_string_lossy()
        .into_owned();
    for backend in ["tract", "ort"] {
        if backend == "ort" && crate::common::ort_library("external data (ort)").is_none() {
            continue;
        }
        let o = run(&["eval", &m, &digit, "--backend", backend, "-q"]);
        assert_eq!(o.status.code(), Some(0), "{backend}: {}", text(&o).1);
    }
    for (name, location, entries, why) in [
        (
            "up.onnx",
            "../outside.bin",
            &[][..],
            "leaves the model's folder",
        ),
        (
            "abs.onnx",
            "/etc/hostname",
            &[],
            "leaves the model's folder",
        ),
        ("link.onnx", "link.bin", &[], "leaves the model's folder"),
        ("fifo.onnx", "fifo.bin", &[], "not a regular file"),
        ("missing.onnx", "nothing.bin", &[], "nothing.bin"),
        (
            "beyond.onnx",
            "w.bin",
            &[("offset", "6"), ("length", "4")],
            "beyond",
        ),
        (
            "short.onnx",
            "w.bin",
            &[("length", "2")],
            "initializer \"K\"",
        ),
    ] {
        let m = write(&models, name, &external_model(location, entries));
        refused(&["eval", &m, &digit, "--backend", "tract"], &[name, why]);
    }
}

#[test]
fn npy_headers_that_crashed_the_reader_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let x = d.path().join("x.npy");
    // A dimension of 0 hides an overflow from the element count, not from the strides.
    npy_claiming(&x, &[0, u64::MAX, 2], 0);
    refused(&["eval", CNN, &x.to_string_lossy()], &["x.npy"]);
    // A ')' before the shape's '('.
    npy_with_header(
        &x,
        "{'descr': '<f4', 'fortran_order': False, 'shape': h2, 1, 28, 28, ), }",
        64,
    );
    refused(&["eval", CNN, &x.to_string_lossy()], &["x.npy"]);
}

#[test]
fn inputs_and_gradients_a_run_cannot_hold_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let m = write(d.path(), "dyn.onnx", &dynamic_size());
    // One 8000×8000 gray batch is 256 MB; a run holds several copies of it.
    refused(
        &[
            "eval",
            &m,
            TEST,
            "--size",
            "8000x8000",
            "--max-memory",
            "512M",
            "--backend",
            "tract",
            "-q",
        ],
        &["--size", "copies", "--max-memory"],
    );
    // A 2000×2000 input fits; DeepFool's gradients of 9 classes (144 MB) do not.
    let digit = onnx_models("digits/test/3/0030.png");
    refused(
        &[
            "measure",
            "deepfool",
            &m,
            &digit.to_string_lossy(),
            "--size",
            "2000x2000",
            "--max-memory",
            "100M",
            "--backend",
            "tract",
            "-q",
        ],
        &["dyn.onnx", "gradients", "--max-memory"],
    );
}

#[test]
fn negative_flag_values_reach_their_parser() {
    // clap took "-1x5" for a flag and named neither --size nor the value.
    refused(&["eval", CNN, TEST, "--size", "-1x5"], &["--size"]);
    refused(
        &[
            "measure", "deepfool", CNN, TEST, "--bounds", "-1e39,0", "--limit", "1",
        ],
        &["--bounds"],
    );
    let o = run(&["eval", CNN, TEST, "--mean", "-0.5", "--std", "2", "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
}

#[test]
fn graphs_tract_panicked_on_are_refused_before_it_sees_them() {
    let d = tempfile::tempdir().unwrap();
    let gray = [D::Named("N"), D::Fixed(1), D::Fixed(28), D::Fixed(28)];
    // Ranges that are empty or not ranges at all (tract divided by zero).
    for (name, start, limit, delta, why) in [
        ("empty.onnx", 11.0, 19.0, -1.0, "is empty"),
        ("nan.onnx", 0.0, -1.0, f32::NAN, "not a finite range"),
    ] {
        tract_refuses(d.path(), name, &ranged(start, limit, delta), &[why]);
    }
    // A Transpose whose perm is not an order of the axes (tract indexed past them).
    let mut t = node("Transpose", "t", &["input"], "moved");
    t.attribute.push(ints_attr("perm", &[0, 9, 9, 4]));
    let m = pooled_after(&gray, vec![t], vec![], "moved");
    tract_refuses(d.path(), "perm.onnx", &m, &["perm"]);
    // An output nothing makes (tract: "no entry found for key").
    let mut unmade = pooled_after(&gray, vec![], vec![], "input");
    unmade.graph.as_mut().unwrap().output[0].name = "nothing".into();
    tract_refuses(d.path(), "unmade.onnx", &unmade, &["made by nothing"]);
}
