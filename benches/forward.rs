//! Forward throughput (images/s) of the bundled classifiers on tract and on ONNX Runtime at
//! 1, 8 and 32 images per call, next to raw onnxruntime from Python and PyTorch on the same
//! files, batches and threads. Not a test: prints a markdown table for `docs/benchmarks.md`.
//!
//! ```text
//! ORT_DYLIB_PATH=... GEOROB_BENCH_TORCH=python3 cargo bench --bench forward
//! ```
//!
//! A cell times one `Model::logits` call on `n` inputs (the model's bundled data repeated to
//! `n` rows): the median of 3 to 9 samples after a warm-up call, each sample as many calls as
//! fill 20 ms; the whole table, peers included, is measured `GEOROB_BENCH_ROUNDS` times (default
//! 3) one round after the other and each cell keeps its fastest round, as a shared machine's
//! other load only ever adds time. Rows: ort with `batch = n` (one session run, the peer of raw onnxruntime);
//! tract with its default (concurrent single-sample calls, one per thread) and with
//! `batch = n` (one run of an `n`-row plan). With `GEOROB_BENCH_TORCH` set to a Python with
//! onnxruntime, onnx and torch, `scripts/bench_forward_peers.py` runs afterwards with the same
//! threads and its figures join the table. `GEOROB_BENCH_BACKENDS` and `GEOROB_BENCH_THREADS`
//! as for the `grad` bench; `GEOROB_BENCH_MODELS=digits_cnn,…` picks models.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{cycle_rows, machine, median_ms, npy, peer_json, root};
use georob::model::{BackendChoice, BackendKind, Model, ModelOptions};

/// (name, ONNX file, data rows): the same list as `scripts/bench_forward_peers.py`.
const BUNDLED: [(&str, &str, &str); 4] = [
    (
        "digits_linear",
        "digits/digits_linear.onnx",
        "digits/test_x.npy",
    ),
    ("digits_cnn", "digits/digits_cnn.onnx", "digits/test_x.npy"),
    (
        "efficientnet_lite0",
        "efficientnet_lite0/efficientnet_lite0.onnx",
        "efficientnet_lite0/photos_x.npy",
    ),
    (
        "efficientnet_lite0_int8",
        "efficientnet_lite0/efficientnet_lite0_int8.onnx",
        "efficientnet_lite0/photos_x.npy",
    ),
];

const BATCHES: [usize; 3] = [1, 8, 32];

fn models() -> PathBuf {
    root().join("onnx_models")
}

/// `n` rows of the data file, cycling through its rows.
fn rows(path: &Path, n: usize) -> Vec<f32> {
    let (shape, data) = npy(path);
    cycle_rows(&shape, &data, n)
}

/// Milliseconds per `logits` call of `n` rows.
fn time_forward(
    onnx: &Path,
    x: &[f32],
    n: usize,
    kind: BackendKind,
    batch: Option<usize>,
    threads: usize,
) -> f64 {
    let options = ModelOptions {
        backend: BackendChoice::Exactly(kind),
        threads: Some(threads),
        batch,
        ..Default::default()
    };
    let model = Model::open(onnx, &options).expect("opens a bundled model");
    median_ms(20.0, || {
        model.logits(x, n).unwrap();
    })
}

/// Peer timings: (model, engine, batch) → ms.
type PeerCells = BTreeMap<(String, String, usize), f64>;

/// The peers' versions and timings from `scripts/bench_forward_peers.py --json`.
fn peer_run(python: &str, threads: usize, models: Option<&str>) -> Option<(String, PeerCells)> {
    let args = models.map_or(vec![], |m| vec!["--models", m]);
    let v = peer_json(python, "bench_forward_peers.py", threads, &args, "peer")?;
    let cells = v["rows"]
        .as_array()?
        .iter()
        .map(|r| {
            let key = (
                r["model"].as_str().unwrap_or("?").to_string(),
                r["engine"].as_str().unwrap_or("?").to_string(),
                r["batch"].as_u64().unwrap_or(0) as usize,
            );
            (key, r["ms"].as_f64().unwrap_or(f64::NAN))
        })
        .collect();
    let versions = format!(
        "onnxruntime {} (Python), PyTorch {}",
        v["onnxruntime"].as_str().unwrap_or("?"),
        v["torch"].as_str().unwrap_or("?")
    );
    Some((versions, cells))
}

fn main() {
    let threads = common::threads();
    let machine = machine();
    let kinds = common::backends();
    let only = std::env::var("GEOROB_BENCH_MODELS").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|m| m == name))
    };
    let rounds = common::rounds();
    let python = std::env::var("GEOROB_BENCH_TORCH").ok();
    // (model, column, batch) → ms, the fastest round.
    let mut ms: BTreeMap<(String, &str, usize), f64> = BTreeMap::new();
    let mut peers: Option<(String, PeerCells)> = None;
    for round in 1..=rounds {
        for (name, file, data) in BUNDLED.into_iter().filter(|m| wanted(m.0)) {
            let onnx = models().join(file);
            for n in BATCHES {
                let x = rows(&models().join(data), n);
                for &kind in &kinds {
                    let runs: &[(&str, Option<usize>)] = match kind {
                        BackendKind::Ort => &[("ort", Some(n))],
                        BackendKind::Tract => &[("tract", None), ("tract_batch", Some(n))],
                    };
                    for &(column, batch) in runs {
                        let t = time_forward(&onnx, &x, n, kind, batch, threads);
                        eprintln!("round {round}: {name} n={n} {column}: {t:.2} ms");
                        let cell = ms.entry((name.to_string(), column, n)).or_insert(t);
                        *cell = cell.min(t);
                    }
                }
            }
        }
        let Some((versions, cells)) = python
            .as_deref()
            .and_then(|py| peer_run(py, threads, only.as_deref()))
        else {
            continue;
        };
        let merged = peers.get_or_insert_with(|| (versions, PeerCells::new()));
        for (key, t) in cells {
            let cell = merged.1.entry(key).or_insert(t);
            *cell = cell.min(t);
        }
    }

    println!("Forward throughput, images/s, {threads} threads; {machine}");
    if let Some((versions, _)) = &peers {
        println!("Peers: {versions}, same threads");
    }
    println!();
    println!("| model | n | georob ort | raw onnxruntime | ort / raw | georob tract (default) | tract (batch n) | tract / ort | PyTorch |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ips = |n: usize, t: Option<f64>| {
        t.map_or("–".to_string(), |t| format!("{:.0}", n as f64 / t * 1e3))
    };
    for (name, _, _) in BUNDLED.into_iter().filter(|m| wanted(m.0)) {
        for n in BATCHES {
            let get = |c: &str| ms.get(&(name.to_string(), c, n)).copied();
            let peer = |e: &str| {
                peers
                    .as_ref()
                    .and_then(|(_, p)| p.get(&(name.to_string(), e.to_string(), n)).copied())
            };
            let (ort, raw) = (get("ort"), peer("onnxruntime"));
            let tract = get("tract");
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => format!("{:.2}×", b / a),
                _ => "–".into(),
            };
            println!(
                "| {name} | {n} | {} | {} | {} | {} | {} | {} | {} |",
                ips(n, ort),
                ips(n, raw),
                ratio(ort, raw),
                ips(n, tract),
                ips(n, get("tract_batch")),
                ratio(ort, tract),
                ips(n, peer("pytorch")),
            );
        }
    }
    println!("\n`ort / raw`: georob's ort throughput over raw onnxruntime's (1.00× = equal). `tract / ort`: how many times slower tract (default) is than georob's ort.");
}
