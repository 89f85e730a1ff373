//! Test blueprints without and with a server.
//!
//! - [`TestRun`] drives a blueprint through its states in-process, with scripted worker results.
//!   It uses the same engine functions as the HTTP orchestrator, so a blueprint's routing
//!   (conditions, fan-out and aggregation, approvals, child blueprints, the one-action rule,
//!   retries) is unit-testable without a server or workers.
//! - `TestServer` (features `server` + `client`) runs a real orchestrator on a free loopback
//!   port with fast timings, hands out a typed [`crate::client::Client`], `RawWorker`s that send
//!   signed RXON messages of any content, and (feature `worker`) in-process Rust workers
//!   (`TestWorker`) that stop gracefully or are killed abruptly.
//!
//! ```
//! # use avto::testing::{TestRun, Reply};
//! # async fn demo(bp: avto::Blueprint) {
//! let mut run = TestRun::new(bp)
//!     .initial_data(serde_json::json!({"language": "en"}))
//!     .worker("process_en", |_task| Reply::success(serde_json::json!({"text": "ok"})));
//! let job = run.run().await;
//! assert_eq!(job.status, avto::JobStatus::Finished);
//! # }
//! ```

#[cfg(feature = "client")]
mod raw_worker;
#[cfg(all(feature = "server", feature = "client"))]
mod server;
#[cfg(feature = "worker")]
mod workers;

#[cfg(feature = "client")]
pub use raw_worker::{unix_now, RawWorker};
#[cfg(all(feature = "server", feature = "client"))]
pub use server::{
    init_logging, init_logging_with, test_config, test_config_with, TestServer, TestServerBuilder, TestServerError,
};
#[cfg(feature = "worker")]
pub use workers::TestWorker;

/// The client token of the test configuration (`CLIENT_TOKEN`).
pub const CLIENT_TOKEN: &str = "test-client-token";
/// The workers' token of the test configuration (`GLOBAL_WORKER_TOKEN`).
pub const WORKER_TOKEN: &str = "test-worker-token";
/// The orchestrator's signing secret of the test configuration (`ORCHESTRATOR_SECRET_KEY`).
pub const SECRET: &str = "test-orchestrator-secret";
/// The operator credential of the test configuration (`ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "test-admin-token";

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::blueprint::Blueprint;
use crate::context::{ClientConfig, TaskError};
use crate::engine::{
    advance, apply_approval, apply_event, apply_task_result, cancel, resume_parent, ApprovalError, CancelError, Effect,
    EngineConfig, EngineEnv, ResultDisposition, Step, TaskResult,
};
use crate::files::ObjectStore;
use crate::job::{Job, JobStatus, TaskRecord};
use crate::storage::memory::MemoryDataStores;
use crate::storage::DataStoreBackend;

/// A task the blueprint dispatched and no worker has answered yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub job_id: String,
    pub task_id: String,
    pub task_type: String,
    pub params: Value,
    pub attempt: u32,
    pub priority: f64,
    pub record: TaskRecord,
}

/// A scripted worker answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: String,
    pub data: Value,
    pub error: Option<TaskError>,
}

impl Reply {
    pub fn success(data: impl Serialize) -> Self {
        Reply { status: "success".into(), data: serde_json::to_value(data).unwrap_or(Value::Null), error: None }
    }
    /// A `failure` with an error code (`TRANSIENT_ERROR`, `PERMANENT_ERROR`, `INVALID_INPUT_ERROR`, ...).
    pub fn failure(code: &str, message: &str) -> Self {
        Reply { status: "failure".into(), data: Value::Null, error: Some(TaskError::new(code, message)) }
    }
    /// A custom status (`needs_review`, ...) with data.
    pub fn status(status: &str, data: impl Serialize) -> Self {
        Reply { status: status.into(), data: serde_json::to_value(data).unwrap_or(Value::Null), error: None }
    }
    pub fn cancelled() -> Self {
        Reply { status: "cancelled".into(), data: Value::Null, error: None }
    }
}

