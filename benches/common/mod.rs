//! What the bench binaries share: timing, the machine description, the bundled data and the
//! Python peers. Each bench uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// A float32 .npy file as (shape, data).
pub fn npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let f = npyz::NpyFile::new(std::fs::File::open(path).expect("bundled data")).unwrap();
    let shape = f.shape().iter().map(|&d| d as usize).collect();
    (shape, f.into_vec::<f32>().unwrap())
}

/// `n` rows of an array of `shape` (rows along its first axis), cycling through its rows.
pub fn cycle_rows(shape: &[usize], data: &[f32], n: usize) -> Vec<f32> {
    let d: usize = shape[1..].iter().product();
    (0..n)
        .flat_map(|i| {
            let r = i % shape[0];
            data[r * d..(r + 1) * d].iter().copied()
        })
        .collect()
}

/// Runs `scripts/<script>` under `python` with `--json --threads <threads>` and `args`, and
/// parses the last line it prints; `None` when it cannot run or prints no JSON, and when it
/// fails, after printing its stderr as the `what` benchmark's failure.
pub fn peer_json(
    python: &str,
    script: &str,
    threads: usize,
    args: &[&str],
    what: &str,
) -> Option<serde_json::Value> {
    let out = std::process::Command::new(python)
        .arg(root().join("scripts").join(script))
        .args(["--json", "--threads", &threads.to_string()])
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "{what} benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last()?).ok()
}

/// Median wall time in milliseconds per call of `f`: one warm-up call, then 3 to 9 samples
/// (more while under 10 s), each of as many calls as fill `min_sample_ms` (at least one).
pub fn median_ms(min_sample_ms: f64, mut f: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    f();
    let first = t0.elapsed().as_secs_f64() * 1e3;
    let reps = (min_sample_ms / first.max(1e-3)).ceil().max(1.0) as usize;
    let mut times = vec![];
    let start = Instant::now();
    while times.len() < 3 || (times.len() < 9 && start.elapsed().as_secs_f64() < 10.0) {
        let t0 = Instant::now();
        for _ in 0..reps {
            f();
        }
        times.push(t0.elapsed().as_secs_f64() * 1e3 / reps as f64);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The machine, from /proc/cpuinfo, and the load average at the start.
pub fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    format!("{model}, {cores} cores available, load average {load} at start")
}

/// Bench threads from `GEOROB_BENCH_THREADS` (default 2).
pub fn threads() -> usize {
    std::env::var("GEOROB_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2)
}

/// Rounds from `GEOROB_BENCH_ROUNDS` (default 3): a bench measures all its cells once per
/// round and each cell keeps its fastest round, as a shared machine's other load only ever
/// adds time.
pub fn rounds() -> usize {
    std::env::var("GEOROB_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
}

/// Backends from `GEOROB_BENCH_BACKENDS` (default `tract,ort`), ort skipped with a message
/// when its library is not found.
pub fn backends() -> Vec<georob::model::BackendKind> {
    use georob::model::BackendKind;
    let names = std::env::var("GEOROB_BENCH_BACKENDS").unwrap_or_else(|_| "tract,ort".into());
    let mut kinds = vec![];
    for name in names.split(',') {
        let kind = match name.trim() {
            "tract" => BackendKind::Tract,
            "ort" => BackendKind::Ort,
            other => panic!("unknown backend {other:?}"),
        };
        if kind == BackendKind::Ort {
            if let Err(e) = georob::model::ort_lib::find(None) {
                eprintln!("SKIPPED ort: {e}");
                continue;
            }
        }
        kinds.push(kind);
    }
    kinds
}
