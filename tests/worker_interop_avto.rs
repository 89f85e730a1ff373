//! Interop: the Rust worker against the avto orchestrator itself (in-process, 127.0.0.1).
//! The same scenarios as `worker_interop_python.rs`, plus what avtomatika 1.0b30 cannot do:
//! cancellation pulled through heartbeat `cancel_task_ids`, re-registration after a restart.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use avto::server::Orchestrator;
use avto::worker::{MultiOrchestratorMode, OrchestratorConfig, Skill, TaskHandle, TaskOutcome, Worker, WorkerBuilder};
use avto::Blueprint;
use avto_tests::blueprints::{echo_flow, echo_strict, review_flow};
use avto_tests::tasks::{echo, saw_cancellation, ClassifyParams};
use avto_tests::{init_tracing, test_config, ApiClient, RustWorker, Server, ADMIN_TOKEN, SECRET, WORKER_TOKEN};
use serde_json::{json, Value};

fn blueprints() -> [Blueprint; 3] {
    [echo_flow::blueprint(), echo_strict::blueprint(), review_flow::blueprint()]
}

/// An avto orchestrator on a free loopback port. Dropping it stops it: the listener closes at
/// once (new connections are refused) and open connections end after their current request.
async fn avto_server() -> Server {
    Server::start(blueprints()).await
}

/// The client API of `server` (no proxy: everything is on 127.0.0.1).
fn client(server: &Server) -> ApiClient {
    ApiClient { http: reqwest::Client::builder().no_proxy().build().unwrap(), ..server.client() }
}

/// Waits until a worker took the job's task.
async fn wait_picked_up(c: &ApiClient, id: &str) {
    c.wait_until(id, Duration::from_secs(20), "task pick-up", |job| job["current_task"]["worker_id"].is_string()).await;
}

