//! The worker API spoken raw (signed RXON messages), including every way a message can be wrong.

use std::time::Duration;

use avto::protocol::sign::{attach_security, verify_task, MessageKind, TaskSigCheck};
use avto::server::config::WorkerToken;
use avto_tests::blueprints::{echo_flow, echo_strict};
use avto_tests::{test_config, RawWorker, Server, SECRET, WORKER_TOKEN};
use serde_json::{json, Value};

use avto_tests::unix_now as now;

/// A hand-driven worker ([`RawWorker`]) that signs exactly as the Python SDK does (no nonce), with
/// the SDK's message shapes.
struct Raw(RawWorker);

impl std::ops::Deref for Raw {
    type Target = RawWorker;
    fn deref(&self) -> &RawWorker {
        &self.0
    }
}

impl std::ops::DerefMut for Raw {
    fn deref_mut(&mut self) -> &mut RawWorker {
        &mut self.0
    }
}

impl Raw {
    fn new(s: &Server, id: &str) -> Raw {
        Raw(RawWorker { nonce: false, ..RawWorker::new(&s.base, id, &["echo"]) })
    }

    fn with_token(s: &Server, id: &str, token: &str) -> Raw {
        let mut w = Raw::new(s, id);
        w.token = token.into();
        w
    }

    fn registration(&self) -> Value {
        json!({
            "worker_id": self.id,
            "worker_type": "raw",
            "supported_skills": [{"name": "echo", "type": "echo", "input_schema": {"type": "object"}}],
            "available_skills": ["echo"],
            "capabilities": {"cost_per_skill": {}, "extra": {}},
            "resources": {"properties": {"cpu_cores": 2}},
        })
    }

    async fn register(&self) -> (u16, Value) {
        let body = self.signed(self.registration(), MessageKind::Registration);
        self.send(reqwest::Method::POST, "/_worker/workers/register", Some(&body)).await
    }

    async fn heartbeat(&self, extra: Value) -> (u16, Value) {
        let mut body = json!({"worker_id": self.id, "status": "idle", "current_tasks": []});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let body = self.signed(body, MessageKind::Heartbeat);
        self.send(reqwest::Method::PATCH, &format!("/_worker/workers/{}", self.id), Some(&body)).await
    }

    async fn poll(&self) -> (u16, Value) {
        self.send(reqwest::Method::GET, &format!("/_worker/workers/{}/tasks/next?timeout=5", self.id), None).await
    }

    async fn result(&self, task: &Value, status: Option<&str>, data: Value, error: Option<Value>) -> (u16, Value) {
        let body = self.result_body(task, status, data, error);
        self.send(reqwest::Method::POST, "/_worker/tasks/result", Some(&body)).await
    }

    /// A signed result body for `task`, as the SDK sends it.
    fn result_body(&self, task: &Value, status: Option<&str>, data: Value, error: Option<Value>) -> Value {
        let mut body = json!({"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": self.id, "origin_worker_id": self.id, "data": data, "costs": {"execution_time_seconds": 0.001}});
        if let Some(s) = status {
            body["status"] = json!(s);
        }
        if let Some(e) = error {
            body["error"] = e;
        }
        self.signed(body, MessageKind::Result)
    }

    async fn poll_batch(&self, max_tasks: &str) -> (u16, Value) {
        let path = format!("/_worker/workers/{}/tasks/next?timeout=5&max_tasks={max_tasks}", self.id);
        self.send(reqwest::Method::GET, &path, None).await
    }
}

