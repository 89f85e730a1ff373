//! [`TestServer`]: a real orchestrator on a free loopback port for tests over HTTP, with fast
//! timings, its tokens, a typed client, raw and in-process Rust workers.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;

use super::RawWorker;
use crate::blueprint::Blueprint;
use crate::client::Client;
use crate::server::config::{Config, ConfigError};
use crate::server::hooks::{HookResult, WorkerEventInfo};
use crate::server::{Core, Orchestrator, OrchestratorBuilder, ServeError};
#[cfg(feature = "worker")]
use crate::worker::{TaskHandle, WorkerBuilder, WorkerError};

#[cfg(feature = "worker")]
use super::TestWorker;

/// The configuration of a [`TestServer`]: loopback, the test tokens ([`super::CLIENT_TOKEN`],
/// [`super::WORKER_TOKEN`], [`super::SECRET`], [`super::ADMIN_TOKEN`]), no rate limiting, 2 s
/// worker long-polls, a watcher pass every 200 ms (timeouts and dead workers are noticed
/// quickly), webhooks to loopback receivers allowed. Everything else is [`Config::default`].
pub fn test_config() -> Config {
    test_config_with(&[]).expect("the test configuration is valid")
}

/// [`test_config`] with more (or overriding) variables, read the way the orchestrator reads its
/// environment (e.g. `WORKER_HEALTH_CHECK_INTERVAL_SECONDS`, `CLIENTS_CONFIG_PATH`).
pub fn test_config_with(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars = [
        ("API_HOST", "127.0.0.1"),
        ("CLIENT_TOKEN", super::CLIENT_TOKEN),
        ("ADMIN_TOKEN", super::ADMIN_TOKEN),
        ("GLOBAL_WORKER_TOKEN", super::WORKER_TOKEN),
        ("ORCHESTRATOR_SECRET_KEY", super::SECRET),
        ("RATE_LIMITING_ENABLED", "false"),
        ("WORKER_POLL_TIMEOUT_SECONDS", "2"),
        ("WATCHER_INTERVAL_SECONDS", "0.2"),
        ("WEBHOOK_ALLOW_PRIVATE", "true"),
    ];
    let lookup = |k: &str| extra.iter().chain(vars.iter()).find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
    Config::from_lookup(&lookup)
}

/// Logs of tests on the test's output (captured by the test harness), once per process:
/// `RUST_LOG` when set, else `warn`. Does nothing when a subscriber is already installed.
pub fn init_logging() {
    init_logging_with("warn")
}

/// [`init_logging`] with another filter than `warn` when `RUST_LOG` is not set. Only the first
/// call of the process counts.
pub fn init_logging_with(default_filter: &str) {
    static LOGGING: OnceLock<()> = OnceLock::new();
    LOGGING.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let cfg = Config { log_level: default_filter.to_owned(), ..Config::default() };
        let layer = crate::server::log_layer(&cfg, tracing_subscriber::fmt::TestWriter::new());
        let _ = tracing_subscriber::registry().with(layer).try_init();
    });
}

/// Why a [`TestServer`] did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("cannot bind or reach a loopback port: {0}")]
    Bind(#[from] std::io::Error),
    /// `/_public/status` did not answer, or a worker did not register, within 30 s.
    #[error("not ready: {0}")]
    NotReady(String),
    #[cfg(feature = "worker")]
    #[error("worker: {0}")]
    Worker(#[from] WorkerError),
}

type ConfigEdit = Box<dyn FnOnce(&mut Config) + Send>;
type BuilderEdit = Box<dyn FnOnce(OrchestratorBuilder) -> OrchestratorBuilder + Send>;
#[cfg(feature = "worker")]
type WorkerEdit = Box<dyn FnOnce(WorkerBuilder) -> WorkerBuilder + Send>;

/// Builds a [`TestServer`]: `TestServer::builder().blueprint(bp).start().await`.
#[must_use]
pub struct TestServerBuilder {
    blueprints: Vec<Blueprint>,
    env: Vec<(String, String)>,
    config: Option<Config>,
    config_edits: Vec<ConfigEdit>,
    builder_edits: Vec<BuilderEdit>,
    listener: Option<TcpListener>,
    logging: bool,
    #[cfg(feature = "worker")]
    workers: Vec<(String, WorkerEdit)>,
}

impl std::fmt::Debug for TestServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServerBuilder").field("blueprints", &self.blueprints).field("env", &self.env).finish()
    }
}