async fn cancel(c: &ApiClient, id: &str) -> u16 {
    c.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await.0
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

const DONE: [&str; 4] = ["finished", "failed", "cancelled", "quarantined"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_against_avto() {
    init_tracing("avto::worker=info");
    let server = avto_server().await;
    let c = client(&server);
    let running = RustWorker::spawn(worker("rust-on-avto").orchestrator_url(&server.base));
    let t = Duration::from_secs(20);

    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(c.create("/api/v1/jobs/echo", json!({"msg": "hi", "n": n})).await);
    }
    for (n, id) in ids.iter().enumerate() {
        let job = c.wait_for(id, &DONE, t).await;
        assert_eq!(job["status"], "finished", "{job}");
        assert_eq!(job["state_history"]["echo"], json!({"msg": "hi", "n": n, "worker": "rust-on-avto"}), "{job}");
    }

    let id = c.create("/api/v1/jobs/echo", json!({"progress": true})).await;
    let job = c.wait_for(&id, &DONE, t).await;
    assert_eq!(job["progress"], json!(0.5), "{job}");
    assert_eq!(job["progress_message"], "halfway", "{job}");

    // error codes without a failure transition
    let invalid = c.create("/api/v1/jobs/echo_strict", json!({"fail": true})).await;
    let permanent = c.create("/api/v1/jobs/echo_strict", json!({"fail": true, "error_code": "PERMANENT_ERROR"})).await;
    let bad_params = c.create("/api/v1/jobs/echo_strict", json!({"sleep": "soon"})).await;
    assert_eq!(c.wait_for(&invalid, &DONE, t).await["status"], "failed");
    assert_eq!(c.wait_for(&permanent, &DONE, t).await["status"], "quarantined");
    assert_eq!(c.wait_for(&bad_params, &DONE, t).await["status"], "failed");
    // with one: the failure transition
    let handled = c.create("/api/v1/jobs/echo", json!({"fail": true, "error_code": "PERMANENT_ERROR"})).await;
    let job = c.wait_for(&handled, &DONE, t).await;
    assert_eq!(job["current_state"], "failed", "{job}");

    let review = c.create("/api/v1/jobs/review", json!({"score": 0.1})).await;
    let job = c.wait_for(&review, &DONE, t).await;
    assert_eq!(job["current_state"], "review", "{job}");

    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_is_retried_then_quarantined_and_the_worker_survives() {
    init_tracing("avto::worker=info");
    let server = avto_server().await;
    let c = client(&server);
    let running = RustWorker::spawn(worker("rust-panics").orchestrator_url(&server.base));
    let id = c.create("/api/v1/jobs/echo_strict", json!({"panic": true})).await;
    let job = c.wait_for(&id, &DONE, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "quarantined", "{job}");
    let id = c.create("/api/v1/jobs/echo", json!({"msg": "still alive"})).await;
    assert_eq!(c.wait_for(&id, &DONE, Duration::from_secs(20)).await["status"], "finished");
    running.stop().await;
}

async fn cancel_running_job(websockets: bool, worker_id: &str) {
    init_tracing("avto::worker=info");
    let server = avto_server().await;
    let c = client(&server);
    let mut builder = worker(worker_id).orchestrator_url(&server.base).enable_websockets(websockets);
    if websockets {
        // heartbeats too rare to deliver the cancellation in time: only the push can
        builder = builder.heartbeat_interval(Duration::from_secs(60));
    }
    let running = RustWorker::spawn(builder);
    if websockets {
        tokio::time::sleep(Duration::from_millis(500)).await; // let the command channel connect
    }
    let id = c.create("/api/v1/jobs/echo", json!({"sleep": 60})).await;
    wait_picked_up(&c, &id).await;
    if !websockets {
        // Let a heartbeat that reports the task land first. (Server race, reported: a heartbeat
        // built just before the worker took the task, arriving after the cancel, makes the
        // dispatcher forget the pending cancellation, since that heartbeat does not list the task.)
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert_eq!(cancel(&c, &id).await, 200);
    let started = Instant::now();
    while !saw_cancellation(&id) {
        assert!(started.elapsed() < Duration::from_secs(20), "the task never saw the cancellation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let job = c.wait_for(&id, &DONE, Duration::from_secs(10)).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    let id = c.create("/api/v1/jobs/echo", json!({"msg": "next"})).await;
    assert_eq!(c.wait_for(&id, &DONE, Duration::from_secs(20)).await["status"], "finished");
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
    init_tracing("avto::worker=info");
    let primary = avto_server().await;
    let backup = avto_server().await;
    let (on_primary, on_backup) = (client(&primary), client(&backup));
    let running = RustWorker::spawn(
        worker(worker_id)
            .orchestrators([
                OrchestratorConfig::new(&primary.base).priority(1),
                OrchestratorConfig::new(&backup.base).priority(2),
            ])
            .multi_orchestrator_mode(mode),
    );
    let t = Duration::from_secs(30);
    let id = on_primary.create("/api/v1/jobs/echo", json!({"msg": "p"})).await;
    assert_eq!(on_primary.wait_for(&id, &DONE, t).await["status"], "finished");
    drop(primary);
    for n in 0..3 {
        let id = on_backup.create("/api/v1/jobs/echo", json!({"n": n})).await;
        let job = on_backup.wait_for(&id, &DONE, t).await;
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
    init_tracing("avto::worker=info");
    let first = avto_server().await;
    let c = client(&first);
    // a second server on the same port after the first one dies: a restarted in-memory orchestrator
    let port = first.base.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let running = RustWorker::spawn(worker("rust-restart").orchestrator_url(&first.base));
    let id = c.create("/api/v1/jobs/echo", json!({"n": 1})).await;
    assert_eq!(c.wait_for(&id, &DONE, Duration::from_secs(20)).await["status"], "finished");
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let second =
        Server::with_builder_on(Orchestrator::builder().blueprints(blueprints()).config(test_config()), listener);
    // the worker's heartbeat gets 404 "not found: register again" and registers anew; jobs
    // created before that are parked until a capable worker appears
    let id = c.create("/api/v1/jobs/echo", json!({"n": 2})).await;
    let job = c.wait_for(&id, &DONE, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "finished", "{job}");
    running.stop().await;
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_holds() {
    init_tracing("avto::worker=info");
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);
    let server = avto_server().await;
    let c = client(&server);
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
    let running = RustWorker::spawn(builder);
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(c.create("/api/v1/jobs/echo", json!({"n": n})).await);
    }
    for id in &ids {
        assert_eq!(c.wait_for(id, &DONE, Duration::from_secs(30)).await["status"], "finished");
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
    init_tracing("avto::worker=info");
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);
    let server = avto_server().await;
    let c = client(&server);
    // Queued before the worker comes: its first polls find a full queue.
    let mut ids = Vec::new();
    for n in 0..40 {
        ids.push(c.create("/api/v1/jobs/echo", json!({"n": n})).await);
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
    let running = RustWorker::spawn(builder);
    for (n, id) in ids.iter().enumerate() {
        let job = c.wait_for(id, &DONE, Duration::from_secs(30)).await;
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
