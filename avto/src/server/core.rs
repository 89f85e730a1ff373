//! The orchestrator core: jobs, the engine, the dispatcher and their effects, without HTTP.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;

use super::config::{ClientEntry, Config};
use super::dispatch::{Dispatcher, Overdue, QueuedTask, Unassigned, WorkerInfo};
use super::store::{JobGuard, JobStore, NonceStore, QuotaStore, RateLimitStore, Stores, StsStore};
use super::webhooks::Webhooks;
use crate::blueprint::Blueprint;
use crate::context::{ErrorClass, TaskError};
use crate::engine::{self, Effect, EngineEnv, Outcome, ResultDisposition, TaskResult};
use crate::job::{now_ms, Job, JobStatus};
use crate::storage::StorageError;

/// A create-job request after validation.
#[derive(Debug, Clone, Default)]
pub struct NewJob {
    pub initial_data: Value,
    pub webhook_url: Option<String>,
    pub dispatch_timeout: Option<f64>,
    pub result_timeout: Option<f64>,
    pub security: Option<Value>,
    pub metadata: Option<Value>,
    /// The client's W3C `traceparent` header: the parent of the job's span.
    pub traceparent: Option<crate::trace::TraceParent>,
}

/// What a task payload carries from its job (besides the task itself).
#[derive(Debug, Clone, Default)]
pub struct TaskContext {
    pub security: Option<Value>,
    pub metadata: Option<Value>,
    pub tracing_context: serde_json::Map<String, Value>,
    /// The job's handler-run count (`step` in the payload).
    pub step: u32,
}

/// Errors of core operations (mapped to HTTP statuses by the API layer).
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("job not found")]
    JobNotFound,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Cancel(#[from] engine::CancelError),
    #[error(transparent)]
    Approval(#[from] engine::ApprovalError),
    #[error("{0}")]
    Forbidden(String),
    /// The job's state does not allow the request (e.g. an event for a job that ended).
    #[error("{0}")]
    Conflict(String),
}

/// Drops the oldest entries of `state_history.progress_updates` beyond `max`.
fn keep_last_progress(job: &mut Job, max: usize) {
    if let Some(Value::Array(list)) = job.state_history.get_mut("progress_updates") {
        if list.len() > max {
            list.drain(..list.len() - max);
        }
    }
}

fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// The entry of `clients` (token digest, client) whose token is `token`: every digest compared
/// in full, whichever matches.
fn find_client<'a>(clients: &'a [([u8; 32], ClientEntry)], token: &str) -> Option<&'a ClientEntry> {
    let digest = token_digest(token);
    let mut found = None;
    for (d, entry) in clients {
        let same = crate::protocol::sign::constant_time_eq(d, &digest);
        found = if same { Some(entry) } else { found };
    }
    found
}

/// Everything the HTTP layer and the background loops share.
pub struct Core {
    pub cfg: Arc<Config>,
    /// Individual worker tokens: workers.toml at start-up, replaced by
    /// [`Core::reload_worker_tokens`] (`POST …/admin/reload-workers`).
    worker_tokens: parking_lot::RwLock<Arc<Vec<super::config::WorkerToken>>>,
    pub env: EngineEnv,
    pub jobs: Arc<dyn JobStore>,
    pub quotas: Arc<dyn QuotaStore>,
    pub rate: Arc<dyn RateLimitStore>,
    pub nonces: Arc<dyn NonceStore>,
    pub dispatcher: Dispatcher,
    /// The configured clients with the SHA-256 of their tokens ([`Core::client_by_token`]).
    clients: Vec<([u8; 32], ClientEntry)>,
    pub webhooks: Webhooks,
    /// Execution history (set at start-up when enabled; see [`crate::history`]).
    pub history: std::sync::OnceLock<crate::history::History>,
    /// Prometheus counters and histograms (`GET /metrics`).
    pub metrics: super::metrics::Metrics,
    exec: Arc<Semaphore>,
    client_configs: parking_lot::Mutex<HashMap<String, Arc<crate::context::ClientConfig>>>,
    /// Set when the server shuts down: long-polls answer 204 at once, WebSockets close (1001).
    shutdown: tokio::sync::watch::Sender<bool>,
    /// STS tokens (stored as SHA-256 hashes).
    pub sts: Arc<dyn StsStore>,
    /// The background tasks and whether they still run (`GET /_public/status`).
    pub health: Arc<super::supervise::Health>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("env", &self.env).finish()
    }
}

