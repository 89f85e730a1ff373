//! The worker runtime: registration, heartbeats, polling, task execution, results, shutdown.

use super::client::{OrchestratorClient, Polled};
use super::handle::{EventSink, TaskHandle};
use super::select::PollPlanner;
use super::skill::{erase, SkillEntry};
use super::{
    IntoTaskOutcome, MultiOrchestratorMode, OrchestratorConfig, Skill, TaskOutcome, WorkerConfig, WorkerError,
};
use crate::protocol::{
    self, error_codes, sign, unix_now, worker_status, HardwareDevice, Heartbeat, HeartbeatResponse, InstalledArtifact,
    MessageKind, Resources, ResourcesUsage, ResultResponse, SkillInfo, TaskPayload, TaskResult, TaskSigCheck,
    WorkerCapabilities, WorkerCommand, WorkerEventPayload, WorkerRegistration,
};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::Instrument;

/// Handler of a custom WebSocket command.
pub(crate) type CommandHandler = Arc<dyn Fn(WorkerCommand) -> BoxFuture<'static, ()> + Send + Sync>;
/// Resource usage reporter for heartbeats.
pub(crate) type UsageChecker = Arc<dyn Fn() -> ResourcesUsage + Send + Sync>;

/// A Rust worker speaking RXON. Build it with [`Worker::builder`] or [`Worker::from_env`], then
/// [`Worker::run`].
///
/// ```no_run
/// use avto::worker::{TaskHandle, TaskOutcome, Worker};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct EchoParams { msg: String }
///
/// # async fn main_() -> Result<(), avto::worker::WorkerError> {
/// Worker::builder()
///     .worker_id("echo-worker-1")
///     .orchestrator_url("http://127.0.0.1:8080")
///     .token("secure-worker-token")
///     .task("echo", |p: EchoParams, task: TaskHandle| async move {
///         task.progress(0.5, "halfway").await;
///         TaskOutcome::success(serde_json::json!({"echo": p.msg}))
///     })
///     .build()?
///     .run()
///     .await
/// # }
/// ```
pub struct Worker {
    shared: Arc<Shared>,
    stop: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.shared.cfg.worker_id)
            .field("skills", &self.shared.skill_order)
            .finish_non_exhaustive()
    }
}

/// Triggers a graceful shutdown of a running [`Worker`] (what SIGTERM does).
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    stop: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

/// Builder of a [`Worker`].
pub struct WorkerBuilder {
    cfg: WorkerConfig,
    skills: Vec<SkillEntry>,
    type_limits: HashMap<String, usize>,
    commands: HashMap<String, CommandHandler>,
    usage_checker: Option<UsageChecker>,
    http: Option<reqwest::Client>,
    #[cfg(feature = "s3")]
    pub(super) s3: Option<Arc<super::s3::PayloadOffload>>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl Default for WorkerBuilder {
    fn default() -> Self {
        Self::with_config(WorkerConfig::default())
    }
}

impl WorkerBuilder {
    /// Start from an explicit configuration.
    pub fn with_config(cfg: WorkerConfig) -> Self {
        WorkerBuilder {
            cfg,
            skills: Vec::new(),
            type_limits: HashMap::new(),
            commands: HashMap::new(),
            usage_checker: None,
            http: None,
            #[cfg(feature = "s3")]
            s3: None,
        }
    }

