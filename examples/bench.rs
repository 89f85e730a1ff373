//! `cargo run --release --example bench -- [--jobs 20000] [--workers 4] [--concurrency 256] [--waiting 100000]`
//! (`--help` lists every flag and its default.)
//!
//!
//! Starts the orchestrator (`echo_server`, a separate process, so its CPU time and memory are its
//! own), N in-process Rust SDK workers with the `echo` skill, then submits J jobs of the one-task
//! blueprint through the client API (`avto::client`) and waits for each through its webhook. Prints jobs/s,
//! p50/p99 end-to-end latency, single-job latency when idle, the latency at half the peak rate
//! (`--half-load`: jobs offered at a steady pace, `--settle` seconds after the throughput run,
//! with the latency over time: the slowest 100 ms windows, every job with `--trace-out`; see
//! examples/bench/load.rs), the orchestrator's
//! peak RSS and CPU time per job, and memory per job waiting for approval. With `REDIS_URL` the
//! orchestrator runs on Redis under a fresh key prefix (deleted afterwards; `REDIS_KEY_PREFIX`
//! names one instead), and Redis's CPU and round trips per job are printed too. Extra environment (e.g. `REDIS_URL`)
//! is passed to the orchestrator. Loopback only. `--prefill N` (Redis) stores N finished jobs of
//! the run's client under the prefix first, so the run measures a Redis that holds a deployment's
//! retained jobs (their query indexes and retention entries) rather than an empty one.
//!
//! `--target http://127.0.0.1:PORT [--target-pid PID]` drives an orchestrator that is already
//! running instead (the Python reference, say, with the same tokens: `bench-client-token`,
//! `bench-worker-token`, `bench-orchestrator-secret`) with the same client and the same Rust
//! workers, so two orchestrators can be compared under one load; `--label L --json-out FILE`
//! also writes the numbers as JSON. The approval test needs the `approval` blueprint and is
//! skipped for a target (`--waiting 0`).
//!
//! `--soak-every N` runs the soak benchmark instead (issue #14; see examples/bench/soak.rs):
//! `--jobs` jobs streamed `--concurrency` at a time with a short retention (`--retention`,
//! passed to the orchestrator as `JOB_RETENTION_SECONDS`), the orchestrator's RSS, jobs/s and
//! (with `REDIS_URL`) Redis `used_memory` printed every N jobs, and last/first ratios at the end.
//! On Redis it uses `REDIS_KEY_PREFIX` or, unset, a fresh prefix, and deletes that prefix's keys
//! afterwards (not with `--target`).
//!
//! `--compile-states 0,10,25,50,100` runs the compile-time benchmark instead (issue #19; see
//! examples/bench/compile.rs): per N, the incremental debug build time of a crate holding an
//! N-state blueprint, the time added over an empty main and per state; `--compile-dylib` also
//! with avto linked through `avto-dylib`.
//!
//! `--query-jobs N` runs the job-query benchmark instead (issue #18; see examples/bench/query.rs):
//! N jobs stored straight into the memory store (and Redis with `REDIS_URL`), then the times of
//! first, next and filtered pages and of counts, in the store and over HTTP (the dashboard's
//! `GET /ui/api/jobs` and `/ui/api/jobs/count`, signed in as the operator and as a client).
//!
//! `--retained N` measures memory per retained finished job instead (issue #19; see
//! examples/bench/memory.rs): N echo jobs with webhooks run to completion against an orchestrator
//! that keeps them all (`MAX_RETAINED_JOBS=0`, the default 7-day retention unless `--retention`),
//! and (RSS after - RSS before) / N is printed.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avto::client::{Client, ClientError, NewJob};
use avto::worker::{TaskHandle, TaskOutcome, Worker};
use avto::JobStatus;
use serde_json::{json, Value};
use tokio::sync::oneshot;

#[path = "bench/compile.rs"]
mod compile;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/memory.rs"]
mod memory;
#[path = "bench/query.rs"]
mod query;
#[path = "bench/soak.rs"]
mod soak;

// The same allocator as echo_server: the client and workers are the same for every orchestrator
// measured, so a cheaper client leaves more of the machine to the orchestrator under test.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CT: &str = "bench-client-token";
const WT: &str = "bench-worker-token";
const SK: &str = "bench-orchestrator-secret";
/// The orchestrator's ADMIN_TOKEN (for `/metrics`) when this program starts it.
const AT: &str = "bench-admin-token";

