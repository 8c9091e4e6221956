//! One bound on every compute thread of the process (`--threads N`).
//!
//! Image decoding, DeepFool steps, warps and the measures' own loops run on rayon's global
//! pool; the backends run on pools of their own, sized from the same `N`
//! ([`crate::model::ModelOptions::threads`]). [`limit`] sizes the global pool.

use crate::error::{Error, Result};

/// The most threads georob starts: 4 per core, at least 64 and at most 1024. More only
/// spend memory on stacks (and enough of them exhaust it).
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_mul(4).clamp(64, 1024)
}

/// Checks a thread count (`--threads`): at least 1, at most [`max_threads`].
pub fn check(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::Config("--threads must be at least 1".into()));
    }
    let max = max_threads();
    if n > max {
        return Err(Error::Config(format!(
            "--threads {n}: at most {max} threads (4 per core, at least 64, at most 1024)"
        )));
    }
    Ok(())
}

/// Sizes rayon's global pool to `n` threads. Call once, before any parallel work: a pool
/// that already runs keeps its size, and that is an error.
pub fn limit(n: usize) -> Result<()> {
    check(n)?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("georob-{i}"))
        .build_global()
        .map_err(|e| Error::Config(format!("--threads {n}: cannot size the thread pool: {e}")))
}
