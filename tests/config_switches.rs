//! Switches and guards that worked but had no test (issue #12 item 13): the loop guard
//! `MAX_TRANSITIONS_PER_JOB`, results hidden until a job is terminal, a custom and an empty
//! `CLIENT_API_PREFIX`, `ENABLE_CLIENT_API=false`, worker rate limits, `WORK_STEALING_ENABLED=false`,
//! `WORKER_AUTH_MODE=token-only` and the `job_quarantined` webhook; and the variables read since
//! issue #16 (`REPUTATION_REWARD_SUCCESS`, `WATCHER_LIMIT`, the start-up warning about a variable
//! avto does not read). Each test fails when its switch stops working; where the switch turns
//! something off, the test shows the default first.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use avto::prelude::*;
use avto::protocol::sign::MessageKind;
use avto_tests::blueprints::{dispatch_options, echo_flow};
use avto_tests::certs::{https_client, Ca};
use avto_tests::{serve_http, test_config_with, RawWorker, Server};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// `mode` picks the start handler: `loop` (start <-> again, forever), `draft` (a partial value,
/// then a human decision), anything else fails every run.
#[avto::blueprint(name = "switches_flow", api_version = "v1", api_endpoint = "jobs/switches")]
mod switches_flow {
    use super::*;

    #[handler(state = "start", start)]
    #[when(ctx.initial_data["mode"] == "loop")]
    async fn looping(actions: &mut Actions) {
        actions.transition_to("again");
    }

    #[handler(state = "start", start)]
    #[when(ctx.initial_data["mode"] == "draft")]
    async fn draft(actions: &mut Actions) {
        actions.update_context("draft", "half done");
        actions.await_human_approval().transitions([("approved", "done")]);
    }

    #[handler(state = "start", start)]
    async fn broken() -> Result<(), String> {
        Err("always broken".into())
    }

    #[handler(state = "again")]
    async fn again(actions: &mut Actions) {
        actions.transition_to("start");
    }

    #[handler(state = "done", end)]
    async fn done() {}
}

async fn server(vars: &[(&str, &str)]) -> Server {
    Server::with_config([switches_flow::blueprint(), echo_flow::blueprint()], test_config_with(vars)).await
}

#[tokio::test]
async fn max_transitions_per_job_stops_a_loop() {
    let s = server(&[("MAX_TRANSITIONS_PER_JOB", "7")]).await;
    let c = s.client();
    let id = c.create("/api/v1/jobs/switches", json!({"mode": "loop"})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["status"], "failed", "{job}");
    let msg = job["error_message"].as_str().unwrap();
    assert!(msg.contains("maximum of 7 handler runs (MAX_TRANSITIONS_PER_JOB)"), "{msg}");
    assert_eq!(job["transition_count"], 8, "7 runs, the 8th refused: {job}");
    assert_eq!(job["path"].as_array().unwrap().len(), 8, "start + 7 transitions: {job}");
}

#[tokio::test]
async fn results_are_hidden_until_the_job_is_terminal() {
    let s = server(&[]).await;
    let c = s.client();
    let id = c.create("/api/v1/jobs/switches", json!({"mode": "draft"})).await;
    let job = c.wait_for(&id, &["waiting_for_human"], T).await;
    assert_eq!(job["state_history"]["draft"], "half done", "a value that would be the result exists: {job}");
    assert!(job.get("result").is_none(), "detailed view of a waiting job: {job}");
    let (_, compact) = c.get(&format!("/api/v1/jobs/{id}?detailed=false")).await;
    assert_eq!(compact["result"], Value::Null, "{compact}");
    let (_, only) = c.get(&format!("/api/v1/jobs/{id}?fields=result")).await;
    assert!(only.get("result").is_none_or(Value::is_null), "{only}");
    let (status, _) = c.post(&format!("/api/v1/jobs/{id}/approval"), &json!({"decision": "approved"})).await;
    assert_eq!(status, 200);
    let job = c.wait_terminal(&id, T).await;
    assert_eq!((job["status"].as_str(), job["result"].as_str()), (Some("finished"), Some("approved")), "{job}");
    let (_, compact) = c.get(&format!("/api/v1/jobs/{id}?detailed=false")).await;
    assert_eq!(compact["result"], "approved", "{compact}");
}

