//! [`ConfigBuilder`]: configuration in code, with the names of the environment variables
//! (`Config::builder().api_port(8080).client_token("..")`, or `.set("API_PORT", 8080)`). It goes
//! through the same parser and checks as the environment ([`Config::from_lookup`]), so a value
//! means the same wherever it comes from, and a bad one fails [`ConfigBuilder::build`] with the
//! same message naming the variable.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;

use super::{Config, ConfigError};

/// Configuration in code; see the module docs.
///
/// ```
/// use avto::server::config::Config;
///
/// let config = Config::builder()
///     .api_host("127.0.0.1")
///     .api_port(0)
///     .client_token("my-client-token")
///     .worker_poll_timeout_seconds(5)
///     .build()
///     .unwrap();
/// assert_eq!(config.port, 0);
/// assert!(Config::builder().set("API_PORTT", 1).build().unwrap_err().to_string().contains("API_PORT"));
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ConfigBuilder {
    vars: BTreeMap<String, String>,
    from_env: bool,
}

impl Config {
    /// A [`ConfigBuilder`]: every variable unset (the defaults), unless
    /// [`ConfigBuilder::from_env`] lets the environment fill what the code does not set.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }
}

impl ConfigBuilder {
    /// Variables the code does not set are read from the process environment (the code wins).
    pub fn from_env(mut self) -> Self {
        self.from_env = true;
        self
    }

    /// Sets the variable `name` (as in the environment: `"API_PORT"`) to `value`.
    pub fn set(mut self, name: &str, value: impl Display) -> Self {
        self.vars.insert(name.to_owned(), value.to_string());
        self
    }

    /// The configuration, parsed and checked as [`Config::from_env`] does. A variable set in
    /// code that the configuration does not read (a typo, or one that only applies with another:
    /// `TLS_CERT_PATH` without `TLS_ENABLED`) is an error naming it, not silently ignored.
    pub fn build(self) -> Result<Config, ConfigError> {
        let asked: RefCell<BTreeSet<String>> = RefCell::default();
        let lookup = |name: &str| {
            asked.borrow_mut().insert(name.to_owned());
            match self.vars.get(name) {
                Some(v) => Some(v.clone()),
                None if self.from_env => std::env::var(name).ok(),
                None => None,
            }
        };
        let config = Config::from_lookup(&lookup)?;
        let asked = asked.into_inner();
        if let Some(name) = self.vars.keys().find(|n| !asked.contains(*n)) {
            let close = asked.iter().filter(|a| edit_distance(a, name) <= 2).min_by_key(|a| edit_distance(a, name));
            return Err(ConfigError(match close {
                Some(c) => format!("{name} is not a configuration variable; did you mean {c}?"),
                None => format!(
                    "{name} is not read with this configuration (an unknown variable, or one that applies only \
                     with another, e.g. TLS_CERT_PATH with TLS_ENABLED=true)"
                ),
            }));
        }
        Ok(config)
    }
}

/// Levenshtein distance (for "did you mean").
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// One method per variable, named like it in lower case.
macro_rules! variables {
    ($($method:ident => $name:literal),* $(,)?) => {
        impl ConfigBuilder {
            $(
                #[doc = concat!("Sets `", $name, "` (see the README's configuration table).")]
                pub fn $method(self, value: impl Display) -> Self {
                    self.set($name, value)
                }
            )*
        }

        /// Every variable that has a method of its own.
        #[cfg(test)]
        const METHODS: &[&str] = &[$($name),*];
    };
}