    /// Replace the whole configuration (tasks stay).
    pub fn config(mut self, cfg: WorkerConfig) -> Self {
        self.cfg = cfg;
        self
    }
    /// Edit the configuration in place.
    pub fn configure(mut self, f: impl FnOnce(&mut WorkerConfig)) -> Self {
        f(&mut self.cfg);
        self
    }
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.cfg.worker_id = id.into();
        self
    }
    pub fn worker_type(mut self, t: impl Into<String>) -> Self {
        self.cfg.worker_type = t.into();
        self
    }
    /// A single orchestrator (replaces the list).
    pub fn orchestrator_url(mut self, url: impl Into<String>) -> Self {
        self.cfg.orchestrators = vec![OrchestratorConfig::new(url.into().trim_end_matches('/')).priority(1)];
        self
    }
    /// Replace the orchestrator list (sorted by priority, then URL).
    pub fn orchestrators(mut self, list: impl IntoIterator<Item = OrchestratorConfig>) -> Self {
        let mut list: Vec<OrchestratorConfig> = list.into_iter().collect();
        list.sort_by(|a, b| (a.priority, &a.url).cmp(&(b.priority, &b.url)));
        self.cfg.orchestrators = list;
        self
    }
    pub fn multi_orchestrator_mode(mut self, mode: MultiOrchestratorMode) -> Self {
        self.cfg.multi_orchestrator_mode = mode;
        self
    }
    /// The worker token: auth header and HMAC key (`WORKER_TOKEN` / `WORKER_INDIVIDUAL_TOKEN`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.cfg.token = token.into();
        self
    }
    /// `ORCHESTRATOR_SECRET_KEY`: verify task signatures.
    pub fn secret_key(mut self, key: impl Into<String>) -> Self {
        self.cfg.secret_key = Some(key.into());
        self
    }
    pub fn max_concurrent_tasks(mut self, n: usize) -> Self {
        self.cfg.max_concurrent_tasks = n;
        self
    }
    /// At most `n` tasks of skill type `skill_type` at once.
    pub fn skill_type_limit(mut self, skill_type: impl Into<String>, n: usize) -> Self {
        self.type_limits.insert(skill_type.into(), n);
        self
    }
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.cfg.heartbeat_interval = d;
        self
    }
    pub fn enable_websockets(mut self, on: bool) -> Self {
        self.cfg.enable_websockets = on;
        self
    }
    pub fn use_sts(mut self, on: bool) -> Self {
        self.cfg.use_sts = on;
        self
    }
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.cfg.shutdown_timeout = d;
        self
    }
    /// `capabilities.cost_per_skill[skill]`.
    pub fn cost_per_skill(mut self, skill: impl Into<String>, cost: f64) -> Self {
        self.cfg.cost_per_skill.insert(skill.into(), cost);
        self
    }
    /// A device in `resources.devices` (e.g. [`HardwareDevice::gpu`]).
    pub fn device(mut self, device: HardwareDevice) -> Self {
        self.cfg.devices.push(device);
        self
    }
    pub fn cpu_cores(mut self, n: i64) -> Self {
        self.cfg.cpu_cores = n;
        self
    }
    pub fn ram_gb(mut self, gb: f64) -> Self {
        self.cfg.ram_gb = gb;
        self
    }
    /// Any other `resources.properties` entry.
    pub fn resource_property(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.cfg.resource_properties.insert(key.into(), value.into());
        self
    }
    pub fn installed_software(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.cfg.installed_software.insert(name.into(), version.into());
        self
    }
    /// An installed model or other artifact.
    pub fn installed_artifact(mut self, artifact: InstalledArtifact) -> Self {
        self.cfg.installed_artifacts.push(artifact);
        self
    }
    /// `capabilities.extra.<key>`.
    pub fn extra_capability(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.cfg.extra_capabilities.insert(key.into(), value.into());
        self
    }
    /// Reports `usage` in heartbeats (default: zeros, like the SDK without psutil).
    pub fn usage_checker(mut self, f: impl Fn() -> ResourcesUsage + Send + Sync + 'static) -> Self {
        self.usage_checker = Some(Arc::new(f));
        self
    }
    /// Use this HTTP client (e.g. with TLS settings). By default a client without proxies.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Register a task handler for `skill` (a name or a [`Skill`]). The handler takes the params
    /// deserialised into `P` (use `serde_json::Value` for raw params) and a [`TaskHandle`], and
    /// returns anything [`IntoTaskOutcome`]: a [`TaskOutcome`], `Result<T: Serialize, E: Into<TaskError>>`,
    /// a `serde_json::Value`, or `()`. Params that do not deserialise give an
    /// `INVALID_INPUT_ERROR` failure; a panic gives `TRANSIENT_ERROR`.
    pub fn task<P, F, Fut, R>(mut self, skill: impl Into<Skill>, handler: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(P, TaskHandle) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoTaskOutcome + 'static,
    {
        self.skills.push(SkillEntry { skill: skill.into(), handler: erase(handler) });
        self
    }

    /// Handle a custom WebSocket command (`{"command": name, ...}`).
    pub fn on_command<F, Fut>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(WorkerCommand) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.commands.insert(
            name.into(),
            Arc::new(move |cmd| {
                let h = handler.clone();
                Box::pin(async move { h(cmd).await })
            }),
        );
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<Worker, WorkerError> {
        let cfg = self.cfg;
        cfg.validate()?;
        if self.skills.is_empty() {
            return Err(WorkerError::Config("no tasks declared: add at least one with .task(name, handler)".into()));
        }
        let mut skills = BTreeMap::new();
        let mut skill_order = Vec::new();
        let mut cost_per_skill = cfg.cost_per_skill.clone();
        for entry in self.skills {
            let name = entry.skill.name().to_owned();
            protocol::validate_identifier(&name, "skill name").map_err(|e| WorkerError::Config(e.to_string()))?;
            if let Some(t) = &entry.skill.info.skill_type {
                protocol::validate_identifier(t, "skill type").map_err(|e| WorkerError::Config(e.to_string()))?;
            }
            if let Some(c) = entry.skill.cost {
                cost_per_skill.insert(name.clone(), c);
            }
            if skills.insert(name.clone(), Arc::new(entry)).is_some() {
                return Err(WorkerError::Config(format!("task '{name}' declared twice")));
            }
            skill_order.push(name);
        }
        let infos: Vec<SkillInfo> = skill_order.iter().map(|n| skills[n].skill.info.clone()).collect();
        let hash = protocol::skills_hash(&infos, &cost_per_skill, &cfg.extra_capabilities);
        let http = match self.http {
            Some(c) => c,
            None => reqwest::Client::builder()
                .no_proxy()
                .user_agent(concat!("avto-worker/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| WorkerError::Config(format!("HTTP client: {e}")))?,
        };
        let orchs = cfg
            .orchestrators
            .iter()
            .enumerate()
            .map(|(idx, o)| {
                let token = o.token.clone().unwrap_or_else(|| cfg.token.clone());
                Arc::new(Orch {
                    idx,
                    cfg: o.clone(),
                    client: Arc::new(OrchestratorClient::new(
                        http.clone(),
                        &o.url,
                        &cfg.worker_id,
                        &token,
                        cfg.request_timeout,
                    )),
                    results: OnceLock::new(),
                    registered: AtomicBool::new(false),
                    reregister: AtomicBool::new(false),
                    backoff: Mutex::new(Backoff::default()),
                    synced_hash: Mutex::new(None),
                    hb_wakeup: Notify::new(),
                    registered_notify: Notify::new(),
                    last_heartbeat: Mutex::new(None),
                    ws_out: Mutex::new(None),
                    usage_sent: Mutex::new(None),
                    sts: Mutex::new(None),
                })
            })
            .collect();
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            cfg,
            skills,
            skill_order,
            infos,
            cost_per_skill,
            skills_hash: hash,
            type_limits: self.type_limits,
            active: Mutex::new(HashMap::new()),
            hot: Mutex::new(BTreeSet::new()),
            orchs,
            commands: self.commands,
            usage_checker: self.usage_checker,
            in_flight: AtomicUsize::new(0),
            in_flight_done: Notify::new(),
            state_changed: Notify::new(),
            registered_any: Notify::new(),
            accepting: AtomicBool::new(true),
            #[cfg(feature = "s3")]
            s3: self.s3,
        });
        Ok(Worker { shared, stop: Arc::new(stop) })
    }
}

