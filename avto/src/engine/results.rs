//! Applying what comes from outside: worker results and events, approvals, cancellation,
//! child outcomes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::executor::{enter, retry_task, terminal, EngineEnv};
use super::{Effect, EngineEvent, Step};
use crate::context::{BranchResult, ErrorClass, TaskError};
use crate::job::{now_ms, Job, JobStatus, TaskRecord};
use crate::protocol::wire::{ignored_reason, result_transition as transition, task_status, FileMetadata};
use crate::protocol::{EVENT_TYPE_PROGRESS, TRANSIENT_ERROR};

/// What the engine needs of a worker's result for one task: its narrow input, built by the worker
/// API from the RXON message [`crate::protocol::wire::TaskResult`] (with the authenticated sender
/// as `worker_id`), and directly by the watcher (timeouts) and [`crate::testing`].
///
/// The engine does not take the wire type itself: that one carries what only the transport needs
/// (the job id that finds the job, the signature, costs, origin) and the serde leniency of
/// reading what a worker sends, and its `worker_id` is what the body claims, not who sent it.
///
/// A result that moves the job on (its status has a transition, or its branch is collected for
/// the aggregator) is kept with the job as in Avtomatika: `data` merged into the state
/// history, `data_metadata` merged into the job's, `metadata` merged into the job's, `security`
/// replacing the job's, `timestamp` recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task_id: String,
    /// The worker that holds the task's lease (checked against the task's holder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// [`task_status::SUCCESS`] (the default), [`task_status::FAILURE`],
    /// [`task_status::CANCELLED`] or a custom status.
    #[serde(default = "success")]
    pub status: String,
    /// Merged into the job's state history when the result moves it on (an object; anything
    /// else merges nothing).
    #[serde(default)]
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// S3 file metadata of keys of `data` (what the worker uploaded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data_metadata: BTreeMap<String, FileMetadata>,
    /// The result's security context, without the signature of the message it came in (which
    /// means nothing anywhere else); `None` when nothing else is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// When the worker sent the result (epoch seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

fn success() -> String {
    task_status::SUCCESS.into()
}

impl TaskResult {
    /// A result with `status` and nothing else.
    pub fn new(task_id: impl Into<String>, status: impl Into<String>) -> Self {
        TaskResult {
            task_id: task_id.into(),
            worker_id: None,
            status: status.into(),
            data: Value::Null,
            error: None,
            data_metadata: BTreeMap::new(),
            security: None,
            metadata: None,
            timestamp: None,
        }
    }
    pub fn success(task_id: impl Into<String>, data: Value) -> Self {
        TaskResult { data, ..Self::new(task_id, success()) }
    }
    pub fn failure(task_id: impl Into<String>, code: &str, message: &str) -> Self {
        TaskResult { error: Some(TaskError::new(code, message)), ..Self::new(task_id, task_status::FAILURE) }
    }
}

/// Why a result was not applied (the RXON `ignored` reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IgnoreReason {
    JobNotFound,
    WorkerMismatch,
    StaleTask,
    /// The task timed out (dispatch, execution or result deadline) before its result came.
    DeadlineExceeded,
    JobCancelled,
    JobAlreadyTerminated,
}

impl IgnoreReason {
    /// The RXON `reason` word ([`ignored_reason`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobNotFound => ignored_reason::JOB_NOT_FOUND,
            Self::WorkerMismatch => ignored_reason::WORKER_MISMATCH,
            Self::StaleTask => ignored_reason::STALE_TASK,
            Self::DeadlineExceeded => ignored_reason::DEADLINE_EXCEEDED,
            Self::JobCancelled => ignored_reason::JOB_CANCELLED,
            Self::JobAlreadyTerminated => ignored_reason::JOB_ALREADY_TERMINATED,
        }
    }
}

/// What happened to a result.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ResultDisposition {
    /// Applied. The string is the RXON `transition` answer ([`transition`]: `success_transition`,
    /// `failure_handled`, ...).
    /// If the job is now `running`, the caller must [`super::advance`] it.
    Accepted(&'static str),
    Ignored {
        reason: IgnoreReason,
        message: String,
    },
}

fn ignored(reason: IgnoreReason, message: impl Into<String>) -> ResultDisposition {
    ResultDisposition::Ignored { reason, message: message.into() }
}

