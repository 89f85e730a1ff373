//! The per-task handle given to handlers: ids, raw params, progress/events, cancellation.

use super::WorkerError;
use crate::protocol::wire::FileMetadata;
use crate::protocol::{TaskPayload, EVENT_TYPE_PROGRESS};
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Where a task's events go (the orchestrator that sent the task, or a test recorder).
pub(crate) trait EventSink: Send + Sync {
    fn emit(
        &self,
        task: &TaskPayload,
        event_type: String,
        payload: Map<String, Value>,
    ) -> BoxFuture<'static, Result<(), WorkerError>>;
    fn set_hot(&self, item: String, hot: bool);
}

/// Handle of one running task. Cheap to clone; `Send + Sync`.
///
/// ```no_run
/// # use avto::worker::{TaskHandle, TaskOutcome};
/// # async fn handler(task: TaskHandle) -> TaskOutcome {
/// for step in 0..10 {
///     tokio::select! {
///         _ = task.cancelled() => return TaskOutcome::cancelled(),
///         _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
///     }
///     task.progress((step + 1) as f64 / 10.0, &format!("step {}", step + 1)).await;
/// }
/// TaskOutcome::success(serde_json::json!({"done": true}))
/// # }
/// ```
#[derive(Clone)]
pub struct TaskHandle {
    inner: Arc<Inner>,
}

struct Inner {
    payload: TaskPayload,
    params: Value,
    cancel: watch::Receiver<bool>,
    sink: Arc<dyn EventSink>,
    worker_id: String,
}