#[tokio::test]
async fn task_lifecycle_with_signed_messages() {
    let s = Server::start([echo_flow::blueprint()]).await;
    let w = Raw::new(&s, "raw-1");
    assert_eq!(w.register().await, (200, json!({"status": "registered", "version": "1.0b17"})));
    assert_eq!(w.heartbeat(json!({})).await, (200, json!({"status": "ok"})));
    let started = std::time::Instant::now();
    assert_eq!(w.poll().await.0, 204, "empty queue answers 204 after the hold");
    assert!(started.elapsed() >= Duration::from_millis(1500), "the long-poll is held server-side");

    let c = s.client();
    let id = c.create("/api/v1/jobs/echo", json!({"msg": "hello", "n": 1.0})).await;
    let (status, task) = w.poll().await;
    assert_eq!(status, 200);
    assert_eq!(task["job_id"], id.as_str());
    assert_eq!(task["type"], "echo");
    assert_eq!(task["params"], json!({"msg": "hello", "n": 1}));
    assert!(task["task_id"].as_str().unwrap().starts_with("task-"));
    assert_eq!(verify_task(&task, SECRET), TaskSigCheck::Valid, "task sig verifies with ORCHESTRATOR_SECRET_KEY");

    let (status, answer) = w.result(&task, None, json!({"echo": {"msg": "hello"}}), None).await;
    assert_eq!((status, answer), (200, json!({"status": "accepted", "transition": "success_transition"})));
    let job = c.wait_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!(job["status"], "finished");
    assert_eq!(job["result"], json!({"msg": "hello"}));

    // A second result for the same task is ignored (the job is already finished).
    let (status, answer) = w.result(&task, None, json!({}), None).await;
    assert_eq!(status, 200);
    assert_eq!(answer["status"], "ignored");
    assert_eq!(answer["reason"], "job_already_terminated");
}

#[tokio::test]
async fn failure_codes_and_lease_fencing() {
    let s = Server::start([echo_strict::blueprint()]).await;
    let w = Raw::new(&s, "raw-a");
    w.register().await;
    let c = s.client();

    let id = c.create("/api/v1/jobs/echo_strict", json!({})).await;
    let (_, task) = w.poll().await;
    // Another registered worker cannot answer a task leased to raw-a.
    let other = Raw::new(&s, "raw-b");
    other.register().await;
    let (_, answer) = other.result(&task, None, json!({}), None).await;
    assert_eq!(answer["reason"], "worker_mismatch", "{answer}");
    let (_, answer) = w
        .result(&task, Some("failure"), json!({}), Some(json!({"code": "INVALID_INPUT_ERROR", "message": "bad"})))
        .await;
    assert_eq!(answer, json!({"status": "accepted", "transition": "failure_handled"}));
    let job = c.wait_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!(job["status"], "failed");
    assert!(job["error_message"].as_str().unwrap().contains("INVALID_INPUT_ERROR"));

    // raw-b goes offline: everything goes to raw-a from now on.
    assert_eq!(other.heartbeat(json!({"status": "offline"})).await.0, 200);

    let id = c.create("/api/v1/jobs/echo_strict", json!({})).await;
    let (_, task) = w.poll().await;
    let (_, answer) = w
        .result(&task, Some("failure"), json!({}), Some(json!({"code": "PERMANENT_ERROR", "message": "broken"})))
        .await;
    assert_eq!(answer["transition"], "failure_handled");
    let job = c.wait_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!(job["status"], "quarantined");
    // The quarantine list: the owner's quarantined jobs, with a client token only.
    let (status, list) = c.get("/_public/jobs/quarantined").await;
    assert_eq!(status, 200, "{list}");
    let listed: Vec<&str> = list.as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![id.as_str()], "{list}");
    assert_eq!(list[0]["status"], "quarantined");
    let anonymous = reqwest::get(s.url("/_public/jobs/quarantined")).await.unwrap();
    assert_eq!(anonymous.status(), 401, "no token, no list");
    let (status, _) = c.get("/_public/jobs/quarantined?limit=many").await;
    assert_eq!(status, 400);

    // Transient errors are retried with a new task id, then succeed.
    let id = c.create("/api/v1/jobs/echo_strict", json!({})).await;
    let (_, first) = w.poll().await;
    w.result(&first, Some("failure"), json!({}), Some(json!({"code": "TRANSIENT_ERROR", "message": "flaky"}))).await;
    let (status, second) = w.poll().await;
    assert_eq!(status, 200);
    assert_ne!(first["task_id"], second["task_id"], "every attempt has a new task id");
    let (_, stale) = w.result(&first, None, json!({}), None).await;
    assert_eq!(stale["reason"], "stale_task");
    w.result(&second, None, json!({"ok": true}), None).await;
    assert_eq!(c.wait_terminal(&id, Duration::from_secs(5)).await["status"], "finished");

    // A custom status with no transition fails the job.
    let id = c.create("/api/v1/jobs/echo_strict", json!({})).await;
    let (_, task) = w.poll().await;
    let (_, answer) = w.result(&task, Some("needs_review"), json!({}), None).await;
    assert_eq!(answer["transition"], "unhandled_status_failure");
    let job = c.wait_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!(job["status"], "failed");
}

