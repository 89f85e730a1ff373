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

use crate::{run_job_with_id, Waiters};

/// One job of an open-loop run: when it was started (from the run's start) and how long it took.
#[derive(Clone)]
pub(crate) struct Sample {
    pub(crate) start: Duration,
    pub(crate) latency: Duration,
    /// The job (for [`stages`]).
    pub(crate) id: Arc<str>,
    /// When it was started, epoch milliseconds.
    pub(crate) start_epoch_ms: f64,
}

/// Creates `jobs` echo jobs at `rate` per second, each started on time whether or not earlier
/// ones have ended, and returns every job (in start order) and the rate achieved.
pub(crate) async fn open_loop(
    client: &Client,
    hook: &str,
    waiters: &Waiters,
    rate: f64,
    jobs: usize,
) -> (Vec<Sample>, f64) {
    let started = Instant::now();
    let epoch_ms = epoch_ms();
    let mut tasks = Vec::with_capacity(jobs);
    let mut sent = 0;
    while sent < jobs {
        // Timers tick once a millisecond: start every job that is due by now, then sleep.
        let due = ((started.elapsed().as_secs_f64() * rate) as usize + 1).min(jobs);
        while sent < due {
            let (client, hook, waiters) = (client.clone(), hook.to_owned(), Arc::clone(waiters));
            let start = started.elapsed();
            tasks.push(tokio::spawn(async move {
                let (id, latency) = run_job_with_id(&client, &hook, &waiters, sent).await;
                Sample { start, latency, id: id.into(), start_epoch_ms: epoch_ms + start.as_secs_f64() * 1e3 }
            }));
            sent += 1;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let offered_for = started.elapsed();
    let mut samples = Vec::with_capacity(jobs);
    for t in tasks {
        samples.push(t.await.unwrap());
    }
    (samples, jobs as f64 / offered_for.as_secs_f64())
}

fn epoch_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0)
}

/// Where the `n` slowest jobs of an open-loop run spent their time, beside `n` jobs around the
/// median: each job's `created_at_ms` and `updated_at_ms` (its end, for an echo job) read back
/// from the orchestrator split its latency into the create request, the orchestration (create
/// to end: dispatch, worker, result) and the webhook (end to its arrival). Per group: its name,
/// the jobs read back, and their means in ms (create, orchestration, webhook).
pub(crate) async fn stages(client: &Client, samples: &[Sample], n: usize) -> Vec<(&'static str, usize, [f64; 3])> {
    let mut by_latency: Vec<&Sample> = samples.iter().collect();
    by_latency.sort_by_key(|s| s.latency);
    let mid = by_latency.len() / 2;
    let groups = [
        ("slowest", &by_latency[by_latency.len().saturating_sub(n)..]),
        ("median", &by_latency[mid.saturating_sub(n / 2)..(mid + n / 2).min(by_latency.len())]),
    ];
    let mut out = Vec::new();
    for (name, group) in groups {
        let mut sum = [0.0; 3];
        let mut seen = 0.0;
        for s in group.iter() {
            let Ok(job) = client.get(&s.id).await else { continue };
            let ms = |field: &str| job.raw.get(field).and_then(serde_json::Value::as_f64);
            let (Some(created), Some(ended)) = (ms("created_at_ms"), ms("updated_at_ms")) else { continue };
            let arrived = s.start_epoch_ms + s.latency.as_secs_f64() * 1e3;
            sum[0] += created - s.start_epoch_ms;
            sum[1] += ended - created;
            sum[2] += arrived - ended;
            seen += 1.0;
        }
        if seen > 0.0 {
            out.push((name, seen as usize, sum.map(|v| v / seen)));
        }
    }
    out
}

/// The latency over time of an open-loop run, in windows of `window` by start time: where the
/// slow jobs are. A p99 made by a few stalls shows as a few windows whose max is far above the
/// rest; steady queueing as a high p50 in every window.
pub(crate) struct Trace {
    /// Per window: (start of the window, jobs started in it, their p50, their max).
    pub(crate) windows: Vec<(Duration, usize, Duration, Duration)>,
}

impl Trace {
    pub(crate) fn new(samples: &[Sample], window: Duration) -> Trace {
        let mut windows: Vec<Vec<Duration>> = Vec::new();
        for s in samples {
            let i = (s.start.as_nanos() / window.as_nanos().max(1)) as usize;
            if windows.len() <= i {
                windows.resize_with(i + 1, Vec::new);
            }
            windows[i].push(s.latency);
        }
        let windows = windows
            .into_iter()
            .enumerate()
            .filter(|(_, w)| !w.is_empty())
            .map(|(i, mut w)| {
                w.sort();
                (window * i as u32, w.len(), w[w.len() / 2], w[w.len() - 1])
            })
            .collect();
        Trace { windows }
    }

    /// The `n` windows with the slowest job, slowest first.
    pub(crate) fn worst(&self, n: usize) -> Vec<(Duration, usize, Duration, Duration)> {
        let mut w = self.windows.clone();
        w.sort_by_key(|w| std::cmp::Reverse(w.3));
        w.truncate(n);
        w
    }