impl TestServerBuilder {
    pub fn blueprint(mut self, bp: Blueprint) -> Self {
        self.blueprints.push(bp);
        self
    }
    pub fn blueprints(mut self, bps: impl IntoIterator<Item = Blueprint>) -> Self {
        self.blueprints.extend(bps);
        self
    }
    /// A configuration variable, read like the orchestrator's environment on top of
    /// [`test_config`] (e.g. `.env("WORKER_HEALTH_CHECK_INTERVAL_SECONDS", "1")`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
    /// Starts from this configuration instead of [`test_config`] (then [`Self::env`] is not
    /// read; [`Self::config`] edits still apply). `API_HOST`/`API_PORT` are ignored: the server
    /// listens on a free loopback port.
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }
    /// Edits the configuration: `.config(|c| c.job_max_retries = 0)`.
    pub fn config(mut self, edit: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.config_edits.push(Box::new(edit));
        self
    }
    /// Application state for handlers (`State<T>`), as [`OrchestratorBuilder::state`].
    pub fn state<T: Send + Sync + 'static>(self, value: T) -> Self {
        self.orchestrator(move |b| b.state(value))
    }
    /// As [`OrchestratorBuilder::on_job_finished`].
    pub fn on_job_finished<F, Fut>(self, hook: F) -> Self
    where
        F: Fn(crate::Job) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = HookResult> + Send + 'static,
    {
        self.orchestrator(move |b| b.on_job_finished(hook))
    }
    /// As [`OrchestratorBuilder::on_worker_event`].
    pub fn on_worker_event<F, Fut>(self, hook: F) -> Self
    where
        F: Fn(WorkerEventInfo) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = HookResult> + Send + 'static,
    {
        self.orchestrator(move |b| b.on_worker_event(hook))
    }
    /// Anything else of the [`OrchestratorBuilder`] (a history backend, data stores, a clock,
    /// Redis): `.orchestrator(|b| b.history(backend))`.
    pub fn orchestrator(
        mut self,
        edit: impl FnOnce(OrchestratorBuilder) -> OrchestratorBuilder + Send + 'static,
    ) -> Self {
        self.builder_edits.push(Box::new(edit));
        self
    }
    /// Serves on this listener instead of a fresh port (e.g. the port of a server the test
    /// stopped, to restart it there).
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }
    /// An in-process Rust worker `{skill}-worker` with one skill whose handler is `handler`
    /// (as [`WorkerBuilder::task`]), on [`TestWorker::builder`]'s fast timings. `start` returns
    /// once it is registered; [`TestServer::worker`] gives its handle.
    #[cfg(feature = "worker")]
    pub fn worker<P, F, Fut, R>(self, skill: &str, handler: F) -> Self
    where
        P: serde::de::DeserializeOwned + Send + 'static,
        F: Fn(P, TaskHandle) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = R> + Send + 'static,
        R: crate::worker::IntoTaskOutcome + 'static,
    {
        let skill_name = skill.to_owned();
        self.worker_with(&format!("{skill}-worker"), move |b| b.task(skill_name, handler))
    }
    /// An in-process Rust worker `worker_id`; `configure` adds its tasks and settings to
    /// [`TestServer::worker_builder`].
    #[cfg(feature = "worker")]
    pub fn worker_with(
        mut self,
        worker_id: &str,
        configure: impl FnOnce(WorkerBuilder) -> WorkerBuilder + Send + 'static,
    ) -> Self {
        self.workers.push((worker_id.to_owned(), Box::new(configure)));
        self
    }

    /// Whether [`Self::start`] sets up logging ([`init_logging`]; default yes). A test binary
    /// that installs its own global subscriber (to capture logs, say) installs it first or
    /// passes `false`.
    pub fn logging(mut self, on: bool) -> Self {
        self.logging = on;
        self
    }

    /// Starts the orchestrator; returns once `GET /_public/status` answers and every worker of
    /// the builder is registered (at most 30 s each). Sets up logging ([`init_logging`]) unless
    /// turned off ([`Self::logging`]).
    pub async fn start(self) -> Result<TestServer, TestServerError> {
        if self.logging {
            init_logging();
        }
        let mut config = match self.config {
            Some(c) => c,
            None => {
                let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                test_config_with(&env)?
            }
        };
        for edit in self.config_edits {
            edit(&mut config);
        }
        let mut builder = Orchestrator::builder().blueprints(self.blueprints).config(config);
        for edit in self.builder_edits {
            builder = edit(builder);
        }
        let listener = match self.listener {
            Some(l) => l,
            None => crate::server::bind(([127, 0, 0, 1], 0).into())?,
        };
        #[allow(unused_mut)]
        let mut server = TestServer::serve(builder, listener)?;
        server.ready().await?;
        #[cfg(feature = "worker")]
        {
            let mut ids = Vec::new();
            for (id, configure) in self.workers {
                let worker = TestWorker::spawn(configure(server.worker_builder(&id)))?;
                ids.push(id);
                server.workers.push(worker);
            }
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            server.wait_workers(&ids, Duration::from_secs(30)).await?;
        }
        Ok(server)
    }
}

