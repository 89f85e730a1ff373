//! The orchestrator: an axum HTTP server around the engine.
//!
//! ```no_run
//! # async fn demo() -> Result<(), avto::server::ServeError> {
//! avto::serve().await // every #[avto::blueprint] in the binary, config from the environment
//! # }
//! ```

mod api;
mod auth;
pub mod config;
mod core;
mod dispatch;
mod files;
pub mod hooks;
mod listener;
mod logging;
mod metrics;
mod requirements;
mod scheduler;
mod task_contracts;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "dashboard")]
mod ui;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::blueprint::Blueprint;
use crate::engine::EngineEnv;
use crate::files::ObjectStore;
use crate::storage::memory::MemoryRateLimits;
#[cfg(feature = "redis")]
use crate::storage::redis::RedisStores;
use crate::storage::{DataStoreBackend, ScheduleLocks, Stores};

pub use self::api::{check_depth, parse_object, parse_object_within, ApiError, ServedRoute};
pub use self::auth::{Auth, AuthError, StsPair, WorkerIdentity};
pub use self::config::{Config, ConfigError};
pub use self::core::{BulkCancel, Core, CoreError, JobTx, NewJob, TaskContext, WorkerEvent, BULK_CANCEL_MAX};
pub use self::dispatch::{Dispatcher, NoWorker};
pub use self::listener::{bind, LISTEN_BACKLOG};
pub use self::logging::{init_logging, log_layer, LogTime};
pub use self::metrics::{
    FileCounters, HistoryNumbers, Metrics, SecurityCounters, Snapshot, DISPATCH_BUCKETS, DURATION_BUCKETS,
    FILE_OPERATION_BUCKETS,
};
pub use self::scheduler::{Clock, Fired, ManualClock, Schedule, Scheduler, SystemClock, Trigger};
pub use self::webhooks::{WebhookCounts, Webhooks};
pub use crate::contracts::Violation;

