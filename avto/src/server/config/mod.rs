//! Orchestrator configuration: environment variables (Avtomatika's names) and TOML files.
//!
//! Invalid values fail fast with a message naming the variable.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

mod builder;
mod compat;
mod files;

pub use builder::ConfigBuilder;
pub use compat::{NotRead, NOT_READ};
use files::default_client;
pub use files::{
    check_clients, configured_client_id, find_worker_token, load_clients, load_workers, ClientEntry, WorkerToken,
};
#[cfg(test)]
use files::{parse_clients, parse_workers};

/// A configuration error: what is wrong and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// The longest duration any `*_SECONDS` variable (and a schedules.toml duration) may name:
/// 100 years, so every deadline built from one stays far inside the clock's range.
pub const MAX_CONFIG_SECONDS: f64 = 100.0 * 365.0 * 86_400.0;

/// Default of `JOB_RETENTION_SECONDS`: terminal jobs are kept 7 days.
pub const DEFAULT_JOB_RETENTION_SECONDS: u64 = 7 * 86_400;
/// Default of `DATA_STORE_TTL_SECONDS` (30 days).
pub const DEFAULT_DATA_STORE_TTL_SECONDS: u64 = 30 * 86_400;

/// Default of `MAX_RETAINED_JOBS`: at most this many terminal jobs in memory (about 300 MiB at
/// the 3 KiB a finished job takes).
pub const DEFAULT_MAX_RETAINED_JOBS: usize = 100_000;

