//! Several orchestrator instances on one Redis, and what they survive.
//!
//! * two in-process instances on one key prefix, Rust SDK workers split between them: jobs
//!   created on either finish once; a job is visible, cancellable and approvable on the other;
//! * Redis connection loss (every Redis connection of this process killed with `CLIENT KILL`)
//!   in the middle of a run: no job lost;
//! * `kill -9` of an orchestrator process with jobs in flight, then a restart: every job reaches
//!   one terminal state and each task result is applied once (`AVTO_CRASH_JOBS`, default 200);
//! * the scheduler and the reputation recalculation: once per fire time / period across instances;
//! * the dashboard's live stream on one instance carries jobs moved on another (changes cross
//!   over the bus only while a dashboard is open: none is published before).
//!
//! Redis: `AVTO_TEST_REDIS_URL` (default `redis://127.0.0.1:6379/0`); each test uses its own
//! key prefix and deletes it at the end. A missing Redis fails these tests.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use avto::worker::{TaskHandle, TaskOutcome, WorkerBuilder};
use avto_tests::blueprints::{approval_flow, echo_flow};
use avto_tests::{
    free_port, redis_url, test_config, RedisPrefix, RustWorker, Server, SseReader, CLIENT_TOKEN, SECRET, WORKER_TOKEN,
};
use futures::StreamExt;
use serde_json::{json, Value};

/// An instance on the Redis prefix `p`, once it answers.
async fn server(p: &RedisPrefix, blueprints: impl IntoIterator<Item = avto::Blueprint>) -> Server {
    let s = Server::with_redis(blueprints, &p.url, &p.prefix, test_config()).await;
    wait_ready(&s.base).await;
    s
}

async fn wait_ready(base: &str) {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/_public/status")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the orchestrator at {base} did not come up");
}

/// The tests of this file run one at a time: one of them kills every Redis connection of the
/// process, which must not land in the middle of another test's timing assertions.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Which workers executed which job (several entries = executed again), and which saw a cancel.
#[derive(Clone, Default)]
struct Executions(Arc<Mutex<HashMap<String, Vec<String>>>>, Arc<Mutex<HashSet<String>>>);

impl Executions {
    fn total(&self) -> usize {
        self.0.lock().unwrap().values().map(Vec::len).sum()
    }
    fn of(&self, job: &str) -> Vec<String> {
        self.0.lock().unwrap().get(job).cloned().unwrap_or_default()
    }
}

/// An echo worker that records each execution and sleeps `params.sleep_ms` (or a few ms).
fn echo_worker(
    base: &str,
    id: &str,
    execs: &Executions,
    configure: impl FnOnce(WorkerBuilder) -> WorkerBuilder,
) -> RustWorker {
    let execs = execs.clone();
    RustWorker::start(base, id, move |b| {
        configure(b.task("echo", move |params: Value, task: TaskHandle| {
            let execs = execs.clone();
            async move {
                execs.0.lock().unwrap().entry(task.job_id().to_owned()).or_default().push(format!(
                    "{}/{}",
                    task.worker_id(),
                    task.task_id()
                ));
                let ms = params["sleep_ms"].as_u64().unwrap_or(5);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    _ = task.cancelled() => {
                        execs.1.lock().unwrap().insert(task.job_id().to_owned());
                        return TaskOutcome::cancelled();
                    }
                }
                TaskOutcome::success(json!({"echo": params, "worker": task.worker_id()}))
            }
        }))
    })
}