impl std::fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle")
            .field("task_id", &self.inner.payload.task_id)
            .field("job_id", &self.inner.payload.job_id)
            .field("type", &self.inner.payload.task_type)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl TaskHandle {
    pub(crate) fn new(
        payload: TaskPayload,
        cancel: watch::Receiver<bool>,
        sink: Arc<dyn EventSink>,
        worker_id: String,
    ) -> Self {
        let params = Value::Object(payload.params.clone().unwrap_or_default());
        TaskHandle { inner: Arc::new(Inner { payload, params, cancel, sink, worker_id }) }
    }

    /// A handle for unit-testing a handler without an orchestrator: events are recorded in the
    /// returned [`TestTaskControl`], which can also cancel the task.
    pub fn for_test(payload: TaskPayload) -> (TaskHandle, TestTaskControl) {
        let (tx, rx) = watch::channel(false);
        let recorder = Arc::new(Recorder::default());
        let handle = TaskHandle::new(payload, rx, recorder.clone(), "test-worker".into());
        (handle, TestTaskControl { cancel: tx, recorder })
    }

    /// The task id (`task-<uuid>`; a retry gets a new one).
    pub fn task_id(&self) -> &str {
        &self.inner.payload.task_id
    }
    /// The job this task belongs to.
    pub fn job_id(&self) -> &str {
        &self.inner.payload.job_id
    }
    /// The skill name (`type`).
    pub fn task_type(&self) -> &str {
        &self.inner.payload.task_type
    }
    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }
    /// The params as received (an object; `{}` when the task had none).
    pub fn params_raw(&self) -> &Value {
        &self.inner.params
    }
    /// The whole task payload (priority, deadline, metadata, tracing context, policy, ...).
    pub fn payload(&self) -> &TaskPayload {
        &self.inner.payload
    }
    pub fn priority(&self) -> f64 {
        self.inner.payload.priority
    }
    /// Absolute epoch deadline, when the job has one.
    pub fn deadline(&self) -> Option<f64> {
        self.inner.payload.deadline
    }
    /// The job's metadata.
    pub fn metadata(&self) -> Option<&Map<String, Value>> {
        self.inner.payload.metadata.as_ref()
    }
    /// S3 file metadata (`uri`, `size`, `etag`, `metadata`) of the params that name files the
    /// job's earlier tasks uploaded, by params key (`params_metadata`).
    pub fn params_metadata(&self) -> Option<&BTreeMap<String, FileMetadata>> {
        self.inner.payload.params_metadata.as_ref()
    }
    /// The resource hint of the dispatch (`params["resource_hint"]`, e.g. `"gpu"`).
    pub fn resource_hint(&self) -> Option<&str> {
        self.inner.params.get("resource_hint").and_then(Value::as_str)
    }
    /// The skill version the dispatch required, if it did (only such a worker was chosen).
    pub fn skill_version(&self) -> Option<&str> {
        self.inner.payload.skill_version.as_deref()
    }
    /// The skill type the dispatch required, if it did.
    pub fn skill_type(&self) -> Option<&str> {
        self.inner.payload.skill_type.as_deref()
    }
    /// W3C trace context (`{"traceparent": ...}`) of this task's span when the orchestrator traces: the worker's
    /// task span (with feature `otel`), a child of the orchestrator's dispatch span that the payload carried.
    /// Events of the task carry it as `trace_context`.
    pub fn tracing_context(&self) -> Option<&Map<String, Value>> {
        self.inner.payload.tracing_context.as_ref()
    }
    /// The task's W3C `traceparent` (see [`TaskHandle::tracing_context`]), to propagate to downstream calls.
    pub fn traceparent(&self) -> Option<crate::trace::TraceParent> {
        self.inner.payload.tracing_context.as_ref().and_then(crate::trace::TraceParent::from_map)
    }

    /// Report progress (`event_type: "progress"`, `payload: {"progress", "message"}`), over the
    /// WebSocket when connected, else `POST /_worker/events`. Best effort: failures are logged.
    pub async fn progress(&self, fraction: f64, message: &str) {
        let mut payload = Map::new();
        payload.insert("progress".into(), Value::from(fraction));
        payload.insert("message".into(), Value::from(message));
        if let Err(e) = self.inner.sink.emit(&self.inner.payload, EVENT_TYPE_PROGRESS.into(), payload).await {
            tracing::warn!(task_id = %self.task_id(), "progress event not delivered: {e}");
        }
    }

    /// Emit a custom event. With strict event validation (the default) the type must be declared
    /// with [`super::Skill::event_schema`]. The payload must serialise to a JSON object.
    pub async fn event(&self, event_type: &str, payload: impl Serialize) -> Result<(), WorkerError> {
        let payload = match serde_json::to_value(payload) {
            Ok(Value::Object(m)) => m,
            Ok(Value::Null) => Map::new(),
            Ok(_) => return Err(WorkerError::protocol("event payload must be a JSON object")),
            Err(e) => return Err(WorkerError::unparsable(format!("event payload does not serialise: {e}"), e)),
        };
        self.inner.sink.emit(&self.inner.payload, event_type.to_owned(), payload).await
    }

    /// Whether the orchestrator asked to cancel this task (WebSocket `cancel_task` or heartbeat
    /// `cancel_task_ids`), or the worker is shutting down past its timeout.
    pub fn is_cancelled(&self) -> bool {
        *self.inner.cancel.borrow()
    }

    /// Resolves when the task is cancelled (never, otherwise): use it in `tokio::select!`.
    pub async fn cancelled(&self) {
        let mut rx = self.inner.cancel.clone();
        let cancelled = rx.wait_for(|c| *c).await.is_ok();
        if !cancelled {
            // sender gone without cancelling: the task can no longer be cancelled
            std::future::pending::<()>().await;
        }
    }

    /// Mark a skill/resource as hot (loaded); reported in the next heartbeat.
    pub fn add_hot_skill(&self, item: impl Into<String>) {
        self.inner.sink.set_hot(item.into(), true);
    }
    /// Remove a hot skill/resource.
    pub fn remove_hot_skill(&self, item: impl Into<String>) {
        self.inner.sink.set_hot(item.into(), false);
    }
}

/// One event recorded by a [`TaskHandle::for_test`] handle.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub event_type: String,
    pub payload: Map<String, Value>,
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<RecordedEvent>>,
    hot: Mutex<Vec<(String, bool)>>,
}

impl EventSink for Recorder {
    fn emit(
        &self,
        _task: &TaskPayload,
        event_type: String,
        payload: Map<String, Value>,
    ) -> BoxFuture<'static, Result<(), WorkerError>> {
        self.events.lock().unwrap().push(RecordedEvent { event_type, payload });
        Box::pin(async { Ok(()) })
    }
    fn set_hot(&self, item: String, hot: bool) {
        self.hot.lock().unwrap().push((item, hot));
    }
}

/// Test-side control of a [`TaskHandle::for_test`] handle.
pub struct TestTaskControl {
    cancel: watch::Sender<bool>,
    recorder: Arc<Recorder>,
}

impl std::fmt::Debug for TestTaskControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestTaskControl").finish_non_exhaustive()
    }
}

impl TestTaskControl {
    /// Cancel the task.
    pub fn cancel(&self) {
        let _ = self.cancel.send(true);
    }
    /// Events emitted so far (progress included).
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.recorder.events.lock().unwrap().clone()
    }
}
