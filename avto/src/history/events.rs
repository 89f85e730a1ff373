//! Engine events -> history rows (orchestrator.md section 6.3).

use std::sync::Arc;

use serde_json::{json, Value};

use super::{next_timestamp_us, object, HistoryRecord};
use crate::context::ErrorClass;
use crate::engine::EngineEvent;
use crate::files::FileOperation;
use crate::job::{now_ms, Job, JobStatus};

/// The job document as history keeps it: everything but `security` and `tracing_context`.
pub(super) fn snapshot(job: &Job) -> Arc<str> {
    let mut v = serde_json::to_value(job).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("security");
        m.remove("tracing_context");
    }
    Arc::from(v.to_string())
}

fn base(job: &Job, event_type: &str, snapshot: &Arc<str>) -> HistoryRecord {
    HistoryRecord {
        event_id: uuid::Uuid::new_v4().to_string(),
        job_id: job.id.clone(),
        client: Some(job.client.name.clone()).filter(|c| !c.is_empty()),
        blueprint: Some(job.blueprint.clone()),
        timestamp_us: next_timestamp_us(),
        event_type: event_type.to_owned(),
        state: Some(job.current_state.clone()),
        status: Some(job.status.as_str().to_owned()),
        context_snapshot: Some(snapshot.clone()),
        ..Default::default()
    }
}