    /// Windows whose slowest job took more than `limit`, and the jobs in them that did.
    pub(crate) fn over(&self, samples: &[Sample], limit: Duration) -> (usize, usize) {
        let windows = self.windows.iter().filter(|w| w.3 > limit).count();
        let jobs = samples.iter().filter(|s| s.latency > limit).count();
        (windows, jobs)
    }

    /// Writes every job as `start_ms,latency_ms` (CSV with a header), for plotting.
    pub(crate) fn write_csv(samples: &[Sample], path: &str) -> std::io::Result<()> {
        use std::fmt::Write as _;
        let mut out = String::from("start_ms,latency_ms\n");
        for s in samples {
            let _ = writeln!(out, "{:.3},{:.3}", s.start.as_secs_f64() * 1e3, s.latency.as_secs_f64() * 1e3);
        }
        std::fs::write(path, out)
    }
}

/// The orchestrator's `/metrics` page at `url`, read with the operator credential; None when
/// it cannot be read (no such credential there, or not avto).
async fn metrics_page(http: &reqwest::Client, url: &str, admin_token: &str) -> Option<String> {
    let r = http.get(url).bearer_auth(admin_token).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.text().await.ok()
}

/// The orchestrator's own view of where its jobs' time went (its `/metrics`, with the operator
/// credential): sums and counts of `avto_dispatch_latency_seconds` (a task's dispatch to a
/// worker's pick-up) and `avto_job_duration_seconds` (created to ended, every blueprint).
#[derive(Clone, Copy, Default)]
pub(crate) struct StageTimes {
    dispatch: (f64, f64),
    duration: (f64, f64),
}

impl StageTimes {
    /// None when the page cannot be read (an orchestrator without that credential, or not avto).
    pub(crate) async fn read(http: &reqwest::Client, base: &str, admin_token: &str) -> Option<StageTimes> {
        let page = metrics_page(http, &format!("{base}/metrics"), admin_token).await?;
        let mut t = StageTimes::default();
        for line in page.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else { continue };
            let Ok(v) = value.parse::<f64>() else { continue };
            match name.split('{').next().unwrap_or(name) {
                "avto_dispatch_latency_seconds_sum" => t.dispatch.0 += v,
                "avto_dispatch_latency_seconds_count" => t.dispatch.1 += v,
                "avto_job_duration_seconds_sum" => t.duration.0 += v,
                "avto_job_duration_seconds_count" => t.duration.1 += v,
                _ => {}
            }
        }
        Some(t)
    }

    /// The means between two readings, in ms: (dispatch to pick-up, created to ended); None
    /// when no task or no job was counted in between.
    pub(crate) fn means_ms(before: StageTimes, after: StageTimes) -> Option<(f64, f64)> {
        let mean = |b: (f64, f64), a: (f64, f64)| {
            let n = a.1 - b.1;
            (n > 0.0).then(|| (a.0 - b.0) / n * 1e3)
        };
        Some((mean(before.dispatch, after.dispatch)?, mean(before.duration, after.duration)?))
    }
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
    /// `INFO commandstats`: (calls, usec) of script calls (`FCALL`, `EVALSHA`, ...), and of every
    /// other command, those a script makes included.
    scripts: (f64, f64),
    commands: (f64, f64),
}

/// Where Redis's command time went, per job (see [`per_job`]).
#[derive(Clone, Copy)]
pub(crate) struct RedisTime {
    /// Time inside script calls, theirs and their commands', us.
    pub(crate) scripts_us: f64,
    /// Time in commands (those scripts make, and any others), us, and how many.
    pub(crate) commands_us: f64,
    pub(crate) commands: f64,
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
        let page = metrics_page(&self.http, &self.metrics_url, &self.admin_token).await.unwrap_or_default();
        let round_trips = page
            .lines()
            .filter(|l| l.starts_with("orchestrator_redis_round_trips_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .reduce(|a, b| a + b);
        let stats: String = self.conn.query(redis::cmd("INFO").arg("commandstats")).await.unwrap_or_default();
        let (mut scripts, mut commands) = ((0.0, 0.0), (0.0, 0.0));
        for line in stats.lines() {
            let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
            let field = |key: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let slot = if matches!(name, "fcall" | "fcall_ro" | "evalsha" | "evalsha_ro" | "eval" | "eval_ro") {
                &mut scripts
            } else {
                &mut commands
            };
            slot.0 += field("calls");
            slot.1 += field("usec");
        }
        RedisReading { cpu_s, round_trips, scripts, commands }
    }
}

/// Per job between two readings: (Redis CPU us, round trips, command time).
pub(crate) fn per_job(before: RedisReading, after: RedisReading, jobs: usize) -> (f64, Option<f64>, RedisTime) {
    let n = jobs.max(1) as f64;
    let cpu = (after.cpu_s - before.cpu_s) * 1e6 / n;
    let trips = before.round_trips.zip(after.round_trips).map(|(b, a)| (a - b) / n);
    let time = RedisTime {
        scripts_us: (after.scripts.1 - before.scripts.1) / n,
        commands_us: (after.commands.1 - before.commands.1) / n,
        commands: (after.commands.0 - before.commands.0) / n,
    };
    (cpu, trips, time)
}
