//! Cost of exact input gradients against a forward call, EfficientNet-Lite0 on 1 and 8 images,
//! on tract and on ONNX Runtime (2 threads each). Not a test: prints a markdown table for
//! `docs/benchmarks.md`.
//!
//! ```text
//! cargo bench --bench grad
//! GEOROB_BENCH_TORCH=python3 cargo bench --bench grad
//! ```
//!
//! "images" is the number of images in one `Model::logits` / `Model::vjp` call, run as georob
//! runs it by default (the backend's default batch: tract runs concurrent single-image plans,
//! one per thread; ONNX Runtime one chunk per thread). For tract a second row at 8 images
//! forces one 8-row plan per call (`--batch 8`), tract's batched plans being slower per image.
//!
//! After one warm-up call of each kind (which also builds and compiles the gradient graphs),
//! each sample times a forward, an M = 1 and an M = 10 call back to back (each averaged over
//! 20 ms of calls), at least 3 samples and more while under 10 s. All cells are measured
//! `GEOROB_BENCH_ROUNDS` times (default 3), round after round; a cell reports the median of
//! its samples' times and, as its ratios, the median of its samples' ratios: a shared
//! machine's speed drifts from minute to minute, and calls timed within the same second share
//! the drift. With `GEOROB_BENCH_TORCH`
//! set to a Python that has torch and the EfficientNet-Lite0 packages,
//! `scripts/bench_torch_grad.py` runs in the same process tree with the same threads and its
//! figures join the table. `GEOROB_BENCH_BACKENDS=tract,ort` picks backends,
//! `GEOROB_BENCH_THREADS` the threads (default 2).

mod common;

use std::time::Instant;

use common::{cycle_rows, machine, npy, peer_json, root};
use georob::model::{BackendChoice, BackendKind, GradientChoice, Model, ModelOptions};

struct Row {
    backend: String,
    batch: usize,
    plan: Option<usize>,
    /// Forward, M = 1 and M = 10 times (ms) of each sample.
    samples: Vec<[f64; 3]>,
}

impl Row {
    /// Median time of column `i` (0 forward, 1 M = 1, 2 M = 10).
    fn median_ms(&self, i: usize) -> f64 {
        median(self.samples.iter().map(|s| s[i]).collect())
    }

    /// Median over samples of column `i` over the same sample's forward time.
    fn median_ratio(&self, i: usize) -> f64 {
        median(self.samples.iter().map(|s| s[i] / s[0]).collect())
    }
}

/// One (backend, images per call, batch option) cell group: the model, its inputs and
/// cotangents for M = 1 and 10.
struct Case {
    model: Model,
    batch: usize,
    plan: Option<usize>,
    x: Vec<f32>,
    c1: Vec<f32>,
    c10: Vec<f32>,
}

fn case(
    kind: BackendKind,
    batch: usize,
    plan: Option<usize>,
    threads: usize,
    photos: &(Vec<usize>, Vec<f32>),
) -> Case {
    let options = ModelOptions {
        backend: BackendChoice::Exactly(kind),
        gradient: GradientChoice::Exact,
        threads: Some(threads),
        batch: plan,
        ..Default::default()
    };
    let path = root().join("onnx_models/efficientnet_lite0/efficientnet_lite0.onnx");
    let model = Model::open(&path, &options).expect("opens EfficientNet-Lite0");
    let x = cycle_rows(&photos.0, &photos.1, batch);
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
        plan,
        x,
        c1,
        c10,
    }
}

/// Per-call wall time (ms) of `f`, averaged over as many calls as fill 20 ms.
fn time_ms(mut f: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    let mut calls = 0;
    while calls == 0 || t0.elapsed().as_secs_f64() < 0.02 {
        f();
        calls += 1;
    }
    t0.elapsed().as_secs_f64() * 1e3 / calls as f64
}

/// One round of a case: after a warm-up of each kind of call, samples of a forward, an M = 1
/// and an M = 10 call timed back to back (at least 3, more while under 10 s), so that each
/// sample's ratios compare calls made within a second of each other.
fn measure(c: &Case) -> Vec<[f64; 3]> {
    let forward = || {
        c.model.logits(&c.x, c.batch).unwrap();
    };
    let grad1 = || {
        c.model.vjp(&c.x, c.batch, &c.c1, 1).unwrap();
    };
    let grad10 = || {
        c.model.vjp(&c.x, c.batch, &c.c10, 10).unwrap();
    };
    forward();
    grad1();
    grad10();
    let start = Instant::now();
    let mut samples = vec![];
    while samples.len() < 3 || (samples.len() < 9 && start.elapsed().as_secs_f64() < 10.0) {
        samples.push([time_ms(forward), time_ms(grad1), time_ms(grad10)]);
    }
    samples
}

