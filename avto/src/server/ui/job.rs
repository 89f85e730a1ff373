//! A job's page: `GET /ui/api/jobs/{id}` (the job with large values truncated, its timeline,
//! parent and children, and why it waits), and its actions: cancel and approval.
//!
//! The graph (`/ui/api/jobs/{id}/graph.svg`) is served with the graph renderer.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};

use super::session::UiUser;
use crate::job::{Job, JobStatus, TaskRecord};
use crate::server::api::{check_job_id, ApiError, JsonObject, Path};
use crate::server::core::Core;
use crate::storage::WorkerInfo;

/// Values larger than this (serialized) are shown truncated.
pub(crate) const TRUNCATE_ABOVE: usize = 16 * 1024;
/// How much of a truncated value is shown.
pub(crate) const PREVIEW_BYTES: usize = 2 * 1024;
/// Timeline entries shown at most (the newest).
const TIMELINE_MAX: usize = 500;
/// Children looked up at most.
const CHILDREN_MAX: usize = 50;
/// Workers whose reasons are listed at most (those offering the skill first).
pub(crate) const WHY_WORKERS_MAX: usize = 100;

/// `v`, or `{"$truncated": true, "bytes": n, "preview": "<first 2 KiB>"}` when its JSON is
/// larger than [`TRUNCATE_ABOVE`].
pub(crate) fn truncated(v: &Value) -> Value {
    let text = v.to_string();
    if text.len() <= TRUNCATE_ABOVE {
        return v.clone();
    }
    let mut end = PREVIEW_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    json!({"$truncated": true, "bytes": text.len(), "preview": &text[..end]})
}

/// A job this session may see (404 for an unknown id and for another client's job alike).
pub(super) async fn visible_job(core: &Core, user: &UiUser, id: &str) -> Result<Job, ApiError> {
    check_job_id(id)?;
    match core.job(id).await.map_err(|e| ApiError::Unavailable(format!("storage error: {e}")))? {
        Some(j) if user.sees(&j.client.id) => Ok(j),
        _ => Err(ApiError::NotFound("Job not found".into())),
    }
}

fn task_view(core: &Core, t: &TaskRecord) -> Value {
    json!({
        "task_type": t.spec.task_type,
        "task_id": t.task_id,
        "worker_id": t.worker_id,
        "attempt": t.attempt + 1,
        "max_attempts": core.env().config.max_retries + 1,
        "dispatched_at_ms": t.dispatched_at_ms,
        "picked_up_at_ms": t.picked_up_at_ms,
        "deadline_ms": t.dispatch_deadline_ms,
    })
}

/// The job's own view: its row and everything the page shows of it.
fn job_view(core: &Core, job: &Job) -> Value {
    let mut v = super::job_row(job);
    let m = v.as_object_mut().expect("a row is an object");
    m.insert("initial_data".into(), truncated(&job.initial_data));
    m.insert("result".into(), job.result.as_ref().map_or(Value::Null, truncated));
    m.insert("state_history".into(), truncated(&Value::Object(job.state_history.clone())));
    m.insert("error".into(), json!(job.last_error));
    m.insert("retry_count".into(), json!(job.retry_count));
    m.insert("path".into(), json!(job.path));
    m.insert("progress_message".into(), json!(job.progress_message));
    m.insert("current_task".into(), job.current_task.as_deref().map_or(Value::Null, |t| task_view(core, t)));
    m.insert("branches".into(), Value::Array(job.branches.iter().map(|t| task_view(core, t)).collect()));
    m.insert(
        "approval".into(),
        job.approval.as_deref().map_or(Value::Null, |a| {
            json!({
                "message": a.message,
                "integration": a.integration,
                "decisions": a.transitions.iter().map(|(d, _)| d).collect::<Vec<_>>(),
                "since_ms": job.updated_at_ms,
            })
        }),
    );
    m.insert(
        "sub_job".into(),
        job.sub_job
            .as_deref()
            .map_or(Value::Null, |s| json!({"child_job_id": s.child_job_id, "blueprint": s.blueprint})),
    );
    v
}

/// The timeline from the history (every transition and task attempt), when it is enabled.
async fn history_timeline(core: &Core, job_id: &str) -> Option<(Vec<Value>, Vec<String>)> {
    let rows = match core.history()?.job_history(job_id).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(job_id, error = %e, "dashboard: could not read the job's history");
            return None;
        }
    };
    let mut children = Vec::new();
    let skip = rows.len().saturating_sub(TIMELINE_MAX);
    let entries = rows
        .iter()
        .skip(skip)
        .map(|r| {
            if let Some(child) = r.details.as_ref().and_then(|d| d["child_job_id"].as_str()) {
                if children.len() < CHILDREN_MAX && !children.iter().any(|c| c == child) {
                    children.push(child.to_owned());
                }
            }
            json!({
                "at_ms": r.timestamp_us / 1000,
                "kind": r.event_type,
                "state": r.state,
                "status": r.status,
                "previous_state": r.previous_state,
                "next_state": r.next_state,
                "worker_id": r.worker_id,
                "task_id": r.origin_task_id,
                "attempt": r.attempt_number,
                "duration_ms": r.duration_ms,
                "detail": r.details.as_ref().map(truncated),
            })
        })
        .collect();
    Some((entries, children))
}