variables! {
    admin_token => "ADMIN_TOKEN",
    api_host => "API_HOST",
    api_port => "API_PORT",
    background_task_max_restarts => "BACKGROUND_TASK_MAX_RESTARTS",
    client_api_prefix => "CLIENT_API_PREFIX",
    client_token => "CLIENT_TOKEN",
    clients_config_path => "CLIENTS_CONFIG_PATH",
    dashboard_secret => "DASHBOARD_SECRET",
    data_store_ttl_seconds => "DATA_STORE_TTL_SECONDS",
    default_dispatch_timeout_seconds => "DEFAULT_DISPATCH_TIMEOUT_SECONDS",
    detailed_api_responses => "DETAILED_API_RESPONSES",
    dispatcher_max_candidates => "DISPATCHER_MAX_CANDIDATES",
    dispatcher_soft_limit => "DISPATCHER_SOFT_LIMIT",
    enable_client_api => "ENABLE_CLIENT_API",
    environment => "ENVIRONMENT",
    executor_max_concurrent_jobs => "EXECUTOR_MAX_CONCURRENT_JOBS",
    global_worker_token => "GLOBAL_WORKER_TOKEN",
    history_connect_timeout_seconds => "HISTORY_CONNECT_TIMEOUT_SECONDS",
    history_database_uri => "HISTORY_DATABASE_URI",
    http_body_read_timeout_seconds => "HTTP_BODY_READ_TIMEOUT_SECONDS",
    http_header_read_timeout_seconds => "HTTP_HEADER_READ_TIMEOUT_SECONDS",
    http_idle_timeout_seconds => "HTTP_IDLE_TIMEOUT_SECONDS",
    instance_id => "INSTANCE_ID",
    job_lock_lease_seconds => "JOB_LOCK_LEASE_SECONDS",
    job_max_retries => "JOB_MAX_RETRIES",
    job_recovery_seconds => "JOB_RECOVERY_SECONDS",
    job_retention_seconds => "JOB_RETENTION_SECONDS",
    log_format => "LOG_FORMAT",
    log_level => "LOG_LEVEL",
    max_connections => "MAX_CONNECTIONS",
    max_json_depth => "MAX_JSON_DEPTH",
    max_progress_message_bytes => "MAX_PROGRESS_MESSAGE_BYTES",
    max_progress_updates_per_job => "MAX_PROGRESS_UPDATES_PER_JOB",
    max_request_body_bytes => "MAX_REQUEST_BODY_BYTES",
    max_retained_jobs => "MAX_RETAINED_JOBS",
    max_timeout_seconds => "MAX_TIMEOUT_SECONDS",
    max_transitions_per_job => "MAX_TRANSITIONS_PER_JOB",
    orchestrator_secret_key => "ORCHESTRATOR_SECRET_KEY",
    rate_limiting_enabled => "RATE_LIMITING_ENABLED",
    rate_limit_heartbeat_limit => "RATE_LIMIT_HEARTBEAT_LIMIT",
    rate_limit_limit => "RATE_LIMIT_LIMIT",
    rate_limit_max_keys => "RATE_LIMIT_MAX_KEYS",
    rate_limit_period => "RATE_LIMIT_PERIOD",
    rate_limit_poll_limit => "RATE_LIMIT_POLL_LIMIT",
    redis_encryption_key => "REDIS_ENCRYPTION_KEY",
    redis_encryption_key_previous => "REDIS_ENCRYPTION_KEY_PREVIOUS",
    redis_key_prefix => "REDIS_KEY_PREFIX",
    redis_url => "REDIS_URL",
    reputation_min_threshold => "REPUTATION_MIN_THRESHOLD",
    reputation_penalty_contract_violation => "REPUTATION_PENALTY_CONTRACT_VIOLATION",
    reputation_penalty_task_failure => "REPUTATION_PENALTY_TASK_FAILURE",
    reputation_recalc_interval_seconds => "REPUTATION_RECALC_INTERVAL_SECONDS",
    reputation_reward_success => "REPUTATION_REWARD_SUCCESS",
    schedules_config_path => "SCHEDULES_CONFIG_PATH",
    shutdown_grace_seconds => "SHUTDOWN_GRACE_SECONDS",
    strict_event_validation => "STRICT_EVENT_VALIDATION",
    task_files_dir => "TASK_FILES_DIR",
    tls_enabled => "TLS_ENABLED",
    tz => "TZ",
    watcher_interval_seconds => "WATCHER_INTERVAL_SECONDS",
    watcher_limit => "WATCHER_LIMIT",
    webhook_allow_private => "WEBHOOK_ALLOW_PRIVATE",
    webhook_connect_timeout_seconds => "WEBHOOK_CONNECT_TIMEOUT_SECONDS",
    webhook_max_concurrency => "WEBHOOK_MAX_CONCURRENCY",
    webhook_max_per_client => "WEBHOOK_MAX_PER_CLIENT",
    webhook_max_per_host => "WEBHOOK_MAX_PER_HOST",
    webhook_retry_base_seconds => "WEBHOOK_RETRY_BASE_SECONDS",
    webhook_secret => "WEBHOOK_SECRET",
    webhook_timeout_seconds => "WEBHOOK_TIMEOUT_SECONDS",
    work_stealing_enabled => "WORK_STEALING_ENABLED",
    worker_auth_mode => "WORKER_AUTH_MODE",
    worker_health_check_interval_seconds => "WORKER_HEALTH_CHECK_INTERVAL_SECONDS",
    worker_history_status_interval_seconds => "WORKER_HISTORY_STATUS_INTERVAL_SECONDS",
    worker_poll_timeout_seconds => "WORKER_POLL_TIMEOUT_SECONDS",
    worker_timeout_seconds => "WORKER_TIMEOUT_SECONDS",
    workers_config_path => "WORKERS_CONFIG_PATH",
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variable the configuration reads with no other set has a method, and every method's
    /// variable is read (so the table cannot drift from the parser).
    #[test]
    fn every_variable_read_has_a_method() {
        let asked: RefCell<BTreeSet<String>> = RefCell::default();
        Config::from_lookup(&|name| {
            asked.borrow_mut().insert(name.to_owned());
            None
        })
        .unwrap();
        let asked = asked.into_inner();
        // Read for Avtomatika's sake only (aliases, refusals, warnings): no method of their own.
        let other = |n: &str| {
            matches!(n, "ENV" | "WORKER_TOKEN" | "REDIS_HOST" | "REDIS_PORT" | "REDIS_DB" | "SHUTDOWN_TIMEOUT_SECONDS")
                || super::super::NOT_READ.iter().any(|(name, ..)| *name == n)
                || n.starts_with("S3_")
                || n.starts_with("TLS_")
                || !n.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        };
        let missing: Vec<&String> = asked.iter().filter(|n| !METHODS.contains(&n.as_str()) && !other(n)).collect();
        assert!(missing.is_empty(), "variables without a builder method: {missing:?}");
        let unread: Vec<&&str> = METHODS.iter().filter(|m| !asked.contains(**m)).collect();
        assert!(unread.is_empty(), "methods of variables that are not read: {unread:?}");
    }

    #[test]
    fn values_are_parsed_and_checked_as_from_the_environment() {
        let c = Config::builder().api_port(9001).job_max_retries(5).strict_event_validation(true).build().unwrap();
        assert_eq!((c.port, c.job_max_retries, c.strict_event_validation), (9001, 5, true));
        let err = Config::builder().api_port("eighty").build().unwrap_err().to_string();
        assert!(err.contains("API_PORT=\"eighty\""), "{err}");
        let err = Config::builder().set("JOB_MAX_RETRIE", 1).build().unwrap_err().to_string();
        assert!(err.contains("did you mean JOB_MAX_RETRIES"), "{err}");
        let err = Config::builder().set("TLS_CERT_PATH", "/x.pem").build().unwrap_err().to_string();
        assert!(err.contains("TLS_CERT_PATH is not read with this configuration"), "{err}");
    }
}
