//! The job lifecycle: create, drive, results, approvals, cancel, parent resume, and the
//! reads the client API needs. Each change is one unit of work ([`super::transact`]).

use std::sync::Arc;

use serde_json::Value;

use super::transact::{log_failure, JobTx, Unstored};
use super::{Core, CoreError, NewJob};
use crate::blueprint::Blueprint;
use crate::context::{ErrorClass, TaskError};
use crate::engine::{self, ResultDisposition, TaskResult};
use crate::job::{Job, JobStatus};
use crate::protocol::{task_status, CONTRACT_VIOLATION_ERROR};
use crate::server::config::ClientEntry;
use crate::server::task_contracts::Schema;
use crate::storage::{Finishing, JobPage, JobQuery, StorageError, JOB_QUERY_MAX_LIMIT};

/// Most jobs one [`Core::cancel_matching`] call cancels (or, dry, counts).
pub const BULK_CANCEL_MAX: u64 = 10_000;
/// Cancellations [`Core::cancel_matching`] runs at once.
const BULK_CANCEL_CONCURRENCY: usize = 16;

/// What [`Core::cancel_matching`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct BulkCancel {
    /// Jobs that matched the filter and had not ended (at most [`BULK_CANCEL_MAX`]).
    pub matched: u64,
    /// Of those, the jobs this call cancelled (0 for a dry run; a job that ended on its own
    /// meanwhile is matched but not cancelled).
    pub cancelled: u64,
    /// The call stopped at [`BULK_CANCEL_MAX`] and more jobs may match: call again.
    pub more: bool,
}

/// What absent result data is checked as (the engine merges nothing from it).
static EMPTY_DATA: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| Value::Object(Default::default()));

