//! The unit of work on one job, written once: lock -> engine step -> in-lock effects -> commit
//! -> after-commit effects.
//!
//! Every change to a job goes through [`Core::begin`], [`Core::apply`] and [`Core::commit`]:
//!
//! * **in-lock effects** happen while the job is locked, because the job's record must agree
//!   with them when it is saved: placing tasks on worker queues (the record names the worker)
//!   and cancelling tasks on workers;
//! * **after-commit effects** run once the job is saved, so whoever they reach sees what caused
//!   them: the webhook of a job that ended (its receiver may read the job back and must find it
//!   terminal), child jobs (they name a parent that exists), the parent's resume, cancelling a
//!   child, delayed dispatches, handler retries and the cleanup of the job's files.
//!
//! A unit of work that fails to commit (a lost lease on Redis) drops its after-commit effects:
//! the job's last saved state is what crash recovery resumes from.

use std::sync::Arc;

use super::Core;
use crate::engine::{self, Effect, Step};
use crate::job::{Job, JobStatus};
use crate::storage::{JobGuard, SavedJob, StorageError};

/// One job, locked for one unit of work. Reads and writes like a [`Job`]; `Core::commit`
/// saves it and carries out what had to wait for the save.
pub struct JobTx {
    guard: JobGuard,
    /// Effects kept for after the commit.
    after_commit: Vec<AfterCommit>,
    /// Tasks the commit queues (worker, task), for a job store that queues with the commit
    /// ([`crate::storage::JobStore::commits_queueing`]).
    queued: Vec<(String, crate::storage::QueuedTask)>,
    /// A new job whose first unit of work this is, while it is not stored yet (see
    /// [`Unstored`]).
    unstored: Option<Arc<Unstored>>,
    /// Counts this unit of work as in progress until it is dropped (graceful shutdown waits
    /// for none to be left: [`Core::settle`]).
    _work: Working,
}

/// A new job whose first unit of work runs before it is stored, on a job store that can insert
/// with the commit ([`crate::storage::JobStore::unsaved`]): a job whose first handlers run at
/// once (they dispatch a task, say) is then written once, with its tasks, instead of inserted
/// locked and written again. Whoever comes first stores it:
///
/// * the unit of work's commit, which inserts the job as its handlers left it;
/// * [`Core::ensure_stored`], before an in-lock effect names the job outside it (a parked task,
///   a cancellation): it stores the job as it was created, locked, and the unit of work takes
///   over that lock;
/// * the create request's budget ([`FIRST_STEP_BUDGET`]): handlers that take longer do not hold
///   the request back; the job is stored as created, locked, as in the other way.
///
/// The create request waits for the first of these (its `told`), so a job is stored before its
/// id is handed out, as always.
pub(super) struct Unstored(tokio::sync::Mutex<Pending>);

enum Pending {
    /// Not stored yet: the job as it was created, and the create request waiting for it.
    New { job: Box<Job>, told: tokio::sync::oneshot::Sender<Result<(), StorageError>> },
    /// Stored as created, locked: the guard whose lock the unit of work takes over (`None` once
    /// it has).
    Stored(Option<JobGuard>),
    /// Stored by the commit, or the store failed (the create request was told): nothing left.
    Gone,
}

/// How long a create request waits for the new job's first handlers before the job is stored
/// as created (see [`Unstored`]).
pub(super) const FIRST_STEP_BUDGET: std::time::Duration = std::time::Duration::from_millis(5);

impl Unstored {
    pub(super) fn new(job: Box<Job>, told: tokio::sync::oneshot::Sender<Result<(), StorageError>>) -> Arc<Self> {
        Arc::new(Unstored(tokio::sync::Mutex::new(Pending::New { job, told })))
    }
}

