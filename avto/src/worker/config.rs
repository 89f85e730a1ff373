//! Worker configuration, read from the Python SDK's environment names.

use super::WorkerError;
use crate::protocol::{self, HardwareDevice, InstalledArtifact};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

/// The SDK's placeholder token: with it the worker does not sign (and real orchestrators reject it).
pub use crate::protocol::sign::PLACEHOLDER_WORKER_TOKEN;

/// One orchestrator of `ORCHESTRATORS_CONFIG`.
#[derive(Debug, Clone, PartialEq)]
pub struct OrchestratorConfig {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Lower = preferred (default 10; a lone `ORCHESTRATOR_URL` gets 1).
    pub priority: i64,
    /// `ROUND_ROBIN` weight (default 1).
    pub weight: i64,
    /// Auth token for this orchestrator (`X-Worker-Token`); messages are still signed with the
    /// worker token.
    pub token: Option<String>,
}

impl OrchestratorConfig {
    pub fn new(url: impl Into<String>) -> Self {
        OrchestratorConfig { url: url.into(), priority: 10, weight: 1, token: None }
    }
    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = priority;
        self
    }
    pub fn weight(mut self, weight: i64) -> Self {
        self.weight = weight;
        self
    }
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

/// How tasks are pulled when several orchestrators are configured (`MULTI_ORCHESTRATOR_MODE`).
/// Every orchestrator is registered with and heartbeated independently in all modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MultiOrchestratorMode {
    /// The Python SDK's default: each cycle polls the orchestrators in priority order and stops
    /// at the first one that returns a task (long-polls are sequential).
    #[default]
    Waterfall,
    /// Smooth weighted round-robin over the orchestrators (the Python SDK's algorithm).
    RoundRobin,
    /// Poll only the first healthy orchestrator in priority order (registered, not backing off
    /// after an error); move on to the next when it fails, come back when it recovers.
    Failover,
}

impl FromStr for MultiOrchestratorMode {
    type Err = WorkerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().replace('-', "_").as_str() {
            "WATERFALL" => Ok(Self::Waterfall),
            "ROUND_ROBIN" | "ROUNDROBIN" => Ok(Self::RoundRobin),
            "FAILOVER" => Ok(Self::Failover),
            other => Err(WorkerError::Config(format!(
                "unknown MULTI_ORCHESTRATOR_MODE '{other}' (expected WATERFALL, ROUND_ROBIN or FAILOVER)"
            ))),
        }
    }
}

