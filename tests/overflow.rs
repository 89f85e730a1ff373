//! Issue #12 item 1: numbers that overflowed the clock and background tasks that died.
//!
//! A job with `"dispatch_timeout": 1e300` made the watcher's deadline sum overflow while it held
//! the worker store's lock (debug build): the lock was poisoned and every worker route dropped its
//! connection from then on. Durations are bounded at the edge (400 naming the field), deadlines
//! saturate inside, locks cannot be poisoned, and a background task that panics is restarted or
//! reported by `/_public/status`.

use std::sync::Arc;
use std::time::Duration;

use avto::protocol::sign::{attach_security, MessageKind};
use avto::server::Orchestrator;
use avto_tests::blueprints::echo_flow;
use avto_tests::{test_config, test_config_with, PanickingHistory, RawWorker, Server};
use serde_json::{json, Value};

/// Dispatches `echo` with every timeout at `Duration::MAX` (what a blueprint can ask for).
#[avto::blueprint(name = "forever_timeouts", api_version = "v1", api_endpoint = "jobs/forever")]
pub mod forever_timeouts {
    use avto::prelude::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions
            .dispatch_task("echo")
            .timeout(Duration::MAX)
            .dispatch_timeout(Duration::MAX)
            .result_timeout(Duration::MAX)
            .transitions([("success", "finished")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

/// Dispatches `echo` with only a dispatch timeout of `Duration::MAX`: the task is parked (no
/// worker yet) and every watcher pass computes its dispatch deadline.
#[avto::blueprint(name = "forever_parked", api_version = "v1", api_endpoint = "jobs/forever_parked")]
pub mod forever_parked {
    use avto::prelude::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.dispatch_task("echo").dispatch_timeout(Duration::MAX).transitions([("success", "finished")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

#[tokio::test]
async fn client_timeouts_beyond_the_maximum_are_refused_naming_the_field() {
    let server = Server::start([echo_flow::blueprint()]).await;
    let c = server.client();
    for field in ["dispatch_timeout", "result_timeout"] {
        for bad in [json!(1e300), json!(2_592_001), json!(-1), json!(0), json!("10")] {
            let (status, body) = c.post("/api/v1/jobs/echo", &json!({"initial_data": {}, field: bad})).await;
            assert_eq!(status, 400, "{field}={bad}: {body}");
            let msg = body.to_string();
            assert!(msg.contains(field) && msg.contains("MAX_TIMEOUT_SECONDS"), "{field}={bad}: {body}");
        }
        let (status, body) = c.post("/api/v1/jobs/echo", &json!({"initial_data": {}, field: 2_592_000})).await;
        assert_eq!(status, 202, "{field} at the maximum: {body}");
    }
    // The maximum is configurable.
    let server =
        Server::with_config([echo_flow::blueprint()], test_config_with(&[("MAX_TIMEOUT_SECONDS", "10")])).await;
    let (status, body) =
        server.client().post("/api/v1/jobs/echo", &json!({"initial_data": {}, "result_timeout": 11})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("up to 10"), "{body}");
}

/// Deadlines of `Duration::MAX` (from a blueprint, past the edge's bound) saturate: the parked
/// task's dispatch deadline is computed on every watcher pass, the worker side keeps answering,
/// and both jobs finish once a worker comes.
#[tokio::test]
async fn deadlines_that_overflow_the_clock_never_take_the_worker_side_down() {
    let server = Server::start([forever_timeouts::blueprint(), forever_parked::blueprint()]).await;
    let c = server.client();
    let parked = c.create("/api/v1/jobs/forever_parked", json!({})).await;
    c.wait_until(&parked, Duration::from_secs(10), "the task is parked", |j| j["status"] == "waiting_for_worker").await;
    // Several watcher passes (every 0.2 s) over the parked task.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let forever = c.create("/api/v1/jobs/forever", json!({})).await;

    let w = RawWorker::new(&server.base, "w-overflow", &["echo"]);
    assert_eq!(w.register().await.0, 200, "register");
    assert_eq!(w.heartbeat(&[]).await.0, 200, "heartbeat");
    assert!(server.core.dispatcher().is_live("w-overflow").await, "the worker store answers");
    for _ in 0..2 {
        let (status, task) = w.poll().await;
        assert_eq!(status, 200, "poll: {task}");
        assert_eq!(w.succeed(&task, json!({})).await.0, 200);
    }
    for id in [&parked, &forever] {
        let job = c.wait_terminal(id, Duration::from_secs(10)).await;
        assert_eq!(job["status"], "finished", "{job}");
    }
    assert_eq!(c.get("/_public/status").await.0, 200);
}

/// A worker message stamped -9223372036854775808 panicked the handler (subtract overflow)
/// before its signature was checked: it is refused like any stale timestamp.
#[tokio::test]
async fn a_timestamp_at_the_end_of_i64_is_refused_not_a_panic() {
    let server = Server::start([echo_flow::blueprint()]).await;
    let w = RawWorker::new(&server.base, "w-ts", &["echo"]);
    assert_eq!(w.register().await.0, 200);
    for ts in [json!(i64::MIN), json!(i64::MAX), json!(-1e300)] {
        let mut body = json!({"worker_id": w.id, "status": "idle", "nonce": uuid::Uuid::new_v4().to_string()});
        body["timestamp"] = ts.clone();
        attach_security(&mut body, &w.token, &w.id, MessageKind::Heartbeat);
        let (status, answer) = w.send(reqwest::Method::PATCH, &format!("/_worker/workers/{}", w.id), Some(&body)).await;
        assert_eq!(status, 403, "timestamp {ts}: {answer}");
        assert!(answer.to_string().contains("timestamp"), "{answer}");
    }
    assert_eq!(w.heartbeat(&[]).await.0, 200, "the worker side still answers");
}

async fn history_server(backend: Arc<PanickingHistory>, config: avto::server::Config) -> Server {
    Server::with_builder(Orchestrator::builder().blueprint(echo_flow::blueprint()).config(config).history(backend))
        .await
}

/// The history writer panics once: it is started again and later rows are written.
#[tokio::test]
async fn a_background_task_that_panics_is_restarted() {
    let server = history_server(PanickingHistory::new(1), test_config()).await;
    let c = server.client();
    c.create("/api/v1/jobs/echo", json!({})).await;
    // Waits out the panic (its batch is lost) and the restart's backoff.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let restarts = server.core.health().tasks().get("history_writer").map_or(0, |t| t.restarts);
        if restarts == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the history writer was not restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = c.create("/api/v1/jobs/echo", json!({})).await;
    let (status, rows) = c.get(&format!("/api/v1/jobs/{second}/history")).await;
    assert_eq!(status, 200, "{rows}");
    assert!(rows.as_array().is_some_and(|r| !r.is_empty()), "the restarted writer wrote the second job: {rows}");
    let (status, body) = c.get("/_public/status").await;
    assert_eq!((status, &body["status"]), (200, &json!("ok")), "{body}");
}

/// The history writer panics every time and may not be restarted: `/_public/status` says so.
#[tokio::test]
async fn a_background_task_that_stays_down_makes_the_status_unhealthy() {
    let config = test_config_with(&[("BACKGROUND_TASK_MAX_RESTARTS", "0")]);
    let server = history_server(PanickingHistory::new(u32::MAX), config).await;
    let c = server.client();
    assert_eq!(c.get("/_public/status").await.0, 200);
    c.create("/api/v1/jobs/echo", json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let body: Value = loop {
        let (status, body) = c.get("/_public/status").await;
        if status == 503 {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "status still {status}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["status"], "unhealthy", "{body}");
    assert_eq!(body["failed_tasks"], json!(["history_writer"]), "{body}");
    // The rest of the orchestrator still serves.
    c.create("/api/v1/jobs/echo", json!({})).await;
}

/// Kills the orchestrator process when the test ends, however it ends.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGTERM stops the server in every state: with a background task down, a long-poll waiting
/// and a connection that never completes its request (that one kept the old server up forever:
/// the graceful shutdown waited for it without end).
#[tokio::test]
async fn sigterm_stops_the_server_in_every_state() {
    use avto_tests::{CLIENT_TOKEN, SECRET, WORKER_TOKEN};
    use std::process::{Command, Stdio};
    use tokio::io::AsyncWriteExt;

    let port = avto_tests::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = std::env::temp_dir().join(format!("avto-shutdown-test-{port}.log"));
    let log = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_avto-redis-orchestrator"))
        .env_remove("REDIS_URL")
        .env_remove("REDIS_HOST")
        .env("API_HOST", "127.0.0.1")
        .env("API_PORT", port.to_string())
        .env("CLIENT_TOKEN", CLIENT_TOKEN)
        .env("GLOBAL_WORKER_TOKEN", WORKER_TOKEN)
        .env("ORCHESTRATOR_SECRET_KEY", SECRET)
        .env("RATE_LIMITING_ENABLED", "false")
        .env("WORKER_POLL_TIMEOUT_SECONDS", "30")
        .env("AVTO_TEST_PANICKING_HISTORY", "1")
        .env("BACKGROUND_TASK_MAX_RESTARTS", "0")
        .env("SHUTDOWN_GRACE_SECONDS", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start the orchestrator process");
    let mut process = Process(child);
    let c = avto_tests::ApiClient { http: reqwest::Client::new(), base: base.clone(), token: CLIENT_TOKEN.into() };
    let mut up = false;
    for _ in 0..300 {
        if c.http.get(format!("{base}/_public/status")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the orchestrator process did not come up");

    // A subsystem down: the history writer panicked and stays down.
    c.create("/api/v1/jobs/echo", json!({})).await;
    let mut status = 0;
    for _ in 0..200 {
        status = c.get("/_public/status").await.0;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 503, "the history writer is reported down");
    // A connection that never completes its request.
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET /_public/status HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // A long-poll waiting for a task.
    let w = RawWorker::new(&base, "w-shutdown", &["other"]);
    assert_eq!(w.register().await.0, 200);
    let poll = tokio::spawn(async move { w.poll().await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = process.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut exited = None;
    for _ in 0..300 {
        if let Some(s) = process.0.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exited = exited.expect("the orchestrator still runs 30 s after SIGTERM");
    assert!(exited.success(), "exit status {exited}");
    assert_eq!(poll.await.unwrap().0, 204, "the open long-poll was answered at shutdown");
    drop(slow);
}
