//! What [`Core`] reports as jobs change: Prometheus counters ([`crate::server::metrics`]),
//! history records ([`crate::history`]) and, when a job ends, the cleanup of its task files.

use std::sync::Arc;

use super::Core;
use crate::engine::{Effect, Step};
use crate::files::TaskFiles;
use crate::history;
use crate::job::{now_ms, Job};

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
        if let Some(t) = job.tasks_in_flight().find(|t| t.task_id == task_id) {
            self.metrics.dispatch_latency.observe(now_ms().saturating_sub(t.dispatched_at_ms) as f64 / 1000.0);
        }
    }

    /// After a job ended: deletes its files (`jobs/{job_id}/`) when `S3_AUTO_CLEANUP` is on, in
    /// the background. An after-commit effect, so the terminal state (and the result in it) has
    /// been saved before the files go.
    pub(super) fn cleanup_job_files(self: &Arc<Self>, job_id: &str) {
        if !self.cfg.files_auto_cleanup {
            return;
        }
        let Some(store) = self.env.object_store() else { return };
        let job_id = job_id.to_owned();
        tokio::spawn(async move {
            match TaskFiles::new(job_id.clone(), store).cleanup().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(job_id = %job_id, files = n, "job files deleted"),
                Err(e) => tracing::warn!(job_id = %job_id, error = %e, "could not delete the job's files"),
            }
        });
    }
}
