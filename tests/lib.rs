//! Shared helpers of the avto integration tests: an in-process orchestrator on a free port,
//! an HTTP client for the client API, a raw RXON client, Rust and real Python SDK workers, and
//! small HTTP receivers (webhooks, exporters) on free loopback ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use avto::protocol::sign::{attach_security, MessageKind};
use avto::server::config::Config;
use avto::server::{Core, Orchestrator};
use avto::worker::{ShutdownHandle, Worker, WorkerBuilder, WorkerError};
use avto::Blueprint;
use serde_json::{json, Value};

pub mod blueprints;
pub mod certs;
pub mod s3s;
pub mod tasks;

pub const CLIENT_TOKEN: &str = "test-client-token";
pub const WORKER_TOKEN: &str = "test-worker-token";
pub const SECRET: &str = "test-orchestrator-secret";
/// The operator credential (`ADMIN_TOKEN`) of [`test_config`].
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A configuration for tests: loopback, rate limiting off, short polls, known tokens, webhooks to
/// loopback receivers allowed.
pub fn test_config() -> Config {
    test_config_with(&[])
}

/// [`test_config`] with more (or overriding) environment variables, read the way the server reads
/// its environment (e.g. `CLIENTS_CONFIG_PATH`, `WORKERS_CONFIG_PATH`, `JOB_MAX_RETRIES`).
pub fn test_config_with(extra: &[(&str, &str)]) -> Config {
    let vars = [
        ("API_HOST", "127.0.0.1"),
        ("CLIENT_TOKEN", CLIENT_TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("GLOBAL_WORKER_TOKEN", WORKER_TOKEN),
        ("ORCHESTRATOR_SECRET_KEY", SECRET),
        ("RATE_LIMITING_ENABLED", "false"),
        ("WORKER_POLL_TIMEOUT_SECONDS", "2"),
        ("WATCHER_INTERVAL_SECONDS", "0.2"),
        // The tests' webhook receivers listen on 127.0.0.1.
        ("WEBHOOK_ALLOW_PRIVATE", "true"),
    ];
    let lookup = |k: &str| extra.iter().chain(vars.iter()).find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
    Config::from_lookup(&lookup).expect("test config")
}

/// An orchestrator serving on a free loopback port; stopped on drop.
pub struct Server {
    pub base: String,
    pub core: Arc<Core>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start(blueprints: impl IntoIterator<Item = Blueprint>) -> Server {
        Self::with_config(blueprints, test_config()).await
    }

    pub async fn with_config(blueprints: impl IntoIterator<Item = Blueprint>, config: Config) -> Server {
        Self::with_builder(Orchestrator::builder().blueprints(blueprints).config(config)).await
    }

    /// An orchestrator from a builder (for what only the builder sets, e.g. a history backend).
    pub async fn with_builder(builder: avto::server::OrchestratorBuilder) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::with_builder_on(builder, listener)
    }

    /// An orchestrator from a builder on a listener the test bound (e.g. the port of a server it
    /// stopped, to restart it there).
    pub fn with_builder_on(builder: avto::server::OrchestratorBuilder, listener: tokio::net::TcpListener) -> Server {
        let orch = builder.build().expect("orchestrator builds");
        let core = orch.core().clone();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            orch.listen(listener, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        Server { base, core, stop: Some(tx), task: Some(task) }
    }

    /// An orchestrator on the Redis at `url`, keys under `prefix`: several servers on one prefix
    /// are instances of one deployment (shared jobs, workers, queues, locks).
    pub async fn with_redis(
        blueprints: impl IntoIterator<Item = Blueprint>,
        url: &str,
        prefix: &str,
        config: Config,
    ) -> Server {
        let config = Config { redis_url: Some(url.to_owned()), redis_key_prefix: prefix.to_owned(), ..config };
        Self::with_config(blueprints, config).await
    }

    /// Graceful shutdown; returns when the server has stopped.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A client-API client with the test client token.
    pub fn client(&self) -> ApiClient {
        ApiClient { http: reqwest::Client::new(), base: self.base.clone(), token: CLIENT_TOKEN.into() }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The client API as a user calls it.
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl ApiClient {
    pub fn with_token(&self, token: &str) -> ApiClient {
        ApiClient { token: token.into(), ..self.clone() }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("X-Client-Token", &self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r =
            self.http.get(format!("{}{path}", self.base)).header("X-Client-Token", &self.token).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A request with the operator credential ([`ADMIN_TOKEN`]) instead of the client token.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Creates a job; panics unless the answer is 202.
    pub async fn create(&self, path: &str, initial_data: Value) -> String {
        let (status, body) = self.post(path, &json!({"initial_data": initial_data})).await;
        assert_eq!(status, 202, "create job: {body}");
        body["job_id"].as_str().unwrap().to_owned()
    }

    pub async fn job(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/jobs/{id}?detailed=true")).await;
        assert_eq!(status, 200, "job status: {body}");
        body
    }

    /// Polls until the job has one of `statuses` (panics after `timeout`).
    pub async fn wait_for(&self, id: &str, statuses: &[&str], timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.job(id).await;
            if statuses.contains(&job["status"].as_str().unwrap_or_default()) {
                return job;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("job {id} did not reach {statuses:?} in {timeout:?}: {job}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a terminal status.
    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> Value {
        self.wait_for(id, &["finished", "failed", "cancelled", "quarantined"], timeout).await
    }

    /// Polls the detailed job until `pred` holds (panics after `timeout`).
    pub async fn wait_until(&self, id: &str, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.job(id).await;
            if pred(&job) {
                return job;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("job {id}: {what} did not happen in {timeout:?}: {job}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /api/v1/workers` with the operator credential: the live workers' full records.
    pub async fn workers(&self) -> Vec<Value> {
        let (status, body) = self.admin(reqwest::Method::GET, "/api/v1/workers", None).await;
        assert_eq!(status, 200, "workers: {body}");
        body.as_array().cloned().unwrap_or_default()
    }

    /// One live worker's record from `GET /api/v1/workers`.
    pub async fn worker(&self, worker_id: &str) -> Option<Value> {
        self.workers().await.into_iter().find(|w| w["worker_id"] == worker_id)
    }

    /// Waits until every worker of `ids` is registered and live (panics after 30 s).
    pub async fn wait_workers(&self, ids: &[&str]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let live = self.workers().await;
            let missing: Vec<&str> =
                ids.iter().copied().filter(|id| !live.iter().any(|w| w["worker_id"] == *id)).collect();
            if missing.is_empty() {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("workers {missing:?} did not register in 30 s (live: {live:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A loopback port nothing listens on (bound, then released): for servers started in another
/// process, and for a receiver that refuses connections.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Serves `app` on a free loopback port in the background; returns its address.
pub async fn serve_http(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A webhook receiver: the JSON body of every `POST /hook` arrives on the channel.
pub async fn hook_receiver() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                "ok"
            }
        }),
    );
    (serve_http(app).await, rx)
}

/// Test logs on the test's output (`RUST_LOG`, else `default_filter`); once per test binary.
pub fn init_tracing(default_filter: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_test_writer()
        .try_init();
}

/// Where the Python reference lives (created by `.ci/test`). Tests that need it fail, never skip,
/// when it is missing.
pub fn python_venv() -> PathBuf {
    let venv = std::env::var("AVTO_PY_VENV").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/avto/venv-ref")
    });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "the Python reference is not installed at {} (run `bash .ci/test`, which installs it, or set AVTO_PY_VENV)",
        venv.display()
    );
    venv
}

/// A real `avtomatika-worker` SDK process running tests/python/echo_worker.py; killed on drop.
pub struct PyWorker {
    child: Child,
    pub worker_id: String,
}

impl PyWorker {
    pub fn start(base: &str, worker_id: &str, extra_env: &[(&str, &str)]) -> PyWorker {
        Self::start_script("echo_worker.py", base, worker_id, extra_env)
    }

    /// Runs another script of tests/python/ (e.g. `recipe_worker.py`, the cookbook's workers).
    pub fn start_script(script: &str, base: &str, worker_id: &str, extra_env: &[(&str, &str)]) -> PyWorker {
        let venv = python_venv();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python").join(script);
        let log = std::env::temp_dir().join(format!("avto-pyworker-{worker_id}.log"));
        let mut cmd = Command::new(venv.join("bin/python"));
        cmd.arg(script)
            .env("ORCHESTRATOR_URL", base)
            .env("WORKER_ID", worker_id)
            .env("WORKER_TOKEN", WORKER_TOKEN)
            .env("ORCHESTRATOR_SECRET_KEY", SECRET)
            .env("WORKER_ENABLE_WEBSOCKETS", "true")
            .env("HEARTBEAT_INTERVAL", "2")
            .env("TASK_POLL_TIMEOUT", "5")
            .env("LOG_LEVEL", "WARNING")
            .env("TASK_FILES_DIR", std::env::temp_dir().join(format!("avto-py-{worker_id}")))
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(log.with_extension("err")).unwrap()));
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start the Python worker");
        PyWorker { child, worker_id: worker_id.to_owned() }
    }

    /// Sends SIGTERM (graceful SDK shutdown) and waits.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
    }
}

impl Drop for PyWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `n` workers are registered (panics after 30 s).
pub async fn wait_workers(server: &Server, n: usize) {
    for _ in 0..300 {
        if server.core.dispatcher().live_workers().await.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("only {} of {n} workers registered", server.core.dispatcher().live_workers().await.len());
}

/// An in-process Rust SDK worker (`avto::worker`) running on the test's runtime. Dropping it
/// asks for a graceful shutdown (offline heartbeat, running tasks drained), like SIGTERM.
pub struct RustWorker {
    pub worker_id: String,
    handle: ShutdownHandle,
    join: Option<tokio::task::JoinHandle<Result<(), WorkerError>>>,
}

impl RustWorker {
    /// A worker of the orchestrator at `base` with the test defaults of [`RustWorker::builder`];
    /// `configure` adds its tasks and settings.
    pub fn start(base: &str, worker_id: &str, configure: impl FnOnce(WorkerBuilder) -> WorkerBuilder) -> RustWorker {
        Self::spawn(configure(Self::builder(worker_id).orchestrator_url(base)))
    }

    /// The test defaults: the test tokens and secret, heartbeats every 300 ms, short polls and
    /// backoffs, no WebSocket. Add orchestrators and tasks, then [`RustWorker::spawn`].
    pub fn builder(worker_id: &str) -> WorkerBuilder {
        Worker::builder()
            .worker_id(worker_id)
            .token(WORKER_TOKEN)
            .secret_key(SECRET)
            .heartbeat_interval(Duration::from_millis(300))
            .shutdown_timeout(Duration::from_secs(2))
            .configure(|c| {
                c.idle_poll_delay = Duration::from_millis(50);
                c.task_poll_timeout = Duration::from_secs(2);
                c.heartbeat_cooldown = Duration::from_millis(100);
                c.result_retry_initial_delay = Duration::from_millis(100);
                c.registration_retry_initial_delay = Duration::from_millis(100);
                c.registration_retry_max_delay = Duration::from_secs(1);
                c.poll_backoff_initial = Duration::from_millis(100);
                c.poll_backoff_max = Duration::from_secs(1);
                c.cancel_grace = Duration::from_millis(500);
                c.request_timeout = Duration::from_secs(5);
            })
    }

    /// Builds and runs `builder` in the background.
    pub fn spawn(builder: WorkerBuilder) -> RustWorker {
        let worker = builder.build().expect("the worker builds");
        let worker_id = worker.config().worker_id.clone();
        let handle = worker.shutdown_handle();
        let join = tokio::spawn(worker.run_until(std::future::pending()));
        RustWorker { worker_id, handle, join: Some(join) }
    }

    /// Graceful shutdown, waiting until the worker has stopped.
    pub async fn stop(mut self) {
        self.handle.shutdown();
        if let Some(join) = self.join.take() {
            let stopped = tokio::time::timeout(Duration::from_secs(20), join).await;
            stopped.expect("the worker stops in time").expect("the worker task").expect("the worker runs cleanly");
        }
    }
}

impl Drop for RustWorker {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// Seconds since the epoch (message timestamps).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A hand-driven worker speaking signed RXON messages over HTTP, for what a real SDK does not do
/// on purpose: stop heartbeating while it holds a task, or answer after its lease moved.
pub struct RawWorker {
    pub http: reqwest::Client,
    pub base: String,
    pub id: String,
    pub token: String,
    pub skills: Vec<String>,
}

impl RawWorker {
    pub fn new(base: &str, id: &str, skills: &[&str]) -> RawWorker {
        RawWorker {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            id: id.to_owned(),
            token: WORKER_TOKEN.to_owned(),
            skills: skills.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Adds a fresh timestamp, a nonce (so two equal messages in one second are not replays)
    /// and the security block (signed with this worker's token).
    pub fn signed(&self, mut body: Value, kind: MessageKind) -> Value {
        body["timestamp"] = json!(unix_now());
        if body.get("nonce").is_none() {
            body["nonce"] = json!(uuid::Uuid::new_v4().to_string());
        }
        attach_security(&mut body, &self.token, &self.id, kind);
        body
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-Worker-Token", &self.token)
            .header("X-Worker-ID", &self.id)
            .header("X-RXON-Version", "1.0b17");
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn register(&self) -> (u16, Value) {
        let skills: Vec<Value> = self.skills.iter().map(|s| json!({"name": s, "type": s})).collect();
        let body = json!({
            "worker_id": self.id,
            "worker_type": "raw",
            "supported_skills": skills,
            "available_skills": self.skills,
            "capabilities": {"cost_per_skill": {}, "extra": {}},
            "resources": {"properties": {"cpu_cores": 1}},
        });
        let body = self.signed(body, MessageKind::Registration);
        self.send(reqwest::Method::POST, "/_worker/workers/register", Some(&body)).await
    }

    pub async fn heartbeat(&self, current_tasks: &[&str]) -> (u16, Value) {
        let status = if current_tasks.is_empty() { "idle" } else { "busy" };
        let body = json!({"worker_id": self.id, "status": status, "current_tasks": current_tasks});
        let body = self.signed(body, MessageKind::Heartbeat);
        self.send(reqwest::Method::PATCH, &format!("/_worker/workers/{}", self.id), Some(&body)).await
    }

    /// One long-poll (held by the orchestrator up to its poll timeout).
    pub async fn poll(&self) -> (u16, Value) {
        self.send(reqwest::Method::GET, &format!("/_worker/workers/{}/tasks/next?timeout=2", self.id), None).await
    }

    /// Posts a success result with `data` for `task` (a task payload from [`RawWorker::poll`]).
    pub async fn succeed(&self, task: &Value, data: Value) -> (u16, Value) {
        let body = json!({"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": self.id,
                          "origin_worker_id": self.id, "status": "success", "data": data});
        let body = self.signed(body, MessageKind::Result);
        self.send(reqwest::Method::POST, "/_worker/tasks/result", Some(&body)).await
    }
}

/// Deletes every key under `prefix` in the Redis at `url`, from a `Drop` (a thread of its own
/// with its own runtime, so it works inside and outside a test's runtime).
pub fn delete_redis_prefix(url: &str, prefix: &str) {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(avto::storage::redis::delete_prefix(&url, &prefix)).expect("clean up the test prefix");
    })
    .join()
    .unwrap();
}

/// The Redis the tests use (`AVTO_TEST_REDIS_URL`; default the machine's, 127.0.0.1:6379).
pub fn redis_url() -> String {
    std::env::var("AVTO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A fresh key prefix in the tests' Redis whose keys are deleted (`SCAN` + `DEL`) when the test
/// ends, also on panic: runs that share one Redis never see each other's keys.
#[derive(Debug)]
pub struct RedisPrefix {
    pub url: String,
    pub prefix: String,
}

impl Default for RedisPrefix {
    fn default() -> Self {
        RedisPrefix { url: redis_url(), prefix: format!("avto-test:{}:", uuid::Uuid::new_v4().simple()) }
    }
}

impl RedisPrefix {
    pub fn new() -> RedisPrefix {
        RedisPrefix::default()
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        delete_redis_prefix(&self.url, &self.prefix);
    }
}

pub use panicking_history::PanickingHistory;

mod panicking_history {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use avto::history::{
        HistoryBackend, HistoryError, HistoryRecord, MemoryHistory, TaskOutcomes, WorkerHistoryRecord,
    };
    use futures::future::BoxFuture;

    /// A history backend whose first `panics` inserts panic (`u32::MAX`: every one), for the
    /// tests of background-task supervision.
    pub struct PanickingHistory {
        panics: AtomicU32,
        inner: MemoryHistory,
    }

    impl PanickingHistory {
        pub fn new(panics: u32) -> Arc<Self> {
            Arc::new(PanickingHistory { panics: AtomicU32::new(panics), inner: MemoryHistory::new() })
        }
    }

    impl HistoryBackend for PanickingHistory {
        fn kind(&self) -> &'static str {
            "memory"
        }
        fn insert<'a>(&'a self, rows: &'a [HistoryRecord]) -> BoxFuture<'a, Result<(), HistoryError>> {
            if self.panics.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                panic!("the history backend exploded");
            }
            self.inner.insert(rows)
        }
        fn job_history<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<Vec<HistoryRecord>, HistoryError>> {
            self.inner.job_history(job_id)
        }
        fn jobs<'a>(
            &'a self,
            client: Option<&'a str>,
            limit: usize,
            offset: usize,
        ) -> BoxFuture<'a, Result<Vec<HistoryRecord>, HistoryError>> {
            self.inner.jobs(client, limit, offset)
        }
        fn status_counts<'a>(
            &'a self,
            client: Option<&'a str>,
        ) -> BoxFuture<'a, Result<BTreeMap<String, u64>, HistoryError>> {
            self.inner.status_counts(client)
        }
        fn schema_version(&self) -> BoxFuture<'_, Result<i64, HistoryError>> {
            self.inner.schema_version()
        }
        fn insert_workers<'a>(&'a self, rows: &'a [WorkerHistoryRecord]) -> BoxFuture<'a, Result<(), HistoryError>> {
            self.inner.insert_workers(rows)
        }
        fn worker_history<'a>(
            &'a self,
            worker_id: &'a str,
            since_us: i64,
            limit: usize,
        ) -> BoxFuture<'a, Result<Vec<WorkerHistoryRecord>, HistoryError>> {
            self.inner.worker_history(worker_id, since_us, limit)
        }
        fn task_outcomes<'a>(
            &'a self,
            worker_ids: &'a [String],
            since_us: i64,
        ) -> BoxFuture<'a, Result<HashMap<String, TaskOutcomes>, HistoryError>> {
            self.inner.task_outcomes(worker_ids, since_us)
        }
    }
}