async fn wait_live(server: &Server, n: usize) {
    for _ in 0..300 {
        if server.core.dispatcher().live_workers().await.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("only {} of {n} workers registered", server.core.dispatcher().live_workers().await.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_jobs_and_workers() {
    let _serial = SERIAL.lock().await;
    let p = RedisPrefix::new();
    let a = server(&p, [echo_flow::blueprint()]).await;
    let b = server(&p, [echo_flow::blueprint()]).await;
    let execs = Executions::default();
    let _workers = [
        echo_worker(&a.base, "a-1", &execs, |b| b),
        echo_worker(&a.base, "a-2", &execs, |b| b),
        echo_worker(&b.base, "b-1", &execs, |b| b),
        echo_worker(&b.base, "b-2", &execs, |b| b),
    ];
    wait_live(&a, 4).await;
    let (ca, cb) = (a.client(), b.client());
    let creates = (0..60usize).map(|i| {
        let c = if i.is_multiple_of(2) { ca.clone() } else { cb.clone() };
        async move { (i % 2, c.create("/api/v1/jobs/echo", json!({"i": i, "sleep_ms": 5 + i % 20})).await) }
    });
    let jobs: Vec<(usize, String)> = futures::future::join_all(creates).await;
    let mut crossed = HashSet::new();
    for (origin, id) in &jobs {
        // Read it back on the other instance.
        let other = if *origin == 0 { &cb } else { &ca };
        let job = other.wait_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(job["status"], "finished", "{job}");
        let runs = execs.of(id);
        assert_eq!(runs.len(), 1, "job {id} executed {runs:?}");
        let on_b = runs[0].starts_with("b-");
        if (*origin == 0) == on_b {
            crossed.insert(*origin);
        }
        let same = if *origin == 0 { &ca } else { &cb };
        assert_eq!(same.job(id).await["status"], "finished");
    }
    assert_eq!(crossed.len(), 2, "jobs created on each instance ran on workers of the other");
    let (_, dash) = cb.get("/api/v1/dashboard").await;
    assert_eq!(dash["jobs"]["finished"], 60, "{dash}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_on_one_instance_is_visible_cancellable_and_approvable_on_the_other() {
    let _serial = SERIAL.lock().await;
    let p = RedisPrefix::new();
    let a = server(&p, [echo_flow::blueprint(), approval_flow::blueprint()]).await;
    let b = server(&p, [echo_flow::blueprint(), approval_flow::blueprint()]).await;
    let execs = Executions::default();
    // Connected to A over a WebSocket, heartbeats rare: a cancellation from B reaches it over the bus.
    let _w = echo_worker(&a.base, "ws-worker", &execs, |b| {
        b.enable_websockets(true).heartbeat_interval(Duration::from_secs(20))
    });
    wait_live(&b, 1).await;
    let (ca, cb) = (a.client(), b.client());

    let id = ca.create("/api/v1/jobs/echo", json!({"sleep_ms": 60_000})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while execs.of(&id).is_empty() {
        assert!(Instant::now() < deadline, "the task was not picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cb.job(&id).await["status"], "waiting_for_worker", "visible on B");
    let (status, body) = cb.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert!(status < 300, "cancel on B: {status} {body}");
    assert_eq!(ca.job(&id).await["status"], "cancelled");
    // The worker's handler sees the cancellation at once: pushed from B over the bus to the
    // WebSocket the worker keeps with A (its next heartbeat is 20 s away).
    let deadline = Instant::now() + Duration::from_secs(3);
    while !execs.1.lock().unwrap().contains(&id) {
        assert!(Instant::now() < deadline, "the cancellation did not reach the worker over the bus");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = cb.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert!(again.0 >= 400, "a second cancel is refused on either instance: {again:?}");

    let id = ca.create("/api/v1/jobs/approval", json!({})).await;
    cb.wait_for(&id, &["waiting_for_human"], Duration::from_secs(10)).await;
    let (status, body) = cb.post(&format!("/api/v1/jobs/{id}/approval"), &json!({"decision": "approved"})).await;
    assert_eq!(status, 200, "approval on B: {body}");
    let job = ca.wait_terminal(&id, Duration::from_secs(10)).await;
    assert_eq!((job["status"].as_str(), job["current_state"].as_str()), (Some("finished"), Some("approved")), "{job}");
}

/// Local addresses (`127.0.0.1:port`) of this process's TCP connections to port 6379.
fn own_redis_connections() -> Vec<String> {
    let inodes: HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| Some(l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned()))
        .collect();
    let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, inode) = (cols[1], cols[2], cols[9]);
        let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap();
        if port(remote) == 6379 && inodes.contains(inode) && cols[3] == "01" {
            out.push(format!("127.0.0.1:{}", port(local)));
        }
    }
    out
}

/// `CLIENT KILL` of every Redis connection this process has (both instances' data and bus
/// connections); returns how many were killed. Other users of the shared Redis are untouched.
async fn kill_own_redis_connections() -> usize {
    let killer = avto::storage::redis::RedisConn::open(&redis_url(), "unused:").unwrap();
    killer.ping().await.unwrap();
    let mine = own_redis_connections();
    let mut killed = 0;
    for addr in mine {
        let cmd = avto::storage::redis::client::cmd("CLIENT")
            .arg("KILL")
            .arg("ADDR")
            .arg(&addr)
            .arg("SKIPME")
            .arg("yes")
            .clone();
        if let Ok(n) = killer.query::<i64>(&cmd).await {
            killed += n as usize;
        }
    }
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_connection_loss_loses_no_job() {
    let _serial = SERIAL.lock().await;
    let p = RedisPrefix::new();
    // A task stranded by a lost reply would come back after its execution timeout.
    let config = || avto_tests::test_config_with(&[("WORKER_TIMEOUT_SECONDS", "5")]);
    let a = Server::with_redis([echo_flow::blueprint()], &p.url, &p.prefix, config()).await;
    let b = Server::with_redis([echo_flow::blueprint()], &p.url, &p.prefix, config()).await;
    wait_ready(&a.base).await;
    wait_ready(&b.base).await;
    let execs = Executions::default();
    let workers = [
        echo_worker(&a.base, "a-1", &execs, |b| b.max_concurrent_tasks(4)),
        echo_worker(&b.base, "b-1", &execs, |b| b.max_concurrent_tasks(4)),
    ];
    wait_live(&a, 2).await;
    let (ca, cb) = (a.client(), b.client());
    let mut ids = Vec::new();
    for i in 0..120usize {
        let c = if i.is_multiple_of(2) { &ca } else { &cb };
        ids.push(c.create("/api/v1/jobs/echo", json!({"i": i, "sleep_ms": 20})).await);
    }
    while execs.total() < 30 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = kill_own_redis_connections().await;
    assert!(killed >= 4, "both instances' data and bus connections were killed (killed {killed})");
    // More jobs while the instances reconnect, and a second connection loss among them.
    for i in 0..40usize {
        let c = if i.is_multiple_of(2) { &cb } else { &ca };
        ids.push(c.create("/api/v1/jobs/echo", json!({"after": i, "sleep_ms": 5})).await);
        if i == 20 {
            assert!(kill_own_redis_connections().await >= 2);
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let c = if i.is_multiple_of(2) { &cb } else { &ca };
        let job = c.wait_terminal(id, Duration::from_secs(60)).await;
        assert_eq!(job["status"], "finished", "{job}");
    }
    let (_, dash) = ca.get("/api/v1/dashboard").await;
    assert_eq!(dash["jobs"]["finished"], 160, "{dash}");
    let twice: Vec<_> = ids.iter().filter(|id| execs.of(id).len() != 1).collect();
    assert!(twice.is_empty(), "tasks that did not run exactly once: {twice:?}");

    // The bus subscriptions came back: a cancellation on B reaches a worker's WebSocket on A.
    for w in workers {
        w.stop().await;
    }
    let ws = echo_worker(&a.base, "ws-after-loss", &execs, |b| {
        b.enable_websockets(true).heartbeat_interval(Duration::from_secs(20))
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.core.dispatcher().live_workers().await.iter().map(|w| w.info.worker_id.as_str()).collect::<Vec<_>>()
        != ["ws-after-loss"]
    {
        assert!(Instant::now() < deadline, "only the WebSocket worker is live");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = cb.create("/api/v1/jobs/echo", json!({"sleep_ms": 60_000})).await;
    while execs.of(&id).is_empty() {
        assert!(Instant::now() < deadline + Duration::from_secs(10), "the task was not picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = cb.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert!(status < 300, "cancel on B: {status} {body}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !execs.1.lock().unwrap().contains(&id) {
        assert!(Instant::now() < deadline, "the cancellation did not cross the re-subscribed bus");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(ws);
}

/// Round robin rotates over the workers once for all instances (issue #14 item 6): jobs created
/// on two instances in turn go to the three workers in turn, as they would on one instance
/// (with a rotation per instance, each instance would start again at the first worker).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_rotation_is_shared_by_the_instances() {
    let _serial = SERIAL.lock().await;
    let p = RedisPrefix::new();
    let a = server(&p, [avto_tests::blueprints::dispatch_options::blueprint()]).await;
    let b = server(&p, [avto_tests::blueprints::dispatch_options::blueprint()]).await;
    let ids = ["rr-shared-1", "rr-shared-2", "rr-shared-3"];
    let _workers: Vec<RustWorker> = ids
        .iter()
        .map(|id| {
            RustWorker::start(&a.base, id, |w| {
                w.task("work", |_p: Value, task: TaskHandle| async move {
                    TaskOutcome::success(json!({ "by": task.worker_id() }))
                })
            })
        })
        .collect();
    for s in [&a, &b] {
        wait_live(s, 3).await;
    }
    let mut by = Vec::new();
    for i in 0..9 {
        let c = if i % 2 == 0 { a.client() } else { b.client() };
        let id = c.create("/api/v1/jobs/dispatch", json!({"strategy": "round_robin", "i": i})).await;
        let job = c.wait_terminal(&id, Duration::from_secs(20)).await;
        assert_eq!(job["status"], "finished", "{job}");
        by.push(job["state_history"]["by"].as_str().unwrap().to_owned());
    }
    for window in by.windows(3) {
        let distinct: HashSet<&String> = window.iter().collect();
        assert_eq!(distinct.len(), 3, "three jobs in a row, from either instance, go to three workers: {by:?}");
    }
}

/// A new job's first step on Redis runs before the job is stored, which is then written once
/// with its task; the job is stored before its id is handed out whatever that step does: first
/// handlers slower than the create request's budget leave it stored as created (visible, and
/// on the other instance too) while they run, and a task no worker can take yet (parked) finds
/// its job once a worker comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_jobs_first_step_runs_before_it_is_stored_and_never_hides_it() {
    let _serial = SERIAL.lock().await;
    let p = RedisPrefix::new();
    let a = server(&p, [avto_tests::blueprints::dispatch_options::blueprint()]).await;
    let b = server(&p, [avto_tests::blueprints::dispatch_options::blueprint()]).await;
    let (ca, cb) = (a.client(), b.client());
    let _worker = RustWorker::start(&a.base, "first-step-w", |w| {
        w.task("work", |p: Value, _t: TaskHandle| async move { TaskOutcome::success(json!({ "got": p["i"] })) })
    });
    wait_live(&a, 1).await;

    // Quick first steps: created, dispatched and finished, each once.
    let creates = (0..40).map(|i| {
        let ca = ca.clone();
        async move { ca.create("/api/v1/jobs/dispatch", json!({ "i": i })).await }
    });
    let ids: Vec<String> = futures::future::join_all(creates).await;
    for (i, id) in ids.iter().enumerate() {
        let job = cb.wait_terminal(id, Duration::from_secs(20)).await;
        assert_eq!(job["status"], "finished", "{job}");
        assert_eq!(job["state_history"]["got"], i, "{job}");
    }
    let (_, dash) = cb.get("/api/v1/dashboard").await;
    assert_eq!(dash["jobs"]["finished"], 40, "counted once each: {dash}");

    // A first handler that takes 2 s: the create request does not wait for it; the job is there
    // as created meanwhile (on both instances), then goes on.
    let id = ca.create("/api/v1/jobs/dispatch", json!({ "i": 100, "start_delay_ms": 2000 })).await;
    for c in [&ca, &cb] {
        let job = c.job(&id).await;
        assert_eq!(job["status"], "pending", "stored as created while the first handler runs: {job}");
    }
    let job = cb.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!((job["status"].as_str(), job["state_history"]["got"].as_u64()), (Some("finished"), Some(100)), "{job}");

    // A task no worker can take yet: parked, its job stored; a worker with the skill comes.
    let id = ca.create("/api/v1/jobs/dispatch", json!({ "i": 200, "skill": "later" })).await;
    let job = cb.wait_for(&id, &["waiting_for_worker"], Duration::from_secs(10)).await;
    assert_eq!(job["status"], "waiting_for_worker", "{job}");
    let _later = RustWorker::start(&b.base, "first-step-later", |w| {
        w.task("later", |p: Value, _t: TaskHandle| async move { TaskOutcome::success(json!({ "got": p["i"] })) })
    });
    let job = ca.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!((job["status"].as_str(), job["state_history"]["got"].as_u64()), (Some("finished"), Some(200)), "{job}");
    let (_, dash) = ca.get("/api/v1/dashboard").await;
    assert_eq!(dash["jobs"]["finished"], 42, "{dash}");
}

// ---------------------------------------------------------------------------------------------
// kill -9 and restart

/// Counts the worker SDK's result answers per job (`result accepted` / `result ignored`).
#[derive(Default)]
struct ResultLog {
    accepted: Mutex<HashMap<String, usize>>,
    ignored: Mutex<HashMap<String, usize>>,
}

static RESULTS: LazyLock<Arc<ResultLog>> = LazyLock::new(|| {
    let log = Arc::new(ResultLog::default());
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry().with(ResultLayer(log.clone()));
    tracing::subscriber::set_global_default(subscriber).expect("the result counter is the only subscriber");
    log
});

struct ResultLayer(Arc<ResultLog>);

#[derive(Default)]
struct Fields {
    /// The format message (events may also carry a field named `message`: the first one wins).
    message: String,
    job_id: String,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "job_id" {
            self.job_id = value.to_owned();
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" if self.message.is_empty() => self.message = format!("{value:?}"),
            "job_id" => self.job_id = format!("{value:?}").trim_matches('"').to_owned(),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ResultLayer {
    fn register_callsite(&self, metadata: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        match metadata.target().starts_with("avto::worker") {
            true => tracing::subscriber::Interest::always(),
            false => tracing::subscriber::Interest::never(),
        }
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) -> bool {
        metadata.target().starts_with("avto::worker")
    }

    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        if !event.metadata().target().starts_with("avto::worker") {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let map = if f.message.starts_with("result accepted") {
            &self.0.accepted
        } else if f.message.starts_with("result ignored") {
            &self.0.ignored
        } else {
            return;
        };
        *map.lock().unwrap().entry(f.job_id).or_default() += 1;
    }
}

struct OrchestratorProcess {
    child: Option<Child>,
    env: Vec<(String, String)>,
    log: std::path::PathBuf,
}

impl OrchestratorProcess {
    fn start(env: Vec<(String, String)>, log: std::path::PathBuf) -> OrchestratorProcess {
        let mut p = OrchestratorProcess { child: None, env, log };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_avto-redis-orchestrator"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the orchestrator process");
        self.child = Some(child);
    }

    /// SIGTERM, then waits for the process to end (at most `within`); its exit status.
    async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the process runs");
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("the orchestrator still ran {within:?} after SIGTERM; see {}", self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown of any kind.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for OrchestratorProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn dashboard_terminal(c: &avto_tests::ApiClient) -> u64 {
    let (_, dash) = c.get("/api/v1/dashboard").await;
    ["finished", "failed", "cancelled", "quarantined"].iter().filter_map(|s| dash["jobs"][*s].as_u64()).sum()
}

/// Four echo workers (`{prefix}-w0` ..) that keep sending a result while the orchestrator is
/// down (8 retries from 100 ms).
fn patient_workers(base: &str, prefix: &str, execs: &Executions) -> Vec<RustWorker> {
    (0..4)
        .map(|i| {
            echo_worker(base, &format!("{prefix}-w{i}"), execs, |b| {
                b.max_concurrent_tasks(4).configure(|c| {
                    c.result_max_retries = 8;
                    c.result_retry_initial_delay = Duration::from_millis(100);
                })
            })
        })
        .collect()
}

/// Creates `n` echo jobs in the background (8 requests at once; job `i` sleeps 20-100 ms at
/// its worker), with `webhook_url` if given, each sent again until an orchestrator accepts it
/// (the requests sent again are counted in `resent`); answers their ids.
fn spawn_creator(
    client: &avto_tests::ApiClient,
    n: usize,
    webhook_url: Option<String>,
    resent: &Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let (client, resent) = (client.clone(), resent.clone());
    tokio::spawn(async move {
        futures::stream::iter(0..n)
            .map(|i| {
                let (c, resent, url) = (client.clone(), resent.clone(), webhook_url.clone());
                async move {
                    let body = json!({"initial_data": {"i": i, "sleep_ms": 20 + (i * 37) % 80}, "webhook_url": url});
                    create_until_accepted(&c, &body, &resent).await
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<String>>()
            .await
    })
}

/// The environment of an orchestrator process on `port` and the Redis prefix `p` (fast timings),
/// plus `extra`.
fn process_env(port: u16, p: &RedisPrefix, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("API_HOST", "127.0.0.1".to_owned()),
        ("API_PORT", port.to_string()),
        ("REDIS_URL", p.url.clone()),
        ("REDIS_KEY_PREFIX", p.prefix.clone()),
        ("CLIENT_TOKEN", CLIENT_TOKEN.to_owned()),
        ("GLOBAL_WORKER_TOKEN", WORKER_TOKEN.to_owned()),
        ("ORCHESTRATOR_SECRET_KEY", SECRET.to_owned()),
        ("RATE_LIMITING_ENABLED", "false".to_owned()),
        ("WORKER_POLL_TIMEOUT_SECONDS", "2".to_owned()),
        ("WATCHER_INTERVAL_SECONDS", "0.2".to_owned()),
        ("WORKER_TIMEOUT_SECONDS", "6".to_owned()),
        ("JOB_LOCK_LEASE_SECONDS", "2".to_owned()),
        ("JOB_RECOVERY_SECONDS", "3".to_owned()),
        // Few handler runs at once, so jobs wait `pending` when the process dies.
        ("EXECUTOR_MAX_CONCURRENT_JOBS", "4".to_owned()),
        ("LOG_LEVEL", "warn".to_owned()),
        ("LOG_FORMAT", "text".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_with_jobs_in_flight_then_restart_every_job_ends_once() {
    let _serial = SERIAL.lock().await;
    let results = RESULTS.clone();
    let n: usize = std::env::var("AVTO_CRASH_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let p = RedisPrefix::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = process_env(port, &p, &[]);
    let log = std::env::temp_dir().join(format!("avto-crash-{port}.log"));
    let _ = std::fs::remove_file(&log);
    let mut orchestrator = OrchestratorProcess::start(env, log.clone());
    wait_ready(&base).await;

    let execs = Executions::default();
    let workers = patient_workers(&base, "crash", &execs);
    let client = avto_tests::ApiClient { http: reqwest::Client::new(), base: base.clone(), token: CLIENT_TOKEN.into() };
    // Jobs are created while the orchestrator is killed: a create that fails is sent again
    // (its job may exist anyway, unknown to us: the dashboard check covers it).
    let resent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let creator = spawn_creator(&client, n, None, &resent);
    while execs.total() < n / 8 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, at_kill) = client.get("/api/v1/dashboard").await;
    orchestrator.kill9();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    orchestrator.spawn();
    wait_ready(&base).await;
    let ids = creator.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, dash) = client.get("/api/v1/dashboard").await;
        let unsettled = ["pending", "running", "waiting_for_worker", "awaiting_retry"]
            .iter()
            .filter_map(|s| dash["jobs"][*s].as_u64())
            .sum::<u64>();
        if unsettled == 0 && dashboard_terminal(&client).await >= n as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "not every job ended in time; see {}", log.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovery = killed_at.elapsed();
    // Every job: one terminal state, reached through the blueprint once.
    let mut statuses: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        let job = client.job(id).await;
        *statuses.entry(job["status"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
        assert_eq!(job["status"], "finished", "{job}");
        assert_eq!(job["path"], json!(["start", "finished"]), "each state entered once: {job}");
    }
    let (_, dash) = client.get("/api/v1/dashboard").await;
    let created = dash["jobs"]["finished"].as_u64().unwrap_or(0);
    assert!(created >= n as u64, "every job finished: {dash}");
    let other: u64 = dash["jobs"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "finished" && *k != "queued")
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    assert_eq!(other, 0, "no job in any other status: {dash}");
    // Each result applied once: no job has two accepted results.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted = results.accepted.lock().unwrap().clone();
    let ignored = results.ignored.lock().unwrap().clone();
    let mine: HashSet<&String> = ids.iter().collect();
    let accepted_total: usize = accepted.iter().filter(|(j, _)| mine.contains(j)).map(|(_, n)| n).sum();
    let ignored_total: usize = ignored.iter().filter(|(j, _)| mine.contains(j)).map(|(_, n)| n).sum();
    let twice: Vec<_> = accepted.iter().filter(|(j, c)| mine.contains(j) && **c > 1).collect();
    assert!(twice.is_empty(), "results accepted more than once: {twice:?}");
    for j in ids.iter().filter(|id| execs.of(id).len() > 1) {
        eprintln!(
            "executed again: job {j}: {:?}, accepted {:?}, ignored {:?}",
            execs.of(j),
            accepted.get(j),
            ignored.get(j)
        );
    }
    let executions = execs.total();
    let reexecuted = ids.iter().filter(|id| execs.of(id).len() > 1).count();
    assert!(executions >= n);
    eprintln!(
        "crash test: {n} jobs ({} create requests sent again, {} more jobs created by requests whose answer the kill \
         swallowed); at the kill -9: {}; \
         all finished {:.1} s after the kill ({statuses:?}); worker executions {executions} ({reexecuted} jobs \
         executed again); results accepted {accepted_total}, ignored {ignored_total}; no job has two accepted results",
        resent.load(std::sync::atomic::Ordering::SeqCst),
        created - n as u64,
        at_kill["jobs"],
        recovery.as_secs_f64()
    );
    drop(workers);
    drop(orchestrator);
    let _ = std::fs::remove_file(&log); // kept only when the test fails
}

// ---------------------------------------------------------------------------------------------
// SIGTERM under load, kill -9 with webhooks in flight (issue #14 items 4 and 5)

/// A webhook receiver that records every delivery (job id, event id) and, while `hold` is set,
/// answers nothing (each request waits until the sender gives up): webhooks stay in flight.
#[derive(Clone, Default)]
struct Receiver {
    hold: Arc<std::sync::atomic::AtomicBool>,
    /// Deliveries answered 200: job id -> event ids (one per delivery).
    delivered: Arc<Mutex<HashMap<String, Vec<String>>>>,
    /// Requests left unanswered.
    held: Arc<std::sync::atomic::AtomicUsize>,
}

impl Receiver {
    async fn start(&self) -> String {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let me = me.clone();
                async move {
                    if me.hold.load(std::sync::atomic::Ordering::SeqCst) {
                        me.held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    let event = headers.get("x-avto-event-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    let job = body["job_id"].as_str().unwrap_or("").to_owned();
                    me.delivered.lock().unwrap().entry(job).or_default().push(event);
                    "ok"
                }
            }),
        );
        format!("http://{}/hook", avto_tests::serve_http(app).await)
    }

    fn delivered(&self) -> HashMap<String, Vec<String>> {
        self.delivered.lock().unwrap().clone()
    }
}

/// Creates a job, sending the request again until an orchestrator accepts it (it may be down);
/// counts the requests sent again in `resent`.
async fn create_until_accepted(
    c: &avto_tests::ApiClient,
    body: &Value,
    resent: &std::sync::atomic::AtomicUsize,
) -> String {
    loop {
        let sent = c
            .http
            .post(format!("{}/api/v1/jobs/echo", c.base))
            .header("X-Client-Token", &c.token)
            .json(body)
            .send()
            .await;
        if let Ok(r) = sent {
            if r.status().as_u16() == 202 {
                let v: Value = r.json().await.unwrap();
                return v["job_id"].as_str().unwrap().to_owned();
            }
        }
        resent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every job of `ids` finished (through the blueprint once) and its webhook was
/// delivered, at most `within`.
async fn wait_finished_and_delivered(c: &avto_tests::ApiClient, ids: &[String], hooks: &Receiver, within: Duration) {
    let deadline = Instant::now() + within;
    let mut pending: Vec<&String> = ids.iter().collect();
    while !pending.is_empty() {
        let delivered = hooks.delivered();
        let mut left = Vec::new();
        for id in pending {
            let job = c.job(id).await;
            if job["status"] != "finished" || !delivered.contains_key(id.as_str()) {
                left.push(id);
            }
        }
        pending = left;
        if !pending.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} jobs not finished with their webhook delivered, e.g. {}",
                pending.len(),
                c.job(pending[0]).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for id in ids {
        let job = c.job(id).await;
        assert_eq!(job["path"], json!(["start", "finished"]), "each state entered once: {job}");
    }
}

/// SIGTERM while jobs are created and run: the process stops within `SHUTDOWN_GRACE_SECONDS`
/// (exit status 0) after finishing its handler runs and flushing webhooks; a new instance on the
/// same Redis finishes every job, and every job-end webhook arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_then_restart_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let n = 150;
    let p = RedisPrefix::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let hooks = Receiver::default();
    let hook_url = hooks.start().await;
    let env = process_env(
        port,
        &p,
        &[("WEBHOOK_ALLOW_PRIVATE", "true"), ("SHUTDOWN_GRACE_SECONDS", "10"), ("WEBHOOK_RETRY_BASE_SECONDS", "0.2")],
    );
    let log = std::env::temp_dir().join(format!("avto-sigterm-{port}.log"));
    let _ = std::fs::remove_file(&log);
    let mut orchestrator = OrchestratorProcess::start(env, log.clone());
    wait_ready(&base).await;
    let execs = Executions::default();
    let workers = patient_workers(&base, "term", &execs);
    let client = avto_tests::ApiClient { http: reqwest::Client::new(), base: base.clone(), token: CLIENT_TOKEN.into() };
    let creator = spawn_creator(&client, n, Some(hook_url.clone()), &Arc::default());
    while execs.total() < n / 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopped_at = Instant::now();
    let status = orchestrator.terminate(Duration::from_secs(15)).await;
    let took = stopped_at.elapsed();
    assert!(status.success(), "exit status {status}; see {}", log.display());
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !logged.contains("still in progress at the end of the shutdown grace"),
        "the shutdown finished its work: {logged}"
    );
    let delivered_at_stop = hooks.delivered().len();
    orchestrator.spawn();
    wait_ready(&base).await;
    let ids = creator.await.unwrap();
    wait_finished_and_delivered(&client, &ids, &hooks, Duration::from_secs(90)).await;
    eprintln!(
        "SIGTERM test: {n} jobs; the process stopped {:.2} s after SIGTERM (exit 0) with {delivered_at_stop} webhooks \
         delivered; after the restart every job finished and every webhook arrived",
        took.as_secs_f64()
    );
    drop(workers);
    drop(orchestrator);
    let _ = std::fs::remove_file(&log);
}

/// kill -9 while job-end webhooks are in flight (the receiver holds every request): none is lost.
/// They wait in the Redis outbox; the restarted instance sends each again once its first
/// sender's claim ran out, with the same event id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_with_webhooks_in_flight_loses_none() {
    let _serial = SERIAL.lock().await;
    let n = 40;
    let p = RedisPrefix::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let hooks = Receiver::default();
    hooks.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let hook_url = hooks.start().await;
    // A claim of (1 + 2) x 2 + 0.2 x 4 + 5 = 11.8 s.
    let env = process_env(
        port,
        &p,
        &[
            ("WEBHOOK_ALLOW_PRIVATE", "true"),
            ("WEBHOOK_CONNECT_TIMEOUT_SECONDS", "1"),
            ("WEBHOOK_TIMEOUT_SECONDS", "2"),
            ("WEBHOOK_RETRY_BASE_SECONDS", "0.2"),
        ],
    );
    let log = std::env::temp_dir().join(format!("avto-kill9-hooks-{port}.log"));
    let _ = std::fs::remove_file(&log);
    let mut orchestrator = OrchestratorProcess::start(env, log.clone());
    wait_ready(&base).await;
    let execs = Executions::default();
    let workers: Vec<RustWorker> = (0..2).map(|i| echo_worker(&base, &format!("hooks-w{i}"), &execs, |b| b)).collect();
    let client = avto_tests::ApiClient { http: reqwest::Client::new(), base: base.clone(), token: CLIENT_TOKEN.into() };
    let mut ids = Vec::new();
    for i in 0..n {
        let body = json!({"initial_data": {"i": i}, "webhook_url": hook_url});
        ids.push(create_until_accepted(&client, &body, &Default::default()).await);
    }
    // Every job ended; its webhook is in flight (held by the receiver), none delivered.
    let deadline = Instant::now() + Duration::from_secs(30);
    while dashboard_terminal(&client).await < n as u64 || hooks.held.load(std::sync::atomic::Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "jobs did not end, or their webhooks were not sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hooks.delivered().is_empty());
    orchestrator.kill9();
    let killed_at = Instant::now();
    hooks.hold.store(false, std::sync::atomic::Ordering::SeqCst);
    orchestrator.spawn();
    wait_ready(&base).await;
    wait_finished_and_delivered(&client, &ids, &hooks, Duration::from_secs(60)).await;
    let all_at = killed_at.elapsed();
    // Every delivery of a job's webhook carried the same event id (receivers deduplicate by it).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = hooks.delivered();
    let copies: usize = delivered.values().map(Vec::len).sum();
    for (job, events) in &delivered {
        assert!(events.iter().all(|e| e == &events[0] && !e.is_empty()), "job {job}: event ids {events:?}");
    }
    eprintln!(
        "kill -9 webhook test: {n} webhooks in flight at the kill; all {n} delivered {:.1} s after it ({copies} \
         deliveries)",
        all_at.as_secs_f64()
    );
    drop(workers);
    drop(orchestrator);
    let _ = std::fs::remove_file(&log);
}

// ---------------------------------------------------------------------------------------------
// the scheduler on several instances

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduler_fires_each_time_once_across_instances() {
    use avto::server::ManualClock;
    use chrono::{TimeZone, Utc};
    let _serial = SERIAL.lock().await;
    let p = RedisPrefix::new();
    let toml = std::env::temp_dir().join(format!("avto-schedules-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&toml, "[every_minute]\nblueprint = \"approval_flow\"\ninterval_seconds = 60\n").unwrap();
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 30).unwrap()));
    let build = |instance: &str| {
        let mut cfg = test_config();
        cfg.schedules_config_path = Some(toml.clone());
        cfg.instance_id = instance.into();
        cfg.redis_key_prefix = p.prefix.clone();
        avto::Orchestrator::builder()
            .blueprint(approval_flow::blueprint())
            .config(cfg)
            .redis(&p.url)
            .clock(clock.clone())
            .build()
            .expect("builds")
    };
    let (a, b) = (build("instance-a"), build("instance-b"));
    let (sa, sb) = (a.scheduler().unwrap().clone(), b.scheduler().unwrap().clone());
    for minute in 1..=5 {
        clock.set(Utc.with_ymd_and_hms(2030, 1, 1, 0, minute, 0).unwrap());
        let (x, y) = tokio::join!(sa.tick(), sb.tick());
        assert_eq!(x.len() + y.len(), 1, "minute {minute}: fired once across the two instances ({x:?} {y:?})");
    }
    let _ = std::fs::remove_file(&toml);
    let jobs = b.core().jobs().list("system:scheduler", 100, 0).await.unwrap();
    let mut due: Vec<String> =
        jobs.iter().map(|j| j.metadata.as_ref().unwrap()["scheduled_for"].as_str().unwrap().to_owned()).collect();
    due.sort();
    assert_eq!(
        due,
        (1..=5).map(|m| format!("2030-01-01T00:0{m}:00Z")).collect::<Vec<_>>(),
        "one job per fire time, visible on both instances"
    );
}

// ---------------------------------------------------------------------------------------------
// start-up

#[tokio::test]
async fn bad_redis_url_or_unreachable_redis_fails_start_up_with_a_clear_message() {
    let build = |url: &str| {
        avto::Orchestrator::builder().blueprint(echo_flow::blueprint()).config(test_config()).redis(url).build()
    };
    let err = build("http://127.0.0.1:6379").expect_err("not a Redis URL").to_string();
    assert!(err.contains("invalid Redis URL"), "{err}");
    let unreachable = build("redis://127.0.0.1:1/0").expect("the connection is made at start-up");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    let err = unreachable.listen(listener, std::future::pending()).await.expect_err("no Redis there").to_string();
    assert!(err.contains("cannot reach Redis at redis://127.0.0.1:1/0"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15), "fails fast ({:?})", started.elapsed());
    // The configuration checks REDIS_URL too.
    let err = avto::server::Config::from_lookup(&|k| (k == "REDIS_URL").then(|| "localhost:6379".to_owned()));
    assert!(err.unwrap_err().to_string().contains("REDIS_URL"));
}

/// `REDIS_ENCRYPTION_KEY`: what a worker sends about itself (here an API key in its
/// capabilities) and the STS token bindings are sealed in Redis; an instance with the key (or
/// with it among `REDIS_ENCRYPTION_KEY_PREVIOUS` after a rotation) reads them, one without it
/// does not; a malformed key fails start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_encryption_key_seals_worker_credentials_and_rotates() {
    use avto::protocol::sign::MessageKind;
    use avto_tests::RawWorker;

    const OLD: &str = "5f0c6a3d1e9b47a2c8d4f61b3a7e9c0d2b5f8a1c4e7d0b3a6c9f2e5d8b1a4c70";
    const NEW: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f91";
    const SECRET_API_KEY: &str = "sk-live-do-not-store-in-clear";
    let p = RedisPrefix::new();
    let server = |vars: &'static [(&'static str, &'static str)]| {
        let (url, prefix) = (p.url.clone(), p.prefix.clone());
        async move {
            let s =
                Server::with_redis([echo_flow::blueprint()], &url, &prefix, avto_tests::test_config_with(vars)).await;
            wait_ready(&s.base).await;
            s
        }
    };
    let raw = avto::storage::redis::RedisStores::new(&p.url, &p.prefix, Duration::from_secs(5)).unwrap();
    let get = |key: String| {
        let conn = raw.conn().clone();
        async move { conn.query::<Option<String>>(avto::storage::redis::client::cmd("GET").arg(key)).await.unwrap() }
    };

    let a = server(&[("REDIS_ENCRYPTION_KEY", OLD)]).await;
    let w = RawWorker::new(&a.base, "enc-w", &["echo"]);
    let body = json!({
        "worker_id": "enc-w", "worker_type": "raw",
        "supported_skills": [{"name": "echo", "type": "echo"}], "available_skills": ["echo"],
        "capabilities": {"cost_per_skill": {}, "extra": {"api_key": SECRET_API_KEY}},
    });
    let (status, answer) = w
        .send(reqwest::Method::POST, "/_worker/workers/register", Some(&w.signed(body, MessageKind::Registration)))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, tokens) = w.send(reqwest::Method::POST, "/_worker/auth/token", None).await;
    assert_eq!(status, 200, "{tokens}");
    let sts =
        RawWorker { token: tokens["access_token"].as_str().unwrap().into(), ..RawWorker::new(&a.base, "enc-w", &[]) };
    assert_eq!(sts.poll().await.0, 204, "the STS token authenticates");

    // At rest: sealed, no secret and no worker id in the clear.
    let record = get(format!("{}w:info:enc-w", p.prefix)).await.expect("the worker record");
    assert!(record.starts_with("avtoenc1:"), "{record}");
    assert!(!record.contains(SECRET_API_KEY) && !record.contains("echo"), "{record}");
    let sts_keys: Vec<String> =
        raw.conn().query(avto::storage::redis::client::cmd("KEYS").arg(format!("{}sts:*", p.prefix))).await.unwrap();
    assert_eq!(sts_keys.len(), 2, "an access and a refresh binding: {sts_keys:?}");
    for key in sts_keys {
        let owner = get(key.clone()).await.unwrap();
        assert!(owner.starts_with("avtoenc1:") && !owner.contains("enc-w"), "{key} = {owner}");
    }
    let seen = a.core.dispatcher().worker("enc-w").await.expect("instance A reads the record");
    assert_eq!(seen.record["capabilities"]["extra"]["api_key"], SECRET_API_KEY);

    // Rotation: the new key writes, the old one still reads.
    let b = server(&[("REDIS_ENCRYPTION_KEY", NEW), ("REDIS_ENCRYPTION_KEY_PREVIOUS", OLD)]).await;
    assert!(b.core.dispatcher().worker("enc-w").await.is_some(), "read with the previous key");
    let on_b = RawWorker { base: b.base.clone(), ..sts };
    assert_eq!(on_b.poll().await.0, 204, "the STS token still authenticates after the rotation");
    let w_b = RawWorker::new(&b.base, "enc-w", &["echo"]);
    assert_eq!(w_b.register().await.0, 200);
    let resealed = get(format!("{}w:info:enc-w", p.prefix)).await.unwrap();
    assert_ne!(resealed.split(':').nth(1), record.split(':').nth(1), "re-registration re-seals with the new key");

    // Without the key (or with only the new one for an old binding) nothing opens.
    let c = server(&[("REDIS_ENCRYPTION_KEY", NEW)]).await;
    assert!(c.core.dispatcher().worker("enc-w").await.is_some(), "the re-sealed record opens with the new key");
    let on_c = RawWorker { base: c.base.clone(), ..on_b };
    let (status, _) = on_c.poll().await;
    assert!(matches!(status, 401 | 403), "a binding sealed with a dropped key is refused: {status}");
    let d = server(&[]).await;
    assert!(d.core.dispatcher().worker("enc-w").await.is_none(), "no key: the sealed record is not read");
    let e = server(&[("REDIS_ENCRYPTION_KEY", OLD)]).await;
    let bare = RawWorker::new(&e.base, "enc-w", &["echo"]);
    let (status, body) = bare.send(reqwest::Method::PATCH, "/_worker/workers/enc-w", None).await;
    assert_eq!(status, 404, "a record this instance cannot open: the worker must register again: {body}");
    for s in [a, b, c, d, e] {
        s.stop().await;
    }

    // A malformed key fails start-up, naming the variable.
    let err = avto::server::Config::from_lookup(&|k| (k == "REDIS_ENCRYPTION_KEY").then(|| "hunter2".to_owned()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("REDIS_ENCRYPTION_KEY") && err.contains("64 hex characters"), "{err}");
}

/// Issue #14 item 6: an operator's worker-token reload on one instance reaches every instance
/// sharing the Redis (over the bus), so a changed token is in force wherever a worker connects.
#[tokio::test]
async fn a_worker_token_reload_reaches_every_instance() {
    let p = RedisPrefix::new();
    let dir = std::env::temp_dir().join(format!("avto-reload-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("workers.toml");
    std::fs::write(&file, "[w-reload]\ntoken = \"old-token\"\n").unwrap();
    let path = file.to_string_lossy().into_owned();
    let config = || avto_tests::test_config_with(&[("WORKERS_CONFIG_PATH", &path)]);
    let a = Server::with_redis([echo_flow::blueprint()], &p.url, &p.prefix, config()).await;
    let b = Server::with_redis([echo_flow::blueprint()], &p.url, &p.prefix, config()).await;
    let on_b = |token: &str| avto_tests::RawWorker {
        token: token.into(),
        ..avto_tests::RawWorker::new(&b.base, "w-reload", &["echo"])
    };
    assert_eq!(on_b("old-token").register().await.0, 200);

    std::fs::write(&file, "[w-reload]\ntoken = \"new-token\"\n").unwrap();
    let (status, answer) =
        a.client().admin(reqwest::Method::POST, "/api/v1/admin/reload-workers", Some(&json!({}))).await;
    assert_eq!((status, answer), (200, json!({"status": "workers_reloaded", "workers": 1})));
    let started = Instant::now();
    while on_b("new-token").register().await.0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "instance B never took the new token");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(on_b("old-token").register().await.0, 403, "the old token is gone on B too");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Spec 79 / 84: the reputation recalculation runs once per interval across the instances
/// sharing a Redis (each period's key is claimed by one of them), so the decay is applied once
/// per period, not once per instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reputation_is_recalculated_once_per_interval_across_instances() {
    use avto::history::{HistoryBackend, HistoryRecord, MemoryHistory};
    let _serial = SERIAL.lock().await;
    let p = RedisPrefix::new();
    let history = Arc::new(MemoryHistory::new());
    let start = |instance: &str| {
        let mut cfg = test_config();
        cfg.instance_id = instance.into();
        cfg.redis_key_prefix = p.prefix.clone();
        cfg.reputation_recalc_interval = Duration::from_secs(1);
        Server::with_builder(
            avto::Orchestrator::builder()
                .blueprint(echo_flow::blueprint())
                .config(cfg)
                .redis(&p.url)
                .history(history.clone()),
        )
    };
    let (a, b) = (start("instance-a").await, start("instance-b").await);
    wait_ready(&a.base).await;
    wait_ready(&b.base).await;
    let w = avto_tests::RawWorker::new(&a.base, "rep-shared", &["echo"]);
    assert_eq!(w.register().await.0, 200);
    // Three of four tasks succeeded.
    let now = avto::history::next_timestamp_us();
    let rows: Vec<HistoryRecord> = ["success", "success", "failure", "success"]
        .iter()
        .map(|status| HistoryRecord {
            event_id: uuid::Uuid::new_v4().to_string(),
            job_id: uuid::Uuid::new_v4().to_string(),
            timestamp_us: now,
            event_type: "task_finished".into(),
            worker_id: Some("rep-shared".into()),
            details: Some(json!({"result_status": status})),
            ..Default::default()
        })
        .collect();
    history.insert(&rows).await.unwrap();

    // Watch whole periods: from just after one boundary (wall clock) to just after another.
    let after_boundary = || async {
        let now = avto::job::now_ms();
        tokio::time::sleep(Duration::from_millis(1000 - now % 1000 + 400)).await;
    };
    let passes = || a.core.metrics().reputation_recalculations() + b.core.metrics().reputation_recalculations();
    after_boundary().await;
    let (first, r0) = (passes(), a.core.worker("rep-shared").await.unwrap().reputation);
    for _ in 0..4 {
        after_boundary().await;
    }
    let (last, r4) = (passes(), b.core.worker("rep-shared").await.unwrap().reputation);
    assert_eq!(last - first, 4, "one recalculation per period across both instances");
    // Four applications of r -> 0.7 x 0.75 + 0.3 x r (each rounded to 4 decimals).
    let mut want = r0;
    for _ in 0..4 {
        want = ((0.7 * 0.75 + 0.3 * want) * 10_000.0_f64).round() / 10_000.0;
    }
    assert!((r4 - want).abs() < 1e-9, "reputation {r4}, expected {want} (from {r0})");
}

/// A dashboard stream on A carries jobs created and moved on B (changes cross over the Redis
/// bus while a dashboard is open). Before any stream is open nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dashboard_stream_on_one_instance_sees_jobs_moved_on_the_other() {
    let _serial = SERIAL.lock().await;
    let p = RedisPrefix::new();
    let a = server(&p, [approval_flow::blueprint()]).await;
    let b = server(&p, [approval_flow::blueprint()]).await;
    let cb = b.client();

    // Nobody watches: jobs created, moved and finished on B publish nothing on either instance.
    let quiet = cb.create("/api/v1/jobs/approval", json!({})).await;
    cb.wait_for(&quiet, &["waiting_for_human"], Duration::from_secs(10)).await;
    let (status, body) = cb.post(&format!("/api/v1/jobs/{quiet}/approval"), &json!({"decision": "approved"})).await;
    assert_eq!(status, 200, "{body}");
    cb.wait_terminal(&quiet, Duration::from_secs(10)).await;
    assert_eq!(
        (a.core.dashboard_changes_published(), b.core.dashboard_changes_published()),
        (0, 0),
        "no dashboard open: no change published"
    );

    // The operator opens the dashboard on A.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/ui/api/session", a.base))
        .json(&json!({"token": avto::testing::ADMIN_TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()[reqwest::header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
    let resp =
        http.get(format!("{}/ui/api/stream", a.base)).header(reqwest::header::COOKIE, &cookie).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = SseReader::new(resp);

    // B starts publishing once it sees the dashboard (within a couple of seconds): jobs created
    // on B until one shows up on A's stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut created = Vec::new();
    let seen = 'outer: loop {
        assert!(Instant::now() < deadline, "no job created on B reached the stream on A");
        created.push(cb.create("/api/v1/jobs/approval", json!({})).await);
        while let Some((kind, data)) = events.next_within(Duration::from_millis(300)).await {
            if kind == "job" && created.iter().any(|id| data["id"] == id.as_str()) {
                break 'outer data["id"].as_str().unwrap().to_owned();
            }
        }
    };
    // Now moved on B: A's stream shows it waiting, then finished.
    cb.wait_for(&seen, &["waiting_for_human"], Duration::from_secs(10)).await;
    let (status, body) = cb.post(&format!("/api/v1/jobs/{seen}/approval"), &json!({"decision": "approved"})).await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "the job finished on B did not reach the stream on A");
        let Some((kind, data)) = events.next_within(Duration::from_secs(1)).await else { continue };
        if kind == "job" && data["id"] == seen.as_str() && data["status"] == "finished" {
            assert_eq!(data["current_state"], "approved", "{data}");
            break;
        }
    }
    assert!(b.core.dashboard_changes_published() > 0);
}
