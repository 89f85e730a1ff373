//! `bench --soak-every N`: the soak benchmark (issue #14). Streams `--jobs` jobs through the
//! orchestrator, `--concurrency` in flight, and at every N finished jobs prints the jobs/s and
//! end-to-end latency of that segment, the orchestrator's RSS and CPU per job, the bench's own
//! RSS and, on Redis, Redis `used_memory` and the number of keys under the run's prefix. At the
//! end: last / first of RSS, jobs/s and `used_memory`, against the targets (RSS and
//! `used_memory` at most 1.2x, jobs/s within 10%).
//!
//! The bench keeps nothing per job beyond the jobs in flight (a fixed-size latency histogram),
//! so its own memory stays flat however many jobs run.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use avto::storage::redis::client as redis;
use avto::storage::redis::RedisConn;

use super::{proc_stats, run_job, Wait, Waiters};

/// What a soak run talks to.
pub(crate) struct Target {
    pub client: avto::client::Client,
    pub hook: String,
    pub waiters: Waiters,
    /// The orchestrator's pid, for its RSS and CPU time.
    pub pid: Option<u32>,
    /// Redis (URL, key prefix) when the orchestrator stores in Redis.
    pub redis: Option<(String, String)>,
}

/// End-to-end latencies in 100 us buckets up to 5 s (the last bucket takes everything slower):
/// 400 KiB however many jobs run.
struct Hist(Vec<AtomicU64>);

impl Hist {
    const STEP_US: u64 = 100;
    const BUCKETS: usize = 50_000;

    fn new() -> Self {
        Hist((0..Self::BUCKETS).map(|_| AtomicU64::new(0)).collect())
    }

    fn record(&self, d: Duration) {
        let i = ((d.as_micros() as u64) / Self::STEP_US).min(Self::BUCKETS as u64 - 1);
        self.0[i as usize].fetch_add(1, Relaxed);
    }