fn terminal_reason(job: &Job) -> ResultDisposition {
    if job.status == JobStatus::Cancelled {
        ignored(IgnoreReason::JobCancelled, format!("job {} was cancelled", job.id))
    } else {
        ignored(IgnoreReason::JobAlreadyTerminated, format!("job {} is already {}", job.id, job.status))
    }
}

/// Applies a worker's result to `job`. The step asks for an advance when the result was
/// accepted (the job may have entered a new state, or be retrying).
///
/// Lease fencing: a result is applied only for a task in flight, and only from the worker that
/// holds its lease (when the result names a worker and the task has been assigned).
pub fn apply_task_result(env: &EngineEnv, job: &mut Job, result: &TaskResult) -> (ResultDisposition, Step) {
    let mut out = Step::default();
    // Before the job's own state: a task that timed out was retried (a stale id) or failed the
    // job (terminal), and its late result is told the reason that concerns it.
    if job.timed_out_tasks.contains(&result.task_id) {
        let msg = format!("task {} of job {} timed out before its result came", result.task_id, job.id);
        return (ignored(IgnoreReason::DeadlineExceeded, msg), out);
    }
    if job.status.is_terminal() {
        return (terminal_reason(job), out);
    }
    let Some(record) = job.task_in_flight(&result.task_id).cloned() else {
        return (
            ignored(IgnoreReason::StaleTask, format!("task {} is not in flight for job {}", result.task_id, job.id)),
            out,
        );
    };
    if let (Some(holder), Some(sender)) = (&record.worker_id, &result.worker_id) {
        if holder != sender {
            let msg = format!("task {} is leased to worker {holder}, not {sender}", record.task_id);
            return (ignored(IgnoreReason::WorkerMismatch, msg), out);
        }
    }
    // A result without a sender (the watcher's execution timeout) is the failure of the worker
    // that had picked the task up, so the hourly reputation recalculation counts it.
    let worker_id = result.worker_id.clone().or_else(|| record.picked_up_at_ms.and(record.worker_id.clone()));
    let error_code = (result.status == task_status::FAILURE).then(|| error_of(result).code);
    out.event(EngineEvent::TaskFinished {
        task_id: record.task_id.clone(),
        status: result.status.clone(),
        worker_id,
        error_code,
    });
    let branch = job.status == JobStatus::WaitingForParallelTasks;
    let disposition = if branch {
        branch_result(env, job, &record, result, &mut out)
    } else {
        single_result(env, job, &record, result, &mut out)
    };
    job.updated_at_ms = now_ms();
    (disposition, out.then_advance())
}

fn merge_data(job: &mut Job, data: &Value) {
    if let Value::Object(map) = data {
        for (k, v) in map {
            job.state_history.insert(k.clone(), v.clone());
        }
    }
}

/// What a result that moves the job on leaves on it besides its data (spec 3.7 step 13):
/// `data_metadata` and `metadata` merged, `security` replaced, `timestamp` recorded.
fn keep_envelope(job: &mut Job, result: &TaskResult) {
    for (k, v) in &result.data_metadata {
        job.data_metadata.insert(k.clone(), v.clone());
    }
    if let Some(metadata) = result.metadata.as_ref().filter(|m| !m.is_empty()) {
        match job.metadata.as_mut() {
            Some(Value::Object(kept)) => kept.extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone()))),
            _ => job.metadata = Some(Value::Object(metadata.clone())),
        }
    }
    if let Some(security) = &result.security {
        job.security = Some(security.clone());
    }
    if result.timestamp.is_some() {
        job.timestamp = result.timestamp;
    }
}

/// A result moving the job on: its data and its envelope are kept.
fn keep_result(job: &mut Job, result: &TaskResult) {
    merge_data(job, &result.data);
    keep_envelope(job, result);
}

fn error_of(result: &TaskResult) -> TaskError {
    result
        .error
        .clone()
        .unwrap_or_else(|| TaskError::new(TRANSIENT_ERROR, "the worker reported a failure without an error object"))
}

