//! Work accounting for benchmarks: wall time spent inside DataFusion queries, Delta/Parquet
//! writes and source reads, summed over the process. Orchestration overhead is the rest of a
//! pipeline's wall time (planning, Jinja, event storage, scheduling between steps).
//!
//! Only the outermost unit of work is counted: callers wrap a whole node build or a whole
//! extract in [`work`], never something nested inside another wrapped call, so concurrent
//! steps may make the sum exceed wall time (the benchmark reports it as measured).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static WORK_NANOS: AtomicU64 = AtomicU64::new(0);

/// Runs `f`, adding its wall time to the process's work counter.
pub async fn work<T>(f: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = f.await;
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    WORK_NANOS.fetch_add(nanos, Ordering::Relaxed);
    out
}

/// Total time counted by [`work`] since the process started (or the last [`reset`]).
pub fn work_time() -> Duration {
    Duration::from_nanos(WORK_NANOS.load(Ordering::Relaxed))
}

/// Sets the work counter back to zero.
pub fn reset() {
    WORK_NANOS.store(0, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_the_time_inside_work() {
        let before = work_time();
        work(tokio::time::sleep(Duration::from_millis(20))).await;
        assert!(work_time() - before >= Duration::from_millis(20));
    }
}
