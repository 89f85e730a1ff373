//! Interop: the Rust worker against the avto orchestrator itself (in-process, 127.0.0.1).
//! The same scenarios as `worker_interop_python.rs`, plus what avtomatika 1.0b30 cannot do:
//! cancellation pulled through heartbeat `cancel_task_ids`, re-registration after a restart.

use avto::prelude::*;
use avto::server::config::Config;
use avto::server::Orchestrator;
use avto::worker::{
    MultiOrchestratorMode, OrchestratorConfig, ShutdownHandle, Skill, TaskHandle, TaskOutcome, Worker, WorkerBuilder,
    WorkerError,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CLIENT_TOKEN: &str = "avto-client-token";
/// The operator credential: `/metrics` needs it.
const ADMIN_TOKEN: &str = "avto-admin-token";
const WORKER_TOKEN: &str = "avto-worker-token";
const SECRET: &str = "avto-orchestrator-secret";

#[avto::blueprint(name = "echo_flow", api_version = "v1", api_endpoint = "jobs/echo")]
mod echo_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions.dispatch_task("echo").params(ctx.initial_data.clone()).transitions([
            ("success", "finished"),
            ("failure", "failed"),
            ("cancelled", "cancelled"),
        ]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}

    #[handler(state = "cancelled", end)]
    async fn cancelled() {}
}