impl Worker {
    /// A builder with the default configuration.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::default()
    }

    /// A builder configured from the environment (see [`WorkerConfig::from_env`]).
    pub fn from_env() -> Result<WorkerBuilder, WorkerError> {
        let builder = WorkerBuilder::with_config(WorkerConfig::from_env()?);
        #[cfg(feature = "s3")]
        let builder = builder.s3(super::s3::PayloadOffload::from_env()?);
        Ok(builder)
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.shared.cfg
    }

    /// The `skills_hash` this worker reports.
    pub fn skills_hash(&self) -> &str {
        &self.shared.skills_hash
    }

    /// The registration body this worker sends (signed, with a current timestamp).
    pub fn registration_payload(&self) -> Value {
        self.shared.registration_body()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { stop: self.stop.clone() }
    }

    /// Run until SIGINT/SIGTERM (or a [`ShutdownHandle`]), then shut down gracefully.
    pub async fn run(self) -> Result<(), WorkerError> {
        self.run_until(shutdown_signal()).await
    }

    /// Run until `signal` resolves (or a [`ShutdownHandle`] fires), then shut down gracefully:
    /// stop polling, send the `offline` heartbeat, wait for running tasks (up to
    /// `shutdown_timeout`, then cancel them) and deliver their results.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), WorkerError> {
        let shared = self.shared.clone();
        let cfg = &shared.cfg;
        tracing::info!(
            worker_id = %cfg.worker_id,
            skills = ?shared.skill_order,
            orchestrators = ?cfg.orchestrators.iter().map(|o| o.url.as_str()).collect::<Vec<_>>(),
            mode = ?cfg.multi_orchestrator_mode,
            "worker starting"
        );
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut background = Vec::new();
        for orch in &shared.orchs {
            background.push(tokio::spawn(manage_orchestrator(shared.clone(), orch.clone(), shutdown_rx.clone())));
            if cfg.enable_websockets {
                background.push(tokio::spawn(super::ws::ws_loop(shared.clone(), orch.clone(), shutdown_rx.clone())));
            }
        }
        let poller = tokio::spawn(poll_loop(shared.clone(), shutdown_rx.clone()));

        let mut stop_rx = self.stop.subscribe();
        tokio::select! {
            _ = signal => {}
            _ = until_set(&mut stop_rx) => {}
        }
        tracing::info!("shutdown requested: draining");
        shared.accepting.store(false, Ordering::SeqCst);
        let _ = shutdown_tx.send(true);
        let _ = poller.await;

        // stop new dispatches first
        shared.send_offline_heartbeats().await;

        // wait for running tasks (and their results)
        if !shared.wait_idle(cfg.shutdown_timeout).await {
            let n = shared.cancel_all();
            tracing::warn!("shutdown timeout reached: cancelled {n} running task(s)");
            shared.wait_idle(cfg.cancel_grace + cfg.request_timeout).await;
        }
        for h in background {
            h.abort();
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

// ---------------------------------------------------------------------------------------------
// shared state

pub(crate) struct Shared {
    pub cfg: WorkerConfig,
    skills: BTreeMap<String, Arc<SkillEntry>>,
    skill_order: Vec<String>,
    infos: Vec<SkillInfo>,
    cost_per_skill: BTreeMap<String, f64>,
    skills_hash: String,
    type_limits: HashMap<String, usize>,
    active: Mutex<HashMap<String, ActiveTask>>,
    hot: Mutex<BTreeSet<String>>,
    pub orchs: Vec<Arc<Orch>>,
    commands: HashMap<String, CommandHandler>,
    usage_checker: Option<UsageChecker>,
    in_flight: AtomicUsize,
    in_flight_done: Notify,
    state_changed: Notify,
    registered_any: Notify,
    accepting: AtomicBool,
    /// S3 payload offload (`S3_ENDPOINT_URL`, ...), see [`super::s3`].
    #[cfg(feature = "s3")]
    s3: Option<Arc<super::s3::PayloadOffload>>,
}

struct ActiveTask {
    job_id: String,
    skill_type: String,
    orch: usize,
    cancel: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Backoff {
    until: Option<Instant>,
    current: Duration,
}

struct StsState {
    refresh_token: Option<String>,
    issued: Instant,
    lifetime: Duration,
}

pub(crate) struct Orch {
    pub idx: usize,
    pub cfg: OrchestratorConfig,
    pub client: Arc<OrchestratorClient>,
    /// The result batcher, started by the first result sent after the orchestrator answered a
    /// batch poll (see `worker::result_batch`).
    results: OnceLock<mpsc::UnboundedSender<super::result_batch::Pending>>,
    registered: AtomicBool,
    reregister: AtomicBool,
    backoff: Mutex<Backoff>,
    synced_hash: Mutex<Option<String>>,
    pub hb_wakeup: Notify,
    registered_notify: Notify,
    last_heartbeat: Mutex<Option<Instant>>,
    pub ws_out: Mutex<Option<mpsc::UnboundedSender<String>>>,
    usage_sent: Mutex<Option<(ResourcesUsage, Instant)>>,
    sts: Mutex<Option<StsState>>,
}

impl Orch {
    /// Sends one result: batched with others when the orchestrator takes batches, else alone.
    async fn send_result(&self, body: &Value) -> Result<ResultResponse, WorkerError> {
        if !self.client.batches() {
            return self.client.send_result(body).await;
        }
        let queue = self.results.get_or_init(|| super::result_batch::start(self.client.clone()));
        let (tx, rx) = oneshot::channel();
        if queue.send((crate::protocol::canonical::to_canonical_string(body), tx)).is_err() {
            return self.client.send_result(body).await;
        }
        rx.await.unwrap_or_else(|_| Err(WorkerError::Network("result batch was dropped".into())))
    }

    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::SeqCst)
    }
    fn pollable(&self, now: Instant) -> bool {
        self.is_registered() && self.backoff.lock().unwrap().until.is_none_or(|u| u <= now)
    }
    fn reset_poll_backoff(&self) {
        *self.backoff.lock().unwrap() = Backoff::default();
    }
    fn poll_failed(&self, cfg: &WorkerConfig, err: &WorkerError) -> Duration {
        let mut b = self.backoff.lock().unwrap();
        let delay = match err {
            WorkerError::RateLimited { retry_after: Some(ra), .. } if !ra.is_zero() => *ra,
            WorkerError::RateLimited { .. } => next_backoff(b.current, cfg.poll_backoff_initial, cfg.poll_backoff_max)
                .max(cfg.rate_limit_backoff_floor),
            _ => next_backoff(b.current, cfg.poll_backoff_initial, cfg.poll_backoff_max),
        };
        b.current = delay;
        let now = Instant::now();
        // Any delay (a huge Retry-After or backoff setting) gives an instant the clock can hold.
        b.until = Some(now.checked_add(delay).unwrap_or_else(|| now + Duration::from_secs(365 * 86_400)));
        delay
    }
    /// Resolves when this orchestrator accepted a registration (immediately if it did).
    pub async fn wait_registered(&self) {
        loop {
            let notified = self.registered_notify.notified();
            if self.is_registered() {
                return;
            }
            notified.await;
        }
    }

    /// Ask the manager to register again (the orchestrator lost the session).
    fn request_reregister(&self) {
        self.reregister.store(true, Ordering::SeqCst);
        self.hb_wakeup.notify_one();
    }
}

/// Most tasks asked for in one poll (avto's server caps a batch at the same number).
const MAX_TASKS_PER_POLL: usize = 64;

/// `min(max(current * 2, initial), max)`, the SDK's backoff step.
fn next_backoff(current: Duration, initial: Duration, max: Duration) -> Duration {
    (current * 2).max(initial).min(max)
}

impl Shared {
    fn sign(&self, mut body: Value, kind: MessageKind) -> Value {
        if self.cfg.signs_messages() {
            sign::attach_security(&mut body, &self.cfg.token, &self.cfg.worker_id, kind);
        }
        body
    }

    /// (status, available skill names, hot skill names), as the SDK computes them.
    fn state(&self) -> (&'static str, Vec<String>, Vec<String>) {
        let active = self.active.lock().unwrap();
        if active.len() >= self.cfg.max_concurrent_tasks || !self.accepting.load(Ordering::SeqCst) {
            return (worker_status::FULL, vec![], vec![]);
        }
        let mut by_type: HashMap<&str, usize> = HashMap::new();
        for t in active.values() {
            *by_type.entry(t.skill_type.as_str()).or_default() += 1;
        }
        let hot_set = self.hot.lock().unwrap();
        let mut available = Vec::new();
        let mut hot = Vec::new();
        for name in &self.skill_order {
            let ty = self.skills[name].skill.type_name();
            let free = self.type_limits.get(ty).is_none_or(|limit| by_type.get(ty).copied().unwrap_or(0) < *limit);
            if free {
                available.push(name.clone());
                if hot_set.contains(name) {
                    hot.push(name.clone());
                }
            }
        }
        let status = if available.is_empty() { worker_status::BUSY } else { worker_status::IDLE };
        (status, available, hot)
    }

    /// How many tasks one poll may ask for: the free slots, or one when skill types have their
    /// own limits (the orchestrator's queue does not know them, so a batch could overfill one).
    fn batch_size(&self) -> usize {
        if !self.type_limits.is_empty() {
            return 1;
        }
        let active = self.active.lock().unwrap().len();
        self.cfg.max_concurrent_tasks.saturating_sub(active).clamp(1, MAX_TASKS_PER_POLL)
    }

