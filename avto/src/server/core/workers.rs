//! Worker sessions: registration, heartbeats (and the worker history rows they write),
//! long-polls, and placing a job's tasks on worker queues (or parking them until a worker can
//! take them).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::transact::{log_failure, JobTx};
use super::{Core, CoreError, TaskContext};
use crate::context::TaskError;
use crate::history::workers::{WorkerHistoryRecord, WORKER_REGISTERED, WORKER_STATUS_UPDATE};
use crate::job::now_ms;
use crate::protocol::{worker_status, INVALID_INPUT_ERROR};
use crate::server::dispatch::NoWorker;
use crate::storage::{
    BusMessage, PoppedJob, QueuedTask, StorageError, Unassigned, WorkerCommand, WorkerInfo, WorkerLoad,
};

/// How often a long-poll looks at its queue without a wake-up when instances share a bus.
const BUS_RECHECK: Duration = Duration::from_secs(1);

/// What a poll that locked the jobs of its tasks does with each task (see `Core::take_tasks`).
enum Pickup<C> {
    /// Recorded in its job, whose commit is in the batch; the task's context and the change.
    Recorded(TaskContext, C),
    /// Its job had another holder: locked and claimed on its own.
    Busy,
    /// Its job is gone or no longer wants it.
    Gone,
}

impl Core {
    /// Puts one in-flight task of the job on a worker queue, or parks it until a worker can
    /// take it. Under the job's lock: the job's record names the worker.
    ///
    /// `Some(error)`: no worker will ever take the task as it is (its params break the
    /// `input_schema` of every live worker offering the skill); the caller fails it with this
    /// `INVALID_INPUT_ERROR` ([`Core::place_or_fail`]).
    #[must_use = "a task refused by every worker's input contract must be failed"]
    pub(super) async fn place(&self, tx: &mut JobTx, task_id: &str) -> Option<TaskError> {
        let job_id = tx.id.clone();
        let default_dispatch_timeout = self.config().default_dispatch_timeout.as_secs_f64();
        let task = tx.task_mut(task_id)?;
        let deadline = task.spec.result_timeout_seconds.map(|s| crate::job::after_secs(task.dispatched_at_ms, s));
        // Every wait is bounded: without a dispatch timeout of its own (or its job's), a task
        // waits at most DEFAULT_DISPATCH_TIMEOUT_SECONDS for a worker to take it. The stores
        // count it from when they queue or park it (a few ms after `now`); the job status shows it.
        // The queued or parked task carries that timeout; the job's record keeps its own spec.
        let dispatch_timeout = Some(task.spec.dispatch_timeout_seconds.unwrap_or(default_dispatch_timeout));
        task.dispatch_deadline_ms = crate::storage::dispatch_deadline_after(dispatch_timeout, now_ms(), deadline);
        // The task's span ("dispatch <type>", child of the job's last one); its context goes into the payload.
        let (_span, tp) = {
            let spec = &tx.task_in_flight(task_id)?.spec;
            crate::trace::span_with_parent(
                tracing::info_span!("dispatch", otel.name = %format!("dispatch {}", spec.task_type), job_id = %job_id, task_id),
                crate::trace::TraceParent::from_map(&tx.tracing_context),
            )
        };
        if let Some(tp) = tp {
            tx.tracing_context = tp.to_map();
        }
        // A job store that queues with the commit gets the task then (one step instead of two,
        // and nothing is queued unless the job naming the worker is saved).
        let defer = self.jobs.commits_queueing();
        let spec = &tx.task_in_flight(task_id)?.spec;
        match self.dispatcher.assign_with(&job_id, task_id, spec, dispatch_timeout, deadline, defer).await {
            Ok((worker, deferred)) => {
                if let Some(task) = tx.task_mut(task_id) {
                    task.worker_id = Some(worker.clone());
                }
                tx.waiting_reason = None;
                if let Some(task) = deferred {
                    tx.queue_with_commit(worker, task);
                }
            }
            Err(no @ NoWorker::Contract(_)) => {
                tracing::info!(job_id, task_id, reason = %no.reason(&spec.task_type), "task refused before dispatch");
                return Some(TaskError::new(INVALID_INPUT_ERROR, no.reason(&spec.task_type)));
            }
            Err(no) => {
                let reason = no.reason(&spec.task_type);
                let mut spec = spec.clone();
                // The parked task names the job: stored first (a new job's first step).
                if self.ensure_stored(tx).await.is_err() {
                    return None;
                }
                spec.dispatch_timeout_seconds = dispatch_timeout;
                let parked = Unassigned {
                    job_id,
                    task_id: task_id.to_owned(),
                    spec,
                    deadline_ms: deadline,
                    parked_ms: now_ms(),
                };
                if let Err(e) = self.dispatcher.park(parked).await {
                    tracing::error!(task_id, error = %e, "could not park task; the watcher will retry it");
                }
                tx.waiting_reason = Some(reason);
            }
        }
        None
    }

