//! Running tasks: a polled task is checked (signature) and entered into the task table
//! ([`accept_task`]), its handler runs in its own tokio task ([`execute`]) with a [`TaskHandle`]
//! whose events go to the orchestrator that sent it ([`TaskEvents`]), and the result is delivered
//! with retries ([`deliver_result`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tracing::Instrument;

use super::backoff::Backoff;
use super::handle::{EventSink, TaskHandle};
use super::session::OrchestratorSession;
use super::shutdown::until_set;
use super::skill::SkillEntry;
use super::state::{InFlight, WorkerState};
use super::{TaskOutcome, WorkerError};
use crate::protocol::{
    self, error_codes, sign, unix_now, MessageKind, TaskPayload, TaskResult, TaskSigCheck, WorkerEventPayload,
};

/// A task arrived from `session`: verify, register, run in the background.
pub(crate) fn accept_task(state: &Arc<WorkerState>, session: &Arc<OrchestratorSession>, raw: Value) {
    let payload: TaskPayload = match serde_json::from_value(raw.clone()) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(orchestrator = %session.cfg.url, "dropping malformed task payload: {e}");
            return;
        }
    };
    if let Some(secret) = state.cfg.secret_key.as_deref().filter(|s| !s.is_empty()) {
        match sign::verify_task(&raw, secret) {
            TaskSigCheck::Valid => {}
            TaskSigCheck::Missing if !state.cfg.require_task_signature => {
                tracing::warn!(
                    task_id = %payload.task_id,
                    "task without orchestrator signature (allowed by REQUIRE_TASK_SIGNATURE=false)"
                )
            }
            TaskSigCheck::Missing => {
                tracing::error!(task_id = %payload.task_id, "task missing mandatory orchestrator signature: rejected");
                return;
            }
            TaskSigCheck::Invalid => {
                tracing::error!(task_id = %payload.task_id, "task orchestrator signature mismatch: rejected");
                return;
            }
        }
    }
    let skill_type = state
        .skills
        .get(&payload.task_type)
        .map(|entry| entry.skill.type_name().to_owned())
        .unwrap_or_else(|| payload.task_type.clone());
    let Some((cancel_rx, in_flight)) = state.start_task(&payload.task_id, &payload.job_id, skill_type, session.idx)
    else {
        tracing::warn!(task_id = %payload.task_id, "task delivered twice while running: ignoring the copy");
        return;
    };
    let span =
        tracing::info_span!("task", task_id = %payload.task_id, job_id = %payload.job_id, skill = %payload.task_type);
    // The orchestrator's dispatch span (payload `tracing_context.traceparent`) is the task span's parent.
    let parent = payload.tracing_context.as_ref().and_then(crate::trace::TraceParent::from_map);
    let (span, _) = crate::trace::span_with_parent(span, parent);
    tokio::spawn(execute(state.clone(), session.clone(), payload, cancel_rx, in_flight).instrument(span));
}

/// A task of a poll answer whose payload cannot be read (see
/// [`Polled::Unreadable`](super::client::Polled::Unreadable)): it is reported failed
/// (`INVALID_INPUT_ERROR`, no retry) at once instead of waiting for its timeout.
pub(crate) fn reject_unreadable(
    state: &Arc<WorkerState>,
    session: &Arc<OrchestratorSession>,
    job_id: String,
    task_id: String,
    task_type: String,
    error: String,
) {
    tracing::error!(%job_id, %task_id, "task payload cannot be read: {error}; reporting the task failed");
    let payload: TaskPayload =
        match serde_json::from_value(serde_json::json!({"job_id": job_id, "task_id": task_id, "type": task_type})) {
            Ok(p) => p,
            Err(e) => return tracing::error!("cannot report an unreadable task: {e}"),
        };
    let outcome = TaskOutcome::failure(
        error_codes::INVALID_INPUT_ERROR,
        format!("the worker cannot read the task payload: {error}"),
    )
    .into_wire();
    let (state, session) = (state.clone(), session.clone());
    tokio::spawn(async move { deliver_result(&state, &session, &payload, outcome, Duration::ZERO).await });
}