impl Core {
    /// Creates a job and starts it. Returns its id.
    pub async fn create_job(
        self: &Arc<Self>,
        bp: Blueprint,
        req: NewJob,
        client: &ClientEntry,
    ) -> Result<String, CoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut job = Job::new(id.clone(), bp.name(), bp.start_state(), req.initial_data);
        job.client = self.client_config(client);
        job.webhook_url = req.webhook_url;
        job.dispatch_timeout = req.dispatch_timeout;
        job.result_timeout = req.result_timeout;
        job.security = req.security;
        job.metadata = req.metadata;
        let (_span, tp) = crate::trace::span_with_parent(
            tracing::info_span!("job", job_id = %job.id, blueprint = %job.blueprint),
            req.traceparent,
        );
        if let Some(tp) = tp {
            job.tracing_context = tp.to_map();
        }
        self.observe_created(&job);
        // With an execution slot free now, the job's first handlers run at once: on a store that
        // inserts with the commit before the job is stored, so that it is written once (see
        // `transact::Unstored`); elsewhere it is stored locked and they run without locking it
        // again. Without a free slot it waits for one like any other drive.
        match self.exec.clone().try_acquire_owned() {
            Ok(permit) => match self.jobs.unsaved(Box::new(job)) {
                Ok(guard) => {
                    let (told, stored) = tokio::sync::oneshot::channel();
                    let unstored = Unstored::new(Box::new((*guard).clone()), told);
                    let mut tx = self.tx_unstored(guard, unstored);
                    let (core, id) = (self.clone(), id.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        core.advance_unstored(&mut tx).await;
                        log_failure("could not advance job", &id, core.commit(tx).await);
                    });
                    stored.await.unwrap_or_else(|_| {
                        Err(StorageError::Unavailable("the job's first step ended before it was stored".into()))
                    })?;
                }
                Err(job) => {
                    let change = self.job_change(&job);
                    let tx = self.tx(self.jobs.insert_locked(*job).await?);
                    self.send_change(change);
                    let (core, id) = (self.clone(), id.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        log_failure("could not advance job", &id, core.advance_and_commit(tx).await);
                    });
                }
            },
            Err(_) => {
                let change = self.job_change(&job);
                self.jobs.insert(job).await?;
                self.send_change(change);
                self.drive(id.clone());
            }
        }
        Ok(id)
    }

    /// Runs the job's handlers in the background (if it is runnable), within the limit of
    /// handler runs at once (`EXECUTOR_MAX_CONCURRENT_JOBS`).
    pub fn drive(self: &Arc<Self>, id: String) {
        let core = self.clone();
        tokio::spawn(async move {
            let _permit = core.exec.clone().acquire_owned().await;
            let driven = async {
                let Some(tx) = core.begin(&id).await? else { return Ok(()) };
                core.advance_and_commit(tx).await
            };
            log_failure("could not advance job", &id, driven.await);
        });
    }

    async fn advance_and_commit(self: &Arc<Self>, mut tx: JobTx) -> Result<(), StorageError> {
        self.advance(&mut tx).await;
        self.commit(tx).await
    }

    /// Resumes `parent_id` after its child ended (an after-commit effect of the child's end).
    pub(super) async fn resume_parent(self: &Arc<Self>, parent_id: &str, child: &Job) {
        let resumed = async {
            let Some(mut tx) = self.begin(parent_id).await? else { return Ok(()) };
            let Some(step) = engine::resume_parent(&mut tx, child) else { return Ok(()) };
            self.apply(&mut tx, step).await;
            self.commit(tx).await
        };
        log_failure("could not resume the parent job", parent_id, resumed.await);
    }

    /// Applies a worker's result. With `nonce` (the message's replay key and how long to keep
    /// it) the nonce is recorded first, and a result whose nonce was used before is not applied
    /// (`Ok(None)`).
    pub async fn submit_result(
        self: &Arc<Self>,
        worker_id: &str,
        job_id: &str,
        result: TaskResult,
        nonce: Option<(&str, std::time::Duration)>,
    ) -> Result<Option<ResultDisposition>, CoreError> {
        // `finished` under the job lock: crash recovery (which also locks) never sees the task
        // unknown to the worker store while it is still in flight on the job. A store sharing
        // its backend with the worker store does both, and the nonce, in one step.
        let tx = match self.jobs.lock_finishing(job_id, worker_id, &result.task_id, nonce) {
            Some(locked) => match locked.await? {
                Finishing::Locked(g) => Some(self.tx(g)),
                Finishing::Replayed => return Ok(None),
                _ => None,
            },
            None => {
                if let Some((key, ttl)) = nonce {
                    if !self.first_use_nonce(key, ttl).await? {
                        return Ok(None);
                    }
                }
                let tx = self.begin(job_id).await;
                self.dispatcher.finished(worker_id, &result.task_id).await;
                tx?
            }
        };
        let Some(mut tx) = tx else {
            let reason = engine::IgnoreReason::JobNotFound;
            self.metrics.result_ignored("", reason.as_str());
            return Ok(Some(ResultDisposition::Ignored { reason, message: format!("job {job_id} not found") }));
        };
        let result = self.check_output(&tx, worker_id, result).await;
        let (disposition, step) = engine::apply_task_result(&self.env, &mut tx, &result);
        if let ResultDisposition::Ignored { reason, .. } = &disposition {
            self.metrics.result_ignored(&tx.blueprint, reason.as_str());
        }
        if let ResultDisposition::Accepted(_) = &disposition {
            match (result.status.as_str(), result.error.as_ref()) {
                (task_status::FAILURE, Some(e)) if e.code == CONTRACT_VIOLATION_ERROR => {
                    self.dispatcher.adjust_reputation(worker_id, -self.cfg.reputation_penalty_contract_violation).await
                }
                (task_status::FAILURE, Some(e)) if e.class() == ErrorClass::Permanent => {
                    self.dispatcher.adjust_reputation(worker_id, -self.cfg.reputation_penalty_task_failure).await
                }
                (task_status::FAILURE, _) => {}
                _ => self.dispatcher.adjust_reputation(worker_id, self.cfg.reputation_reward_success).await,
            }
        }
        self.apply(&mut tx, step).await;
        self.commit(tx).await?;
        Ok(Some(disposition))
    }

    /// The output contract (spec: result processing, step 5): a `success` from the worker holding
    /// the task, whose skill declares an `output_schema`, must carry `data` that keeps it; else
    /// the result becomes a `CONTRACT_VIOLATION_ERROR` failure (quarantine, or the dispatch's
    /// `failure` transition; the reputation penalty follows from the code).
    async fn check_output(&self, job: &Job, worker_id: &str, result: TaskResult) -> TaskResult {
        if result.status != task_status::SUCCESS {
            return result;
        }
        let Some(record) = job
            .tasks_in_flight()
            .find(|t| t.task_id == result.task_id && t.worker_id.as_deref().is_none_or(|w| w == worker_id))
        else {
            return result;
        };
        let Some(contracts) = self.dispatcher.contracts_of(worker_id).await else { return result };
        let skill = record.spec.task_type.as_str();
        let data = if result.data.is_null() { &EMPTY_DATA } else { &result.data };
        match contracts.check(skill, Schema::Output, data) {
            Ok(()) => result,
            Err(violations) => {
                tracing::warn!(job_id = %job.id, task_id = %result.task_id, worker_id, skill, %violations, "result breaks the output contract");
                let message = format!("the result data breaks the output_schema of skill `{skill}`: {violations}");
                TaskResult {
                    status: task_status::FAILURE.into(),
                    data: Value::Null,
                    error: Some(TaskError::new(CONTRACT_VIOLATION_ERROR, message)),
                    ..result
                }
            }
        }
    }

    /// Cancels a job (and its tasks and child).
    pub async fn cancel_job(self: &Arc<Self>, job_id: &str) -> Result<(), CoreError> {
        let Some(mut tx) = self.begin(job_id).await? else { return Err(CoreError::JobNotFound) };
        let step = engine::cancel(&mut tx)?;
        self.apply(&mut tx, step).await;
        self.commit(tx).await?;
        Ok(())
    }

    /// One page of the jobs matching `query`, newest first (see [`JobQuery`]); a client's view
    /// sets [`JobQuery::client`]. [`StorageError::Invalid`] for a query out of bounds.
    pub async fn query_jobs(&self, query: &JobQuery) -> Result<JobPage, StorageError> {
        self.jobs.query(query).await
    }

    /// How many jobs match `query` (exact or estimated: see [`JobQuery`], "Counting").
    pub async fn count_jobs(&self, query: &JobQuery) -> Result<u64, StorageError> {
        self.jobs.count(query).await
    }

    /// Cancels every job matching `query` that has not ended (its `after` and `limit` are
    /// ignored; its statuses, if any, narrowed to the ones that have not ended), each through
    /// [`Core::cancel_job`] (tasks, children and webhooks as for one cancel), up to
    /// [`BULK_CANCEL_MAX`] jobs per call, newest first. With `dry_run` nothing changes and
    /// `matched` says how many a real call would cancel now.
    pub async fn cancel_matching(self: &Arc<Self>, query: &JobQuery, dry_run: bool) -> Result<BulkCancel, CoreError> {
        let statuses: Vec<JobStatus> = JobStatus::ALL
            .into_iter()
            .filter(|s| !s.is_terminal() && (query.statuses.is_empty() || query.statuses.contains(s)))
            .collect();
        let mut out = BulkCancel::default();
        if statuses.is_empty() {
            query.checked()?;
            return Ok(out);
        }
        let mut q = JobQuery { statuses, after: None, limit: JOB_QUERY_MAX_LIMIT, ..query.clone() };
        loop {
            let page = self.jobs.query(&q).await?;
            let room = (BULK_CANCEL_MAX - out.matched) as usize;
            // A job that ended since the index was read is not a match.
            let ids: Vec<String> = page.jobs.iter().filter(|j| !j.status.is_terminal()).map(|j| j.id.clone()).collect();
            if ids.len() > room {
                out.matched += room as u64;
                out.more = true;
                if !dry_run {
                    out.cancelled += self.cancel_each(&ids[..room]).await?;
                }
                return Ok(out);
            }
            out.matched += ids.len() as u64;
            if !dry_run {
                out.cancelled += self.cancel_each(&ids).await?;
            }
            match page.next {
                None => return Ok(out),
                Some(_) if out.matched >= BULK_CANCEL_MAX => {
                    out.more = true;
                    return Ok(out);
                }
                next => q.after = next,
            }
        }
    }

    /// Cancels `ids` a few at a time; how many it cancelled (a job that ended or went
    /// meanwhile is skipped; a storage failure stops the call).
    async fn cancel_each(self: &Arc<Self>, ids: &[String]) -> Result<u64, CoreError> {
        use futures::StreamExt;
        // Boxed up front: a closure in the stream's type makes the caller's future not `Send`
        // for every lifetime (rustc's higher-ranked inference), so no axum handler could await it.
        let futs: Vec<futures::future::BoxFuture<'_, Result<(), CoreError>>> =
            ids.iter().map(|id| Box::pin(self.cancel_job(id)) as _).collect();
        let mut results = futures::stream::iter(futs).buffer_unordered(BULK_CANCEL_CONCURRENCY);
        let mut cancelled = 0;
        while let Some(r) = results.next().await {
            match r {
                Ok(()) => cancelled += 1,
                Err(CoreError::JobNotFound | CoreError::Cancel(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(cancelled)
    }

    /// Applies a human decision.
    pub async fn approve(self: &Arc<Self>, job_id: &str, decision: &str) -> Result<(), CoreError> {
        let Some(mut tx) = self.begin(job_id).await? else { return Err(CoreError::JobNotFound) };
        let step = engine::apply_approval(&mut tx, decision)?;
        self.apply(&mut tx, step).await;
        self.commit(tx).await?;
        Ok(())
    }

    /// The job by id, as saved (not waiting for a unit of work in progress).
    pub async fn job(&self, id: &str) -> Result<Option<Job>, StorageError> {
        self.jobs.get(id).await
    }

    /// A page of the jobs of client `client_id`, newest first.
    pub async fn list_jobs(&self, client_id: &str, limit: usize, offset: usize) -> Result<Vec<Job>, StorageError> {
        self.jobs.list(client_id, limit, offset).await
    }

    /// A page of the quarantined jobs of client `client_id`.
    pub async fn list_quarantined(
        &self,
        client_id: &str,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Job>, StorageError> {
        self.jobs.list_quarantined(client_id, limit, offset).await
    }

    /// Number of jobs per status, for one client identity (`None`: every client).
    pub async fn job_counts(
        &self,
        client_id: Option<&str>,
    ) -> Result<std::collections::BTreeMap<crate::job::JobStatus, u64>, StorageError> {
        self.jobs.counts(client_id).await
    }
}