#[tokio::test]
async fn cancellation_reaches_the_worker_through_the_heartbeat() {
    let s = Server::start([echo_flow::blueprint()]).await;
    let w = Raw::new(&s, "raw-c");
    w.register().await;
    let c = s.client();
    let id = c.create("/api/v1/jobs/echo", json!({})).await;
    let (_, task) = w.poll().await;
    let task_id = task["task_id"].as_str().unwrap();
    c.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    let (_, hb) = w.heartbeat(json!({"current_tasks": [task_id], "status": "busy"})).await;
    assert_eq!(hb["cancel_task_ids"], json!([task_id]), "{hb}");
    // The late success result is ignored: cancelled is terminal.
    let (_, answer) = w.result(&task, None, json!({"late": true}), None).await;
    assert_eq!(answer["reason"], "job_cancelled");
    assert_eq!(c.job(&id).await["status"], "cancelled");
}

#[tokio::test]
async fn security_errors_are_403_and_change_nothing() {
    let s = Server::start([echo_flow::blueprint()]).await;
    let w = Raw::new(&s, "raw-s");
    let url = format!("{}/_worker/workers/register", s.base);
    let http = reqwest::Client::new();

    // No token.
    let r = http.post(&url).json(&w.registration()).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "Unauthorized: Missing X-Worker-Token header or client certificate."})
    );
    // Wrong token.
    let mut bad = Raw::new(&s, "raw-s");
    bad.token = "nope".into();
    let (status, body) = bad.register().await;
    assert_eq!((status, body), (403, json!({"error": "Unauthorized: No valid token found"})));
    // Unsigned body.
    let mut unsigned = w.registration();
    unsigned["timestamp"] = json!(now());
    let (status, body) = w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&unsigned)).await;
    assert_eq!((status, body), (403, json!({"error": "Missing required security context"})));
    // Bad signature (body changed after signing).
    let mut tampered = w.signed(w.registration(), MessageKind::Registration);
    tampered["worker_type"] = json!("evil");
    let (status, body) = w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&tampered)).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("Invalid cryptographic signature")));
    // Stale timestamp (signed correctly, but 2 minutes old).
    let mut stale = w.registration();
    stale["timestamp"] = json!(now() - 120);
    attach_security(&mut stale, WORKER_TOKEN, "raw-s", MessageKind::Registration);
    let (status, body) = w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&stale)).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("Message timestamp expired (replay protection)")));
    // Missing timestamp.
    let mut no_ts = w.registration();
    attach_security(&mut no_ts, WORKER_TOKEN, "raw-s", MessageKind::Registration);
    let (status, body) = w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&no_ts)).await;
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains("timestamp"));
    // Signed by someone else.
    let mut other = w.registration();
    other["timestamp"] = json!(now());
    attach_security(&mut other, WORKER_TOKEN, "someone-else", MessageKind::Registration);
    let (status, _) = w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&other)).await;
    assert_eq!(status, 403);
    assert!(s.core.dispatcher().live_workers().await.is_empty(), "nothing registered by rejected messages");

    // A valid message, then its replay.
    let good = w.signed(w.registration(), MessageKind::Registration);
    let (status, _) = w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&good)).await;
    assert_eq!(status, 200);
    let (status, body) = w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&good)).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("Duplicate message detected (replay attack)")));

    // Body worker_id differs from the credentials.
    let mut mismatch = w.registration();
    mismatch["worker_id"] = json!("raw-x");
    let mismatch = w.signed(mismatch, MessageKind::Registration);
    let (status, body) = w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&mismatch)).await;
    assert_eq!(status, 403, "{body}");

    // Malformed JSON and invalid ids are 400.
    let r = http
        .post(&url)
        .header("X-Worker-Token", WORKER_TOKEN)
        .header("X-Worker-ID", "raw-s")
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("Invalid JSON body"));
    let bad_id = Raw::new(&s, "bad id!");
    let (status, _) = bad_id.poll().await;
    assert_eq!(status, 400);
    // Heartbeat and poll of an unknown worker: 404 that tells it to register (the SDK re-registers on "not found").
    let ghost = Raw::new(&s, "ghost");
    let (status, body) = ghost.heartbeat(json!({})).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("not found"));
    // Results with a non-object data are 400.
    let (status, body) = w.result(&json!({"job_id": "j", "task_id": "t"}), None, json!([1]), None).await;
    assert_eq!(status, 400, "{body}");
    // A result for an unknown job is ignored, not an error.
    let (status, body) = w.result(&json!({"job_id": "j", "task_id": "t"}), None, json!({}), None).await;
    assert_eq!((status, body["reason"].as_str()), (200, Some("job_not_found")));
}

