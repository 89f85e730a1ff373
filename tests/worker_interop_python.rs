//! Interop: the Rust worker against the real Python orchestrator (avtomatika 1.0b30 from PyPI).
//!
//! Needs the Python reference (`.ci/test` installs it; its path is `AVTO_PY_VENV`, see
//! [`avto_tests::python_venv`]). A missing venv FAILS these tests.
//! Everything listens on 127.0.0.1 only; orchestrator processes are killed on drop (also on panic).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use avto::protocol::HardwareDevice;
use avto::worker::{
    InstalledArtifact, MultiOrchestratorMode, OrchestratorConfig, Skill, TaskHandle, TaskOutcome, Worker, WorkerBuilder,
};
use avto_tests::tasks::{echo, saw_cancellation, ClassifyParams};
use avto_tests::{free_port, init_tracing, python_venv, RustWorker};
use serde_json::{json, Value};

const CLIENT_TOKEN: &str = "interop-client-token";
const WORKER_TOKEN: &str = "interop-worker-token";
const SECRET: &str = "interop-orchestrator-secret";

const ORCHESTRATOR_PY: &str = r#""""avtomatika 1.0b30 orchestrator for the avto worker interop tests (in-memory storage).

Blueprints (all under /api/v1):
  POST /jobs/echo    start -> dispatch 'echo'   {success: finished, failure: failed}
  POST /jobs/review  start -> dispatch 'classify' {success: finished, failure: failed, needs_review: review}
  POST /jobs/render  start -> dispatch 'render' with initial_data.requirements / max_cost / strategy
