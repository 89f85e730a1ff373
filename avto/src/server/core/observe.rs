//! What [`Core`] reports as jobs change: Prometheus counters ([`crate::server::metrics`]),
//! history records ([`crate::history`]), the operations on a job's files outside its handlers
//! (counted and recorded) and, when a job ends, the cleanup of its task files.

use std::sync::Arc;

use super::Core;
use crate::engine::{Effect, Step};
use crate::files::{FileObserver, FileOp, FileOperation, TaskFiles};
use crate::history::{self, History};
use crate::job::{now_ms, Job};
use crate::server::metrics::FileCounters;

impl Core {
    /// A job was created (API, scheduler, child): count it, write `job_created`.
    pub(super) fn observe_created(&self, job: &Job) {
        self.metrics.job_created(&job.blueprint);
        if let Some(h) = self.history() {
            h.record([history::created_record(job)]);
        }
    }

    /// An engine step changed `job`: write its events, count children and ends.
    pub(super) fn observe(&self, job: &Job, step: &Step) {
        for e in &step.effects {
            match e {
                Effect::StartChild(child) => self.observe_created(child),
                Effect::Terminal(status) => {
                    let secs = now_ms().saturating_sub(job.created_at_ms) as f64 / 1000.0;
                    self.metrics.job_ended(&job.blueprint, *status, secs);
                }
                _ => {}
            }
        }
        if let Some(h) = self.history() {
            h.record(history::records_for(job, &step.events));
        }
    }

    /// A worker took task `task_id` of `job`: dispatch latency.
    pub(super) fn observe_pickup(&self, job: &Job, task_id: &str) {
        if let Some(t) = job.task_in_flight(task_id) {
            self.metrics.dispatch_latency.observe(now_ms().saturating_sub(t.dispatched_at_ms) as f64 / 1000.0);
        }
    }

    /// After a job ended: deletes its files (`jobs/{job_id}/`, and its local directory) when
    /// `S3_AUTO_CLEANUP` is on, in the background. An after-commit effect, so the terminal state
    /// (and the result in it) has been saved before the files go.
    pub(super) fn cleanup_job_files(self: &Arc<Self>, job: &Job) {
        if !self.cfg.files_auto_cleanup {
            return;
        }
        let Some(files) = self.job_files(job) else { return };
        let job_id = job.id.clone();
        tokio::spawn(async move {
            match files.cleanup().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(job_id = %job_id, files = n, "job files deleted"),
                Err(e) => tracing::warn!(job_id = %job_id, error = %e, "could not delete the job's files"),
            }
        });
    }

    /// The files of `job` for what the orchestrator does with them outside a handler run (the
    /// client's uploads and downloads, the cleanup): each operation is counted and, with history
    /// on, an `s3_operation` row of the job (but the cleanup of a job that had no files). `None`
    /// without a file store.
    pub fn job_files(&self, job: &Job) -> Option<TaskFiles> {
        let log = JobFileLog {
            counters: self.metrics.files().clone(),
            history: self.history().map(|h| (h.clone(), Box::new(job.clone()))),
        };
        self.env.task_files(&job.id, Some(Arc::new(log)))
    }
}

/// Counts the file operations on one job and writes their history rows.
struct JobFileLog {
    counters: FileCounters,
    history: Option<(History, Box<Job>)>,
}

impl FileObserver for JobFileLog {
    fn observe(&self, op: &FileOperation) {
        self.counters.observe(op);
        // The end of a job that had no files is counted (it cost a listing) but is no row.
        let nothing = op.operation == FileOp::Cleanup && op.error.is_none() && op.file_count == Some(0);
        if let (Some((history, job)), false) = (&self.history, nothing) {
            history.record([history::s3_operation_record(job, op)]);
        }
    }
}