/// Everything the orchestrator reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub instance_id: String,
    /// Client routes live under `/{client_api_prefix}` (empty = root).
    pub client_api_prefix: String,
    pub enable_client_api: bool,
    pub clients: Vec<ClientEntry>,
    pub clients_config_path: Option<PathBuf>,
    /// `ADMIN_TOKEN`: the operator credential (`Authorization: Bearer <token>` or
    /// `X-Admin-Token`), required by `/metrics`, `POST …/admin/reload-workers` and the full worker
    /// records of `GET …/workers`. Unset (the default) = those routes refuse every request
    /// (clients still get the worker summary). Must differ from every client and worker token.
    pub admin_token: Option<String>,
    pub global_worker_token: String,
    pub workers_config_path: Option<PathBuf>,
    pub worker_tokens: Vec<WorkerToken>,
    /// Key of the task `sig` (`ORCHESTRATOR_SECRET_KEY`).
    pub secret_key: String,
    pub worker_poll_timeout: Duration,
    /// First webhook retry delay (`WEBHOOK_RETRY_BASE_SECONDS`, default 2 s; the second retry waits twice as long).
    pub webhook_retry_base: Duration,
    /// `WEBHOOK_ALLOW_PRIVATE` (default false): a `webhook_url` may name, or resolve to, a loopback,
    /// private, link-local, multicast or unspecified address. Off, such targets are refused when
    /// the job is created (400) and again at delivery (against DNS rebinding). For local development
    /// and tests only.
    pub webhook_allow_private: bool,
    /// `WEBHOOK_CONNECT_TIMEOUT_SECONDS` (default 5): connect timeout of one webhook attempt.
    pub webhook_connect_timeout: Duration,
    /// `WEBHOOK_TIMEOUT_SECONDS` (default 10): timeout of one whole webhook attempt (connect, send,
    /// answer); an unresponsive receiver holds a slot this long at most per attempt.
    pub webhook_timeout: Duration,
    /// `WEBHOOK_MAX_CONCURRENCY` (default 32): webhook attempts in flight at once. A webhook holds a
    /// slot only during an attempt, never while it waits to retry.
    pub webhook_max_concurrency: usize,
    /// `WEBHOOK_MAX_PER_CLIENT` (default 16, half of the default `WEBHOOK_MAX_CONCURRENCY`): webhook
    /// attempts in flight at once for one client's jobs, so one client's slow receivers cannot
    /// hold up the others'. It also bounds one client's webhook rate to about this many over a
    /// delivery's round trip (with 4, one client's jobs ran 30% slower in the bench: BENCHMARKS.md).
    pub webhook_max_per_client: usize,
    /// `WEBHOOK_MAX_PER_HOST` (default 16): webhook attempts in flight at once to one host and port.
    pub webhook_max_per_host: usize,
    /// `WEBHOOK_SECRET` (unset by default): webhooks carry an HMAC-SHA256 signature made with it
    /// (`X-Avto-Signature`, over `{X-Avto-Timestamp}.{body}`), so receivers can check the sender.
    pub webhook_secret: Option<String>,
    /// `DASHBOARD_SECRET` (unset by default): the key the dashboard's session cookies are signed
    /// with (feature `dashboard`). Unset = a random key per process (sessions end when it
    /// restarts, and instances behind one address do not accept each other's cookies).
    pub dashboard_secret: Option<String>,
    pub worker_timeout: Duration,
    pub worker_health_check_interval: Duration,
    pub job_max_retries: u32,
    pub max_transitions_per_job: u32,
    pub watcher_interval: Duration,
    /// `WATCHER_LIMIT` (default 500, at least 1): overdue tasks (dispatch and execution
    /// timeouts) one watcher pass claims and fails; more wait for the next pass.
    pub watcher_limit: usize,
    pub executor_max_concurrent_jobs: usize,
    pub rate_limiting_enabled: bool,
    pub rate_limit: u32,
    pub rate_limit_period: Duration,
    pub rate_limit_poll: u32,
    pub rate_limit_heartbeat: u32,
    /// `RATE_LIMIT_MAX_KEYS` (default 100,000): rate-limit windows kept in memory (one per
    /// client and route, per worker and request kind, per IP address of requests without a valid
    /// token); the oldest window is dropped when a new one would pass the cap, and every window
    /// is dropped when its period ends. (In Redis each window is a key that expires with its period.)
    pub rate_limit_max_keys: usize,
    pub detailed_api_responses: bool,
    /// Largest accepted request body (`MAX_REQUEST_BODY_BYTES`, default 1 MiB like aiohttp).
    pub max_body_bytes: usize,
    /// Progress entries kept per job in `state_history.progress_updates` (`MAX_PROGRESS_UPDATES_PER_JOB`,
    /// default 100): the oldest are dropped beyond it.
    pub progress_updates_max: usize,
    /// Longest progress `message` a worker may send (`MAX_PROGRESS_MESSAGE_BYTES`, default 1024; 400 beyond).
    pub progress_message_max_bytes: usize,
    /// `MAX_CONNECTIONS` (default 4096): open connections (plain or TLS, WebSockets included)
    /// the listener holds; one more is refused at once (plain HTTP: 503 with `Connection: close`;
    /// TLS: closed). Lowered at start-up to stay below the process's open-file limit.
    pub max_connections: usize,
    /// `HTTP_HEADER_READ_TIMEOUT_SECONDS` (default 10): a request head must arrive completely
    /// within this time from the connection's start or from its first byte (slowloris).
    pub http_header_read_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT_SECONDS` (default 60): a connection with no request running and no
    /// byte moving for this long is closed (a long poll or a slow answer is never cut); a worker
    /// WebSocket is pinged every half of it and closed when nothing came back for this long.
    pub http_idle_timeout: Duration,
    /// `HTTP_BODY_READ_TIMEOUT_SECONDS` (default 30): a JSON request body (at most
    /// `MAX_REQUEST_BODY_BYTES`) must arrive completely within this time once its head has been
    /// read (408 otherwise), and a streamed file upload may pause at most this long between two
    /// chunks, so a body that stalls after its head cannot hold a connection.
    pub http_body_read_timeout: Duration,
    pub log_level: String,
    pub log_format: String,
    pub reputation_min_threshold: f64,
    /// `REPUTATION_PENALTY_CONTRACT_VIOLATION` (default 0.2, from 0 to 1): reputation a worker
    /// loses for a result that breaks its skill's `output_schema` (or that it reports itself
    /// as `CONTRACT_VIOLATION_ERROR`).
    pub reputation_penalty_contract_violation: f64,
    /// `REPUTATION_PENALTY_TASK_FAILURE` (default 0.05, from 0 to 1): reputation a worker loses
    /// for a failure of the permanent class (`PERMANENT_ERROR`, `SECURITY_ERROR`, `DEPENDENCY_ERROR`).
    pub reputation_penalty_task_failure: f64,
    /// `REPUTATION_REWARD_SUCCESS` (default 0.001, from 0 to 1): reputation a worker gains for
    /// a result that is not a failure (reputation stays at most 1).
    pub reputation_reward_success: f64,
    /// `REPUTATION_RECALC_INTERVAL_SECONDS` (default 3600): how often reputations are recalculated
    /// from the history (once per interval across instances; nothing to do without history).
    pub reputation_recalc_interval: Duration,
    /// `WORKER_HISTORY_STATUS_INTERVAL_SECONDS` (default 60): at most one `status_update` row per
    /// worker per interval, written only when the status changed (`offline` always).
    pub worker_history_status_interval: Duration,
    /// `DISPATCHER_MAX_CANDIDATES` (default 50): eligible workers one dispatch chooses among.
    pub dispatcher_max_candidates: usize,
    /// `DISPATCHER_SOFT_LIMIT` (default 3): the `overflow` strategy gives a task to the
    /// cheapest worker with fewer tasks than this waiting on its queue, else to the shortest queue.
    pub dispatcher_soft_limit: usize,
    pub work_stealing_enabled: bool,
    /// `STRICT_EVENT_VALIDATION`: an event whose type the sender's skill (or, for a handler's ghost
    /// event, the blueprint) does not declare is refused; `progress` always passes.
    pub strict_event_validation: bool,
    pub production: bool,
    /// `HISTORY_DATABASE_URI`: `sqlite:<path>`, `postgresql://...`, `memory:`; `None` = history off.
    pub history_database_uri: Option<String>,
    /// How long start-up waits for the history database (`HISTORY_CONNECT_TIMEOUT_SECONDS`, default 10).
    pub history_connect_timeout: Duration,
    /// `SCHEDULES_CONFIG_PATH`: schedules.toml (validated against the blueprints at build).
    pub schedules_config_path: Option<PathBuf>,
    /// `TZ`: the scheduler's default zone and the zone of history timestamps (default UTC).
    pub tz: chrono_tz::Tz,
    /// `REDIS_URL` (`redis://[:password@]host:port/db`), else built from `REDIS_HOST`,
    /// `REDIS_PORT` (6379) and `REDIS_DB` (0); `None` (both unset or empty) = in-memory storage.
    pub redis_url: Option<String>,
    /// `REDIS_KEY_PREFIX` (default `avto:`): every Redis key starts with it, so several
    /// deployments (or test runs) can share one Redis.
    pub redis_key_prefix: String,
    /// `REDIS_ENCRYPTION_KEY` (unset = off; 64 hex characters, `openssl rand -hex 32`) and
    /// `REDIS_ENCRYPTION_KEY_PREVIOUS` (old keys, comma-separated, only to read): AES-256-GCM
    /// encryption of the worker credentials kept in Redis (worker records, STS token bindings).
    /// A malformed key fails start-up. See [`crate::storage::encryption`] for rotation.
    pub redis_encryption: Option<crate::storage::encryption::EncryptionKeys>,
    /// `JOB_LOCK_LEASE_SECONDS` (default 30): lifetime of a job lock in Redis; renewed every
    /// third of it while the holder works, so it only bounds how long a crashed instance blocks a job.
    pub job_lock_lease: Duration,
    /// `JOB_RECOVERY_SECONDS` (default 60): an unsettled job nobody saved for this long is
    /// looked at by the watcher, which re-drives what a crashed instance left unfinished.
    pub job_recovery_after: Duration,
    /// `JOB_RETENTION_SECONDS` (default 604800, 7 days; 0 = keep forever): a terminal job
    /// (finished, failed, cancelled, quarantined) is removed this long after it ended, from
    /// memory or Redis, with its index entries; the history keeps its events.
    pub job_retention: Option<Duration>,
    /// `MAX_RETAINED_JOBS` (default 100000; 0 = no cap): in-memory storage keeps at most this
    /// many terminal jobs, dropping the oldest first (the memory ceiling of the default
    /// deployment). Jobs that are not terminal are never dropped. Not used with Redis.
    pub max_retained_jobs: usize,
    /// `DATA_STORE_TTL_SECONDS` (default 2592000, 30 days; 0 = keep until deleted): a
    /// blueprint data-store key that has no declared initial value expires this long after its
    /// last write (keys with a declared initial value are kept).
    pub data_store_ttl: Option<Duration>,
    /// `S3_ENDPOINT_URL`, `S3_ACCESS_KEY`, `S3_SECRET_KEY`, ...: task files in S3 (`None` = off;
    /// partly set = start-up error).
    #[cfg(feature = "s3")]
    pub s3: Option<crate::files::s3::S3Config>,
    /// `S3_AUTO_CLEANUP` (default true): delete a job's files (`jobs/{job_id}/`) when it ends.
    pub files_auto_cleanup: bool,
    /// `S3_MAX_UPLOAD_BYTES` (default 5 GiB): largest client upload through the orchestrator.
    pub max_upload_bytes: u64,
    /// `TASK_FILES_DIR` (default `/tmp/avtomatika-payloads`, in the system's temporary
    /// directory): a job's local working directory is `{TASK_FILES_DIR}/{job_id}`
    /// ([`crate::TaskFiles::path`]), removed with the job's files when it ends.
    pub task_files_dir: PathBuf,
    /// `TLS_ENABLED` with `TLS_CERT_PATH`, `TLS_KEY_PATH` (PEM), and `TLS_CA_PATH` for client
    /// certificates: serve HTTPS (feature `tls`). `None` = plain HTTP.
    pub tls: Option<TlsConfig>,
    /// `WORKER_AUTH_MODE`: how workers authenticate (`mixed`, `mtls-only`, `token-only`).
    pub worker_auth_mode: WorkerAuthMode,
    /// `MAX_TIMEOUT_SECONDS` (default 2592000, 30 days): the largest `dispatch_timeout` and
    /// `result_timeout` a client may give a job; a larger one is a 400 naming the field.
    pub max_timeout: Duration,
    /// `DEFAULT_DISPATCH_TIMEOUT_SECONDS` (default [`DEFAULT_DISPATCH_TIMEOUT_SECONDS`], one
    /// day): how long a task waits for a worker to take it when neither the dispatch nor the
    /// job names a dispatch timeout; then it fails with `DISPATCH_TIMEOUT_ERROR`. So no task
    /// waits forever for a skill no worker offers. Greater than 0.
    pub default_dispatch_timeout: Duration,
    /// `BACKGROUND_TASK_MAX_RESTARTS` (default 5): a background task (watcher, scheduler,
    /// history writer) that panics is restarted after a backoff (1 s, doubling
    /// up to 60 s); after this many panics in a row (a run of 5 minutes without one starts the
    /// count again) it stays down and `GET /_public/status` answers 503 naming it. 0 = never restarted.
    pub background_task_max_restarts: u32,
    /// `SHUTDOWN_GRACE_SECONDS` (default 30; `SHUTDOWN_TIMEOUT_SECONDS` is its older name):
    /// after SIGTERM / SIGINT, how long the graceful shutdown may take in all. The server stops
    /// accepting; open connections finish their requests; running handler runs finish and
    /// release their job locks; history and job-end webhooks are flushed. Then the process
    /// stops regardless (a connection that never completes its request, e.g. a slowloris,
    /// cannot keep it alive); what was not done by then is resumed by the next instance (on
    /// Redis: crash recovery and the webhook outbox).
    pub shutdown_grace: Duration,
    /// `MAX_JSON_DEPTH` (default 64, from 2 to [`MAX_JSON_DEPTH_LIMIT`]): how deeply a request
    /// body (client or worker, WebSocket frames too) may nest arrays and objects, the body
    /// itself being level 1; deeper is a 400 naming the member. serde_json reads at most 128
    /// levels, and what avto builds around the data (job records, task payloads, batch answers)
    /// needs the rest.
    pub max_json_depth: usize,
    /// What start-up logs as warnings once logging is set up: Avtomatika variables that are set
    /// but change nothing in avto ([`NOT_READ`]).
    pub warnings: Vec<String>,
}