    fn capabilities(&self) -> WorkerCapabilities {
        let mut extra = Map::new();
        extra.insert("websockets".into(), Value::Bool(self.cfg.enable_websockets));
        for (k, v) in &self.cfg.extra_capabilities {
            extra.insert(k.clone(), v.clone());
        }
        WorkerCapabilities {
            hostname: self.cfg.hostname.clone(),
            ip_address: self.cfg.ip_address.clone(),
            cost_per_skill: Some(self.cost_per_skill.clone()),
            #[cfg(feature = "s3")]
            s3_config_hash: self.s3.as_ref().map(|s| s.config().config_hash()),
            #[cfg(not(feature = "s3"))]
            s3_config_hash: None,
            extra: Some(extra),
        }
    }

    pub(crate) fn registration_body(&self) -> Value {
        let (_, available, hot) = self.state();
        let mut props = Map::new();
        props.insert("cpu_cores".into(), Value::from(self.cfg.cpu_cores));
        props.insert("ram_gb".into(), Value::from(self.cfg.ram_gb));
        for (k, v) in &self.cfg.resource_properties {
            props.insert(k.clone(), v.clone());
        }
        let mut reg = WorkerRegistration::new(self.cfg.worker_id.clone());
        reg.worker_type = self.cfg.worker_type.clone();
        reg.supported_skills = Some(self.infos.clone());
        reg.available_skills = non_empty(available);
        reg.hot_skills = non_empty(hot);
        reg.resources = Some(Resources {
            devices: (!self.cfg.devices.is_empty()).then(|| self.cfg.devices.clone()),
            properties: Some(props),
        });
        reg.installed_software = Some(self.cfg.installed_software.clone());
        reg.installed_artifacts = Some(self.cfg.installed_artifacts.clone());
        reg.capabilities = Some(self.capabilities());
        reg.skills_hash = Some(self.skills_hash.clone());
        reg.timestamp = Some(unix_now());
        self.sign(serde_json::to_value(reg).expect("registration serialises"), MessageKind::Registration)
    }

    fn usage_for(&self, orch: &Orch) -> Option<ResourcesUsage> {
        let current = self.usage_checker.as_ref().map(|f| f()).unwrap_or_default();
        let mut sent = orch.usage_sent.lock().unwrap();
        let now = Instant::now();
        let due = match &*sent {
            None => true,
            Some((last, at)) => now.duration_since(*at) >= Duration::from_secs(60) || usage_changed(last, &current),
        };
        if due {
            *sent = Some((current.clone(), now));
            Some(current)
        } else {
            None
        }
    }

    fn heartbeat_body(&self, orch: &Orch) -> Value {
        let (status, available, hot) = self.state();
        let synced = orch.synced_hash.lock().unwrap().clone();
        let mut hb = Heartbeat::new(self.cfg.worker_id.clone(), status);
        hb.usage = self.usage_for(orch);
        hb.current_tasks = Some(self.task_ids_of(orch.idx));
        if synced.as_deref() != Some(self.skills_hash.as_str()) {
            hb.supported_skills = Some(self.infos.clone());
        }
        hb.available_skills = non_empty(available);
        hb.hot_skills = non_empty(hot);
        hb.skills_hash = Some(self.skills_hash.clone());
        hb.timestamp = Some(unix_now());
        let mut body = serde_json::to_value(hb).expect("heartbeat serialises");
        if self.cfg.enable_websockets && self.cfg.ws_cancel_compat {
            // avtomatika 1.0b30 pushes cancel_task only if the stored record has a top-level
            // capabilities.websockets; the heartbeat merge is the only way to store it. It is
            // true only while the command channel is connected (a heartbeat follows every
            // connect and disconnect).
            let connected = orch.ws_out.lock().unwrap().is_some();
            let mut caps = serde_json::to_value(self.capabilities()).expect("capabilities serialise");
            caps["websockets"] = Value::Bool(connected);
            body["capabilities"] = caps;
        }
        self.sign(body, MessageKind::Heartbeat)
    }

    fn task_ids_of(&self, orch: usize) -> Vec<String> {
        let active = self.active.lock().unwrap();
        let mut ids: Vec<String> = active.iter().filter(|(_, t)| t.orch == orch).map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids
    }

    /// Send one heartbeat; returns the jitter the orchestrator asked for.
    async fn send_heartbeat(&self, orch: &Orch) -> Result<Duration, WorkerError> {
        let body = self.heartbeat_body(orch);
        *orch.last_heartbeat.lock().unwrap() = Some(Instant::now());
        let resp = orch.client.heartbeat(&body).await?;
        let Some(resp) = resp else { return Ok(Duration::ZERO) };
        self.handle_heartbeat_response(orch, &resp);
        let jitter = resp.next_heartbeat_jitter_ms.filter(|j| j.is_finite() && *j > 0.0).unwrap_or(0.0);
        Ok(Duration::from_secs_f64(jitter / 1000.0))
    }

    fn handle_heartbeat_response(&self, orch: &Orch, resp: &HeartbeatResponse) {
        *orch.synced_hash.lock().unwrap() = Some(self.skills_hash.clone());
        if resp.require_full_sync {
            tracing::warn!(orchestrator = %orch.cfg.url, "orchestrator requested a full sync");
            *orch.synced_hash.lock().unwrap() = None;
        }
        if !resp.cancel_task_ids.is_empty() {
            // the spec says task ids; avtomatika 1.0b30 matches job ids: accept both
            let active = self.active.lock().unwrap();
            for (task_id, t) in active.iter() {
                if t.orch == orch.idx && resp.cancel_task_ids.iter().any(|id| id == task_id || *id == t.job_id) {
                    tracing::warn!(%task_id, "task cancelled via heartbeat answer");
                    let _ = t.cancel.send(true);
                }
            }
        }
    }

    async fn send_offline_heartbeats(&self) {
        let futs = self.orchs.iter().filter(|o| o.is_registered()).map(|orch| {
            let (_, _, hot) = self.state();
            let mut hb = Heartbeat::new(self.cfg.worker_id.clone(), worker_status::OFFLINE);
            hb.usage = Some(self.usage_checker.as_ref().map(|f| f()).unwrap_or_default());
            hb.current_tasks = Some(self.task_ids_of(orch.idx));
            hb.supported_skills = Some(vec![]);
            hb.hot_skills = non_empty(hot);
            hb.skills_hash = Some(orch.synced_hash.lock().unwrap().clone().unwrap_or_default());
            hb.timestamp = Some(unix_now());
            let body = self.sign(serde_json::to_value(hb).expect("heartbeat serialises"), MessageKind::Heartbeat);
            async move {
                match tokio::time::timeout(Duration::from_secs(5), orch.client.heartbeat(&body)).await {
                    Ok(Ok(_)) => tracing::info!(orchestrator = %orch.cfg.url, "sent offline heartbeat"),
                    Ok(Err(e)) => tracing::warn!(orchestrator = %orch.cfg.url, "offline heartbeat failed: {e}"),
                    Err(_) => tracing::warn!(orchestrator = %orch.cfg.url, "offline heartbeat timed out"),
                }
            }
        });
        futures::future::join_all(futs).await;
    }