/// Why the orchestrator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("invalid blueprint set: {0}")]
    Blueprints(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
    /// The storage backend (Redis) could not be opened, reached or subscribed to.
    #[error("storage: {0}")]
    Storage(#[source] crate::storage::StorageError),
    /// `REDIS_URL` / `REDIS_HOST` is set, but this build has no `redis` feature.
    #[error("storage: REDIS_URL / REDIS_HOST is set, but avto was built without the `redis` feature")]
    RedisNotCompiled,
    /// The clients' quotas could not be written at start-up.
    #[error("storage: quota init failed: {0}")]
    Quotas(#[source] crate::storage::StorageError),
    /// The initial values of the blueprints' data stores could not be written at start-up.
    #[error("storage: writing the initial values of data stores: {0}")]
    DataStoreInit(#[source] crate::storage::StorageError),
    #[error("task file storage: {0}")]
    Files(#[from] crate::files::FileError),
}

/// Starts the orchestrator with every `#[avto::blueprint]` of the binary and the configuration of
/// the environment; returns after a graceful shutdown (SIGTERM / SIGINT).
pub async fn serve() -> Result<(), ServeError> {
    Orchestrator::builder().blueprints(Blueprint::registered()).from_env()?.build()?.serve().await
}

/// Builds an orchestrator explicitly.
#[derive(Default)]
pub struct OrchestratorBuilder {
    blueprints: Vec<Blueprint>,
    config: Option<Config>,
    data_stores: Option<Arc<dyn DataStoreBackend>>,
    object_store: Option<Arc<dyn ObjectStore>>,
    history: Option<Arc<dyn crate::history::HistoryBackend>>,
    schedule_locks: Option<Arc<dyn ScheduleLocks>>,
    clock: Option<Arc<dyn scheduler::Clock>>,
    redis_url: Option<String>,
    app_state: crate::state::AppState,
    hooks: hooks::Hooks,
    #[cfg(feature = "worker")]
    workers: Vec<crate::worker::WorkerBuilder>,
}

impl std::fmt::Debug for OrchestratorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratorBuilder").field("blueprints", &self.blueprints.len()).finish()
    }
}

impl OrchestratorBuilder {
    /// Adds one blueprint.
    pub fn blueprint(mut self, bp: Blueprint) -> Self {
        self.blueprints.push(bp);
        self
    }
    /// Adds several blueprints.
    pub fn blueprints(mut self, bps: impl IntoIterator<Item = Blueprint>) -> Self {
        self.blueprints.extend(bps);
        self
    }
    /// Uses this configuration (default: [`Config::default`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }
    /// Reads the configuration from the environment (fails fast on invalid values).
    pub fn from_env(mut self) -> Result<Self, ConfigError> {
        self.config = Some(Config::from_env()?);
        Ok(self)
    }
    /// Where blueprint data stores live (default: in memory).
    pub fn data_stores(mut self, backend: Arc<dyn DataStoreBackend>) -> Self {
        self.data_stores = Some(backend);
        self
    }
    /// Where task files live (`TaskFiles` in handlers; default: S3 when the configuration has it).
    pub fn object_store(mut self, store: Arc<dyn ObjectStore>) -> Self {
        self.object_store = Some(store);
        self
    }

    /// Keeps history in this backend (instead of opening `HISTORY_DATABASE_URI`).
    pub fn history(mut self, backend: Arc<dyn crate::history::HistoryBackend>) -> Self {
        self.history = Some(backend);
        self
    }
    /// Keeps every server capability (jobs, queues, workers, locks, quotas, rate limits, nonces,
    /// STS tokens, data stores, schedule claims) in the Redis at `url` under `REDIS_KEY_PREFIX`,
    /// so several instances can serve together (feature `redis`). Default: `REDIS_URL` /
    /// `REDIS_HOST` of the configuration, else in memory.
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }
    /// Where schedules claim their fire times (default: in memory, i.e. one instance).
    pub fn schedule_locks(mut self, locks: Arc<dyn ScheduleLocks>) -> Self {
        self.schedule_locks = Some(locks);
        self
    }
    /// The scheduler's clock (default: the system clock; tests use [`scheduler::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn scheduler::Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Application state for handlers: a handler argument `State<T>` reads the value of type
    /// `T` given here (one value per type; several types are fine). `build()` fails, naming the
    /// handler and the type, when a handler takes a `State<T>` that was not given.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.app_state.insert(value);
        self
    }

    /// An async callback run once a job has ended (every terminal status: `finished`, `failed`,
    /// `cancelled`, `quarantined`), with the job as it was saved. It runs after the save, in its
    /// own task; an error it returns or a panic is logged and changes nothing. Several may be set.
    pub fn on_job_finished<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(crate::Job) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = hooks::HookResult> + Send + 'static,
    {
        self.hooks.add_job_finished(hook);
        self
    }

    /// An async callback run for every accepted worker event (progress, event transitions,
    /// events about no job) and every handler's ghost event (`actions.send_event`), once it has
    /// been saved. Like [`OrchestratorBuilder::on_job_finished`], its errors are only logged.
    pub fn on_worker_event<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(hooks::WorkerEventInfo) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = hooks::HookResult> + Send + 'static,
    {
        self.hooks.add_worker_event(hook);
        self
    }

    /// A Rust worker that runs inside this process beside the orchestrator (a demo, a small
    /// deployment, tests): [`Orchestrator::listen`] / [`Orchestrator::serve`] start it once the
    /// listener is bound, pointed at this orchestrator with its worker token
    /// (`GLOBAL_WORKER_TOKEN`) and task key (`ORCHESTRATOR_SECRET_KEY`), and stop it gracefully
    /// when the server stops. Its other settings (id, skills, limits) are the builder's.
    #[cfg(feature = "worker")]
    pub fn worker(mut self, worker: crate::worker::WorkerBuilder) -> Self {
        self.workers.push(worker);
        self
    }

    /// Checks the blueprint set and builds the orchestrator (must be called inside a Tokio runtime).
    pub fn build(self) -> Result<Orchestrator, ServeError> {
        // The webhook sender and the background tasks start on the current runtime.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ServeError::Config(ConfigError(
                "Orchestrator::build() needs a Tokio runtime: call it inside #[tokio::main] or Runtime::block_on"
                    .into(),
            )));
        }
        let mut config = self.config.unwrap_or_default();
        config::check_clients(&mut config.clients)?;
        let mut seen = std::collections::BTreeMap::new();
        for bp in &self.blueprints {
            if let Some(prev) = seen.insert(bp.name(), *bp) {
                if prev != *bp {
                    return Err(ServeError::Blueprints(format!(
                        "two different blueprints are named `{}`; names must be unique",
                        bp.name()
                    )));
                }
            }
            if let Some(path) = bp.create_path() {
                if let Some(other) =
                    self.blueprints.iter().find(|o| o.name() != bp.name() && o.create_path().as_deref() == Some(&path))
                {
                    return Err(ServeError::Blueprints(format!(
                        "blueprints `{}` and `{}` use the same endpoint `{path}`",
                        bp.name(),
                        other.name()
                    )));
                }
            }
        }
        let redis_url = self.redis_url.or_else(|| config.redis_url.clone());
        #[cfg(feature = "redis")]
        let redis = match &redis_url {
            None => None,
            Some(url) => Some(
                RedisStores::new(url, &config.redis_key_prefix, config.job_lock_lease)
                    .map_err(ServeError::Storage)?
                    .with_encryption(config.redis_encryption.as_ref())
                    .with_job_retention(config.job_retention),
            ),
        };
        #[cfg(feature = "redis")]
        let mut stores = redis.as_ref().map(|r| r.stores()).unwrap_or_else(Stores::memory);
        #[cfg(not(feature = "redis"))]
        let mut stores = match redis_url {
            None => Stores::memory(),
            Some(_) => return Err(ServeError::RedisNotCompiled),
        };
        if redis_url.is_none() {
            stores.rate = Arc::new(MemoryRateLimits::new(config.rate_limit_max_keys));
            stores.jobs = Arc::new(crate::storage::memory::MemoryJobs::with_retention(
                config.job_retention,
                config.max_retained_jobs,
            ));
        }
        if config.redis_encryption.is_some() && redis_url.is_none() {
            // Logged at start-up, once logging is set up (`serve` sets it up after the build).
            config.warnings.push(
                "REDIS_ENCRYPTION_KEY is set but storage is in memory (no REDIS_URL): nothing is written to Redis, \
                 so the key is not used"
                    .into(),
            );
        }
        if let Some(data) = self.data_stores {
            stores.data = data;
        }
        if let Some(locks) = self.schedule_locks {
            stores.schedule_locks = locks;
        }
        let data = stores.data.clone();
        let schedule_locks = stores.schedule_locks.clone();
        let env = EngineEnv::new(
            config.engine(),
            seen.into_values(),
            data,
            self.object_store.or_else(|| files::store_from_config(&config)),
        )
        .and_then(|env| env.with_app_state(self.app_state))
        .map_err(ServeError::Blueprints)?;
        let core = Arc::new(Core::new(config, env, stores).with_hooks(self.hooks));
        if let Some(backend) = self.history {
            core.set_history(crate::history::History::start_supervised(backend, core.health()));
        }
        let scheduler = match &core.config().schedules_config_path {
            None => None,
            Some(path) => {
                let names: Vec<&str> = core.env().blueprints().map(|b| b.name()).collect();
                let schedules = scheduler::load_schedules(path, &names, core.config().tz)?;
                // A schedule whose input breaks its blueprint's contract would fail at every
                // fire time: refused at start-up instead.
                for s in &schedules {
                    let Some(bp) = core.blueprint(&s.blueprint) else { continue };
                    if let Err(CoreError::Contract { violations, total, .. }) = core.check_input(bp, &s.input_data) {
                        let list: Vec<String> =
                            violations.iter().map(|v| format!("`{}`: {}", v.pointer, v.message)).collect();
                        return Err(ServeError::Config(ConfigError(format!(
                            "{}: schedule `{}`: input_data does not match the input contract of blueprint `{}` \
                             ({total} violation(s)): {}",
                            path.display(),
                            s.name,
                            s.blueprint,
                            list.join("; ")
                        ))));
                    }
                }
                let clock = self.clock.unwrap_or_else(|| Arc::new(scheduler::SystemClock));
                Some(Arc::new(scheduler::Scheduler::new(core.clone(), schedules, schedule_locks, clock)))
            }
        };
        Ok(Orchestrator {
            core,
            scheduler,
            #[cfg(feature = "worker")]
            workers: Arc::new(parking_lot::Mutex::new(self.workers)),
            #[cfg(feature = "redis")]
            redis,
        })
    }
}

