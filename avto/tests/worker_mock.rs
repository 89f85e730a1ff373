//! The worker SDK against a scripted orchestrator (axum on 127.0.0.1): retries, re-registration,
//! events, heartbeat contents, task checks. Every body the worker sends is checked for its
//! signature.

use avto::protocol::{self, sign, MessageKind, TaskSigCheck};
use avto::worker::{ShutdownHandle, Skill, TaskHandle, TaskOutcome, Worker, WorkerBuilder, WorkerError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "mock-worker-token";
const SECRET: &str = "mock-secret";
const WORKER: &str = "mock-worker";

#[derive(Default)]
struct Mock {
    registrations: Mutex<Vec<Value>>,
    heartbeats: Mutex<Vec<Value>>,
    results: Mutex<Vec<Value>>,
    result_times: Mutex<Vec<Instant>>,
    events: Mutex<Vec<Value>>,
    tasks: Mutex<VecDeque<Value>>,
    result_script: Mutex<VecDeque<(u16, Value)>>,
    heartbeat_script: Mutex<VecDeque<(u16, Value)>>,
    polls: AtomicUsize,
}

fn check(body: &Value, kind: MessageKind) {
    assert_eq!(sign::verify_security(body, TOKEN, WORKER, kind), Ok(()), "bad signature on {body}");
    protocol::check_timestamp(body, protocol::unix_now()).expect("fresh timestamp");
}

fn reply(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), Json(body)).into_response()
}

async fn register(State(m): State<Arc<Mock>>, Json(body): Json<Value>) -> Response {
    check(&body, MessageKind::Registration);
    m.registrations.lock().unwrap().push(body);
    reply(200, json!({"status": "registered", "version": "1.0b17"}))
}

async fn heartbeat(State(m): State<Arc<Mock>>, Path(id): Path<String>, Json(body): Json<Value>) -> Response {
    assert_eq!(id, WORKER);
    check(&body, MessageKind::Heartbeat);
    m.heartbeats.lock().unwrap().push(body);
    match m.heartbeat_script.lock().unwrap().pop_front() {
        Some((s, b)) => reply(s, b),
        None => reply(200, json!({"status": "ok"})),
    }
}

