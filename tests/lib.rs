//! Shared helpers of the avto integration tests: an in-process orchestrator on a free port,
//! an HTTP client for the client API, a raw RXON client, Rust and real Python SDK workers, and
//! small HTTP receivers (webhooks, exporters) on free loopback ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use avto::client::Client;
use avto::server::config::Config;
use avto::server::{Core, Orchestrator};
use avto::testing::{TestServer, TestWorker};
use avto::worker::WorkerBuilder;
use avto::Blueprint;
use serde_json::Value;

pub use avto::testing::{unix_now, RawWorker, ADMIN_TOKEN, CLIENT_TOKEN, SECRET, WORKER_TOKEN};

pub mod blueprints;
pub mod certs;
pub mod s3s;
pub mod tasks;

/// The fast test configuration of [`avto::testing::test_config`].
pub fn test_config() -> Config {
    avto::testing::test_config()
}

/// [`test_config`] with more (or overriding) environment variables, read the way the server reads
/// its environment (e.g. `CLIENTS_CONFIG_PATH`, `WORKERS_CONFIG_PATH`, `JOB_MAX_RETRIES`).
pub fn test_config_with(extra: &[(&str, &str)]) -> Config {
    avto::testing::test_config_with(extra).expect("test config")
}

/// An [`avto::testing::TestServer`] with its base URL and core as fields (the shape the tests
/// were written against); stopped on drop.
pub struct Server {
    pub base: String,
    pub core: Arc<Core>,
    inner: TestServer,
}

impl Server {
    pub async fn start(blueprints: impl IntoIterator<Item = Blueprint>) -> Server {
        Self::with_config(blueprints, test_config()).await
    }

    pub async fn with_config(blueprints: impl IntoIterator<Item = Blueprint>, config: Config) -> Server {
        Self::with_builder(Orchestrator::builder().blueprints(blueprints).config(config)).await
    }