#[tokio::test]
async fn custom_and_empty_client_api_prefix() {
    // `/` (trimmed to nothing) is the empty prefix; an empty variable means unset (`api`).
    for (value, base) in [("orchestra", "/orchestra"), ("/", ""), ("", "/api")] {
        let s = server(&[("CLIENT_API_PREFIX", value)]).await;
        let c = s.client();
        let id = c.create(&format!("{base}/v1/jobs/switches"), json!({"mode": "draft"})).await;
        let (status, job) = c.get(&format!("{base}/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "CLIENT_API_PREFIX={value:?}: {job}");
        let (status, list) = c.get(&format!("{base}/jobs")).await;
        assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(1)), "unversioned list: {list}");
        if base != "/api" {
            let (status, _) = c.post("/api/v1/jobs/switches", &json!({"initial_data": {}})).await;
            assert_eq!(status, 404, "CLIENT_API_PREFIX={value:?}: the default prefix is gone");
        }
    }
}

#[tokio::test]
async fn enable_client_api_false_removes_the_client_routes_only() {
    let on = server(&[]).await;
    assert_eq!(on.client().post("/api/v1/jobs/switches", &json!({"initial_data": {"mode": "draft"}})).await.0, 202);
    let s = server(&[("ENABLE_CLIENT_API", "false")]).await;
    let c = s.client();
    assert_eq!(c.post("/api/v1/jobs/switches", &json!({"initial_data": {"mode": "draft"}})).await.0, 404);
    assert_eq!(c.get("/api/v1/jobs").await.0, 404);
    assert_eq!(c.get("/api/jobs").await.0, 404);
    // The orchestrator still serves workers and its public status.
    assert_eq!(c.get("/_public/status").await.0, 200);
    assert_eq!(RawWorker::new(&s.base, "w-no-client-api", &["echo"]).register().await.0, 200);
}

#[tokio::test]
async fn workers_are_rate_limited_per_worker_with_retry_after() {
    let s =
        server(&[("RATE_LIMITING_ENABLED", "true"), ("RATE_LIMIT_HEARTBEAT_LIMIT", "3"), ("RATE_LIMIT_PERIOD", "60")])
            .await;
    let (a, b) = (RawWorker::new(&s.base, "rl-a", &["echo"]), RawWorker::new(&s.base, "rl-b", &["echo"]));
    assert_eq!(a.register().await.0, 200);
    assert_eq!(b.register().await.0, 200);
    let beat = |w: &RawWorker| {
        w.http
            .patch(format!("{}/_worker/workers/{}", w.base, w.id))
            .header("X-Worker-Token", &w.token)
            .header("X-Worker-ID", &w.id)
            .send()
    };
    for i in 0..3 {
        assert_eq!(beat(&a).await.unwrap().status(), 200, "heartbeat {i} is within the limit");
    }
    let refused = beat(&a).await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=61).contains(&retry_after), "Retry-After: {retry_after}");
    assert_eq!(beat(&b).await.unwrap().status(), 200, "another worker has its own budget");
    assert_eq!(a.poll().await.0, 204, "polls are counted apart from heartbeats");
}