async fn next_task(State(m): State<Arc<Mock>>, Path(id): Path<String>) -> Response {
    assert_eq!(id, WORKER);
    m.polls.fetch_add(1, Ordering::SeqCst);
    let task = m.tasks.lock().unwrap().pop_front();
    match task {
        Some(t) => reply(200, t),
        None => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

async fn result(State(m): State<Arc<Mock>>, Json(body): Json<Value>) -> Response {
    check(&body, MessageKind::Result);
    m.results.lock().unwrap().push(body);
    m.result_times.lock().unwrap().push(Instant::now());
    match m.result_script.lock().unwrap().pop_front() {
        Some((429, b)) => {
            let mut r = reply(429, json!({"error": "Rate limit exceeded"}));
            if let Some(ra) = b.get("retry_after").and_then(Value::as_str) {
                r.headers_mut().insert("Retry-After", ra.parse().unwrap());
            }
            r
        }
        Some((s, b)) => reply(s, b),
        None => reply(200, json!({"status": "accepted", "transition": "success_transition"})),
    }
}

async fn event(State(m): State<Arc<Mock>>, Json(body): Json<Value>) -> Response {
    check(&body, MessageKind::Event);
    m.events.lock().unwrap().push(body);
    reply(200, json!({"status": "event_accepted"}))
}

async fn start_mock() -> (Arc<Mock>, String) {
    let m = Arc::new(Mock::default());
    let app = Router::new()
        .route("/_worker/workers/register", post(register))
        .route("/_worker/workers/{id}", patch(heartbeat))
        .route("/_worker/workers/{id}/tasks/next", get(next_task))
        .route("/_worker/tasks/result", post(result))
        .route("/_worker/events", post(event))
        .with_state(m.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (m, base)
}

fn task(n: usize, task_type: &str, params: Value) -> Value {
    let mut t = json!({
        "job_id": format!("job-{n}"), "task_id": format!("task-{n}"), "type": task_type, "params": params,
        "priority": 0, "step": 1, "timestamp": protocol::unix_now(), "tracing_context": {}
    });
    t["sig"] = json!(sign::sign_task(&t, SECRET));
    assert_eq!(sign::verify_task(&t, SECRET), TaskSigCheck::Valid);
    t
}

fn worker(base: &str) -> WorkerBuilder {
    Worker::builder()
        .worker_id(WORKER)
        .orchestrator_url(base)
        .token(TOKEN)
        .secret_key(SECRET)
        .heartbeat_interval(Duration::from_millis(300))
        .configure(|c| {
            c.idle_poll_delay = Duration::from_millis(20);
            c.heartbeat_cooldown = Duration::from_millis(50);
            c.result_retry_initial_delay = Duration::from_millis(50);
            c.registration_retry_initial_delay = Duration::from_millis(50);
            c.task_poll_timeout = Duration::from_secs(2);
        })
        .task(
            Skill::new("echo").event_schema("frame_done", json!({"type": "object"})),
            |p: Value, task: TaskHandle| async move {
                if p.get("events").is_some() {
                    task.progress(0.25, "quarter").await;
                    task.event("frame_done", json!({"frame": 1})).await.unwrap();
                    let err = task.event("not_declared", json!({})).await.unwrap_err();
                    assert!(matches!(err, WorkerError::UndeclaredEvent(_)), "{err}");
                }
                if let Some(ms) = p.get("sleep_ms").and_then(Value::as_u64) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                TaskOutcome::success(json!({ "echo": p })).with_metadata(json!({"m": 1}))
            },
        )
}

struct Running {
    handle: ShutdownHandle,
    join: tokio::task::JoinHandle<Result<(), WorkerError>>,
}

fn run(b: WorkerBuilder) -> Running {
    let w = b.build().unwrap();
    let handle = w.shutdown_handle();
    Running { handle, join: tokio::spawn(w.run_until(std::future::pending())) }
}

impl Running {
    async fn stop(self) {
        self.handle.shutdown();
        tokio::time::timeout(Duration::from_secs(20), self.join).await.unwrap().unwrap().unwrap();
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_task_round_trip_has_the_sdk_shapes() {
    let (m, base) = start_mock().await;
    m.tasks.lock().unwrap().push_back(task(1, "echo", json!({"x": 1, "events": true})));
    let r = run(worker(&base));
    until("a result", || !m.results.lock().unwrap().is_empty()).await;
    let res = m.results.lock().unwrap()[0].clone();
    assert_eq!(res["job_id"], "job-1");
    assert_eq!(res["task_id"], "task-1");
    assert!(res.get("status").is_none(), "success is sent without a status: {res}");
    assert_eq!(res["data"], json!({"echo": {"x": 1, "events": true}}));
    assert_eq!(res["metadata"], json!({"m": 1}));
    assert_eq!(res["worker_id"], WORKER);
    assert_eq!(res["origin_worker_id"], WORKER);
    assert!(res["costs"]["execution_time_seconds"].as_f64().unwrap() >= 0.0);

    let events = m.events.lock().unwrap().clone();
    assert_eq!(events.len(), 2, "progress + the declared event; the undeclared one is blocked: {events:?}");
    assert_eq!(events[0]["event_type"], "progress");
    assert_eq!(events[0]["payload"], json!({"progress": 0.25, "message": "quarter"}));
    assert_eq!(events[0]["target_task_id"], "task-1");
    assert_eq!(events[0]["target_job_id"], "job-1");
    assert_eq!(events[0]["bubbling_chain"], json!([]));
    assert_eq!(events[1]["event_type"], "frame_done");
    assert_ne!(events[0]["event_id"], events[1]["event_id"]);

    let reg = m.registrations.lock().unwrap()[0].clone();
    assert_eq!(reg["worker_id"], WORKER);
    let hb = m.heartbeats.lock().unwrap()[0].clone();
    assert_eq!(hb["status"], "idle");
    assert_eq!(hb["skills_hash"], reg["skills_hash"]);
    assert!(hb.get("supported_skills").is_none(), "catalogue already synced by the registration: {hb}");
    r.stop().await;

    // the final heartbeat says offline
    let last = m.heartbeats.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last["status"], "offline");
    assert_eq!(last["supported_skills"], json!([]));
}

#[tokio::test]
async fn heartbeats_report_running_tasks_and_the_full_status() {
    let (m, base) = start_mock().await;
    m.tasks.lock().unwrap().push_back(task(1, "echo", json!({"sleep_ms": 800})));
    let r = run(worker(&base).max_concurrent_tasks(1));
    until("a full heartbeat", || {
        m.heartbeats.lock().unwrap().iter().any(|h| h["status"] == "full" && h["current_tasks"] == json!(["task-1"]))
    })
    .await;
    until("the result", || !m.results.lock().unwrap().is_empty()).await;
    let n = m.heartbeats.lock().unwrap().len();
    until("an idle heartbeat after the task", || {
        m.heartbeats.lock().unwrap()[n..].iter().any(|h| h["status"] == "idle" && h["current_tasks"] == json!([]))
    })
    .await;
    r.stop().await;
}

#[tokio::test]
async fn results_are_retried_until_accepted() {
    let (m, base) = start_mock().await;
    m.result_script.lock().unwrap().extend([(500, json!({"error": "boom"})), (503, json!({"error": "later"}))]);
    m.tasks.lock().unwrap().push_back(task(1, "echo", json!({})));
    let r = run(worker(&base));
    until("three result attempts", || m.results.lock().unwrap().len() == 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(m.results.lock().unwrap().len(), 3, "no attempt after the accepted one");
    r.stop().await;
}

#[tokio::test]
async fn ignored_results_are_final() {
    let (m, base) = start_mock().await;
    m.result_script
        .lock()
        .unwrap()
        .push_back((200, json!({"status": "ignored", "reason": "job_not_found", "message": "Job job-1 not found"})));
    m.tasks.lock().unwrap().push_back(task(1, "echo", json!({})));
    let r = run(worker(&base));
    until("a result", || !m.results.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(m.results.lock().unwrap().len(), 1);
    r.stop().await;
}

#[tokio::test]
async fn a_lost_session_means_registering_again() {
    let (m, base) = start_mock().await;
    let r = run(worker(&base));
    until("registration", || m.registrations.lock().unwrap().len() == 1).await;
    m.heartbeat_script
        .lock()
        .unwrap()
        .push_back((404, json!({"error": "Worker mock-worker not found: register again"})));
    until("a second registration", || m.registrations.lock().unwrap().len() == 2).await;
    r.stop().await;
}

#[tokio::test]
async fn heartbeat_cancel_task_ids_cancel_the_task() {
    let (m, base) = start_mock().await;
    m.tasks.lock().unwrap().push_back(task(1, "echo", json!({"sleep_ms": 30_000})));
    let r = run(worker(&base).configure(|c| c.cancel_grace = Duration::from_millis(100)));
    until("the task running", || m.heartbeats.lock().unwrap().iter().any(|h| h["current_tasks"] == json!(["task-1"])))
        .await;
    m.heartbeat_script.lock().unwrap().push_back((200, json!({"status": "ok", "cancel_task_ids": ["task-1"]})));
    until("the cancelled result", || !m.results.lock().unwrap().is_empty()).await;
    let res = m.results.lock().unwrap()[0].clone();
    assert_eq!(res["status"], "cancelled", "{res}");
    assert!(res.get("data").is_none());
    r.stop().await;
}

#[tokio::test]
async fn require_full_sync_resends_the_catalogue() {
    let (m, base) = start_mock().await;
    let r = run(worker(&base));
    until("a heartbeat", || !m.heartbeats.lock().unwrap().is_empty()).await;
    m.heartbeat_script.lock().unwrap().push_back((200, json!({"status": "ok", "require_full_sync": true})));
    until("a heartbeat with the catalogue", || {
        m.heartbeats.lock().unwrap().iter().any(|h| h["supported_skills"][0]["name"] == "echo")
    })
    .await;
    r.stop().await;
}

#[tokio::test]
async fn task_checks_unknown_skill_policy_and_forged_signature() {
    let (m, base) = start_mock().await;
    let mut forged = task(3, "echo", json!({"x": 1}));
    forged["params"]["x"] = json!(2); // changed after signing
    let mut policy = task(2, "echo", json!({}));
    policy["policy"] = json!({"allowed_skills": ["other"]});
    policy["sig"] = json!(sign::sign_task(&policy, SECRET));
    m.tasks.lock().unwrap().extend([task(1, "paint", json!({})), policy, forged, task(4, "echo", json!({"n": 4}))]);
    let r = run(worker(&base));
    until("three results", || m.results.lock().unwrap().len() == 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let results = m.results.lock().unwrap().clone();
    let by_task = |id: &str| results.iter().find(|r| r["task_id"] == id).cloned();
    let unknown = by_task("task-1").unwrap();
    assert_eq!(unknown["status"], "failure");
    assert_eq!(unknown["error"], json!({"code": "PERMANENT_ERROR", "message": "Unsupported skill: paint"}));
    let denied = by_task("task-2").unwrap();
    assert_eq!(denied["error"]["code"], "SECURITY_ERROR");
    assert!(by_task("task-3").is_none(), "a forged task gets no result at all");
    assert_eq!(by_task("task-4").unwrap()["data"], json!({"echo": {"n": 4}}));
    r.stop().await;
}

#[tokio::test]
async fn rate_limited_results_wait_for_retry_after() {
    let (m, base) = start_mock().await;
    m.result_script.lock().unwrap().push_back((429, json!({"retry_after": "0.6"})));
    m.tasks.lock().unwrap().push_back(task(1, "echo", json!({})));
    let r = run(worker(&base));
    until("two result attempts", || m.results.lock().unwrap().len() == 2).await;
    let times = m.result_times.lock().unwrap().clone();
    assert!(times[1] - times[0] >= Duration::from_millis(550), "retried after {:?}", times[1] - times[0]);
    let results = m.results.lock().unwrap().clone();
    assert_eq!(results[0]["task_id"], results[1]["task_id"]);
    r.stop().await;
}