    /// The percentiles `ps` (ms, bucket middles) of what was recorded since the last call; resets.
    fn take(&self, ps: &[f64]) -> Vec<f64> {
        let counts: Vec<u64> = self.0.iter().map(|c| c.swap(0, Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        ps.iter()
            .map(|p| {
                let want = ((total as f64 * p / 100.0).ceil() as u64).max(1);
                let mut seen = 0;
                let i = counts.iter().position(|c| {
                    seen += c;
                    seen >= want
                });
                (i.unwrap_or(0) as f64 + 0.5) * Self::STEP_US as f64 / 1000.0
            })
            .collect()
    }
}

/// One checkpoint's numbers.
struct Row {
    done: usize,
    jobs_per_s: f64,
    rss_kb: u64,
    redis_used: Option<u64>,
}

/// Redis `used_memory` (bytes) and the number of keys under the prefix (`SCAN`).
async fn redis_stats(conn: &RedisConn) -> (u64, u64) {
    let info: String = conn.query(redis::cmd("INFO").arg("memory")).await.unwrap_or_default();
    let used =
        info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let pattern = format!("{}*", conn.prefix());
    let (mut cursor, mut keys) = (0u64, 0u64);
    loop {
        let Ok((next, page)) = conn
            .query::<(u64, Vec<String>)>(
                redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(5000),
            )
            .await
        else {
            break;
        };
        keys += page.len() as u64;
        if next == 0 {
            break;
        }
        cursor = next;
    }
    (used, keys)
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Runs `jobs` jobs, `concurrency` in flight, with a checkpoint every `every` finished jobs, after
/// `warmup` of jobs that are not counted (so that what has a fixed lifetime, the 62 s replay
/// nonces, Redis claim answers and the retained jobs, has filled up before the first checkpoint).
pub(crate) async fn run(t: Target, jobs: usize, every: usize, concurrency: usize, warmup: Duration, header: String) {
    let t = Arc::new(t);
    let conn = t.redis.as_ref().map(|(url, prefix)| RedisConn::open(url, prefix).expect("a valid REDIS_URL"));
    let hist = Arc::new(Hist::new());
    let ok = Arc::new(AtomicUsize::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let me = Some(std::process::id());

    println!("{header}");
    let (rss0, _, _) = proc_stats(t.pid);
    let (own0, _, _) = proc_stats(me);
    println!("  before: orchestrator RSS {:.1} MiB, bench RSS {:.1} MiB", mib(rss0), mib(own0));
    if !warmup.is_zero() {
        let start = Instant::now();
        let mut n = 0usize;
        while start.elapsed() < warmup {
            let permit = sem.clone().acquire_owned().await.unwrap();
            let t2 = t.clone();
            tokio::spawn(async move {
                run_job(&t2.client, &t2.hook, &t2.waiters, usize::MAX - n).await;
                drop(permit);
            });
            n += 1;
        }
        drop(sem.acquire_many(concurrency as u32).await.unwrap());
        let (rss, _, _) = proc_stats(t.pid);
        println!(
            "  warm-up: {n} jobs in {:.0} s (not counted), orchestrator RSS {:.1} MiB",
            start.elapsed().as_secs_f64(),
            mib(rss)
        );
        let _ = hist.take(&[50.0]);
    }
    println!(
        "  {:>9} {:>6} {:>8} {:>7} {:>7} {:>9} {:>8} {:>9}{}",
        "jobs",
        "s",
        "jobs/s",
        "p50 ms",
        "p99 ms",
        "RSS MiB",
        "CPU us",
        "bench MiB",
        if conn.is_some() { "  redis used_memory MiB  keys" } else { "" }
    );
    let mut rows: Vec<Row> = Vec::new();
    let run_start = Instant::now();
    let mut seg_start = Instant::now();
    let mut seg_first = 0usize;
    let (_, _, mut cpu_start) = proc_stats(t.pid);
    for i in 0..jobs {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (t2, hist2, ok2) = (t.clone(), hist.clone(), ok.clone());
        tokio::spawn(async move {
            let d = run_job(&t2.client, &t2.hook, &t2.waiters, i).await;
            hist2.record(d);
            ok2.fetch_add(1, Relaxed);
            drop(permit);
        });
        let done = i + 1;
        if done % every != 0 && done != jobs {
            continue;
        }
        // Checkpoint: wait for the jobs in flight (a few hundred out of `every`), then measure
        // with nothing running, outside the segment's time.
        let all = sem.acquire_many(concurrency as u32).await.unwrap();
        let secs = seg_start.elapsed().as_secs_f64();
        let n = done - seg_first;
        let (rss, _, cpu) = proc_stats(t.pid);
        let (own, _, _) = proc_stats(me);
        let lat = hist.take(&[50.0, 99.0]);
        let jobs_per_s = n as f64 / secs;
        let cpu_us = (cpu - cpu_start) * 1e6 / n as f64;
        let mut line = format!(
            "  {done:>9} {:>6.0} {jobs_per_s:>8.0} {:>7.1} {:>7.1} {:>9.1} {cpu_us:>8.1} {:>9.1}",
            run_start.elapsed().as_secs_f64(),
            lat[0],
            lat[1],
            mib(rss),
            mib(own)
        );
        let mut redis_used = None;
        if let Some(conn) = &conn {
            let (used, keys) = redis_stats(conn).await;
            line.push_str(&format!("  {:>21.1} {keys:>5}", used as f64 / (1024.0 * 1024.0)));
            redis_used = Some(used);
        }
        // With no job in flight, a webhook nobody waits for came a second time (delivery is at
        // least once): forget it, so the bench stays flat, and count it.
        let unclaimed = {
            let mut w = t.waiters.lock().unwrap();
            let before = w.len();
            w.retain(|_, v| matches!(v, Wait::Waiting(_)));
            before - w.len()
        };
        if unclaimed > 0 {
            line.push_str(&format!("  ({unclaimed} repeated webhooks)"));
        }
        let finished = ok.load(Relaxed);
        if finished != done {
            line.push_str(&format!("  ({} jobs did not finish)", done - finished));
        }
        println!("{line}");
        rows.push(Row { done, jobs_per_s, rss_kb: rss, redis_used });
        drop(all);
        seg_first = done;
        seg_start = Instant::now();
        cpu_start = proc_stats(t.pid).2;
    }

    let (Some(first), Some(last)) = (rows.first(), rows.last()) else { return };
    if rows.len() < 2 {
        println!("  (one checkpoint only: nothing to compare)");
        return;
    }
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    // The second half alone: what is left once everything with a fixed lifetime (retention, the
    // 62 s replay nonces, Redis claim answers) has filled up.
    let mid = rows.iter().find(|r| r.done >= jobs / 2).unwrap_or(first);
    if t.pid.is_some() {
        let r = last.rss_kb as f64 / first.rss_kb.max(1) as f64;
        let h = last.rss_kb as f64 / mid.rss_kb.max(1) as f64;
        println!(
            "  orchestrator RSS last/first   {r:.3}  (target at most 1.2: {}); last/{} jobs {h:.3}",
            verdict(r <= 1.2),
            mid.done
        );
    }
    let r = last.jobs_per_s / first.jobs_per_s;
    let h = last.jobs_per_s / mid.jobs_per_s;
    println!(
        "  jobs/s last/first             {r:.3}  (target within 10%: {}); last/{} jobs {h:.3}",
        verdict((r - 1.0).abs() <= 0.1),
        mid.done
    );
    if let (Some(a), Some(m), Some(b)) = (first.redis_used, mid.redis_used, last.redis_used) {
        let r = b as f64 / a.max(1) as f64;
        let h = b as f64 / m.max(1) as f64;
        println!(
            "  Redis used_memory last/first  {r:.3}  (at most 1.2: {}); last/{} jobs {h:.3} (plateau, at most 1.2: {})",
            verdict(r <= 1.2),
            mid.done,
            verdict(h <= 1.2)
        );
    }
}