/// Everything the worker reads from its environment. Field docs name the variable; defaults are
/// the Python SDK's (avtomatika-worker 1.0b20).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `WORKER_ID` (default `worker-<uuid4>`); must match `^[a-zA-Z0-9_-]{1,128}$`.
    pub worker_id: String,
    /// `WORKER_TYPE` (default `generic-worker`).
    pub worker_type: String,
    /// `ORCHESTRATORS_CONFIG` (JSON list, sorted by priority then URL) or `ORCHESTRATOR_URL`
    /// (default `http://localhost:8080`, priority 1).
    pub orchestrators: Vec<OrchestratorConfig>,
    /// `MULTI_ORCHESTRATOR_MODE` (default `WATERFALL`).
    pub multi_orchestrator_mode: MultiOrchestratorMode,
    /// `WORKER_INDIVIDUAL_TOKEN`, else `WORKER_TOKEN` (default the placeholder
    /// `your-secret-worker-token`, which disables signing). Auth header and HMAC key.
    pub token: String,
    /// `ORCHESTRATOR_SECRET_KEY`, else `SECRET_KEY`: verify the task `sig` when set.
    pub secret_key: Option<String>,
    /// `REQUIRE_TASK_SIGNATURE` (default true): with a secret, reject unsigned tasks.
    pub require_task_signature: bool,
    /// `COST_PER_SKILL` (JSON map) → `capabilities.cost_per_skill`; [`super::Skill::cost`] adds to it.
    pub cost_per_skill: BTreeMap<String, f64>,
    /// `MAX_CONCURRENT_TASKS` (default 10): status `full` at this many tasks in flight.
    pub max_concurrent_tasks: usize,
    /// `CPU_CORES` (default 4) → `resources.properties.cpu_cores`.
    pub cpu_cores: i64,
    /// `RAM_GB` (default 0) → `resources.properties.ram_gb`.
    pub ram_gb: f64,
    /// Further `resources.properties`.
    pub resource_properties: Map<String, Value>,
    /// `GPU_MODEL`/`GPU_ID`/`GPU_VRAM_GB` and `WORKER_DEVICES` (JSON list) → `resources.devices`.
    pub devices: Vec<HardwareDevice>,
    /// `INSTALLED_SOFTWARE` (JSON map; default empty: this is not a Python worker).
    pub installed_software: BTreeMap<String, String>,
    /// `INSTALLED_ARTIFACTS` (JSON list of `{name, version, type, properties}`): installed models.
    pub installed_artifacts: Vec<InstalledArtifact>,
    /// `WORKER_EXTRA_<NAME>` → `capabilities.extra.<name>` (JSON-decoded when it starts with `{`/`[`).
    pub extra_capabilities: Map<String, Value>,
    /// `capabilities.hostname` (default: the host name).
    pub hostname: String,
    /// `capabilities.ip_address` (default `127.0.0.1`).
    pub ip_address: String,
    /// `HEARTBEAT_INTERVAL` seconds (default 15).
    pub heartbeat_interval: Duration,
    /// `WORKER_HEARTBEAT_COOLDOWN` (default 2 s): minimum gap of the extra heartbeats sent on task
    /// start/finish.
    pub heartbeat_cooldown: Duration,
    /// `RESULT_MAX_RETRIES` (default 5).
    pub result_max_retries: u32,
    /// `RESULT_RETRY_INITIAL_DELAY` (default 1 s, doubling).
    pub result_retry_initial_delay: Duration,
    /// `REGISTRATION_RETRY_INITIAL_DELAY` (default 1 s).
    pub registration_retry_initial_delay: Duration,
    /// `REGISTRATION_RETRY_MAX_DELAY` (default 60 s).
    pub registration_retry_max_delay: Duration,
    /// `RATE_LIMIT_BACKOFF_FLOOR` (default 30 s): backoff after a 429 without `Retry-After`.
    pub rate_limit_backoff_floor: Duration,
    /// `TASK_POLL_TIMEOUT` (default 30 s): sent as `?timeout=`; the HTTP timeout is 5 s more.
    pub task_poll_timeout: Duration,
    /// `POLL_BACKOFF_INITIAL` (default 1 s).
    pub poll_backoff_initial: Duration,
    /// `POLL_BACKOFF_MAX` (default 60 s).
    pub poll_backoff_max: Duration,
    /// `IDLE_POLL_DELAY` (default 0.5 s): pause after an empty poll round and while busy.
    pub idle_poll_delay: Duration,
    /// `WORKER_SHUTDOWN_TIMEOUT` (default 30 s): how long shutdown waits for running tasks.
    pub shutdown_timeout: Duration,
    /// `WORKER_ENABLE_WEBSOCKETS` (default false): command channel (push cancellation), events
    /// over the socket, `capabilities.extra.websockets: true`.
    pub enable_websockets: bool,
    /// `STRICT_EVENT_VALIDATION` (default true): non-progress events must be declared in the
    /// skill's `events_schema`.
    pub strict_event_validation: bool,
    /// `WORKER_USE_STS` (avto; default false): exchange the token for STS access tokens after
    /// registration and authenticate with those (signatures keep using the static token).
    pub use_sts: bool,
    /// `WORKER_WS_CANCEL_COMPAT` (avto; default true): with WebSockets on, heartbeats also carry
    /// `capabilities` with a top-level `websockets: true`, the flag avtomatika 1.0b30 checks before
    /// pushing `cancel_task` (its registration model drops it, its heartbeat merge keeps it).
    pub ws_cancel_compat: bool,
    /// `WORKER_CANCEL_GRACE` (avto; default 2 s): after a cancellation, how long the handler may
    /// still run (to observe [`super::TaskHandle::cancelled`] and clean up) before it is dropped.
    pub cancel_grace: Duration,
    /// `WORKER_REQUEST_TIMEOUT` (avto; default 30 s): HTTP timeout of every call but the long-poll.
    pub request_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            worker_id: format!("worker-{}", uuid::Uuid::new_v4()),
            worker_type: "generic-worker".into(),
            orchestrators: vec![OrchestratorConfig::new("http://localhost:8080").priority(1)],
            multi_orchestrator_mode: MultiOrchestratorMode::Waterfall,
            token: PLACEHOLDER_WORKER_TOKEN.into(),
            secret_key: None,
            require_task_signature: true,
            cost_per_skill: BTreeMap::new(),
            max_concurrent_tasks: 10,
            cpu_cores: 4,
            ram_gb: 0.0,
            resource_properties: Map::new(),
            devices: Vec::new(),
            installed_software: BTreeMap::new(),
            installed_artifacts: Vec::new(),
            extra_capabilities: Map::new(),
            hostname: local_hostname(),
            ip_address: "127.0.0.1".into(),
            heartbeat_interval: Duration::from_secs(15),
            heartbeat_cooldown: Duration::from_secs(2),
            result_max_retries: 5,
            result_retry_initial_delay: Duration::from_secs(1),
            registration_retry_initial_delay: Duration::from_secs(1),
            registration_retry_max_delay: Duration::from_secs(60),
            rate_limit_backoff_floor: Duration::from_secs(30),
            task_poll_timeout: Duration::from_secs(30),
            poll_backoff_initial: Duration::from_secs(1),
            poll_backoff_max: Duration::from_secs(60),
            idle_poll_delay: Duration::from_millis(500),
            shutdown_timeout: Duration::from_secs(30),
            enable_websockets: false,
            strict_event_validation: true,
            use_sts: false,
            ws_cancel_compat: true,
            cancel_grace: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
        }
    }
}