type Script = Box<dyn FnMut(&Task) -> Reply + Send>;

/// One job (plus the child jobs it starts) driven in-process.
pub struct TestRun {
    root: Blueprint,
    extra: Vec<Blueprint>,
    config: EngineConfig,
    initial_data: Value,
    client: ClientConfig,
    data_backend: Arc<dyn DataStoreBackend>,
    object_store: Option<Arc<dyn ObjectStore>>,
    app_state: crate::state::AppState,
    scripts: HashMap<String, Script>,
    env: Option<EngineEnv>,
    jobs: BTreeMap<String, Job>,
    root_id: Option<String>,
    pending: Vec<Task>,
    cancelled_tasks: Vec<String>,
    dispositions: Vec<ResultDisposition>,
}

impl std::fmt::Debug for TestRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRun").field("root", &self.root.name()).field("jobs", &self.jobs).finish()
    }
}

impl TestRun {
    /// A run of `blueprint` with empty initial data and in-memory data stores.
    pub fn new(blueprint: Blueprint) -> Self {
        let config = EngineConfig { retry_base: std::time::Duration::ZERO, ..EngineConfig::default() };
        TestRun {
            root: blueprint,
            extra: Vec::new(),
            config,
            initial_data: Value::Object(Default::default()),
            client: ClientConfig { name: "test".into(), plan: "unknown".into(), ..Default::default() },
            data_backend: Arc::new(MemoryDataStores::new()),
            object_store: None,
            app_state: Default::default(),
            scripts: HashMap::new(),
            env: None,
            jobs: BTreeMap::new(),
            root_id: None,
            pending: Vec::new(),
            cancelled_tasks: Vec::new(),
            dispositions: Vec::new(),
        }
    }