/// The median of `v`.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// How a row's calls run: the default batch, or a forced `--batch`.
fn plan_label(plan: Option<usize>) -> String {
    plan.map_or(String::new(), |b| format!(" (--batch {b})"))
}

/// One PyTorch row: batch, forward, forward + 1 backward, forward + 10 backward (ms).
type TorchRow = (usize, f64, f64, f64);

/// PyTorch version and rows from `scripts/bench_torch_grad.py --json`.
fn torch(python: &str, threads: usize) -> Option<(String, Vec<TorchRow>)> {
    let v = peer_json(python, "bench_torch_grad.py", threads, &[], "PyTorch")?;
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
        .flat_map(|kind| {
            let mut cells = vec![(kind, 1, None), (kind, 8, None)];
            if kind == BackendKind::Tract {
                cells.push((kind, 8, Some(8)));
            }
            cells
        })
        .map(|(kind, batch, plan)| case(kind, batch, plan, threads, &photos))
        .collect();
    let mut rows: Vec<Row> = cases
        .iter()
        .map(|c| Row {
            backend: c.model.backend().describe(),
            batch: c.batch,
            plan: c.plan,
            samples: vec![],
        })
        .collect();
    let rounds = common::rounds();
    for round in 1..=rounds {
        for (c, row) in cases.iter().zip(&mut rows) {
            let samples = measure(c);
            let med = |i: usize| median(samples.iter().map(|s| s[i]).collect());
            eprintln!(
                "round {round}/{rounds}: {} {} images{}: forward {:.1} ms, M=1 {:.1} ms, M=10 {:.1} ms",
                row.backend,
                row.batch,
                plan_label(row.plan),
                med(0),
                med(1),
                med(2)
            );
            row.samples.extend(samples);
        }
    }
    let torch = std::env::var("GEOROB_BENCH_TORCH")
        .ok()
        .and_then(|py| torch(&py, threads));

    println!(
        "EfficientNet-Lite0 224×224, {threads} threads; {machine}; median ms per call over {rounds} rounds; \
         the ratios are medians of each sample's ratio (a forward, an M = 1 and an M = 10 call timed back to back)\n"
    );
    println!("| backend | images | forward | gradient M=1 | gradient M=10 | M=1 ≤ 3× fwd | M=10 ≤ 21× fwd |");
    println!("|---|---:|---:|---:|---:|:-:|:-:|");
    let yes = |b: bool| if b { "yes" } else { "no" };
    for r in &rows {
        let (a, b) = (r.median_ratio(1), r.median_ratio(2));
        println!(
            "| {} | {}{} | {:.1} | {:.1} ({a:.2}×) | {:.1} ({b:.2}×) | {} | {} |",
            r.backend,
            r.batch,
            plan_label(r.plan),
            r.median_ms(0),
            r.median_ms(1),
            r.median_ms(2),
            yes(a <= 3.0),
            yes(b <= 21.0)
        );
    }
    if let Some((version, trows)) = torch {
        println!("\nPyTorch {version} CPU autograd, frozen parameters, forward + M backward passes, {threads} threads\n");
        println!("| batch | forward | fwd + 1 bwd | fwd + 10 bwd | ort speed-up M=1 (≥ 1.5) | ort speed-up M=10 (≥ 2) |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for (batch, f, g1, g10) in trows {
            let ort = rows.iter().find(|r| {
                r.batch == batch && r.plan.is_none() && r.backend.contains("onnxruntime")
            });
            let (s1, s10) = ort.map_or((f64::NAN, f64::NAN), |r| {
                (g1 / r.median_ms(1), g10 / r.median_ms(2))
            });
            println!(
                "| {batch} | {f:.1} | {g1:.1} | {g10:.1} | {s1:.2}× {} | {s10:.2}× {} |",
                yes(s1 >= 1.5),
                yes(s10 >= 2.0)
            );
        }
    }
}