fn local_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

impl WorkerConfig {
    /// Read the process environment (see the field docs for the names).
    pub fn from_env() -> Result<Self, WorkerError> {
        Self::from_vars(std::env::vars())
    }

    /// Read from explicit `(name, value)` pairs instead of the process environment.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, WorkerError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let env: HashMap<String, String> = vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let get = |k: &str| env.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let mut c = WorkerConfig::default();

        if let Some(v) = get("WORKER_ID") {
            c.worker_id = v.to_owned();
        }
        if let Some(v) = get("WORKER_TYPE") {
            c.worker_type = v.to_owned();
        }
        c.orchestrators = parse_orchestrators(get("ORCHESTRATORS_CONFIG"), get("ORCHESTRATOR_URL"));
        if let Some(v) = get("MULTI_ORCHESTRATOR_MODE") {
            c.multi_orchestrator_mode = v.parse()?;
        }
        if let Some(v) = get("WORKER_INDIVIDUAL_TOKEN").or_else(|| get("WORKER_TOKEN")) {
            c.token = v.to_owned();
        }
        c.secret_key = get("ORCHESTRATOR_SECRET_KEY").or_else(|| get("SECRET_KEY")).map(str::to_owned);
        if let Some(v) = get("REQUIRE_TASK_SIGNATURE") {
            c.require_task_signature = v.eq_ignore_ascii_case("true");
        }
        if let Some(v) = get("COST_PER_SKILL") {
            match serde_json::from_str::<BTreeMap<String, f64>>(v) {
                Ok(m) => c.cost_per_skill = m,
                Err(e) => tracing::warn!("could not decode COST_PER_SKILL: {e}"),
            }
        }
        if let Some(v) = get("MAX_CONCURRENT_TASKS") {
            c.max_concurrent_tasks = parse_num("MAX_CONCURRENT_TASKS", v)?;
        }
        if let Some(v) = get("CPU_CORES") {
            c.cpu_cores = parse_num("CPU_CORES", v)?;
        }
        if let Some(v) = get("RAM_GB") {
            c.ram_gb = parse_num("RAM_GB", v)?;
        }
        if let Some(model) = get("GPU_MODEL") {
            let vram: i64 = get("GPU_VRAM_GB").map(|v| parse_num("GPU_VRAM_GB", v)).transpose()?.unwrap_or(0);
            c.devices.push(HardwareDevice::gpu(model, get("GPU_ID").unwrap_or("0"), vram));
        }
        if let Some(v) = get("WORKER_DEVICES") {
            match serde_json::from_str::<Vec<HardwareDevice>>(v) {
                Ok(list) => c.devices.extend(list),
                Err(e) => tracing::warn!("could not decode WORKER_DEVICES: {e}"),
            }
        }
        if let Some(v) = get("INSTALLED_SOFTWARE") {
            match serde_json::from_str(v) {
                Ok(m) => c.installed_software = m,
                Err(e) => tracing::warn!("could not decode INSTALLED_SOFTWARE: {e}"),
            }
        }
        if let Some(v) = get("INSTALLED_ARTIFACTS") {
            match serde_json::from_str(v) {
                Ok(m) => c.installed_artifacts = m,
                Err(e) => tracing::warn!("could not decode INSTALLED_ARTIFACTS: {e}"),
            }
        }
        let mut extras: Vec<(&String, &String)> =
            env.iter().filter(|(k, _)| k.starts_with("WORKER_EXTRA_") && k.len() > 13).collect();
        extras.sort();
        for (k, v) in extras {
            let name = k["WORKER_EXTRA_".len()..].to_lowercase();
            let value = if v.starts_with('{') || v.starts_with('[') {
                serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()))
            } else {
                Value::String(v.clone())
            };
            c.extra_capabilities.insert(name, value);
        }
        let secs = |name: &str, d: &mut Duration| -> Result<(), WorkerError> {
            if let Some(v) = get(name) {
                let f: f64 = parse_num(name, v)?;
                *d = Duration::try_from_secs_f64(f)
                    .map_err(|_| WorkerError::Config(format!("{name} must be a non-negative number of seconds")))?;
            }
            Ok(())
        };
        secs("HEARTBEAT_INTERVAL", &mut c.heartbeat_interval)?;
        secs("WORKER_HEARTBEAT_COOLDOWN", &mut c.heartbeat_cooldown)?;
        secs("RESULT_RETRY_INITIAL_DELAY", &mut c.result_retry_initial_delay)?;
        secs("REGISTRATION_RETRY_INITIAL_DELAY", &mut c.registration_retry_initial_delay)?;
        secs("REGISTRATION_RETRY_MAX_DELAY", &mut c.registration_retry_max_delay)?;
        secs("RATE_LIMIT_BACKOFF_FLOOR", &mut c.rate_limit_backoff_floor)?;
        secs("TASK_POLL_TIMEOUT", &mut c.task_poll_timeout)?;
        secs("POLL_BACKOFF_INITIAL", &mut c.poll_backoff_initial)?;
        secs("POLL_BACKOFF_MAX", &mut c.poll_backoff_max)?;
        secs("IDLE_POLL_DELAY", &mut c.idle_poll_delay)?;
        secs("WORKER_SHUTDOWN_TIMEOUT", &mut c.shutdown_timeout)?;
        secs("WORKER_CANCEL_GRACE", &mut c.cancel_grace)?;
        secs("WORKER_REQUEST_TIMEOUT", &mut c.request_timeout)?;
        if let Some(v) = get("RESULT_MAX_RETRIES") {
            c.result_max_retries = parse_num("RESULT_MAX_RETRIES", v)?;
        }
        let flag = |name: &str, d: &mut bool| {
            if let Some(v) = get(name) {
                *d = v.eq_ignore_ascii_case("true") || v == "1";
            }
        };
        flag("WORKER_ENABLE_WEBSOCKETS", &mut c.enable_websockets);
        flag("STRICT_EVENT_VALIDATION", &mut c.strict_event_validation);
        flag("WORKER_USE_STS", &mut c.use_sts);
        flag("WORKER_WS_CANCEL_COMPAT", &mut c.ws_cancel_compat);
        Ok(c)
    }

    /// `true` when messages are signed (the token is set and not the SDK placeholder).
    pub fn signs_messages(&self) -> bool {
        !self.token.is_empty() && self.token != PLACEHOLDER_WORKER_TOKEN
    }

    /// Check the identifiers and the orchestrator list.
    pub fn validate(&self) -> Result<(), WorkerError> {
        protocol::validate_identifier(&self.worker_id, "WORKER_ID").map_err(|e| WorkerError::Config(e.to_string()))?;
        if self.orchestrators.is_empty() {
            return Err(WorkerError::Config("No orchestrators configured.".into()));
        }
        for o in &self.orchestrators {
            if !(o.url.starts_with("http://") || o.url.starts_with("https://")) {
                return Err(WorkerError::Config(format!("orchestrator URL must be http(s)://, got '{}'", o.url)));
            }
            if o.url.starts_with("https://") && !cfg!(feature = "tls") {
                return Err(WorkerError::Config(format!(
                    "'{}': https:// needs avto's `tls` feature (this build has no TLS)",
                    o.url
                )));
            }
            if o.weight < 1 {
                return Err(WorkerError::Config(format!("orchestrator weight must be >= 1 ({})", o.url)));
            }
        }
        if self.max_concurrent_tasks == 0 {
            return Err(WorkerError::Config("MAX_CONCURRENT_TASKS must be at least 1".into()));
        }
        if !self.signs_messages() {
            tracing::warn!(
                "WORKER_TOKEN is not set (placeholder): messages are not signed and orchestrators will reject them"
            );
        }
        Ok(())
    }
}