const REPUTATION_REWARD: f64 = 0.001;
/// Stale jobs claimed per watcher pass.
const RECOVERY_BATCH: usize = 200;
/// How often a long-poll looks at its queue without a wake-up when instances share a bus.
const BUS_RECHECK: Duration = Duration::from_secs(1);
const REPUTATION_PENALTY: f64 = 0.05;

impl Core {
    /// The configured client whose token is `token`, found in constant time: the digest of
    /// `token` is compared with every client's (fixed length, every byte, no early exit), so the
    /// time taken says nothing about how much of a token was right (like worker tokens).
    pub fn client_by_token(&self, token: &str) -> Option<&ClientEntry> {
        find_client(&self.clients, token)
    }

    /// The individual token of `worker_id` (exact workers.toml entry, else a matching pattern).
    pub fn worker_token(&self, worker_id: &str) -> Option<String> {
        let tokens = self.worker_tokens.read().clone();
        super::config::find_worker_token(&tokens, worker_id).map(str::to_owned)
    }

    /// Reads `WORKERS_CONFIG_PATH` again and replaces the individual worker tokens (all at once;
    /// a file that does not load changes nothing). Returns how many entries it has, or `None`
    /// when no workers.toml is configured.
    pub fn reload_worker_tokens(&self) -> Result<Option<usize>, super::config::ConfigError> {
        let Some(path) = &self.cfg.workers_config_path else { return Ok(None) };
        let tokens = super::config::load_workers(path)?;
        let n = tokens.len();
        *self.worker_tokens.write() = Arc::new(tokens);
        tracing::info!(path = %path.display(), workers = n, "worker tokens reloaded");
        Ok(Some(n))
    }

    /// A core over `stores` (its `data` and `schedule_locks` are used by the caller: the engine
    /// environment and the scheduler).
    pub fn new(cfg: Config, env: EngineEnv, stores: Stores) -> Self {
        let clients = cfg.clients.iter().map(|c| (token_digest(&c.token), c.clone())).collect();
        let mut dispatcher =
            Dispatcher::new(stores.workers, cfg.worker_health_check_interval * 2, cfg.reputation_min_threshold)
                .with_max_candidates(cfg.dispatcher_max_candidates);
        if let Some(bus) = stores.bus {
            dispatcher = dispatcher.with_bus(bus);
        }
        let Stores { jobs, quotas, rate, nonces, sts, .. } = stores;
        let exec = Arc::new(Semaphore::new(cfg.executor_max_concurrent_jobs.max(1)));
        let health = super::supervise::Health::new(cfg.background_task_max_restarts);
        let webhooks = Webhooks::start(super::webhooks::WebhookSettings::of(&cfg));
        Core {
            worker_tokens: parking_lot::RwLock::new(Arc::new(cfg.worker_tokens.clone())),
            cfg: Arc::new(cfg),
            env,
            jobs,
            quotas,
            rate,
            nonces,
            dispatcher,
            clients,
            webhooks,
            history: Default::default(),
            metrics: Default::default(),
            exec,
            client_configs: Default::default(),
            shutdown: tokio::sync::watch::Sender::new(false),
            sts,
            health,
        }
    }

    /// The shared configuration of a client (one allocation per client, not per job).
    fn client_config(&self, client: &ClientEntry) -> Arc<crate::context::ClientConfig> {
        let mut cache = self.client_configs.lock();
        cache.entry(client.token.clone()).or_insert_with(|| Arc::new(client.config.clone())).clone()
    }