fn single_result(
    env: &EngineEnv,
    job: &mut Job,
    record: &TaskRecord,
    result: &TaskResult,
    out: &mut Step,
) -> ResultDisposition {
    match result.status.as_str() {
        task_status::FAILURE => {
            let error = error_of(result);
            if error.class() == ErrorClass::Transient && record.attempt < env.config.max_retries {
                let next = retry_task(env, record, false, out);
                job.current_task = Some(Box::new(next));
                job.status = JobStatus::WaitingForWorker;
                job.last_error = Some(Box::new(error));
                return ResultDisposition::Accepted(transition::FAILURE_HANDLED);
            }
            give_up(job, &record.spec.transitions, error, record.attempt, out);
            ResultDisposition::Accepted(transition::FAILURE_HANDLED)
        }
        status => {
            if let Some(target) = record.spec.target_for(status) {
                keep_result(job, result);
                let target = target.to_owned();
                enter(job, &target);
                return ResultDisposition::Accepted(match status {
                    task_status::SUCCESS => transition::SUCCESS_TRANSITION,
                    task_status::CANCELLED => transition::CANCELLED_HANDLED,
                    _ => transition::CUSTOM_TRANSITION,
                });
            }
            if status == task_status::CANCELLED {
                terminal(job, JobStatus::Cancelled, Some("the worker cancelled the task".into()), out);
                return ResultDisposition::Accepted(transition::CANCELLED_HANDLED);
            }
            merge_data(job, &result.data);
            let msg = format!("worker returned unhandled status `{status}` (no transition for it)");
            terminal(job, JobStatus::Failed, Some(msg), out);
            ResultDisposition::Accepted(transition::UNHANDLED_STATUS_FAILURE)
        }
    }
}

/// No more retries: follow `failure` if declared, else quarantine (permanent / exhausted) or fail (invalid input).
fn give_up(job: &mut Job, transitions: &[(String, String)], error: TaskError, attempts: u32, out: &mut Step) {
    let class = error.class();
    let msg = match class {
        ErrorClass::Transient => format!("{}: {} (after {} retries)", error.code, error.message, attempts),
        _ => format!("{}: {}", error.code, error.message),
    };
    job.last_error = Some(Box::new(error));
    if let Some((_, target)) = transitions.iter().find(|(s, _)| s == task_status::FAILURE) {
        let target = target.clone();
        job.error_message = Some(msg);
        let in_flight: Vec<TaskRecord> = job.branches.clone();
        if !in_flight.is_empty() {
            out.effect(Effect::CancelTasks(in_flight));
        }
        enter(job, &target);
        return;
    }
    let status = if class == ErrorClass::InvalidInput { JobStatus::Failed } else { JobStatus::Quarantined };
    terminal(job, status, Some(msg), out);
}