    pub(crate) fn wake_heartbeats(&self) {
        for o in &self.orchs {
            o.hb_wakeup.notify_one();
        }
    }

    /// Cancel a task by id (WebSocket command).
    pub(crate) fn cancel_task(&self, orch: usize, task_id: Option<&str>, job_id: Option<&str>) -> bool {
        let active = self.active.lock().unwrap();
        let mut hit = false;
        for (id, t) in active.iter() {
            let matches = match (task_id, job_id) {
                (Some(tid), _) => tid == id,
                (None, Some(jid)) => jid == t.job_id,
                (None, None) => false,
            };
            if matches && t.orch == orch {
                let _ = t.cancel.send(true);
                hit = true;
            }
        }
        hit
    }

    fn cancel_all(&self) -> usize {
        let active = self.active.lock().unwrap();
        for t in active.values() {
            let _ = t.cancel.send(true);
        }
        active.len()
    }

    pub(crate) fn handle_command(self: &Arc<Self>, orch: &Orch, text: &str) {
        let cmd: WorkerCommand = match serde_json::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("failed to parse WebSocket command: {e}");
                return;
            }
        };
        if cmd.command == protocol::COMMAND_CANCEL_TASK {
            if self.cancel_task(orch.idx, cmd.task_id.as_deref(), cmd.job_id.as_deref()) {
                tracing::info!(task_id = ?cmd.task_id, "task cancelled by command");
            } else {
                tracing::debug!(task_id = ?cmd.task_id, "cancel_task for a task not running here");
            }
        } else if let Some(h) = self.commands.get(&cmd.command) {
            let fut = h(cmd);
            tokio::spawn(async move {
                if let Err(e) = tokio::spawn(fut).await {
                    tracing::error!("command handler failed: {e}");
                }
            });
        } else {
            tracing::warn!(command = %cmd.command, "received unknown command");
        }
    }

    async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.in_flight_done.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight.load(Ordering::SeqCst) == 0;
            }
        }
    }

    // --- tasks ----------------------------------------------------------------------------

    /// A task arrived from `orch`: verify, register, run in the background.
    fn accept_task(self: &Arc<Self>, orch: &Arc<Orch>, raw: Value) {
        let payload: TaskPayload = match serde_json::from_value(raw.clone()) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(orchestrator = %orch.cfg.url, "dropping malformed task payload: {e}");
                return;
            }
        };
        if let Some(secret) = self.cfg.secret_key.as_deref().filter(|s| !s.is_empty()) {
            match sign::verify_task(&raw, secret) {
                TaskSigCheck::Valid => {}
                TaskSigCheck::Missing if !self.cfg.require_task_signature => {
                    tracing::warn!(task_id = %payload.task_id, "task without orchestrator signature (allowed by REQUIRE_TASK_SIGNATURE=false)")
                }
                TaskSigCheck::Missing => {
                    tracing::error!(task_id = %payload.task_id, "task missing mandatory orchestrator signature: rejected");
                    return;
                }
                TaskSigCheck::Invalid => {
                    tracing::error!(task_id = %payload.task_id, "task orchestrator signature mismatch: rejected");
                    return;
                }
            }
        }
        let skill_type = self
            .skills
            .get(&payload.task_type)
            .map(|s| s.skill.type_name().to_owned())
            .unwrap_or_else(|| payload.task_type.clone());
        let (cancel_tx, cancel_rx) = watch::channel(false);
        {
            let mut active = self.active.lock().unwrap();
            if active.contains_key(&payload.task_id) {
                tracing::warn!(task_id = %payload.task_id, "task delivered twice while running: ignoring the copy");
                return;
            }
            active.insert(
                payload.task_id.clone(),
                ActiveTask { job_id: payload.job_id.clone(), skill_type, orch: orch.idx, cancel: cancel_tx },
            );
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.wake_heartbeats();
        let span = tracing::info_span!("task", task_id = %payload.task_id, job_id = %payload.job_id, skill = %payload.task_type);
        // The orchestrator's dispatch span (payload `tracing_context.traceparent`) is the task span's parent.
        let parent = payload.tracing_context.as_ref().and_then(crate::trace::TraceParent::from_map);
        let (span, _) = crate::trace::span_with_parent(span, parent);
        tokio::spawn(execute(self.clone(), orch.clone(), payload, cancel_rx).instrument(span));
    }

    /// A task of a poll answer whose payload cannot be read (see [`Polled::Unreadable`]): it is
    /// reported failed (`INVALID_INPUT_ERROR`, no retry) at once instead of waiting for its timeout.
    fn reject_unreadable(
        self: &Arc<Self>,
        orch: &Arc<Orch>,
        job_id: String,
        task_id: String,
        task_type: String,
        error: String,
    ) {
        tracing::error!(%job_id, %task_id, "task payload cannot be read: {error}; reporting the task failed");
        let payload: TaskPayload = match serde_json::from_value(
            serde_json::json!({"job_id": job_id, "task_id": task_id, "type": task_type}),
        ) {
            Ok(p) => p,
            Err(e) => return tracing::error!("cannot report an unreadable task: {e}"),
        };
        let outcome = TaskOutcome::failure(
            error_codes::INVALID_INPUT_ERROR,
            format!("the worker cannot read the task payload: {error}"),
        )
        .into_wire();
        let (shared, orch) = (self.clone(), orch.clone());
        tokio::spawn(async move { shared.deliver_result(&orch, &payload, outcome, Duration::ZERO).await });
    }

    fn finish_task(&self, task_id: &str) {
        self.active.lock().unwrap().remove(task_id);
        self.wake_heartbeats();
        self.state_changed.notify_one();
    }

    fn result_body(&self, payload: &TaskPayload, outcome: &TaskOutcome, elapsed: Duration) -> Value {
        let mut r = TaskResult::new(payload.job_id.clone(), payload.task_id.clone(), outcome.status.clone());
        r.worker_id = Some(self.cfg.worker_id.clone());
        r.origin_worker_id = Some(self.cfg.worker_id.clone());
        r.data = match &outcome.data {
            Value::Object(m) => Some(m.clone()),
            _ => None,
        };
        r.error = outcome.error.clone();
        r.metadata = outcome.metadata.clone();
        let mut costs = Map::new();
        costs.insert(
            "execution_time_seconds".into(),
            Value::from((elapsed.as_secs_f64() * 10_000.0).round() / 10_000.0),
        );
        for (k, v) in &outcome.costs {
            costs.insert(k.clone(), v.clone());
        }
        r.costs = Some(costs);
        r.timestamp = Some(unix_now());
        self.sign(serde_json::to_value(r).expect("result serialises"), MessageKind::Result)
    }

    /// Deliver a result with retries (fresh timestamp and signature per attempt). `ignored` is final.
    async fn deliver_result(&self, orch: &Orch, payload: &TaskPayload, outcome: TaskOutcome, elapsed: Duration) {
        let mut delay = self.cfg.result_retry_initial_delay;
        let attempts = self.cfg.result_max_retries.max(1);
        for attempt in 1..=attempts {
            let body = self.result_body(payload, &outcome, elapsed);
            match orch.send_result(&body).await {
                Ok(resp) if resp.is_ignored() => {
                    let reason = resp.reason.as_deref().unwrap_or("?");
                    let (job_id, task_id) = (payload.job_id.as_str(), payload.task_id.as_str());
                    if matches!(reason, "deadline_exceeded" | "job_cancelled") {
                        tracing::info!(reason, job_id, task_id, "result ignored by the orchestrator");
                    } else {
                        tracing::warn!(reason, job_id, task_id, message = ?resp.message, "result ignored by the orchestrator");
                    }
                    return;
                }
                Ok(resp) => {
                    tracing::debug!(
                        status = %outcome.status,
                        transition = ?resp.transition,
                        job_id = %payload.job_id,
                        task_id = %payload.task_id,
                        "result accepted"
                    );
                    return;
                }
                Err(WorkerError::Http { status, body }) if matches!(status, 400 | 413 | 422) => {
                    tracing::error!(status, %body, "result rejected by the orchestrator");
                    return;
                }
                Err(e) if attempt == attempts => {
                    tracing::error!("failed to send result after {attempts} attempts: {e}");
                    return;
                }
                Err(WorkerError::RateLimited { retry_after, .. }) => {
                    let wait = retry_after.unwrap_or_default().max(delay);
                    tracing::warn!("rate limited sending result; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    tracing::warn!("error sending result (attempt {attempt}/{attempts}): {e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
            }
            delay *= 2;
        }
    }
}

fn non_empty(v: Vec<String>) -> Option<Vec<String>> {
    (!v.is_empty()).then_some(v)
}

/// The SDK's telemetry deadband: CPU ±5 points, RAM ±5 %, device load/VRAM likewise.
fn usage_changed(last: &ResourcesUsage, cur: &ResourcesUsage) -> bool {
    const DEADBAND: f64 = 5.0;
    if (cur.cpu_load_percent - last.cpu_load_percent).abs() > DEADBAND {
        return true;
    }
    let rel = |last: f64, cur: f64| {
        if last == 0.0 {
            cur > 0.0
        } else {
            ((cur - last) / last).abs() > DEADBAND / 100.0
        }
    };
    if rel(last.ram_used_gb, cur.ram_used_gb) {
        return true;
    }
    let (lg, cg) = (last.devices_usage.as_deref().unwrap_or(&[]), cur.devices_usage.as_deref().unwrap_or(&[]));
    if lg.len() != cg.len() {
        return true;
    }
    for c in cg {
        let Some(l) = lg.iter().find(|l| l.unit_id == c.unit_id) else { return true };
        if (c.load_percent - l.load_percent).abs() > DEADBAND {
            return true;
        }
        let vram = |d: &protocol::DeviceUsage| {
            d.metrics.as_ref().and_then(|m| m.get("memory_used_gb")).and_then(Value::as_f64).unwrap_or(0.0)
        };
        if rel(vram(l), vram(c)) {
            return true;
        }
    }
    false
}

/// Runs one task to completion and delivers its result.
async fn execute(shared: Arc<Shared>, orch: Arc<Orch>, payload: TaskPayload, cancel_rx: watch::Receiver<bool>) {
    struct InFlight<'a>(&'a Shared);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.0.in_flight_done.notify_waiters();
        }
    }
    let _guard = InFlight(&shared);
    let start = Instant::now();
    let outcome = run_handler(&shared, &orch, &payload, cancel_rx).await;
    // S3 offload: files of the task directory named in the result are uploaded; the directory goes.
    #[cfg(feature = "s3")]
    let outcome = match &shared.s3 {
        None => outcome,
        Some(s3) => {
            let mut outcome = outcome;
            s3.publish(&payload.job_id, &payload.task_id, &mut outcome).await;
            s3.clear(&payload.task_id).await;
            outcome
        }
    };
    let elapsed = start.elapsed();
    shared.finish_task(&payload.task_id);
    let outcome = outcome.into_wire();
    match outcome.error_info() {
        Some(e) => tracing::info!(status = %outcome.status, code = %e.code, message = %e.message, "task finished"),
        None => tracing::info!(status = %outcome.status, ?elapsed, "task finished"),
    }
    shared.deliver_result(&orch, &payload, outcome, elapsed).await;
}