/// The default `DEFAULT_DISPATCH_TIMEOUT_SECONDS`: a day, long enough for a backlog on busy
/// workers, short enough that a task for a skill nobody offers does not wait forever.
pub const DEFAULT_DISPATCH_TIMEOUT_SECONDS: u64 = 86_400;

/// The default `MAX_JSON_DEPTH`.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 64;
/// The largest `MAX_JSON_DEPTH`: room is left under serde_json's 128 levels for the envelopes
/// around client data.
pub const MAX_JSON_DEPTH_LIMIT: usize = 100;

/// The HTTPS listener's files (`TLS_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `TLS_CERT_PATH`: the server's certificate chain (PEM).
    pub cert_path: PathBuf,
    /// `TLS_KEY_PATH`: its private key (PEM).
    pub key_path: PathBuf,
    /// `TLS_CA_PATH`: the CAs whose client certificates are accepted (PEM); `None` = no client
    /// certificates are asked for.
    pub ca_path: Option<PathBuf>,
    /// `TLS_REQUIRE_CLIENT_CERT`: a connection without a valid client certificate is refused
    /// (else a certificate is optional).
    pub require_client_cert: bool,
}

/// `WORKER_AUTH_MODE`: what authenticates a worker request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WorkerAuthMode {
    /// A verified client certificate (its CN is the worker id), else a token (default).
    #[default]
    Mixed,
    /// Only client certificates, or STS access tokens issued to a certificate-authenticated
    /// worker; static and global tokens are refused.
    MtlsOnly,
    /// Only tokens; client certificates are ignored.
    TokenOnly,
}

