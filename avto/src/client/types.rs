//! The typed answers and requests of the client API.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::job::JobStatus;

/// A job's id, as `POST .../jobs/...` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl JobId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for JobId {
    fn from(s: String) -> Self {
        JobId(s)
    }
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        JobId(s.to_owned())
    }
}

impl From<&JobId> for JobId {
    fn from(id: &JobId) -> Self {
        id.clone()
    }
}

impl AsRef<str> for JobId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A job's status document (`GET .../jobs/{id}`): the fields every answer has, typed, and the
/// whole document in `raw` (with `detailed=true`: initial data, state history, path, current
/// task, approval, timestamps, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    pub id: JobId,
    pub status: JobStatus,
    /// The blueprint's name.
    pub blueprint: String,
    pub current_state: String,
    /// Why the job failed, when it did.
    pub error_message: Option<String>,
    /// What a waiting job waits for (e.g. no worker has the skill).
    pub waiting_reason: Option<String>,
    /// The last progress a worker reported (0.0 ..= 1.0) and its message.
    pub progress: Option<f64>,
    pub progress_message: Option<String>,
    pub parent_job_id: Option<String>,
    pub child_job_id: Option<String>,
    /// The job's result, once it is terminal.
    pub result: Option<Value>,
    /// The whole status document as the orchestrator sent it.
    pub raw: Value,
}

#[derive(Deserialize)]
struct ViewFields {
    id: String,
    status: JobStatus,
    #[serde(default)]
    blueprint_name: String,
    #[serde(default)]
    current_state: String,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    waiting_reason: Option<String>,
    #[serde(default)]
    progress: Option<f64>,
    #[serde(default)]
    progress_message: Option<String>,
    #[serde(default)]
    parent_job_id: Option<String>,
    #[serde(default)]
    child_job_id: Option<String>,
    #[serde(default)]
    result: Option<Value>,
}

impl JobView {
    /// Reads a status document (an object with at least `id` and a known `status`).
    pub fn from_json(raw: Value) -> Result<JobView, serde_json::Error> {
        let f = ViewFields::deserialize(&raw)?;
        Ok(JobView {
            id: JobId(f.id),
            status: f.status,
            blueprint: f.blueprint_name,
            current_state: f.current_state,
            error_message: f.error_message,
            waiting_reason: f.waiting_reason,
            progress: f.progress,
            progress_message: f.progress_message,
            parent_job_id: f.parent_job_id,
            child_job_id: f.child_job_id,
            result: f.result.filter(|r| !r.is_null()),
            raw,
        })
    }

    /// `finished`, `failed`, `cancelled` or `quarantined`.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }
}

/// A job to create, with the options of `POST .../jobs/...` besides the initial data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewJob {
    /// A JSON object ([`Client::create_job`](super::Client::create_job) refuses anything else).
    pub initial_data: Value,
    /// Where the orchestrator posts the job's end (`http://` or `https://`).
    pub webhook_url: Option<String>,
    /// How long the job's tasks may wait for a worker (at most `MAX_TIMEOUT_SECONDS`).
    pub dispatch_timeout: Option<Duration>,
    /// How long a worker may take for a task's result (at most `MAX_TIMEOUT_SECONDS`).
    pub result_timeout: Option<Duration>,
    /// Passed to the workers with each task (`security`) and kept with the job (`metadata`).
    pub security: Option<Map<String, Value>>,
    pub metadata: Option<Map<String, Value>>,
    /// A W3C `traceparent` header: the job's spans join that trace.
    pub traceparent: Option<String>,
}

impl NewJob {
    /// A job with this initial data (a JSON object).
    pub fn new(initial_data: Value) -> NewJob {
        NewJob { initial_data, ..NewJob::default() }
    }
    pub fn webhook_url(mut self, url: impl Into<String>) -> Self {
        self.webhook_url = Some(url.into());
        self
    }
    pub fn dispatch_timeout(mut self, d: Duration) -> Self {
        self.dispatch_timeout = Some(d);
        self
    }
    pub fn result_timeout(mut self, d: Duration) -> Self {
        self.result_timeout = Some(d);
        self
    }
    pub fn security(mut self, v: Value) -> Self {
        self.security = Some(object(v));
        self
    }
    pub fn metadata(mut self, v: Value) -> Self {
        self.metadata = Some(object(v));
        self
    }
    pub fn traceparent(mut self, tp: impl Into<String>) -> Self {
        self.traceparent = Some(tp.into());
        self
    }

    /// The request body.
    pub(super) fn body(&self) -> Value {
        let mut b = Map::new();
        b.insert("initial_data".into(), self.initial_data.clone());
        if let Some(u) = &self.webhook_url {
            b.insert("webhook_url".into(), Value::String(u.clone()));
        }
        for (key, d) in [("dispatch_timeout", self.dispatch_timeout), ("result_timeout", self.result_timeout)] {
            if let Some(d) = d {
                b.insert(key.into(), serde_json::json!(d.as_secs_f64()));
            }
        }
        for (key, m) in [("security", &self.security), ("metadata", &self.metadata)] {
            if let Some(m) = m {
                b.insert(key.into(), Value::Object(m.clone()));
            }
        }
        Value::Object(b)
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// One row of a job's history (`GET .../jobs/{id}/history`, with `HISTORY_DATABASE_URI` set).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub event_id: String,
    /// `state_started`, `state_finished`, `task_dispatched`, `task_finished`, `s3_operation`, ...
    pub event_type: String,
    /// When, formatted in the orchestrator's time zone (`TZ`).
    pub timestamp: String,
    pub state: Option<String>,
    pub worker_id: Option<String>,
    pub details: Option<Value>,
    /// The row as the orchestrator sent it (also `context_snapshot`, durations, attempts, ...).
    pub raw: Value,
}

impl HistoryEntry {
    pub(super) fn from_json(raw: Value) -> HistoryEntry {
        let s = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_owned);
        HistoryEntry {
            event_id: raw
                .get("event_id")
                .map(|v| v.as_str().map(str::to_owned).unwrap_or(v.to_string()))
                .unwrap_or_default(),
            event_type: s("event_type").unwrap_or_default(),
            timestamp: s("timestamp").unwrap_or_default(),
            state: s("state"),
            worker_id: s("worker_id"),
            details: raw.get("details").filter(|d| !d.is_null()).cloned(),
            raw,
        }
    }
}

/// A presigned upload URL (`GET .../jobs/{id}/files/upload`): `PUT` the file's bytes to `url`
/// within `expires_in`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UploadUrl {
    pub url: String,
    /// Seconds the URL is valid.
    pub expires_in: u64,
    /// The HTTP method to use (`PUT`).
    pub method: String,
}

/// A file uploaded through the orchestrator (`PUT .../jobs/{id}/files/content/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Uploaded {
    /// Where it landed: `s3://bucket/jobs/{job_id}/{name}`; handlers read it with `TaskFiles`.
    pub s3_uri: String,
    pub size: u64,
}

/// A page of the job list (`GET .../jobs`): the newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// At most this many jobs (the orchestrator caps it at 1000).
    pub limit: usize,
    pub offset: usize,
    /// Full documents instead of the compact ones.
    pub detailed: bool,
}

impl Default for Page {
    fn default() -> Self {
        Page { limit: 100, offset: 0, detailed: false }
    }
}

impl Page {
    pub fn new(limit: usize, offset: usize) -> Page {
        Page { limit, offset, detailed: false }
    }
    pub fn detailed(mut self, detailed: bool) -> Page {
        self.detailed = detailed;
        self
    }
}
