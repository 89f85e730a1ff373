//! The orchestrator core: jobs, the engine, the dispatcher and their effects, without HTTP.
//!
//! Data flows one way: the API (or the scheduler, or the watcher) calls a [`Core`] method, the
//! method opens a unit of work on one job ([`JobTx`]), an engine transition returns a
//! [`Step`](crate::engine::Step), and the step's effects reach the dispatcher and the stores. One file per role:
//!
//! | file | role |
//! |---|---|
//! | `mod.rs` | the [`Core`] struct, its construction and accessors |
//! | `transact.rs` | the unit of work: lock -> engine step -> in-lock effects -> commit -> after-commit effects |
//! | `jobs.rs` | the job lifecycle: create, results, approvals, cancel, parent resume |
//! | `events.rs` | worker events: progress, event transitions, job-less events, their history rows and webhooks |
//! | `workers.rs` | worker sessions: register, heartbeat, long-poll, placing tasks on queues |
//! | `watcher.rs` | timeouts, dead workers and crash recovery |
//! | `reputation.rs` | the hourly reputation recalculation from the history |
//! | `observe.rs` | metrics, history records, the job's file operations outside handlers and the end-of-job file cleanup |
//!
//! Who may call (clients, the operator, workers) is [`super::auth`]'s concern.

#[cfg(feature = "dashboard")]
mod changes;
mod events;
mod jobs;
mod observe;
mod reputation;
mod transact;
mod watcher;
mod workers;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use tokio::sync::Semaphore;

use super::auth::Auth;
use super::config::{ClientEntry, Config};
use super::dispatch::Dispatcher;
use super::metrics::Metrics;
use super::webhooks::Webhooks;
use crate::blueprint::Blueprint;
use crate::engine::{self, EngineEnv};
use crate::history::workers::StatusLog;
use crate::history::History;
use crate::storage::{JobStore, NonceStore, QuotaStore, RateLimitStore, ScheduleLocks, StorageError, Stores};
use crate::supervise::Health;

#[cfg(feature = "dashboard")]
pub(crate) use changes::{Change, JobChange};
pub use events::WorkerEvent;
pub use jobs::{BulkCancel, BULK_CANCEL_MAX};
pub use transact::JobTx;

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
    /// The job's `data_metadata` entries whose keys are keys of the task's params.
    pub params_metadata: std::collections::BTreeMap<String, crate::protocol::wire::FileMetadata>,
}

/// Errors of core operations (mapped to HTTP statuses by the API layer).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// A worker event's payload breaks the `events_schema` its skill declares for the event type
    /// (answered 200 `{"status": "error", "code": "CONTRACT_VIOLATION_ERROR", "message": ..}`).
    #[error("{0}")]
    EventContract(String),
    /// The initial data breaks the blueprint's input contract: the violations (at most 100)
    /// and how many there were.
    #[error("initial_data does not match the input contract of blueprint `{blueprint}` ({total} violation(s))")]
    Contract { blueprint: String, violations: Vec<crate::contracts::Violation>, total: usize },
}

/// Everything the HTTP layer and the background loops share. Fields are private: the API calls
/// methods ([`Core::create_job`], [`Core::submit_result`], [`Core::next_tasks`], ...), and
/// embedders and tests reach the parts through the accessors below.
pub struct Core {
    cfg: Arc<Config>,
    env: EngineEnv,
    jobs: Arc<dyn JobStore>,
    quotas: Arc<dyn QuotaStore>,
    rate: Arc<dyn RateLimitStore>,
    nonces: Arc<dyn NonceStore>,
    dispatcher: Dispatcher,
    /// Client, operator and worker credentials (and STS tokens).
    auth: Auth,
    webhooks: Webhooks,
    /// The skill catalog and when it was built (see [`Core::worker_catalog`]).
    catalog: parking_lot::Mutex<Option<(std::time::Instant, Arc<Value>)>>,
    /// Execution history (set at start-up when enabled; see [`crate::history`]).
    history: OnceLock<History>,
    /// Which heartbeats become worker `status_update` history rows.
    status_log: StatusLog,
    /// Claims shared by the instances (the reputation recalculation's once-per-interval key).
    schedule_locks: Arc<dyn ScheduleLocks>,
    /// Prometheus counters and histograms (`GET /metrics`).
    metrics: Metrics,
    /// Requests sent to the storage backend (Redis), if it counts them.
    round_trips: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Handler runs at once (`EXECUTOR_MAX_CONCURRENT_JOBS`).
    exec: Arc<Semaphore>,
    /// One shared [`crate::context::ClientConfig`] per client, not one per job.
    client_configs: parking_lot::Mutex<HashMap<String, Arc<crate::context::ClientConfig>>>,
    /// Set when the server shuts down: long-polls answer 204 at once, WebSockets close (1001).
    shutdown: tokio::sync::watch::Sender<bool>,
    /// When the graceful shutdown began.
    shutdown_at: OnceLock<tokio::time::Instant>,
    /// Units of work in progress (see [`Core::settle`]).
    work: Arc<transact::Work>,
    /// The background tasks and whether they still run (`GET /_public/status`).
    health: Arc<Health>,
    /// The embedding application's `on_job_finished` / `on_worker_event` callbacks.
    hooks: crate::server::hooks::Hooks,
    /// The change feed of the dashboard's live stream.
    #[cfg(feature = "dashboard")]
    changes: changes::Changes,
    /// The dashboard's own state (sessions key, open streams, ...), which the core holds
    /// without knowing its type (the dashboard sits above the core).
    #[cfg(feature = "dashboard")]
    ui: OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("env", &self.env).finish()
    }
}