"""

from avtomatika import Blueprint, OrchestratorEngine
from avtomatika.config import Config
from avtomatika.storage import MemoryStorage

echo_bp = Blueprint(name="echo_flow", api_version="v1", api_endpoint="/jobs/echo")


@echo_bp.handler(is_start=True)
async def start(initial_data, actions):
    actions.dispatch_task(
        "echo",
        params=dict(initial_data or {}),
        transitions={"success": "finished", "failure": "failed"},
    )


@echo_bp.handler(is_end=True)
async def finished():
    pass


@echo_bp.handler(is_end=True)
async def failed():
    pass


review_bp = Blueprint(name="review_flow", api_version="v1", api_endpoint="/jobs/review")


@review_bp.handler("start", is_start=True)
async def review_start(initial_data, actions):
    actions.dispatch_task(
        "classify",
        params=dict(initial_data or {}),
        transitions={"success": "finished", "failure": "failed", "needs_review": "review"},
    )


@review_bp.handler("finished", is_end=True)
async def review_finished():
    pass


@review_bp.handler("failed", is_end=True)
async def review_failed():
    pass


@review_bp.handler("review", is_end=True)
async def review_state():
    pass


render_bp = Blueprint(name="render_flow", api_version="v1", api_endpoint="/jobs/render")


@render_bp.handler("start", is_start=True)
async def render_start(initial_data, actions):
    data = dict(initial_data or {})
    actions.dispatch_task(
        "render",
        params=dict(data.get("params") or {}),
        transitions={"success": "finished", "failure": "failed"},
        resource_requirements=data.get("requirements"),
        max_cost=data.get("max_cost"),
        dispatch_strategy=data.get("strategy", "default"),
    )


@render_bp.handler("finished", is_end=True)
async def render_finished():
    pass


@render_bp.handler("failed", is_end=True)
async def render_failed():
    pass


def main() -> None:
    engine = OrchestratorEngine(MemoryStorage(), Config())
    engine.register_blueprint(echo_bp)
    engine.register_blueprint(review_bp)
    engine.register_blueprint(render_bp)
    engine.run()


if __name__ == "__main__":
    main()
"#;

// ---------------------------------------------------------------------------------------------
// Python orchestrator process

/// A running avtomatika orchestrator; killed (and its temp dir removed) on drop.
struct PyOrchestrator {
    child: Option<Child>,
    base: String,
    dir: PathBuf,
}

impl PyOrchestrator {
    fn start(name: &str) -> PyOrchestrator {
        Self::start_with(name, &[])
    }

    fn start_with(name: &str, extra_env: &[(&str, &str)]) -> PyOrchestrator {
        let python = python_venv().join("bin/python");
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "avto-interop-{}-{}-{}",
            std::process::id(),
            name,
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("orchestrator.py");
        std::fs::write(&script, ORCHESTRATOR_PY).unwrap();
        let log = std::fs::File::create(dir.join("orchestrator.log")).unwrap();
        let port = free_port();
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .current_dir(&dir)
            .env("API_HOST", "127.0.0.1")
            .env("API_PORT", port.to_string())
            .env("CLIENT_TOKEN", CLIENT_TOKEN)
            .env("GLOBAL_WORKER_TOKEN", WORKER_TOKEN)
            .env("ORCHESTRATOR_SECRET_KEY", SECRET)
            .env("RATE_LIMITING_ENABLED", "false")
            .env("DETAILED_API_RESPONSES", "true")
            .env("WORKER_POLL_TIMEOUT_SECONDS", "5")
            .env("INSTANCE_ID", name)
            .env("LOG_FORMAT", "text")
            .env("LOG_LEVEL", "WARNING")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start the Python orchestrator");
        let mut orch = PyOrchestrator { child: Some(child), base: format!("http://127.0.0.1:{port}"), dir };
        orch.wait_ready();
        orch
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("orchestrator exited ({status}):\n{}", self.log());
            }
            if let Ok(mut s) = std::net::TcpStream::connect(self.base.trim_start_matches("http://")) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /_public/status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "orchestrator not ready after 60 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("orchestrator.log")).unwrap_or_default()
    }

    /// SIGKILL (the "machine died" case).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PyOrchestrator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- orchestrator log ({}) ---\n{}", self.base, self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// client API

/// avtomatika's client API. Not [`avto_tests::ApiClient`]: avtomatika answers the plain job URL
/// (no `?detailed=true`), lists workers for the client token, and one client talks to several
/// orchestrators here.
struct Client {
    http: reqwest::Client,
}

impl Client {
    fn new() -> Self {
        Client { http: reqwest::Client::builder().no_proxy().build().unwrap() }
    }

    async fn create_job(&self, base: &str, flow: &str, initial_data: Value) -> String {
        let resp = self
            .http
            .post(format!("{base}/api/v1/jobs/{flow}"))
            .header("X-Client-Token", CLIENT_TOKEN)
            .json(&json!({ "initial_data": initial_data }))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 202, "create job: {body}");
        body["job_id"].as_str().unwrap().to_owned()
    }

    async fn job(&self, base: &str, id: &str) -> Value {
        self.http
            .get(format!("{base}/api/v1/jobs/{id}"))
            .header("X-Client-Token", CLIENT_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn cancel(&self, base: &str, id: &str) -> Value {
        self.http
            .post(format!("{base}/api/v1/jobs/{id}/cancel"))
            .header("X-Client-Token", CLIENT_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn workers(&self, base: &str) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{base}/api/v1/workers"))
            .header("X-Client-Token", CLIENT_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.as_array().cloned().unwrap_or_default()
    }

    /// Wait until the job is in one of `statuses`; returns the job.
    async fn wait_status(&self, base: &str, id: &str, statuses: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(base, id).await;
            if statuses.contains(&job["status"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} not in {statuses:?} after {timeout:?}: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until `worker_id` is registered with status idle.
    async fn wait_worker(&self, base: &str, worker_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(w) = self.workers(base).await.into_iter().find(|w| w["worker_id"] == worker_id) {
                if w.get("status").and_then(Value::as_str).unwrap_or("idle") == "idle" {
                    return w;
                }
            }
            assert!(Instant::now() < deadline, "worker {worker_id} did not register at {base}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the Rust worker under test

fn worker(id: &str) -> WorkerBuilder {
    Worker::builder()
        .worker_id(id)
        .worker_type("avto-interop")
        .token(WORKER_TOKEN)
        .secret_key(SECRET)
        .heartbeat_interval(Duration::from_secs(2))
        .configure(|c| {
            c.idle_poll_delay = Duration::from_millis(100);
            c.task_poll_timeout = Duration::from_secs(10);
            c.shutdown_timeout = Duration::from_secs(10);
            c.result_retry_initial_delay = Duration::from_millis(200);
        })
        .task(Skill::new("echo").description("Echo the task params back."), echo)
        .task(
            Skill::new("classify").output_statuses(["needs_review"]).input_schema(json!({
                "type": "object",
                "properties": {"score": {"type": "number"}},
                "required": ["score"]
            })),
            |p: ClassifyParams, _task: TaskHandle| async move {
                if p.score < 0.5 {
                    TaskOutcome::status("needs_review", json!({"score": p.score, "label": "unsure"}))
                } else {
                    TaskOutcome::success(json!({"score": p.score, "label": "cat"}))
                }
            },
        )
        .task(Skill::new("render").cost(0.25), |params: Value, _task: TaskHandle| async move {
            Ok::<_, avto::TaskError>(json!({ "rendered": params }))
        })
        .device(HardwareDevice::gpu("NVIDIA T4", "0", 16))
        .installed_artifact(InstalledArtifact::new("stable-diffusion-1.5", "1.5"))
        .installed_software("ffmpeg", "6.0")
}

// ---------------------------------------------------------------------------------------------
// tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_against_the_python_orchestrator() {
    init_tracing("avto=info");
    let orch = PyOrchestrator::start("basic");
    let client = Client::new();
    let running = RustWorker::spawn(worker("rust-worker-1").orchestrator_url(&orch.base));
    let registered = client.wait_worker(&orch.base, "rust-worker-1").await;
    assert_eq!(registered["worker_type"], "avto-interop");

    // 1. plain echo jobs
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(client.create_job(&orch.base, "echo", json!({"msg": "hello", "n": n})).await);
    }
    for (n, id) in ids.iter().enumerate() {
        let job =
            client.wait_status(&orch.base, id, &["finished", "failed", "quarantined"], Duration::from_secs(30)).await;
        assert_eq!(job["status"], "finished", "{job}");
        assert_eq!(job["result"], json!({"msg": "hello", "n": n, "worker": "rust-worker-1"}), "{job}");
    }

    // 2. progress is stored on the job (DETAILED_API_RESPONSES=true)
    let id = client.create_job(&orch.base, "echo", json!({"progress": true, "sleep": 1.5})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = client.job(&orch.base, &id).await;
        if job.get("progress").is_some() {
            assert_eq!(job["progress"], json!(0.5), "{job}");
            assert_eq!(job["progress_message"], json!("halfway"), "{job}");
            break;
        }
        assert!(Instant::now() < deadline, "no progress on {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.wait_status(&orch.base, &id, &["finished"], Duration::from_secs(20)).await;

    // 3. error codes
    let invalid = client.create_job(&orch.base, "echo", json!({"fail": true})).await;
    let permanent = client.create_job(&orch.base, "echo", json!({"fail": true, "error_code": "PERMANENT_ERROR"})).await;
    let bad_params = client.create_job(&orch.base, "echo", json!({"sleep": "not a number"})).await;
    let panics = client.create_job(&orch.base, "echo", json!({"panic": true})).await;
    let done = ["finished", "failed", "quarantined"];
    let t = Duration::from_secs(30);
    assert_eq!(client.wait_status(&orch.base, &invalid, &done, t).await["status"], "failed");
    assert_eq!(client.wait_status(&orch.base, &permanent, &done, t).await["status"], "quarantined");
    assert_eq!(client.wait_status(&orch.base, &bad_params, &done, t).await["status"], "failed");
    // TRANSIENT_ERROR is re-dispatched 3 times, then quarantined
    assert_eq!(client.wait_status(&orch.base, &panics, &done, t).await["status"], "quarantined");

    // 4. custom status -> blueprint transition
    let unsure = client.create_job(&orch.base, "review", json!({"score": 0.2})).await;
    let sure = client.create_job(&orch.base, "review", json!({"score": 0.9})).await;
    let job = client.wait_status(&orch.base, &unsure, &done, t).await;
    // avtomatika calls every end state other than "finished" a failure
    assert_eq!(job["current_state"], "review", "{job}");
    assert_eq!(job["state_history"]["label"], "unsure", "{job}");
    let job = client.wait_status(&orch.base, &sure, &done, t).await;
    assert_eq!(job["status"], "finished", "{job}");
    // (the client `result` is the value of the last state_history key: here 0.9)
    assert_eq!(job["state_history"], json!({"label": "cat", "score": 0.9}), "{job}");

    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_by_websocket_push() {
    init_tracing("avto=info");
    let orch = PyOrchestrator::start("cancel");
    let client = Client::new();
    let running = RustWorker::spawn(worker("rust-worker-ws").orchestrator_url(&orch.base).enable_websockets(true));
    client.wait_worker(&orch.base, "rust-worker-ws").await;
    // avtomatika pushes cancel_task only when the stored record has capabilities.websockets
    // (our heartbeats carry it; the registration model would drop it)
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let w = client.workers(&orch.base).await.into_iter().find(|w| w["worker_id"] == "rust-worker-ws").unwrap();
        if w["capabilities"]["websockets"] == json!(true) {
            assert_eq!(w["capabilities"]["extra"]["websockets"], json!(true), "{w}");
            assert_eq!(w["capabilities"]["cost_per_skill"]["render"], json!(0.25), "{w}");
            break;
        }
        assert!(Instant::now() < deadline, "capabilities.websockets never stored: {w}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let id = client.create_job(&orch.base, "echo", json!({"sleep": 60, "progress": true})).await;
    // progress travels over the WebSocket here
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = client.job(&orch.base, &id).await;
        if job.get("progress") == Some(&json!(0.5)) {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = client.cancel(&orch.base, &id).await;
    assert_eq!(answer["status"], "cancellation_request_accepted", "{answer}");
    let started = Instant::now();
    while !saw_cancellation(&id) {
        assert!(started.elapsed() < Duration::from_secs(20), "the task never saw the cancellation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the cancelled result is accepted ("cancelled_handled"): the job stays cancelled, whereas a
    // late success would have resurrected it as finished
    tokio::time::sleep(Duration::from_secs(1)).await;
    let job = client.job(&orch.base, &id).await;
    assert_eq!(job["status"], "cancelled", "{job}");

    // the worker is free again: a new job completes
    let id = client.create_job(&orch.base, "echo", json!({"msg": "after"})).await;
    let job = client.wait_status(&orch.base, &id, &["finished"], Duration::from_secs(20)).await;
    assert_eq!(job["result"]["msg"], "after");
    running.stop().await;
}

/// Two orchestrators, one killed mid-run; the worker keeps completing jobs on the other.
async fn two_orchestrators_one_killed(mode: MultiOrchestratorMode, worker_id: &str) {
    init_tracing("avto=info");
    let mut primary = PyOrchestrator::start("primary");
    let backup = PyOrchestrator::start("backup");
    let client = Client::new();
    let running = RustWorker::spawn(
        worker(worker_id)
            .orchestrators([
                OrchestratorConfig::new(&primary.base).priority(1),
                OrchestratorConfig::new(&backup.base).priority(2),
            ])
            .multi_orchestrator_mode(mode),
    );
    client.wait_worker(&primary.base, worker_id).await;
    client.wait_worker(&backup.base, worker_id).await;
    let done = ["finished", "failed", "quarantined"];
    let t = Duration::from_secs(40);

    let on_primary = client.create_job(&primary.base, "echo", json!({"msg": "p"})).await;
    assert_eq!(client.wait_status(&primary.base, &on_primary, &done, t).await["status"], "finished");

    let on_backup = client.create_job(&backup.base, "echo", json!({"msg": "b1"})).await;
    if mode == MultiOrchestratorMode::Failover {
        // failover sticks to the healthy primary: the backup's job waits
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(client.job(&backup.base, &on_backup).await["status"], "waiting_for_worker");
    }

    primary.kill();
    assert_eq!(client.wait_status(&backup.base, &on_backup, &done, t).await["status"], "finished");
    for n in 0..3 {
        let id = client.create_job(&backup.base, "echo", json!({"msg": "b", "n": n})).await;
        let job = client.wait_status(&backup.base, &id, &done, t).await;
        assert_eq!(job["status"], "finished", "{job}");
        assert_eq!(job["result"]["worker"], worker_id);
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_mode_moves_to_the_backup_when_the_primary_dies() {
    two_orchestrators_one_killed(MultiOrchestratorMode::Failover, "rust-worker-failover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_mode_survives_a_killed_orchestrator() {
    two_orchestrators_one_killed(MultiOrchestratorMode::RoundRobin, "rust-worker-rr").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waterfall_mode_survives_a_killed_orchestrator() {
    two_orchestrators_one_killed(MultiOrchestratorMode::Waterfall, "rust-worker-waterfall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_artifacts_and_costs_drive_dispatch() {
    init_tracing("avto=info");
    let orch = PyOrchestrator::start("resources");
    let client = Client::new();
    let running = RustWorker::spawn(worker("rust-worker-gpu").orchestrator_url(&orch.base));
    client.wait_worker(&orch.base, "rust-worker-gpu").await;
    let done = ["finished", "failed", "quarantined"];
    let t = Duration::from_secs(30);
    let gpu = |vram: i64| {
        json!({
            "resources": {"devices": [{"type": "gpu", "model": "T4", "properties": {"memory_gb": vram}}]},
            "installed_artifacts": ["stable-diffusion-1.5"],
            "installed_software": {"ffmpeg": "6.0"}
        })
    };
    let cases = [
        (json!({"params": {"frame": 1}, "requirements": gpu(16)}), "finished"),
        (json!({"params": {"frame": 2}, "requirements": gpu(80)}), "quarantined"),
        (json!({"params": {"frame": 3}, "requirements": {"installed_artifacts": ["llama-70b"]}}), "quarantined"),
        (json!({"params": {"frame": 4}, "max_cost": 0.5, "strategy": "cheapest"}), "finished"),
        (json!({"params": {"frame": 5}, "max_cost": 0.1, "strategy": "cheapest"}), "quarantined"),
    ];
    for (data, expected) in cases {
        let id = client.create_job(&orch.base, "render", data.clone()).await;
        let job = client.wait_status(&orch.base, &id, &done, t).await;
        assert_eq!(job["status"], expected, "{data} -> {job}");
        if expected == "finished" {
            assert_eq!(job["state_history"]["rendered"], data["params"], "{job}");
        }
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_running_tasks_and_goes_offline() {
    init_tracing("avto=info");
    let orch = PyOrchestrator::start("shutdown");
    let client = Client::new();
    let running = RustWorker::spawn(worker("rust-worker-drain").orchestrator_url(&orch.base));
    client.wait_worker(&orch.base, "rust-worker-drain").await;
    let id = client.create_job(&orch.base, "echo", json!({"sleep": 2, "msg": "drain me"})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.job(&orch.base, &id).await.get("task_picked_up_at").is_none() {
        assert!(Instant::now() < deadline, "task never picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    running.stop().await; // returns once the running task finished and its result was delivered
    assert!(started.elapsed() >= Duration::from_millis(1000), "stop did not wait for the task");
    let job = client.wait_status(&orch.base, &id, &["finished", "failed"], Duration::from_secs(10)).await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["result"]["msg"], "drain me");
    let w = client.workers(&orch.base).await.into_iter().find(|w| w["worker_id"] == "rust-worker-drain").unwrap();
    assert_eq!(w["status"], "offline", "{w}");
    // (the offline heartbeat carries `supported_skills: []` like the SDK's, but avtomatika drops it
    // because the skills hash is unchanged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_access_tokens_authenticate_the_worker() {
    init_tracing("avto=info");
    let orch = PyOrchestrator::start("sts");
    let client = Client::new();
    let running = RustWorker::spawn(worker("rust-worker-sts").orchestrator_url(&orch.base).use_sts(true));
    client.wait_worker(&orch.base, "rust-worker-sts").await;
    for n in 0..3 {
        let id = client.create_job(&orch.base, "echo", json!({"n": n})).await;
        let job = client.wait_status(&orch.base, &id, &["finished"], Duration::from_secs(20)).await;
        assert_eq!(job["result"]["n"], n);
    }
    running.stop().await;
    // the aiohttp access log shows the token exchange
    assert!(orch.log().contains("POST /_worker/auth/token HTTP/1.1\" 200"), "no STS exchange:\n{}", orch.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_with_a_bad_signature_are_dropped() {
    init_tracing("avto=info");
    let orch = PyOrchestrator::start("badsig");
    let client = Client::new();
    let running =
        RustWorker::spawn(worker("rust-worker-badsig").orchestrator_url(&orch.base).secret_key("not-the-secret"));
    client.wait_worker(&orch.base, "rust-worker-badsig").await;
    let id = client.create_job(&orch.base, "echo", json!({"msg": "forged?"})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.job(&orch.base, &id).await.get("task_picked_up_at").is_none() {
        assert!(Instant::now() < deadline, "task never picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // picked up, signature mismatch, no result: the job waits for its execution timeout
    assert_eq!(client.job(&orch.base, &id).await["status"], "waiting_for_worker");
    running.stop().await;
}