    /// [`Core::place`], outside [`Core::apply`]: a task no worker will take is failed at once
    /// (its step applied: the dispatch's `failure` transition, or the job ends `failed`).
    pub(super) async fn place_or_fail(self: &Arc<Self>, tx: &mut JobTx, task_id: &str) {
        if let Some(error) = self.place(tx, task_id).await {
            let step = crate::engine::fail_task(self.env(), tx, task_id, error);
            self.apply(tx, step).await;
        }
    }

    /// Gives parked tasks to workers that can now take them (in the background).
    pub fn place_parked(self: &Arc<Self>) {
        let core = self.clone();
        tokio::spawn(async move { core.place_parked_now().await });
    }

    /// Gives parked tasks to workers that can now take them, the highest priority first (FIFO
    /// within a priority); returns when they are placed.
    async fn place_parked_now(self: &Arc<Self>) {
        for u in self.dispatcher.take_assignable().await {
            let placed = async {
                let Some(mut tx) = self.begin(&u.job_id).await? else { return Ok(()) };
                if !tx.tasks_in_flight().any(|r| r.task_id == u.task_id && r.worker_id.is_none()) {
                    return Ok(());
                }
                self.place_or_fail(&mut tx, &u.task_id).await;
                self.commit(tx).await
            };
            log_failure("could not place a parked task", &u.job_id, placed.await);
        }
    }

    /// Puts tasks of a departed worker back through dispatch (the lease moves to the new worker,
    /// so a late result from the old one is ignored).
    pub(super) fn requeue(self: &Arc<Self>, tasks: Vec<(String, String)>) {
        if tasks.is_empty() {
            return;
        }
        let core = self.clone();
        tokio::spawn(async move {
            for (job_id, task_id) in tasks {
                let placed = async {
                    let Some(mut tx) = core.begin(&job_id).await? else { return Ok(()) };
                    // Crash recovery may have placed it already (both run under the job lock).
                    if core.dispatcher.store().task_known(&task_id).await.unwrap_or(false) {
                        return Ok(());
                    }
                    let Some(r) = tx.task_mut(&task_id) else { return Ok(()) };
                    r.worker_id = None;
                    r.picked_up_at_ms = None;
                    core.place_or_fail(&mut tx, &task_id).await;
                    core.commit(tx).await
                };
                log_failure("could not requeue a task", &job_id, placed.await);
            }
        });
    }

    /// Avtomatika's split-brain check (spec §3.4, §9.1): a registration's
    /// `capabilities.s3_config_hash` (first 16 hex characters of sha256 of
    /// `endpoint|access_key|bucket`) against this orchestrator's S3 configuration. A difference
    /// does not refuse the worker (it may reach the same store by another address); what this
    /// returns is logged and told in the answer's `warning`, which both SDKs log. `None` when the
    /// hashes agree or either side has no S3.
    pub fn s3_mismatch(&self, capabilities: Option<&crate::protocol::wire::WorkerCapabilities>) -> Option<String> {
        let theirs = capabilities?.s3_config_hash.as_deref().filter(|h| !h.is_empty())?;
        let ours = self.s3_config_hash()?;
        // The worker's value, bounded (a real one is 16 characters).
        let theirs: String = theirs.chars().take(64).collect();
        (theirs != ours).then(|| {
            format!(
                "S3 configuration mismatch: the worker's s3_config_hash {theirs} is not the orchestrator's {ours} \
                 (sha256 of S3_ENDPOINT_URL|S3_ACCESS_KEY|S3_DEFAULT_BUCKET): files one side writes may not be \
                 where the other reads them"
            )
        })
    }