fn branch_result(
    env: &EngineEnv,
    job: &mut Job,
    record: &TaskRecord,
    result: &TaskResult,
    out: &mut Step,
) -> ResultDisposition {
    let aggregator = job.aggregation_target.clone().unwrap_or_default();
    let status = result.status.as_str();
    if status == task_status::FAILURE {
        let error = error_of(result);
        if error.class() == ErrorClass::Transient && record.attempt < env.config.max_retries {
            let next = retry_task(env, record, true, out);
            if let Some(slot) = job.branch_order.iter_mut().find(|id| **id == record.task_id) {
                slot.clone_from(&next.task_id);
            }
            if let Some(slot) = job.branches.iter_mut().find(|b| b.task_id == record.task_id) {
                *slot = next;
            }
            return ResultDisposition::Accepted(transition::FAILURE_HANDLED);
        }
        // The failure rule: one failed branch fails the fan-out; the aggregator never runs.
        job.branches.retain(|b| b.task_id != record.task_id);
        give_up(job, &record.spec.transitions, error, record.attempt, out);
        return ResultDisposition::Accepted(transition::FAILURE_HANDLED);
    }
    match record.spec.target_for(status) {
        Some(target) if target == aggregator => {
            keep_envelope(job, result);
            job.aggregation_results.0.push(BranchResult {
                task_id: record.task_id.clone(),
                task_type: record.spec.task_type.clone(),
                status: status.to_owned(),
                data: result.data.clone(),
                error: result.error.clone(),
                worker_id: result.worker_id.clone(),
            });
            job.branches.retain(|b| b.task_id != record.task_id);
            if job.branches.is_empty() {
                // Results arrive in any order; the aggregator sees them in dispatch order.
                let mut results = std::mem::take(&mut job.aggregation_results);
                let position = |r: &BranchResult| job.branch_order.iter().position(|id| *id == r.task_id);
                results.0.sort_by_key(|r| position(r).unwrap_or(usize::MAX));
                enter(job, &aggregator);
                job.aggregation_results = results;
                job.aggregation_target = None;
                return ResultDisposition::Accepted(transition::SUCCESS_TRANSITION);
            }
            ResultDisposition::Accepted(transition::PARALLEL_BRANCH_ACCEPTED)
        }
        Some(target) => {
            // A branch leads elsewhere (custom status or `cancelled`): the fan-out ends there.
            let target = target.to_owned();
            job.branches.retain(|b| b.task_id != record.task_id);
            let rest: Vec<TaskRecord> = job.branches.clone();
            if !rest.is_empty() {
                out.effect(Effect::CancelTasks(rest));
            }
            keep_result(job, result);
            enter(job, &target);
            job.aggregation_target = None;
            ResultDisposition::Accepted(transition::CUSTOM_TRANSITION)
        }
        None if status == task_status::CANCELLED => {
            job.branches.retain(|b| b.task_id != record.task_id);
            terminal(job, JobStatus::Cancelled, Some("a worker cancelled a parallel task".into()), out);
            ResultDisposition::Accepted(transition::CANCELLED_HANDLED)
        }
        None => {
            job.branches.retain(|b| b.task_id != record.task_id);
            let msg = format!("worker returned unhandled status `{status}` for parallel task {}", record.task_id);
            terminal(job, JobStatus::Failed, Some(msg), out);
            ResultDisposition::Accepted(transition::UNHANDLED_STATUS_FAILURE)
        }
    }
}

/// A task failed without a worker result (timeouts, dead worker with no other to take it, no
/// eligible worker within the dispatch timeout). Applies the same policy as a failure result
/// with `error`.
pub fn fail_task(env: &EngineEnv, job: &mut Job, task_id: &str, error: TaskError) -> Step {
    let result = TaskResult { error: Some(error), ..TaskResult::new(task_id, task_status::FAILURE) };
    let (_, out) = apply_task_result(env, job, &result);
    out
}

/// A task in flight passed a deadline (the watcher: not picked up in time, or no result in
/// time): [`fail_task`] with `error`, and the task is remembered as timed out, so its worker's
/// late result is ignored as `deadline_exceeded`. Nothing happens for a task not in flight.
pub fn time_out_task(env: &EngineEnv, job: &mut Job, task_id: &str, error: TaskError) -> Step {
    if !job.tasks_in_flight().any(|t| t.task_id == task_id) {
        return Step::default();
    }
    let out = fail_task(env, job, task_id, error);
    job.record_timeout(task_id);
    out
}

/// Applies a worker event (progress or custom) to `job`. The step asks for an advance when an
/// `event_transitions` entry moved the job.
///
/// Progress is recorded even when it arrives after the result (events over the WebSocket and
/// results over HTTP race), so the job's history is complete.
/// A `progress` event: sets the job's `progress` and `progress_message` and appends an entry to
/// `state_history.progress_updates`, of which the last `max` are kept.
pub(crate) fn record_progress(job: &mut Job, task_id: Option<&str>, payload: &Value, max: usize) {
    let progress = payload.get("progress").and_then(Value::as_f64);
    let message = payload.get("message").and_then(Value::as_str).map(str::to_owned);
    job.progress = progress;
    job.progress_message = message.clone();
    let entry = json!({"progress": progress, "message": message, "task_id": task_id, "timestamp_ms": now_ms()});
    match job.state_history.get_mut("progress_updates") {
        Some(Value::Array(list)) => {
            list.push(entry);
            if list.len() > max {
                list.drain(..list.len() - max);
            }
        }
        _ => {
            job.state_history.insert("progress_updates".into(), Value::Array(vec![entry]));
        }
    }
    job.updated_at_ms = now_ms();
}

