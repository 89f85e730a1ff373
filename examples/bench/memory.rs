//! `bench --retained N`: memory per retained finished job (issue #19). Runs N echo jobs to
//! completion, `--concurrency` in flight, each with a webhook like the normal run, against an
//! orchestrator that keeps every finished job (a long retention and no cap on kept jobs), and
//! prints (orchestrator RSS after - RSS before) / N.
//!
//! Before the "before" reading a warm-up of a few rounds of `--concurrency` jobs runs at full
//! concurrency, so what a busy orchestrator allocates once (connection buffers, task slots, the
//! allocator's per-thread pages) is counted in neither reading; after the N jobs it waits for the
//! last webhooks' bookkeeping and lets the process settle before the "after" reading.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{proc_stats, run_job, Wait, Waiters};

/// What a memory run talks to.
pub(crate) struct Target {
    pub client: avto::client::Client,
    pub hook: String,
    pub waiters: Waiters,
    /// The orchestrator's pid, for its RSS.
    pub pid: Option<u32>,
}

/// The result of a run.
pub(crate) struct Retained {
    pub jobs: usize,
    pub rss_before_kb: u64,
    pub rss_after_kb: u64,
}

impl Retained {
    pub fn bytes_per_job(&self) -> f64 {
        (self.rss_after_kb as f64 - self.rss_before_kb as f64) * 1024.0 / self.jobs.max(1) as f64
    }
}

/// How long the orchestrator is left alone before each RSS reading.
const SETTLE: Duration = Duration::from_secs(2);

/// Runs `jobs` jobs starting at number `first`, `concurrency` in flight, and waits for all.
async fn stream(t: &Arc<Target>, first: usize, jobs: usize, concurrency: usize) {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    for i in first..first + jobs {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let t2 = t.clone();
        tokio::spawn(async move {
            run_job(&t2.client, &t2.hook, &t2.waiters, i).await;
            drop(permit);
        });
    }
    drop(sem.acquire_many(concurrency as u32).await.unwrap());
    // A webhook delivered twice (delivery is at least once) waits for nobody: forget it.
    t.waiters.lock().unwrap().retain(|_, v| matches!(v, Wait::Waiting(_)));
}

/// Runs the measurement and prints its line; `None` without the orchestrator's pid.
pub(crate) async fn run(t: Target, jobs: usize, concurrency: usize, label: &str) -> Option<Retained> {
    let Some(pid) = t.pid else {
        eprintln!("--retained needs the orchestrator's pid (start it here, or pass --target-pid)");
        return None;
    };
    let t = Arc::new(t);
    let concurrency = concurrency.max(1);
    let warmup = concurrency * 4;
    stream(&t, 1_000_000_000, warmup, concurrency).await;
    tokio::time::sleep(SETTLE).await;
    let (rss_before_kb, _, _) = proc_stats(Some(pid));
    let started = Instant::now();
    stream(&t, 0, jobs, concurrency).await;
    let secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let (rss_after_kb, _, _) = proc_stats(Some(pid));
    let r = Retained { jobs, rss_before_kb, rss_after_kb };
    let mib = |kb: u64| kb as f64 / 1024.0;
    println!(
        "{label} memory per retained finished job: {:.0} bytes ({jobs} jobs in {secs:.1} s after {warmup} warm-up jobs, \
         RSS {:.1} -> {:.1} MiB)",
        r.bytes_per_job(),
        mib(rss_before_kb),
        mib(rss_after_kb)
    );
    Some(r)
}