    /// This orchestrator's `s3_config_hash` (`None` without S3).
    fn s3_config_hash(&self) -> Option<String> {
        #[cfg(feature = "s3")]
        return self.cfg.s3.as_ref().map(|s3| s3.config_hash());
        #[cfg(not(feature = "s3"))]
        return None;
    }

    /// Registers (or re-registers) a worker and hands it parked tasks it can take. With history
    /// enabled, writes its `registered` row.
    pub async fn register_worker(self: &Arc<Self>, info: WorkerInfo) -> Result<(), CoreError> {
        let (worker_id, status) = (info.worker_id.clone(), info.status.clone());
        self.dispatcher.register(info).await?;
        self.worker_changed(&worker_id, &status, false);
        self.worker_seen(&worker_id, false);
        self.dispatcher.contracts().forget(&worker_id);
        self.record_worker(&worker_id, WORKER_REGISTERED).await;
        self.place_parked();
        Ok(())
    }

    /// Writes a worker history row with the worker's record as the store has it now (the
    /// registration merged with its heartbeats, its status and reputation; never its security block).
    async fn record_worker(&self, worker_id: &str, event_type: &str) {
        let Some(h) = self.history() else { return };
        let Some(info) = self.dispatcher.worker(worker_id).await else { return };
        if event_type == WORKER_REGISTERED {
            self.status_log.written(worker_id, &info.status);
        }
        let mut record = info.record.clone();
        record.remove("security");
        record.insert("status".into(), json!(info.status));
        record.insert("reputation".into(), json!(info.reputation));
        h.record_worker(WorkerHistoryRecord::new(worker_id, event_type, &Value::Object(record)));
    }

    /// A heartbeat. `Ok(None)` = unknown worker (it must re-register).
    pub async fn heartbeat(
        self: &Arc<Self>,
        worker_id: &str,
        body: Option<&Value>,
    ) -> Result<Option<Vec<String>>, CoreError> {
        let status = body.and_then(|b| b["status"].as_str());
        let offline = status == Some(worker_status::OFFLINE);
        let Some(cancel) = self.dispatcher.heartbeat(worker_id, body).await? else { return Ok(None) };
        self.worker_seen(worker_id, offline);
        if let Some(status) = status {
            self.worker_changed(worker_id, status, offline);
        }
        if body.is_some_and(|b| b.get("supported_skills").is_some()) {
            self.dispatcher.contracts().forget(worker_id);
        }
        // A `status_update` row only for a changed status, at most one per worker per
        // WORKER_HISTORY_STATUS_INTERVAL_SECONDS (heartbeats come every few seconds).
        if let Some(status) = status.filter(|_| self.history().is_some()) {
            if self.status_log.should_write(worker_id, status) {
                self.record_worker(worker_id, WORKER_STATUS_UPDATE).await;
            }
        }
        // A draining worker finishes what it runs; what waits on its queue goes to other workers.
        if status == Some(worker_status::DRAINING) {
            let queued = self.dispatcher.take_queue(worker_id).await;
            self.requeue(queued.into_iter().map(|t| (t.job_id, t.task_id)).collect());
        }
        if offline {
            self.status_log.forget(worker_id);
            let (queued, orphans) = self.dispatcher.remove(worker_id).await;
            self.requeue(queued.into_iter().map(|t| (t.job_id, t.task_id)).collect());
            self.requeue(orphans.into_iter().map(|o| (o.job_id, o.task_id)).collect());
        } else {
            self.place_parked();
        }
        Ok(Some(cancel))
    }