impl Core {
    /// A core over `stores` (its `data` and `schedule_locks` are used by the caller: the engine
    /// environment and the scheduler).
    pub fn new(cfg: Config, env: EngineEnv, stores: Stores) -> Self {
        let mut dispatcher =
            Dispatcher::new(stores.workers, cfg.worker_health_check_interval * 2, cfg.reputation_min_threshold)
                .with_max_candidates(cfg.dispatcher_max_candidates)
                .with_soft_limit(cfg.dispatcher_soft_limit);
        if let Some(bus) = stores.bus {
            dispatcher = dispatcher.with_bus(bus);
        }
        let Stores { jobs, quotas, rate, nonces, sts, schedule_locks, round_trips, .. } = stores;
        let exec = Arc::new(Semaphore::new(cfg.executor_max_concurrent_jobs.max(1)));
        let health = Health::new(cfg.background_task_max_restarts);
        let webhooks = Webhooks::with_outbox(super::webhooks::WebhookSettings::of(&cfg), jobs.clone());
        let metrics = Metrics::default();
        let auth = Auth::new(&cfg, sts, metrics.security().clone());
        let status_log = StatusLog::new(cfg.worker_history_status_interval);
        // Every handler's file operations are counted as they end.
        let env = env.with_file_observer(Arc::new(metrics.files().clone())).with_task_files_dir(&cfg.task_files_dir);
        Core {
            cfg: Arc::new(cfg),
            env,
            jobs,
            quotas,
            rate,
            nonces,
            dispatcher,
            auth,
            webhooks,
            catalog: Default::default(),
            history: OnceLock::new(),
            status_log,
            schedule_locks,
            metrics,
            round_trips,
            exec,
            client_configs: Default::default(),
            shutdown: tokio::sync::watch::Sender::new(false),
            shutdown_at: OnceLock::new(),
            work: Arc::default(),
            health,
            hooks: Default::default(),
            #[cfg(feature = "dashboard")]
            changes: Default::default(),
            #[cfg(feature = "dashboard")]
            ui: OnceLock::new(),
        }
    }