#[tokio::test]
async fn empty_heartbeat_refreshes_ttl_and_status_patch_works() {
    let s = Server::start([echo_flow::blueprint()]).await;
    let w = Raw::new(&s, "raw-h");
    w.register().await;
    let r = reqwest::Client::new()
        .patch(format!("{}/_worker/workers/raw-h", s.base))
        .header("X-Worker-Token", WORKER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ttl_refreshed"}));
    // Recipe 16: PATCH .../status with a partial update.
    let body = w.signed(json!({"worker_id": "raw-h", "status": "busy"}), MessageKind::Heartbeat);
    let (status, _) = w.send(reqwest::Method::PATCH, "/_worker/workers/raw-h/status", Some(&body)).await;
    assert_eq!(status, 200);
    assert_eq!(s.core.dispatcher().worker("raw-h").await.unwrap().status, "busy");
}

#[tokio::test]
async fn sts_tokens() {
    let s = Server::start([echo_flow::blueprint()]).await;
    let w = Raw::new(&s, "raw-t");
    w.register().await;
    let (status, tokens) = w.send(reqwest::Method::POST, "/_worker/auth/token", None).await;
    assert_eq!(status, 200);
    assert_eq!(tokens["expires_in"], 3600);
    assert_eq!(tokens["worker_id"], "raw-t");
    // The access token authenticates; messages are still signed with the static token.
    let sts = Raw::with_token(&s, "raw-t", tokens["access_token"].as_str().unwrap());
    let (status, _) = sts.poll().await;
    assert_eq!(status, 204);
    // Refresh gives a new pair and revokes the old refresh token.
    let refresh = json!({"refresh_token": tokens["refresh_token"]});
    let (status, fresh) = w.send(reqwest::Method::POST, "/_worker/auth/token/refresh", Some(&refresh)).await;
    assert_eq!(status, 200);
    assert_ne!(fresh["access_token"], tokens["access_token"]);
    let (status, body) = w.send(reqwest::Method::POST, "/_worker/auth/token/refresh", Some(&refresh)).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("Unauthorized: Invalid refresh token (not found)")));
}

#[tokio::test]
async fn individual_tokens_from_workers_toml() {
    let mut cfg = test_config();
    cfg.worker_tokens = vec![WorkerToken { pattern: "worker-001".into(), token: "super-secret-1".into() }];
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let w = Raw::with_token(&s, "worker-001", "super-secret-1");
    assert_eq!(w.register().await.0, 200);
    // The shared token no longer works for a worker that has an individual one.
    let shared = Raw::new(&s, "worker-001");
    assert_eq!(shared.register().await.0, 403);
}