/// Runs one task to completion and delivers its result; in flight until then.
async fn execute(
    state: Arc<WorkerState>,
    session: Arc<OrchestratorSession>,
    payload: TaskPayload,
    cancel_rx: watch::Receiver<bool>,
    _in_flight: InFlight,
) {
    let start = Instant::now();
    let outcome = run_handler(&state, &session, &payload, cancel_rx).await;
    // S3 offload: files of the task directory named in the result are uploaded; the directory goes.
    #[cfg(feature = "s3")]
    let outcome = match &state.s3 {
        None => outcome,
        Some(s3) => {
            let mut outcome = outcome;
            s3.publish(&payload.job_id, &payload.task_id, &mut outcome).await;
            s3.clear(&payload.task_id).await;
            outcome
        }
    };
    let elapsed = start.elapsed();
    state.finish_task(&payload.task_id);
    let outcome = outcome.into_wire();
    match outcome.error_info() {
        Some(error) => {
            tracing::info!(status = %outcome.status, code = %error.code, message = %error.message, "task finished")
        }
        None => tracing::info!(status = %outcome.status, ?elapsed, "task finished"),
    }
    deliver_result(&state, &session, &payload, outcome, elapsed).await;
}

/// Checks the task policy, finds the handler and runs it until it returns, panics or is
/// cancelled (then it gets `cancel_grace` to finish).
async fn run_handler(
    state: &Arc<WorkerState>,
    session: &Arc<OrchestratorSession>,
    payload: &TaskPayload,
    mut cancel_rx: watch::Receiver<bool>,
) -> TaskOutcome {
    if let Some(allowed) = payload.allowed_skills() {
        if !allowed.contains(&payload.task_type.as_str()) {
            return TaskOutcome::failure(
                error_codes::SECURITY_ERROR,
                format!("Task type '{}' is not permitted by task policy", payload.task_type),
            );
        }
    }
    let Some(entry) = state.skills.get(&payload.task_type).cloned() else {
        tracing::warn!("unsupported skill '{}'", payload.task_type);
        return TaskOutcome::failure(error_codes::PERMANENT_ERROR, format!("Unsupported skill: {}", payload.task_type));
    };
    let sink: Arc<dyn EventSink> =
        Arc::new(TaskEvents { state: state.clone(), session: session.clone(), skill: entry.clone() });
    // S3 offload: `s3://` params become local paths before the handler sees them.
    #[cfg(feature = "s3")]
    let mut staged = payload.clone();
    #[cfg(feature = "s3")]
    let payload = match &state.s3 {
        None => payload,
        Some(s3) => {
            let mut params = Value::Object(staged.params.take().unwrap_or_default());
            if let Err(outcome) = s3.stage(&payload.task_id, &mut params).await {
                return outcome;
            }
            staged.params = params.as_object().cloned();
            &staged
        }
    };
    // The handle sees (and events carry) the worker task span's context, a child of the orchestrator's one.
    let mut payload = payload.clone();
    let parent = payload.tracing_context.as_ref().and_then(crate::trace::TraceParent::from_map);
    if let Some(traceparent) = crate::trace::current_context(parent) {
        payload.tracing_context = Some(traceparent.to_map());
    }
    let handle = TaskHandle::new(payload, cancel_rx.clone(), sink, state.cfg.worker_id.clone());
    let params = handle.params_raw().clone();
    let handler = entry.handler.clone();
    let mut join = tokio::spawn(async move { handler(params, handle).await }.in_current_span());
    tokio::select! {
        biased;
        res = &mut join => join_outcome(res),
        _ = until_set(&mut cancel_rx) => {
            tracing::info!("task cancelled");
            if tokio::time::timeout(state.cfg.cancel_grace, &mut join).await.is_err() {
                join.abort();
            }
            TaskOutcome::cancelled()
        }
    }
}

/// The handler's outcome; a panic is a `TRANSIENT_ERROR`, an abort a cancellation.
fn join_outcome(res: Result<TaskOutcome, tokio::task::JoinError>) -> TaskOutcome {
    match res {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => {
            let panic = e.into_panic();
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!("task handler panicked: {msg}");
            TaskOutcome::failure(error_codes::TRANSIENT_ERROR, format!("task handler panicked: {msg}"))
        }
        Err(_) => TaskOutcome::cancelled(),
    }
}

/// The result body of a task (signed, with a current timestamp and the execution time).
fn result_body(state: &WorkerState, payload: &TaskPayload, outcome: &TaskOutcome, elapsed: Duration) -> Value {
    let mut result = TaskResult::new(payload.job_id.clone(), payload.task_id.clone(), outcome.status.clone());
    result.worker_id = Some(state.cfg.worker_id.clone());
    result.origin_worker_id = Some(state.cfg.worker_id.clone());
    result.data = match &outcome.data {
        Value::Object(m) => Some(m.clone()),
        _ => None,
    };
    result.error = outcome.error.clone();
    result.metadata = outcome.metadata.clone();
    result.data_metadata = Some(outcome.data_metadata.clone()).filter(|m| !m.is_empty());
    let mut costs = Map::new();
    costs.insert("execution_time_seconds".into(), Value::from((elapsed.as_secs_f64() * 10_000.0).round() / 10_000.0));
    for (k, v) in &outcome.costs {
        costs.insert(k.clone(), v.clone());
    }
    result.costs = Some(costs);
    result.timestamp = Some(unix_now());
    state.sign(serde_json::to_value(result).expect("result serialises"), MessageKind::Result)
}