/// Units of work in progress (jobs locked), for the graceful shutdown.
#[derive(Debug, Default)]
pub(super) struct Work {
    n: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One unit of work in progress; dropping it ends it.
struct Working(Arc<Work>);

impl Working {
    fn new(work: &Arc<Work>) -> Working {
        work.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Working(work.clone())
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The effects that wait for the commit: every [`Effect`] but the in-lock ones (placing a task
/// now, cancelling tasks), so the commit cannot be handed one of those.
#[derive(Debug)]
enum AfterCommit {
    /// A dispatch with a delay (a task retry's backoff).
    DelayedDispatch {
        tasks: Vec<crate::job::TaskRecord>,
        delay: std::time::Duration,
    },
    StartChild(Box<Job>),
    CancelChild(String),
    RetryHandler {
        delay: std::time::Duration,
    },
    Terminal(JobStatus),
    /// The `worker_event:{type}` webhook of a handler's ghost event (to the job's `webhook_url`).
    GhostWebhook {
        event_id: String,
        event_type: String,
        payload: serde_json::Value,
    },
}

impl std::fmt::Debug for JobTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobTx").field("job_id", &self.guard.id).field("after_commit", &self.after_commit).finish()
    }
}

impl std::ops::Deref for JobTx {
    type Target = Job;
    fn deref(&self) -> &Job {
        &self.guard
    }
}

impl std::ops::DerefMut for JobTx {
    fn deref_mut(&mut self) -> &mut Job {
        &mut self.guard
    }
}

/// A job in one of these statuses has a handler to run.
fn runnable(status: JobStatus) -> bool {
    matches!(status, JobStatus::Pending | JobStatus::Running | JobStatus::AwaitingRetry)
}

/// Logs the failure of work that runs in the background (nobody waits for its answer).
pub(super) fn log_failure<E: std::fmt::Display>(what: &str, job_id: &str, result: Result<(), E>) {
    if let Err(e) = result {
        tracing::warn!(job_id, error = %e, "{what}");
    }
}

impl Core {
    /// Locks job `id` for a unit of work (`None`: no such job).
    pub(crate) async fn begin(&self, id: &str) -> Result<Option<JobTx>, StorageError> {
        Ok(self.jobs.lock(id).await?.map(|g| self.tx(g)))
    }

    /// A unit of work on a job locked by `guard`.
    pub(super) fn tx(&self, guard: JobGuard) -> JobTx {
        JobTx { guard, after_commit: Vec::new(), queued: Vec::new(), unstored: None, _work: Working::new(&self.work) }
    }

    /// The first unit of work of a new job not stored yet (see [`Unstored`]).
    pub(super) fn tx_unstored(&self, guard: JobGuard, unstored: Arc<Unstored>) -> JobTx {
        JobTx { unstored: Some(unstored), ..self.tx(guard) }
    }

    /// Stores a new job as it was created, locked, unless it is stored already (see
    /// [`Unstored`]); tells the create request.
    pub(super) async fn store_new(&self, unstored: &Unstored) {
        let mut pending = unstored.0.lock().await;
        let Pending::New { .. } = &*pending else { return };
        let Pending::New { job, told } = std::mem::replace(&mut *pending, Pending::Gone) else { return };
        let change = self.job_change(&job);
        match self.jobs.insert_locked(*job).await {
            Ok(guard) => {
                *pending = Pending::Stored(Some(guard));
                self.send_change(change);
                let _ = told.send(Ok(()));
            }
            Err(e) => {
                let _ = told.send(Err(e));
            }
        }
    }

    /// Makes sure the job of `tx` is stored before an in-lock effect names it outside the unit
    /// of work (see [`Unstored`]). An error: it could not be stored (the create request was
    /// told), and the unit of work will not commit.
    pub(super) async fn ensure_stored(&self, tx: &mut JobTx) -> Result<(), StorageError> {
        let Some(unstored) = tx.unstored.clone() else { return Ok(()) };
        self.store_new(&unstored).await;
        let mut pending = unstored.0.lock().await;
        match &mut *pending {
            Pending::Stored(guard) => {
                if let Some(stored) = guard.take() {
                    tx.guard.adopt(stored);
                }
                tx.unstored = None;
                Ok(())
            }
            _ => Err(StorageError::Unavailable(format!("job {} could not be stored", tx.id))),
        }
    }