pub fn apply_event(
    job: &mut Job,
    task_id: Option<&str>,
    event_type: &str,
    payload: &Value,
    progress_max: usize,
) -> Step {
    let mut out = Step::default();
    if event_type == EVENT_TYPE_PROGRESS {
        record_progress(job, task_id, payload, progress_max);
        return out;
    }
    if job.status.is_terminal() || job.status != JobStatus::WaitingForWorker {
        return out;
    }
    let Some(task) = job.current_task.clone() else {
        return out;
    };
    if task_id.is_some_and(|id| id != task.task_id) {
        return out;
    }
    let Some(target) = task.spec.event_target_for(event_type) else {
        return out;
    };
    let target = target.to_owned();
    if let Value::Object(_) = payload {
        job.state_history.insert(format!("event_{event_type}"), payload.clone());
    }
    out.effect(Effect::CancelTasks(vec![*task]));
    enter(job, &target);
    out.then_advance()
}

/// Why a job could not be cancelled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CancelError {
    #[error("job is already {0}")]
    AlreadyTerminal(JobStatus),
}

/// Cancels `job`: terminal `cancelled`, tasks in flight and a running child are cancelled too.
pub fn cancel(job: &mut Job) -> Result<Step, CancelError> {
    if job.status.is_terminal() {
        return Err(CancelError::AlreadyTerminal(job.status));
    }
    let mut out = Step::default();
    terminal(job, JobStatus::Cancelled, Some("cancelled by the client".into()), &mut out);
    Ok(out)
}

/// Why an approval decision was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    #[error("job is {0}, not waiting for a human decision")]
    NotWaiting(JobStatus),
    #[error("invalid decision `{decision}` for this job (expected one of: {expected})")]
    InvalidDecision { decision: String, expected: String },
}

/// Applies a human decision. On success the job is `running` and the step asks for an advance.
pub fn apply_approval(job: &mut Job, decision: &str) -> Result<Step, ApprovalError> {
    let approval = match (&job.status, &job.approval) {
        (JobStatus::WaitingForHuman, Some(a)) => a,
        _ => return Err(ApprovalError::NotWaiting(job.status)),
    };
    let Some((_, target)) = approval.transitions.iter().find(|(d, _)| d == decision) else {
        let expected = approval.transitions.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>().join(", ");
        return Err(ApprovalError::InvalidDecision { decision: decision.to_owned(), expected });
    };
    let target = target.clone();
    job.state_history.insert("approval_decision".into(), Value::String(decision.to_owned()));
    enter(job, &target);
    Ok(Step::default().then_advance())
}

