//! Cost of exact input gradients against a forward call, EfficientNet-Lite0 at batch 1 and 8,
//! on tract and on ONNX Runtime (2 threads each). Not a test: prints a markdown table for
//! `docs/benchmarks.md`.
//!
//! ```text
//! cargo bench --features ort --bench grad
//! GEOROB_BENCH_TORCH=/work/venv-models/bin/python cargo bench --features ort --bench grad
//! ```
//!
//! Each cell is the median of several calls (at least 3, more while under 10 s) after one
//! warm-up call, which also builds and compiles the gradient graph. All cells are measured
//! `GEOROB_BENCH_ROUNDS` times (default 3), round after round, and each keeps its fastest
//! round: this VM's speed drifts by up to 30 % from minute to minute. With `GEOROB_BENCH_TORCH`
//! set to a Python that has torch and the EfficientNet-Lite0 packages,
//! `scripts/bench_torch_grad.py` runs in the same process tree with the same threads and its
//! figures join the table. `GEOROB_BENCH_BACKENDS=tract,ort` picks backends,
//! `GEOROB_BENCH_THREADS` the threads (default 2).

use std::path::{Path, PathBuf};
mod common;

use common::{machine, median_ms};
use georob::model::{BackendChoice, BackendKind, GradientChoice, Model, ModelOptions};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let f = npyz::NpyFile::new(std::fs::File::open(path).expect("photos_x.npy")).unwrap();
    let shape = f.shape().iter().map(|&d| d as usize).collect();
    (shape, f.into_vec::<f32>().unwrap())
}

struct Row {
    backend: String,
    batch: usize,
    forward: f64,
    grad1: f64,
    grad10: f64,
}

/// One (backend, batch) cell group: the model, its inputs and cotangents for M = 1 and 10.
struct Case {
    model: Model,
    batch: usize,
    x: Vec<f32>,
    c1: Vec<f32>,
    c10: Vec<f32>,
}

fn case(kind: BackendKind, batch: usize, threads: usize, photos: &(Vec<usize>, Vec<f32>)) -> Case {
    let options = ModelOptions {
        backend: BackendChoice::Exactly(kind),
        gradient: GradientChoice::Exact,
        threads: Some(threads),
        batch: Some(batch),
        ..Default::default()
    };
    let path = root().join("onnx_models/efficientnet_lite0/efficientnet_lite0.onnx");
    let model = Model::open(&path, &options).expect("opens EfficientNet-Lite0");
    let d: usize = photos.0[1..].iter().product();
    let x: Vec<f32> = (0..batch)
        .flat_map(|i| {
            let r = i % photos.0[0];
            photos.1[r * d..(r + 1) * d].iter().copied()
        })
        .collect();
    let k = model.classes;
    let cot = |m: usize| -> Vec<f32> {
        (0..batch * m * k)
            .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 504.0)
            .collect()
    };
    let (c1, c10) = (cot(1), cot(10));
    Case {
        model,
        batch,
        x,
        c1,
        c10,
    }
}

/// One round of a case: median ms of forward, M = 1 and M = 10 calls, each kind of call
/// timed back to back.
fn measure(c: &Case) -> (f64, f64, f64) {
    let forward = median_ms(0.0, || {
        c.model.logits(&c.x, c.batch).unwrap();
    });
    let grad1 = median_ms(0.0, || {
        c.model.vjp(&c.x, c.batch, &c.c1, 1).unwrap();
    });
    let grad10 = median_ms(0.0, || {
        c.model.vjp(&c.x, c.batch, &c.c10, 10).unwrap();
    });
    (forward, grad1, grad10)
}

/// One PyTorch row: batch, forward, forward + 1 backward, forward + 10 backward (ms).
type TorchRow = (usize, f64, f64, f64);

/// PyTorch version and rows from `scripts/bench_torch_grad.py --json`.
fn torch(python: &str, threads: usize) -> Option<(String, Vec<TorchRow>)> {
    let out = std::process::Command::new(python)
        .arg(root().join("scripts/bench_torch_grad.py"))
        .args(["--json", "--threads", &threads.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "PyTorch benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.lines().last()?).ok()?;
    let rows = v["rows"]
        .as_array()?
        .iter()
        .map(|r| {
            (
                r["batch"].as_u64().unwrap_or(0) as usize,
                r["forward_ms"].as_f64().unwrap_or(f64::NAN),
                r["grad1_ms"].as_f64().unwrap_or(f64::NAN),
                r["grad10_ms"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    Some((v["torch"].as_str().unwrap_or("?").to_string(), rows))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let threads = common::threads();
    let photos = npy(&root().join("onnx_models/efficientnet_lite0/photos_x.npy"));
    let machine = machine();
    let cases: Vec<Case> = common::backends()
        .into_iter()
        .flat_map(|kind| [1, 8].map(|batch| (kind, batch)))
        .map(|(kind, batch)| case(kind, batch, threads, &photos))
        .collect();
    let mut rows: Vec<Row> = cases
        .iter()
        .map(|c| Row {
            backend: c.model.backend().describe(),
            batch: c.batch,
            forward: f64::INFINITY,
            grad1: f64::INFINITY,
            grad10: f64::INFINITY,
        })
        .collect();
    let rounds = common::rounds();
    for round in 1..=rounds {
        for (c, row) in cases.iter().zip(&mut rows) {
            let (forward, grad1, grad10) = measure(c);
            eprintln!(
                "round {round}/{rounds}: {} batch {}: forward {forward:.1} ms, M=1 {grad1:.1} ms, M=10 {grad10:.1} ms",
                row.backend, row.batch
            );
            row.forward = row.forward.min(forward);
            row.grad1 = row.grad1.min(grad1);
            row.grad10 = row.grad10.min(grad10);
        }
    }
    let torch = std::env::var("GEOROB_BENCH_TORCH")
        .ok()
        .and_then(|py| torch(&py, threads));

    println!(
        "EfficientNet-Lite0 224×224, {threads} threads; {machine}; median ms per call, fastest of {rounds} rounds\n"
    );
    println!("| backend | batch | forward | gradient M=1 | gradient M=10 | M=1 ≤ 3× fwd | M=10 ≤ 21× fwd |");
    println!("|---|---:|---:|---:|---:|:-:|:-:|");
    let yes = |b: bool| if b { "yes" } else { "no" };
    for r in &rows {
        let (a, b) = (r.grad1 / r.forward, r.grad10 / r.forward);
        println!(
            "| {} | {} | {:.1} | {:.1} ({a:.2}×) | {:.1} ({b:.2}×) | {} | {} |",
            r.backend,
            r.batch,
            r.forward,
            r.grad1,
            r.grad10,
            yes(a <= 3.0),
            yes(b <= 21.0)
        );
    }
    if let Some((version, trows)) = torch {
        println!("\nPyTorch {version} CPU autograd, frozen parameters, forward + M backward passes, {threads} threads\n");
        println!("| batch | forward | fwd + 1 bwd | fwd + 10 bwd | ort speed-up M=1 (≥ 1.5) | ort speed-up M=10 (≥ 2) |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for (batch, f, g1, g10) in trows {
            let ort = rows
                .iter()
                .find(|r| r.batch == batch && r.backend.contains("onnxruntime"));
            let (s1, s10) = ort.map_or((f64::NAN, f64::NAN), |r| (g1 / r.grad1, g10 / r.grad10));
            println!(
                "| {batch} | {f:.1} | {g1:.1} | {g10:.1} | {s1:.2}× {} | {s10:.2}× {} |",
                yes(s1 >= 1.5),
                yes(s10 >= 2.0)
            );
        }
    }
}