/// Benchmark of the avto orchestrator (or, with --target, of one already running); see the doc
/// comment of examples/bench.rs. Loopback only.
#[derive(clap::Parser)]
#[command(name = "bench")]
struct Args {
    /// Jobs to submit
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// In-process Rust SDK workers with the `echo` skill
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Jobs in flight at once (also each worker's max concurrent tasks)
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Single jobs submitted one at a time when idle, for the idle latency
    #[arg(long, default_value_t = 300)]
    idle: usize,
    /// After the throughput run, offer jobs at half the peak rate it reached for SECS (open loop:
    /// each job starts on time whatever the answers) and print the end-to-end p50/p99 against the
    /// idle p50 (0 skips)
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    half_load: f64,
    /// With --half-load: pause SECS between the throughput run and the half-load run, so the
    /// half-load run starts from a settled orchestrator (the watcher passes every second)
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    settle: f64,
    /// With --half-load: offer jobs at this many per second instead of half the peak (to compare
    /// two setups at the same load; the ratio printed is still to the idle p50)
    #[arg(long, value_name = "JOBS_PER_S")]
    rate: Option<f64>,
    /// With --half-load: write every job of the half-load run as `start_ms,latency_ms` to FILE
    /// (the latency over time; the worst 100 ms windows are printed either way)
    #[arg(long, value_name = "FILE")]
    trace_out: Option<String>,
    /// Jobs left waiting for approval, for the memory per waiting job (0 skips; always 0 with --target)
    #[arg(long, default_value_t = 100_000)]
    waiting: usize,
    /// API port of the orchestrator this program starts
    #[arg(long, default_value_t = 18281)]
    port: u16,
    /// Drive an already running orchestrator at this URL (http://127.0.0.1:PORT) instead
    #[arg(long, value_name = "URL", value_parser = |s: &str| Ok::<_, String>(s.trim_end_matches('/').to_owned()))]
    target: Option<String>,
    /// PID of the --target orchestrator, for its RSS and CPU time
    #[arg(long, value_name = "PID")]
    target_pid: Option<u32>,
    /// Name of this run in the output and the JSON
    #[arg(long, default_value = "avto")]
    label: String,
    /// Also write the numbers as JSON to FILE
    #[arg(long, value_name = "FILE")]
    json_out: Option<String>,
    /// Soak benchmark instead: stream --jobs jobs and print RSS, jobs/s (and Redis used_memory
    /// with REDIS_URL) every N jobs, then the last/first ratios
    #[arg(long, value_name = "N")]
    soak_every: Option<usize>,
    /// JOB_RETENTION_SECONDS of the orchestrator this program starts [default: its own; 5 with
    /// --soak-every]
    #[arg(long, value_name = "SECS")]
    retention: Option<f64>,
    /// With --soak-every: stream jobs for SECS before the first segment, not counted, so that
    /// what lives a fixed time (retained jobs, the 62 s replay nonces) has filled up
    #[arg(long, value_name = "SECS", default_value_t = 75.0)]
    soak_warmup: f64,
    /// Job-query benchmark instead (issue #18): store N jobs straight into the memory store (and
    /// Redis with REDIS_URL, under a fresh prefix deleted afterwards) and time first, next and
    /// filtered pages and counts, in the store and over HTTP (`/ui/api/jobs` of an orchestrator
    /// serving the stored jobs)
    #[arg(long, value_name = "N")]
    query_jobs: Option<usize>,
    /// Memory per retained finished job instead (issue #19): run N echo jobs with webhooks to
    /// completion against an orchestrator that keeps every finished job (MAX_RETAINED_JOBS=0)
    /// and print (RSS after - RSS before) / N (`retained_bytes_per_job` in --json-out)
    #[arg(long, value_name = "N")]
    retained: Option<usize>,
    /// With REDIS_URL: before the run, store N finished echo jobs of the run's client straight
    /// into the Redis store under the run's prefix (ended over the last retention, 7 days unless
    /// --retention), so the run measures Redis holding that many retained jobs (their query
    /// indexes, retention entries and documents), as a deployment keeping a week of jobs does
    #[arg(long, value_name = "N")]
    prefill: Option<usize>,
    /// Compile-time benchmark instead (issue #19): for each N of the list, a binary crate with an
    /// N-state blueprint (each state dispatches a task with two transitions; 0 = an empty main),
    /// built once, then the median of 5 incremental debug builds after a comment edit and after a
    /// line edit, the time added over an empty main, over one linking avto's runtime and per
    /// state, and the linearity (see examples/bench/compile.rs)
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    compile_states: Option<Vec<usize>>,
    /// With --compile-states: measure every crate but the empty main a second time, linked
    /// through avto-dylib (avto as one shared object, for faster debug links; see README.md)
    #[arg(long, requires = "compile_states")]
    compile_dylib: bool,
}

fn args() -> Args {
    <Args as clap::Parser>::parse()
}

/// Orchestrator process stats from /proc: (rss kB, peak rss kB, cpu seconds).
fn proc_stats(pid: Option<u32>) -> (u64, u64, f64) {
    let Some(pid) = pid else { return (0, 0, 0.0) };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of /proc/pid/stat (11 and 12 after the command name).
    let cpu = (ticks(11) + ticks(12)) as f64 / 100.0;
    (kb("VmRSS:"), kb("VmHWM:"), cpu)
}

struct Orchestrator(Child);
impl Drop for Orchestrator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Per job id: who waits for its webhook, or when it arrived if nobody waited yet.
enum Wait {
    Waiting(oneshot::Sender<Instant>),
    Done(Instant),
}

type Waiters = Arc<Mutex<HashMap<String, Wait>>>;

async fn hook_server(waiters: Waiters) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let waiters = waiters.clone();
            async move {
                let now = Instant::now();
                // Only the job id is needed: read it without building the whole body as a Value.
                #[derive(serde::Deserialize)]
                struct Hook<'a> {
                    #[serde(borrow)]
                    job_id: std::borrow::Cow<'a, str>,
                }
                if let Ok(hook) = serde_json::from_slice::<Hook<'_>>(&body) {
                    let mut w = waiters.lock().unwrap();
                    match w.remove(hook.job_id.as_ref()) {
                        Some(Wait::Waiting(tx)) => {
                            let _ = tx.send(now);
                        }
                        _ => {
                            w.insert(hook.job_id.into_owned(), Wait::Done(now));
                        }
                    }
                }
                "ok"
            }
        }),
    );
    // The orchestrator's webhook client opens many connections at a run's start: the listen
    // backlog of avto's own listener, not 128, keeps their SYNs from being dropped (1 s each).
    let listener = avto::server::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Creates one echo job (through `avto::client`) and waits for its webhook.