/// The `job_created` row of a new job (`source`: `api`, `scheduler:<name>` or `parent`).
pub fn created_record(job: &Job) -> HistoryRecord {
    let snap = snapshot(job);
    let mut r = base(job, "job_created", &snap);
    let source = job
        .metadata
        .as_ref()
        .and_then(|m| m.get("source"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| if job.parent_job_id.is_some() { "parent".into() } else { "api".into() });
    r.details = Some(object([("source", json!(source)), ("parent_job_id", json!(job.parent_job_id))]));
    r
}

/// The worker id of a handler's "ghost" events ([`crate::Actions::send_event`]).
pub const GHOST: &str = "ghost";

/// The `worker_event:{type}` row of an event worker `worker_id` (the authenticated sender) sent
/// about `job` (`job` as the event left it; `details`: the event's id, route and payload).
pub fn worker_event_record(
    job: &Job,
    worker_id: &str,
    task_id: Option<&str>,
    event_type: &str,
    details: Value,
) -> HistoryRecord {
    let mut r = base(job, &format!("worker_event:{event_type}"), &snapshot(job));
    r.worker_id = Some(worker_id.to_owned());
    r.origin_task_id = task_id.map(str::to_owned);
    r.details = Some(details);
    r
}

/// The `details` of an `s3_operation` row: `operation` (`upload`, `upload_dir`, `download`,
/// `download_dir`, `presign`, `delete`, `cleanup`), `s3_uri`, `status` (`success` / `error`),
/// `duration_ms`, and as they apply `local_path`, `size`, `file_count`, `method`, `error`.
pub fn s3_operation_details(op: &FileOperation) -> Value {
    object([
        ("operation", json!(op.operation.as_str())),
        ("s3_uri", json!(op.uri)),
        ("status", json!(if op.error.is_none() { "success" } else { "error" })),
        ("duration_ms", json!(op.duration.as_millis() as u64)),
        ("local_path", json!(op.local_path.as_ref().map(|p| p.display().to_string()))),
        ("size", json!(op.size)),
        ("file_count", json!(op.file_count)),
        ("method", json!(op.method.map(|m| m.as_str()))),
        ("error", json!(op.error)),
    ])
}

/// The `s3_operation` row of a file operation on `job` outside a handler run (the client's
/// uploads and downloads, the cleanup when the job ended); a handler's are part of its step
/// ([`EngineEvent::FileOperation`]).
pub fn s3_operation_record(job: &Job, op: &FileOperation) -> HistoryRecord {
    let mut r = base(job, "s3_operation", &snapshot(job));
    r.details = Some(s3_operation_details(op));
    r
}

/// The rows of what one engine call did to `job` (all share the snapshot of the job afterwards).
/// The end of the job comes last, after the end state's own `state_finished`.
pub fn records_for(job: &Job, events: &[EngineEvent]) -> Vec<HistoryRecord> {
    if events.is_empty() {
        return Vec::new();
    }
    let snap = snapshot(job);
    let is_end = |e: &&EngineEvent| matches!(e, EngineEvent::JobFinished { .. });
    events
        .iter()
        .filter(|e| !is_end(e))
        .chain(events.iter().filter(is_end))
        .map(|e| {
            let mut r;
            match e {
                EngineEvent::StateStarted { state, attempt } => {
                    r = base(job, "state_started", &snap);
                    r.state = Some(state.clone());
                    r.attempt_number = Some(i64::from(*attempt) + 1);
                }
                EngineEvent::StateFinished { state, next_state, duration_ms } => {
                    r = base(job, "state_finished", &snap);
                    r.state = Some(state.clone());
                    r.previous_state = Some(state.clone());
                    r.next_state = next_state.clone();
                    r.duration_ms = Some(*duration_ms as i64);
                }
                EngineEvent::StateFailed { state, error, attempt } => {
                    r = base(job, "state_failed", &snap);
                    r.state = Some(state.clone());
                    r.attempt_number = Some(i64::from(*attempt) + 1);
                    r.details =
                        Some(object([("error", json!(error)), ("next_retry_at_ms", json!(job.next_retry_at_ms))]));
                }
                EngineEvent::TaskDispatched { task_id, task_type, attempt } => {
                    r = base(job, "task_dispatched", &snap);
                    r.origin_task_id = Some(task_id.clone());
                    r.attempt_number = Some(i64::from(*attempt) + 1);
                    r.details = Some(json!({"task_type": task_type}));
                }
                EngineEvent::TaskFinished { task_id, status, worker_id, error_code } => {
                    r = base(job, "task_finished", &snap);
                    r.origin_task_id = Some(task_id.clone());
                    r.worker_id = worker_id.clone();
                    r.details = Some(object([
                        ("result_status", json!(status)),
                        ("error_code", json!(error_code)),
                        ("error_class", json!(error_code.as_deref().map(|c| ErrorClass::of(c).as_str()))),
                    ]));
                }
                EngineEvent::TaskRetry { task_id, next_task_id, attempt, delay_ms } => {
                    r = base(job, "task_retry", &snap);
                    r.origin_task_id = Some(task_id.clone());
                    r.attempt_number = Some(i64::from(*attempt) + 1);
                    r.details = Some(json!({"next_task_id": next_task_id, "delay_ms": delay_ms,
                                            "next_retry_at_ms": now_ms().saturating_add(*delay_ms)}));
                }
                EngineEvent::ApprovalRequested { integration, message } => {
                    r = base(job, "approval_requested", &snap);
                    r.details = Some(object([("integration", json!(integration)), ("message", json!(message))]));
                }
                EngineEvent::SubJobStarted { child_job_id, blueprint } => {
                    r = base(job, "sub_job_started", &snap);
                    r.details = Some(json!({"child_job_id": child_job_id, "child_blueprint": blueprint}));
                }
                EngineEvent::GhostEvent { event_id, event_type, payload } => {
                    r = base(job, &format!("worker_event:{event_type}"), &snap);
                    r.worker_id = Some(GHOST.to_owned());
                    r.details = Some(json!({"event_id": event_id, "sender_id": GHOST, "origin_worker_id": GHOST,
                                            "bubbling_chain": [], "task_id": null, "payload": payload}));
                }
                EngineEvent::FileOperation(op) => {
                    r = base(job, "s3_operation", &snap);
                    r.details = Some(s3_operation_details(op));
                }
                EngineEvent::JobFinished { status } => {
                    let kind = match status {
                        JobStatus::Finished => "job_completed",
                        JobStatus::Cancelled => "job_cancelled",
                        JobStatus::Quarantined => "job_quarantined",
                        _ => "job_failed",
                    };
                    r = base(job, kind, &snap);
                    r.status = Some(status.as_str().to_owned());
                    r.duration_ms = Some(now_ms().saturating_sub(job.created_at_ms) as i64);
                    r.details = job.error_message.as_ref().map(|m| json!({"error_message": m}));
                }
            }
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_an_engine_step() {
        let mut job = Job::new("j1", "bp", "start", json!({"x": 1}));
        std::sync::Arc::make_mut(&mut job.client).name = "acme".into();
        job.security = Some(json!({"secret": "s"}));
        let created = created_record(&job);
        assert_eq!(created.event_type, "job_created");
        assert_eq!(created.client.as_deref(), Some("acme"));
        assert_eq!(created.details, Some(json!({"source": "api"})));
        assert!(!created.context_snapshot.as_deref().unwrap().contains("secret"), "security is never stored");
        let rows = records_for(
            &job,
            &[
                EngineEvent::StateStarted { state: "start".into(), attempt: 0 },
                EngineEvent::StateFinished { state: "start".into(), next_state: Some("b".into()), duration_ms: 3 },
                EngineEvent::JobFinished { status: JobStatus::Finished },
                EngineEvent::StateFinished { state: "b".into(), next_state: None, duration_ms: 0 },
            ],
        );
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[3].event_type, "job_completed", "the end of the job is the last row");
        assert!(rows[0].timestamp_us < rows[1].timestamp_us);
        assert_eq!(rows[1].duration_ms, Some(3));
        assert_eq!(rows[1].next_state.as_deref(), Some("b"));
        assert!(Arc::ptr_eq(rows[0].context_snapshot.as_ref().unwrap(), rows[1].context_snapshot.as_ref().unwrap()));
    }
}