    /// An operator drains a worker (the dashboard): it takes no new tasks from now on, whatever
    /// its heartbeats report, until it registers again; what waits on its queue goes to other
    /// workers; it finishes what it runs. The worker is told over its WebSocket when it has one
    /// (command `drain`, `params.reason`; the SDKs log a command they do not handle). The mark
    /// is kept in the worker's record (shared by the instances) and renews its liveness once.
    /// False for a worker that is not live.
    pub async fn drain_worker(self: &Arc<Self>, worker_id: &str, reason: &str) -> Result<bool, CoreError> {
        if !self.dispatcher.is_live(worker_id).await {
            return Ok(false);
        }
        let at_ms = now_ms();
        let mut mark = serde_json::Map::new();
        mark.insert("status".into(), json!(worker_status::DRAINING));
        mark.insert(crate::storage::OPERATOR_DRAIN.into(), json!({"reason": reason, "at_ms": at_ms}));
        let mark = Value::Object(mark);
        if self.dispatcher.heartbeat(worker_id, Some(&mark)).await?.is_none() {
            return Ok(false);
        }
        tracing::info!(worker_id, reason, "worker drained by the operator");
        let queued = self.dispatcher.take_queue(worker_id).await;
        self.requeue(queued.into_iter().map(|t| (t.job_id, t.task_id)).collect());
        let mut params = serde_json::Map::new();
        params.insert("reason".into(), Value::String(reason.to_owned()));
        let command = WorkerCommand {
            command: "drain".into(),
            task_id: None,
            job_id: None,
            params: Some(params),
            metadata: None,
        };
        self.dispatcher.command(worker_id, command).await;
        self.worker_changed(worker_id, worker_status::DRAINING, false);
        Ok(true)
    }

    /// Long-poll: up to `max` tasks for `worker_id`, waiting up to `wait` for the first.
    ///
    /// When the worker's own queue is empty it may steal from the longest backlog of another
    /// worker with the same skills (`WORK_STEALING_ENABLED`; not a `draining` worker); the lease
    /// moves to the thief. A worker that reported `busy` or `full` is `idle` again when it polls
    /// (both SDKs poll only with a free slot), and parked tasks are placed before it takes one.
    /// After the first task, up to `max - 1` more already queued for the worker are taken (no
    /// waiting and no stealing for those); a storage error after the first task ends the batch
    /// with what was claimed (a task popped but not claimed is recovered by its timeout).
    pub async fn next_tasks(
        self: &Arc<Self>,
        worker_id: &str,
        wait: Duration,
        max: usize,
    ) -> Result<Vec<(QueuedTask, TaskContext)>, CoreError> {
        let notify = self.dispatcher.notifier(worker_id);
        let deadline = tokio::time::Instant::now() + wait;
        let steal = self.cfg.work_stealing_enabled;
        // Asking for work, the worker has a free slot (both SDKs poll only then): if it last
        // reported `busy` or `full` it is `idle` again, and the tasks that waited for a worker
        // are placed before it takes one, so it takes the most urgent.
        if self.dispatcher.poll_resumes(worker_id).await {
            self.place_parked_now().await;
        }
        loop {
            let notified = notify.notified();
            let (out, popped) = self.take_tasks(worker_id, steal, max.max(1)).await?;
            if !out.is_empty() {
                return Ok(out);
            }
            if popped {
                continue; // every job taken had moved on: look again
            }
            let mut stop = self.shutdown.subscribe();
            if *stop.borrow_and_update() {
                return Ok(Vec::new());
            }
            // With several instances a wake-up travels over the bus, which can miss one while it
            // reconnects: look at the queue again every second.
            let until = match self.dispatcher.has_bus() {
                true => deadline.min(tokio::time::Instant::now() + BUS_RECHECK),
                false => deadline,
            };
            tokio::select! {
                woken = tokio::time::timeout_at(until, notified) => {
                    if woken.is_err() && until >= deadline {
                        return Ok(Vec::new());
                    }
                }
                _ = stop.changed() => return Ok(Vec::new()),
            }
        }
    }