/// The subject CN of the verified client certificate of the connection a request came on
/// (HTTPS with `TLS_CA_PATH`; `None` without a certificate). A request extension, so it cannot
/// be sent by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertCn(pub Option<String>);

/// Answers of at least this many bytes are compressed for clients that accept zstd or gzip.
pub const COMPRESS_ABOVE: u16 = 500;

/// A built orchestrator.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    core: Arc<Core>,
    scheduler: Option<Arc<scheduler::Scheduler>>,
    /// Embedded workers not started yet (taken by the first `listen`).
    #[cfg(feature = "worker")]
    workers: Arc<parking_lot::Mutex<Vec<crate::worker::WorkerBuilder>>>,
    #[cfg(feature = "redis")]
    redis: Option<RedisStores>,
}

impl Orchestrator {
    /// Starts the embedded workers (see [`OrchestratorBuilder::worker`]) against `listener`'s
    /// address; each stops when the server begins its shutdown.
    #[cfg(feature = "worker")]
    fn start_workers(
        &self,
        listener: &tokio::net::TcpListener,
        https: bool,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, ServeError> {
        let builders = std::mem::take(&mut *self.workers.lock());
        if builders.is_empty() {
            return Ok(Vec::new());
        }
        let mut addr = listener.local_addr().map_err(|e| ServeError::Config(ConfigError(format!("listener: {e}"))))?;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        let url = format!("{}://{addr}", if https { "https" } else { "http" });
        let cfg = self.core.config();
        let mut handles = Vec::new();
        for builder in builders {
            let worker = builder
                .orchestrator_url(&url)
                .token(&cfg.global_worker_token)
                .secret_key(&cfg.secret_key)
                .build()
                .map_err(|e| ServeError::Config(ConfigError(format!("embedded worker: {e}"))))?;
            let core = self.core.clone();
            handles.push(tokio::spawn(async move {
                if let Err(e) = worker.run_until(async move { core.shutting_down().await }).await {
                    tracing::error!(error = %e, "embedded worker stopped with an error");
                }
            }));
        }
        tracing::info!(workers = handles.len(), %url, "embedded workers started");
        Ok(handles)
    }

    pub fn builder() -> OrchestratorBuilder {
        OrchestratorBuilder::default()
    }

    /// The core (jobs, dispatcher, config), e.g. for tests.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The scheduler, when `SCHEDULES_CONFIG_PATH` is set.
    pub fn scheduler(&self) -> Option<&Arc<scheduler::Scheduler>> {
        self.scheduler.as_ref()
    }

    /// The axum router, to embed avto into a larger server. Answers of [`COMPRESS_ABOVE`] bytes
    /// or more are compressed when the client accepts it (zstd or gzip, by the client's
    /// `Accept-Encoding` preference, zstd on a tie), as the Python orchestrator does.
    pub fn router(&self) -> axum::Router {
        use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
        // SizeAbove is "more than": 499 makes it 500 bytes or more.
        let worth_it = SizeAbove::new(COMPRESS_ABOVE - 1)
            .and(NotForContentType::GRPC)
            .and(NotForContentType::IMAGES)
            .and(NotForContentType::SSE);
        let compression = tower_http::compression::CompressionLayer::new().no_br().no_deflate().compress_when(worth_it);
        let app = api::router(self.core.clone());
        #[cfg(feature = "dashboard")]
        let app = app.merge(ui::router().with_state(self.core.clone()));
        app.layer(compression)
    }

    /// Every route [`Orchestrator::router`] serves (method, path template, operation), the
    /// routes the OpenAPI document (`GET /_public/openapi.json`) is generated from.
    pub fn served_routes(&self) -> Vec<ServedRoute> {
        api::served(&self.core)
    }

    /// Initialises quotas and data stores; call once before serving (done by [`Orchestrator::serve`] and [`Orchestrator::listen`]).
    async fn init(&self) -> Result<(), ServeError> {
        for warning in &self.core.config().warnings {
            tracing::warn!("{warning}");
        }
        #[cfg(feature = "redis")]
        if let Some(r) = &self.redis {
            r.check().await.map_err(ServeError::Storage)?;
        }
        self.core.init_quotas().await.map_err(ServeError::Quotas)?;
        self.core.env().initialize_data_stores().await.map_err(ServeError::DataStoreInit)?;
        if let Some(store) = self.core.env().object_store() {
            store.init().await?;
        }
        if let (None, Some(uri)) = (self.core.history(), &self.core.config().history_database_uri) {
            let backend = crate::history::connect(uri, self.core.config().history_connect_timeout).await?;
            tracing::info!(backend = backend.kind(), "history enabled");
            self.core.set_history(crate::history::History::start_supervised(backend, self.core.health()));
        }
        Ok(())
    }

    /// Binds `API_HOST:API_PORT` and serves until SIGTERM / SIGINT.
    pub async fn serve(self) -> Result<(), ServeError> {
        init_logging(self.core.config());
        let addr = SocketAddr::new(self.core.config().host, self.core.config().port);
        let listener = listener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
        tracing::info!(%addr, blueprints = ?self.core.env().blueprints().map(|b| b.name()).collect::<Vec<_>>(), "avto orchestrator listening");
        let served = self.listen(listener, shutdown_signal()).await;
        #[cfg(feature = "otel")]
        let _ = tokio::task::spawn_blocking(crate::trace::otel::shutdown).await;
        served
    }

    /// Serves on an existing listener until `shutdown` resolves. [`bind`] makes one with the
    /// listen backlog that `serve` uses (a listener from `TcpListener::bind` has 128).
    pub async fn listen(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        // The certificate files are read first: a wrong one fails start-up before anything runs.
        #[cfg(feature = "tls")]
        let acceptor = match &self.core.config().tls {
            None => None,
            Some(cfg) => Some(tls::acceptor(cfg).map_err(|e| ServeError::Config(ConfigError(e)))?),
        };
        #[cfg(not(feature = "tls"))]
        let acceptor: Option<std::convert::Infallible> = match &self.core.config().tls {
            None => None,
            Some(_) => {
                return Err(ServeError::Config(ConfigError(
                    "TLS_ENABLED=true needs avto's `tls` feature (this build has no TLS)".into(),
                )))
            }
        };
        self.init().await?;
        #[cfg(feature = "redis")]
        let bus = match &self.redis {
            None => None,
            Some(r) => {
                let core = Arc::downgrade(&self.core);
                let on_message = move |msg| {
                    if let Some(core) = core.upgrade() {
                        core.on_bus(msg);
                    }
                };
                Some(r.subscribe(on_message).await.map_err(ServeError::Storage)?)
            }
        };
        self.core.start_background();
        #[cfg(feature = "worker")]
        let workers = self.start_workers(&listener, acceptor.is_some())?;
        let schedules = self.scheduler.as_ref().map(|s| s.start());
        let limits = listener::Limits::from_config(self.core.config());
        let core = self.core.clone();
        let shutdown = async move {
            shutdown.await;
            core.begin_shutdown();
        };
        let served = match acceptor {
            None => listener::serve(listener, self.router(), listener::Plain, limits, shutdown).await,
            #[cfg(feature = "tls")]
            Some(acceptor) => {
                let client_certificates = self.core.config().tls.as_ref().is_some_and(|t| t.ca_path.is_some());
                tracing::info!(client_certificates, "serving HTTPS");
                listener::serve(listener, self.router(), tls::Tls(acceptor), limits, shutdown).await
            }
        };
        if let Some(task) = schedules {
            task.abort();
        }
        #[cfg(feature = "redis")]
        if let Some(task) = bus {
            task.abort();
        }
        #[cfg(feature = "worker")]
        for w in workers {
            // They stop on the shutdown signal (the core's), finishing what they hold.
            let _ = tokio::time::timeout(self.core.config().shutdown_grace, w).await;
        }
        self.finish(served.is_ok()).await;
        served?;
        tracing::info!("avto orchestrator stopped");
        Ok(())
    }
}

impl Orchestrator {
    /// The rest of a graceful shutdown, once connections are drained, within
    /// `SHUTDOWN_GRACE_SECONDS` of the signal: running handler runs end and release their job
    /// locks, then history and job-end webhooks are flushed. What is left is logged (and on
    /// Redis resumed by the next instance).
    async fn finish(&self, graceful: bool) {
        let core = &self.core;
        core.begin_shutdown();
        let deadline = core.shutdown_deadline();
        if graceful && !core.settle(deadline).await {
            tracing::warn!("handler runs still in progress at the end of the shutdown grace; their jobs are resumed by crash recovery");
        }
        if let Some(h) = core.history() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !h.flush(left.max(std::time::Duration::from_millis(100))).await {
                tracing::warn!(queued = h.queued(), "history not fully written at shutdown");
            }
        }
        if !core.webhooks().drain(deadline).await {
            tracing::warn!(
                "job-end webhooks still in progress at the end of the shutdown grace; they stay in the outbox"
            );
        }
    }
}

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM: what [`serve`] and [`Orchestrator::serve`]
/// stop on, for a `main` that runs more than the orchestrator (workers, other servers) and
/// stops them on the same signal.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received; draining connections");
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::storage::StorageError;

    fn storage_cause(err: &ServeError) -> Option<&StorageError> {
        err.source().and_then(|e| e.downcast_ref::<StorageError>())
    }

    /// Start-up storage failures keep the `StorageError` as their source, with the texts they
    /// had when it was flattened into a String.
    #[tokio::test]
    async fn storage_failures_keep_the_storage_error_as_source() {
        let err = Orchestrator::builder().redis("nonsense://").build().unwrap_err();
        #[cfg(feature = "redis")]
        {
            assert!(matches!(err, ServeError::Storage(_)), "{err:?}");
            let cause = storage_cause(&err).expect("the storage error");
            assert_eq!(err.to_string(), format!("storage: {cause}"));
        }
        #[cfg(not(feature = "redis"))]
        {
            assert!(matches!(err, ServeError::RedisNotCompiled), "{err:?}");
            assert_eq!(
                err.to_string(),
                "storage: REDIS_URL / REDIS_HOST is set, but avto was built without the `redis` feature"
            );
        }

        let down = StorageError::Unavailable("down".into());
        let err = ServeError::Quotas(down.clone());
        assert_eq!(storage_cause(&err), Some(&down));
        assert_eq!(err.to_string(), "storage: quota init failed: storage backend unavailable: down");
        let err = ServeError::DataStoreInit(down.clone());
        assert_eq!(storage_cause(&err), Some(&down));
        assert_eq!(
            err.to_string(),
            "storage: writing the initial values of data stores: storage backend unavailable: down"
        );
    }
}