const DEV_WORKER_TOKEN: &str = "secure-worker-token";
const DEV_CLIENT_TOKEN: &str = "secure-orchestrator-token";

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 8080,
            instance_id: "avto".into(),
            client_api_prefix: "api".into(),
            enable_client_api: true,
            clients: vec![default_client(DEV_CLIENT_TOKEN, "dev:default")],
            clients_config_path: None,
            admin_token: None,
            global_worker_token: DEV_WORKER_TOKEN.into(),
            workers_config_path: None,
            worker_tokens: Vec::new(),
            secret_key: uuid::Uuid::new_v4().to_string(),
            worker_poll_timeout: Duration::from_secs(30),
            webhook_retry_base: Duration::from_secs(2),
            webhook_allow_private: false,
            webhook_connect_timeout: Duration::from_secs(5),
            webhook_timeout: Duration::from_secs(10),
            webhook_max_concurrency: 32,
            webhook_max_per_client: 16,
            webhook_max_per_host: 16,
            webhook_secret: None,
            dashboard_secret: None,
            worker_timeout: Duration::from_secs(300),
            worker_health_check_interval: Duration::from_secs(60),
            job_max_retries: 3,
            max_transitions_per_job: 100,
            watcher_interval: Duration::from_secs(1),
            watcher_limit: 500,
            executor_max_concurrent_jobs: 1000,
            rate_limiting_enabled: true,
            rate_limit: 100,
            rate_limit_period: Duration::from_secs(60),
            rate_limit_poll: 60,
            rate_limit_heartbeat: 120,
            rate_limit_max_keys: crate::storage::DEFAULT_RATE_LIMIT_MAX_KEYS,
            detailed_api_responses: false,
            max_body_bytes: 1024 * 1024,
            progress_updates_max: 100,
            progress_message_max_bytes: 1024,
            max_connections: 4096,
            http_header_read_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(60),
            http_body_read_timeout: Duration::from_secs(30),
            log_level: "info".into(),
            log_format: "json".into(),
            reputation_min_threshold: 0.3,
            reputation_penalty_contract_violation: 0.2,
            reputation_penalty_task_failure: 0.05,
            reputation_reward_success: 0.001,
            reputation_recalc_interval: Duration::from_secs(3600),
            worker_history_status_interval: Duration::from_secs(60),
            dispatcher_max_candidates: 50,
            dispatcher_soft_limit: crate::server::dispatch::DEFAULT_SOFT_LIMIT,
            work_stealing_enabled: true,
            strict_event_validation: false,
            production: false,
            history_database_uri: None,
            history_connect_timeout: Duration::from_secs(10),
            schedules_config_path: None,
            tz: chrono_tz::UTC,
            redis_url: None,
            redis_key_prefix: "avto:".into(),
            redis_encryption: None,
            job_lock_lease: Duration::from_secs(30),
            job_recovery_after: Duration::from_secs(60),
            job_retention: Some(Duration::from_secs(DEFAULT_JOB_RETENTION_SECONDS)),
            data_store_ttl: Some(Duration::from_secs(DEFAULT_DATA_STORE_TTL_SECONDS)),
            max_retained_jobs: DEFAULT_MAX_RETAINED_JOBS,
            #[cfg(feature = "s3")]
            s3: None,
            files_auto_cleanup: true,
            max_upload_bytes: 5 * 1024 * 1024 * 1024,
            task_files_dir: crate::files::default_task_files_dir(),
            tls: None,
            worker_auth_mode: WorkerAuthMode::Mixed,
            max_timeout: Duration::from_secs(30 * 86_400),
            default_dispatch_timeout: Duration::from_secs(DEFAULT_DISPATCH_TIMEOUT_SECONDS),
            background_task_max_restarts: 5,
            shutdown_grace: Duration::from_secs(30),
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
            warnings: Vec::new(),
        }
    }
}