/// `POST /api/v1/admin/reload-workers` reads workers.toml again: a changed token takes effect at
/// once, a file that does not load changes nothing, and without a file there is nothing to reload.
#[tokio::test]
async fn worker_tokens_reload_from_workers_toml() {
    let dir = std::env::temp_dir().join(format!("avto-workers-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("workers.toml");
    std::fs::write(&file, "[worker-r]\ntoken = \"first-token\"\n").unwrap();
    let path = file.to_string_lossy().into_owned();
    let s =
        Server::with_config([echo_flow::blueprint()], avto_tests::test_config_with(&[("WORKERS_CONFIG_PATH", &path)]))
            .await;
    let c = s.client();
    let with = |token: &str| Raw::with_token(&s, "worker-r", token);
    // A fresh nonce each time: the same registration twice in one second would be a replay.
    async fn register(w: Raw) -> u16 {
        let mut body = w.registration();
        body["nonce"] = json!(uuid::Uuid::new_v4().to_string());
        let body = w.signed(body, MessageKind::Registration);
        w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&body)).await.0
    }
    assert_eq!(register(with("first-token")).await, 200);

    std::fs::write(&file, "[worker-r]\ntoken = \"second-token\"\n\n[\"gpu-*\"]\ntoken = \"gpu-token\"\n").unwrap();
    assert_eq!(register(with("first-token")).await, 200, "nothing changes before the reload");
    let (status, answer) = c.post("/api/v1/admin/reload-workers", &json!({})).await;
    assert_eq!(status, 403, "a client token is not the operator credential: {answer}");
    assert_eq!(register(with("first-token")).await, 200, "nothing changed");
    let (status, answer) = c.admin(reqwest::Method::POST, "/api/v1/admin/reload-workers", Some(&json!({}))).await;
    assert_eq!((status, answer), (200, json!({"status": "workers_reloaded", "workers": 2})));
    assert_eq!(register(with("first-token")).await, 403, "the old token is gone");
    assert_eq!(register(with("second-token")).await, 200);
    let gpu = Raw::with_token(&s, "gpu-7", "gpu-token");
    assert_eq!(register(gpu).await, 200, "a pattern entry applies too");

    std::fs::write(&file, "[worker-r]\ntoken = 42\n").unwrap();
    let (status, answer) = c.admin(reqwest::Method::POST, "/api/v1/admin/reload-workers", Some(&json!({}))).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("token"), "{answer}");
    assert_eq!(register(with("second-token")).await, 200, "a bad file keeps the tokens in force");
    let anonymous = reqwest::Client::new().post(s.url("/api/v1/admin/reload-workers")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "operator only");
    let wrong = reqwest::Client::new().post(s.url("/api/v1/admin/reload-workers")).bearer_auth("nope").send().await;
    assert_eq!(wrong.unwrap().status(), 403);

    let plain = Server::start([echo_flow::blueprint()]).await;
    let (status, answer) =
        plain.client().admin(reqwest::Method::POST, "/api/v1/admin/reload-workers", Some(&json!({}))).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("WORKERS_CONFIG_PATH"), "{answer}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn events_progress_and_event_transitions() {
    use avto_tests::blueprints::event_flow;
    let s = Server::start([event_flow::blueprint()]).await;
    let w = Raw::new(&s, "raw-e");
    w.register().await;
    let c = s.client();
    let id = c.create("/api/v1/jobs/events", json!({})).await;
    let (_, task) = w.poll().await;
    let event = |event_type: &str, payload: Value| {
        w.signed(
            json!({"event_id": uuid::Uuid::new_v4().to_string(), "worker_id": "raw-e", "origin_worker_id": "raw-e",
                   "event_type": event_type, "payload": payload, "target_job_id": task["job_id"],
                   "origin_task_id": task["task_id"], "bubbling_chain": []}),
            MessageKind::Event,
        )
    };
    let (status, body) = w
        .send(
            reqwest::Method::POST,
            "/_worker/events",
            Some(&event("progress", json!({"progress": 0.25, "message": "a quarter"}))),
        )
        .await;
    assert_eq!((status, body), (200, json!({"status": "event_accepted"})));
    let job = c.job(&id).await;
    assert_eq!((job["progress"].as_f64(), job["progress_message"].as_str()), (Some(0.25), Some("a quarter")));
    // Another worker may not send events for this job.
    let intruder = Raw::new(&s, "raw-x");
    intruder.register().await;
    let mut foreign = event("progress", json!({"progress": 0.9}));
    foreign["worker_id"] = json!("raw-x");
    let foreign = intruder.signed(foreign, MessageKind::Event);
    let (status, _) = intruder.send(reqwest::Method::POST, "/_worker/events", Some(&foreign)).await;
    assert_eq!(status, 403);
    // An event listed in event_transitions moves the job and supersedes the task.
    let (status, _) =
        w.send(reqwest::Method::POST, "/_worker/events", Some(&event("early_exit", json!({"why": "enough"})))).await;
    assert_eq!(status, 200);
    let job = c.wait_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!(job["current_state"], "exited_early");
    assert_eq!(job["state_history"]["event_early_exit"], json!({"why": "enough"}));
    let (_, answer) = w.result(&task, None, json!({}), None).await;
    assert_eq!(answer["status"], "ignored");
}