/// The timeline from the job's own record (no history): the states it entered (without their
/// times), then its tasks in flight.
fn record_timeline(job: &Job) -> Vec<Value> {
    let mut out = vec![json!({"at_ms": job.created_at_ms, "kind": "job_created", "state": job.path.first()})];
    let skip = job.path.len().saturating_sub(TIMELINE_MAX);
    for (i, state) in job.path.iter().enumerate().skip(skip.max(1)) {
        out.push(json!({"at_ms": null, "kind": "state_entered", "state": state, "step": i}));
    }
    for t in job.tasks_in_flight() {
        out.push(json!({"at_ms": t.dispatched_at_ms, "kind": "task_dispatched", "state": job.current_state,
            "task_id": t.task_id, "worker_id": t.worker_id, "attempt": t.attempt + 1, "detail": {"task_type": t.spec.task_type}}));
        if let Some(at) = t.picked_up_at_ms {
            out.push(json!({"at_ms": at, "kind": "task_picked_up", "state": job.current_state,
                "task_id": t.task_id, "worker_id": t.worker_id, "attempt": t.attempt + 1}));
        }
    }
    if job.status.is_terminal() {
        out.push(json!({"at_ms": job.updated_at_ms, "kind": format!("job_{}", job.status), "state": job.current_state,
            "detail": job.error_message}));
    }
    out
}

/// `GET /ui/api/jobs/{id}`.
pub(super) async fn job(
    State(core): State<Arc<Core>>,
    user: UiUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = visible_job(&core, &user, &id).await?;
    let (timeline, mut child_ids) = match history_timeline(&core, &job.id).await {
        Some(t) => t,
        None => (record_timeline(&job), Vec::new()),
    };
    if let Some(s) = &job.sub_job {
        if !child_ids.contains(&s.child_job_id) {
            child_ids.push(s.child_job_id.clone());
        }
    }
    let mut children = Vec::new();
    for child in child_ids.iter().take(CHILDREN_MAX) {
        if let Ok(Some(c)) = core.job(child).await {
            if user.sees(&c.client.id) {
                children.push(super::job_row(&c));
            }
        }
    }
    let parent = match &job.parent_job_id {
        Some(p) => match core.job(p).await {
            Ok(Some(p)) if user.sees(&p.client.id) => super::job_row(&p),
            _ => Value::Null,
        },
        None => Value::Null,
    };
    let why = why(&core, &job).await;
    Ok(Json(
        json!({"job": job_view(&core, &job), "timeline": timeline, "children": children, "parent": parent, "why": why}),
    ))
}

/// Why a job that waits is waiting (null when it does not).
async fn why(core: &Core, job: &Job) -> Value {
    let now = crate::job::now_ms();
    match job.status {
        JobStatus::WaitingForWorker => match job.current_task.as_deref() {
            Some(t) => why_worker(core, t).await,
            None => Value::Null,
        },
        JobStatus::WaitingForHuman => {
            let a = job.approval.as_deref();
            json!({
                "kind": "approval",
                "message": a.and_then(|a| a.message.clone()),
                "integration": a.and_then(|a| a.integration.clone()),
                "waiting_ms": now.saturating_sub(job.updated_at_ms),
                "decisions": a.map(|a| a.transitions.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>()).unwrap_or_default(),
            })
        }
        JobStatus::WaitingForParallelTasks => json!({
            "kind": "parallel",
            "pending": job.branches.iter().map(|t| json!({"task_id": t.task_id, "task_type": t.spec.task_type, "worker_id": t.worker_id})).collect::<Vec<_>>(),
            "done": job.aggregation_results.iter().count(),
        }),
        JobStatus::WaitingForSubJob => json!({
            "kind": "sub_job",
            "child_job_id": job.sub_job.as_deref().map(|s| s.child_job_id.clone()),
        }),
        // The backoff's end is not recorded on the job.
        JobStatus::AwaitingRetry => json!({"kind": "retry", "next_retry_at_ms": null, "retry_count": job.retry_count}),
        _ => Value::Null,
    }
}