/// An orchestrator serving on a free loopback port, for tests over HTTP (the counterpart of
/// [`super::TestRun`], which runs a blueprint in-process). Stopped when dropped (or gracefully
/// with [`TestServer::stop`]).
///
/// ```no_run
/// # async fn demo(bp: avto::Blueprint) {
/// use avto::testing::TestServer;
/// let server = TestServer::builder().blueprint(bp).start().await.unwrap();
/// let client = server.client();
/// let id = client.create("jobs/flow", serde_json::json!({})).await.unwrap();
/// # }
/// ```
pub struct TestServer {
    base: String,
    addr: SocketAddr,
    core: Arc<Core>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
    #[cfg(feature = "worker")]
    workers: Vec<TestWorker>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer").field("base", &self.base).finish_non_exhaustive()
    }
}

impl TestServer {
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder {
            blueprints: Vec::new(),
            env: Vec::new(),
            config: None,
            config_edits: Vec::new(),
            builder_edits: Vec::new(),
            listener: None,
            logging: true,
            #[cfg(feature = "worker")]
            workers: Vec::new(),
        }
    }

    /// Serves `builder` on `listener` in the background, without waiting for it to be ready
    /// and without setting up logging (for servers whose start-up a test observes; otherwise
    /// use [`TestServer::builder`]).
    pub fn serve(builder: OrchestratorBuilder, listener: TcpListener) -> Result<TestServer, TestServerError> {
        let orch = builder.build()?;
        let core = orch.core().clone();
        let addr = listener.local_addr()?;
        let scheme = if core.config().tls.is_some() { "https" } else { "http" };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let served = orch
                .listen(listener, async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = &served {
                tracing::error!("the test server stopped with an error: {e}");
            }
            served
        });
        Ok(TestServer {
            base: format!("{scheme}://{addr}"),
            addr,
            core,
            stop: Some(tx),
            task: Some(task),
            #[cfg(feature = "worker")]
            workers: Vec::new(),
        })
    }

    /// Waits until `GET /_public/status` answers 200 (at most 30 s). With TLS (`TLS_ENABLED`)
    /// only until the port accepts connections: the test brings a client that trusts its
    /// certificate.
    pub async fn ready(&self) -> Result<(), TestServerError> {
        if self.config().tls.is_some() {
            return tokio::net::TcpStream::connect(self.addr).await.map(drop).map_err(TestServerError::Bind);
        }
        let http = reqwest::Client::new();
        let url = self.url("/_public/status");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answer = http.get(&url).timeout(Duration::from_secs(5)).send().await;
            if answer.as_ref().is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                return Err(TestServerError::NotReady("the server stopped during start-up (see the log)".into()));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TestServerError::NotReady(format!("{url} did not answer 200 in 30 s: {answer:?}")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `http://127.0.0.1:{port}` (`https://` with TLS).
    pub fn base_url(&self) -> &str {
        &self.base
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
    /// The running orchestrator (jobs, dispatcher, metrics, history, ...).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }
    pub fn config(&self) -> &Config {
        self.core.config()
    }
    /// The token of the first configured client ([`super::CLIENT_TOKEN`] by default).
    pub fn client_token(&self) -> &str {
        self.config().clients.first().map(|c| c.token.as_str()).unwrap_or(super::CLIENT_TOKEN)
    }
    /// `GLOBAL_WORKER_TOKEN` ([`super::WORKER_TOKEN`] by default).
    pub fn worker_token(&self) -> &str {
        &self.config().global_worker_token
    }
    /// `ORCHESTRATOR_SECRET_KEY` ([`super::SECRET`] by default).
    pub fn secret(&self) -> &str {
        &self.config().secret_key
    }
    /// `ADMIN_TOKEN` ([`super::ADMIN_TOKEN`] by default).
    pub fn admin_token(&self) -> Option<&str> {
        self.config().admin_token.as_deref()
    }

    /// A typed client with [`TestServer::client_token`], waiting with short pauses (10 ms up
    /// to 50 ms).
    pub fn client(&self) -> Client {
        Client::new(&self.base, self.client_token())
            .poll_interval(Duration::from_millis(10), Duration::from_millis(50))
            .api_prefix(&self.config().client_api_prefix)
    }

    /// A hand-driven worker with the server's worker token (not yet registered).
    pub fn raw_worker(&self, worker_id: &str, skills: &[&str]) -> RawWorker {
        RawWorker { token: self.worker_token().to_owned(), ..RawWorker::new(&self.base, worker_id, skills) }
    }

    /// [`TestWorker::builder`] for this server: its URL and tokens. Add tasks, then
    /// [`TestServer::spawn_worker`].
    #[cfg(feature = "worker")]
    pub fn worker_builder(&self, worker_id: &str) -> WorkerBuilder {
        TestWorker::builder(worker_id).orchestrator_url(&self.base).token(self.worker_token()).secret_key(self.secret())
    }

    /// Runs a worker of [`TestServer::worker_builder`] and waits until it is registered.
    #[cfg(feature = "worker")]
    pub async fn spawn_worker(&self, builder: WorkerBuilder) -> Result<TestWorker, TestServerError> {
        let worker = TestWorker::spawn(builder)?;
        self.wait_workers(&[worker.id()], Duration::from_secs(30)).await?;
        Ok(worker)
    }

    /// A worker started by [`TestServerBuilder::worker`] (`"{skill}-worker"`) or
    /// [`TestServerBuilder::worker_with`].
    #[cfg(feature = "worker")]
    pub fn worker(&self, worker_id: &str) -> Option<&TestWorker> {
        self.workers.iter().find(|w| w.id() == worker_id)
    }

    /// Waits until every worker of `ids` is registered and live.
    pub async fn wait_workers(&self, ids: &[&str], timeout: Duration) -> Result<(), TestServerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let live = self.core.dispatcher().live_workers().await;
            let missing: Vec<&str> =
                ids.iter().copied().filter(|id| !live.iter().any(|w| w.info.worker_id == *id)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TestServerError::NotReady(format!("workers {missing:?} did not register in {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Graceful shutdown: the builder's workers stop first (their running tasks finish), then
    /// the orchestrator; returns once it has stopped, with what its run returned.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        #[cfg(feature = "worker")]
        for w in std::mem::take(&mut self.workers) {
            if let Err(e) = w.stop().await {
                tracing::warn!(worker_id = w.id(), "test worker did not stop cleanly: {e}");
            }
        }
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| Err(ServeError::Io(std::io::Error::other(e)))),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
