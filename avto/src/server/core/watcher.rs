//! The watcher: dead workers, overdue tasks (dispatch and execution timeouts, at most
//! `WATCHER_LIMIT` per pass) and crash recovery of jobs whose progress was lost, one pass every
//! `WATCHER_INTERVAL_SECONDS`.

use std::sync::Arc;
use std::time::Duration;

use super::{Core, CoreError};
use crate::context::TaskError;
use crate::engine;
use crate::job::{now_ms, JobStatus};
use crate::protocol::{DISPATCH_TIMEOUT_ERROR, TIMEOUT_ERROR};
use crate::storage::Overdue;

/// Stale jobs claimed per watcher pass.
const RECOVERY_BATCH: usize = 200;

/// Terminal jobs one retention sweep removes at most (the watcher sweeps again while a batch
/// comes back full, up to [`RETENTION_BATCHES`] per pass).
const RETENTION_BATCH: usize = 1000;
const RETENTION_BATCHES: usize = 100;

impl Core {
    /// Starts the background loops (watcher: timeouts and dead workers; the scheduling-delay
    /// probe; the reputation recalculation), supervised: a pass
    /// that panics is logged and the watcher starts again (see [`crate::supervise`]).
    pub fn start_background(self: &Arc<Self>) {
        let core = Arc::downgrade(self);
        let interval = self.cfg.watcher_interval.max(Duration::from_millis(50));
        crate::supervise::supervise(&self.health, "watcher", move || {
            let core = core.clone();
            async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(core) = core.upgrade() else { return };
                    core.watch_once().await;
                }
            }
        });
        self.start_scheduling_delay_probe();
        self.start_reputation();
        #[cfg(feature = "dashboard")]
        self.start_change_relay();
    }

    /// Samples the runtime's scheduling delay every second (`avto_runtime_scheduling_delay_seconds`):
    /// how much later than asked a 1 s sleep ends. Under a starved or blocked runtime every timer,
    /// long-poll and lease renewal is that late too. Supervised like the watcher.
    pub(crate) fn start_scheduling_delay_probe(self: &Arc<Self>) {
        let core = Arc::downgrade(self);
        crate::supervise::supervise(&self.health, "scheduling_delay_probe", move || {
            let core = core.clone();
            async move {
                loop {
                    let asked = Duration::from_secs(1);
                    let started = tokio::time::Instant::now();
                    tokio::time::sleep(asked).await;
                    let late = started.elapsed().saturating_sub(asked);
                    let Some(core) = core.upgrade() else { return };
                    core.metrics.scheduling_delay(late.as_secs_f64());
                }
            }
        });
    }

    /// One watcher pass: expired workers, overdue tasks, then stale jobs (crash recovery).
    pub async fn watch_once(self: &Arc<Self>) {
        // At shutdown nothing new starts here: the next instance's watcher takes over.
        if self.is_shutting_down() {
            return;
        }
        let now = now_ms();
        let (queued, orphans) = self.dispatcher.expire(now).await;
        self.requeue(queued.into_iter().map(|t| (t.job_id, t.task_id)).collect());
        self.requeue(orphans.into_iter().map(|o| (o.job_id, o.task_id)).collect());
        let default_exec = self.cfg.worker_timeout.as_millis() as u64;
        for t in self.dispatcher.overdue(now, default_exec, self.cfg.watcher_limit).await {
            let Ok(Some(mut tx)) = self.begin(&t.job_id).await else { continue };
            if !tx.tasks_in_flight().any(|r| r.task_id == t.task_id) {
                continue;
            }
            self.metrics.task_timed_out(
                &tx.blueprint,
                match t.kind {
                    Overdue::Dispatch => "dispatch",
                    Overdue::Execution => "execution",
                },
            );
            let error = match t.kind {
                Overdue::Dispatch => TaskError::new(
                    DISPATCH_TIMEOUT_ERROR,
                    format!("task {} was not picked up by a worker before its dispatch deadline", t.task_id),
                ),
                Overdue::Execution => TaskError::new(
                    TIMEOUT_ERROR,
                    format!(
                        "worker {} did not return a result for task {} in time",
                        t.worker_id.as_deref().unwrap_or("?"),
                        t.task_id
                    ),
                ),
            };
            tracing::warn!(job_id = %t.job_id, task_id = %t.task_id, code = %error.code, "task timed out");
            let step = engine::time_out_task(&self.env, &mut tx, &t.task_id, error);
            self.apply(&mut tx, step).await;
            super::transact::log_failure("could not save a timed-out task", &t.job_id, self.commit(tx).await);
        }
        // Crash recovery, last: unsettled jobs nobody touched for a while (see `recover`). After
        // the timeouts above, so a task this pass just claimed as overdue is not taken for lost.
        let cutoff = now.saturating_sub(self.cfg.job_recovery_after.as_millis() as u64);
        match self.jobs.claim_stale(cutoff, now, RECOVERY_BATCH).await {
            Ok(ids) => {
                for id in ids {
                    self.recover(id);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not look for stale jobs"),
        }
        // Job-end webhooks whose sender went silent (died, or had no room) are sent again.
        self.webhooks.redeliver().await;
        // Retention: terminal jobs whose `JOB_RETENTION_SECONDS` ran out leave the job store.
        for _ in 0..RETENTION_BATCHES {
            match self.jobs.remove_expired(now, RETENTION_BATCH).await {
                Ok(n) if n == RETENTION_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not remove expired jobs");
                    break;
                }
            }
        }
    }

    /// Re-drives a job whose progress may have been lost: the instance that held it died (or
    /// lost its lease) between changing something and carrying out what follows. Under the job
    /// lock, so it never runs alongside a live holder, and idempotent:
    /// * `pending` / `running`: the handler runs (again); a crash before the save means its
    ///   action never happened;
    /// * `awaiting_retry`: the handler runs once the longest possible backoff has passed;
    /// * `waiting_for_worker` / `waiting_for_parallel_tasks`: each in-flight task that is due and
    ///   that the worker store does not know (queued, running or parked) is placed again;
    /// * `waiting_for_sub_job`: a child that ended resumes the parent; a child that was never
    ///   stored makes the parent's handler run again.
    pub fn recover(self: &Arc<Self>, id: String) {
        let core = self.clone();
        tokio::spawn(async move {
            let _permit = core.exec.clone().acquire_owned().await;
            super::transact::log_failure("could not recover job", &id, core.recover_now(&id).await);
        });
    }

    async fn recover_now(self: &Arc<Self>, id: &str) -> Result<(), CoreError> {
        let Some(mut tx) = self.begin(id).await? else { return Ok(()) };
        let now = now_ms();
        match tx.status {
            JobStatus::Pending | JobStatus::Running => {
                tracing::warn!(job_id = %id, status = %tx.status, "recovering a job whose handler run was lost");
                self.advance(&mut tx).await;
            }
            JobStatus::AwaitingRetry => {
                if now < tx.updated_at_ms.saturating_add(self.env.config.retry_max.as_millis() as u64) {
                    return Ok(()); // the retry timer may still fire; look again later
                }
                tracing::warn!(job_id = %id, "recovering a job whose handler retry was lost");
                self.advance(&mut tx).await;
            }
            JobStatus::WaitingForWorker | JobStatus::WaitingForParallelTasks => {
                let due: Vec<String> =
                    tx.tasks_in_flight().filter(|t| t.dispatched_at_ms <= now).map(|t| t.task_id.clone()).collect();
                let mut lost = Vec::new();
                for task_id in due {
                    if !self.dispatcher.store().task_known(&task_id).await? {
                        lost.push(task_id);
                    }
                }
                if lost.is_empty() {
                    return Ok(());
                }
                for task_id in &lost {
                    tracing::warn!(job_id = %id, %task_id, "recovering a task that no queue holds");
                    if let Some(r) = tx.task_mut(task_id) {
                        r.worker_id = None;
                        r.picked_up_at_ms = None;
                    }
                    self.place_or_fail(&mut tx, task_id).await;
                }
            }
            JobStatus::WaitingForSubJob => {
                let Some(child_id) = tx.sub_job.as_ref().map(|s| s.child_job_id.clone()) else { return Ok(()) };
                match self.jobs.get(&child_id).await? {
                    Some(child) if child.status.is_terminal() => {
                        if let Some(step) = engine::resume_parent(&mut tx, &child) {
                            tracing::warn!(job_id = %id, %child_id, "recovering a lost resume after a child job");
                            self.apply(&mut tx, step).await;
                        }
                    }
                    Some(_) => return Ok(()),
                    None => {
                        tracing::warn!(job_id = %id, %child_id, "child job was never stored; running the parent's handler again");
                        tx.sub_job = None;
                        tx.status = JobStatus::Running;
                        self.advance(&mut tx).await;
                    }
                }
            }
            _ => return Ok(()),
        }
        self.commit(tx).await?;
        Ok(())
    }
}
