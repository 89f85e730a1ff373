//! In-process hooks (spec item 101, issue #17): async callbacks the embedding application gives
//! to [`crate::server::OrchestratorBuilder::on_job_finished`] and
//! [`crate::server::OrchestratorBuilder::on_worker_event`]. They run after the change they
//! report has been saved, each in its own task: a slow hook delays nothing, and a hook that
//! fails or panics is logged and changes nothing.
//!
//! A hook runs on the instance that saved the change, once per change (a job's end, an accepted
//! event). An instance that dies between the save and the hook loses that call, as it would lose
//! a webhook it had not sent yet.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::FutureExt as _;
use serde_json::Value;

use crate::job::Job;

/// What a hook returns: `Err` is logged with the hook's kind and the job.
pub type HookResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

type BoxFuture = Pin<Box<dyn Future<Output = HookResult> + Send>>;
type JobHook = Arc<dyn Fn(Job) -> BoxFuture + Send + Sync>;
type EventHook = Arc<dyn Fn(WorkerEventInfo) -> BoxFuture + Send + Sync>;

/// An accepted worker event, or a handler's ghost event, as `on_worker_event` hooks see it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WorkerEventInfo {
    pub event_id: String,
    pub event_type: String,
    pub payload: Value,
    /// The job it is about (`None`: an event about no job).
    pub job_id: Option<String>,
    /// The task it is about, when the worker named one.
    pub task_id: Option<String>,
    /// The authenticated sender (`ghost` for a handler's event).
    pub worker_id: String,
    /// The worker it started from.
    pub origin_worker_id: String,
    /// The workers it went through.
    pub bubbling_chain: Vec<String>,
}

/// The hooks of one orchestrator.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    job_finished: Vec<JobHook>,
    worker_event: Vec<EventHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("job_finished", &self.job_finished.len())
            .field("worker_event", &self.worker_event.len())
            .finish()
    }
}

impl Hooks {
    pub(crate) fn add_job_finished<F, Fut>(&mut self, hook: F)
    where
        F: Fn(Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HookResult> + Send + 'static,
    {
        self.job_finished.push(Arc::new(move |job| Box::pin(hook(job))));
    }

    pub(crate) fn add_worker_event<F, Fut>(&mut self, hook: F)
    where
        F: Fn(WorkerEventInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HookResult> + Send + 'static,
    {
        self.worker_event.push(Arc::new(move |event| Box::pin(hook(event))));
    }

    /// Whether any `on_worker_event` hook is set (ghost events are only kept for them then).
    pub(crate) fn wants_events(&self) -> bool {
        !self.worker_event.is_empty()
    }

    /// Calls every `on_job_finished` hook with `job` (as saved, in a terminal status).
    pub(crate) fn job_finished(&self, job: &Job) {
        for hook in &self.job_finished {
            let fut = hook(job.clone());
            spawn("on_job_finished", Some(job.id.clone()), fut);
        }
    }

    /// Calls every `on_worker_event` hook with `event`.
    pub(crate) fn worker_event(&self, event: &WorkerEventInfo) {
        for hook in &self.worker_event {
            let fut = hook(event.clone());
            spawn("on_worker_event", event.job_id.clone(), fut);
        }
    }
}

/// Runs one hook call in its own task; an error or a panic is logged.
fn spawn(kind: &'static str, job_id: Option<String>, fut: BoxFuture) {
    tokio::spawn(async move {
        let job_id = job_id.as_deref().unwrap_or("");
        match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(hook = kind, job_id, error = %e, "hook failed"),
            Err(panic) => {
                let msg = crate::engine::panic_message(&*panic);
                tracing::error!(hook = kind, job_id, panic = %msg, "hook panicked");
            }
        }
    });
}