async fn run_job(client: &Client, hook: &str, waiters: &Waiters, i: usize) -> Duration {
    run_job_with_id(client, hook, waiters, i).await.1
}

/// [`run_job`], with the job's id.
async fn run_job_with_id(client: &Client, hook: &str, waiters: &Waiters, i: usize) -> (String, Duration) {
    let started = Instant::now();
    let job = NewJob::new(json!({"i": i})).webhook_url(hook);
    // A pooled connection the server closed as it was reused answers with a reset: try again
    // (a few times; a job created all the same only adds an unclaimed webhook).
    let mut attempt = 0;
    let id = loop {
        match client.create_job("jobs/echo", &job).await {
            Ok(id) => break id.0,
            Err(ClientError::Transport { source, .. }) if attempt < 3 && source.is_request() => attempt += 1,
            Err(e) => panic!("create a job: {e}"),
        }
    };
    let (tx, rx) = oneshot::channel();
    {
        // The webhook may arrive before the create answer has been read.
        let mut w = waiters.lock().unwrap();
        if let Some(Wait::Done(done)) = w.remove(&id) {
            return (id, done - started);
        }
        w.insert(id.clone(), Wait::Waiting(tx));
    }
    // Webhooks are retried by the orchestrator; poll as a last resort.
    let latency = match tokio::time::timeout(Duration::from_secs(60), rx).await {
        Ok(Ok(done)) => done - started,
        _ => {
            waiters.lock().unwrap().remove(&id);
            let done = loop {
                match client.get(&id).await {
                    Ok(job) if job.status == JobStatus::Finished => break Instant::now(),
                    Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                    // 404: the job ended and retention (JOB_RETENTION_SECONDS) already removed it.
                    Err(e) if e.is_not_found() => break Instant::now(),
                    Err(e) => panic!("job {id}: {e}"),
                }
            };
            done - started
        }
    };
    (id, latency)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN; // `--idle 0`: no idle jobs to read a percentile from
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let a = args();
    if let Some(counts) = &a.compile_states {
        compile::run(counts, a.compile_dylib, a.json_out.as_deref());
        return;
    }
    if let Some(n) = a.query_jobs {
        query::run(n).await;
        return;
    }
    let soak_every = a.soak_every.map(|n| n.max(1));
    // Redis (URL, key prefix) of the run; a run that starts its orchestrator gets a prefix of its
    // own unless REDIS_KEY_PREFIX names one.
    let redis = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            let prefix = std::env::var("REDIS_KEY_PREFIX").ok().filter(|p| !p.is_empty());
            let prefix = prefix.unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
                let kind = if soak_every.is_some() { "soak" } else { "bench" };
                format!("{kind}-{}-{}:", std::process::id(), nanos % 1_000_000_000)
            });
            Some((url, prefix))
        }
        _ => None,
    };
    let retention = a.retention.or(soak_every.map(|_| 5.0));
    if let Some(n) = a.prefill.filter(|&n| n > 0) {
        let Some((url, prefix)) = &redis else {
            eprintln!("--prefill stores jobs into Redis: set REDIS_URL");
            std::process::exit(2);
        };
        let week = Duration::from_secs(7 * 86_400);
        query::prefill(url, prefix, n, retention.map_or(week, Duration::from_secs_f64)).await;
    }
    let (base, pid, orch) = match &a.target {
        Some(url) => (url.clone(), a.target_pid, None),
        None => {
            let exe = std::env::current_exe().unwrap();
            let server_bin = exe.with_file_name("echo_server");
            assert!(
                server_bin.exists(),
                "build it first: cargo build --release -p avto-examples --example echo_server"
            );
            let mut cmd = Command::new(&server_bin);
            if let Some(secs) = retention {
                cmd.env("JOB_RETENTION_SECONDS", secs.to_string());
            }
            if a.retained.is_some() {
                cmd.env("MAX_RETAINED_JOBS", "0");
            }
            if let Some((_, prefix)) = &redis {
                cmd.env("REDIS_KEY_PREFIX", prefix);
            }
            let child = cmd
                .env("API_HOST", "127.0.0.1")
                .env("API_PORT", a.port.to_string())
                .env("CLIENT_TOKEN", CT)
                .env("GLOBAL_WORKER_TOKEN", WT)
                .env("ADMIN_TOKEN", AT)
                .env("ORCHESTRATOR_SECRET_KEY", SK)
                .env("RATE_LIMITING_ENABLED", "false")
                .env("WEBHOOK_ALLOW_PRIVATE", "true")
                .env("LOG_LEVEL", "warn")
                .env("EXECUTOR_MAX_CONCURRENT_JOBS", "10000")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start echo_server");
            (format!("http://127.0.0.1:{}", a.port), Some(child.id()), Some(Orchestrator(child)))
        }
    };
    let waiting = if a.target.is_some() { 0 } else { a.waiting };
    // The typed client's own pooled connections (a plain http:// orchestrator: not reqwest's).
    let client = Client::new(base.clone(), CT);
    for _ in 0..100 {
        if client.raw(reqwest::Method::GET, "/_public/status", None).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for w in 0..a.workers {
        let worker = Worker::builder()
            .worker_id(format!("bench-rust-{w}"))
            .orchestrator_url(base.clone())
            .token(WT)
            .secret_key(SK)
            .max_concurrent_tasks(a.concurrency)
            .task(
                "echo",
                |params: Value, _task: TaskHandle| async move { TaskOutcome::success(json!({"echo": params})) },
            )
            .build()
            .unwrap();
        let mut stop = stop_rx.clone();
        tokio::spawn(worker.run_until(async move {
            let _ = stop.changed().await;
        }));
    }
    for _ in 0..200 {
        let (_, v) = client.raw(reqwest::Method::GET, "/api/v1/workers", None).await.unwrap();
        if v.as_array().map_or(0, Vec::len) >= a.workers {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waiters: Waiters = Arc::default();
    let hook = hook_server(waiters.clone()).await;

    // Warm-up.
    for i in 0..50 {
        run_job(&client, &hook, &waiters, i).await;
    }

    if let Some(n) = a.retained {
        let target = memory::Target { client, hook, waiters, pid };
        let r = memory::run(target, n, a.concurrency, &a.label).await;
        let _ = stop_tx.send(true);
        if let (Some(path), Some(r)) = (&a.json_out, r) {
            let out = json!({"label": a.label, "retained_jobs": n, "retained_bytes_per_job": r.bytes_per_job(),
                "rss_before_kib": r.rss_before_kb, "rss_after_kib": r.rss_after_kb});
            std::fs::write(path, serde_json::to_vec_pretty(&out).unwrap()).expect("write --json-out");
        }
        return;
    }

    if let Some(every) = soak_every {
        let store = redis.as_ref().map_or("memory".to_owned(), |(url, p)| format!("Redis {url} prefix {p}"));
        let retention = retention.map_or("the orchestrator's".to_owned(), |r| format!("{r} s"));
        let pid_text = pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        let header = format!(
            "{} soak: {} jobs, checkpoint every {every} after a {}s warm-up, {} Rust SDK workers, concurrency {}, retention {retention}, \
             store {store}, orchestrator {base} pid {pid_text}",
            a.label, a.jobs, a.soak_warmup, a.workers, a.concurrency
        );
        let target = soak::Target { client, hook, waiters, pid, redis: redis.clone() };
        soak::run(target, a.jobs, every, a.concurrency, Duration::from_secs_f64(a.soak_warmup.max(0.0)), header).await;
        let _ = stop_tx.send(true);
        drop(orch);
        if let (Some((url, prefix)), None) = (&redis, &a.target) {
            match avto::storage::redis::delete_prefix(url, prefix).await {
                Ok(n) => println!("  deleted {n} Redis keys under {prefix}"),
                Err(e) => eprintln!("could not delete the Redis keys under {prefix}: {e}"),
            }
        }
        return;
    }

    // Single-job latency when idle: one job at a time.
    let mut idle = Vec::with_capacity(a.idle);
    for i in 0..a.idle {
        idle.push(run_job(&client, &hook, &waiters, i).await);
    }
    idle.sort();

    // Throughput: J jobs, at most `concurrency` in flight.
    let probe = redis.as_ref().map(|(url, prefix)| load::RedisProbe::new(url, prefix, &base, AT));
    let redis_before = match &probe {
        Some(p) => Some(p.read().await),
        None => None,
    };
    let (_, _, cpu_before) = proc_stats(pid);
    let (_, _, own_before) = proc_stats(Some(std::process::id()));
    let sem = Arc::new(tokio::sync::Semaphore::new(a.concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(a.jobs);
    for i in 0..a.jobs {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (client, hook, waiters) = (client.clone(), hook.clone(), waiters.clone());
        tasks.push(tokio::spawn(async move {
            let d = run_job(&client, &hook, &waiters, i).await;
            drop(permit);
            d
        }));
    }
    let mut lat = Vec::with_capacity(a.jobs);
    for t in tasks {
        lat.push(t.await.unwrap());
    }
    let wall = started.elapsed();
    let (_, peak_kb, cpu_after) = proc_stats(pid);
    let (_, _, own_after) = proc_stats(Some(std::process::id()));
    let redis_per_job = match (&probe, redis_before) {
        (Some(p), Some(before)) => Some(load::per_job(before, p.read().await, a.jobs)),
        _ => None,
    };
    lat.sort();
    let jobs_per_s = a.jobs as f64 / wall.as_secs_f64();

    // Latency under load: half the peak rate, offered at a steady pace, once what the overload
    // left behind (webhooks still queued, the watcher's next pass over the jobs that ended) is
    // done: a steady load, not the tail of the previous run.
    let half = if a.half_load > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
        let rate = a.rate.unwrap_or(jobs_per_s / 2.0);
        let n = ((rate * a.half_load) as usize).max(1);
        let metrics = reqwest::Client::new();
        let before = load::StageTimes::read(&metrics, &base, AT).await;
        let run = load::open_loop(&client, &hook, &waiters, rate, n).await;
        let after = load::StageTimes::read(&metrics, &base, AT).await;
        let means = before.zip(after).and_then(|(b, a)| load::StageTimes::means_ms(b, a));
        Some((rate, run, means))
    } else {
        None
    };

    // Memory per job waiting for approval.
    let (rss_before, _, _) = proc_stats(pid);
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut creates = Vec::with_capacity(waiting);
    for _ in 0..waiting {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        creates.push(tokio::spawn(async move {
            client.create("jobs/approval", json!({})).await.expect("an approval job");
            drop(permit);
        }));
    }
    for c in creates {
        c.await.unwrap();
    }
    if waiting > 0 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (rss_after, _, _) = proc_stats(pid);
    let per_waiting = (rss_after.saturating_sub(rss_before) as f64 * 1024.0) / waiting.max(1) as f64;

    let _ = stop_tx.send(true);
    let cpu_us = |before: f64, after: f64| (after - before) * 1e6 / a.jobs as f64;
    let pid_text = pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
    println!(
        "{} bench: {} Rust SDK workers, {} jobs (concurrency {}), orchestrator {base} pid {pid_text}",
        a.label, a.workers, a.jobs, a.concurrency
    );
    println!("  throughput        {jobs_per_s:10.0} jobs/s");
    println!("  end-to-end        p50 {:.2} ms  p99 {:.2} ms", pct(&lat, 50.0), pct(&lat, 99.0));
    println!(
        "  idle single job   p50 {:.3} ms  p99 {:.3} ms  ({} jobs one at a time)",
        pct(&idle, 50.0),
        pct(&idle, 99.0),
        a.idle
    );
    // Where the slowest jobs of that run spent their time (read back before anything else runs).
    let half_stages = match &half {
        Some((_, (samples, _), _)) => load::stages(&client, samples, 20).await,
        None => Vec::new(),
    };
    let half_json = half.as_ref().map(|(rate, (samples, achieved), means)| {
        let mut lat_h: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        lat_h.sort();
        let (p50, p99, idle50) = (pct(&lat_h, 50.0), pct(&lat_h, 99.0), pct(&idle, 50.0));
        println!(
            "  {:<17} p50 {p50:.2} ms  p99 {p99:.2} ms  ({} jobs offered at {rate:.0}/s, achieved {achieved:.0}/s); \
             p99 / idle p50 = {:.1}",
            if a.rate.is_some() { "at --rate" } else { "at half the peak" },
            lat_h.len(),
            p99 / idle50
        );
        // Where the slow jobs are: a few stalls, or slow all along.
        let trace = load::Trace::new(samples, Duration::from_millis(100));
        // Without an idle run (`--idle 0`) there is no idle p50 to compare with.
        let (windows, slow) = match Duration::try_from_secs_f64(idle50 * 5e-3) {
            Ok(limit) => {
                let (windows, slow) = trace.over(samples, limit);
                println!(
                    "    over 5x idle p50 ({:.2} ms): {slow} jobs in {windows} of {} windows of 100 ms; slowest \
                     windows (start s: jobs, p50 / max ms):",
                    idle50 * 5.0,
                    trace.windows.len()
                );
                (windows, slow)
            }
            Err(_) => {
                println!("    slowest windows of 100 ms (start s: jobs, p50 / max ms):");
                (0, 0)
            }
        };
        let worst: Vec<String> = trace
            .worst(6)
            .iter()
            .map(|(at, n, p50, max)| {
                format!("{:.1}: {n}, {:.2} / {:.2}", at.as_secs_f64(), p50.as_secs_f64() * 1e3, max.as_secs_f64() * 1e3)
            })
            .collect();
        println!("      {}", worst.join("; "));
        for (group, jobs, [create, orchestration, webhook]) in &half_stages {
            println!(
                "    {group:>7} {jobs} jobs, mean ms: create request {create:.2}, created -> ended {orchestration:.2}, ended -> webhook arrived {webhook:.2}"
            );
        }
        // The orchestrator's side of the same run (an avto started by this program: its /metrics).
        if let Some((dispatch, duration)) = means {
            println!(
                "    orchestrator's means: dispatch -> picked up by a worker {dispatch:.2} ms, created -> ended \
                 {duration:.2} ms (its /metrics)"
            );
        }
        if let Some(path) = &a.trace_out {
            load::Trace::write_csv(samples, path).expect("write --trace-out");
        }
        json!({"offered_per_s": rate, "achieved_per_s": achieved, "jobs": lat_h.len(), "p50": p50, "p99": p99,
               "p99_over_idle_p50": p99 / idle50,
               "jobs_over_5x_idle_p50": slow, "windows_over_5x_idle_p50": windows, "windows": trace.windows.len(),
               "dispatch_to_pickup_ms_mean": means.map(|m| m.0), "created_to_ended_ms_mean": means.map(|m| m.1)})
    });
    if pid.is_some() {
        println!("  orchestrator CPU  {:10.1} us/job", cpu_us(cpu_before, cpu_after));
    }
    if let Some((cpu, trips, time)) = redis_per_job {
        let trips_text = trips.map_or_else(|| "not counted by this orchestrator".to_owned(), |t| format!("{t:.2}"));
        println!("  Redis CPU         {cpu:10.1} us/job  (INFO cpu; every client of this Redis counts)");
        println!("  Redis round trips {trips_text:>10} per job (orchestrator_redis_round_trips_total)");
        // A script's time includes its commands'; what is left is Lua's: the call, the body, and
        // turning every command's arguments and reply into and out of Lua.
        println!(
            "  Redis commands    {:10.1} us/job  ({:.1} commands/job); in scripts {:.1} us/job, of which Lua at least {:.1} \
             (scripts' time less every command's; INFO commandstats)",
            time.commands_us,
            time.commands,
            time.scripts_us,
            time.scripts_us - time.commands_us
        );
    }
    println!(
        "  bench process CPU {:10.1} us/job  (client, workers and webhook receiver)",
        cpu_us(own_before, own_after)
    );
    // What bounds jobs/s when every process shares the machine's cores: the CPU they spend per
    // job together (Redis's counts every client of it).
    let cpu_bound = pid.is_some().then(|| {
        let total = cpu_us(cpu_before, cpu_after) + cpu_us(own_before, own_after) + redis_per_job.map_or(0.0, |r| r.0);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let bound = cores as f64 * 1e6 / total.max(1.0);
        println!(
            "  every process     {total:10.1} us/job  (orchestrator + bench{}): at most {bound:.0} jobs/s on {cores} cores; \
             this run reached {:.0}% of it",
            if redis_per_job.is_some() { " + Redis" } else { "" },
            jobs_per_s / bound * 100.0
        );
        bound
    });
    if pid.is_some() {
        println!("  orchestrator peak RSS {:6.1} MiB", peak_kb as f64 / 1024.0);
    }
    if waiting > 0 {
        println!("  memory per job waiting for approval {per_waiting:8.0} bytes ({waiting} jobs)");
    }
    if let Some(path) = &a.json_out {
        let out = json!({
            "label": a.label,
            "jobs": a.jobs,
            "workers": a.workers,
            "concurrency": a.concurrency,
            "jobs_per_s": jobs_per_s,
            "lat_ms": {"p50": pct(&lat, 50.0), "p99": pct(&lat, 99.0)},
            "idle_ms": {"p50": pct(&idle, 50.0), "p99": pct(&idle, 99.0)},
            "orchestrator_cpu_us_per_job": pid.map(|_| cpu_us(cpu_before, cpu_after)),
            "bench_cpu_us_per_job": cpu_us(own_before, own_after),
            "orchestrator_peak_rss_kib": pid.map(|_| peak_kb),
            "bytes_per_waiting_job": (waiting > 0).then_some(per_waiting),
            "half_load": half_json,
            "store": if redis.is_some() { "redis" } else { "memory" },
            "redis_cpu_us_per_job": redis_per_job.map(|r| r.0),
            "redis_round_trips_per_job": redis_per_job.and_then(|r| r.1),
            "redis_commands_us_per_job": redis_per_job.map(|r| r.2.commands_us),
            "redis_commands_per_job": redis_per_job.map(|r| r.2.commands),
            "redis_scripts_us_per_job": redis_per_job.map(|r| r.2.scripts_us),
            "cpu_bound_jobs_per_s": cpu_bound,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&out).unwrap()).expect("write --json-out");
    }
    drop(orch);
    if let (Some((url, prefix)), None) = (&redis, &a.target) {
        match avto::storage::redis::delete_prefix(url, prefix).await {
            Ok(n) => println!("  deleted {n} Redis keys under {prefix}"),
            Err(e) => eprintln!("could not delete the Redis keys under {prefix}: {e}"),
        }
    }
}
