//! Every cookbook recipe over the real HTTP path with real workers: the Rust worker SDK
//! (`avto::worker`, in-process) for all of them, the Python SDK (avtomatika-worker 1.0b20,
//! tests/python/recipe_worker.py) for recipes 1, 10, 11, 13, 19 and 24. Plus what a blueprint can
//! ask of dispatch and of the clock: strategies, reputation, priorities, work stealing, dead
//! workers, timeouts, worker events.
//!
//! Recipe -> test: 1 `r01_*`, 2 `r02_*`, 3 `r03_*`, 4 `r04_*`, 5 `r05_*`, 6 `r06_*`, 7 `r07_*`,
//! 8 `r08_*`, 9 `r09_*`, 10 `r10_*`, 11 `r11_*`, 13 `r13_*`, 14 `r14_*`, 15 `r15_*`, 16 `r16_*`,
//! 17 `r17_*`, 18 `r18_*`, 19 `r19_*`, 24 `r24_*` (12a/12b: S3, and 20-23: tracing and history,
//! are tested elsewhere).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avto::protocol::sign::MessageKind;
use avto::worker::{
    HardwareDevice, InstalledArtifact, MultiOrchestratorMode, OrchestratorConfig, Skill, TaskHandle, TaskOutcome,
    WorkerBuilder, WorkerConfig,
};
use avto_examples as ex;
use avto_tests::blueprints::{
    dispatch_options, echo_flow, echo_strict, event_flow, fan_out_three, level_flow, nested_child, nested_parent,
    training_flow,
};
use avto_tests::{test_config_with, ApiClient, PyWorker, RawWorker, RustWorker, Server};
use serde_json::{json, Value};
use tokio::sync::watch;

/// Generous bound for a job that should end in well under a second.
const T: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// helpers

/// A task as a worker handler saw it.
#[derive(Debug, Clone)]
struct Seen {
    worker: String,
    job_id: String,
    task_id: String,
    params: Value,
    at: Instant,
}