    /// The blueprint by name.
    pub fn blueprint(&self, name: &str) -> Option<Blueprint> {
        self.env.blueprint(name)
    }

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
        // With an execution slot free now, the job is stored locked and its first handler runs
        // without locking it again; otherwise it waits for a slot like any other drive.
        match self.exec.clone().try_acquire_owned() {
            Ok(permit) => {
                let g = self.jobs.insert_locked(job).await?;
                let (core, id) = (self.clone(), id.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = core.drive_locked(g).await {
                        tracing::error!(job_id = %id, error = %e, "could not advance job");
                    }
                });
            }
            Err(_) => {
                self.jobs.insert(job).await?;
                self.drive(id.clone());
            }
        }
        Ok(id)
    }

    /// Runs the job's handlers in the background (if it is runnable).
    pub fn drive(self: &Arc<Self>, id: String) {
        let core = self.clone();
        tokio::spawn(async move {
            let _permit = core.exec.clone().acquire_owned().await;
            if let Err(e) = core.drive_now(&id).await {
                tracing::error!(job_id = %id, error = %e, "could not advance job");
            }
        });
    }

    async fn drive_now(self: &Arc<Self>, id: &str) -> Result<(), CoreError> {
        let Some(g) = self.jobs.lock(id).await? else { return Ok(()) };
        self.drive_locked(g).await
    }

    /// Advances a job the caller holds locked (if it is runnable) and commits it.
    async fn drive_locked(self: &Arc<Self>, mut g: JobGuard) -> Result<(), CoreError> {
        self.advance_locked(&mut g).await;
        self.jobs.commit(g).await?;
        Ok(())
    }

    /// Advances a locked job if it is runnable and carries out the effects.
    async fn advance_locked(self: &Arc<Self>, g: &mut JobGuard) {
        if matches!(g.status, JobStatus::Pending | JobStatus::Running | JobStatus::AwaitingRetry) {
            // A "handler <state>" span, child of the job's last span; the tasks it dispatches are its children.
            let (span, tp) = crate::trace::span_with_parent(
                tracing::info_span!("handler", otel.name = %format!("handler {}", g.current_state), job_id = %g.id),
                crate::trace::TraceParent::from_map(&g.tracing_context),
            );
            if let Some(tp) = tp {
                g.tracing_context = tp.to_map();
            }
            let out = tracing::Instrument::instrument(engine::advance(&self.env, g), span).await;
            self.effects(g, out).await;
        }
    }

    /// Carries out what the engine asked for. Never locks another job while `job` is locked:
    /// work on other jobs is spawned.
    ///
    /// Boxed with an explicit `Send` bound: effects can cancel other jobs, whose effects can
    /// cancel others, and the compiler needs a nominal type to see that this recursion is `Send`.
    fn effects<'a>(self: &'a Arc<Self>, job: &'a mut Job, out: Outcome) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(self.effects_inner(job, out))
    }

    async fn effects_inner(self: &Arc<Self>, job: &mut Job, out: Outcome) {
        self.observe(job, &out);
        for effect in out.effects {
            match effect {
                Effect::Dispatch { tasks, delay } if delay.is_zero() => {
                    for t in tasks {
                        self.place(job, &t.task_id).await;
                    }
                }
                Effect::Dispatch { tasks, delay } => {
                    let core = self.clone();
                    let job_id = job.id.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        if let Ok(Some(mut g)) = core.jobs.lock(&job_id).await {
                            for t in &tasks {
                                if g.tasks_in_flight().any(|r| r.task_id == t.task_id && r.worker_id.is_none()) {
                                    core.place(&mut g, &t.task_id).await;
                                }
                            }
                            let _ = core.jobs.commit(g).await;
                        }
                    });
                }
                Effect::CancelTasks(tasks) => {
                    let list: Vec<_> = tasks.into_iter().map(|t| (t.task_id, t.worker_id, job.id.clone())).collect();
                    self.dispatcher.cancel(&list).await;
                }
                Effect::StartChild(child) => {
                    let core = self.clone();
                    tokio::spawn(async move {
                        let id = child.id.clone();
                        match core.jobs.insert(*child).await {
                            Ok(()) => core.drive(id),
                            Err(e) => tracing::error!(error = %e, "could not store child job"),
                        }
                    });
                }
                Effect::CancelChild(child_id) => {
                    let core = self.clone();
                    tokio::spawn(async move {
                        let _ = core.cancel_job(&child_id).await;
                    });
                }
                Effect::RetryHandler { delay } => {
                    let core = self.clone();
                    let id = job.id.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        core.drive(id);
                    });
                }
                Effect::Terminal(status) => {
                    tracing::info!(job_id = %job.id, blueprint = %job.blueprint, %status, "job ended");
                    if let Some(url) = job.webhook_url.clone() {
                        self.webhooks.job_ended(url, job);
                    }
                    self.cleanup_job_files(&job.id);
                    if let Some(parent) = job.parent_job_id.clone() {
                        let core = self.clone();
                        let child = job.clone();
                        tokio::spawn(async move { core.resume_parent(&parent, &child).await });
                    }
                }
            }
        }
    }

    /// Puts one in-flight task of `job` on a worker queue, or parks it until a worker can take it.
    async fn place(self: &Arc<Self>, job: &mut Job, task_id: &str) {
        let job_id = job.id.clone();
        let Some(task) = job.task_mut(task_id) else { return };
        let deadline = task.spec.result_timeout_seconds.map(|s| crate::job::after_secs(task.dispatched_at_ms, s));
        let spec = task.spec.clone();
        // The task's span ("dispatch <type>", child of the job's last one); its context goes into the payload.
        let (_span, tp) = crate::trace::span_with_parent(
            tracing::info_span!("dispatch", otel.name = %format!("dispatch {}", spec.task_type), job_id = %job_id, task_id),
            crate::trace::TraceParent::from_map(&job.tracing_context),
        );
        if let Some(tp) = tp {
            job.tracing_context = tp.to_map();
        }
        match self.dispatcher.assign(&job_id, task_id, &spec, deadline).await {
            Ok(worker) => {
                if let Some(task) = job.task_mut(task_id) {
                    task.worker_id = Some(worker);
                }
                job.waiting_reason = None;
            }
            Err(no) => {
                let parked = Unassigned {
                    job_id,
                    task_id: task_id.to_owned(),
                    spec: spec.clone(),
                    deadline_ms: deadline,
                    parked_ms: now_ms(),
                };
                if let Err(e) = self.dispatcher.park(parked).await {
                    tracing::error!(task_id, error = %e, "could not park task; the watcher will retry it");
                }
                job.waiting_reason = Some(no.reason(&spec.task_type));
            }
        }
    }

    /// Gives parked tasks to workers that can now take them.
    pub fn place_parked(self: &Arc<Self>) {
        let core = self.clone();
        tokio::spawn(async move {
            for u in core.dispatcher.take_assignable().await {
                if let Ok(Some(mut g)) = core.jobs.lock(&u.job_id).await {
                    if g.tasks_in_flight().any(|r| r.task_id == u.task_id && r.worker_id.is_none()) {
                        core.place(&mut g, &u.task_id).await;
                        let _ = core.jobs.commit(g).await;
                    }
                }
            }
        });
    }

    async fn resume_parent(self: &Arc<Self>, parent_id: &str, child: &Job) {
        let Ok(Some(mut g)) = self.jobs.lock(parent_id).await else { return };
        let mut out = Outcome::default();
        if engine::resume_parent(&mut g, child, &mut out) {
            self.effects(&mut g, out).await;
            self.advance_locked(&mut g).await;
            let _ = self.jobs.commit(g).await;
        }
    }

    /// Applies a worker's result.
    pub async fn submit_result(
        self: &Arc<Self>,
        worker_id: &str,
        job_id: &str,
        result: TaskResult,
    ) -> Result<ResultDisposition, CoreError> {
        // `finished` under the job lock: crash recovery (which also locks) never sees the task
        // unknown to the worker store while it is still in flight on the job.
        let guard = self.jobs.lock(job_id).await;
        self.dispatcher.finished(worker_id, &result.task_id).await;
        let Some(mut g) = guard? else {
            return Ok(ResultDisposition::Ignored {
                reason: engine::IgnoreReason::JobNotFound,
                message: format!("job {job_id} not found"),
            });
        };
        let (disposition, out) = engine::apply_task_result(&self.env, &mut g, &result);
        if let ResultDisposition::Accepted(_) = &disposition {
            match (result.status.as_str(), result.error.as_ref().map(|e| e.class())) {
                ("failure", Some(ErrorClass::Permanent)) => {
                    self.dispatcher.adjust_reputation(worker_id, -REPUTATION_PENALTY).await
                }
                ("failure", _) => {}
                _ => self.dispatcher.adjust_reputation(worker_id, REPUTATION_REWARD).await,
            }
        }
        self.effects(&mut g, out).await;
        self.advance_locked(&mut g).await;
        self.jobs.commit(g).await?;
        Ok(disposition)
    }

    /// Applies a worker event (progress or an `event_transitions` event).
    pub async fn worker_event(
        self: &Arc<Self>,
        worker_id: &str,
        job_id: &str,
        task_id: Option<&str>,
        event_type: &str,
        payload: &Value,
    ) -> Result<(), CoreError> {
        let Some(mut g) = self.jobs.lock(job_id).await? else { return Err(CoreError::JobNotFound) };
        // Only the worker holding a running task of the job reports on it (and on that task when
        // the event names one): not a job waiting for approval, parked or between tasks, and never
        // a job that ended.
        if g.status.is_terminal() {
            return Err(CoreError::Conflict(format!("job {job_id} is {}: it takes no more events", g.status)));
        }
        let held = g
            .tasks_in_flight()
            .any(|t| t.worker_id.as_deref() == Some(worker_id) && task_id.is_none_or(|id| id == t.task_id));
        if !held {
            return Err(CoreError::Forbidden(match task_id {
                Some(t) => format!("worker {worker_id} holds no running task {t} of job {job_id}"),
                None => format!("worker {worker_id} holds no running task of job {job_id}"),
            }));
        }
        let mut out = Outcome::default();
        let moved = engine::apply_event(&mut g, task_id, event_type, payload, &mut out);
        if event_type == "progress" {
            keep_last_progress(&mut g, self.cfg.progress_updates_max);
        }
        self.effects(&mut g, out).await;
        if moved {
            self.advance_locked(&mut g).await;
        }
        self.jobs.commit(g).await?;
        Ok(())
    }

    /// Cancels a job (and its tasks and child).
    pub async fn cancel_job(self: &Arc<Self>, job_id: &str) -> Result<(), CoreError> {
        let Some(mut g) = self.jobs.lock(job_id).await? else { return Err(CoreError::JobNotFound) };
        let out = engine::cancel(&mut g)?;
        self.effects(&mut g, out).await;
        self.jobs.commit(g).await?;
        Ok(())
    }

    /// Applies a human decision.
    pub async fn approve(self: &Arc<Self>, job_id: &str, decision: &str) -> Result<(), CoreError> {
        let Some(mut g) = self.jobs.lock(job_id).await? else { return Err(CoreError::JobNotFound) };
        engine::apply_approval(&mut g, decision)?;
        self.advance_locked(&mut g).await;
        self.jobs.commit(g).await?;
        Ok(())
    }

    /// Registers (or re-registers) a worker and hands it parked tasks it can take.
    pub async fn register_worker(self: &Arc<Self>, info: WorkerInfo) -> Result<(), CoreError> {
        self.dispatcher.register(info).await?;
        self.place_parked();
        Ok(())
    }

    /// A heartbeat. `Ok(None)` = unknown worker (it must re-register).
    pub async fn heartbeat(
        self: &Arc<Self>,
        worker_id: &str,
        body: Option<&Value>,
    ) -> Result<Option<Vec<String>>, CoreError> {
        let offline = body.and_then(|b| b["status"].as_str()) == Some("offline");
        let Some(cancel) = self.dispatcher.heartbeat(worker_id, body).await? else { return Ok(None) };
        if offline {
            let (queued, orphans) = self.dispatcher.remove(worker_id).await;
            self.requeue(queued.into_iter().map(|t| (t.job_id, t.task_id)).collect());
            self.requeue(orphans.into_iter().map(|o| (o.job_id, o.task_id)).collect());
        } else {
            self.place_parked();
        }
        Ok(Some(cancel))
    }

    /// Puts tasks of a departed worker back through dispatch (the lease moves to the new worker,
    /// so a late result from the old one is ignored).
    fn requeue(self: &Arc<Self>, tasks: Vec<(String, String)>) {
        if tasks.is_empty() {
            return;
        }
        let core = self.clone();
        tokio::spawn(async move {
            for (job_id, task_id) in tasks {
                if let Ok(Some(mut g)) = core.jobs.lock(&job_id).await {
                    // Crash recovery may have placed it already (both run under the job lock).
                    if core.dispatcher.store().task_known(&task_id).await.unwrap_or(false) {
                        continue;
                    }
                    if let Some(r) = g.task_mut(&task_id) {
                        r.worker_id = None;
                        r.picked_up_at_ms = None;
                        core.place(&mut g, &task_id).await;
                        let _ = core.jobs.commit(g).await;
                    }
                }
            }
        });
    }

    /// Starts the graceful shutdown: open long-polls answer 204 now and WebSockets close, so
    /// the HTTP server can drain within moments instead of waiting out every poll.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves when the shutdown has begun.
    pub async fn shutting_down(&self) {
        let mut stop = self.shutdown.subscribe();
        let _ = stop.wait_for(|s| *s).await;
    }

    /// Starts the background loops (watcher: timeouts and dead workers), supervised: a pass
    /// that panics is logged and the watcher starts again (see [`super::supervise`]).
    pub fn start_background(self: &Arc<Self>) {
        let core = Arc::downgrade(self);
        let interval = self.cfg.watcher_interval.max(Duration::from_millis(50));
        super::supervise::supervise(&self.health, "watcher", move || {
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
    }

    /// One watcher pass: expired workers, overdue tasks, then stale jobs (crash recovery).
    pub async fn watch_once(self: &Arc<Self>) {
        let now = now_ms();
        let (queued, orphans) = self.dispatcher.expire(now).await;
        self.requeue(queued.into_iter().map(|t| (t.job_id, t.task_id)).collect());
        self.requeue(orphans.into_iter().map(|o| (o.job_id, o.task_id)).collect());
        let default_exec = self.cfg.worker_timeout.as_millis() as u64;
        for t in self.dispatcher.overdue(now, default_exec).await {
            let Ok(Some(mut g)) = self.jobs.lock(&t.job_id).await else { continue };
            if !g.tasks_in_flight().any(|r| r.task_id == t.task_id) {
                continue;
            }
            let error = match t.kind {
                Overdue::Dispatch => TaskError::new(
                    "DISPATCH_TIMEOUT_ERROR",
                    format!("task {} was not picked up by a worker before its dispatch deadline", t.task_id),
                ),
                Overdue::Execution => TaskError::new(
                    "TIMEOUT_ERROR",
                    format!(
                        "worker {} did not return a result for task {} in time",
                        t.worker_id.as_deref().unwrap_or("?"),
                        t.task_id
                    ),
                ),
            };
            tracing::warn!(job_id = %t.job_id, task_id = %t.task_id, code = %error.code, "task timed out");
            let out = engine::fail_task(&self.env, &mut g, &t.task_id, error);
            self.effects(&mut g, out).await;
            self.advance_locked(&mut g).await;
            let _ = self.jobs.commit(g).await;
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
            if let Err(e) = core.recover_now(&id).await {
                tracing::warn!(job_id = %id, error = %e, "could not recover job");
            }
        });
    }

    async fn recover_now(self: &Arc<Self>, id: &str) -> Result<(), CoreError> {
        let Some(mut g) = self.jobs.lock(id).await? else { return Ok(()) };
        let now = now_ms();
        match g.status {
            JobStatus::Pending | JobStatus::Running => {
                tracing::warn!(job_id = %id, status = %g.status, "recovering a job whose handler run was lost");
                self.advance_locked(&mut g).await;
            }
            JobStatus::AwaitingRetry => {
                if now < g.updated_at_ms.saturating_add(self.env.config.retry_max.as_millis() as u64) {
                    return Ok(()); // the retry timer may still fire; look again later
                }
                tracing::warn!(job_id = %id, "recovering a job whose handler retry was lost");
                self.advance_locked(&mut g).await;
            }
            JobStatus::WaitingForWorker | JobStatus::WaitingForParallelTasks => {
                let due: Vec<String> =
                    g.tasks_in_flight().filter(|t| t.dispatched_at_ms <= now).map(|t| t.task_id.clone()).collect();
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
                    if let Some(r) = g.task_mut(task_id) {
                        r.worker_id = None;
                        r.picked_up_at_ms = None;
                    }
                    self.place(&mut g, task_id).await;
                }
            }
            JobStatus::WaitingForSubJob => {
                let Some(child_id) = g.sub_job.as_ref().map(|s| s.child_job_id.clone()) else { return Ok(()) };
                match self.jobs.get(&child_id).await? {
                    Some(child) if child.status.is_terminal() => {
                        let mut out = Outcome::default();
                        if engine::resume_parent(&mut g, &child, &mut out) {
                            tracing::warn!(job_id = %id, %child_id, "recovering a lost resume after a child job");
                            self.effects(&mut g, out).await;
                            self.advance_locked(&mut g).await;
                        }
                    }
                    Some(_) => return Ok(()),
                    None => {
                        tracing::warn!(job_id = %id, %child_id, "child job was never stored; running the parent's handler again");
                        g.sub_job = None;
                        g.status = JobStatus::Running;
                        self.advance_locked(&mut g).await;
                    }
                }
            }
            _ => return Ok(()),
        }
        self.jobs.commit(g).await?;
        Ok(())
    }

    /// Long-poll: the next task for `worker_id`, waiting up to `wait`.
    ///
    /// When the worker's own queue is empty it may steal from the longest backlog of another
    /// worker with the same skills (`WORK_STEALING_ENABLED`); the lease moves to the thief.
    pub async fn next_task(
        &self,
        worker_id: &str,
        wait: Duration,
    ) -> Result<Option<(QueuedTask, TaskContext)>, CoreError> {
        let notify = self.dispatcher.notifier(worker_id);
        let deadline = tokio::time::Instant::now() + wait;
        let steal = self.cfg.work_stealing_enabled;
        loop {
            let notified = notify.notified();
            if let Some(t) = self.dispatcher.try_next(worker_id, steal).await? {
                if let Some(ctx) = self.claim_task(worker_id, &t).await? {
                    return Ok(Some((t, ctx)));
                }
                // The job moved on while the task was queued: drop it.
                self.dispatcher.finished(worker_id, &t.task_id).await;
                continue;
            }
            let mut stop = self.shutdown.subscribe();
            if *stop.borrow_and_update() {
                return Ok(None);
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
                        return Ok(None);
                    }
                }
                _ = stop.changed() => return Ok(None),
            }
        }
    }

    /// Like [`Core::next_task`], then up to `max - 1` more tasks already queued for the worker
    /// (no waiting and no stealing for those). A storage error after the first task ends the
    /// batch with what was claimed; a task popped but not claimed is recovered by its timeout.
    pub async fn next_tasks(
        &self,
        worker_id: &str,
        wait: Duration,
        max: usize,
    ) -> Result<Vec<(QueuedTask, TaskContext)>, CoreError> {
        let Some(first) = self.next_task(worker_id, wait).await? else { return Ok(Vec::new()) };
        let mut out = vec![first];
        while out.len() < max {
            let t = match self.dispatcher.try_next(worker_id, false).await {
                Ok(Some(t)) => t,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(worker_id, error = %e, "batch poll ended early");
                    break;
                }
            };
            match self.claim_task(worker_id, &t).await {
                Ok(Some(ctx)) => out.push((t, ctx)),
                Ok(None) => self.dispatcher.finished(worker_id, &t.task_id).await,
                Err(e) => {
                    tracing::warn!(worker_id, task_id = %t.task_id, error = %e, "batch poll ended early");
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Checks a popped task is still wanted and records its pick-up (and a lease moved by stealing).
    async fn claim_task(&self, worker_id: &str, t: &QueuedTask) -> Result<Option<TaskContext>, CoreError> {
        let Some(mut g) = self.jobs.lock(&t.job_id).await? else { return Ok(None) };
        let Some(record) = g.task_mut(&t.task_id) else { return Ok(None) };
        record.worker_id = Some(worker_id.to_owned());
        record.picked_up_at_ms = Some(now_ms());
        let ctx = TaskContext {
            security: g.security.clone(),
            metadata: g.metadata.clone(),
            tracing_context: g.tracing_context.clone(),
            step: g.transition_count,
        };
        self.observe_pickup(Some(&g), &t.task_id);
        self.jobs.commit(g).await?;
        Ok(Some(ctx))
    }

    /// Stores an STS token (hashed) for `worker_id`.
    pub async fn sts_store(
        &self,
        token: &str,
        kind: &'static str,
        worker_id: &str,
        ttl_ms: u64,
    ) -> Result<(), StorageError> {
        let hash = crate::protocol::sign::sha256_hex(token.as_bytes());
        self.sts.save(&hash, kind, worker_id, Duration::from_millis(ttl_ms)).await
    }

    /// The worker owning a live STS token of `kind` (`access` / `refresh`).
    pub async fn sts_owner(&self, token: &str, kind: &str) -> Result<Option<String>, StorageError> {
        self.sts.owner(&crate::protocol::sign::sha256_hex(token.as_bytes()), kind).await
    }

    /// Revokes an STS token.
    pub async fn sts_revoke(&self, token: &str) -> Result<(), StorageError> {
        self.sts.revoke(&crate::protocol::sign::sha256_hex(token.as_bytes())).await
    }
}

#[cfg(test)]
mod client_lookup_tests {
    use super::*;

    /// Issue #12 item 11: client tokens are found through their digests (constant time), exactly.
    #[test]
    fn client_tokens_are_matched_by_digest() {
        let entry = |name: &str, token: &str| ClientEntry {
            token: token.into(),
            config: crate::context::ClientConfig { name: name.into(), ..Default::default() },
            quota: None,
        };
        let clients: Vec<_> =
            [entry("a", "token-a"), entry("b", "token-b")].into_iter().map(|c| (token_digest(&c.token), c)).collect();
        assert_eq!(find_client(&clients, "token-b").map(|c| c.config.name.as_str()), Some("b"));
        assert_eq!(find_client(&clients, "token-a").map(|c| c.config.name.as_str()), Some("a"));
        for wrong in ["", "token-", "token-a ", "TOKEN-A", "token-c"] {
            assert!(find_client(&clients, wrong).is_none(), "{wrong:?}");
        }
    }
}
