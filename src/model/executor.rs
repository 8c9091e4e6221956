//! How a model's calls run: chunked to the backend's batch, spread over concurrent backend
//! calls, and timed.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::backend::{Backend, Job};
use super::BackendKind;
use crate::error::{Error, Result};

/// Forward calls estimated to take less than this run whole where a call threads itself
/// ([`Backend::threads_each_call`]): on a call that short, the overhead of splitting it into
/// concurrent single-threaded runs outweighs what the split saves.
const SPLIT_MIN_NS: u64 = 2_000_000;

/// Runs a backend's calls: chunking, concurrency and timing counters.
pub struct Executor {
    backend: Box<dyn Backend>,
    /// Batch size the model file fixes, if any.
    fixed_batch: Option<usize>,
    /// Fastest wall time per row seen in a forward call, in nanoseconds.
    forward_ns_per_row: AtomicU64,
    /// Time inside the model's calls, summed over calling threads (ns).
    call_ns: AtomicU64,
}

impl Executor {
    /// Runs `backend`, whose model fixes its batch to `fixed_batch` if any.
    pub(super) fn new(backend: Box<dyn Backend>, fixed_batch: Option<usize>) -> Self {
        Executor {
            backend,
            fixed_batch,
            forward_ns_per_row: AtomicU64::new(0),
            call_ns: AtomicU64::new(0),
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Samples per model call.
    pub fn batch(&self) -> usize {
        self.backend.max_batch()
    }

    /// The fastest forward time per row seen so far, in seconds (`None` before any call).
    pub fn forward_seconds_per_row(&self) -> Option<f64> {
        match self.forward_ns_per_row.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(ns as f64 * 1e-9),
        }
    }

    /// Backend calls that can run at once (one per thread where the backend runs
    /// single-threaded calls side by side), see [`Executor::map_concurrent`].
    pub fn concurrent_calls(&self) -> usize {
        self.backend.concurrent_calls().max(1)
    }

    /// Samples worth handing `Model::logits` or `Model::vjp` in one call: a batch for
    /// every concurrent backend call, and at least 16 so that data streams in useful chunks.
    pub fn pass_rows(&self) -> usize {
        let unit = self.batch() * self.backend.concurrent_calls().max(1);
        unit * 16usize.div_ceil(unit)
    }

    /// Seconds spent inside `Model::logits` and `Model::vjp` since the model was opened,
    /// summed over the threads that made the calls (a call inside another counts once). A
    /// measure's time minus this is its own work: sampling, projections, bookkeeping.
    pub fn call_seconds(&self) -> f64 {
        self.call_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// Runs `f`, adding its wall time to [`Executor::call_seconds`] unless this thread is
    /// already inside a timed call.
    pub(super) fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        thread_local! {
            static IN_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        /// Clears the flag when the outermost call ends, even by a panic.
        struct Outermost;
        impl Drop for Outermost {
            fn drop(&mut self) {
                IN_CALL.with(|c| c.set(false));
            }
        }
        if IN_CALL.with(|c| c.replace(true)) {
            return f();
        }
        let _outermost = Outermost;
        let start = Instant::now();
        let out = f();
        self.call_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }

    /// Row ranges `(start, rows)` covering `n` rows, at most `cap` each (a fixed batch
    /// overrides it); with `split`, split further, into as many chunks as the backend runs at
    /// once, when fewer would leave threads idle. A call made inside one of the backend's
    /// concurrent jobs ([`Executor::map_concurrent`]) is not split: the other threads run
    /// jobs of their own, and on EfficientNet-Lite0 with ONNX Runtime, 5-row calls split in
    /// 3 and 2 rows took a quarter longer than whole.
    pub(super) fn row_chunks(&self, n: usize, cap: usize, split: bool) -> Vec<(usize, usize)> {
        let ways = if split && !self.backend.in_job() {
            self.backend.concurrent_calls().max(1)
        } else {
            1
        };
        let chunk = match self.fixed_batch {
            // Every call runs the whole fixed batch: splitting it only adds padding.
            Some(b) => b,
            None => cap.min(n.div_ceil(ways)),
        }
        .max(1);
        (0..n)
            .step_by(chunk)
            .map(|start| (start, chunk.min(n - start)))
            .collect()
    }

    /// `f(start, rows)` on every chunk of [`Executor::row_chunks`], concurrently where the backend
    /// allows; the results in row order, or the first error.
    pub(super) fn map_chunks<T: Send>(
        &self,
        n: usize,
        cap: usize,
        split: bool,
        f: impl Fn(usize, usize) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        let chunks = self.row_chunks(n, cap, split);
        self.map_concurrent(chunks.len(), |c| f(chunks[c].0, chunks[c].1))
    }

    /// `f(0)`, …, `f(n − 1)`, as many at once as the backend runs concurrent calls (each model
    /// call inside then single-threaded), else one after another; the results in order, or
    /// the first error. For per-image work that calls the model on a row or two at a time.
    pub fn map_concurrent<T: Send>(
        &self,
        n: usize,
        f: impl Fn(usize) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        if n < 2 || self.backend.concurrent_calls() < 2 {
            return (0..n).map(f).collect();
        }
        let mut slots: Vec<Option<Result<T>>> = (0..n).map(|_| None).collect();
        let f = &f;
        let jobs: Vec<Job> = slots
            .iter_mut()
            .enumerate()
            .map(|(i, slot)| Box::new(move || *slot = Some(f(i))) as Job)
            .collect();
        self.backend.run_jobs(jobs);
        slots
            .into_iter()
            .map(|slot| slot.expect("every job ran"))
            .collect()
    }

    /// Runs the backend on `n` rows of `d` values (the model at `path`) in chunks, padded
    /// to a fixed batch when the file fixes one: the first output's shape and values.
    pub(super) fn run_rows(
        &self,
        x: &[f32],
        n: usize,
        d: usize,
        path: &Path,
    ) -> Result<(Vec<usize>, Vec<f32>)> {
        if x.len() != n * d {
            return Err(Error::Config(format!(
                "{} samples of {d} values expected, got {} values",
                n,
                x.len()
            )));
        }
        let batch = self.backend.max_batch();
        let start_time = Instant::now();
        let per_row = self.forward_ns_per_row.load(Ordering::Relaxed);
        let split = !self.backend.threads_each_call() || per_row * n as u64 >= SPLIT_MIN_NS;
        let parts = self.map_chunks(n, batch, split, |start, m| {
            let part = &x[start * d..(start + m) * d];
            // A fixed batch must be filled; tract compiles one plan per batch size,
            // so it gets a few power-of-two sizes only.
            let fill = match self.fixed_batch {
                Some(b) => Some(b),
                None if self.backend.kind() == BackendKind::Tract => {
                    Some(super::gradients::bucket(m, batch))
                }
                None => None,
            };
            let (s, v) = match fill {
                Some(b) if m < b => {
                    let mut padded = part.to_vec();
                    padded.resize(b * d, 0.0);
                    let (s, v) = self.backend.run_chunk(&padded, b)?;
                    let per = v.len() / b;
                    let mut s = s;
                    s[0] = m;
                    (s, v[..m * per].to_vec())
                }
                _ => self.backend.run_chunk(part, m)?,
            };
            if s.first().copied() != Some(m) {
                return Err(Error::NotAClassifier {
                    path: path.to_path_buf(),
                    reason: format!(
                        "its first output has shape {s:?} for a batch of {m}; georob needs (N, K)"
                    ),
                });
            }
            Ok((s, v))
        })?;
        let ns = start_time.elapsed().as_nanos() as u64 / n.max(1) as u64;
        self.forward_ns_per_row
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                (old == 0 || ns < old).then_some(ns.max(1))
            })
            .ok();
        let mut shape = parts.first().map(|(s, _)| s.clone()).unwrap_or_default();
        if let Some(b) = shape.first_mut() {
            *b = n;
        }
        let mut out = Vec::with_capacity(parts.iter().map(|(_, v)| v.len()).sum());
        for (_, v) in &parts {
            out.extend_from_slice(v);
        }
        Ok((shape, out))
    }
}
