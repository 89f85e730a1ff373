//! [`RawWorker`]: a hand-driven RXON worker over HTTP that signs whatever it is told to send.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::protocol::sign::{attach_security, MessageKind};

/// A worker driven by hand: it sends signed RXON messages of any content, for what a real SDK
/// does not do on purpose (stop heartbeating while it holds a task, answer after its lease
/// moved, forge a result for another worker's task, send a malformed body).
///
/// Every method returns the orchestrator's status and JSON body (`Null` when not JSON), whatever
/// the status, and panics only when the orchestrator cannot be reached at all (a test helper:
/// that is a failed test). Fields are public so a test can change the token or the base URL.
#[derive(Debug, Clone)]
pub struct RawWorker {
    pub http: reqwest::Client,
    /// The orchestrator's base URL (`http://127.0.0.1:port`).
    pub base: String,
    pub id: String,
    /// Sent as `X-Worker-Token` and used to sign ([`super::WORKER_TOKEN`] unless changed).
    pub token: String,
    /// The skills [`RawWorker::register`] declares.
    pub skills: Vec<String>,
    /// Whether [`RawWorker::signed`] adds a `nonce` (default yes; the Python SDK sends none, so
    /// two equal messages in one second are then replays).
    pub nonce: bool,
}

impl RawWorker {
    /// A worker `id` of the orchestrator at `base` with the test worker token.
    pub fn new(base: &str, id: &str, skills: &[&str]) -> RawWorker {
        RawWorker {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            id: id.to_owned(),
            token: super::WORKER_TOKEN.to_owned(),
            skills: skills.iter().map(|s| s.to_string()).collect(),
            nonce: true,
        }
    }

    /// `body` with a fresh `timestamp`, a `nonce` (unless it has one or [`RawWorker::nonce`] is
    /// off: two equal messages in one second are then not replays) and the `security` block
    /// signed with this worker's token as a message of `kind`.
    pub fn signed(&self, mut body: Value, kind: MessageKind) -> Value {
        body["timestamp"] = json!(unix_now());
        if self.nonce && body.get("nonce").is_none() {
            body["nonce"] = json!(uuid::Uuid::new_v4().to_string());
        }
        attach_security(&mut body, &self.token, &self.id, kind);
        body
    }

    /// One request of the worker API with this worker's headers (`X-Worker-Token`,
    /// `X-Worker-ID`, `X-RXON-Version`), `body` sent as is.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("X-Worker-Token", &self.token)
            .header("X-Worker-ID", &self.id)
            .header("X-RXON-Version", "1.0b17")
            .timeout(Duration::from_secs(60));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: the orchestrator did not answer: {e}"));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// [`RawWorker::signed`] then [`RawWorker::send`].
    pub async fn send_signed(&self, method: Method, path: &str, body: Value, kind: MessageKind) -> (u16, Value) {
        let body = self.signed(body, kind);
        self.send(method, path, Some(&body)).await
    }

    /// Registers with [`RawWorker::skills`] (one CPU core, no costs).
    pub async fn register(&self) -> (u16, Value) {
        let skills: Vec<Value> = self.skills.iter().map(|s| json!({"name": s, "type": s})).collect();
        let body = json!({
            "worker_id": self.id,
            "worker_type": "raw",
            "supported_skills": skills,
            "available_skills": self.skills,
            "capabilities": {"cost_per_skill": {}, "extra": {}},
            "resources": {"properties": {"cpu_cores": 1}},
        });
        self.send_signed(Method::POST, "/_worker/workers/register", body, MessageKind::Registration).await
    }

    /// A heartbeat: `busy` with these tasks, `idle` without.
    pub async fn heartbeat(&self, current_tasks: &[&str]) -> (u16, Value) {
        let status = if current_tasks.is_empty() { "idle" } else { "busy" };
        let body = json!({"worker_id": self.id, "status": status, "current_tasks": current_tasks});
        let path = format!("/_worker/workers/{}", self.id);
        self.send_signed(Method::PATCH, &path, body, MessageKind::Heartbeat).await
    }

    /// One long-poll for a task (held by the orchestrator up to 2 s): 200 with the task
    /// payload, 204 without a task.
    pub async fn poll(&self) -> (u16, Value) {
        self.send(Method::GET, &format!("/_worker/workers/{}/tasks/next?timeout=2", self.id), None).await
    }

    /// A result of `status` (`success`, `failure`, `cancelled` or a blueprint's own) with `data`
    /// for `task` (a payload from [`RawWorker::poll`], or any object with `job_id` and `task_id`).
    pub async fn result(&self, task: &Value, status: &str, data: Value) -> (u16, Value) {
        let body = json!({"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": self.id,
                          "origin_worker_id": self.id, "status": status, "data": data});
        self.send_signed(Method::POST, "/_worker/tasks/result", body, MessageKind::Result).await
    }

    /// A `success` result with `data`.
    pub async fn succeed(&self, task: &Value, data: Value) -> (u16, Value) {
        self.result(task, "success", data).await
    }

    /// A `failure` result with an error code (`TRANSIENT_ERROR`, `PERMANENT_ERROR`, ...).
    pub async fn fail(&self, task: &Value, code: &str, message: &str) -> (u16, Value) {
        let body = json!({"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": self.id,
                          "origin_worker_id": self.id, "status": "failure",
                          "error": {"code": code, "message": message}});
        self.send_signed(Method::POST, "/_worker/tasks/result", body, MessageKind::Result).await
    }

    /// A worker event (`POST /_worker/events`): `body` is the event (`event_type`, `job_id`,
    /// `task_id`, `payload`, ...); `event_id`, `worker_id` and `origin_worker_id` are added when
    /// missing.
    pub async fn event(&self, mut body: Value) -> (u16, Value) {
        if body.get("event_id").is_none() {
            body["event_id"] = json!(uuid::Uuid::new_v4().to_string());
        }
        for key in ["worker_id", "origin_worker_id"] {
            if body.get(key).is_none() {
                body[key] = json!(self.id);
            }
        }
        self.send_signed(Method::POST, "/_worker/events", body, MessageKind::Event).await
    }
}

/// Seconds since the epoch (message timestamps).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