    /// One look at the queues for [`Core::next_tasks`]: the tasks claimed, and whether any task
    /// was taken at all (a task whose job moved on is dropped). A job store that shares its
    /// backend with the worker store takes the tasks and locks their jobs in one step.
    async fn take_tasks(
        self: &Arc<Self>,
        worker_id: &str,
        steal: bool,
        max: usize,
    ) -> Result<(Vec<(QueuedTask, TaskContext)>, bool), CoreError> {
        let mut out = Vec::new();
        let Some(popping) = self.jobs.pop_locked(worker_id, now_ms(), max) else {
            let mut popped = false;
            while out.len() < max {
                let next = self.dispatcher.try_next(worker_id, steal && !popped).await;
                let t = match next {
                    Ok(Some(t)) => t,
                    Ok(None) => break,
                    Err(e) if !popped => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!(worker_id, error = %e, "batch poll ended early");
                        break;
                    }
                };
                popped = true;
                let claimed = self.claim_task(worker_id, &t).await;
                if !self.add_claimed(worker_id, t, claimed, &mut out).await? {
                    break;
                }
                if out.is_empty() {
                    popped = false; // the first task's job moved on: the next may be stolen again
                }
            }
            return Ok((out, popped));
        };
        let taken = popping.await?;
        let popped = !taken.is_empty();
        // The pick-ups in the jobs the poll locked are recorded, then committed together (one
        // step on a store that can); a job another holder had is locked and claimed on its own.
        let (mut slots, mut guards) = (Vec::with_capacity(taken.len()), Vec::new());
        for (t, job) in taken {
            let slot = match job {
                PoppedJob::Locked(guard) => {
                    let mut tx = self.tx(guard);
                    match self.record_pickup(worker_id, &t, &mut tx) {
                        Some(ctx) => {
                            let change = self.job_change(&tx);
                            guards.push(tx.into_guard());
                            Pickup::Recorded(ctx, change)
                        }
                        None => Pickup::Gone,
                    }
                }
                PoppedJob::Busy => Pickup::Busy,
                _ => Pickup::Gone,
            };
            slots.push((t, slot));
        }
        let n = guards.len();
        let mut committed = match n {
            0 => Vec::new(),
            _ => self.jobs.commit_all(guards).await.unwrap_or_else(|e| vec![Err(e); n]),
        }
        .into_iter();
        for (t, slot) in slots {
            let claimed = match slot {
                Pickup::Recorded(ctx, change) => match committed.next() {
                    Some(Ok(())) => {
                        self.send_change(change);
                        Ok(Some(ctx))
                    }
                    Some(Err(e)) => Err(e.into()),
                    None => Err(StorageError::Unavailable("a commit of the batch went unanswered".into()).into()),
                },
                Pickup::Busy => self.claim_task(worker_id, &t).await,
                Pickup::Gone => Ok(None),
            };
            if !self.add_claimed(worker_id, t, claimed, &mut out).await? {
                break;
            }
        }
        if !popped && steal {
            if let Some(t) = self.dispatcher.try_steal(worker_id, now_ms()).await? {
                match self.claim_task(worker_id, &t).await? {
                    Some(ctx) => out.push((t, ctx)),
                    None => self.dispatcher.finished(worker_id, &t.task_id).await,
                }
                return Ok((out, true));
            }
        }
        Ok((out, popped))
    }

    /// Adds a task a batch poll claimed to the batch (or gives back one whose job moved on);
    /// `Ok(false)`: a claim failed after earlier tasks were taken, so the batch ends with them
    /// (a failure on the first task is the poll's error).
    async fn add_claimed(
        &self,
        worker_id: &str,
        t: QueuedTask,
        claimed: Result<Option<TaskContext>, CoreError>,
        out: &mut Vec<(QueuedTask, TaskContext)>,
    ) -> Result<bool, CoreError> {
        match claimed {
            Ok(Some(ctx)) => out.push((t, ctx)),
            Ok(None) => self.dispatcher.finished(worker_id, &t.task_id).await,
            Err(e) if out.is_empty() => return Err(e),
            Err(e) => {
                tracing::warn!(worker_id, task_id = %t.task_id, error = %e, "batch poll ended early");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Locks the job of a popped task, checks the task is still wanted and records its pick-up
    /// ([`Core::record_pickup`]). A unit of work with no engine step: the pick-up changes only the
    /// task record.
    async fn claim_task(&self, worker_id: &str, t: &QueuedTask) -> Result<Option<TaskContext>, CoreError> {
        let Some(mut tx) = self.begin(&t.job_id).await? else { return Ok(None) };
        let Some(ctx) = self.record_pickup(worker_id, t, &mut tx) else { return Ok(None) };
        // No after-commit effects: the job's own save is all there is.
        let change = self.job_change(&tx);
        self.jobs.commit(tx.into_guard()).await?;
        self.send_change(change);
        Ok(Some(ctx))
    }

    /// Records the pick-up of `t` (and a lease moved by stealing) in its locked job: the task's
    /// context, or `None` when the job no longer wants the task.
    fn record_pickup(&self, worker_id: &str, t: &QueuedTask, tx: &mut JobTx) -> Option<TaskContext> {
        let record = tx.task_mut(&t.task_id)?;
        record.worker_id = Some(worker_id.to_owned());
        record.picked_up_at_ms = Some(now_ms());
        // Metadata only of files the task is given: the keys of its params (as in Avtomatika).
        let params_metadata = match &t.spec.params {
            Value::Object(params) if !tx.data_metadata.is_empty() => tx
                .data_metadata
                .iter()
                .filter(|(k, _)| params.contains_key(k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            _ => Default::default(),
        };
        let ctx = TaskContext {
            security: tx.security.clone(),
            metadata: tx.metadata.clone(),
            tracing_context: tx.tracing_context.clone(),
            step: tx.transition_count,
            params_metadata,
        };
        self.observe_pickup(tx, &t.task_id);
        Some(ctx)
    }

    /// Checks the schemas of `supported_skills` (a registration's or a heartbeat's): each must be
    /// a JSON object or boolean of at most 64 KiB that compiles. `Err` names the skill and field.
    pub fn admit_skill_contracts(&self, skills: Option<&Value>) -> Result<(), String> {
        self.dispatcher.contracts().admit(skills)
    }

    /// The registration of a worker, if it is known.
    pub async fn worker(&self, worker_id: &str) -> Option<WorkerInfo> {
        self.dispatcher.worker(worker_id).await
    }

    /// True when the worker registered and its heartbeats have not lapsed.
    pub async fn worker_is_live(&self, worker_id: &str) -> bool {
        self.dispatcher.is_live(worker_id).await
    }

    /// Tasks waiting on worker queues.
    pub async fn queue_depth(&self) -> usize {
        self.dispatcher.queue_depth().await
    }

    /// Workers whose heartbeats have not lapsed.
    pub async fn live_worker_count(&self) -> usize {
        self.dispatcher.live_workers().await.len()
    }

    /// The live workers with their queued and running task counts.
    pub async fn live_workers(&self) -> Vec<WorkerLoad> {
        self.dispatcher.live_workers().await
    }

    /// The skill catalog (`GET …/workers/catalog`): for each skill a live worker offers, its
    /// contract (the skill as the worker registered it: type, version, description, input,
    /// output and events schemas, output statuses; plus `base_price`, the worker's cost for it),
    /// how many workers offer it, their types and their average reputation. Built from the live
    /// workers at most every 10 s (cached). When workers disagree on a skill's contract, the one
    /// of the highest version (then the first worker by id) is shown.
    pub async fn worker_catalog(&self) -> Arc<Value> {
        const FRESH: std::time::Duration = std::time::Duration::from_secs(10);
        if let Some((at, cat)) = self.catalog.lock().as_ref() {
            if at.elapsed() < FRESH {
                return cat.clone();
            }
        }
        let mut workers = self.dispatcher.live_workers().await;
        workers.sort_by(|a, b| a.info.worker_id.cmp(&b.info.worker_id));
        let cat = Arc::new(catalog_of(&workers));
        *self.catalog.lock() = Some((std::time::Instant::now(), cat.clone()));
        cat
    }

    /// Routes commands for `worker_id` to its WebSocket (`tx`) on this instance.
    pub fn attach_ws(&self, worker_id: &str, tx: tokio::sync::mpsc::UnboundedSender<WorkerCommand>) {
        self.dispatcher.attach_ws(worker_id, tx);
    }

    /// Stops routing to the WebSocket `tx` of `worker_id` (when it is still the attached one).
    pub fn detach_ws(&self, worker_id: &str, tx: &tokio::sync::mpsc::UnboundedSender<WorkerCommand>) {
        self.dispatcher.detach_ws(worker_id, tx);
    }

    /// Reads `WORKERS_CONFIG_PATH` again on this instance and tells every other instance on the
    /// bus to do the same, so a changed worker token is in force everywhere. Returns how many
    /// entries the file has (`None`: no workers.toml configured).
    pub async fn reload_worker_tokens(&self) -> Result<Option<usize>, crate::server::ConfigError> {
        let loaded = self.auth.reload_worker_tokens()?;
        if loaded.is_some() {
            if let Err(e) = self.dispatcher.broadcast(BusMessage::ReloadWorkerTokens).await {
                tracing::warn!(error = %e, "worker tokens reloaded here; other instances were not told");
            }
        }
        Ok(loaded)
    }

    /// A message from the instances' bus.
    pub fn on_bus(&self, msg: BusMessage) {
        match msg {
            BusMessage::ReloadWorkerTokens => {
                if let Err(e) = self.auth.reload_worker_tokens() {
                    tracing::error!(error = %e, "another instance reloaded the worker tokens; this one could not");
                }
            }
            #[cfg(feature = "dashboard")]
            BusMessage::DashboardChanges { from, changes, lost } => self.changes_from_bus(&from, changes, lost),
            other => self.dispatcher.on_bus(other),
        }
    }
}

/// The catalog of [`Core::worker_catalog`] from `workers` (sorted by id).
fn catalog_of(workers: &[WorkerLoad]) -> Value {
    struct Entry {
        contract: serde_json::Map<String, Value>,
        providers: usize,
        types: std::collections::BTreeSet<String>,
        reputation: f64,
    }
    let mut skills: std::collections::BTreeMap<String, Entry> = Default::default();
    for w in workers {
        let listed = w.info.record.get("supported_skills").and_then(Value::as_array).cloned().unwrap_or_default();
        for skill in listed {
            let mut contract = match skill {
                Value::Object(m) => m,
                Value::String(name) => serde_json::Map::from_iter([("name".to_owned(), Value::String(name))]),
                _ => continue,
            };
            let Some(name) = contract.get("name").and_then(Value::as_str).map(str::to_owned) else { continue };
            let kind = contract.get("type").and_then(Value::as_str).unwrap_or(&name).to_owned();
            let price = w.info.cost_per_skill.get(&kind).or_else(|| w.info.cost_per_skill.get(&name));
            contract.insert("base_price".into(), price.map_or(Value::Null, |p| serde_json::json!(p)));
            let entry = skills.entry(name).or_insert_with(|| Entry {
                contract: contract.clone(),
                providers: 0,
                types: Default::default(),
                reputation: 0.0,
            });
            let version =
                |c: &serde_json::Map<String, Value>| c.get("version").and_then(Value::as_str).map(str::to_owned);
            if version(&contract) > version(&entry.contract) {
                entry.contract = contract;
            }
            entry.providers += 1;
            entry.types.insert(w.info.worker_type.clone());
            entry.reputation += w.info.reputation;
        }
    }
    Value::Object(
        skills
            .into_iter()
            .map(|(name, e)| {
                let average = ((e.reputation / e.providers as f64) * 10_000.0).round() / 10_000.0;
                let v = serde_json::json!({
                    "contract": e.contract,
                    "providers_count": e.providers,
                    "worker_types": e.types,
                    "average_reputation": average,
                });
                (name, v)
            })
            .collect(),
    )
}