/// Deliver a result with retries (fresh timestamp and signature per attempt). `ignored` is final.
/// The delay doubles from `result_retry_initial_delay` without bound, as in the SDK; a `429`'s
/// `Retry-After` only lengthens one wait.
pub(crate) async fn deliver_result(
    state: &WorkerState,
    session: &OrchestratorSession,
    payload: &TaskPayload,
    outcome: TaskOutcome,
    elapsed: Duration,
) {
    let mut backoff = Backoff::new(state.cfg.result_retry_initial_delay, Duration::MAX);
    let attempts = state.cfg.result_max_retries.max(1);
    for attempt in 1..=attempts {
        let body = result_body(state, payload, &outcome, elapsed);
        match session.send_result(&body).await {
            Ok(resp) if resp.is_ignored() => {
                let reason = resp.reason.as_deref().unwrap_or("?");
                let (job_id, task_id) = (payload.job_id.as_str(), payload.task_id.as_str());
                if matches!(reason, "deadline_exceeded" | "job_cancelled") {
                    tracing::info!(reason, job_id, task_id, "result ignored by the orchestrator");
                } else {
                    tracing::warn!(
                        reason,
                        job_id,
                        task_id,
                        message = ?resp.message,
                        "result ignored by the orchestrator"
                    );
                }
                return;
            }
            Ok(resp) => {
                tracing::debug!(
                    status = %outcome.status,
                    transition = ?resp.transition,
                    job_id = %payload.job_id,
                    task_id = %payload.task_id,
                    "result accepted"
                );
                return;
            }
            Err(WorkerError::Http { status, body }) if matches!(status, 400 | 413 | 422) => {
                tracing::error!(status, %body, "result rejected by the orchestrator");
                return;
            }
            Err(e) if attempt == attempts => {
                tracing::error!("failed to send result after {attempts} attempts: {e}");
                return;
            }
            Err(WorkerError::RateLimited { retry_after, .. }) => {
                let wait = retry_after.unwrap_or_default().max(backoff.step());
                tracing::warn!("rate limited sending result; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                let delay = backoff.step();
                tracing::warn!("error sending result (attempt {attempt}/{attempts}): {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Events of one task go to the orchestrator that sent it.
struct TaskEvents {
    state: Arc<WorkerState>,
    session: Arc<OrchestratorSession>,
    skill: Arc<SkillEntry>,
}

impl EventSink for TaskEvents {
    fn emit(
        &self,
        task: &TaskPayload,
        event_type: String,
        payload: Map<String, Value>,
    ) -> BoxFuture<'static, Result<(), WorkerError>> {
        let declared = self.skill.skill.info.events_schema.as_ref().is_some_and(|s| s.contains_key(&event_type));
        if event_type != protocol::EVENT_TYPE_PROGRESS && !declared {
            if self.state.cfg.strict_event_validation {
                tracing::error!(event_type, "emitting an undeclared event type: blocked");
                return Box::pin(async move { Err(WorkerError::UndeclaredEvent(event_type)) });
            }
            tracing::warn!(event_type, "emitting an undeclared event type (allowed by config)");
        }
        let cfg = &self.state.cfg;
        let event = WorkerEventPayload {
            event_id: uuid::Uuid::new_v4().to_string(),
            worker_id: cfg.worker_id.clone(),
            origin_worker_id: cfg.worker_id.clone(),
            event_type,
            payload,
            origin_task_id: Some(task.task_id.clone()),
            bubbling_chain: Some(vec![]),
            target_job_id: Some(task.job_id.clone()),
            target_task_id: Some(task.task_id.clone()),
            trace_context: Some(task.tracing_context.clone().unwrap_or_default()),
            priority: 0.0,
            timestamp: Some(unix_now()),
            security: None,
            metadata: None,
        };
        let body = self.state.sign(serde_json::to_value(event).expect("event serialises"), MessageKind::Event);
        let session = self.session.clone();
        Box::pin(async move {
            let ws = session.ws_out.lock().unwrap().clone();
            if let Some(tx) = ws {
                if tx.send(protocol::to_canonical_string(&body)).is_ok() {
                    return Ok(());
                }
            }
            let resp = session.client.send_event(&body).await?;
            if resp.status == "error" {
                return Err(WorkerError::EventRejected(Value::Object(resp.extra).to_string()));
            }
            Ok(())
        })
    }

    fn set_hot(&self, item: String, hot: bool) {
        self.state.set_hot(item, hot);
    }
}
