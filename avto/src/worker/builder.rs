//! [`WorkerBuilder`]: a worker's configuration, tasks, command handlers and options, checked and
//! turned into a [`Worker`] by [`WorkerBuilder::build`]. [`Worker::builder`] and
//! [`Worker::from_env`] are here too, next to what they return.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::session::OrchestratorSession;
use super::skill::{erase, SkillEntry, SkillSet};
use super::state::{CommandHandler, UsageChecker, WorkerState};
use super::{
    IntoTaskOutcome, MultiOrchestratorMode, OrchestratorConfig, Skill, TaskHandle, Worker, WorkerConfig, WorkerError,
};
use crate::protocol::{HardwareDevice, InstalledArtifact, ResourcesUsage, WorkerCommand};
use crate::transport::Transport;

/// Builder of a [`Worker`].
pub struct WorkerBuilder {
    cfg: WorkerConfig,
    skills: Vec<SkillEntry>,
    type_limits: HashMap<String, usize>,
    commands: HashMap<String, CommandHandler>,
    usage_checker: Option<UsageChecker>,
    http: Option<reqwest::Client>,
    #[cfg(feature = "s3")]
    s3: Option<Arc<super::s3::PayloadOffload>>,
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
    /// Send every request through this `reqwest` client (proxies, client certificates, other
    /// roots). By default no proxy is used, and plain `http://` orchestrators are reached through
    /// a lighter pooled client of the SDK's own (same behaviour, less CPU per request; see the
    /// worker module's docs); `https://` ones through reqwest.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }
    /// Turns S3 payload offload on (or off with `None`); [`Worker::from_env`] reads it from the
    /// environment.
    #[cfg(feature = "s3")]
    pub fn s3(mut self, offload: Option<super::s3::PayloadOffload>) -> Self {
        self.s3 = offload.map(Arc::new);
        self
    }

    /// Register a task handler for `skill` (a name or a [`Skill`]). The handler takes the params
    /// deserialised into `P` (use `serde_json::Value` for raw params) and a [`TaskHandle`], and
    /// returns anything [`IntoTaskOutcome`]: a [`TaskOutcome`](super::TaskOutcome),
    /// `Result<T: Serialize, E: Into<TaskError>>`, a `serde_json::Value`, or `()`. Params that do
    /// not deserialise give an `INVALID_INPUT_ERROR` failure; a panic gives `TRANSIENT_ERROR`.
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

    /// Register the handler of the task of contract `C` ([`TaskContract`](crate::TaskContract)):
    /// the skill is [`Skill::of::<C>()`](Skill::of) (name and schemas), and the handler must take
    /// `C::Params` and return `Result<C::Output, E: Into<TaskError>>`, or it does not compile.
    pub fn contract<C, F, Fut, R>(self, handler: F) -> Self
    where
        C: crate::TaskContract,
        F: Fn(C::Params, TaskHandle) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: super::Returns<C::Output> + 'static,
    {
        self.task(Skill::of::<C>(), handler)
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
                let handler = handler.clone();
                Box::pin(async move { handler(cmd).await })
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
        let skills = SkillSet::new(self.skills, &cfg)?;
        // `http://` orchestrators through the direct client unless a client was given; the
        // rest through reqwest (see `transport`).
        let reqwest = match &self.http {
            Some(client) => client.clone(),
            None => reqwest::Client::builder()
                .no_proxy()
                .user_agent(crate::transport::AGENT_WORKER)
                .build()
                .map_err(|e| WorkerError::Config(format!("HTTP client: {e}")))?,
        };
        let direct = Transport::direct(crate::transport::AGENT_WORKER);
        let sessions = cfg
            .orchestrators
            .iter()
            .enumerate()
            .map(|(idx, orchestrator)| {
                let transport = Transport::for_url(&orchestrator.url, self.http.is_some(), &reqwest, &direct);
                Arc::new(OrchestratorSession::new(idx, orchestrator, &cfg, transport))
            })
            .collect();
        let state = WorkerState::new(
            cfg,
            skills,
            self.type_limits,
            sessions,
            self.commands,
            self.usage_checker,
            #[cfg(feature = "s3")]
            self.s3,
        );
        Ok(Worker::new(Arc::new(state)))
    }
}

// The two ways to a builder live with the builder (run.rs has the rest of `Worker`): run.rs need
// not import this module, which imports run.rs for `Worker`.
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
}