/// A task waiting for a worker: what it needs, and why each live worker is not taking it.
async fn why_worker(core: &Core, t: &TaskRecord) -> Value {
    let spec = &t.spec;
    let skill = spec.task_type.as_str();
    let mut live = core.live_workers().await;
    // Those offering the skill first, then by id.
    live.sort_by(|a, b| {
        (!a.info.has_skill(skill), &a.info.worker_id).cmp(&(!b.info.has_skill(skill), &b.info.worker_id))
    });
    let with_skill = live.iter().filter(|w| w.info.has_skill(skill)).count();
    let workers: Vec<Value> = live
        .iter()
        .take(WHY_WORKERS_MAX)
        .map(|w| {
            let reason = match (&t.worker_id, t.picked_up_at_ms) {
                (Some(id), None) if *id == w.info.worker_id => "assigned: the task is on its queue".to_owned(),
                (Some(id), Some(_)) if *id == w.info.worker_id => "running the task".to_owned(),
                _ => worker_reason(core, &w.info, spec),
            };
            json!({"worker_id": w.info.worker_id, "status": w.info.status, "reason": reason,
                "queued": w.queued, "running": w.running})
        })
        .collect();
    json!({
        "kind": "worker",
        "skill": skill,
        "task_id": t.task_id,
        "requirements": spec.resource_requirements,
        "skill_version": spec.skill_version,
        "skill_type": spec.skill_type,
        "max_cost": spec.max_cost,
        "deadline_ms": t.dispatch_deadline_ms,
        "assigned_worker": t.worker_id,
        "picked_up": t.picked_up_at_ms.is_some(),
        "live_workers": live.len(),
        "live_workers_with_skill": with_skill,
        "workers": workers,
        "workers_listed": live.len().min(WHY_WORKERS_MAX),
    })
}

/// Why `w` does not take a task of `spec` now, as the dispatcher decides (`eligible` when it would).
pub(crate) fn worker_reason(core: &Core, w: &WorkerInfo, spec: &crate::actions::TaskSpec) -> String {
    let skill = spec.task_type.as_str();
    if !w.has_skill(skill) {
        return format!("skill `{skill}` missing");
    }
    if let Some(reason) = w.operator_drain() {
        return format!("draining (by the operator: {reason:.200})");
    }
    let min = core.config().reputation_min_threshold;
    if w.reputation < min {
        return format!("low reputation {:.2} < {min}", w.reputation);
    }
    if let Some(max) = spec.max_cost {
        let cost = w.cost(skill);
        if cost > max {
            return match cost.is_finite() {
                true => format!("cost {cost} > max_cost {max}"),
                false => format!("no cost for `{skill}` declared, max_cost {max}"),
            };
        }
    }
    if let Err(why) = core.dispatcher().eligible(w, spec) {
        return format!("requirement unmet: {why:.300}");
    }
    if !w.takes_new_tasks() {
        return format!("{:.32}", w.status);
    }
    "eligible: idle, takes it when the task is placed".to_owned()
}

/// `POST /ui/api/jobs/{id}/cancel`: `{"status": "cancelled"}` (409 when the job has ended).
pub(super) async fn cancel(
    State(core): State<Arc<Core>>,
    user: UiUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    visible_job(&core, &user, &id).await?;
    core.cancel_job(&id).await?;
    Ok(Json(json!({"status": "cancelled"})))
}

/// `POST /ui/api/jobs/{id}/approval {"decision": ..}`: applied once (a second answer is a 409).
pub(super) async fn approval(
    State(core): State<Arc<Core>>,
    user: UiUser,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let decision = body
        .get("decision")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty() && d.len() <= 256)
        .ok_or_else(|| ApiError::bad("`decision` (a string of 1-256 bytes) is required"))?;
    visible_job(&core, &user, &id).await?;
    core.approve(&id, decision).await?;
    let mut out = Map::new();
    out.insert("status".into(), json!("applied"));
    out.insert("decision".into(), json!(decision));
    Ok(Json(Value::Object(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_values_are_truncated_with_a_preview() {
        let small = json!({"a": "x".repeat(100)});
        assert_eq!(truncated(&small), small);
        // Multi-byte characters: the preview ends on a character boundary.
        let big = json!({"a": "é".repeat(TRUNCATE_ABOVE)});
        let t = truncated(&big);
        assert_eq!(t["$truncated"], true);
        assert_eq!(t["bytes"].as_u64(), Some(big.to_string().len() as u64));
        let preview = t["preview"].as_str().unwrap();
        assert!(preview.len() <= PREVIEW_BYTES && preview.len() >= PREVIEW_BYTES - 1, "{}", preview.len());
        assert!(big.to_string().starts_with(preview));
    }
}
