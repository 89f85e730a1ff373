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

/// How many times a task or a handler runs at most (the first run and `JOB_MAX_RETRIES` retries).
fn max_attempts(core: &Core) -> u32 {
    core.env().config.max_retries.saturating_add(1)
}

fn task_view(core: &Core, t: &TaskRecord) -> Value {
    json!({
        "task_type": t.spec.task_type,
        "task_id": t.task_id,
        "worker_id": t.worker_id,
        "attempt": t.attempt + 1,
        "max_attempts": max_attempts(core),
        "dispatched_at_ms": t.dispatched_at_ms,
        "picked_up_at_ms": t.picked_up_at_ms,
        "deadline_ms": t.dispatch_deadline_ms,
    })
}

/// The class (`transient`, `permanent`, `invalid_input`) of a worker's error code.
fn error_class(code: &str) -> &'static str {
    crate::context::ErrorClass::of(code).as_str()
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
    m.insert("next_retry_at_ms".into(), json!(job.next_retry_at_ms));
    m.insert("path".into(), json!(job.path));
    m.insert("progress_message".into(), json!(job.progress_message));
    m.insert("current_task".into(), job.current_task.as_deref().map_or(Value::Null, |t| task_view(core, t)));
    m.insert("branches".into(), Value::Array(job.branches.iter().map(|t| task_view(core, t)).collect()));
    m.insert("approval".into(), job.approval.as_ref().map_or(Value::Null, |_| super::approval_view(job)));
    m.insert(
        "sub_job".into(),
        job.sub_job
            .as_deref()
            .map_or(Value::Null, |s| json!({"child_job_id": s.child_job_id, "blueprint": s.blueprint})),
    );
    v
}

/// The timeline from the history (every transition and task attempt), when it is enabled.
/// Task rows are completed from the task's other rows: a `task_finished` row gets the attempt
/// and task type of its `task_dispatched` row.
async fn history_timeline(core: &Core, job_id: &str) -> Option<(Vec<Value>, Vec<String>)> {
    let rows = match core.history()?.job_history(job_id).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(job_id, error = %e, "dashboard: could not read the job's history");
            return None;
        }
    };
    let max = max_attempts(core);
    let mut children = Vec::new();
    let skip = rows.len().saturating_sub(TIMELINE_MAX);
    // task id -> (attempt, task type, the state that dispatched it), from the rows shown (at
    // most TIMELINE_MAX): a row's own `state` is the job's state after the event
    type Task<'a> = (Option<i64>, Option<&'a str>, Option<&'a str>);
    let mut tasks: std::collections::HashMap<&str, Task<'_>> = Default::default();
    let entries = rows
        .iter()
        .skip(skip)
        .map(|r| {
            let d = r.details.as_ref();
            let field = |k: &str| d.map_or(&Value::Null, |d| &d[k]);
            if let Some(child) = field("child_job_id").as_str() {
                if children.len() < CHILDREN_MAX && !children.iter().any(|c| c == child) {
                    children.push(child.to_owned());
                }
            }
            let at_ms = r.timestamp_us.max(0) as u64 / 1000;
            let mut attempt = r.attempt_number;
            let mut task_type = field("task_type").as_str();
            let mut state = r.state.as_deref();
            if let Some(task) = r.origin_task_id.as_deref() {
                match r.event_type.as_str() {
                    "task_dispatched" => {
                        tasks.insert(task, (attempt, task_type, state));
                    }
                    "task_finished" => {
                        if let Some((a, t, s)) = tasks.get(task) {
                            attempt = attempt.or(*a);
                            task_type = task_type.or(*t);
                            state = s.or(state);
                        }
                    }
                    // the retry is a new task (no `task_dispatched` row of its own)
                    "task_retry" => {
                        if let Some((_, t, s)) = tasks.get(task) {
                            task_type = task_type.or(*t);
                            state = s.or(state);
                        }
                        if let Some(next) = field("next_task_id").as_str() {
                            tasks.insert(next, (attempt, task_type, state));
                        }
                    }
                    _ => {}
                }
            }
            let error_code = field("error_code").as_str();
            let error_class = field("error_class").as_str().or(error_code.map(error_class));
            let next_retry_at_ms = field("next_retry_at_ms")
                .as_u64()
                .or_else(|| field("delay_ms").as_u64().map(|delay| at_ms.saturating_add(delay)));
            json!({
                "at_ms": at_ms,
                "kind": r.event_type,
                "state": state,
                "status": r.status,
                "previous_state": r.previous_state.as_deref().filter(|p| Some(*p) != state),
                "next_state": r.next_state,
                "task_type": task_type,
                "task_id": r.origin_task_id,
                "worker_id": r.worker_id,
                "attempt": attempt,
                "max_attempts": attempt.map(|_| max),
                "result": field("result_status"),
                "error_code": error_code,
                "error_class": error_class,
                "error": field("error").as_str().or(field("error_message").as_str()),
                "next_retry_at_ms": next_retry_at_ms,
                "duration_ms": r.duration_ms,
                "detail": d.map(truncated),
            })
        })
        .collect();
    Some((entries, children))
}

/// States at most named in the row standing for the states whose entry times are not kept.
const UNTIMED_NAMED: usize = 20;

