//! `--threads 1` bounds every compute thread: a DeepFool, a grid and a ManiFool run keep at
//! most one thread busy besides the main thread (Linux: per-thread CPU time from /proc).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{command, repo};

/// CPU time (clock ticks) of each thread of `pid` that is still alive.
fn thread_ticks(pid: u32) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised name: state is the 1st, utime the 12th, stime the 13th.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if let (Some(u), Some(s)) = (f.get(11), f.get(12)) {
            out.insert(tid, u.parse().unwrap_or(0) + s.parse::<u64>().unwrap_or(0));
        }
    }
    out
}

/// The threads other than the main one that used at least `min_ticks` of CPU while
/// `georob measure NAME` ran on the digits CNN with `--threads 1`.
fn busy_threads(name: &str, min_ticks: u64) -> Vec<(u32, u64)> {
    let mut child = command()
        .args(["measure", name])
        .arg(repo("onnx_models/digits/digits_cnn.onnx"))
        .arg(repo("onnx_models/digits/test_x.npy"))
        .arg("--labels")
        .arg(repo("onnx_models/digits/test_y.npy"))
        .args([
            "--limit",
            "16",
            "--threads",
            "1",
            "--backend",
            "tract",
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut seen: BTreeMap<u32, u64> = BTreeMap::new();
    loop {
        for (tid, t) in thread_ticks(pid) {
            seen.insert(tid, t);
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "georob measure {name} failed: {status}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    seen.into_iter()
        .filter(|&(tid, t)| tid != pid && t >= min_ticks)
        .collect()
}

#[test]
#[cfg(target_os = "linux")]
fn one_thread_means_one_compute_thread_besides_main() {
    // 5 ticks (50 ms at the usual 100 Hz) tells a worker that computed from one that only
    // started (the progress and signal threads use none).
    for name in ["deepfool", "grid", "manifool"] {
        let busy = busy_threads(name, 5);
        eprintln!("{name}: busy threads besides main (tid, ticks): {busy:?}");
        assert!(
            busy.len() <= 1,
            "{name}: {} threads busy besides main: {busy:?}",
            busy.len()
        );
    }
}