/// A worker that never polls holds two queued tasks; an idle worker with the same skill polls once.
async fn idle_poll_status(vars: &[(&str, &str)]) -> u16 {
    let s = Server::with_config([dispatch_options::blueprint()], test_config_with(vars)).await;
    let c = s.client();
    let busy = RawWorker::new(&s.base, "busy", &["work"]);
    assert_eq!(busy.register().await.0, 200);
    for i in 0..2 {
        let id = c.create("/api/v1/jobs/dispatch", json!({"i": i})).await;
        c.wait_until(&id, T, "queued on busy", |j| j["current_task"]["worker_id"] == "busy").await;
    }
    let idle = RawWorker::new(&s.base, "idle", &["work"]);
    assert_eq!(idle.register().await.0, 200);
    let (status, _) = idle.poll().await;
    s.stop().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_stealing_enabled_false_leaves_queued_tasks_where_they_are() {
    assert_eq!(idle_poll_status(&[]).await, 200, "by default the idle worker takes a queued task");
    assert_eq!(idle_poll_status(&[("WORK_STEALING_ENABLED", "false")]).await, 204, "nothing is stolen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_auth_mode_token_only_ignores_client_certificates() {
    let ca = Ca::new();
    let dir = std::env::temp_dir().join(format!("avto-token-only-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let server_cert = ca.server();
    for (name, pem) in
        [("cert.pem", &server_cert.cert_pem), ("key.pem", &server_cert.key_pem), ("ca.pem", &ca.cert.pem())]
    {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (cert_path, key_path, ca_path) = (path("cert.pem"), path("key.pem"), path("ca.pem"));
    let cert = ca.client("cert-worker");
    // (status of a certificate without a token, status of the certificate speaking for another worker)
    let try_mode = |mode: &'static str| {
        let vars = [
            ("TLS_ENABLED", "true"),
            ("TLS_CERT_PATH", cert_path.as_str()),
            ("TLS_KEY_PATH", key_path.as_str()),
            ("TLS_CA_PATH", ca_path.as_str()),
            ("WORKER_AUTH_MODE", mode),
        ];
        let config = test_config_with(&vars);
        let (ca, cert) = (&ca, &cert);
        async move {
            let s = Server::with_config([echo_flow::blueprint()], config).await;
            let base = s.base.replace("http://127.0.0.1", "https://localhost");
            let mut w = RawWorker::new(&base, "cert-worker", &["echo"]);
            w.http = https_client(ca, Some(cert));
            let body = w.signed(
                json!({"worker_id": "cert-worker", "worker_type": "raw", "supported_skills": [{"name": "echo"}]}),
                MessageKind::Registration,
            );
            w.token = String::new(); // signed with the worker token, sent without it
            let (without_token, answer) = w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&body)).await;
            let mut other = RawWorker::new(&base, "someone-else", &["echo"]);
            other.http = https_client(ca, Some(cert));
            let (for_another, _) = other.register().await;
            s.stop().await;
            (without_token, answer, for_another)
        }
    };
    let (status, answer, other) = try_mode("mixed").await;
    assert_eq!((status, other), (200, 403), "mixed: the certificate is the identity: {answer}");
    let (status, answer, other) = try_mode("token-only").await;
    assert_eq!(status, 403, "token-only: a certificate alone is refused");
    assert_eq!(answer["error"], "Unauthorized: Missing X-Worker-Token header.", "{answer}");
    assert_eq!(other, 200, "token-only: the certificate's CN does not bind the worker id");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_quarantined_job_sends_the_job_quarantined_webhook() {
    let calls: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(calls): axum::extract::State<Arc<Mutex<Vec<Value>>>>,
                 axum::Json(body): axum::Json<Value>| async move {
                    calls.lock().unwrap().push(body);
                    axum::http::StatusCode::OK
                },
            ),
        )
        .with_state(calls.clone());
    let url = format!("http://{}/hook", serve_http(app).await);

    let s = server(&[("JOB_MAX_RETRIES", "0")]).await;
    let c = s.client();
    let (status, body) =
        c.post("/api/v1/jobs/switches", &json!({"initial_data": {"mode": "broken"}, "webhook_url": url})).await;
    assert_eq!(status, 202, "{body}");
    let id = body["job_id"].as_str().unwrap().to_owned();
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["status"], "quarantined", "{job}");
    let mut delivered = Vec::new();
    for _ in 0..200 {
        delivered = calls.lock().unwrap().clone();
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(delivered.len(), 1, "one delivery: {delivered:?}");
    let hook = &delivered[0];
    assert_eq!((hook["event"].as_str(), hook["job_id"].as_str()), (Some("job_quarantined"), Some(id.as_str())));
    assert_eq!(hook["status"], "quarantined");
    assert!(hook["error_message"].as_str().unwrap().contains("always broken"), "{hook}");
}

// ---------------------------------------------------------------- issue #16 item 7

/// A new echo job whose task a raw worker takes and answers: a success, or a failure with
/// `PERMANENT_ERROR`.
async fn answer_next(w: &RawWorker, c: &avto_tests::ApiClient, success: bool) {
    let id = c.create("/api/v1/jobs/echo", json!({})).await;
    let (status, task) = w.poll().await;
    assert_eq!((status, task["job_id"].as_str()), (200, Some(id.as_str())), "{task}");
    let mut body = json!({"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": w.id,
                          "origin_worker_id": w.id, "status": "success", "data": {}});
    if !success {
        body["status"] = json!("failure");
        body["error"] = json!({"code": "PERMANENT_ERROR", "message": "no"});
    }
    let body = w.signed(body, MessageKind::Result);
    assert_eq!(w.send(reqwest::Method::POST, "/_worker/tasks/result", Some(&body)).await.0, 200);
    c.wait_terminal(&id, T).await;
}

async fn wait_reputation(c: &avto_tests::ApiClient, worker: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let have = c.worker(worker).await.and_then(|w| w["reputation"].as_f64());
        if have.is_some_and(|r| (r - want).abs() < 1e-9) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "reputation of {worker}: {have:?}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `REPUTATION_REWARD_SUCCESS` is what a success earns (and `REPUTATION_PENALTY_TASK_FAILURE`
/// what a permanent failure costs), in memory and on Redis.
async fn reputation_reward_is_configurable(s: &Server) {
    let c = s.client();
    let w = RawWorker::new(&s.base, "rewarded", &["echo"]);
    assert_eq!(w.register().await.0, 200);
    answer_next(&w, &c, false).await;
    wait_reputation(&c, "rewarded", 0.5).await;
    answer_next(&w, &c, true).await;
    wait_reputation(&c, "rewarded", 0.75).await;
}

const REPUTATION_VARS: [(&str, &str); 2] =
    [("REPUTATION_PENALTY_TASK_FAILURE", "0.5"), ("REPUTATION_REWARD_SUCCESS", "0.25")];

#[tokio::test]
async fn reputation_reward_success_in_memory() {
    reputation_reward_is_configurable(&server(&REPUTATION_VARS).await).await;
}

#[tokio::test]
async fn reputation_reward_success_on_redis() {
    let redis = avto_tests::RedisPrefix::new();
    let cfg = test_config_with(&REPUTATION_VARS);
    let s = Server::with_redis([echo_flow::blueprint()], &redis.url, &redis.prefix, cfg).await;
    reputation_reward_is_configurable(&s).await;
    s.stop().await;
}

/// `WATCHER_LIMIT`: one watcher pass fails at most that many overdue tasks; the others wait for
/// the next passes (the background watcher is slowed down so the test drives the passes).
async fn watcher_limit_bounds_a_pass(s: &Server) {
    let c = s.client();
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, body) =
            c.post("/api/v1/jobs/echo", &json!({"initial_data": {"n": n}, "dispatch_timeout": 0.05})).await;
        assert_eq!(status, 202, "{body}");
        let id = body["job_id"].as_str().unwrap().to_owned();
        c.wait_for(&id, &["waiting_for_worker"], T).await;
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut failed_after = Vec::new();
    for _ in 0..3 {
        s.core.watch_once().await;
        let mut failed = 0;
        for id in &ids {
            failed += usize::from(c.job(id).await["status"] == "failed");
        }
        failed_after.push(failed);
    }
    assert_eq!(failed_after, [1, 2, 3], "one timeout per pass (WATCHER_LIMIT=1)");
}

const WATCHER_VARS: [(&str, &str); 2] = [("WATCHER_LIMIT", "1"), ("WATCHER_INTERVAL_SECONDS", "3600")];

#[tokio::test]
async fn watcher_limit_in_memory() {
    watcher_limit_bounds_a_pass(&server(&WATCHER_VARS).await).await;
}

#[tokio::test]
async fn watcher_limit_on_redis() {
    let redis = avto_tests::RedisPrefix::new();
    let cfg = test_config_with(&WATCHER_VARS);
    let s = Server::with_redis([echo_flow::blueprint()], &redis.url, &redis.prefix, cfg).await;
    watcher_limit_bounds_a_pass(&s).await;
    s.stop().await;
}

/// A writer into a shared buffer (the captured log lines).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An Avtomatika variable avto does not read, set, is a warning in the log at start-up (the
/// server's own log, once logging is set up; current-thread runtime: the server's tasks log
/// into this thread's subscriber).
#[tokio::test(flavor = "current_thread")]
async fn variables_avto_does_not_read_are_start_up_warnings() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let s = server(&[("POSTGRES_DSN", "postgresql://user:password@localhost/db")]).await;
    let deadline = tokio::time::Instant::now() + T;
    let text = loop {
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        if text.contains("POSTGRES_DSN") || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let line = text.lines().find(|l| l.contains("POSTGRES_DSN")).unwrap_or_else(|| panic!("no warning:\n{text}"));
    assert!(line.contains("WARN") && line.contains("is set but not read by avto"), "{line}");
    s.stop().await;
}