async fn run_handler(
    shared: &Arc<Shared>,
    orch: &Arc<Orch>,
    payload: &TaskPayload,
    mut cancel_rx: watch::Receiver<bool>,
) -> TaskOutcome {
    if let Some(allowed) = payload.allowed_skills() {
        if !allowed.contains(&payload.task_type.as_str()) {
            return TaskOutcome::failure(
                error_codes::SECURITY_ERROR,
                format!("Task type '{}' is not permitted by task policy", payload.task_type),
            );
        }
    }
    let Some(entry) = shared.skills.get(&payload.task_type).cloned() else {
        tracing::warn!("unsupported skill '{}'", payload.task_type);
        return TaskOutcome::failure(error_codes::PERMANENT_ERROR, format!("Unsupported skill: {}", payload.task_type));
    };
    let sink: Arc<dyn EventSink> =
        Arc::new(TaskEvents { shared: shared.clone(), orch: orch.clone(), skill: entry.clone() });
    // S3 offload: `s3://` params become local paths before the handler sees them.
    #[cfg(feature = "s3")]
    let mut staged = payload.clone();
    #[cfg(feature = "s3")]
    let payload = match &shared.s3 {
        None => payload,
        Some(s3) => {
            let mut params = Value::Object(staged.params.take().unwrap_or_default());
            if let Err(outcome) = s3.stage(&payload.task_id, &mut params).await {
                return outcome;
            }
            staged.params = params.as_object().cloned();
            &staged
        }
    };
    // The handle sees (and events carry) the worker task span's context, a child of the orchestrator's one.
    let mut payload = payload.clone();
    let parent = payload.tracing_context.as_ref().and_then(crate::trace::TraceParent::from_map);
    if let Some(tp) = crate::trace::current_context(parent) {
        payload.tracing_context = Some(tp.to_map());
    }
    let handle = TaskHandle::new(payload, cancel_rx.clone(), sink, shared.cfg.worker_id.clone());
    let params = handle.params_raw().clone();
    let handler = entry.handler.clone();
    let mut join = tokio::spawn(async move { handler(params, handle).await }.in_current_span());
    tokio::select! {
        biased;
        res = &mut join => join_outcome(res),
        _ = until_set(&mut cancel_rx) => {
            tracing::info!("task cancelled");
            if tokio::time::timeout(shared.cfg.cancel_grace, &mut join).await.is_err() {
                join.abort();
            }
            TaskOutcome::cancelled()
        }
    }
}

