//! The engine core: how a job moves through its blueprint.
//!
//! Everything here works on a plain `&mut Job` and returns one [`Step`]: [`Effect`]s for the caller to carry
//! out (enqueue tasks, start a child job, schedule a retry, send webhooks, ...). The HTTP
//! orchestrator and the in-process test runner ([`crate::testing`]) drive the same functions,
//! so what a unit test shows is what production does.

mod executor;
mod results;

#[cfg(feature = "server")]
pub(crate) use executor::panic_message;
pub use executor::{advance, EngineConfig, EngineEnv};
pub use results::{
    apply_approval, apply_event, apply_task_result, cancel, fail_task, resume_parent, time_out_task, ApprovalError,
    CancelError, IgnoreReason, ResultDisposition, TaskResult,
};

use std::time::Duration;

use crate::job::{Job, JobStatus, TaskRecord};

/// Something the caller must do after the engine changed a job.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Effect {
    /// Put these tasks on worker queues after `delay` (zero for fresh dispatches, backoff for retries).
    Dispatch { tasks: Vec<TaskRecord>, delay: Duration },
    /// These tasks are no longer wanted: tell their workers (WebSocket push / heartbeat answer).
    CancelTasks(Vec<TaskRecord>),
    /// Create this child job and advance it.
    StartChild(Box<Job>),
    /// Cancel this child job (its parent was cancelled).
    CancelChild(String),
    /// Run the current state's handler again after `delay` (handler-failure retry).
    RetryHandler { delay: Duration },
    /// The job reached a terminal status: webhooks, history, parent resume, file cleanup.
    Terminal(JobStatus),
}

/// A history-worthy event the engine observed (recorded by the history writer when enabled).
/// `attempt` counts from 0 (first run / first dispatch), +1 per retry.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EngineEvent {
    StateStarted {
        state: String,
        attempt: u32,
    },
    StateFinished {
        state: String,
        next_state: Option<String>,
        duration_ms: u64,
    },
    StateFailed {
        state: String,
        error: String,
        attempt: u32,
    },
    TaskDispatched {
        task_id: String,
        task_type: String,
        attempt: u32,
    },
    TaskFinished {
        task_id: String,
        status: String,
        worker_id: Option<String>,
        /// The error's code, for a `failure`.
        error_code: Option<String>,
    },
    TaskRetry {
        task_id: String,
        next_task_id: String,
        attempt: u32,
        delay_ms: u64,
    },
    ApprovalRequested {
        integration: Option<String>,
        message: Option<String>,
    },
    SubJobStarted {
        child_job_id: String,
        blueprint: String,
    },
    JobFinished {
        status: JobStatus,
    },
    /// A "ghost" event the handler sent ([`crate::Actions::send_event`]).
    GhostEvent {
        event_id: String,
        event_type: String,
        payload: serde_json::Value,
    },
    /// An operation on the job's files that the handler run did ([`crate::TaskFiles`]): an
    /// `s3_operation` history row, between the run's `state_started` and its end.
    FileOperation(Box<crate::files::FileOperation>),
}

/// What one engine transition did: the one return type of every transition
/// ([`advance`], [`apply_task_result`], [`apply_event`], [`apply_approval`], [`cancel`],
/// [`fail_task`], [`time_out_task`], [`resume_parent`]).
///
/// The caller carries out [`Step::effects`], records [`Step::events`], and when
/// [`Step::advance`] is set runs [`advance`] on the job before it commits (the job entered a
/// state whose handler has not run yet).
#[derive(Debug, Default, Clone, PartialEq)]
#[must_use = "a step's effects must be carried out"]
pub struct Step {
    pub effects: Vec<Effect>,
    pub events: Vec<EngineEvent>,
    /// The job may have a handler to run now: the caller advances it before committing.
    pub advance: bool,
}

impl Step {
    /// A step that asks the caller to advance the job (its handler may run now).
    pub(crate) fn then_advance(mut self) -> Self {
        self.advance = true;
        self
    }
    pub(crate) fn effect(&mut self, e: Effect) {
        self.effects.push(e);
    }
    pub(crate) fn event(&mut self, e: EngineEvent) {
        self.events.push(e);
    }
    pub fn extend(&mut self, other: Step) {
        self.effects.extend(other.effects);
        self.events.extend(other.events);
        self.advance |= other.advance;
    }
}

/// Exponential backoff with +-25 % jitter: `base * 2^attempt`, capped at `max`.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    use rand::Rng;
    let exp = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    if exp.is_zero() {
        return exp;
    }
    let jitter = rand::rng().random_range(0.75..1.25);
    exp.mul_f64(jitter).min(max)
}