    /// The first handlers of a new job not stored yet (see [`Unstored`]): once they take longer
    /// than [`FIRST_STEP_BUDGET`], the job is stored as created (in a task of its own, so that
    /// the insert finishes whatever happens here) while they go on.
    pub(super) async fn advance_unstored(self: &Arc<Self>, tx: &mut JobTx) {
        let unstored = tx.unstored.clone();
        let advance = self.advance(tx);
        tokio::pin!(advance);
        tokio::select! {
            biased;
            () = &mut advance => {}
            () = tokio::time::sleep(FIRST_STEP_BUDGET) => {
                if let Some(unstored) = unstored {
                    let core = self.clone();
                    tokio::spawn(async move { core.store_new(&unstored).await });
                }
                advance.await;
            }
        }
    }

    /// Waits until no unit of work is in progress (every handler run ended and its job lock was
    /// released), or until `deadline`; whether none is left. Graceful shutdown.
    pub async fn settle(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let idle = self.work.idle.notified();
            if self.work.n.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.work.n.load(std::sync::atomic::Ordering::SeqCst) == 0;
            }
        }
    }

    /// Carries out `step` on the locked job: records it (metrics, history), does the in-lock
    /// effects now and keeps the others for the commit; then, when the step asks and the job
    /// is runnable, runs its handlers (the engine's [`engine::advance`]) and carries out their
    /// step the same way.
    pub(crate) async fn apply(self: &Arc<Self>, tx: &mut JobTx, step: Step) {
        let mut step = step;
        loop {
            self.observe(tx, &step);
            if tx.webhook_url.is_some() || self.hooks().wants_events() {
                for e in &step.events {
                    if let crate::engine::EngineEvent::GhostEvent { event_id, event_type, payload } = e {
                        let (event_id, event_type, payload) = (event_id.clone(), event_type.clone(), payload.clone());
                        tx.after_commit.push(AfterCommit::GhostWebhook { event_id, event_type, payload });
                    }
                }
            }
            // Tasks no worker will take as they are (params breaking every input contract).
            let mut refused = Vec::new();
            for effect in step.effects {
                match effect {
                    Effect::Dispatch { tasks, delay } if delay.is_zero() => {
                        for t in tasks {
                            if let Some(error) = self.place(tx, &t.task_id).await {
                                refused.push((t.task_id, error));
                            }
                        }
                    }
                    Effect::Dispatch { tasks, delay } => {
                        tx.after_commit.push(AfterCommit::DelayedDispatch { tasks, delay })
                    }
                    Effect::CancelTasks(tasks) => {
                        if self.ensure_stored(tx).await.is_err() {
                            continue;
                        }
                        let list: Vec<_> = tasks.into_iter().map(|t| (t.task_id, t.worker_id, tx.id.clone())).collect();
                        self.dispatcher.cancel(&list).await;
                    }
                    Effect::StartChild(child) => tx.after_commit.push(AfterCommit::StartChild(child)),
                    Effect::CancelChild(id) => tx.after_commit.push(AfterCommit::CancelChild(id)),
                    Effect::RetryHandler { delay } => tx.after_commit.push(AfterCommit::RetryHandler { delay }),
                    Effect::Terminal(status) => tx.after_commit.push(AfterCommit::Terminal(status)),
                }
            }
            if !refused.is_empty() {
                // Each fails like a worker's failure result would: the next step carries it out.
                let mut failed = Step { advance: step.advance, ..Step::default() };
                for (task_id, error) in refused {
                    if tx.tasks_in_flight().any(|r| r.task_id == task_id) {
                        failed.extend(engine::fail_task(&self.env, tx, &task_id, error));
                    }
                }
                step = failed;
                continue;
            }
            if !step.advance || !runnable(tx.status) {
                return;
            }
            step = self.run_handlers(tx).await;
        }
    }

