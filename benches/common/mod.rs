//! What the bench binaries share: timing and the machine description. Each bench uses
//! part of it.
#![allow(dead_code)]

use std::time::Instant;

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