    /// Sets the in-process hooks (before the core is shared).
    pub(crate) fn with_hooks(mut self, hooks: crate::server::hooks::Hooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// The in-process hooks.
    pub(crate) fn hooks(&self) -> &crate::server::hooks::Hooks {
        &self.hooks
    }

    /// The configuration the orchestrator runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The engine environment: blueprints, data stores, task files.
    pub fn env(&self) -> &EngineEnv {
        &self.env
    }

    /// Checks `initial_data` against `blueprint`'s input contract (see
    /// [`Blueprint::input_schema`]); [`CoreError::Contract`] lists what breaks it.
    pub fn check_input(&self, blueprint: Blueprint, initial_data: &Value) -> Result<(), CoreError> {
        let (violations, total) = self.env.contracts().check_input(blueprint.name(), initial_data);
        if total == 0 {
            return Ok(());
        }
        Err(CoreError::Contract { blueprint: blueprint.name().to_owned(), violations, total })
    }

    /// The blueprint by name.
    pub fn blueprint(&self, name: &str) -> Option<Blueprint> {
        self.env.blueprint(name)
    }

    /// The job store (for embedders and tests; the API goes through [`Core::job`] and friends).
    pub fn jobs(&self) -> &Arc<dyn JobStore> {
        &self.jobs
    }

    /// Workers, their queues and the choice of a worker for a task.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Client, operator and worker credentials.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Webhook delivery (what became of the webhooks so far: [`Webhooks::counts`]).
    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    /// Prometheus counters and histograms.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Requests sent to the storage backend so far (Redis: commands, script calls, pipelines);
    /// `None` when the backend does not count them (memory).
    pub fn storage_round_trips(&self) -> Option<u64> {
        self.round_trips.as_ref().map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The background tasks and whether they still run.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The history front, when `HISTORY_DATABASE_URI` (or the builder) enabled it.
    pub fn history(&self) -> Option<&History> {
        self.history.get()
    }

    /// Enables the execution history (once; at start-up).
    pub(crate) fn set_history(&self, history: History) {
        let _ = self.history.set(history);
    }

    /// The shared configuration of a client (one allocation per client, not per job).
    fn client_config(&self, client: &ClientEntry) -> Arc<crate::context::ClientConfig> {
        let mut cache = self.client_configs.lock();
        if let Some(config) = cache.get(&client.token) {
            return config.clone();
        }
        cache.entry(client.token.clone()).or_insert_with(|| Arc::new(client.config.clone())).clone()
    }

    /// Counts one request against rate-limit `key`: `Err(wait)` past `RATE_LIMIT_LIMIT` per
    /// `RATE_LIMIT_PERIOD` (or `limit` when given).
    pub async fn rate_hit(
        &self,
        key: &str,
        limit: Option<u32>,
    ) -> Result<Result<(), std::time::Duration>, StorageError> {
        self.rate.hit(key, limit.unwrap_or(self.cfg.rate_limit), self.cfg.rate_limit_period).await
    }

    /// Takes one attempt from the monthly quota of the client with `token`; false when spent.
    pub async fn take_quota(&self, token: &str) -> Result<bool, StorageError> {
        self.quotas.take(token).await
    }

    /// Sets up the quotas of the configured clients (at start-up).
    pub(crate) async fn init_quotas(&self) -> Result<(), StorageError> {
        for c in &self.cfg.clients {
            if let Some(q) = c.quota {
                self.quotas.init(&c.token, q).await?;
            }
        }
        Ok(())
    }

    /// True the first time `key` is seen within `ttl` (replay protection of signed messages).
    pub async fn first_use_nonce(&self, key: &str, ttl: std::time::Duration) -> Result<bool, StorageError> {
        self.nonces.first_use(key, ttl).await
    }

    /// Starts the graceful shutdown: open long-polls answer 204 now and WebSockets close, so
    /// the HTTP server can drain within moments instead of waiting out every poll.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown_at.set(tokio::time::Instant::now());
        self.shutdown.send_replace(true);
    }

    /// Whether the graceful shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// When the graceful shutdown must be over: `SHUTDOWN_GRACE_SECONDS` after it began (from
    /// now if it has not).
    pub fn shutdown_deadline(&self) -> tokio::time::Instant {
        *self.shutdown_at.get().unwrap_or(&tokio::time::Instant::now()) + self.cfg.shutdown_grace
    }

    /// The slot of the dashboard's state (set by the dashboard on first use).
    #[cfg(feature = "dashboard")]
    pub(crate) fn ui_slot(&self) -> &OnceLock<Box<dyn std::any::Any + Send + Sync>> {
        &self.ui
    }

    /// Resolves when the shutdown has begun.
    pub async fn shutting_down(&self) {
        let mut stop = self.shutdown.subscribe();
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// Without the dashboard there is no change feed: nothing is built or sent.
#[cfg(not(feature = "dashboard"))]
impl Core {
    #[inline]
    fn job_change(&self, _job: &crate::job::Job) -> Option<std::convert::Infallible> {
        None
    }

    #[inline]
    fn send_change(&self, _change: Option<std::convert::Infallible>) {}

    #[inline]
    fn worker_changed(&self, _worker_id: &str, _status: &str, _removed: bool) {}

    #[inline]
    fn worker_seen(&self, _worker_id: &str, _removed: bool) {}
}