    /// Runs the job's handlers if it is runnable (the "maybe advance" of a unit of work).
    pub(crate) async fn advance(self: &Arc<Self>, tx: &mut JobTx) {
        self.apply(tx, Step { advance: true, ..Step::default() }).await;
    }

    /// One [`engine::advance`] in a "handler <state>" span, child of the job's last span (the
    /// tasks it dispatches are its children).
    async fn run_handlers(&self, tx: &mut JobTx) -> Step {
        let (span, tp) = crate::trace::span_with_parent(
            tracing::info_span!("handler", otel.name = %format!("handler {}", tx.current_state), job_id = %tx.id),
            crate::trace::TraceParent::from_map(&tx.tracing_context),
        );
        if let Some(tp) = tp {
            tx.tracing_context = tp.to_map();
        }
        let job: &mut Job = tx;
        tracing::Instrument::instrument(engine::advance(&self.env, job), span).await
    }

    /// Saves the job and releases its lock, then carries out the after-commit effects. A failed
    /// save drops them (see the module docs).
    pub(crate) async fn commit(self: &Arc<Self>, tx: JobTx) -> Result<(), StorageError> {
        let JobTx { mut guard, after_commit, queued, unstored, _work } = tx;
        let id = guard.id.clone();
        // A new job not stored yet (see `Unstored`): this commit inserts it, or takes over the
        // lock it was stored with meanwhile. Held until the commit is done, so that the create
        // request's budget does not store it beside this commit.
        let mut pending = match &unstored {
            Some(u) => Some(u.0.lock().await),
            None => None,
        };
        let creating = match pending.as_deref_mut().map(|p| std::mem::replace(p, Pending::Gone)) {
            None => None,
            Some(Pending::New { job, told }) => Some((told, self.job_change(&job))),
            Some(Pending::Stored(stored)) => {
                if let Some(stored) = stored {
                    guard.adopt(stored);
                }
                None
            }
            Some(Pending::Gone) => {
                return Err(StorageError::Unavailable(format!("job {id} could not be stored; its first step is lost")))
            }
        };
        let change = self.job_change(&guard);
        let stored = self.commit_guard(&id, guard, queued, &after_commit).await;
        drop(pending);
        if let Some((told, created)) = creating {
            if stored.is_ok() {
                self.send_change(created);
            }
            let _ = told.send(stored.as_ref().map(|_| ()).map_err(Clone::clone));
        }
        let ended = stored?;
        self.send_change(change);
        for effect in after_commit {
            self.after_commit(&id, ended.as_deref(), effect);
        }
        Ok(())
    }

    /// The store's part of [`Core::commit`]: saves the job, queues its tasks and places again
    /// those whose worker is gone. The job as saved when an after-commit effect needs it.
    async fn commit_guard(
        self: &Arc<Self>,
        id: &str,
        guard: JobGuard,
        queued: Vec<(String, crate::storage::QueuedTask)>,
        after_commit: &[AfterCommit],
    ) -> Result<Option<SavedJob>, StorageError> {
        // The webhooks and the parent's resume need the job as it was saved.
        let keep =
            after_commit.iter().any(|e| matches!(e, AfterCommit::Terminal(_) | AfterCommit::GhostWebhook { .. }));
        let ended = if queued.is_empty() {
            match keep {
                true => Some(self.jobs.commit_keeping(guard).await?),
                false => self.jobs.commit(guard).await.map(|()| None)?,
            }
        } else {
            let ended = keep.then(|| SavedJob::copy(&guard));
            let placed = self.jobs.commit_queueing(guard, queued.clone()).await?;
            let mut refused = Vec::new();
            // An answer cut short (a commit sent again after a lost reply) queued them all.
            for ((worker, task), ok) in queued.into_iter().zip(placed.into_iter().chain(std::iter::repeat(true))) {
                match ok {
                    true => self.dispatcher.queued_on(&worker),
                    false => {
                        tracing::info!(job_id = %id, task_id = %task.task_id, worker_id = %worker, "the chosen worker is gone; placing the task again");
                        refused.push((id.to_owned(), task.task_id));
                    }
                }
            }
            self.requeue(refused);
            ended
        };
        Ok(ended)
    }