fn parse_num<T: FromStr>(name: &str, v: &str) -> Result<T, WorkerError> {
    v.trim().parse().map_err(|_| WorkerError::Config(format!("{name}: cannot parse '{v}'")))
}

/// `ORCHESTRATORS_CONFIG` (JSON list of `{url, priority=10, weight=1, token?}`, sorted by
/// (priority, url)) or, when missing or undecodable, `ORCHESTRATOR_URL` with priority 1.
pub fn parse_orchestrators(config_json: Option<&str>, url: Option<&str>) -> Vec<OrchestratorConfig> {
    #[derive(serde::Deserialize)]
    struct Entry {
        url: String,
        #[serde(default)]
        priority: Option<f64>,
        #[serde(default)]
        weight: Option<f64>,
        #[serde(default)]
        token: Option<String>,
    }
    if let Some(json) = config_json {
        match serde_json::from_str::<Vec<Entry>>(json) {
            Ok(entries) => {
                if url.is_some() {
                    tracing::info!(
                        "Both ORCHESTRATORS_CONFIG and ORCHESTRATOR_URL are set. Using ORCHESTRATORS_CONFIG."
                    );
                }
                let mut list: Vec<OrchestratorConfig> = entries
                    .into_iter()
                    .map(|e| OrchestratorConfig {
                        url: e.url.trim_end_matches('/').to_owned(),
                        priority: e.priority.map(|p| p as i64).unwrap_or(10),
                        weight: e.weight.map(|w| w as i64).unwrap_or(1),
                        token: e.token.filter(|t| !t.is_empty()),
                    })
                    .collect();
                list.sort_by(|a, b| (a.priority, &a.url).cmp(&(b.priority, &b.url)));
                return list;
            }
            Err(e) => tracing::warn!("Could not decode JSON from ORCHESTRATORS_CONFIG ({e}). Falling back to default."),
        }
    }
    vec![OrchestratorConfig::new(url.unwrap_or("http://localhost:8080").trim_end_matches('/')).priority(1)]
}