    /// Makes another blueprint available (children of `run_blueprint`).
    pub fn blueprint(mut self, blueprint: Blueprint) -> Self {
        self.extra.push(blueprint);
        self
    }
    pub fn initial_data(mut self, data: impl Serialize) -> Self {
        self.initial_data = serde_json::to_value(data).unwrap_or(Value::Null);
        self
    }
    pub fn client(mut self, client: ClientConfig) -> Self {
        self.client = client;
        self
    }
    /// Shares data stores with other runs (e.g. a counter across jobs).
    pub fn data_stores(mut self, backend: Arc<dyn DataStoreBackend>) -> Self {
        self.data_backend = backend;
        self
    }
    pub fn object_store(mut self, store: Arc<dyn ObjectStore>) -> Self {
        self.object_store = Some(store);
        self
    }
    /// Application state for `State<T>` handler arguments (what `Orchestrator::builder().state(..)`
    /// gives a server; [`TestRun::state`] is the job's current state).
    pub fn with_state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.app_state.insert(value);
        self
    }
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }
    /// Answers every task of `task_type` with `script` (called once per attempt).
    pub fn worker(mut self, task_type: &str, script: impl FnMut(&Task) -> Reply + Send + 'static) -> Self {
        self.scripts.insert(task_type.to_owned(), Box::new(script));
        self
    }

    fn env(&mut self) -> EngineEnv {
        if self.env.is_none() {
            let bps = std::iter::once(self.root).chain(self.extra.iter().copied());
            let env = EngineEnv::new(self.config.clone(), bps, self.data_backend.clone(), self.object_store.clone())
                .and_then(|env| env.with_app_state(self.app_state.clone()))
                .unwrap_or_else(|e| panic!("invalid test setup: {e}"));
            self.env = Some(env);
        }
        self.env.clone().unwrap()
    }

    /// Creates the job and advances it until nothing more can happen without outside input
    /// (scripted workers answer along the way).
    ///
    /// # Panics
    /// When the initial data breaks the blueprint's input contract (the orchestrator answers
    /// 400 and creates no job): use [`TestRun::try_start`] to test that.
    pub async fn start(&mut self) -> &Job {
        let (violations, total) = self.input_violations();
        if total > 0 {
            let why = crate::contracts::describe(&violations, total);
            panic!("the initial data breaks blueprint `{}`'s input contract: {why}", self.root.name());
        }
        self.started().await
    }

    /// [`TestRun::start`], or the input contract's violations (every one, with its JSON pointer,
    /// as the orchestrator's 400 lists them) and no job.
    pub async fn try_start(&mut self) -> Result<&Job, Vec<crate::Violation>> {
        let (violations, total) = self.input_violations();
        if total > 0 {
            return Err(violations);
        }
        Ok(self.started().await)
    }

    /// How the initial data breaks the blueprint's input contract (see
    /// [`crate::contracts::Contracts::check_input`]).
    fn input_violations(&mut self) -> (Vec<crate::Violation>, usize) {
        self.env().contracts().check_input(self.root.name(), &self.initial_data)
    }

    async fn started(&mut self) -> &Job {
        let env = self.env();
        if self.root_id.is_none() {
            let id = uuid::Uuid::new_v4().to_string();
            let mut job = Job::new(id.clone(), self.root.name(), self.root.start_state(), self.initial_data.clone());
            job.client = std::sync::Arc::new(self.client.clone());
            self.jobs.insert(id.clone(), job);
            self.root_id = Some(id);
        }
        self.settle(&env).await;
        self.job()
    }

    /// `start`, then return the root job as it is when nothing more happens.
    pub async fn run(&mut self) -> Job {
        self.start().await.clone()
    }

    /// The root job.
    pub fn job(&self) -> &Job {
        let id = self.root_id.as_ref().expect("call start() or run() first");
        &self.jobs[id]
    }
    pub fn status(&self) -> JobStatus {
        self.job().status
    }
    pub fn state(&self) -> &str {
        &self.job().current_state
    }
    /// States the root job entered, in order.
    pub fn path(&self) -> Vec<&str> {
        self.job().path.iter().map(String::as_str).collect()
    }
    /// Every job of the run (root and children).
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }
    /// Child jobs of the root job.
    pub fn children(&self) -> Vec<&Job> {
        let root = self.root_id.clone();
        self.jobs.values().filter(|j| j.parent_job_id == root).collect()
    }
    /// Tasks waiting for an answer.
    pub fn pending_tasks(&self) -> &[Task] {
        &self.pending
    }
    /// The first pending task of `task_type`.
    pub fn task(&self, task_type: &str) -> Option<Task> {
        self.pending.iter().find(|t| t.task_type == task_type).cloned()
    }
    /// Ids of tasks the engine cancelled (parent cancelled, fan-out abandoned, ...).
    pub fn cancelled_tasks(&self) -> &[String] {
        &self.cancelled_tasks
    }
    /// What happened to each worker result, in order.
    pub fn dispositions(&self) -> &[ResultDisposition] {
        &self.dispositions
    }

    /// Answers one pending task, then settles.
    pub async fn reply(&mut self, task: &Task, reply: Reply) -> ResultDisposition {
        let env = self.env();
        let d = self.apply_reply(&env, task, reply);
        self.settle(&env).await;
        d
    }

    /// Delivers a result for any task id (e.g. a stale or duplicate one), then settles.
    pub async fn deliver(&mut self, job_id: &str, result: TaskResult) -> ResultDisposition {
        let env = self.env();
        let Some(job) = self.jobs.get_mut(job_id) else {
            return ResultDisposition::Ignored {
                reason: crate::engine::IgnoreReason::JobNotFound,
                message: format!("job {job_id} not found"),
            };
        };
        let (d, out) = apply_task_result(&env, job, &result);
        self.pending.retain(|t| t.task_id != result.task_id);
        self.dispositions.push(d.clone());
        self.effects(job_id, out);
        self.settle(&env).await;
        d
    }

    fn apply_reply(&mut self, env: &EngineEnv, task: &Task, reply: Reply) -> ResultDisposition {
        let result =
            TaskResult { data: reply.data, error: reply.error, ..TaskResult::new(&task.task_id, reply.status) };
        self.pending.retain(|t| t.task_id != task.task_id);
        let Some(job) = self.jobs.get_mut(&task.job_id) else {
            return ResultDisposition::Ignored {
                reason: crate::engine::IgnoreReason::JobNotFound,
                message: "job not found".into(),
            };
        };
        let (d, out) = apply_task_result(env, job, &result);
        self.dispositions.push(d.clone());
        let job_id = task.job_id.clone();
        self.effects(&job_id, out);
        d
    }

    /// A human decision for the root job.
    pub async fn approve(&mut self, decision: &str) -> Result<(), ApprovalError> {
        let env = self.env();
        let id = self.root_id.clone().expect("call start() first");
        let step = apply_approval(self.jobs.get_mut(&id).unwrap(), decision)?;
        self.effects(&id, step);
        self.settle(&env).await;
        Ok(())
    }

    /// A worker event for a pending task (`progress` or one of the dispatch's `event_transitions`).
    pub async fn event(&mut self, task: &Task, event_type: &str, payload: Value) {
        let env = self.env();
        if let Some(job) = self.jobs.get_mut(&task.job_id) {
            let step = apply_event(job, Some(&task.task_id), event_type, &payload, env.config.progress_updates_max);
            let id = task.job_id.clone();
            self.effects(&id, step);
        }
        self.settle(&env).await;
    }

    /// Cancels the root job.
    pub async fn cancel(&mut self) -> Result<(), CancelError> {
        let env = self.env();
        let id = self.root_id.clone().expect("call start() first");
        let out = cancel(self.jobs.get_mut(&id).unwrap())?;
        self.effects(&id, out);
        self.settle(&env).await;
        Ok(())
    }

    fn effects(&mut self, job_id: &str, out: Step) {
        for effect in out.effects {
            match effect {
                Effect::Dispatch { tasks, .. } => {
                    for r in tasks {
                        self.pending.push(Task {
                            job_id: job_id.to_owned(),
                            task_id: r.task_id.clone(),
                            task_type: r.spec.task_type.clone(),
                            params: r.spec.params.clone(),
                            attempt: r.attempt,
                            priority: r.spec.priority,
                            record: r,
                        });
                    }
                }
                Effect::CancelTasks(tasks) => {
                    for t in tasks {
                        self.pending.retain(|p| p.task_id != t.task_id);
                        self.cancelled_tasks.push(t.task_id);
                    }
                }
                Effect::StartChild(child) => {
                    self.jobs.insert(child.id.clone(), *child);
                }
                Effect::CancelChild(child_id) => {
                    if let Some(child) = self.jobs.get_mut(&child_id) {
                        if let Ok(o) = cancel(child) {
                            self.effects(&child_id, o);
                        }
                    }
                }
                Effect::RetryHandler { .. } => {}
                Effect::Terminal(_) => {
                    let child = self.jobs[job_id].clone();
                    if let Some(parent_id) = child.parent_job_id.clone() {
                        let step = self.jobs.get_mut(&parent_id).and_then(|parent| resume_parent(parent, &child));
                        if let Some(step) = step {
                            self.effects(&parent_id, step);
                        }
                    }
                }
            }
        }
    }

    async fn settle(&mut self, env: &EngineEnv) {
        loop {
            let runnable: Vec<String> = self
                .jobs
                .values()
                .filter(|j| matches!(j.status, JobStatus::Pending | JobStatus::Running | JobStatus::AwaitingRetry))
                .map(|j| j.id.clone())
                .collect();
            let mut progressed = false;
            for id in runnable {
                let mut job = self.jobs.remove(&id).unwrap();
                let out = advance(env, &mut job).await;
                self.jobs.insert(id.clone(), job);
                self.effects(&id, out);
                progressed = true;
            }
            if let Some(idx) = self.pending.iter().position(|t| self.scripts.contains_key(&t.task_type)) {
                let task = self.pending[idx].clone();
                let reply = (self.scripts.get_mut(&task.task_type).unwrap())(&task);
                self.apply_reply(env, &task, reply);
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
    }
}