/// Reads variables through a lookup function, so tests need not touch the process environment.
struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn str(&self, name: &str) -> Option<String> {
        (self.get)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }
    fn parse<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.str(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| ConfigError(format!("{name}={v:?}: {e}"))),
        }
    }
    fn secs(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.str(name) {
            None => Ok(default),
            Some(v) => match v.parse::<f64>() {
                Ok(s) if s.is_finite() && (0.0..=MAX_CONFIG_SECONDS).contains(&s) => Ok(Duration::from_secs_f64(s)),
                _ => Err(ConfigError(format!(
                    "{name}={v:?}: expected a non-negative number of seconds up to {MAX_CONFIG_SECONDS}"
                ))),
            },
        }
    }
    fn bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.str(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError(format!("{name}={v:?}: expected true or false"))),
        }
    }
}

impl Config {
    /// Configuration from the process environment (and the TOML files it names).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    /// Configuration from any variable lookup (tests pass a map).
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env { get };
        let d = Config::default();
        let warnings = compat::check(get).map_err(ConfigError)?;
        let production =
            matches!(env.str("ENVIRONMENT").or_else(|| env.str("ENV")).as_deref(), Some("production" | "prod"));
        let mut c = Config {
            host: env.parse("API_HOST", d.host)?,
            port: env.parse("API_PORT", d.port)?,
            instance_id: env.str("INSTANCE_ID").unwrap_or(d.instance_id),
            client_api_prefix: env
                .str("CLIENT_API_PREFIX")
                .map(|p| p.trim_matches('/').to_owned())
                .unwrap_or(d.client_api_prefix),
            enable_client_api: env.bool("ENABLE_CLIENT_API", true)?,
            clients: Vec::new(),
            clients_config_path: env.str("CLIENTS_CONFIG_PATH").map(PathBuf::from),
            admin_token: env.str("ADMIN_TOKEN"),
            global_worker_token: env
                .str("GLOBAL_WORKER_TOKEN")
                .or_else(|| env.str("WORKER_TOKEN"))
                .unwrap_or_else(|| DEV_WORKER_TOKEN.into()),
            workers_config_path: env.str("WORKERS_CONFIG_PATH").map(PathBuf::from),
            worker_tokens: Vec::new(),
            secret_key: env.str("ORCHESTRATOR_SECRET_KEY").unwrap_or(d.secret_key),
            worker_poll_timeout: env.secs("WORKER_POLL_TIMEOUT_SECONDS", d.worker_poll_timeout)?,
            webhook_retry_base: env.secs("WEBHOOK_RETRY_BASE_SECONDS", d.webhook_retry_base)?,
            webhook_allow_private: env.bool("WEBHOOK_ALLOW_PRIVATE", d.webhook_allow_private)?,
            webhook_connect_timeout: env.secs("WEBHOOK_CONNECT_TIMEOUT_SECONDS", d.webhook_connect_timeout)?,
            webhook_timeout: env.secs("WEBHOOK_TIMEOUT_SECONDS", d.webhook_timeout)?,
            webhook_max_concurrency: env.parse("WEBHOOK_MAX_CONCURRENCY", d.webhook_max_concurrency)?,
            webhook_max_per_client: env.parse("WEBHOOK_MAX_PER_CLIENT", d.webhook_max_per_client)?,
            webhook_max_per_host: env.parse("WEBHOOK_MAX_PER_HOST", d.webhook_max_per_host)?,
            webhook_secret: env.str("WEBHOOK_SECRET").filter(|s| !s.is_empty()),
            dashboard_secret: env.str("DASHBOARD_SECRET").filter(|s| !s.is_empty()),
            worker_timeout: env.secs("WORKER_TIMEOUT_SECONDS", d.worker_timeout)?,
            worker_health_check_interval: env
                .secs("WORKER_HEALTH_CHECK_INTERVAL_SECONDS", d.worker_health_check_interval)?,
            job_max_retries: env.parse("JOB_MAX_RETRIES", d.job_max_retries)?,
            max_transitions_per_job: env.parse("MAX_TRANSITIONS_PER_JOB", d.max_transitions_per_job)?,
            watcher_interval: env.secs("WATCHER_INTERVAL_SECONDS", d.watcher_interval)?,
            watcher_limit: env.parse("WATCHER_LIMIT", d.watcher_limit)?,
            executor_max_concurrent_jobs: env.parse("EXECUTOR_MAX_CONCURRENT_JOBS", d.executor_max_concurrent_jobs)?,
            rate_limiting_enabled: env.bool("RATE_LIMITING_ENABLED", d.rate_limiting_enabled)?,
            rate_limit: env.parse("RATE_LIMIT_LIMIT", d.rate_limit)?,
            rate_limit_period: env.secs("RATE_LIMIT_PERIOD", d.rate_limit_period)?,
            rate_limit_poll: env.parse("RATE_LIMIT_POLL_LIMIT", d.rate_limit_poll)?,
            rate_limit_heartbeat: env.parse("RATE_LIMIT_HEARTBEAT_LIMIT", d.rate_limit_heartbeat)?,
            rate_limit_max_keys: env.parse("RATE_LIMIT_MAX_KEYS", d.rate_limit_max_keys)?,
            detailed_api_responses: env.bool("DETAILED_API_RESPONSES", d.detailed_api_responses)?,
            max_body_bytes: env.parse("MAX_REQUEST_BODY_BYTES", d.max_body_bytes)?,
            progress_updates_max: env.parse("MAX_PROGRESS_UPDATES_PER_JOB", d.progress_updates_max)?,
            progress_message_max_bytes: env.parse("MAX_PROGRESS_MESSAGE_BYTES", d.progress_message_max_bytes)?,
            max_connections: env.parse("MAX_CONNECTIONS", d.max_connections)?,
            http_header_read_timeout: env.secs("HTTP_HEADER_READ_TIMEOUT_SECONDS", d.http_header_read_timeout)?,
            http_idle_timeout: env.secs("HTTP_IDLE_TIMEOUT_SECONDS", d.http_idle_timeout)?,
            http_body_read_timeout: env.secs("HTTP_BODY_READ_TIMEOUT_SECONDS", d.http_body_read_timeout)?,
            log_level: env.str("LOG_LEVEL").map(|l| l.to_ascii_lowercase()).unwrap_or(d.log_level),
            log_format: env.str("LOG_FORMAT").map(|l| l.to_ascii_lowercase()).unwrap_or(d.log_format),
            reputation_min_threshold: env.parse("REPUTATION_MIN_THRESHOLD", d.reputation_min_threshold)?,
            reputation_penalty_contract_violation: env
                .parse("REPUTATION_PENALTY_CONTRACT_VIOLATION", d.reputation_penalty_contract_violation)?,
            reputation_penalty_task_failure: env
                .parse("REPUTATION_PENALTY_TASK_FAILURE", d.reputation_penalty_task_failure)?,
            reputation_reward_success: env.parse("REPUTATION_REWARD_SUCCESS", d.reputation_reward_success)?,
            reputation_recalc_interval: env.secs("REPUTATION_RECALC_INTERVAL_SECONDS", d.reputation_recalc_interval)?,
            worker_history_status_interval: env
                .secs("WORKER_HISTORY_STATUS_INTERVAL_SECONDS", d.worker_history_status_interval)?,
            dispatcher_max_candidates: env.parse("DISPATCHER_MAX_CANDIDATES", d.dispatcher_max_candidates)?,
            dispatcher_soft_limit: env.parse("DISPATCHER_SOFT_LIMIT", d.dispatcher_soft_limit)?,
            work_stealing_enabled: env.bool("WORK_STEALING_ENABLED", d.work_stealing_enabled)?,
            strict_event_validation: env.bool("STRICT_EVENT_VALIDATION", d.strict_event_validation)?,
            production,
            history_database_uri: env.str("HISTORY_DATABASE_URI"),
            history_connect_timeout: env.secs("HISTORY_CONNECT_TIMEOUT_SECONDS", d.history_connect_timeout)?,
            schedules_config_path: env.str("SCHEDULES_CONFIG_PATH").map(PathBuf::from),
            tz: match env.str("TZ") {
                None => d.tz,
                Some(z) => parse_tz(&z).map_err(|e| ConfigError(format!("TZ: {e}")))?,
            },
            redis_url: redis_url(&env)?,
            redis_key_prefix: (env.get)("REDIS_KEY_PREFIX").unwrap_or(d.redis_key_prefix),
            redis_encryption: crate::storage::encryption::EncryptionKeys::from_lookup(get)
                .map_err(|e| ConfigError(e.0))?,
            job_lock_lease: env.secs("JOB_LOCK_LEASE_SECONDS", d.job_lock_lease)?,
            job_recovery_after: env.secs("JOB_RECOVERY_SECONDS", d.job_recovery_after)?,
            job_retention: Some(env.secs("JOB_RETENTION_SECONDS", d.job_retention.unwrap_or_default())?)
                .filter(|r| !r.is_zero()),
            max_retained_jobs: env.parse("MAX_RETAINED_JOBS", d.max_retained_jobs)?,
            data_store_ttl: Some(env.secs("DATA_STORE_TTL_SECONDS", d.data_store_ttl.unwrap_or_default())?)
                .filter(|r| !r.is_zero()),
            #[cfg(feature = "s3")]
            s3: crate::files::s3::S3Config::from_lookup(get).map_err(ConfigError)?,
            files_auto_cleanup: env.bool("S3_AUTO_CLEANUP", d.files_auto_cleanup)?,
            max_upload_bytes: env.parse("S3_MAX_UPLOAD_BYTES", d.max_upload_bytes)?,
            task_files_dir: env.str("TASK_FILES_DIR").map(PathBuf::from).unwrap_or(d.task_files_dir),
            tls: tls_config(&env)?,
            worker_auth_mode: match env.str("WORKER_AUTH_MODE").as_deref() {
                None | Some("mixed") => WorkerAuthMode::Mixed,
                Some("mtls-only") => WorkerAuthMode::MtlsOnly,
                Some("token-only") => WorkerAuthMode::TokenOnly,
                Some(other) => {
                    return Err(ConfigError(format!(
                        "WORKER_AUTH_MODE={other:?}: expected mixed, mtls-only or token-only"
                    )))
                }
            },
            max_timeout: env.secs("MAX_TIMEOUT_SECONDS", d.max_timeout)?,
            default_dispatch_timeout: env.secs("DEFAULT_DISPATCH_TIMEOUT_SECONDS", d.default_dispatch_timeout)?,
            background_task_max_restarts: env.parse("BACKGROUND_TASK_MAX_RESTARTS", d.background_task_max_restarts)?,
            shutdown_grace: env
                .secs("SHUTDOWN_GRACE_SECONDS", env.secs("SHUTDOWN_TIMEOUT_SECONDS", d.shutdown_grace)?)?,
            max_json_depth: env.parse("MAX_JSON_DEPTH", d.max_json_depth)?,
            warnings,
        };
        if c.worker_auth_mode == WorkerAuthMode::MtlsOnly && c.tls.as_ref().is_none_or(|t| t.ca_path.is_none()) {
            return Err(ConfigError(
                "WORKER_AUTH_MODE=mtls-only needs TLS_ENABLED=true and TLS_CA_PATH (client certificates)".into(),
            ));
        }
        #[cfg(not(feature = "s3"))]
        if env.str("S3_ENDPOINT_URL").is_some() {
            tracing::warn!("S3_ENDPOINT_URL is set but avto was built without the `s3` feature: task files stay off");
        }
        if let Some(uri) = &c.history_database_uri {
            crate::history::HistoryUri::parse(uri).map_err(|e| ConfigError(e.to_string()))?;
        }
        if c.worker_poll_timeout.is_zero() {
            return Err(ConfigError("WORKER_POLL_TIMEOUT_SECONDS must be greater than 0".into()));
        }
        for (name, value) in [
            ("REPUTATION_PENALTY_CONTRACT_VIOLATION", c.reputation_penalty_contract_violation),
            ("REPUTATION_PENALTY_TASK_FAILURE", c.reputation_penalty_task_failure),
            ("REPUTATION_REWARD_SUCCESS", c.reputation_reward_success),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConfigError(format!("{name} must be from 0 to 1")));
            }
        }
        if !(2..=MAX_JSON_DEPTH_LIMIT).contains(&c.max_json_depth) {
            return Err(ConfigError(format!("MAX_JSON_DEPTH must be from 2 to {MAX_JSON_DEPTH_LIMIT}")));
        }
        if c.max_timeout.is_zero() {
            return Err(ConfigError("MAX_TIMEOUT_SECONDS must be greater than 0".into()));
        }
        if c.default_dispatch_timeout.is_zero() {
            return Err(ConfigError("DEFAULT_DISPATCH_TIMEOUT_SECONDS must be greater than 0".into()));
        }
        if c.watcher_limit == 0 {
            return Err(ConfigError("WATCHER_LIMIT must be at least 1".into()));
        }
        if c.dispatcher_max_candidates == 0 {
            return Err(ConfigError("DISPATCHER_MAX_CANDIDATES must be at least 1".into()));
        }
        if c.max_connections == 0 {
            return Err(ConfigError("MAX_CONNECTIONS must be at least 1".into()));
        }
        for (name, d) in [
            ("HTTP_HEADER_READ_TIMEOUT_SECONDS", c.http_header_read_timeout),
            ("HTTP_IDLE_TIMEOUT_SECONDS", c.http_idle_timeout),
            ("HTTP_BODY_READ_TIMEOUT_SECONDS", c.http_body_read_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(86_400) {
                return Err(ConfigError(format!("{name} must be greater than 0 and at most 86400")));
            }
        }
        if c.rate_limit_max_keys == 0 {
            return Err(ConfigError("RATE_LIMIT_MAX_KEYS must be at least 1".into()));
        }
        if c.max_body_bytes < 1024 {
            return Err(ConfigError("MAX_REQUEST_BODY_BYTES must be at least 1024".into()));
        }
        for (name, secs) in [
            ("WEBHOOK_CONNECT_TIMEOUT_SECONDS", c.webhook_connect_timeout),
            ("WEBHOOK_TIMEOUT_SECONDS", c.webhook_timeout),
        ] {
            if secs.is_zero() {
                return Err(ConfigError(format!("{name} must be greater than 0")));
            }
        }
        for (name, n) in [
            ("WEBHOOK_MAX_CONCURRENCY", c.webhook_max_concurrency),
            ("WEBHOOK_MAX_PER_CLIENT", c.webhook_max_per_client),
            ("WEBHOOK_MAX_PER_HOST", c.webhook_max_per_host),
        ] {
            if n == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        if c.progress_updates_max == 0 {
            return Err(ConfigError("MAX_PROGRESS_UPDATES_PER_JOB must be at least 1".into()));
        }
        if !matches!(c.log_format.as_str(), "json" | "text") {
            return Err(ConfigError(format!("LOG_FORMAT={:?}: expected json or text", c.log_format)));
        }
        if let Some(path) = &c.clients_config_path {
            c.clients = load_clients(path)?;
        }
        if let Some(token) = env.str("CLIENT_TOKEN") {
            if c.clients.iter().all(|e| e.token != token) {
                c.clients.push(default_client(&token, "env:CLIENT_TOKEN"));
            }
        }
        if c.clients.is_empty() {
            c.clients.push(default_client(DEV_CLIENT_TOKEN, "dev:default"));
        }
        check_clients(&mut c.clients)?;
        if let Some(path) = &c.workers_config_path {
            c.worker_tokens = load_workers(path)?;
        }
        if let Some(admin) = &c.admin_token {
            if c.clients.iter().any(|e| &e.token == admin)
                || &c.global_worker_token == admin
                || c.worker_tokens.iter().any(|w| &w.token == admin)
            {
                return Err(ConfigError(
                    "ADMIN_TOKEN must differ from every client token and every worker token".into(),
                ));
            }
        }
        if c.production {
            if c.global_worker_token == DEV_WORKER_TOKEN {
                return Err(ConfigError("ENVIRONMENT=production requires GLOBAL_WORKER_TOKEN".into()));
            }
            if env.str("ORCHESTRATOR_SECRET_KEY").is_none() {
                return Err(ConfigError("ENVIRONMENT=production requires ORCHESTRATOR_SECRET_KEY".into()));
            }
            if c.clients.iter().any(|e| e.token == DEV_CLIENT_TOKEN) {
                return Err(ConfigError(
                    "ENVIRONMENT=production requires CLIENT_TOKEN or CLIENTS_CONFIG_PATH (not the dev token)".into(),
                ));
            }
        }
        Ok(c)
    }

    /// Engine limits derived from this config.
    pub fn engine(&self) -> crate::engine::EngineConfig {
        crate::engine::EngineConfig {
            max_transitions: self.max_transitions_per_job,
            max_retries: self.job_max_retries,
            data_ttl: self.data_store_ttl,
            strict_events: self.strict_event_validation,
            progress_updates_max: self.progress_updates_max,
            ..Default::default()
        }
    }

    /// The individual token configured for `worker_id`, if any (exact names win over patterns).
    pub fn worker_token(&self, worker_id: &str) -> Option<&str> {
        find_worker_token(&self.worker_tokens, worker_id)
    }
}