    /// One after-commit effect. Never waits: work on this or other jobs is spawned (it takes
    /// their locks in turn).
    fn after_commit(self: &Arc<Self>, job_id: &str, ended: Option<&Job>, effect: AfterCommit) {
        match effect {
            AfterCommit::DelayedDispatch { tasks, delay } => {
                let (core, job_id) = (self.clone(), job_id.to_owned());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let placed = async {
                        let Some(mut tx) = core.begin(&job_id).await? else { return Ok(()) };
                        for t in &tasks {
                            if tx.tasks_in_flight().any(|r| r.task_id == t.task_id && r.worker_id.is_none()) {
                                core.place_or_fail(&mut tx, &t.task_id).await;
                            }
                        }
                        core.commit(tx).await
                    };
                    log_failure("could not place a delayed task", &job_id, placed.await);
                });
            }
            AfterCommit::StartChild(child) => {
                let core = self.clone();
                tokio::spawn(async move {
                    let id = child.id.clone();
                    let change = core.job_change(&child);
                    match core.jobs.insert(*child).await {
                        Ok(()) => {
                            core.send_change(change);
                            core.drive(id)
                        }
                        Err(e) => tracing::error!(job_id = %id, error = %e, "could not store child job"),
                    }
                });
            }
            AfterCommit::CancelChild(child_id) => {
                let core = self.clone();
                tokio::spawn(async move {
                    let _ = core.cancel_job(&child_id).await;
                });
            }
            AfterCommit::RetryHandler { delay } => {
                let (core, id) = (self.clone(), job_id.to_owned());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    core.drive(id);
                });
            }
            AfterCommit::GhostWebhook { event_id, event_type, payload } => {
                let Some(job) = ended else { return };
                let ghost = crate::history::GHOST;
                let event = super::WorkerEvent {
                    event_id,
                    event_type,
                    payload,
                    job_id: Some(job.id.clone()),
                    origin_worker_id: ghost.into(),
                    ..Default::default()
                };
                if let Some(url) = job.webhook_url.clone() {
                    self.webhooks.worker_event(url, job, &event.event_type, &event.payload, event.route(ghost));
                }
                self.hooks.worker_event(&event.info(ghost));
            }
            AfterCommit::Terminal(status) => {
                let Some(job) = ended else { return };
                tracing::info!(job_id = %job.id, blueprint = %job.blueprint, %status, "job ended");
                if let Some(url) = job.webhook_url.clone() {
                    self.webhooks.job_ended(url, job);
                }
                self.cleanup_job_files(job);
                self.hooks.job_finished(job);
                if let Some(parent) = job.parent_job_id.clone() {
                    let (core, child) = (self.clone(), job.clone());
                    tokio::spawn(async move { core.resume_parent(&parent, &child).await });
                }
            }
        }
    }
}

impl JobTx {
    /// Queues `task` on `worker` with the commit (see [`crate::storage::JobStore::commit_queueing`]).
    pub(super) fn queue_with_commit(&mut self, worker: String, task: crate::storage::QueuedTask) {
        self.queued.push((worker, task));
    }

    /// The lock of a unit of work that applied no engine step (nothing waits for its commit).
    pub(super) fn into_guard(self) -> JobGuard {
        debug_assert!(self.unstored.is_none(), "a new job's first unit of work commits through Core::commit");
        debug_assert!(
            self.after_commit.is_empty() && self.queued.is_empty(),
            "a unit of work with effects commits through Core::commit"
        );
        let JobTx { guard, .. } = self;
        guard
    }
}