/// Resumes `parent` after its child ended; the step asks for an advance. `None` (and nothing
/// changed) unless the parent is waiting for exactly this child, so a parent resumes exactly once.
pub fn resume_parent(parent: &mut Job, child: &Job) -> Option<Step> {
    if parent.status != JobStatus::WaitingForSubJob || !child.status.is_terminal() {
        return None;
    }
    let sub = parent.sub_job.clone().filter(|s| s.child_job_id == child.id)?;
    let mut out = Step::default();
    // The child's outcome picks the parent's transition as a result status picks a task's.
    let outcome = match child.status {
        JobStatus::Finished => task_status::SUCCESS,
        JobStatus::Cancelled => task_status::CANCELLED,
        _ => task_status::FAILURE,
    };
    parent.state_history.insert(
        format!("sub_job_{}_result", child.id),
        json!({
            "outcome": outcome,
            "status": child.status,
            "final_state": child.current_state,
            "error_message": child.error_message,
            "result": child.result,
            "blueprint": child.blueprint,
        }),
    );
    parent.sub_job = None;
    let target = sub
        .transitions
        .iter()
        .find(|(o, _)| o == outcome)
        .or_else(|| {
            if outcome == task_status::CANCELLED {
                sub.transitions.iter().find(|(o, _)| o == task_status::FAILURE)
            } else {
                None
            }
        })
        .map(|(_, t)| t.clone());
    match target {
        Some(t) => enter(parent, &t),
        None => {
            let msg = format!(
                "child job {} ({}) ended with outcome `{outcome}` and run_blueprint has no transition for it",
                child.id, child.blueprint
            );
            terminal(parent, JobStatus::Failed, Some(msg), &mut out);
        }
    }
    Some(out.then_advance())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::TaskSpec;
    use crate::protocol::TIMEOUT_ERROR;

    fn finished_by(picked_up: bool) -> Option<String> {
        let data = std::sync::Arc::new(crate::storage::memory::MemoryDataStores::new());
        let env = EngineEnv::new(Default::default(), std::iter::empty(), data, None).unwrap();
        let mut job = Job::new("j1", "bp", "start", json!({}));
        job.status = JobStatus::WaitingForWorker;
        let mut task = super::super::executor::new_task(TaskSpec::new("echo"), false, 0, now_ms());
        task.worker_id = Some("w1".into());
        task.picked_up_at_ms = picked_up.then(now_ms);
        let task_id = task.task_id.clone();
        job.current_task = Some(Box::new(task));
        let step = fail_task(&env, &mut job, &task_id, TaskError::new(TIMEOUT_ERROR, "late"));
        step.events.iter().find_map(|e| match e {
            EngineEvent::TaskFinished { worker_id, status, .. } => {
                assert_eq!(status, task_status::FAILURE);
                Some(worker_id.clone())
            }
            _ => None,
        })?
    }

    fn env() -> EngineEnv {
        let data = std::sync::Arc::new(crate::storage::memory::MemoryDataStores::new());
        EngineEnv::new(Default::default(), std::iter::empty(), data, None).unwrap()
    }

    /// A branch result collected for the aggregator leaves its envelope on the job as a single
    /// task's result does; a late result of a timed-out branch is `deadline_exceeded`.
    #[test]
    fn branch_results_keep_their_envelope_and_timed_out_ones_are_late() {
        let mut job = Job::new("j1", "bp", "start", json!({}));
        job.status = JobStatus::WaitingForParallelTasks;
        job.aggregation_target = Some("agg".into());
        let mut spec = TaskSpec::new("echo");
        spec.transitions = vec![("success".into(), "agg".into())];
        let branches: Vec<TaskRecord> =
            (0..3).map(|_| super::super::executor::new_task(spec.clone(), true, 0, now_ms())).collect();
        job.branches = branches.clone();
        let mut result = TaskResult::success(&branches[0].task_id, json!({"a": 1}));
        result.data_metadata.insert("a".into(), serde_json::from_value(json!({"uri": "s3://b/a", "size": 1})).unwrap());
        result.metadata = Some(json!({"m": 1}).as_object().unwrap().clone());
        result.timestamp = Some(1_800_000_000);
        let (d, _) = apply_task_result(&env(), &mut job, &result);
        assert_eq!(d, ResultDisposition::Accepted(transition::PARALLEL_BRANCH_ACCEPTED));
        assert_eq!(job.data_metadata["a"].uri, "s3://b/a");
        assert_eq!((job.metadata.clone(), job.timestamp), (Some(json!({"m": 1})), Some(1_800_000_000)));

        let error = TaskError::new(crate::protocol::TIMEOUT_ERROR, "late");
        let _ = time_out_task(&env(), &mut job, &branches[1].task_id, error.clone());
        assert_eq!(job.timed_out_tasks, [branches[1].task_id.clone()]);
        let (d, _) = apply_task_result(&env(), &mut job, &TaskResult::success(&branches[1].task_id, json!({})));
        assert!(matches!(d, ResultDisposition::Ignored { reason: IgnoreReason::DeadlineExceeded, .. }), "{d:?}");
        // Not in flight: nothing happens, nothing is remembered.
        assert_eq!(time_out_task(&env(), &mut job, "task-gone", error), Step::default());
        assert_eq!(job.timed_out_tasks.len(), 1);
    }

    #[test]
    fn a_job_remembers_a_bounded_number_of_timed_out_tasks() {
        let mut job = Job::new("j1", "bp", "start", json!({}));
        for i in 0..40 {
            job.record_timeout(&format!("t{i}"));
        }
        job.record_timeout("t39");
        assert_eq!(job.timed_out_tasks.len(), crate::job::TIMED_OUT_TASKS_KEPT);
        assert_eq!((job.timed_out_tasks[0].as_str(), job.timed_out_tasks[31].as_str()), ("t8", "t39"));
    }

    /// A timeout of a picked-up task is the failure of the worker that held it (the
    /// reputation recalculation counts it); a task still queued was nobody's to finish.
    #[test]
    fn a_timeout_is_the_failure_of_the_worker_that_picked_the_task_up() {
        assert_eq!(finished_by(true).as_deref(), Some("w1"));
        assert_eq!(finished_by(false), None);
    }
}