/// The timeline from the job's own record (no history), every row with its time: the states it
/// entered (those older than the [`PATH_TIMES_KEPT`](crate::job::PATH_TIMES_KEPT) kept entry
/// times as one row at the job's creation), the approval or retry it waits for, its tasks in
/// flight (with the failure that made this attempt a retry) and its end.
fn record_timeline(core: &Core, job: &Job) -> Vec<Value> {
    let max = max_attempts(core);
    let mut out = vec![json!({"at_ms": job.created_at_ms, "kind": "job_created", "state": job.path.first()})];
    let untimed: Vec<&str> =
        (1..job.path.len()).take_while(|i| job.entered_at_ms(*i).is_none()).map(|i| job.path[i].as_str()).collect();
    if !untimed.is_empty() {
        let mut names = untimed.iter().take(UNTIMED_NAMED).copied().collect::<Vec<_>>().join(" → ");
        if untimed.len() > UNTIMED_NAMED {
            names.push_str(" → …");
        }
        out.push(json!({"at_ms": job.created_at_ms, "kind": "states_entered", "count": untimed.len(),
            "detail": format!("{} states entered after this time (their times are not kept): {names}", untimed.len())}));
    }
    let first_timed = 1 + untimed.len();
    let skip = job.path.len().saturating_sub(TIMELINE_MAX).max(first_timed);
    for (i, state) in job.path.iter().enumerate().skip(skip) {
        let at = job.entered_at_ms(i).unwrap_or(job.created_at_ms);
        out.push(json!({"at_ms": at, "kind": "state_entered", "state": state, "step": i}));
    }
    if let (JobStatus::WaitingForHuman, Some(a)) = (job.status, job.approval.as_deref()) {
        out.push(json!({"at_ms": a.since_ms.unwrap_or(job.updated_at_ms), "kind": "approval_requested",
            "state": job.current_state, "detail": a.message}));
    }
    if job.status == JobStatus::AwaitingRetry {
        out.push(json!({"at_ms": job.updated_at_ms, "kind": "state_failed", "state": job.current_state,
            "attempt": job.retry_count, "max_attempts": max, "error": job.error_message,
            "next_retry_at_ms": job.next_retry_at_ms}));
    }
    let now = crate::job::now_ms();
    for t in job.tasks_in_flight() {
        // a retried task: the previous attempt's error (the single task's is `last_error`)
        let failed = (t.attempt > 0 && job.current_task.as_deref().is_some_and(|c| c.task_id == t.task_id))
            .then_some(job.last_error.as_deref())
            .flatten();
        let scheduled = t.dispatched_at_ms > now;
        out.push(json!({"at_ms": t.dispatched_at_ms, "kind": if scheduled { "task_retry_scheduled" } else { "task_dispatched" },
            "state": job.current_state, "task_type": t.spec.task_type, "task_id": t.task_id, "worker_id": t.worker_id,
            "attempt": t.attempt + 1, "max_attempts": max,
            "error_code": failed.map(|e| e.code.as_str()), "error_class": failed.map(|e| error_class(&e.code)),
            "error": failed.map(|e| e.message.as_str()),
            "next_retry_at_ms": if t.attempt > 0 { Some(t.dispatched_at_ms) } else { None }}));
        if let Some(at) = t.picked_up_at_ms {
            out.push(
                json!({"at_ms": at, "kind": "task_picked_up", "state": job.current_state, "task_type": t.spec.task_type,
                "task_id": t.task_id, "worker_id": t.worker_id, "attempt": t.attempt + 1, "max_attempts": max}),
            );
        }
    }
    if job.status.is_terminal() {
        let e = job.last_error.as_deref();
        out.push(json!({"at_ms": job.updated_at_ms, "kind": format!("job_{}", job.status), "state": job.current_state,
            "error": job.error_message, "error_code": e.map(|e| e.code.as_str()), "error_class": e.map(|e| error_class(&e.code))}));
    }
    out.sort_by_key(|e| e["at_ms"].as_u64());
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
        None => (record_timeline(&core, &job), Vec::new()),
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
            Some(t) => {
                let mut v = why_worker(core, t).await;
                if t.attempt > 0 {
                    // a retried task: which attempt, the error of the last, and when this one goes out
                    let e = job.last_error.as_deref();
                    v["attempt"] = json!(t.attempt + 1);
                    v["max_attempts"] = json!(max_attempts(core));
                    v["last_error_code"] = json!(e.map(|e| e.code.as_str()));
                    v["last_error_class"] = json!(e.map(|e| error_class(&e.code)));
                    v["next_retry_at_ms"] = json!((t.dispatched_at_ms > now).then_some(t.dispatched_at_ms));
                }
                v
            }
            None => Value::Null,
        },
        JobStatus::WaitingForHuman => {
            let mut v = super::approval_view(job);
            let since = v["since_ms"].as_u64().unwrap_or(job.updated_at_ms);
            v["kind"] = json!("approval");
            v["waiting_ms"] = json!(now.saturating_sub(since));
            v
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
        JobStatus::AwaitingRetry => json!({
            "kind": "retry",
            "next_retry_at_ms": job.next_retry_at_ms,
            "retry_count": job.retry_count,
            "attempt": job.retry_count.saturating_add(1),
            "max_attempts": max_attempts(core),
            "error": job.error_message,
        }),
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
