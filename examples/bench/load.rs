//! Latency under a fixed load, and what Redis spends per job (issue #19).
//!
//! [`open_loop`] offers jobs at a fixed rate, whatever the answers (a client that waits for its
//! answers before sending more, as the throughput run does, slows down with the server and hides
//! queueing): the end-to-end latency at half the peak rate, against the idle latency, says how
//! much a loaded orchestrator makes each job wait. [`RedisProbe`] reads Redis's own CPU time
//! (`INFO cpu`) and the orchestrator's count of requests sent to Redis
//! (`orchestrator_redis_round_trips_total` on `/metrics`), before and after a run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use avto::client::Client;
use avto::storage::redis::client as redis;
use avto::storage::redis::RedisConn;

use crate::{run_job, Waiters};

/// Creates `jobs` echo jobs at `rate` per second, each started on time whether or not earlier
/// ones have ended, and returns each job's end-to-end latency (sorted) and the rate achieved.
pub(crate) async fn open_loop(
    client: &Client,
    hook: &str,
    waiters: &Waiters,
    rate: f64,
    jobs: usize,
) -> (Vec<Duration>, f64) {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(jobs);
    let mut sent = 0;
    while sent < jobs {
        // Timers tick once a millisecond: start every job that is due by now, then sleep.
        let due = ((started.elapsed().as_secs_f64() * rate) as usize + 1).min(jobs);
        while sent < due {
            let (client, hook, waiters) = (client.clone(), hook.to_owned(), Arc::clone(waiters));
            tasks.push(tokio::spawn(async move { run_job(&client, &hook, &waiters, sent).await }));
            sent += 1;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let offered_for = started.elapsed();
    let mut lat = Vec::with_capacity(jobs);
    for t in tasks {
        lat.push(t.await.unwrap());
    }
    lat.sort();
    (lat, jobs as f64 / offered_for.as_secs_f64())
}

/// Redis's CPU time and the orchestrator's Redis round trips, read together.
pub(crate) struct RedisProbe {
    conn: RedisConn,
    http: reqwest::Client,
    metrics_url: String,
    admin_token: String,
}

/// One reading of a [`RedisProbe`].
#[derive(Clone, Copy)]
pub(crate) struct RedisReading {
    /// Redis's `used_cpu_user + used_cpu_sys`, seconds (the whole server: other clients count).
    cpu_s: f64,
    /// `orchestrator_redis_round_trips_total`, when the orchestrator exposes it.
    round_trips: Option<f64>,
}

impl RedisProbe {
    pub(crate) fn new(url: &str, prefix: &str, base: &str, admin_token: &str) -> Self {
        RedisProbe {
            conn: RedisConn::open(url, prefix).expect("a valid REDIS_URL"),
            http: reqwest::Client::new(),
            metrics_url: format!("{base}/metrics"),
            admin_token: admin_token.to_owned(),
        }
    }

    pub(crate) async fn read(&self) -> RedisReading {
        let info: String = self.conn.query(redis::cmd("INFO").arg("cpu")).await.unwrap_or_default();
        let field = |name: &str| {
            info.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0)
        };
        let cpu_s = field("used_cpu_user:") + field("used_cpu_sys:");
        let page = self.http.get(&self.metrics_url).bearer_auth(&self.admin_token).send().await;
        let page = match page {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            _ => String::new(),
        };
        let round_trips = page
            .lines()
            .filter(|l| l.starts_with("orchestrator_redis_round_trips_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .reduce(|a, b| a + b);
        RedisReading { cpu_s, round_trips }
    }
}

/// Per job between two readings: (Redis CPU us, round trips).
pub(crate) fn per_job(before: RedisReading, after: RedisReading, jobs: usize) -> (f64, Option<f64>) {
    let n = jobs.max(1) as f64;
    let cpu = (after.cpu_s - before.cpu_s) * 1e6 / n;
    let trips = before.round_trips.zip(after.round_trips).map(|(b, a)| (a - b) / n);
    (cpu, trips)
}