/// What worker handlers saw, in order (shared by every handler of a test).
#[derive(Debug, Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn record(&self, task: &TaskHandle) {
        self.0.lock().unwrap().push(Seen {
            worker: task.worker_id().to_owned(),
            job_id: task.job_id().to_owned(),
            task_id: task.task_id().to_owned(),
            params: task.params_raw().clone(),
            at: Instant::now(),
        });
    }
    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
    fn of_job(&self, job_id: &str) -> Vec<Seen> {
        self.all().into_iter().filter(|s| s.job_id == job_id).collect()
    }
    /// Waits until a handler saw a task of `job_id` (returns the first attempt).
    async fn started(&self, job_id: &str) -> Seen {
        let deadline = Instant::now() + T;
        loop {
            if let Some(s) = self.of_job(job_id).into_iter().next() {
                return s;
            }
            assert!(Instant::now() < deadline, "no worker started a task of job {job_id}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Job ids whose task a handler saw cancelled.
#[derive(Debug, Clone, Default)]
struct Cancelled(Arc<Mutex<HashSet<String>>>);

impl Cancelled {
    fn add(&self, job_id: &str) {
        self.0.lock().unwrap().insert(job_id.to_owned());
    }
    fn has(&self, job_id: &str) -> bool {
        self.0.lock().unwrap().contains(job_id)
    }
    async fn wait(&self, job_id: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.has(job_id) {
            assert!(Instant::now() < deadline, "the worker did not see the cancellation of job {job_id} in {within:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Handlers wait on a gate until the test opens it.
#[derive(Debug, Clone)]
struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    fn new() -> Gate {
        Gate(Arc::new(watch::channel(false).0))
    }
    fn open(&self) {
        self.0.send_replace(true);
    }
    async fn wait(&self) {
        let _ = self.0.subscribe().wait_for(|open| *open).await;
    }
}

/// Sleeps `d` unless the task is cancelled first (then records it and returns `false`).
async fn sleep_or_cancelled(task: &TaskHandle, d: Duration, cancelled: &Cancelled) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = task.cancelled() => {
            cancelled.add(task.job_id());
            false
        }
    }
}

/// A fresh directory for a test's files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("avto-recipes-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The attempts the Python recipe worker recorded (`attempts.jsonl` in its MARKER_DIR).
fn py_attempts(dir: &std::path::Path, job_id: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("attempts.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["job_id"] == job_id).collect()
}

async fn py_started(dir: &std::path::Path, job_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while py_attempts(dir, job_id).is_empty() {
        assert!(Instant::now() < deadline, "the Python worker did not start job {job_id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status_state(job: &Value) -> (&str, &str) {
    (job["status"].as_str().unwrap_or("?"), job["current_state"].as_str().unwrap_or("?"))
}

fn path(job: &Value) -> Vec<&str> {
    job["path"].as_array().map(|p| p.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// The echo skill of tests/python/echo_worker.py: `sleep` (cancellable), `fail` + `error_code`,
/// `tag_worker`; success data `{"echo": params}`.
fn echo_task(b: WorkerBuilder, log: &Log, cancelled: &Cancelled) -> WorkerBuilder {
    let (log, cancelled) = (log.clone(), cancelled.clone());
    b.task("echo", move |p: Value, task: TaskHandle| {
        let (log, cancelled) = (log.clone(), cancelled.clone());
        async move {
            log.record(&task);
            if let Some(secs) = p["sleep"].as_f64() {
                if !sleep_or_cancelled(&task, Duration::from_secs_f64(secs), &cancelled).await {
                    return TaskOutcome::cancelled();
                }
            }
            if p["fail"].as_bool() == Some(true) {
                return TaskOutcome::failure(
                    p["error_code"].as_str().unwrap_or("INVALID_INPUT_ERROR"),
                    "failure requested",
                );
            }
            let mut out = p.clone();
            if p["tag_worker"].as_bool() == Some(true) {
                out["_worker"] = json!(task.worker_id());
            }
            TaskOutcome::success(json!({ "echo": out }))
        }
    })
}

/// A `work` skill for `dispatch_options` jobs: `fail: true` -> PERMANENT_ERROR, else success with
/// the worker id in `by`.
fn work_task(b: WorkerBuilder, log: &Log) -> WorkerBuilder {
    let log = log.clone();
    b.task("work", move |p: Value, task: TaskHandle| {
        let log = log.clone();
        async move {
            log.record(&task);
            if p["fail"].as_bool() == Some(true) {
                return TaskOutcome::failure("PERMANENT_ERROR", "broken on purpose");
            }
            TaskOutcome::success(json!({ "by": task.worker_id() }))
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Recipe 1: a linear pipeline

fn simple_task(b: WorkerBuilder) -> WorkerBuilder {
    b.task("simple_task", |p: Value, task: TaskHandle| async move {
        match p["x"].as_i64() {
            Some(x) => TaskOutcome::success(json!({"doubled": x * 2, "worker": task.worker_id()})),
            None => TaskOutcome::failure("INVALID_INPUT_ERROR", "x is missing"),
        }
    })
}

async fn linear_pipeline(c: &ApiClient, worker: &str) {
    let id = c.create("/api/v1/jobs/simple_flow", json!({"x": 21})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("finished", "finished"), "{job}");
    assert_eq!(path(&job), ["start", "step_A", "step_B", "finished"]);
    assert_eq!(job["state_history"]["doubled"], 42);
    assert_eq!(job["state_history"]["worker"], worker);

    let id = c.create("/api/v1/jobs/simple_flow", json!({})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("failed", "failed"), "{job}");
    assert_eq!(path(&job), ["start", "step_A", "failed"]);
    assert_eq!(job["last_error"]["code"], "INVALID_INPUT_ERROR");
    assert_eq!(job["last_error"]["message"], "x is missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r01_linear_pipeline() {
    let s = Server::start([ex::r01_linear::simple_flow::blueprint()]).await;
    let c = s.client();
    let _w = RustWorker::start(&s.base, "r01-rust", simple_task);
    linear_pipeline(&c, "r01-rust").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r01_linear_pipeline_python_sdk() {
    let s = Server::start([ex::r01_linear::simple_flow::blueprint()]).await;
    let c = s.client();
    let dir = temp_dir("r01");
    let _w = PyWorker::start_script("recipe_worker.py", &s.base, "r01-py", &[("MARKER_DIR", dir.to_str().unwrap())]);
    linear_pipeline(&c, "r01-py").await;
}

// ---------------------------------------------------------------------------------------------
// Recipe 2: human in the loop

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r02_human_approval_approve_and_reject() {
    let s = Server::start([ex::r02_approval::moderation::blueprint()]).await;
    let c = s.client();
    let _w = RustWorker::start(&s.base, "r02-gen", |b| {
        b.task("data_generation", |p: Value, _t: TaskHandle| async move {
            TaskOutcome::success(json!({"draft": format!("a text about {}", p["topic"].as_str().unwrap_or("?"))}))
        })
    });
    for (decision, status, state) in
        [("approved", "finished", "finished"), ("rejected", "failed", "rejected_by_moderator")]
    {
        let id = c.create("/api/v1/jobs/moderation_flow", json!({"topic": decision})).await;
        let job = c.wait_for(&id, &["waiting_for_human"], T).await;
        assert_eq!(job["current_state"], "awaiting_approval", "{job}");
        assert_eq!(job["state_history"]["draft"], format!("a text about {decision}"), "the worker ran first");
        assert_eq!(job["approval"]["integration"], "telegram");
        assert_eq!(job["approval"]["message"], format!("Approval required for job {id}"));

        let approval = format!("/api/v1/jobs/{id}/approval");
        let (code, body) = c.post(&approval, &json!({"decision": "maybe"})).await;
        assert_eq!(code, 400, "unknown decisions are refused: {body}");
        let (code, body) = c.post(&approval, &json!({"decision": decision})).await;
        assert_eq!(code, 200, "{body}");
        let job = c.wait_terminal(&id, T).await;
        assert_eq!(status_state(&job), (status, state), "{decision}: {job}");
        assert_eq!(job["state_history"]["approval_decision"], decision);
        if decision == "approved" {
            assert_eq!(path(&job), ["generate_data", "awaiting_approval", "process_approved_data", "finished"]);
        }
        let (code, _) = c.post(&approval, &json!({"decision": decision})).await;
        assert_eq!(code, 409, "a decision is taken once");
    }
}

// ---------------------------------------------------------------------------------------------
// Recipe 3: parallel tasks and aggregation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r03_parallel_fan_out_aggregation_and_failure_rule() {
    let s = Server::start([ex::r03_parallel::parallel::blueprint()]).await;
    let c = s.client();
    let (log, cancelled) = (Log::default(), Cancelled::default());
    // What task_A does in the current scenario: "ok", "fail" (permanent, once task_B runs) or
    // "transient" (fails once per job, then succeeds).
    let mode = Arc::new(Mutex::new("ok"));
    let a_failed_once = Arc::new(Mutex::new(HashSet::<String>::new()));
    let _w = RustWorker::start(&s.base, "r03-w", |b| {
        let (log_a, log_b, cancelled_b, mode_a, mode_b) =
            (log.clone(), log.clone(), cancelled.clone(), mode.clone(), mode.clone());
        b.task("task_A", move |p: Value, task: TaskHandle| {
            let (log, mode, failed_once) = (log_a.clone(), mode_a.clone(), a_failed_once.clone());
            async move {
                log.record(&task);
                let m = *mode.lock().unwrap();
                match m {
                    "fail" => {
                        // Fail only once branch B runs, so it has to be cancelled on its worker.
                        let deadline = Instant::now() + Duration::from_secs(5);
                        while !log.of_job(task.job_id()).iter().any(|s| s.params["input"] == "data_for_B")
                            && Instant::now() < deadline
                        {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        TaskOutcome::failure("PERMANENT_ERROR", "A is broken")
                    }
                    "transient" if failed_once.lock().unwrap().insert(task.job_id().to_owned()) => {
                        TaskOutcome::failure("TRANSIENT_ERROR", "A is busy")
                    }
                    _ => TaskOutcome::success(json!({"part": "A", "input": p["input"]})),
                }
            }
        })
        .task("task_B", move |p: Value, task: TaskHandle| {
            let (log, cancelled, mode) = (log_b.clone(), cancelled_b.clone(), mode_b.clone());
            async move {
                log.record(&task);
                if *mode.lock().unwrap() == "fail"
                    && !sleep_or_cancelled(&task, Duration::from_secs(10), &cancelled).await
                {
                    return TaskOutcome::cancelled();
                }
                TaskOutcome::success(json!({"part": "B", "input": p["input"]}))
            }
        })
    });

    // Both branches succeed: the aggregator runs once, with both results.
    let id = c.create("/api/v1/jobs/parallel_example", json!({})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("finished", "end"), "{job}");
    assert_eq!(path(&job), ["start", "aggregate_results", "end"], "the aggregator ran exactly once");
    let mut parts: Vec<(String, String)> = job["state_history"]["aggregated_data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["part"].as_str().unwrap().to_owned(), r["input"].as_str().unwrap().to_owned()))
        .collect();
    parts.sort();
    assert_eq!(parts, [("A".into(), "data_for_A".into()), ("B".into(), "data_for_B".into())]);
    let results = job["aggregation_results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{job}");
    let task_ids: HashSet<&str> = results.iter().map(|r| r["task_id"].as_str().unwrap()).collect();
    assert_eq!(task_ids.len(), 2, "one result per task id");

    // A branch fails for good: no aggregation, the job fails at once, the other branch is cancelled.
    *mode.lock().unwrap() = "fail";
    let id = c.create("/api/v1/jobs/parallel_example", json!({})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("failed", "failed"), "{job}");
    assert!(!path(&job).contains(&"aggregate_results"), "the aggregator never runs: {job}");
    assert_eq!(job["last_error"]["code"], "PERMANENT_ERROR");
    cancelled.wait(&id, Duration::from_secs(5)).await;

    // A transient branch failure is retried (new task id) and the fan-out still completes.
    *mode.lock().unwrap() = "transient";
    let id = c.create("/api/v1/jobs/parallel_example", json!({})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("finished", "end"), "{job}");
    let a_attempts: Vec<Seen> = log.of_job(&id).into_iter().filter(|s| s.params["input"] == "data_for_A").collect();
    assert_eq!(a_attempts.len(), 2, "{a_attempts:?}");
    assert_ne!(a_attempts[0].task_id, a_attempts[1].task_id);
}

/// Three branches answered in reverse order over HTTP: the aggregator sees them in dispatch order.
#[tokio::test]
async fn r03_aggregation_results_in_dispatch_order_when_workers_answer_in_reverse() {
    let s = Server::start([fan_out_three::blueprint()]).await;
    let c = s.client();
    let w = RawWorker::new(&s.base, "agg-reverse", &["part"]);
    assert_eq!(w.register().await.0, 200);
    let id = c.create("/api/v1/jobs/fan_out_three", json!({})).await;
    let mut tasks = Vec::new();
    while tasks.len() < 3 {
        let (status, task) = w.poll().await;
        assert_eq!(status, 200, "three tasks are queued: {task}");
        tasks.push(task);
    }
    tasks.sort_by_key(|t| t["params"]["part"].as_i64());
    for task in tasks.iter().rev() {
        let (status, answer) = w.succeed(task, json!({"part": task["params"]["part"]})).await;
        assert_eq!(status, 200, "{answer}");
    }
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["state_history"]["parts"], json!([0, 1, 2]), "dispatch order, not arrival order: {job}");
    let ids: Vec<&Value> = job["aggregation_results"].as_array().unwrap().iter().map(|r| &r["task_id"]).collect();
    assert_eq!(ids, tasks.iter().map(|t| &t["task_id"]).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// Recipe 4: one worker, several orchestrators

/// Creates an `echo_flow` job.
async fn echo_job(c: &ApiClient, data: Value) -> String {
    c.create("/api/v1/jobs/echo", data).await
}

async fn assert_echoed(c: &ApiClient, id: &str, n: &str) {
    let job = c.wait_terminal(id, T).await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["result"]["n"], n, "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r04_failover_worker_survives_the_primary_dying() {
    let primary = Server::start([echo_flow::blueprint()]).await;
    let backup = Server::start([echo_flow::blueprint()]).await;
    let (pc, bc) = (primary.client(), backup.client());
    let (log, cancelled) = (Log::default(), Cancelled::default());
    let _w = RustWorker::spawn(echo_task(
        RustWorker::builder("r04-failover")
            .orchestrators([
                OrchestratorConfig::new(&primary.base).priority(1),
                OrchestratorConfig::new(&backup.base).priority(2),
            ])
            .multi_orchestrator_mode(MultiOrchestratorMode::Failover),
        &log,
        &cancelled,
    ));
    // Registered with and heartbeating to both: each sees a normal worker.
    pc.wait_workers(&["r04-failover"]).await;
    bc.wait_workers(&["r04-failover"]).await;

    let p1 = echo_job(&pc, json!({"n": "p1"})).await;
    assert_echoed(&pc, &p1, "p1").await;
    // While the primary is up, the worker polls only the primary.
    let b1 = echo_job(&bc, json!({"n": "b1"})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(bc.job(&b1).await["status"], "waiting_for_worker", "FAILOVER polls only the first orchestrator");

    // Kill the primary while the worker runs one of its tasks.
    let p2 = echo_job(&pc, json!({"n": "p2", "sleep": 1.0})).await;
    log.started(&p2).await;
    drop(primary);
    let b2 = echo_job(&bc, json!({"n": "b2"})).await;
    let b3 = echo_job(&bc, json!({"n": "b3", "sleep": 0.2})).await;
    // No job of the surviving orchestrator is lost, and each ran once.
    for (id, n) in [(&b1, "b1"), (&b2, "b2"), (&b3, "b3")] {
        assert_echoed(&bc, id, n).await;
        assert_eq!(log.of_job(id).len(), 1, "job {n} ran exactly once");
    }
    bc.wait_workers(&["r04-failover"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r04_round_robin_worker_survives_one_orchestrator_dying() {
    let first = Server::start([echo_flow::blueprint()]).await;
    let second = Server::start([echo_flow::blueprint()]).await;
    let (ac, bc) = (first.client(), second.client());
    let (log, cancelled) = (Log::default(), Cancelled::default());
    let _w = RustWorker::spawn(echo_task(
        RustWorker::builder("r04-rr")
            .orchestrators([OrchestratorConfig::new(&first.base), OrchestratorConfig::new(&second.base)])
            .multi_orchestrator_mode(MultiOrchestratorMode::RoundRobin),
        &log,
        &cancelled,
    ));
    ac.wait_workers(&["r04-rr"]).await;
    bc.wait_workers(&["r04-rr"]).await;

    // Both orchestrators are served.
    let a: Vec<String> = futures::future::join_all((0..2).map(|i| echo_job(&ac, json!({"n": format!("a{i}")})))).await;
    let b: Vec<String> = futures::future::join_all((0..2).map(|i| echo_job(&bc, json!({"n": format!("b{i}")})))).await;
    for (i, id) in a.iter().enumerate() {
        assert_echoed(&ac, id, &format!("a{i}")).await;
    }
    for (i, id) in b.iter().enumerate() {
        assert_echoed(&bc, id, &format!("b{i}")).await;
    }

    // Kill one orchestrator mid-run: a task of each is running, more wait on the survivor.
    let a_running = echo_job(&ac, json!({"n": "a-running", "sleep": 1.0})).await;
    let b_running = echo_job(&bc, json!({"n": "b-running", "sleep": 1.0})).await;
    log.started(&a_running).await;
    log.started(&b_running).await;
    let queued: Vec<String> =
        futures::future::join_all((0..3).map(|i| echo_job(&bc, json!({"n": format!("b-queued{i}")})))).await;
    drop(first);
    let after: Vec<String> =
        futures::future::join_all((0..3).map(|i| echo_job(&bc, json!({"n": format!("b-after{i}")})))).await;
    assert_echoed(&bc, &b_running, "b-running").await;
    for (i, id) in queued.iter().enumerate() {
        assert_echoed(&bc, id, &format!("b-queued{i}")).await;
    }
    for (i, id) in after.iter().enumerate() {
        assert_echoed(&bc, id, &format!("b-after{i}")).await;
    }
    for id in b.iter().chain(&queued).chain(&after).chain([&b_running]) {
        assert_eq!(log.of_job(id).len(), 1, "job {id} ran exactly once");
    }
}

/// The Python SDK 1.0b20 has WATERFALL (its default) and ROUND_ROBIN, not FAILOVER.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r04_round_robin_python_sdk_survives_one_orchestrator_dying() {
    let first = Server::start([echo_flow::blueprint()]).await;
    let second = Server::start([echo_flow::blueprint()]).await;
    let (ac, bc) = (first.client(), second.client());
    let config = json!([{"url": first.base}, {"url": second.base}]).to_string();
    let _w = PyWorker::start(
        &first.base,
        "r04-py-rr",
        &[("ORCHESTRATORS_CONFIG", &config), ("MULTI_ORCHESTRATOR_MODE", "ROUND_ROBIN"), ("TASK_POLL_TIMEOUT", "1")],
    );
    ac.wait_workers(&["r04-py-rr"]).await;
    bc.wait_workers(&["r04-py-rr"]).await;
    let a = echo_job(&ac, json!({"n": "a", "tag_worker": true})).await;
    let b = echo_job(&bc, json!({"n": "b", "tag_worker": true})).await;
    for (c, id) in [(&ac, &a), (&bc, &b)] {
        let job = c.wait_terminal(id, T).await;
        assert_eq!(job["status"], "finished", "{job}");
        assert_eq!(job["result"]["_worker"], "r04-py-rr");
    }
    let running = echo_job(&bc, json!({"n": "b-running", "sleep": 1.0})).await;
    bc.wait_until(&running, T, "picked up", |j| j["current_task"]["worker_id"] == "r04-py-rr").await;
    drop(first);
    let after: Vec<String> =
        futures::future::join_all((0..3).map(|i| echo_job(&bc, json!({"n": format!("b-after{i}")})))).await;
    assert_eq!(bc.wait_terminal(&running, T).await["status"], "finished");
    for id in &after {
        assert_eq!(bc.wait_terminal(id, T).await["status"], "finished");
    }
}

// ---------------------------------------------------------------------------------------------
// Recipe 5: conditional routing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r05_when_routing() {
    let s = Server::start([ex::r05_when::multilingual::blueprint()]).await;
    let c = s.client();
    let _w = RustWorker::start(&s.base, "r05-w", |b| {
        b.task("process_en", |p: Value, _t: TaskHandle| async move {
            TaskOutcome::success(json!({"processed_by": "en", "text": p["text"]}))
        })
        .task("process_de", |p: Value, _t: TaskHandle| async move {
            TaskOutcome::success(json!({"processed_by": "de", "text": p["text"]}))
        })
    });
    for lang in ["en", "de"] {
        let id = c.create("/api/v1/jobs/multilingual_flow", json!({"language": lang, "text": "hi"})).await;
        let job = c.wait_terminal(&id, T).await;
        assert_eq!(status_state(&job), ("finished", "finished"), "{job}");
        assert_eq!(job["state_history"]["processed_by"], lang);
        assert_eq!(path(&job), ["start", "process_text", "finished"]);
    }
    let id = c.create("/api/v1/jobs/multilingual_flow", json!({"language": "fr"})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("failed", "unsupported_language"), "{job}");
    assert_eq!(job["error_message"], "language not supported");
}

// ---------------------------------------------------------------------------------------------
// Recipe 6 and the strategies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r06_least_connections_picks_the_least_loaded_worker() {
    let s = Server::start([ex::r06_r07_r08_dispatch::critical::blueprint(), echo_flow::blueprint()]).await;
    let c = s.client();
    let (log, gate) = (Log::default(), Gate::new());
    let blocking = |b: WorkerBuilder, skill: &str| {
        let (log, gate) = (log.clone(), gate.clone());
        b.task(skill, move |_p: Value, task: TaskHandle| {
            let (log, gate) = (log.clone(), gate.clone());
            async move {
                log.record(&task);
                gate.wait().await;
                TaskOutcome::success(json!({"by": task.worker_id()}))
            }
        })
    };
    // `busy` already runs three other tasks when `idle` joins.
    let _busy = RustWorker::start(&s.base, "r06-busy", |b| blocking(blocking(b, "echo"), "critical_computation"));
    c.wait_workers(&["r06-busy"]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = c.create("/api/v1/jobs/echo", json!({"i": i})).await;
        log.started(&id).await;
        ids.push(id);
    }
    let _idle = RustWorker::start(&s.base, "r06-idle", |b| blocking(b, "critical_computation"));
    c.wait_workers(&["r06-idle"]).await;

    let mut placed = Vec::new();
    for i in 0..5 {
        let id = c.create("/api/v1/jobs/critical_flow", json!({"i": i})).await;
        placed.push(log.started(&id).await.worker);
        ids.push(id);
    }
    // Loads (running tasks) before each pick: 3/0, 3/1, 3/2 -> idle; 3/3 -> either; 4/3 or 3/4 -> the other.
    assert_eq!(placed[..3], ["r06-idle", "r06-idle", "r06-idle"], "{placed:?}");
    assert_ne!(placed[3], placed[4], "{placed:?}");
    gate.open();
    for id in &ids {
        assert_eq!(c.wait_terminal(id, T).await["status"], "finished");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategy_round_robin_rotates_over_workers() {
    let s = Server::start([dispatch_options::blueprint()]).await;
    let c = s.client();
    let log = Log::default();
    let ids = ["rr-1", "rr-2", "rr-3"];
    let _workers: Vec<RustWorker> =
        ids.iter().map(|id| RustWorker::start(&s.base, id, |b| work_task(b, &log))).collect();
    c.wait_workers(&ids).await;
    let mut counts = BTreeMap::new();
    for i in 0..6 {
        let id = c.create("/api/v1/jobs/dispatch", json!({"strategy": "round_robin", "i": i})).await;
        let job = c.wait_terminal(&id, T).await;
        assert_eq!(job["status"], "finished", "{job}");
        *counts.entry(job["state_history"]["by"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(counts, BTreeMap::from([("rr-1".into(), 2), ("rr-2".into(), 2), ("rr-3".into(), 2)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategy_default_spreads_load_over_equally_good_workers() {
    let s = Server::start([dispatch_options::blueprint()]).await;
    let c = s.client();
    let (log, gate) = (Log::default(), Gate::new());
    let ids = ["spread-1", "spread-2", "spread-3"];
    let _workers: Vec<RustWorker> = ids
        .iter()
        .map(|id| {
            RustWorker::start(&s.base, id, |b| {
                let (log, gate) = (log.clone(), gate.clone());
                b.task("work", move |_p: Value, task: TaskHandle| {
                    let (log, gate) = (log.clone(), gate.clone());
                    async move {
                        log.record(&task);
                        gate.wait().await;
                        TaskOutcome::success(json!({"by": task.worker_id()}))
                    }
                })
            })
        })
        .collect();
    c.wait_workers(&ids).await;
    // Six jobs at once while every task blocks: the least loaded worker takes each.
    let jobs: Vec<String> =
        futures::future::join_all((0..6).map(|i| c.create("/api/v1/jobs/dispatch", json!({"i": i})))).await;
    for id in &jobs {
        log.started(id).await;
    }
    let mut counts = BTreeMap::new();
    for seen in log.all() {
        *counts.entry(seen.worker).or_insert(0) += 1;
    }
    assert_eq!(counts, BTreeMap::from([("spread-1".into(), 2), ("spread-2".into(), 2), ("spread-3".into(), 2)]));
    gate.open();
    for id in &jobs {
        assert_eq!(c.wait_terminal(id, T).await["status"], "finished");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategy_best_value_follows_reputation_rewards_and_penalties() {
    let s = Server::start([dispatch_options::blueprint()]).await;
    let c = s.client();
    let log = Log::default();
    // Value = reputation / cost: `cheap` (0.02) is worth 50, `dear` (0.03) 33.3.
    let _cheap = RustWorker::start(&s.base, "bv-cheap", |b| work_task(b, &log).cost_per_skill("work", 0.02));
    let _dear = RustWorker::start(&s.base, "bv-dear", |b| work_task(b, &log).cost_per_skill("work", 0.03));
    c.wait_workers(&["bv-cheap", "bv-dear"]).await;
    let run = |data: Value| {
        let c = c.clone();
        async move {
            let id = c.create("/api/v1/jobs/dispatch", data).await;
            let job = c.wait_terminal(&id, T).await;
            (job["status"].as_str().unwrap().to_owned(), id)
        }
    };
    let reputation = |id: &'static str| {
        let c = c.clone();
        async move { c.worker(id).await.unwrap()["reputation"].as_f64().unwrap() }
    };

    // Each permanent failure costs 0.05: after 7 the cheap worker is worth 0.65 / 0.02 = 32.5.
    for _ in 0..7 {
        let (status, id) = run(json!({"strategy": "best_value", "fail": true})).await;
        assert_eq!(status, "failed");
        assert_eq!(log.of_job(&id)[0].worker, "bv-cheap", "best value while its reputation >= 0.7");
    }
    assert!((reputation("bv-cheap").await - 0.65).abs() < 1e-9);
    assert_eq!(reputation("bv-dear").await, 1.0);
    let (status, id) = run(json!({"strategy": "best_value"})).await;
    assert_eq!(status, "finished");
    assert_eq!(log.of_job(&id)[0].worker, "bv-dear", "the penalties moved the best value");

    // A success is rewarded (+0.001).
    let (status, id) = run(json!({"strategy": "cheapest"})).await;
    assert_eq!(status, "finished");
    assert_eq!(log.of_job(&id)[0].worker, "bv-cheap");
    assert!((reputation("bv-cheap").await - 0.651).abs() < 1e-9);

    // Below REPUTATION_MIN_THRESHOLD (0.3) a worker gets nothing, whatever the strategy.
    for _ in 0..8 {
        let (_, id) = run(json!({"strategy": "cheapest", "fail": true})).await;
        assert_eq!(log.of_job(&id)[0].worker, "bv-cheap");
    }
    assert!(reputation("bv-cheap").await < 0.3);
    for strategy in ["cheapest", "default", "best_value", "round_robin", "least_connections"] {
        let (status, id) = run(json!({"strategy": strategy})).await;
        assert_eq!(status, "finished");
        assert_eq!(log.of_job(&id)[0].worker, "bv-dear", "{strategy}");
    }
}

// ---------------------------------------------------------------------------------------------
// Recipe 7: priorities, FIFO among equals

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r07_priorities_with_fifo_among_equals() {
    let s = Server::start([ex::r06_r07_r08_dispatch::priority::blueprint()]).await;
    let c = s.client();
    let (log, gate) = (Log::default(), Gate::new());
    let _w = RustWorker::start(&s.base, "r07-single", |b| {
        let (log, gate) = (log.clone(), gate.clone());
        b.max_concurrent_tasks(1).task("computation", move |p: Value, task: TaskHandle| {
            let (log, gate) = (log.clone(), gate.clone());
            async move {
                log.record(&task);
                if p["n"] == 0 {
                    gate.wait().await;
                }
                TaskOutcome::success(json!({"n": p["n"]}))
            }
        })
    });
    c.wait_workers(&["r07-single"]).await;
    // The only worker is busy with job 0 and reports `full`: the others wait for it, in this order,
    // and go to it when it asks for work again.
    let first = c.create("/api/v1/jobs/priority_flow", json!({"n": 0})).await;
    log.started(&first).await;
    wait_worker_status(&c, "r07-single", "full").await;
    let mut ids = vec![first];
    for n in 1..=6 {
        let urgent = n == 3 || n == 5;
        let id = c.create("/api/v1/jobs/priority_flow", json!({"n": n, "is_urgent": urgent})).await;
        c.wait_until(&id, T, "waiting for the worker", |j| j["waiting_reason"].is_string()).await;
        ids.push(id);
    }
    gate.open();
    for id in &ids {
        assert_eq!(c.wait_terminal(id, T).await["status"], "finished");
    }
    let order: Vec<i64> = log.all().iter().map(|s| s.params["n"].as_i64().unwrap()).collect();
    assert_eq!(order, [0, 3, 5, 1, 2, 4, 6], "urgent first, then arrival order within a priority");
}

/// Waits until the worker's last report (its heartbeat) was `status`.
async fn wait_worker_status(c: &ApiClient, worker_id: &str, status: &str) {
    let deadline = Instant::now() + T;
    while c.worker(worker_id).await.is_none_or(|w| w["status"] != status) {
        assert!(Instant::now() < deadline, "{worker_id} never reported {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Recipe 8: cheapest within max_cost

fn compression(b: WorkerBuilder, cost: f64) -> WorkerBuilder {
    b.cost_per_skill("image_compression", cost).task("image_compression", |_p: Value, task: TaskHandle| async move {
        TaskOutcome::success(json!({"compressed_by": task.worker_id()}))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r08_cheapest_worker_within_max_cost() {
    let s = Server::start([ex::r06_r07_r08_dispatch::cost_optimized::blueprint()]).await;
    let c = s.client();
    let _workers = [("r08-cheap", 0.02), ("r08-mid", 0.04), ("r08-dear", 0.10)]
        .map(|(id, cost)| RustWorker::start(&s.base, id, |b| compression(b, cost)));
    c.wait_workers(&["r08-cheap", "r08-mid", "r08-dear"]).await;
    for i in 0..4 {
        let id = c.create("/api/v1/jobs/cost_optimized_flow", json!({"i": i})).await;
        let job = c.wait_terminal(&id, T).await;
        assert_eq!(status_state(&job), ("finished", "finished"), "{job}");
        assert_eq!(job["state_history"]["compressed_by"], "r08-cheap");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r08_no_worker_within_budget_takes_the_failure_path() {
    let s = Server::start([ex::r06_r07_r08_dispatch::cost_optimized::blueprint()]).await;
    let c = s.client();
    let _dear = RustWorker::start(&s.base, "r08-over-budget", |b| compression(b, 0.10));
    let _dear2 = RustWorker::start(&s.base, "r08-over-budget-2", |b| compression(b, 0.06));
    c.wait_workers(&["r08-over-budget", "r08-over-budget-2"]).await;

    // The job waits for an eligible worker, with the reason visible, until its deadline; then the
    // dispatch's `failure` transition runs. (The recipe's dispatch timeout is 30 s; the job-level
    // result_timeout bounds it here.)
    let started = Instant::now();
    let (code, body) =
        c.post("/api/v1/jobs/cost_optimized_flow", &json!({"initial_data": {}, "result_timeout": 1.5})).await;
    assert_eq!(code, 202, "{body}");
    let id = body["job_id"].as_str().unwrap().to_owned();
    let job = c.wait_for(&id, &["waiting_for_worker"], T).await;
    assert!(job["waiting_reason"].as_str().unwrap_or_default().contains("max_cost"), "{job}");
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("failed", "too_expensive"), "{job}");
    assert_eq!(job["last_error"]["code"], "DISPATCH_TIMEOUT_ERROR");
    assert!(started.elapsed() >= Duration::from_millis(1400), "not before the deadline");

    // A waiting job is given to a worker within budget as soon as one registers.
    let id = c.create("/api/v1/jobs/cost_optimized_flow", json!({})).await;
    c.wait_for(&id, &["waiting_for_worker"], T).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.job(&id).await["status"], "waiting_for_worker");
    let _ok = RustWorker::start(&s.base, "r08-in-budget", |b| compression(b, 0.05));
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("finished", "finished"), "{job}");
    assert_eq!(job["state_history"]["compressed_by"], "r08-in-budget");
}

// ---------------------------------------------------------------------------------------------
// Recipe 9: data stores

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r09_data_store_is_shared_across_jobs_and_atomic() {
    let s = Server::start([ex::r09_data_stores::analytics::blueprint()]).await;
    let c = s.client();
    let n = 40;
    let ids: Vec<String> =
        futures::future::join_all((0..n).map(|i| c.create("/api/v1/jobs/analytics", json!({"i": i})))).await;
    let mut numbers = Vec::new();
    for id in &ids {
        let job = c.wait_terminal(id, T).await;
        assert_eq!(job["status"], "finished", "{job}");
        numbers.push(job["state_history"]["request_number"].as_i64().unwrap());
    }
    numbers.sort();
    assert_eq!(
        numbers,
        (1..=n as i64).collect::<Vec<_>>(),
        "concurrent increments are atomic: none lost, none repeated"
    );
    let id = c.create("/api/v1/jobs/analytics", json!({})).await;
    assert_eq!(c.wait_terminal(&id, T).await["state_history"]["request_number"], n + 1, "the counter persists");
}

/// 50 jobs at once against a store whose `level` starts at 100: each takes one off, none before
/// the initial value is written (it used to end at -50 on Redis: the jobs decremented an absent
/// key, then the initial value was refused as "already set").
async fn fifty_jobs_drain_a_fresh_store(s: &Server) {
    let c = s.client();
    let n = 50;
    let ids: Vec<String> = futures::future::join_all((0..n).map(|_| c.create("/api/v1/jobs/level", json!({})))).await;
    let mut levels = Vec::new();
    for id in &ids {
        let job = c.wait_terminal(id, T).await;
        assert_eq!(job["status"], "finished", "{job}");
        levels.push(job["state_history"]["level"].as_i64().unwrap());
    }
    levels.sort();
    assert_eq!(levels, (100 - n..100).collect::<Vec<i64>>(), "every job saw the store counted down from 100");
    let tank = s.core.env().data_stores(level_flow::blueprint()).store("tank");
    assert_eq!(tank.get("level").await.unwrap(), Some(json!(100 - n)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r09_initial_values_before_the_first_job_memory() {
    let s = Server::start([level_flow::blueprint()]).await;
    fifty_jobs_drain_a_fresh_store(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r09_initial_values_before_the_first_job_redis() {
    let url = std::env::var("AVTO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = format!("avto-test-r09-{}:", uuid::Uuid::new_v4());
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            avto_tests::delete_redis_prefix(&self.0, &self.1);
        }
    }
    let _cleanup = Cleanup(url.clone(), prefix.clone());
    let s = Server::with_redis([level_flow::blueprint()], &url, &prefix, avto_tests::test_config()).await;
    fifty_jobs_drain_a_fresh_store(&s).await;
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Recipe 10: cancellation

fn video_task(b: WorkerBuilder, log: &Log, cancelled: &Cancelled) -> WorkerBuilder {
    let (log, cancelled) = (log.clone(), cancelled.clone());
    b.task("long_video_processing", move |p: Value, task: TaskHandle| {
        let (log, cancelled) = (log.clone(), cancelled.clone());
        async move {
            log.record(&task);
            let frames = p["frames"].as_u64().unwrap_or(100);
            for frame in 0..frames {
                if p["cancel_at"].as_u64() == Some(frame) {
                    return TaskOutcome::cancelled();
                }
                // The recipe's periodic check (`worker.check_for_cancellation`).
                if task.is_cancelled() {
                    cancelled.add(task.job_id());
                    return TaskOutcome::cancelled();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            TaskOutcome::success(json!({"frames": frames}))
        }
    })
}

async fn cancel_running(c: &ApiClient, log: &Log, cancelled: &Cancelled, within: Duration) {
    let id = c.create("/api/v1/jobs/cancellable", json!({"frames": 400})).await;
    log.started(&id).await;
    let (code, body) = c.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("cancellation_request_accepted")), "{body}");
    assert_eq!(c.job(&id).await["status"], "cancelled", "cancelled at once");
    let asked = Instant::now();
    cancelled.wait(&id, within).await;
    eprintln!("the worker saw the cancellation after {:?}", asked.elapsed());
    // The worker's `cancelled` result comes after the job ended: ignored, the job stays as it was.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = c.job(&id).await;
    assert_eq!(job["status"], "cancelled");
    assert_ne!(job["current_state"], "task_cancelled", "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r10_cancel_a_running_task() {
    let s = Server::start([ex::r10_cancel::cancellable::blueprint()]).await;
    let c = s.client();
    let (log, cancelled) = (Log::default(), Cancelled::default());
    // Pushed over the WebSocket.
    let ws = RustWorker::start(&s.base, "r10-ws", |b| video_task(b, &log, &cancelled).enable_websockets(true));
    c.wait_workers(&["r10-ws"]).await;
    cancel_running(&c, &log, &cancelled, Duration::from_secs(2)).await;
    ws.stop().await;
    // Pulled through the heartbeat's cancel_task_ids.
    let _hb = RustWorker::start(&s.base, "r10-hb", |b| video_task(b, &log, &cancelled));
    c.wait_workers(&["r10-hb"]).await;
    cancel_running(&c, &log, &cancelled, Duration::from_secs(3)).await;

    // A worker that stops on its own returns `cancelled`: the `cancelled` transition runs.
    let id = c.create("/api/v1/jobs/cancellable", json!({"frames": 100, "cancel_at": 2})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("cancelled", "task_cancelled"), "{job}");
    let id = c.create("/api/v1/jobs/cancellable", json!({"frames": 2})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("finished", "finished_successfully"), "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r10_cancel_a_queued_task_never_runs() {
    let s = Server::start([ex::r10_cancel::cancellable::blueprint()]).await;
    let c = s.client();
    let (log, cancelled) = (Log::default(), Cancelled::default());
    let _w = RustWorker::start(&s.base, "r10-single", |b| video_task(b, &log, &cancelled).max_concurrent_tasks(1));
    c.wait_workers(&["r10-single"]).await;
    let busy = c.create("/api/v1/jobs/cancellable", json!({"frames": 400})).await;
    log.started(&busy).await;
    wait_worker_status(&c, "r10-single", "full").await;
    let queued = c.create("/api/v1/jobs/cancellable", json!({"frames": 1})).await;
    c.wait_until(&queued, T, "waiting for the worker", |j| j["waiting_reason"].is_string()).await;
    let (code, _) = c.post(&format!("/api/v1/jobs/{queued}/cancel"), &json!({})).await;
    assert_eq!(code, 200);
    let (code, _) = c.post(&format!("/api/v1/jobs/{busy}/cancel"), &json!({})).await;
    assert_eq!(code, 200);
    cancelled.wait(&busy, Duration::from_secs(3)).await;
    let after = c.create("/api/v1/jobs/cancellable", json!({"frames": 1})).await;
    let job = c.wait_terminal(&after, T).await;
    assert_eq!(status_state(&job), ("finished", "finished_successfully"), "{job}");
    assert!(log.of_job(&queued).is_empty(), "a task cancelled in the queue is never handed out");
    assert_eq!(c.job(&queued).await["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r10_cancel_a_running_task_python_sdk() {
    let s = Server::start([ex::r10_cancel::cancellable::blueprint()]).await;
    let c = s.client();
    let dir = temp_dir("r10");
    let _w = PyWorker::start_script("recipe_worker.py", &s.base, "r10-py", &[("MARKER_DIR", dir.to_str().unwrap())]);
    let id = c.create("/api/v1/jobs/cancellable", json!({"frames": 400})).await;
    py_started(&dir, &id).await;
    let (code, _) = c.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(c.job(&id).await["status"], "cancelled");
    let marker = dir.join(format!("{id}.cancelled"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the Python worker's coroutine was not cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = c.job(&id).await;
    assert_eq!(job["status"], "cancelled");
    assert_ne!(job["current_state"], "task_cancelled", "the SDK's late `cancelled` result is ignored: {job}");

    let id = c.create("/api/v1/jobs/cancellable", json!({"frames": 100, "cancel_at": 2})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("cancelled", "task_cancelled"), "{job}");
    let id = c.create("/api/v1/jobs/cancellable", json!({"frames": 2})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("finished", "finished_successfully"), "{job}");
}

// ---------------------------------------------------------------------------------------------
// Recipe 11: progress

async fn progress_recorded(c: &ApiClient) {
    let id = c.create("/api/v1/jobs/training", json!({"epochs": 4})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("finished", "finished"), "{job}");
    // Every progress event is recorded before the result (a job that ended takes no more events).
    let job = c
        .wait_until(&id, T, "four progress updates", |j| {
            j["state_history"]["progress_updates"].as_array().is_some_and(|u| u.len() == 4)
        })
        .await;
    let updates = job["state_history"]["progress_updates"].as_array().unwrap();
    for (i, u) in updates.iter().enumerate() {
        assert_eq!(u["message"], format!("Epoch {} completed", i + 1), "{updates:?}");
        assert!((u["progress"].as_f64().unwrap() - (i + 1) as f64 / 4.0).abs() < 1e-9, "{updates:?}");
        assert!(u["task_id"].is_string(), "{u}");
    }
    assert_eq!(job["progress"], 1.0);
    assert_eq!(job["progress_message"], "Epoch 4 completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r11_progress_in_state_history() {
    let s = Server::start([training_flow::blueprint()]).await;
    let c = s.client();
    let _w = RustWorker::start(&s.base, "r11-rust", |b| {
        b.task("train_model", |p: Value, task: TaskHandle| async move {
            let epochs = p["epochs"].as_u64().unwrap_or(3);
            for epoch in 1..=epochs {
                tokio::time::sleep(Duration::from_millis(30)).await;
                task.progress(epoch as f64 / epochs as f64, &format!("Epoch {epoch} completed")).await;
            }
            TaskOutcome::success(json!({"epochs": epochs}))
        })
    });
    progress_recorded(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r11_progress_in_state_history_python_sdk() {
    let s = Server::start([training_flow::blueprint()]).await;
    let c = s.client();
    let dir = temp_dir("r11");
    // Events over HTTP: the SDK awaits each before it sends the result (over its WebSocket the last
    // progress event could arrive after the result, when the job takes no more events).
    let env = [("MARKER_DIR", dir.to_str().unwrap()), ("WORKER_ENABLE_WEBSOCKETS", "false")];
    let _w = PyWorker::start_script("recipe_worker.py", &s.base, "r11-py", &env);
    progress_recorded(&c).await;
}

// ---------------------------------------------------------------------------------------------
// Recipe 13: error codes, retries, the failure transition

fn fetch_task(b: WorkerBuilder, log: &Log) -> WorkerBuilder {
    let log = log.clone();
    let failed_once = Arc::new(Mutex::new(HashSet::<String>::new()));
    b.task("fetch_external_data", move |p: Value, task: TaskHandle| {
        let (log, failed_once) = (log.clone(), failed_once.clone());
        async move {
            log.record(&task);
            match p["api_key"].as_str() {
                None | Some("") => TaskOutcome::failure("INVALID_INPUT_ERROR", "API key is missing"),
                Some("bad") => TaskOutcome::failure("PERMANENT_ERROR", "Invalid API key"),
                Some("flaky") => TaskOutcome::failure("TRANSIENT_ERROR", "API timed out"),
                Some("flaky_once") if failed_once.lock().unwrap().insert(task.job_id().to_owned()) => {
                    TaskOutcome::failure("TRANSIENT_ERROR", "API timed out")
                }
                Some(_) => TaskOutcome::success(json!({"response": {"ok": true}})),
            }
        }
    })
}

/// Creates the recipe-13 jobs; returns (permanent, invalid, transient x n, flaky_once, ok).
async fn error_jobs(c: &ApiClient, transient: usize) -> (String, String, Vec<String>, String, String) {
    let create = |d: Value| c.create("/api/v1/jobs/error_handling", d);
    let permanent = create(json!({"api_key": "bad"})).await;
    let invalid = create(json!({})).await;
    let mut flaky = Vec::new();
    for _ in 0..transient {
        flaky.push(create(json!({"api_key": "flaky"})).await);
    }
    let once = create(json!({"api_key": "flaky_once"})).await;
    let ok = create(json!({"api_key": "good"})).await;
    (permanent, invalid, flaky, once, ok)
}

/// The outcome every recipe-13 job must reach; `attempts(job_id)` counts the worker's attempts.
async fn check_error_jobs(
    c: &ApiClient,
    jobs: &(String, String, Vec<String>, String, String),
    attempts: impl Fn(&str) -> usize,
) {
    let (permanent, invalid, flaky, once, ok) = jobs;
    let job = c.wait_terminal(permanent, T).await;
    assert_eq!(status_state(&job), ("quarantined", "quarantined"), "{job}");
    assert_eq!(job["state_history"]["failure_code"], "PERMANENT_ERROR", "the handler saw the error");
    assert_eq!(job["last_error"]["message"], "Invalid API key");
    assert_eq!(attempts(permanent), 1, "permanent errors are not retried");

    let job = c.wait_terminal(invalid, T).await;
    assert_eq!(status_state(&job), ("failed", "failed"), "{job}");
    assert_eq!(job["state_history"]["failure_code"], "INVALID_INPUT_ERROR");
    assert_eq!(attempts(invalid), 1, "invalid input is not retried");

    for id in flaky {
        let job = c.wait_terminal(id, T).await;
        assert_eq!(status_state(&job), ("failed", "failed"), "{job}");
        assert_eq!(job["state_history"]["failure_code"], "TRANSIENT_ERROR");
        assert!(job["error_message"].as_str().unwrap().contains("after 2 retries"), "{job}");
        assert_eq!(attempts(id), 3, "JOB_MAX_RETRIES=2: one attempt and two retries");
    }
    let job = c.wait_terminal(once, T).await;
    assert_eq!(status_state(&job), ("finished", "finished_successfully"), "{job}");
    assert_eq!(attempts(once), 2);
    let job = c.wait_terminal(ok, T).await;
    assert_eq!(status_state(&job), ("finished", "finished_successfully"), "{job}");
    assert_eq!(job["state_history"]["response"]["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r13_error_codes_retries_with_backoff_and_failure_transition() {
    let cfg = test_config_with(&[("JOB_MAX_RETRIES", "2")]);
    let s = Server::with_config([ex::r13_retry::error_handling::blueprint(), echo_strict::blueprint()], cfg).await;
    let c = s.client();
    let (log, cancelled) = (Log::default(), Cancelled::default());
    let _w = RustWorker::start(&s.base, "r13-rust", |b| echo_task(fetch_task(b, &log), &log, &cancelled));
    c.wait_workers(&["r13-rust"]).await;

    // Without a `failure` transition the code alone decides.
    let mut strict = Vec::new();
    for (code, status) in
        [("PERMANENT_ERROR", "quarantined"), ("INVALID_INPUT_ERROR", "failed"), ("TRANSIENT_ERROR", "quarantined")]
    {
        strict.push((c.create("/api/v1/jobs/echo_strict", json!({"fail": true, "error_code": code})).await, status));
    }
    let jobs = error_jobs(&c, 4).await;
    check_error_jobs(&c, &jobs, |id| log.of_job(id).len()).await;
    for (id, status) in &strict {
        let job = c.wait_terminal(id, T).await;
        assert_eq!(job["status"], *status, "{job}");
    }

    // Every attempt has a new task id; the waits grow exponentially (1 s, then 2 s, +-25 % jitter).
    let mut first_gaps = Vec::new();
    for id in &jobs.2 {
        let seen = log.of_job(id);
        let task_ids: HashSet<&str> = seen.iter().map(|s| s.task_id.as_str()).collect();
        assert_eq!(task_ids.len(), 3, "a new task id per attempt");
        let gap1 = seen[1].at.duration_since(seen[0].at).as_secs_f64();
        let gap2 = seen[2].at.duration_since(seen[1].at).as_secs_f64();
        assert!((0.7..1.9).contains(&gap1), "first retry after ~1 s: {gap1}");
        assert!((1.45..3.2).contains(&gap2), "second retry after ~2 s: {gap2}");
        assert!(gap2 > gap1, "exponential: {gap1} then {gap2}");
        first_gaps.push(gap1);
    }
    let spread =
        first_gaps.iter().cloned().fold(f64::MIN, f64::max) - first_gaps.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 0.02, "jittered, not in lockstep: {first_gaps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r13_error_codes_python_sdk() {
    let cfg = test_config_with(&[("JOB_MAX_RETRIES", "2")]);
    let s = Server::with_config([ex::r13_retry::error_handling::blueprint()], cfg).await;
    let c = s.client();
    let dir = temp_dir("r13");
    let _w = PyWorker::start_script("recipe_worker.py", &s.base, "r13-py", &[("MARKER_DIR", dir.to_str().unwrap())]);
    let jobs = error_jobs(&c, 1).await;
    check_error_jobs(&c, &jobs, |id| {
        let attempts = py_attempts(&dir, id);
        let ids: HashSet<String> = attempts.iter().map(|a| a["task_id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids.len(), attempts.len(), "a new task id per attempt");
        attempts.len()
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Recipe 14: child blueprints

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r14_child_blueprint_resumes_the_parent_once_on_every_outcome() {
    let s = Server::start([
        ex::r14_nested::main_flow::blueprint(),
        ex::r14_nested::text_processor::blueprint(),
        nested_parent::blueprint(),
        nested_child::blueprint(),
    ])
    .await;
    let c = s.client();
    let sub_jobs = |job: &Value| -> Vec<(String, Value)> {
        job["state_history"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("sub_job_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };

    // The recipe itself: success and failure of `text_processor`.
    let id = c.create("/api/v1/jobs/main_flow", json!({"raw_text": "hello"})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("finished", "finished"), "{job}");
    assert_eq!(path(&job), ["start", "process_user_text", "final_step", "finished"]);
    assert_eq!(job["state_history"]["child_result"], "HELLO");
    let subs = sub_jobs(&job);
    assert_eq!(subs.len(), 1, "{job}");
    assert_eq!(subs[0].1["outcome"], "success");
    let child_id = subs[0].0.trim_start_matches("sub_job_").trim_end_matches("_result").to_owned();
    let child = c.job(&child_id).await;
    assert_eq!(child["status"], "finished");
    assert_eq!(child["parent_job_id"], id.as_str());
    assert_eq!(child["state_history"]["processed_text"], "HELLO");

    let id = c.create("/api/v1/jobs/main_flow", json!({"raw_text": ""})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("failed", "failed"), "{job}");
    assert_eq!(path(&job), ["start", "process_user_text", "sub_job_failed", "failed"]);
    assert_eq!(sub_jobs(&job)[0].1["outcome"], "failure");

    // A child with a worker task: success, failure, the child cancelled, the parent cancelled.
    let (log, cancelled) = (Log::default(), Cancelled::default());
    let _w = RustWorker::start(&s.base, "r14-w", |b| {
        let (log, cancelled) = (log.clone(), cancelled.clone());
        b.task("child_work", move |p: Value, task: TaskHandle| {
            let (log, cancelled) = (log.clone(), cancelled.clone());
            async move {
                log.record(&task);
                match p["mode"].as_str() {
                    Some("fail") => TaskOutcome::failure("PERMANENT_ERROR", "child broke"),
                    Some("hang") => {
                        sleep_or_cancelled(&task, Duration::from_secs(30), &cancelled).await;
                        TaskOutcome::cancelled()
                    }
                    _ => TaskOutcome::success(json!({"child_says": "done"})),
                }
            }
        })
    });
    for (mode, status, expected_path) in [
        ("ok", "finished", ["start", "child_succeeded", "finished"]),
        ("fail", "failed", ["start", "child_failed", "failed"]),
    ] {
        let id = c.create("/api/v1/jobs/nested_parent", json!({"mode": mode})).await;
        let job = c.wait_terminal(&id, T).await;
        assert_eq!(job["status"], status, "{mode}: {job}");
        assert_eq!(path(&job), expected_path, "{mode}: resumed exactly once");
        assert_eq!(sub_jobs(&job).len(), 1);
    }

    // The child is cancelled: the parent resumes once, through `failure`.
    let id = c.create("/api/v1/jobs/nested_parent", json!({"mode": "hang"})).await;
    let job = c.wait_until(&id, T, "a child job", |j| j["child_job_id"].is_string()).await;
    let child_id = job["child_job_id"].as_str().unwrap().to_owned();
    log.started(&child_id).await;
    let (code, _) = c.post(&format!("/api/v1/jobs/{child_id}/cancel"), &json!({})).await;
    assert_eq!(code, 200);
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("failed", "failed"), "{job}");
    cancelled.wait(&child_id, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let job = c.job(&id).await;
    assert_eq!(path(&job), ["start", "child_failed", "failed"], "resumed exactly once: {job}");
    assert_eq!(sub_jobs(&job)[0].1["outcome"], "cancelled");

    // The parent is cancelled: the child and its task are cancelled too; nothing resumes.
    let id = c.create("/api/v1/jobs/nested_parent", json!({"mode": "hang"})).await;
    let job = c.wait_until(&id, T, "a child job", |j| j["child_job_id"].is_string()).await;
    let child_id = job["child_job_id"].as_str().unwrap().to_owned();
    log.started(&child_id).await;
    let (code, _) = c.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(c.wait_terminal(&child_id, T).await["status"], "cancelled");
    cancelled.wait(&child_id, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = c.job(&id).await;
    assert_eq!(job["status"], "cancelled");
    assert_eq!(path(&job), ["start"], "{job}");
}

// ---------------------------------------------------------------------------------------------
// Recipe 15: the graph

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r15_graph_endpoint_serves_the_dot_constant() {
    let s = Server::start(ex::all()).await;
    let c = s.client();
    for bp in ex::all() {
        let r = c
            .http
            .get(s.url(&format!("/api/v1/blueprints/{}/graph", bp.name())))
            .header("X-Client-Token", &c.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", bp.name());
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/vnd.graphviz"));
        assert_eq!(r.text().await.unwrap(), bp.dot(), "{}", bp.name());
    }
    let r = c
        .http
        .get(s.url("/api/v1/blueprints/conditional_flow/graph"))
        .header("X-Client-Token", &c.token)
        .send()
        .await
        .unwrap();
    let dot = r.text().await.unwrap();
    assert_eq!(dot, ex::r15_r17_r18_r19::conditional::DOT);
    for needle in ["\"start\" -> \"process_data\"", "when ctx.initial_data[\\\"type\\\"] == \\\"A\\\": success"] {
        assert!(dot.contains(needle), "{needle} in {dot}");
    }
}

// ---------------------------------------------------------------------------------------------
// Recipe 16: PATCH .../status

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_patch_status_is_a_partial_update() {
    let s = Server::start([dispatch_options::blueprint()]).await;
    let c = s.client();
    let log = Log::default();
    let _w = RustWorker::start(&s.base, "r16-w", |b| work_task(b, &log).cost_per_skill("work", 0.01));
    c.wait_workers(&["r16-w"]).await;

    // The same worker id and token, sending only the changed field (signed, as every RXON message).
    let raw = RawWorker::new(&s.base, "r16-w", &[]);
    let body = raw.signed(json!({"worker_id": "r16-w", "load": 0.7}), MessageKind::Heartbeat);
    let (code, answer) = raw.send(reqwest::Method::PATCH, "/_worker/workers/r16-w/status", Some(&body)).await;
    assert_eq!(code, 200, "{answer}");
    let w = c.worker("r16-w").await.unwrap();
    assert_eq!(w["load"], 0.7, "{w}");
    assert_eq!(w["supported_skills"][0]["name"], "work", "the rest of the record is kept: {w}");
    assert_eq!(w["capabilities"]["cost_per_skill"]["work"], 0.01, "{w}");
    let id = c.create("/api/v1/jobs/dispatch", json!({})).await;
    assert_eq!(c.wait_terminal(&id, T).await["status"], "finished", "still dispatched to");

    // The cookbook's unsigned body is refused (and changes nothing).
    let (code, _) =
        raw.send(reqwest::Method::PATCH, "/_worker/workers/r16-w/status", Some(&json!({"load": 0.9}))).await;
    assert_eq!(code, 403);
    assert_eq!(c.worker("r16-w").await.unwrap()["load"], 0.7);
}

// ---------------------------------------------------------------------------------------------
// Recipe 17: clients.toml and client config in handlers

const CLIENTS_TOML: &str = r#"
[client_premium]
token = "user_token_vip"
plan = "premium"
monthly_attempts = 100000
languages = ["en", "de", "fr"]

[client_free]
token = "user_token_free"
plan = "free"
monthly_attempts = 1000
languages = ["en"]

[client_de]
token = "user_token_de"
plan = "free"
monthly_attempts = 1000
languages = ["de"]

[client_trial]
token = "user_token_trial"
plan = "free"
monthly_attempts = 2
languages = ["en"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r17_client_config_and_quotas() {
    let dir = temp_dir("r17");
    let clients = dir.join("clients.toml");
    std::fs::write(&clients, CLIENTS_TOML).unwrap();
    let cfg = test_config_with(&[("CLIENTS_CONFIG_PATH", clients.to_str().unwrap())]);
    let s = Server::with_config([ex::r15_r17_r18_r19::premium::blueprint()], cfg).await;
    let _w = RustWorker::start(&s.base, "r17-w", |b| {
        b.task("high_quality_generation", |_p: Value, _t: TaskHandle| async move {
            TaskOutcome::success(json!({"quality": "high"}))
        })
        .task("standard_quality_generation", |_p: Value, _t: TaskHandle| async move {
            TaskOutcome::success(json!({"quality": "standard"}))
        })
    });
    let base = s.client();
    for (token, status, quality) in [
        ("user_token_vip", "finished", Some("high")),
        ("user_token_free", "finished", Some("standard")),
        ("user_token_de", "failed", None),
    ] {
        let c = base.with_token(token);
        let id = c.create("/api/v1/jobs/premium_flow", json!({"prompt": "a cat"})).await;
        let job = c.wait_terminal(&id, T).await;
        assert_eq!(job["status"], status, "{token}: {job}");
        match quality {
            Some(q) => assert_eq!(job["state_history"]["quality"], q, "{token}"),
            None => assert_eq!(job["error_message"], "Language not supported for your plan"),
        }
    }
    // monthly_attempts: job creations count (status reads do not); the third is refused.
    let trial = base.with_token("user_token_trial");
    for _ in 0..2 {
        let (code, body) = trial.post("/api/v1/jobs/premium_flow", &json!({})).await;
        assert_eq!(code, 202);
        let id = body["job_id"].as_str().unwrap();
        assert_eq!(trial.get(&format!("/api/v1/jobs/{id}")).await.0, 200);
    }
    let (code, body) = trial.post("/api/v1/jobs/premium_flow", &json!({})).await;
    assert_eq!(code, 429, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Quota exceeded"), "{body}");
}

// ---------------------------------------------------------------------------------------------
// Recipe 18: validation in the start handler, outcomes in end handlers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r18_start_validation_and_end_outcomes() {
    let s = Server::start([ex::r15_r17_r18_r19::validation::blueprint()]).await;
    let c = s.client();
    let log = Log::default();
    let _w = RustWorker::start(&s.base, "r18-w", |b| {
        let log = log.clone();
        b.task(Skill::new("invoice_ocr").output_statuses(["rejected"]), move |p: Value, task: TaskHandle| {
            let log = log.clone();
            async move {
                log.record(&task);
                if p["user"] == "u-reject" {
                    TaskOutcome::status("rejected", json!({"rejection_reason": "blurry scan"}))
                } else {
                    TaskOutcome::success(json!({"ocr": "done"}))
                }
            }
        })
    });
    let run = |data: Value| {
        let c = c.clone();
        async move {
            let id = c.create("/api/v1/jobs/validation", data).await;
            (c.wait_terminal(&id, T).await, id)
        }
    };
    let (job, _) = run(json!({"user_id": "u1"})).await;
    assert_eq!(status_state(&job), ("failed", "invalid_input_failed"), "{job}");
    assert_eq!(path(&job), ["validate_input", "invalid_input_failed"]);

    let (job, id) = run(json!({"user_id": "u1", "document_type": "invoice"})).await;
    assert_eq!(status_state(&job), ("finished", "cleanup_and_notify_success"), "{job}");
    assert_eq!(path(&job), ["validate_input", "process_invoice", "cleanup_and_notify_success"]);
    assert_eq!(
        (job["state_history"]["validated_user"].as_str(), job["state_history"]["doc_type"].as_str()),
        (Some("u1"), Some("invoice"))
    );
    assert_eq!(job["state_history"]["ocr"], "done");
    assert_eq!(log.of_job(&id).len(), 1);

    let (job, _) = run(json!({"user_id": "u-reject", "document_type": "invoice"})).await;
    assert_eq!(status_state(&job), ("failed", "handle_rejection"), "{job}");
    assert_eq!(job["state_history"]["rejection_reason"], "blurry scan");

    let (job, id) = run(json!({"user_id": "u2", "document_type": "memo"})).await;
    assert_eq!(status_state(&job), ("finished", "cleanup_and_notify_success"), "{job}");
    assert_eq!(path(&job), ["validate_input", "process_other_document", "cleanup_and_notify_success"]);
    assert!(log.of_job(&id).is_empty(), "no task for other documents");
}

// ---------------------------------------------------------------------------------------------
// Recipe 19: resource requirements

fn gpu(model: &str, vram_gb: i64) -> HardwareDevice {
    let mut properties = serde_json::Map::new();
    properties.insert("vram_gb".into(), json!(vram_gb));
    HardwareDevice {
        device_type: "gpu".into(),
        model: Some(model.into()),
        id: Some("0".into()),
        properties: Some(properties),
        metrics: None,
    }
}

fn sd15() -> InstalledArtifact {
    InstalledArtifact::new("stable-diffusion-1.5", "1.5")
}

fn montage(b: WorkerBuilder) -> WorkerBuilder {
    b.task("video_montage", |_p: Value, task: TaskHandle| async move {
        TaskOutcome::success(json!({"rendered_by": task.worker_id()}))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r19_resource_requirements_route_to_the_right_worker() {
    let s = Server::start([ex::r15_r17_r18_r19::gpu::blueprint(), dispatch_options::blueprint()]).await;
    let c = s.client();
    // None of these qualifies for "NVIDIA T4, >= 16 GB, stable-diffusion-1.5".
    let _others = [
        RustWorker::start(&s.base, "r19-cpu", |b| montage(b).installed_artifact(sd15())),
        RustWorker::start(&s.base, "r19-t4-8gb", |b| montage(b).device(gpu("NVIDIA T4", 8)).installed_artifact(sd15())),
        RustWorker::start(&s.base, "r19-a100", |b| {
            montage(b).device(gpu("NVIDIA A100", 80)).installed_artifact(sd15())
        }),
        RustWorker::start(&s.base, "r19-t4-no-model", |b| montage(b).device(gpu("NVIDIA T4", 16))),
    ];
    c.wait_workers(&["r19-cpu", "r19-t4-8gb", "r19-a100", "r19-t4-no-model"]).await;
    let first = c.create("/api/v1/jobs/gpu_flow", json!({"clip": 1})).await;
    let job = c.wait_for(&first, &["waiting_for_worker"], T).await;
    assert!(job["waiting_reason"].as_str().unwrap_or_default().contains("no eligible worker"), "{job}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.job(&first).await["status"], "waiting_for_worker");

    // The model name matches as a substring, VRAM as a minimum.
    let _t4 = RustWorker::start(&s.base, "r19-t4", |b| {
        montage(b).device(gpu("NVIDIA T4 Tensor Core GPU", 16)).installed_artifact(sd15())
    });
    let job = c.wait_terminal(&first, T).await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["state_history"]["rendered_by"], "r19-t4");
    for i in 0..4 {
        let id = c.create("/api/v1/jobs/gpu_flow", json!({"clip": i})).await;
        assert_eq!(c.wait_terminal(&id, T).await["state_history"]["rendered_by"], "r19-t4");
    }

    // Installed software and properties.
    let log = Log::default();
    let _ff5 = RustWorker::start(&s.base, "r19-ffmpeg5", |b| {
        work_task(b, &log).installed_software("ffmpeg", "5.1").cpu_cores(32)
    });
    let _ff6 = RustWorker::start(&s.base, "r19-ffmpeg6", |b| {
        work_task(b, &log).installed_software("ffmpeg", "6.0").cpu_cores(8)
    });
    c.wait_workers(&["r19-ffmpeg5", "r19-ffmpeg6"]).await;
    for (requirements, worker) in [
        (json!({"software": {"ffmpeg": "6.0"}}), "r19-ffmpeg6"),
        (json!({"installed_software": {"ffmpeg": "5.1"}}), "r19-ffmpeg5"),
        (json!({"installed_software": ["ffmpeg"], "resources": {"cpu_cores": 16}}), "r19-ffmpeg5"),
    ] {
        for _ in 0..2 {
            let id = c.create("/api/v1/jobs/dispatch", json!({"requirements": requirements})).await;
            let job = c.wait_terminal(&id, T).await;
            assert_eq!(job["state_history"]["by"], worker, "{requirements}: {job}");
        }
    }
    let id = c.create("/api/v1/jobs/dispatch", json!({"requirements": {"software": {"ffmpeg": "7.0"}}})).await;
    let job = c.wait_for(&id, &["waiting_for_worker"], T).await;
    assert!(job["waiting_reason"].as_str().unwrap_or_default().contains("ffmpeg"), "{job}");
}

/// The SDKs describe a GPU from `GPU_MODEL`/`GPU_VRAM_GB` as `{"type": "gpu", "model", "id",
/// "properties": {"memory_gb": N}}`; recipe 19 asks for `{"gpu": {"model", "vram_gb": 16}}`.
/// A worker configured the documented way must qualify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r19_gpu_from_sdk_settings_meets_the_requirement() {
    let s = Server::start([ex::r15_r17_r18_r19::gpu::blueprint()]).await;
    let c = s.client();
    let env = WorkerConfig::from_vars([
        ("GPU_MODEL", "NVIDIA T4"),
        ("GPU_VRAM_GB", "16"),
        ("INSTALLED_ARTIFACTS", r#"[{"name": "stable-diffusion-1.5", "version": "1.5"}]"#),
    ])
    .unwrap();
    let _w = RustWorker::start(&s.base, "r19-sdk-rust", |b| {
        montage(b).configure(|cfg| {
            cfg.devices = env.devices.clone();
            cfg.installed_artifacts = env.installed_artifacts.clone();
        })
    });
    c.wait_workers(&["r19-sdk-rust"]).await;
    let id = c.create("/api/v1/jobs/gpu_flow", json!({})).await;
    let job = c.wait_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!(job["state_history"]["rendered_by"], "r19-sdk-rust", "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r19_gpu_from_sdk_settings_meets_the_requirement_python_sdk() {
    let s = Server::start([ex::r15_r17_r18_r19::gpu::blueprint()]).await;
    let c = s.client();
    let dir = temp_dir("r19");
    let _w = PyWorker::start_script(
        "recipe_worker.py",
        &s.base,
        "r19-sdk-py",
        &[
            ("MARKER_DIR", dir.to_str().unwrap()),
            ("GPU_MODEL", "NVIDIA T4"),
            ("GPU_VRAM_GB", "16"),
            ("INSTALLED_ARTIFACTS", r#"[{"name": "stable-diffusion-1.5", "version": "1.5"}]"#),
        ],
    );
    c.wait_workers(&["r19-sdk-py"]).await;
    let id = c.create("/api/v1/jobs/gpu_flow", json!({})).await;
    let job = c.wait_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!(job["state_history"]["rendered_by"], "r19-sdk-py", "{job}");
}

// ---------------------------------------------------------------------------------------------
// Recipe 24: individual worker tokens

const WORKERS_TOML: &str = r#"
[worker-001]
token = "super-secret-token-for-worker-1"

[worker-002]
token = "another-unique-token-for-worker-2"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r24_individual_worker_tokens() {
    let dir = temp_dir("r24");
    let workers = dir.join("workers.toml");
    std::fs::write(&workers, WORKERS_TOML).unwrap();
    let cfg = test_config_with(&[("WORKERS_CONFIG_PATH", workers.to_str().unwrap())]);
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let c = s.client();
    let (log, cancelled) = (Log::default(), Cancelled::default());

    // A Rust worker with its individual token.
    let rust = RustWorker::spawn(echo_task(
        RustWorker::builder("worker-001").orchestrator_url(&s.base).token("super-secret-token-for-worker-1"),
        &log,
        &cancelled,
    ));
    c.wait_workers(&["worker-001"]).await;
    let id = c.create("/api/v1/jobs/echo", json!({"n": "rust", "tag_worker": true})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["result"]["_worker"], "worker-001", "{job}");
    rust.stop().await;

    // A Python worker with WORKER_INDIVIDUAL_TOKEN (its WORKER_TOKEN is the shared one).
    let _py =
        PyWorker::start(&s.base, "worker-002", &[("WORKER_INDIVIDUAL_TOKEN", "another-unique-token-for-worker-2")]);
    c.wait_workers(&["worker-002"]).await;
    let id = c.create("/api/v1/jobs/echo", json!({"n": "python", "tag_worker": true})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["result"]["_worker"], "worker-002", "{job}");

    // A listed worker must use its own token: the shared one or another worker's is refused.
    let mut raw = RawWorker::new(&s.base, "worker-001", &["echo"]);
    let (code, body) = raw.register().await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["error"], "Unauthorized: Invalid individual worker token");
    raw.token = "another-unique-token-for-worker-2".into();
    assert_eq!(raw.register().await.0, 403);
    // Unlisted workers still use the shared WORKER_TOKEN (hybrid model), but not someone's individual token.
    let mut other = RawWorker::new(&s.base, "worker-unlisted", &["echo"]);
    assert_eq!(other.register().await.0, 200);
    other.token = "super-secret-token-for-worker-1".into();
    assert_eq!(other.register().await.0, 403);
}

// ---------------------------------------------------------------------------------------------
// Work stealing, dead workers, timeouts, worker events

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_stealing_moves_a_backlog_to_an_idle_worker() {
    let s = Server::start([dispatch_options::blueprint()]).await;
    let c = s.client();
    let (log, gate) = (Log::default(), Gate::new());
    let gated_work = |b: WorkerBuilder| {
        let (log, gate) = (log.clone(), gate.clone());
        b.max_concurrent_tasks(1).task("work", move |_p: Value, task: TaskHandle| {
            let (log, gate) = (log.clone(), gate.clone());
            async move {
                log.record(&task);
                if task.worker_id() == "steal-slow" {
                    gate.wait().await;
                }
                TaskOutcome::success(json!({"by": task.worker_id()}))
            }
        })
    };
    // One worker, stuck on its first task, with three more queued behind it: its heartbeats are
    // far apart, so it still looks idle (a status lags the load by up to a heartbeat).
    let _slow = RustWorker::start(&s.base, "steal-slow", |b| {
        gated_work(b).configure(|c| {
            c.heartbeat_interval = Duration::from_secs(60);
            c.heartbeat_cooldown = Duration::from_secs(60);
        })
    });
    c.wait_workers(&["steal-slow"]).await;
    // Its first heartbeat (right after registering, `idle`) is in: the next is a minute away.
    let deadline = Instant::now() + T;
    while !c.worker("steal-slow").await.is_some_and(|w| w["current_tasks"].is_array()) {
        assert!(Instant::now() < deadline, "no heartbeat from steal-slow");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = c.create("/api/v1/jobs/dispatch", json!({"i": 0})).await;
    log.started(&first).await;
    let mut backlog = Vec::new();
    for i in 1..=3 {
        let id = c.create("/api/v1/jobs/dispatch", json!({"i": i})).await;
        c.wait_until(&id, T, "queued", |j| j["current_task"]["worker_id"] == "steal-slow").await;
        backlog.push(id);
    }
    // An idle worker with the same skill joins: it takes work from the backlog.
    let _idle = RustWorker::start(&s.base, "steal-idle", gated_work);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stolen = 0;
        for id in &backlog {
            let job = c.job(id).await;
            if job["status"] == "finished" {
                assert_eq!(job["state_history"]["by"], "steal-idle", "{job}");
                stolen += 1;
            }
        }
        if stolen >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no queued task moved to the idle worker in 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gate.open();
    for id in backlog.iter().chain([&first]) {
        assert_eq!(c.wait_terminal(id, T).await["status"], "finished");
        assert_eq!(log.of_job(id).len(), 1, "each task ran once");
    }
}

/// A server whose workers are declared dead after 2 s without a heartbeat (test workers
/// heartbeat every 300 ms).
async fn short_ttl_server() -> Server {
    let mut cfg = test_config_with(&[]);
    cfg.worker_health_check_interval = Duration::from_secs(1);
    cfg.watcher_interval = Duration::from_millis(100);
    Server::with_config([dispatch_options::blueprint()], cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_worker_tasks_are_requeued_and_its_late_result_is_ignored() {
    let s = short_ttl_server().await;
    let c = s.client();
    // A worker that takes a task and then goes silent (no more heartbeats).
    let ghost = RawWorker::new(&s.base, "dead-ghost", &["work"]);
    assert_eq!(ghost.register().await.0, 200);
    let held = c.create("/api/v1/jobs/dispatch", json!({"n": "held"})).await;
    let (code, task) = ghost.poll().await;
    assert_eq!(code, 200);
    assert_eq!(task["job_id"], held.as_str());
    let queued = c.create("/api/v1/jobs/dispatch", json!({"n": "queued"})).await;
    c.wait_until(&queued, T, "queued on the ghost", |j| j["current_task"]["worker_id"] == "dead-ghost").await;

    // A live worker with the same skill; it holds the re-queued task until the gate opens.
    let (log, gate) = (Log::default(), Gate::new());
    let _alive = RustWorker::start(&s.base, "dead-alive", |b| {
        let (log, gate) = (log.clone(), gate.clone());
        b.task("work", move |p: Value, task: TaskHandle| {
            let (log, gate) = (log.clone(), gate.clone());
            async move {
                log.record(&task);
                if p["n"] == "held" {
                    gate.wait().await;
                }
                TaskOutcome::success(json!({"by": task.worker_id()}))
            }
        })
    });
    let job = c.wait_terminal(&queued, T).await;
    assert_eq!(job["state_history"]["by"], "dead-alive", "the dead worker's queue moved: {job}");
    let moved = log.started(&held).await;
    assert_ne!(moved.task_id, "", "{moved:?}");
    assert!(c.worker("dead-ghost").await.is_none(), "the silent worker is gone");
    assert_eq!(c.job(&held).await["current_task"]["worker_id"], "dead-alive");

    // The ghost answers late: its lease moved, the result is ignored.
    let (code, answer) = ghost.succeed(&task, json!({"by": "dead-ghost"})).await;
    assert_eq!(code, 200);
    assert_eq!(
        (answer["status"].as_str(), answer["reason"].as_str()),
        (Some("ignored"), Some("worker_mismatch")),
        "{answer}"
    );
    assert_eq!(c.job(&held).await["status"], "waiting_for_worker");
    gate.open();
    let job = c.wait_terminal(&held, T).await;
    assert_eq!(job["status"], "finished");
    assert_eq!(job["state_history"]["by"], "dead-alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_python_worker_tasks_move_to_another_worker() {
    let s = short_ttl_server().await;
    let c = s.client();
    let py = PyWorker::start(&s.base, "dead-py", &[("HEARTBEAT_INTERVAL", "0.2")]);
    c.wait_workers(&["dead-py"]).await;
    let id = c.create("/api/v1/jobs/dispatch", json!({"skill": "echo", "sleep": 30, "n": "x"})).await;
    c.wait_until(&id, T, "picked up by the Python worker", |j| j["current_task"]["worker_id"] == "dead-py").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(py); // SIGKILL: no offline heartbeat, no result
    let (log, cancelled) = (Log::default(), Cancelled::default());
    let _rust = RustWorker::start(&s.base, "dead-py-heir", |b| echo_task(b, &log, &cancelled));
    let job = c.wait_until(&id, T, "re-queued", |j| j["current_task"]["worker_id"] == "dead-py-heir").await;
    assert_eq!(job["status"], "waiting_for_worker", "{job}");
    log.started(&id).await;
    assert!(c.worker("dead-py").await.is_none());
    let (code, _) = c.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(code, 200);
    cancelled.wait(&id, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_execution_and_result_retry_dispatch_fails() {
    let s = Server::start([dispatch_options::blueprint()]).await;
    let c = s.client();
    let (log, cancelled) = (Log::default(), Cancelled::default());
    // The first attempt of each job hangs; later attempts answer at once.
    let _w = RustWorker::start(&s.base, "timeouts-w", |b| {
        let (log, cancelled) = (log.clone(), cancelled.clone());
        b.task("slow", move |_p: Value, task: TaskHandle| {
            let (log, cancelled) = (log.clone(), cancelled.clone());
            async move {
                let first = log.of_job(task.job_id()).is_empty();
                log.record(&task);
                if first && !sleep_or_cancelled(&task, Duration::from_secs(20), &cancelled).await {
                    return TaskOutcome::cancelled();
                }
                TaskOutcome::success(json!({"attempt_task": task.task_id()}))
            }
        })
    });
    c.wait_workers(&["timeouts-w"]).await;

    // Execution timeout of the dispatch (`.timeout(..)`) and the job's result timeout.
    let exec = c.create("/api/v1/jobs/dispatch", json!({"skill": "slow", "timeout": 1.0})).await;
    let (code, body) =
        c.post("/api/v1/jobs/dispatch", &json!({"initial_data": {"skill": "slow"}, "result_timeout": 1.0})).await;
    assert_eq!(code, 202, "{body}");
    let result = body["job_id"].as_str().unwrap().to_owned();
    for id in [&exec, &result] {
        let job = c.wait_terminal(id, T).await;
        assert_eq!(job["status"], "finished", "retried as TIMEOUT_ERROR, then succeeded: {job}");
        let seen = log.of_job(id);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_ne!(seen[0].task_id, seen[1].task_id);
        assert_eq!(job["state_history"]["attempt_task"], seen[1].task_id.as_str());
        let gap = seen[1].at.duration_since(seen[0].at);
        assert!(gap >= Duration::from_millis(1000), "not before the timeout: {gap:?}");
        // The timed-out attempt was stopped on the worker.
        cancelled.wait(id, Duration::from_secs(3)).await;
    }

    // Dispatch timeout: nobody picks the task up; not retried; the failure transition runs.
    let started = Instant::now();
    let (code, body) = c
        .post("/api/v1/jobs/dispatch", &json!({"initial_data": {"skill": "nobody_has_this"}, "dispatch_timeout": 0.5}))
        .await;
    assert_eq!(code, 202, "{body}");
    let id = body["job_id"].as_str().unwrap();
    let job = c.wait_terminal(id, T).await;
    assert_eq!(status_state(&job), ("failed", "failed"), "{job}");
    assert_eq!(job["last_error"]["code"], "DISPATCH_TIMEOUT_ERROR");
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert!(started.elapsed() < Duration::from_secs(3), "not retried");

    // The same when the task sits in the queue of a registered worker that never polls.
    let lazy = RawWorker::new(&s.base, "timeouts-lazy", &["lazy"]);
    assert_eq!(lazy.register().await.0, 200);
    let started = Instant::now();
    let (code, body) =
        c.post("/api/v1/jobs/dispatch", &json!({"initial_data": {"skill": "lazy"}, "dispatch_timeout": 0.5})).await;
    assert_eq!(code, 202, "{body}");
    let id = body["job_id"].as_str().unwrap();
    c.wait_until(id, T, "queued on the lazy worker", |j| j["current_task"]["worker_id"] == "timeouts-lazy").await;
    let job = c.wait_terminal(id, T).await;
    assert_eq!(status_state(&job), ("failed", "failed"), "{job}");
    assert_eq!(job["last_error"]["code"], "DISPATCH_TIMEOUT_ERROR");
    assert!(started.elapsed() >= Duration::from_millis(450));
    let (code, _) = lazy.poll().await;
    assert_eq!(code, 204, "the timed-out task left the worker's queue");
}

/// Epoch milliseconds now (the clock of every deadline the job status shows).
fn epoch_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Issue 14 item 3: every wait is bounded. A task for a skill no worker offers, with no dispatch
/// timeout anywhere, waits DEFAULT_DISPATCH_TIMEOUT_SECONDS (its deadline in the job status),
/// then takes its failure path with DISPATCH_TIMEOUT_ERROR, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_nobody_takes_fails_after_the_default_dispatch_timeout() {
    let config = test_config_with(&[("DEFAULT_DISPATCH_TIMEOUT_SECONDS", "0.8")]);
    let s = Server::with_config([dispatch_options::blueprint()], config).await;
    let c = s.client();
    let started = Instant::now();
    let before = epoch_ms();
    let id = c.create("/api/v1/jobs/dispatch", json!({"skill": "nobody_offers_this"})).await;
    let job = c.wait_for(&id, &["waiting_for_worker"], T).await;
    assert!(job["waiting_reason"].as_str().is_some_and(|r| r.contains("nobody_offers_this")), "{job}");
    let deadline = job["dispatch_deadline_ms"].as_u64().unwrap_or_else(|| panic!("deadline shown: {job}"));
    assert!((before + 800..=epoch_ms() + 800).contains(&deadline), "{deadline} is 0.8 s after dispatch: {job}");
    // The compact status shows it too.
    let (code, compact) = c.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!((code, compact["dispatch_deadline_ms"].as_u64()), (200, Some(deadline)), "{compact}");

    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("failed", "failed"), "{job}");
    assert_eq!(job["last_error"]["code"], "DISPATCH_TIMEOUT_ERROR", "{job}");
    assert!(job.get("dispatch_deadline_ms").is_none(), "no deadline once it ended: {job}");
    assert!(started.elapsed() >= Duration::from_millis(750), "not before the deadline");
    assert!(started.elapsed() < Duration::from_secs(4), "not retried");
}

/// An explicit dispatch timeout, of the dispatch or of the job, wins over
/// DEFAULT_DISPATCH_TIMEOUT_SECONDS, also when it is longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_dispatch_timeout_wins_over_the_default() {
    let config = test_config_with(&[("DEFAULT_DISPATCH_TIMEOUT_SECONDS", "0.5")]);
    let s = Server::with_config([dispatch_options::blueprint()], config).await;
    let c = s.client();
    let started = Instant::now();
    let before = epoch_ms();
    let by_dispatch =
        c.create("/api/v1/jobs/dispatch", json!({"skill": "nobody_offers_this", "dispatch_timeout": 2.5})).await;
    let (code, body) = c
        .post(
            "/api/v1/jobs/dispatch",
            &json!({"initial_data": {"skill": "nobody_offers_this"}, "dispatch_timeout": 2.5}),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let by_job = body["job_id"].as_str().unwrap().to_owned();
    for id in [&by_dispatch, &by_job] {
        let job = c.wait_for(id, &["waiting_for_worker"], T).await;
        let deadline = job["dispatch_deadline_ms"].as_u64().unwrap_or_else(|| panic!("deadline shown: {job}"));
        assert!((before + 2500..=epoch_ms() + 2500).contains(&deadline), "{deadline} is 2.5 s after dispatch: {job}");
    }
    // Well past the default: both still wait.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in [&by_dispatch, &by_job] {
        assert_eq!(c.job(id).await["status"], "waiting_for_worker");
    }
    for id in [&by_dispatch, &by_job] {
        let job = c.wait_terminal(id, T).await;
        assert_eq!(status_state(&job), ("failed", "failed"), "{job}");
        assert_eq!(job["last_error"]["code"], "DISPATCH_TIMEOUT_ERROR", "{job}");
    }
    assert!(started.elapsed() >= Duration::from_millis(2400), "not before the explicit deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_event_transitions_move_the_job() {
    let s = Server::start([event_flow::blueprint()]).await;
    let c = s.client();
    let cancelled = Cancelled::default();
    let _w = RustWorker::start(&s.base, "events-w", |b| {
        let cancelled = cancelled.clone();
        b.task(
            Skill::new("echo").event_schema("early_exit", json!({"type": "object"})),
            move |_p: Value, task: TaskHandle| {
                let cancelled = cancelled.clone();
                async move {
                    task.event("early_exit", json!({"why": "enough data"})).await.expect("event accepted");
                    if !sleep_or_cancelled(&task, Duration::from_secs(10), &cancelled).await {
                        return TaskOutcome::cancelled();
                    }
                    TaskOutcome::success(json!({"late": true}))
                }
            },
        )
    });
    let id = c.create("/api/v1/jobs/events", json!({})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(status_state(&job), ("finished", "exited_early"), "{job}");
    assert_eq!(job["state_history"]["event_early_exit"], json!({"why": "enough data"}));
    // The task was superseded: cancelled on the worker, its late answer ignored.
    cancelled.wait(&id, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = c.job(&id).await;
    assert_eq!(job["current_state"], "exited_early");
    assert!(job["state_history"].get("late").is_none(), "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r10_cancellation_reaches_a_worker_that_was_declared_dead_and_re_registered() {
    let s = short_ttl_server().await;
    let c = s.client();
    let w = RawWorker::new(&s.base, "rereg", &["work"]);
    assert_eq!(w.register().await.0, 200);
    let id = c.create("/api/v1/jobs/dispatch", json!({})).await;
    let (code, task) = w.poll().await;
    assert_eq!(code, 200);
    let task_id = task["task_id"].as_str().unwrap();
    let (code, _) = c.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(code, 200);
    // The worker (no WebSocket) misses its heartbeats long enough to be declared dead, then comes
    // back still running the task: its heartbeats must still carry the cancellation.
    let deadline = Instant::now() + T;
    while c.worker("rereg").await.is_some() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, _) = w.heartbeat(&[task_id]).await;
    assert_eq!(code, 404, "unknown after expiry: register again");
    let (code, body) = w.register().await;
    assert_eq!(code, 200, "{body}");
    let (code, hb) = w.heartbeat(&[task_id]).await;
    assert_eq!(code, 200);
    assert_eq!(hb["cancel_task_ids"], json!([task_id]), "the cancellation still reaches it: {hb}");
}