#[tokio::test]
async fn graceful_shutdown_does_not_wait_for_long_polls() {
    let mut cfg = test_config();
    cfg.worker_poll_timeout = Duration::from_secs(30);
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let w = Raw::new(&s, "raw-g");
    w.register().await;
    let poll = tokio::spawn(async move { w.poll().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    s.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    assert_eq!(poll.await.unwrap().0, 204, "the open long-poll is answered at once");
}

/// avto's extensions for its own SDK: `max_tasks` on the poll and `POST /_worker/tasks/results`.
#[tokio::test]
async fn batch_poll_and_batched_results() {
    let s = Server::start([echo_flow::blueprint()]).await;
    let w = Raw::new(&s, "raw-batch");
    w.register().await;
    let c = s.client();
    let mut jobs = Vec::new();
    for i in 0..6 {
        jobs.push(c.create("/api/v1/jobs/echo", json!({"i": i})).await);
    }

    for bad in ["0", "65", "two", "", "-1"] {
        let (status, body) = w.poll_batch(bad).await;
        assert_eq!(status, 400, "max_tasks={bad}");
        assert!(body["error"].as_str().unwrap().contains("max_tasks"), "{body}");
    }

    // Without max_tasks the answer is the plain RXON payload.
    let (status, single) = w.poll().await;
    assert_eq!(status, 200);
    assert!(single.get("tasks").is_none() && single["task_id"].is_string(), "{single}");

    let (status, batch) = w.poll_batch("3").await;
    assert_eq!(status, 200);
    let first: Vec<Value> = batch["tasks"].as_array().expect("a batch answer").clone();
    assert_eq!(first.len(), 3, "{batch}");
    let (_, batch) = w.poll_batch("64").await;
    let rest: Vec<Value> = batch["tasks"].as_array().unwrap().clone();
    assert_eq!(rest.len(), 2, "what is left, without waiting for more");
    let tasks: Vec<Value> = std::iter::once(single).chain(first).chain(rest).collect();
    let mut ids: Vec<&str> = tasks.iter().map(|t| t["job_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = jobs.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(ids, want, "each job's task handed out exactly once");
    for t in &tasks {
        assert_eq!(verify_task(t, SECRET), TaskSigCheck::Valid, "each task of a batch is signed: {t}");
    }

    // One request, five results: good, forged, replayed, good, not an object.
    let ok0 = w.result_body(&tasks[0], None, json!({"n": 0}), None);
    let mut forged = w.result_body(&tasks[1], None, json!({"n": 1}), None);
    forged["data"] = json!({"n": "tampered"});
    let ok2 = w.result_body(&tasks[2], None, json!({"n": 2}), None);
    let items = json!({"results": [ok0, forged, ok0, ok2, 42]});
    let (status, answer) = w.send(reqwest::Method::POST, "/_worker/tasks/results", Some(&items)).await;
    assert_eq!(status, 200, "{answer}");
    let answers = answer["results"].as_array().unwrap();
    assert_eq!(answers.len(), 5);
    assert_eq!(answers[0], json!({"status": "accepted", "transition": "success_transition"}));
    assert_eq!(answers[1]["http_status"], 403, "{answer}");
    assert_eq!(answers[2]["http_status"], 403, "a replay inside a batch is refused: {answer}");
    assert!(answers[2]["error"].as_str().unwrap().contains("replay"), "{answer}");
    assert_eq!(answers[3]["status"], "accepted");
    assert_eq!(answers[4]["http_status"], 400);
    for t in [&tasks[0], &tasks[2]] {
        let job = c.wait_terminal(t["job_id"].as_str().unwrap(), Duration::from_secs(5)).await;
        assert_eq!(job["status"], "finished");
    }
    // The forged result changed nothing: the job still takes the real one.
    assert_eq!(c.job(tasks[1]["job_id"].as_str().unwrap()).await["status"], "waiting_for_worker");
    let (_, answer) = w.result(&tasks[1], None, json!({"n": 1}), None).await;
    assert_eq!(answer["status"], "accepted");

    // The envelope itself is checked.
    for bad in [json!({"results": []}), json!({"results": "x"}), json!({}), json!({"results": vec![json!({}); 65]})] {
        let (status, body) = w.send(reqwest::Method::POST, "/_worker/tasks/results", Some(&bad)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].as_str().unwrap().contains("results"), "{body}");
    }
    let anonymous = reqwest::Client::new()
        .post(s.url("/_worker/tasks/results"))
        .json(&json!({"results": [w.result_body(&tasks[3], None, json!({}), None)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 403, "no token, no results");
}

/// Issue #12 item 11: worker messages are authenticated before their body is judged: a
/// malformed result, event or registration without a token, or with a wrong one, is a 403, not
/// a 400; with a valid token the same body is a 400.
#[tokio::test]
async fn worker_requests_authenticate_before_the_body_is_judged() {
    let s = Server::start([echo_flow::blueprint()]).await;
    let http = reqwest::Client::new();
    for path in ["/_worker/tasks/result", "/_worker/tasks/results", "/_worker/events", "/_worker/workers/register"] {
        let send = |token: Option<&str>| {
            let mut req = http.post(s.url(path)).header("X-Worker-ID", "w-1").body("{not json");
            if let Some(t) = token {
                req = req.header("X-Worker-Token", t);
            }
            async move { req.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(send(None).await, 403, "{path} without a token");
        assert_eq!(send(Some("wrong")).await, 403, "{path} with a wrong token");
        assert_eq!(send(Some(WORKER_TOKEN)).await, 400, "{path} with a valid token");
    }
}

/// Failed worker authentications count against the peer's address (like unauthenticated client
/// requests): past `RATE_LIMIT_LIMIT` the answer is 429 with `Retry-After`, so guessing tokens is
/// bounded; a worker with a valid token from the same address is not affected. Before, every
/// wrong token got its 403 (and its STS lookup) without limit.
#[tokio::test]
async fn failed_worker_authentication_is_rate_limited_per_address() {
    let cfg = avto_tests::test_config_with(&[("RATE_LIMITING_ENABLED", "true"), ("RATE_LIMIT_LIMIT", "5")]);
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let resp = http
            .post(s.url("/_worker/workers/register"))
            .header("X-Worker-ID", format!("guess-{i}"))
            .header("X-Worker-Token", format!("guess-{i}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            assert!(resp.headers().contains_key("retry-after"), "429 without Retry-After");
        }
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [403, 403, 403, 403, 403, 429, 429, 429], "wrong tokens from one address");
    let w = avto_tests::RawWorker::new(&s.base, "honest-w", &["echo"]);
    assert_eq!(w.register().await.0, 200, "a valid token from the same address still registers");
}