/// Parses a time-zone name (`UTC`, `Europe/Berlin`; a leading `:` or `/usr/share/zoneinfo/` is ignored).
pub fn parse_tz(name: &str) -> Result<chrono_tz::Tz, String> {
    let n = name.trim().trim_start_matches(':');
    let n = n.strip_prefix("/usr/share/zoneinfo/").unwrap_or(n);
    n.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("unknown time zone `{name}` (expected an IANA name such as UTC or Europe/Berlin)"))
}

/// `TLS_ENABLED` and the `TLS_*` paths; `None` when TLS is off.
fn tls_config(env: &Env<'_>) -> Result<Option<TlsConfig>, ConfigError> {
    if !env.bool("TLS_ENABLED", false)? {
        return Ok(None);
    }
    if !cfg!(feature = "tls") {
        return Err(ConfigError("TLS_ENABLED=true needs avto's `tls` feature (this build has no TLS)".into()));
    }
    let path = |name: &str| env.str(name).filter(|p| !p.is_empty()).map(PathBuf::from);
    let (Some(cert_path), Some(key_path)) = (path("TLS_CERT_PATH"), path("TLS_KEY_PATH")) else {
        return Err(ConfigError("TLS_ENABLED=true needs TLS_CERT_PATH and TLS_KEY_PATH".into()));
    };
    let require_client_cert = env.bool("TLS_REQUIRE_CLIENT_CERT", false)?;
    let ca_path = path("TLS_CA_PATH");
    if require_client_cert && ca_path.is_none() {
        return Err(ConfigError("TLS_REQUIRE_CLIENT_CERT=true needs TLS_CA_PATH".into()));
    }
    Ok(Some(TlsConfig { cert_path, key_path, ca_path, require_client_cert }))
}

/// `REDIS_URL`, else `redis://REDIS_HOST:REDIS_PORT/REDIS_DB` (Avtomatika's variables).
fn redis_url(env: &Env<'_>) -> Result<Option<String>, ConfigError> {
    if let Some(url) = env.str("REDIS_URL") {
        if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")) {
            return Err(ConfigError(format!("REDIS_URL={url:?}: expected redis://host:port/db")));
        }
        return Ok(Some(url));
    }
    let Some(host) = env.str("REDIS_HOST") else { return Ok(None) };
    let port: u16 = env.parse("REDIS_PORT", 6379)?;
    let db: u32 = env.parse("REDIS_DB", 0)?;
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
    Ok(Some(format!("redis://{host}:{port}/{db}")))
}

#[cfg(test)]
mod tests;