    /// An orchestrator from a builder (for what only the builder sets, e.g. a history backend);
    /// returns once it answers.
    pub async fn with_builder(builder: avto::server::OrchestratorBuilder) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self::with_builder_on(builder, listener);
        server.inner.ready().await.expect("the server answers");
        server
    }

    /// An orchestrator from a builder on a listener the test bound (e.g. the port of a server it
    /// stopped, to restart it there); does not wait for it to answer.
    pub fn with_builder_on(builder: avto::server::OrchestratorBuilder, listener: tokio::net::TcpListener) -> Server {
        let inner = TestServer::serve(builder, listener).expect("orchestrator builds");
        // `http://` also for a TLS server: the TLS tests put their own scheme and host in.
        Server { base: format!("http://{}", inner.addr()), core: inner.core().clone(), inner }
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
    pub async fn stop(self) {
        if let Err(e) = self.inner.stop().await {
            tracing::warn!("test server stopped with an error: {e}");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The typed client (`avto::client`) with the test client token.
    pub fn typed(&self) -> Client {
        self.inner.client()
    }

    /// A client-API client with the test client token.
    pub fn client(&self) -> ApiClient {
        ApiClient { http: reqwest::Client::new(), base: self.base.clone(), token: CLIENT_TOKEN.into() }
    }
}

/// The tests' shape of the client API: `(status, body)` answers and panics instead of errors,
/// over the typed [`avto::client::Client`].
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl ApiClient {
    pub fn new(base: &str, token: &str) -> ApiClient {
        ApiClient { http: reqwest::Client::new(), base: base.to_owned(), token: token.to_owned() }
    }

    pub fn with_token(&self, token: &str) -> ApiClient {
        ApiClient { token: token.into(), ..self.clone() }
    }

    /// The typed client of this base URL and token (short waits between polls).
    pub fn typed(&self) -> Client {
        Client::new(&self.base, &self.token)
            .with_http(self.http.clone())
            .poll_interval(Duration::from_millis(10), Duration::from_millis(40))
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, body) = self.typed().raw(reqwest::Method::POST, path, Some(body)).await.unwrap();
        (status.as_u16(), body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.typed().raw(reqwest::Method::GET, path, None).await.unwrap();
        (status.as_u16(), body)
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
        match self.typed().create(path, initial_data).await {
            Ok(id) => id.0,
            Err(e) => panic!("create job: {e} {:?}", e.body()),
        }
    }

    /// The detailed status document of a job; panics unless the answer is 200.
    pub async fn job(&self, id: &str) -> Value {
        match self.typed().get(id).await {
            Ok(job) => job.raw,
            Err(e) => panic!("job status: {e} {:?}", e.body()),
        }
    }

    /// Polls until the job has one of `statuses` (panics after `timeout`).
    pub async fn wait_for(&self, id: &str, statuses: &[&str], timeout: Duration) -> Value {
        let what = format!("{statuses:?}");
        self.wait_until(id, timeout, &what, |job| statuses.contains(&job["status"].as_str().unwrap_or_default())).await
    }

    /// Waits for a terminal status.
    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> Value {
        match self.typed().wait(id, timeout).await {
            Ok(job) => job.raw,
            Err(e) => panic!("{e}: {:?}", last_seen(&e)),
        }
    }

    /// Polls the detailed job until `pred` holds (panics after `timeout`).
    pub async fn wait_until(&self, id: &str, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        match self.typed().wait_until(id, timeout, what, |job| pred(&job.raw)).await {
            Ok(job) => job.raw,
            Err(e) => panic!("{e}: {:?}", last_seen(&e)),
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

/// The job document a timed-out wait saw last.
fn last_seen(e: &avto::client::ClientError) -> Option<&Value> {
    match e {
        avto::client::ClientError::Timeout { last, .. } => last.as_ref().map(|j| &j.raw),
        _ => None,
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

/// Test logs on the test's output (`RUST_LOG`, else `default_filter`); once per test binary
/// (the first call, or the first test server, sets it up: see [`avto::testing::init_logging`]).
pub fn init_tracing(default_filter: &str) {
    avto::testing::init_logging_with(default_filter);
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

/// An in-process Rust SDK worker: an [`avto::testing::TestWorker`] (its own thread and runtime).
/// Dropping it asks for a graceful shutdown (offline heartbeat, running tasks drained), like SIGTERM.
pub struct RustWorker {
    pub worker_id: String,
    inner: TestWorker,
}

impl RustWorker {
    /// A worker of the orchestrator at `base` with the test defaults of [`RustWorker::builder`];
    /// `configure` adds its tasks and settings.
    pub fn start(base: &str, worker_id: &str, configure: impl FnOnce(WorkerBuilder) -> WorkerBuilder) -> RustWorker {
        Self::spawn(configure(Self::builder(worker_id).orchestrator_url(base)))
    }

    /// The test defaults of [`TestWorker::builder`]: the test tokens and secret, heartbeats every
    /// 300 ms, short polls and backoffs, no WebSocket. Add orchestrators and tasks, then
    /// [`RustWorker::spawn`].
    pub fn builder(worker_id: &str) -> WorkerBuilder {
        TestWorker::builder(worker_id)
    }

    /// Builds and runs `builder` in the background.
    pub fn spawn(builder: WorkerBuilder) -> RustWorker {
        let inner = TestWorker::spawn(builder).expect("the worker builds");
        RustWorker { worker_id: inner.id().to_owned(), inner }
    }

    /// Graceful shutdown, waiting until the worker has stopped.
    pub async fn stop(self) {
        self.inner.stop().await.expect("the worker stops cleanly and in time");
    }

    /// Abrupt end (no goodbye, no more heartbeats): see [`TestWorker::kill`].
    pub async fn kill(self) {
        self.inner.kill().await;
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

/// Reads server-sent events (the dashboard's `GET /ui/api/stream`): `(event, data)` pairs,
/// comments and other fields skipped.
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    /// A reader of `resp`, which must be a 200 `text/event-stream` answer.
    pub fn new(resp: reqwest::Response) -> SseReader {
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[reqwest::header::CONTENT_TYPE], "text/event-stream");
        SseReader { resp, buf: String::new() }
    }

    /// The next event, or `None` when `within` passed first; panics when the stream ends.
    pub async fn next_within(&mut self, within: Duration) -> Option<(String, Value)> {
        tokio::time::timeout(within, async {
            loop {
                while let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let (mut kind, mut data) = (None, None);
                    for line in block.lines() {
                        if let Some(k) = line.strip_prefix("event: ") {
                            kind = Some(k.to_owned());
                        } else if let Some(d) = line.strip_prefix("data: ") {
                            data = Some(serde_json::from_str::<Value>(d).unwrap());
                        }
                    }
                    if let (Some(k), Some(d)) = (kind, data) {
                        return (k, d);
                    }
                }
                let chunk = self.resp.chunk().await.unwrap().expect("the stream ended");
                self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        })
        .await
        .ok()
    }
}