/// No failure transition: failures follow the error-code policy.
#[avto::blueprint(name = "echo_strict", api_version = "v1", api_endpoint = "jobs/echo_strict")]
mod echo_strict {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions.dispatch_task("echo").params(ctx.initial_data.clone()).transitions([("success", "finished")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

#[avto::blueprint(name = "review_flow", api_version = "v1", api_endpoint = "jobs/review")]
mod review_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("classify")
            .params(ctx.initial_data.clone())
            .transitions([("success", "finished"), ("needs_review", "review")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "review", end)]
    async fn review() {}
}

fn config() -> Config {
    let vars = [
        ("API_HOST", "127.0.0.1"),
        ("CLIENT_TOKEN", CLIENT_TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("GLOBAL_WORKER_TOKEN", WORKER_TOKEN),
        ("ORCHESTRATOR_SECRET_KEY", SECRET),
        ("RATE_LIMITING_ENABLED", "false"),
        ("WORKER_POLL_TIMEOUT_SECONDS", "2"),
        ("WATCHER_INTERVAL_SECONDS", "0.2"),
    ];
    Config::from_lookup(&|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap()
}

/// An avto orchestrator on a free loopback port. `kill` stops it: the listener closes at once
/// (new connections are refused) and open connections end after their current request.
struct AvtoServer {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl AvtoServer {
    async fn start() -> AvtoServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener)
    }

    fn on(listener: tokio::net::TcpListener) -> AvtoServer {
        let orch = Orchestrator::builder()
            .blueprint(echo_flow::blueprint())
            .blueprint(echo_strict::blueprint())
            .blueprint(review_flow::blueprint())
            .config(config())
            .build()
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = orch
                .listen(listener, async {
                    let _ = rx.await;
                })
                .await;
        });
        AvtoServer { base, stop: Some(tx) }
    }

    fn kill(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for AvtoServer {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Client {
    http: reqwest::Client,
}

impl Client {
    fn new() -> Client {
        Client { http: reqwest::Client::builder().no_proxy().build().unwrap() }
    }

    async fn create(&self, base: &str, flow: &str, data: Value) -> String {
        let r = self
            .http
            .post(format!("{base}/api/v1/jobs/{flow}"))
            .header("X-Client-Token", CLIENT_TOKEN)
            .json(&json!({ "initial_data": data }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        r.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned()
    }

    async fn job(&self, base: &str, id: &str) -> Value {
        self.http
            .get(format!("{base}/api/v1/jobs/{id}?detailed=true"))
            .header("X-Client-Token", CLIENT_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn cancel(&self, base: &str, id: &str) -> u16 {
        self.http
            .post(format!("{base}/api/v1/jobs/{id}/cancel"))
            .header("X-Client-Token", CLIENT_TOKEN)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn wait(&self, base: &str, id: &str, statuses: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(base, id).await;
            if statuses.contains(&job["status"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} not in {statuses:?}: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_picked_up(&self, base: &str, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let job = self.job(base, id).await;
            if job["current_task"]["worker_id"].is_string() {
                return;
            }
            assert!(Instant::now() < deadline, "task never picked up: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[derive(Debug, Deserialize)]
struct EchoParams {
    #[serde(default)]
    fail: bool,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    progress: bool,
    #[serde(default)]
    sleep: Option<f64>,
    #[serde(default)]
    panic: bool,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// Jobs whose echo task observed a cancellation.
static CANCELLED_JOBS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn saw_cancellation(job_id: &str) -> bool {
    CANCELLED_JOBS.lock().unwrap().iter().any(|j| j == job_id)
}

async fn echo(p: EchoParams, task: TaskHandle) -> TaskOutcome {
    if p.progress {
        task.progress(0.5, "halfway").await;
    }
    if let Some(s) = p.sleep {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(s)) => {}
            _ = task.cancelled() => {
                CANCELLED_JOBS.lock().unwrap().push(task.job_id().to_owned());
                return TaskOutcome::cancelled();
            }
        }
    }
    if p.panic {
        panic!("boom requested");
    }
    if p.fail {
        return TaskOutcome::failure(p.error_code.unwrap_or_else(|| "INVALID_INPUT_ERROR".into()), "failure requested");
    }
    let mut echoed = p.rest;
    echoed.insert("worker".into(), json!(task.worker_id()));
    TaskOutcome::success(json!({ "echo": echoed }))
}

#[derive(Debug, Deserialize)]
struct ClassifyParams {
    score: f64,
}

fn worker(id: &str) -> WorkerBuilder {
    Worker::builder()
        .worker_id(id)
        .token(WORKER_TOKEN)
        .secret_key(SECRET)
        .heartbeat_interval(Duration::from_millis(500))
        .configure(|c| {
            c.idle_poll_delay = Duration::from_millis(50);
            c.task_poll_timeout = Duration::from_secs(5);
            c.heartbeat_cooldown = Duration::from_millis(200);
            c.result_retry_initial_delay = Duration::from_millis(100);
            c.registration_retry_initial_delay = Duration::from_millis(200);
            c.registration_retry_max_delay = Duration::from_secs(1);
            c.poll_backoff_max = Duration::from_secs(1);
        })
        .task(Skill::new("echo"), echo)
        .task(
            Skill::new("classify").output_statuses(["needs_review"]),
            |p: ClassifyParams, _t: TaskHandle| async move {
                if p.score < 0.5 {
                    TaskOutcome::status("needs_review", json!({"score": p.score}))
                } else {
                    TaskOutcome::success(json!({"label": "cat"}))
                }
            },
        )
}

struct Running {
    handle: ShutdownHandle,
    join: tokio::task::JoinHandle<Result<(), WorkerError>>,
}

impl Running {
    fn start(b: WorkerBuilder) -> Running {
        let w = b.build().unwrap();
        let handle = w.shutdown_handle();
        Running { handle, join: tokio::spawn(w.run_until(std::future::pending())) }
    }
    async fn stop(self) {
        self.handle.shutdown();
        tokio::time::timeout(Duration::from_secs(30), self.join).await.unwrap().unwrap().unwrap();
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "avto::worker=info".into()),
        )
        .with_test_writer()
        .try_init();
}

const DONE: [&str; 4] = ["finished", "failed", "cancelled", "quarantined"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_against_avto() {
    init_tracing();
    let server = AvtoServer::start().await;
    let c = Client::new();
    let running = Running::start(worker("rust-on-avto").orchestrator_url(&server.base));
    let t = Duration::from_secs(20);

    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(c.create(&server.base, "echo", json!({"msg": "hi", "n": n})).await);
    }
    for (n, id) in ids.iter().enumerate() {
        let job = c.wait(&server.base, id, &DONE, t).await;
        assert_eq!(job["status"], "finished", "{job}");
        assert_eq!(job["state_history"]["echo"], json!({"msg": "hi", "n": n, "worker": "rust-on-avto"}), "{job}");
    }

    let id = c.create(&server.base, "echo", json!({"progress": true})).await;
    let job = c.wait(&server.base, &id, &DONE, t).await;
    assert_eq!(job["progress"], json!(0.5), "{job}");
    assert_eq!(job["progress_message"], "halfway", "{job}");

    // error codes without a failure transition
    let invalid = c.create(&server.base, "echo_strict", json!({"fail": true})).await;
    let permanent = c.create(&server.base, "echo_strict", json!({"fail": true, "error_code": "PERMANENT_ERROR"})).await;
    let bad_params = c.create(&server.base, "echo_strict", json!({"sleep": "soon"})).await;
    assert_eq!(c.wait(&server.base, &invalid, &DONE, t).await["status"], "failed");
    assert_eq!(c.wait(&server.base, &permanent, &DONE, t).await["status"], "quarantined");
    assert_eq!(c.wait(&server.base, &bad_params, &DONE, t).await["status"], "failed");
    // with one: the failure transition
    let handled = c.create(&server.base, "echo", json!({"fail": true, "error_code": "PERMANENT_ERROR"})).await;
    let job = c.wait(&server.base, &handled, &DONE, t).await;
    assert_eq!(job["current_state"], "failed", "{job}");

    let review = c.create(&server.base, "review", json!({"score": 0.1})).await;
    let job = c.wait(&server.base, &review, &DONE, t).await;
    assert_eq!(job["current_state"], "review", "{job}");

    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_is_retried_then_quarantined_and_the_worker_survives() {
    init_tracing();
    let server = AvtoServer::start().await;
    let c = Client::new();
    let running = Running::start(worker("rust-panics").orchestrator_url(&server.base));
    let id = c.create(&server.base, "echo_strict", json!({"panic": true})).await;
    let job = c.wait(&server.base, &id, &DONE, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "quarantined", "{job}");
    let id = c.create(&server.base, "echo", json!({"msg": "still alive"})).await;
    assert_eq!(c.wait(&server.base, &id, &DONE, Duration::from_secs(20)).await["status"], "finished");
    running.stop().await;
}

async fn cancel_running_job(websockets: bool, worker_id: &str) {
    init_tracing();
    let server = AvtoServer::start().await;
    let c = Client::new();
    let mut builder = worker(worker_id).orchestrator_url(&server.base).enable_websockets(websockets);
    if websockets {
        // heartbeats too rare to deliver the cancellation in time: only the push can
        builder = builder.heartbeat_interval(Duration::from_secs(60));
    }
    let running = Running::start(builder);
    if websockets {
        tokio::time::sleep(Duration::from_millis(500)).await; // let the command channel connect
    }
    let id = c.create(&server.base, "echo", json!({"sleep": 60})).await;
    c.wait_picked_up(&server.base, &id).await;
    if !websockets {
        // Let a heartbeat that reports the task land first. (Server race, reported: a heartbeat
        // built just before the worker took the task, arriving after the cancel, makes the
        // dispatcher forget the pending cancellation, since that heartbeat does not list the task.)
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert_eq!(c.cancel(&server.base, &id).await, 200);
    let started = Instant::now();
    while !saw_cancellation(&id) {
        assert!(started.elapsed() < Duration::from_secs(20), "the task never saw the cancellation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let job = c.wait(&server.base, &id, &DONE, Duration::from_secs(10)).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    let id = c.create(&server.base, "echo", json!({"msg": "next"})).await;
    assert_eq!(c.wait(&server.base, &id, &DONE, Duration::from_secs(20)).await["status"], "finished");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_pulled_through_heartbeats() {
    cancel_running_job(false, "rust-cancel-pull").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_pushed_over_the_websocket() {
    cancel_running_job(true, "rust-cancel-push").await;
}

async fn two_orchestrators_one_killed(mode: MultiOrchestratorMode, worker_id: &str) {
    init_tracing();
    let mut primary = AvtoServer::start().await;
    let backup = AvtoServer::start().await;
    let c = Client::new();
    let running = Running::start(
        worker(worker_id)
            .orchestrators([
                OrchestratorConfig::new(&primary.base).priority(1),
                OrchestratorConfig::new(&backup.base).priority(2),
            ])
            .multi_orchestrator_mode(mode),
    );
    let t = Duration::from_secs(30);
    let id = c.create(&primary.base, "echo", json!({"msg": "p"})).await;
    assert_eq!(c.wait(&primary.base, &id, &DONE, t).await["status"], "finished");
    primary.kill();
    for n in 0..3 {
        let id = c.create(&backup.base, "echo", json!({"n": n})).await;
        let job = c.wait(&backup.base, &id, &DONE, t).await;
        assert_eq!(job["status"], "finished", "{job}");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_between_two_avto_instances() {
    two_orchestrators_one_killed(MultiOrchestratorMode::Failover, "rust-avto-failover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_between_two_avto_instances() {
    two_orchestrators_one_killed(MultiOrchestratorMode::RoundRobin, "rust-avto-rr").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registers_after_an_orchestrator_restart() {
    init_tracing();
    let mut first = AvtoServer::start().await;
    let c = Client::new();
    // a second server on the same port after the first one dies: a restarted in-memory orchestrator
    let port = first.base.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let running = Running::start(worker("rust-restart").orchestrator_url(&first.base));
    let id = c.create(&first.base, "echo", json!({"n": 1})).await;
    assert_eq!(c.wait(&first.base, &id, &DONE, Duration::from_secs(20)).await["status"], "finished");
    first.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let second = AvtoServer::on(listener);
    // the worker's heartbeat gets 404 "not found: register again" and registers anew; jobs
    // created before that are parked until a capable worker appears
    let id = c.create(&first.base, "echo", json!({"n": 2})).await;
    let job = c.wait(&first.base, &id, &DONE, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "finished", "{job}");
    running.stop().await;
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_holds() {
    init_tracing();
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);
    let server = AvtoServer::start().await;
    let c = Client::new();
    let builder = Worker::builder()
        .worker_id("rust-limited")
        .orchestrator_url(&server.base)
        .token(WORKER_TOKEN)
        .secret_key(SECRET)
        .max_concurrent_tasks(2)
        .heartbeat_interval(Duration::from_millis(500))
        .configure(|c| {
            c.idle_poll_delay = Duration::from_millis(20);
            c.heartbeat_cooldown = Duration::from_millis(100);
        })
        .task("echo", |p: Value, _t: TaskHandle| async move {
            let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
            PEAK.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            RUNNING.fetch_sub(1, Ordering::SeqCst);
            TaskOutcome::success(json!({ "echo": p }))
        });
    let running = Running::start(builder);
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(c.create(&server.base, "echo", json!({"n": n})).await);
    }
    for id in &ids {
        assert_eq!(c.wait(&server.base, id, &DONE, Duration::from_secs(30)).await["status"], "finished");
    }
    assert_eq!(PEAK.load(Ordering::SeqCst), 2, "two tasks at a time, never more");
    running.stop().await;
}

/// Reads one unlabelled counter from the orchestrator's `/metrics`.
async fn counter(base: &str, name: &str) -> u64 {
    let page = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not on /metrics"))
}

/// Against avto the SDK takes several queued tasks per poll and sends results that finish
/// together in one request, without running more tasks than it may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_results_travel_in_batches() {
    init_tracing();
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);
    let server = AvtoServer::start().await;
    let c = Client::new();
    // Queued before the worker comes: its first polls find a full queue.
    let mut ids = Vec::new();
    for n in 0..40 {
        ids.push(c.create(&server.base, "echo", json!({"n": n})).await);
    }
    let builder = Worker::builder()
        .worker_id("rust-batches")
        .orchestrator_url(&server.base)
        .token(WORKER_TOKEN)
        .secret_key(SECRET)
        .max_concurrent_tasks(8)
        .configure(|c| c.idle_poll_delay = Duration::from_millis(20))
        .task("echo", |p: Value, _t: TaskHandle| async move {
            let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
            PEAK.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            RUNNING.fetch_sub(1, Ordering::SeqCst);
            TaskOutcome::success(json!({ "echo": p }))
        });
    let running = Running::start(builder);
    for (n, id) in ids.iter().enumerate() {
        let job = c.wait(&server.base, id, &DONE, Duration::from_secs(30)).await;
        assert_eq!(job["status"], "finished", "{job}");
        assert_eq!(job["state_history"]["echo"], json!({"n": n}), "{job}");
    }
    assert!(PEAK.load(Ordering::SeqCst) <= 8, "never more than max_concurrent_tasks at once");
    let (answers, handed) = (
        counter(&server.base, "avto_worker_poll_answers_total").await,
        counter(&server.base, "avto_worker_tasks_handed_out_total").await,
    );
    let (requests, results) = (
        counter(&server.base, "avto_worker_result_requests_total").await,
        counter(&server.base, "avto_worker_results_total").await,
    );
    assert_eq!((handed, results), (40, 40), "each task handed out and answered once");
    assert!(answers < handed, "several tasks per poll answer: {answers} answers for {handed} tasks");
    assert!(requests < results, "several results per request: {requests} requests for {results} results");
    running.stop().await;
}
