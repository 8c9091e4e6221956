//! One bound on every compute thread of the process (`--threads N`).
//!
//! Image decoding, DeepFool steps, warps and the measures' own loops run on rayon's global
//! pool; the backends run on pools of their own, sized from the same `N`
//! ([`crate::model::ModelOptions::threads`]). [`limit`] sizes the global pool.

use crate::error::{Error, Result};

/// Sizes rayon's global pool to `n` threads. Call once, before any parallel work: a pool
/// that already runs keeps its size, and that is an error.
pub fn limit(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::Config("--threads must be at least 1".into()));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("georob-{i}"))
        .build_global()
        .map_err(|e| Error::Config(format!("--threads {n}: cannot size the thread pool: {e}")))
}