fn join_outcome(res: Result<TaskOutcome, tokio::task::JoinError>) -> TaskOutcome {
    match res {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => {
            let panic = e.into_panic();
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!("task handler panicked: {msg}");
            TaskOutcome::failure(error_codes::TRANSIENT_ERROR, format!("task handler panicked: {msg}"))
        }
        Err(_) => TaskOutcome::cancelled(),
    }
}

/// Events of one task go to the orchestrator that sent it.
struct TaskEvents {
    shared: Arc<Shared>,
    orch: Arc<Orch>,
    skill: Arc<SkillEntry>,
}

impl EventSink for TaskEvents {
    fn emit(
        &self,
        task: &TaskPayload,
        event_type: String,
        payload: Map<String, Value>,
    ) -> BoxFuture<'static, Result<(), WorkerError>> {
        let declared = self.skill.skill.info.events_schema.as_ref().is_some_and(|s| s.contains_key(&event_type));
        if event_type != protocol::EVENT_TYPE_PROGRESS && !declared {
            if self.shared.cfg.strict_event_validation {
                tracing::error!(event_type, "emitting an undeclared event type: blocked");
                return Box::pin(async move { Err(WorkerError::UndeclaredEvent(event_type)) });
            }
            tracing::warn!(event_type, "emitting an undeclared event type (allowed by config)");
        }
        let cfg = &self.shared.cfg;
        let event = WorkerEventPayload {
            event_id: uuid::Uuid::new_v4().to_string(),
            worker_id: cfg.worker_id.clone(),
            origin_worker_id: cfg.worker_id.clone(),
            event_type,
            payload,
            origin_task_id: Some(task.task_id.clone()),
            bubbling_chain: Some(vec![]),
            target_job_id: Some(task.job_id.clone()),
            target_task_id: Some(task.task_id.clone()),
            trace_context: Some(task.tracing_context.clone().unwrap_or_default()),
            priority: 0.0,
            timestamp: Some(unix_now()),
            security: None,
            metadata: None,
        };
        let body = self.shared.sign(serde_json::to_value(event).expect("event serialises"), MessageKind::Event);
        let orch = self.orch.clone();
        Box::pin(async move {
            let ws = orch.ws_out.lock().unwrap().clone();
            if let Some(tx) = ws {
                if tx.send(protocol::to_canonical_string(&body)).is_ok() {
                    return Ok(());
                }
            }
            let resp = orch.client.send_event(&body).await?;
            if resp.status == "error" {
                return Err(WorkerError::EventRejected(Value::Object(resp.extra).to_string()));
            }
            Ok(())
        })
    }

    fn set_hot(&self, item: String, hot: bool) {
        let changed = {
            let mut set = self.shared.hot.lock().unwrap();
            if hot {
                set.insert(item)
            } else {
                set.remove(&item)
            }
        };
        if changed {
            self.shared.wake_heartbeats();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// background loops

/// Resolves once the flag is `true` (or its sender is gone).
pub(crate) async fn until_set(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Sleep for `d` unless shutdown; `false` when shutting down.
async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = until_set(shutdown) => return false,
    }
    !*shutdown.borrow()
}

/// Register (with backoff) then heartbeat, forever; re-register when the session is lost.
async fn manage_orchestrator(shared: Arc<Shared>, orch: Arc<Orch>, mut shutdown: watch::Receiver<bool>) {
    let cfg = &shared.cfg;
    'session: loop {
        // --- registration
        orch.registered.store(false, Ordering::SeqCst);
        let mut delay = cfg.registration_retry_initial_delay;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let body = shared.registration_body();
            match orch.client.register(&body).await {
                Ok(resp) => {
                    if let Some(w) = &resp.warning {
                        tracing::warn!(orchestrator = %orch.cfg.url, "registration warning: {w}");
                    }
                    if let Some(token) = resp.access_token.clone() {
                        orch.client.set_access_token(Some(token));
                        *orch.sts.lock().unwrap() = Some(StsState {
                            refresh_token: resp.refresh_token.clone(),
                            issued: Instant::now(),
                            lifetime: Duration::from_secs(resp.expires_in.unwrap_or(3600).max(60) as u64),
                        });
                    }
                    *orch.synced_hash.lock().unwrap() = Some(shared.skills_hash.clone());
                    orch.reregister.store(false, Ordering::SeqCst);
                    orch.reset_poll_backoff();
                    orch.registered.store(true, Ordering::SeqCst);
                    orch.registered_notify.notify_waiters();
                    shared.registered_any.notify_waiters();
                    tracing::info!(orchestrator = %orch.cfg.url, "registered");
                    break;
                }
                Err(e) => {
                    delay = match &e {
                        WorkerError::RateLimited { retry_after: Some(ra), .. } if !ra.is_zero() => *ra,
                        WorkerError::RateLimited { .. } => {
                            next_backoff(delay, cfg.registration_retry_initial_delay, cfg.registration_retry_max_delay)
                                .max(cfg.rate_limit_backoff_floor)
                        }
                        _ => {
                            next_backoff(delay, cfg.registration_retry_initial_delay, cfg.registration_retry_max_delay)
                        }
                    };
                    tracing::warn!(orchestrator = %orch.cfg.url, "registration failed: {e}; retrying in {delay:?}");
                    if !sleep_or_shutdown(delay, &mut shutdown).await {
                        return;
                    }
                }
            }
        }
        if cfg.use_sts && !orch.client.uses_access_token() {
            acquire_sts(&orch).await;
        }

        // --- heartbeats (the first right away)
        let mut backoff = Duration::ZERO;
        let mut wait = Duration::ZERO;
        loop {
            if !wait_for_heartbeat(&shared, &orch, wait, backoff.is_zero(), &mut shutdown).await {
                return;
            }
            if orch.reregister.swap(false, Ordering::SeqCst) {
                tracing::warn!(orchestrator = %orch.cfg.url, "orchestrator lost our session: registering again");
                continue 'session;
            }
            if cfg.use_sts {
                refresh_sts_if_due(&orch).await;
            }
            match shared.send_heartbeat(&orch).await {
                Ok(jitter) => {
                    backoff = Duration::ZERO;
                    wait = cfg.heartbeat_interval + jitter;
                }
                Err(e) if e.means_session_lost() => {
                    tracing::warn!(orchestrator = %orch.cfg.url, "heartbeat: {e}; registering again");
                    *orch.synced_hash.lock().unwrap() = None;
                    if orch.client.uses_access_token() {
                        orch.client.set_access_token(None);
                        *orch.sts.lock().unwrap() = None;
                    }
                    continue 'session;
                }
                Err(e) => {
                    backoff = match &e {
                        WorkerError::RateLimited { retry_after: Some(ra), .. } if !ra.is_zero() => *ra,
                        WorkerError::RateLimited { .. } => {
                            next_backoff(backoff, cfg.heartbeat_interval, cfg.poll_backoff_max)
                                .max(cfg.rate_limit_backoff_floor)
                        }
                        _ => next_backoff(backoff, cfg.heartbeat_interval, cfg.poll_backoff_max),
                    };
                    tracing::warn!(orchestrator = %orch.cfg.url, "heartbeat failed: {e}; next in {backoff:?}");
                    wait = backoff;
                }
            }
        }
    }
}

