//! The change feed (feature `dashboard`): a broadcast of what changed on this instance, for the
//! dashboard's live stream. A job is sent after every insert and commit of its record, a worker
//! when it registers, when a heartbeat changes its status, when an operator drains it and when it
//! leaves (its `offline` heartbeat).
//!
//! Cheap when nobody listens: with no receiver nothing is built, cloned or sent (one atomic
//! read). Receivers that fall more than [`CAPACITY`] changes behind lose the oldest and are told
//! ([`tokio::sync::broadcast::error::RecvError::Lagged`]), so a slow reader never holds memory.
//!
//! Limitation: with several instances sharing a Redis, each one's feed carries only the changes
//! made on that instance (a job advanced by a worker's result sent to another instance is not
//! seen here until this instance touches it). The dashboard re-fetches what it shows when it
//! (re)connects, so it is never wrong for long, but it is only live for this instance's work.
//! A dead worker that is expired by the watcher is not sent either: the workers page marks it
//! stale from its heartbeat age.

use std::collections::HashMap;

use tokio::sync::broadcast;

use super::Core;
use crate::job::{Job, JobStatus};

/// Changes a receiver may fall behind before it loses some (and is told so).
pub(crate) const CAPACITY: usize = 1024;
/// Workers whose last sent status is remembered (to send only real changes); forgotten all at
/// once beyond this (a change may then be sent twice, never lost).
const STATUS_MEMORY: usize = 10_000;

/// One change (cheap to clone: every receiver gets a copy).
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Job(std::sync::Arc<JobChange>),
    Worker(WorkerChange),
}

/// A job as it was saved.
#[derive(Debug, Clone)]
pub(crate) struct JobChange {
    pub id: String,
    pub client_id: String,
    pub blueprint: String,
    pub status: JobStatus,
    pub current_state: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub progress: Option<f64>,
    pub waiting_reason: Option<String>,
    pub error_message: Option<String>,
    pub parent_job_id: Option<String>,
}

impl JobChange {
    fn of(job: &Job) -> JobChange {
        JobChange {
            id: job.id.clone(),
            client_id: job.client.id.clone(),
            blueprint: job.blueprint.clone(),
            status: job.status,
            current_state: job.current_state.clone(),
            created_at_ms: job.created_at_ms,
            updated_at_ms: job.updated_at_ms,
            progress: job.progress,
            waiting_reason: job.waiting_reason.clone(),
            error_message: job.error_message.clone(),
            parent_job_id: job.parent_job_id.clone(),
        }
    }
}

/// A worker's new status, or its departure.
#[derive(Debug, Clone)]
pub(crate) struct WorkerChange {
    pub worker_id: String,
    pub status: String,
    pub removed: bool,
}

/// The sender and the last status sent per worker.
#[derive(Debug)]
pub(crate) struct Changes {
    tx: broadcast::Sender<Change>,
    statuses: parking_lot::Mutex<HashMap<String, String>>,
    /// When each worker was last heard from on this instance (registration or heartbeat).
    seen: parking_lot::Mutex<HashMap<String, u64>>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes { tx: broadcast::Sender::new(CAPACITY), statuses: Default::default(), seen: Default::default() }
    }
}

impl Changes {
    fn listened(&self) -> bool {
        self.tx.receiver_count() > 0
    }
}

impl Core {
    /// A receiver of every change from now on.
    pub(crate) fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.tx.subscribe()
    }

    /// The change of `job` as built now, when someone listens (to send once it is saved).
    pub(super) fn job_change(&self, job: &Job) -> Option<Change> {
        self.changes.listened().then(|| Change::Job(std::sync::Arc::new(JobChange::of(job))))
    }

    /// Sends a change built by [`Core::job_change`].
    pub(super) fn send_change(&self, change: Option<Change>) {
        if let Some(c) = change {
            let _ = self.changes.tx.send(c);
        }
    }

    /// A worker was heard from (registration or heartbeat) on this instance: the workers page's
    /// heartbeat age. Kept for at most [`STATUS_MEMORY`] workers (forgotten all at once beyond:
    /// their age is unknown until their next heartbeat).
    pub(crate) fn worker_seen(&self, worker_id: &str, removed: bool) {
        let mut seen = self.changes.seen.lock();
        if removed {
            seen.remove(worker_id);
            return;
        }
        let now = crate::job::now_ms();
        if let Some(at) = seen.get_mut(worker_id) {
            *at = now;
            return;
        }
        if seen.len() >= STATUS_MEMORY {
            seen.clear();
        }
        seen.insert(worker_id.to_owned(), now);
    }

    /// When `worker_id` was last heard from on this instance (epoch ms), if known.
    pub(crate) fn worker_last_seen(&self, worker_id: &str) -> Option<u64> {
        self.changes.seen.lock().get(worker_id).copied()
    }

    /// A worker's status as reported now: sent when it differs from the last one sent (or the
    /// worker left).
    pub(crate) fn worker_changed(&self, worker_id: &str, status: &str, removed: bool) {
        if !self.changes.listened() {
            return;
        }
        {
            let mut last = self.changes.statuses.lock();
            if removed {
                last.remove(worker_id);
            } else {
                if last.get(worker_id).is_some_and(|s| s == status) {
                    return;
                }
                if last.len() >= STATUS_MEMORY {
                    last.clear();
                }
                last.insert(worker_id.to_owned(), status.to_owned());
            }
        }
        let change = WorkerChange { worker_id: worker_id.to_owned(), status: status.to_owned(), removed };
        let _ = self.changes.tx.send(Change::Worker(change));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing is built without a receiver; a receiver gets jobs and real status changes only.
    #[tokio::test]
    async fn changes_reach_receivers_only_when_there_are_some() {
        let core = crate::server::Orchestrator::builder()
            .config(crate::server::Config::builder().build().unwrap())
            .build()
            .unwrap()
            .core()
            .clone();
        let job = Job::new("j1", "bp", "start", serde_json::Value::Null);
        assert!(core.job_change(&job).is_none(), "no receiver: nothing built");
        let mut rx = core.changes();
        core.send_change(core.job_change(&job));
        core.worker_changed("w1", "idle", false);
        core.worker_changed("w1", "idle", false);
        core.worker_changed("w1", "busy", false);
        core.worker_changed("w1", "offline", true);
        let mut seen = Vec::new();
        while let Ok(c) = rx.try_recv() {
            seen.push(match c {
                Change::Job(j) => format!("job {} {}", j.id, j.status),
                Change::Worker(w) => format!("worker {} {} {}", w.worker_id, w.status, w.removed),
            });
        }
        assert_eq!(seen, ["job j1 pending", "worker w1 idle false", "worker w1 busy false", "worker w1 offline true"]);
    }
}