/// Wait `wait`, or less when a debounced heartbeat is requested (task start/finish, hot skills;
/// at most one per `heartbeat_cooldown`). `false` on shutdown.
async fn wait_for_heartbeat(
    shared: &Shared,
    orch: &Orch,
    wait: Duration,
    accept_wakeups: bool,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    enum Ev {
        Deadline,
        Wake,
        Shutdown,
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if *shutdown.borrow() {
            return false;
        }
        let ev = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => Ev::Deadline,
            _ = orch.hb_wakeup.notified() => Ev::Wake,
            _ = until_set(shutdown) => Ev::Shutdown,
        };
        match ev {
            Ev::Deadline => return true,
            Ev::Shutdown => return false,
            Ev::Wake => {
                if orch.reregister.load(Ordering::SeqCst) {
                    return true;
                }
                if !accept_wakeups {
                    continue;
                }
                let since = orch.last_heartbeat.lock().unwrap().map(|t| t.elapsed()).unwrap_or(Duration::MAX);
                if since < shared.cfg.heartbeat_cooldown {
                    let rest = shared.cfg.heartbeat_cooldown - since;
                    if tokio::time::Instant::now() + rest >= deadline {
                        continue;
                    }
                    return sleep_or_shutdown(rest, shutdown).await;
                }
                return true;
            }
        }
    }
}

async fn acquire_sts(orch: &Orch) {
    match orch.client.sts_token().await {
        Ok(t) => {
            orch.client.set_access_token(Some(t.access_token));
            *orch.sts.lock().unwrap() = Some(StsState {
                refresh_token: t.refresh_token,
                issued: Instant::now(),
                lifetime: Duration::from_secs(t.expires_in.max(60) as u64),
            });
            tracing::info!(orchestrator = %orch.cfg.url, "STS access token obtained (expires in {}s)", t.expires_in);
        }
        Err(e) => tracing::warn!(orchestrator = %orch.cfg.url, "STS token request failed: {e}; using the static token"),
    }
}

async fn refresh_sts_if_due(orch: &Orch) {
    let due = {
        let sts = orch.sts.lock().unwrap();
        match &*sts {
            Some(s) => s.issued.elapsed() >= s.lifetime.mul_f64(0.8),
            None => false,
        }
    };
    if !due {
        return;
    }
    let refresh = orch.sts.lock().unwrap().as_ref().and_then(|s| s.refresh_token.clone());
    let res = match refresh {
        Some(r) => orch.client.sts_refresh(&r).await,
        None => Err(WorkerError::Protocol("no refresh token".into())),
    };
    match res {
        Ok(t) => {
            orch.client.set_access_token(Some(t.access_token));
            *orch.sts.lock().unwrap() = Some(StsState {
                refresh_token: t.refresh_token,
                issued: Instant::now(),
                lifetime: Duration::from_secs(t.expires_in.max(60) as u64),
            });
            tracing::info!(orchestrator = %orch.cfg.url, "STS access token refreshed");
        }
        Err(e) => {
            tracing::warn!(orchestrator = %orch.cfg.url, "STS refresh failed: {e}; requesting a new token");
            acquire_sts(orch).await;
        }
    }
}

/// The single polling loop over all orchestrators (one long-poll at a time, like the SDK).
async fn poll_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let cfg = &shared.cfg;
    // start once any orchestrator accepted the registration
    loop {
        if *shutdown.borrow() {
            return;
        }
        let notified = shared.registered_any.notified();
        if shared.orchs.iter().any(|o| o.is_registered()) {
            break;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = until_set(&mut shutdown) => return,
        }
    }
    let mut planner =
        PollPlanner::new(cfg.multi_orchestrator_mode, shared.orchs.iter().map(|o| o.cfg.weight).collect());
    loop {
        if *shutdown.borrow() {
            return;
        }
        let (status, _, _) = shared.state();
        if status != worker_status::IDLE {
            let changed = shared.state_changed.notified();
            tokio::select! {
                _ = tokio::time::sleep(cfg.idle_poll_delay) => {}
                _ = changed => {}
                _ = until_set(&mut shutdown) => return,
            }
            continue;
        }
        let now = Instant::now();
        let healthy: Vec<bool> = shared.orchs.iter().map(|o| o.pollable(now)).collect();
        let mut found = false;
        for idx in planner.plan(&healthy) {
            if *shutdown.borrow() {
                return;
            }
            let (status, available, hot) = shared.state();
            if status != worker_status::IDLE {
                break;
            }
            let orch = &shared.orchs[idx];
            if !orch.pollable(Instant::now()) {
                continue;
            }
            let max = shared.batch_size();
            let res = tokio::select! {
                r = orch.client.poll(cfg.task_poll_timeout, &available, &hot, max) => r,
                _ = until_set(&mut shutdown) => return,
            };
            match res {
                Ok(tasks) if !tasks.is_empty() => {
                    orch.reset_poll_backoff();
                    for polled in tasks {
                        match polled {
                            Polled::Task(raw) => shared.accept_task(orch, raw),
                            Polled::Unreadable { job_id, task_id, task_type, error } => {
                                shared.reject_unreadable(orch, job_id, task_id, task_type, error)
                            }
                        }
                    }
                    found = true;
                    break;
                }
                Ok(_) => orch.reset_poll_backoff(),
                Err(e @ (WorkerError::Network(_) | WorkerError::RateLimited { .. })) => {
                    let d = orch.poll_failed(cfg, &e);
                    tracing::warn!(orchestrator = %orch.cfg.url, "polling failed: {e}; backing off {d:?}");
                }
                Err(e) => {
                    tracing::error!(orchestrator = %orch.cfg.url, "polling failed: {e}");
                    if e.means_session_lost() {
                        orch.request_reregister();
                    }
                }
            }
        }
        if !found && !sleep_or_shutdown(cfg.idle_poll_delay, &mut shutdown).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_steps_like_the_sdk() {
        let s = Duration::from_secs;
        assert_eq!(next_backoff(Duration::ZERO, s(1), s(60)), s(1));
        assert_eq!(next_backoff(s(1), s(1), s(60)), s(2));
        assert_eq!(next_backoff(s(40), s(1), s(60)), s(60));
        assert_eq!(next_backoff(Duration::ZERO, s(15), s(60)), s(15));
    }

    #[test]
    fn usage_deadband() {
        let base = ResourcesUsage { cpu_load_percent: 10.0, ram_used_gb: 2.0, devices_usage: None };
        assert!(!usage_changed(&base, &ResourcesUsage { cpu_load_percent: 14.0, ..base.clone() }));
        assert!(usage_changed(&base, &ResourcesUsage { cpu_load_percent: 16.0, ..base.clone() }));
        assert!(usage_changed(&base, &ResourcesUsage { ram_used_gb: 2.2, ..base.clone() }));
        assert!(!usage_changed(&base, &ResourcesUsage { ram_used_gb: 2.05, ..base.clone() }));
    }
}
