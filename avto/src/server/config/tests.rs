//! Tests of the environment parsing (`Config::from_lookup`) and the credential files.

use super::*;
use std::collections::HashMap;

fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_lookup(&move |k| map.get(k).cloned())
}

#[test]
fn defaults() {
    let c = cfg(&[]).unwrap();
    assert_eq!(c.port, 8080);
    assert_eq!(c.client_api_prefix, "api");
    assert_eq!(c.clients.len(), 1);
    assert_eq!(c.clients[0].token, DEV_CLIENT_TOKEN);
}

#[test]
fn invalid_values_fail_fast_with_the_variable_name() {
    let e = cfg(&[("API_PORT", "eighty")]).unwrap_err();
    assert!(e.0.contains("API_PORT"), "{e}");
    let e = cfg(&[("RATE_LIMITING_ENABLED", "maybe")]).unwrap_err();
    assert!(e.0.contains("RATE_LIMITING_ENABLED"), "{e}");
    let e = cfg(&[("WORKER_POLL_TIMEOUT_SECONDS", "-1")]).unwrap_err();
    assert!(e.0.contains("WORKER_POLL_TIMEOUT_SECONDS"), "{e}");
    let e = cfg(&[("CLIENTS_CONFIG_PATH", "/nonexistent/clients.toml")]).unwrap_err();
    assert!(e.0.contains("cannot read"), "{e}");
}

#[test]
fn default_dispatch_timeout_is_bounded_and_positive() {
    assert_eq!(cfg(&[]).unwrap().default_dispatch_timeout, Duration::from_secs(DEFAULT_DISPATCH_TIMEOUT_SECONDS));
    let c = cfg(&[("DEFAULT_DISPATCH_TIMEOUT_SECONDS", "2.5")]).unwrap();
    assert_eq!(c.default_dispatch_timeout, Duration::from_millis(2500));
    for bad in ["0", "-1", "1e12", "soon"] {
        let e = cfg(&[("DEFAULT_DISPATCH_TIMEOUT_SECONDS", bad)]).unwrap_err();
        assert!(e.0.contains("DEFAULT_DISPATCH_TIMEOUT_SECONDS"), "{bad}: {e}");
    }
}

#[test]
fn job_retention() {
    let c = cfg(&[]).unwrap();
    assert_eq!(c.job_retention, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(c.max_retained_jobs, 100_000);
    let c = cfg(&[("JOB_RETENTION_SECONDS", "0"), ("MAX_RETAINED_JOBS", "5")]).unwrap();
    assert_eq!(c.job_retention, None, "0 = keep forever");
    assert_eq!(c.max_retained_jobs, 5);
    assert_eq!(cfg(&[("JOB_RETENTION_SECONDS", "1.5")]).unwrap().job_retention, Some(Duration::from_millis(1500)));
    let e = cfg(&[("JOB_RETENTION_SECONDS", "1e12")]).unwrap_err();
    assert!(e.0.contains("JOB_RETENTION_SECONDS"), "{e}");
    let e = cfg(&[("MAX_RETAINED_JOBS", "-1")]).unwrap_err();
    assert!(e.0.contains("MAX_RETAINED_JOBS"), "{e}");
    assert_eq!(c.data_store_ttl, Some(Duration::from_secs(30 * 86_400)));
    assert_eq!(cfg(&[("DATA_STORE_TTL_SECONDS", "0")]).unwrap().data_store_ttl, None, "0 = keep");
    assert_eq!(c.engine().data_ttl, c.data_store_ttl);
}

#[test]
fn client_token_and_prefix() {
    let c = cfg(&[("CLIENT_TOKEN", "t1"), ("CLIENT_API_PREFIX", "//v//")]).unwrap();
    assert_eq!(c.client_api_prefix, "v");
    assert!(c.clients.iter().any(|e| e.token == "t1"));
}

#[test]
fn clients_toml() {
    let t: toml::Table = r#"
        [client_premium]
        token = "user_token_vip"
        plan = "premium"
        monthly_attempts = 100000
        languages = ["en", "de", "fr"]
        [client_premium.params]
        tier = 3
    "#
    .parse()
    .unwrap();
    let c = parse_clients(t, "x").unwrap();
    assert_eq!(c[0].quota, Some(100000));
    assert_eq!(c[0].config.plan, "premium");
    assert_eq!(c[0].config.get("languages"), &serde_json::json!(["en", "de", "fr"]));
    assert_eq!(c[0].config.params, serde_json::json!({"tier": 3}));
    assert!(c[0].config.config.get("token").is_none(), "the token is never part of the client config");
    let bad: toml::Table = "[a]\nplan = \"x\"\n".parse().unwrap();
    assert!(parse_clients(bad, "x").unwrap_err().0.contains("token"));
    let bad: toml::Table = "[a]\ntoken = \"t\"\nmonthly_attempts = \"many\"\n".parse().unwrap();
    assert!(parse_clients(bad, "x").unwrap_err().0.contains("monthly_attempts"));
}

#[test]
fn worker_tokens_and_patterns() {
    let t: toml::Table = "[worker-001]\ntoken = \"a\"\n[\"cpu-*\"]\ntoken = \"b\"\n".parse().unwrap();
    let tokens = parse_workers(t, "x").unwrap();
    let c = Config { worker_tokens: tokens, ..Config::default() };
    assert_eq!(c.worker_token("worker-001"), Some("a"));
    assert_eq!(c.worker_token("cpu-7"), Some("b"));
    assert_eq!(c.worker_token("gpu-1"), None);
}

#[test]
fn redis_url_from_url_or_host_port_db() {
    assert_eq!(cfg(&[]).unwrap().redis_url, None);
    assert_eq!(cfg(&[("REDIS_HOST", "")]).unwrap().redis_url, None);
    let c = cfg(&[("REDIS_HOST", "cache"), ("REDIS_PORT", "6380"), ("REDIS_DB", "2")]).unwrap();
    assert_eq!(c.redis_url.as_deref(), Some("redis://cache:6380/2"));
    assert_eq!(c.redis_key_prefix, "avto:");
    let c = cfg(&[("REDIS_URL", "redis://127.0.0.1:6379/1"), ("REDIS_HOST", "ignored")]).unwrap();
    assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:6379/1"));
    assert!(cfg(&[("REDIS_URL", "127.0.0.1:6379")]).unwrap_err().0.contains("REDIS_URL"));
    assert!(cfg(&[("REDIS_HOST", "h"), ("REDIS_PORT", "x")]).unwrap_err().0.contains("REDIS_PORT"));
    assert_eq!(cfg(&[("REDIS_KEY_PREFIX", "t1:")]).unwrap().redis_key_prefix, "t1:");
}

/// Issue #12 item 6: CLIENT_TOKEN's client `default` and a [default] table of clients.toml
/// with another token are two clients with one name: refused at start-up. With the same
/// token they are one client. Identities never repeat.
#[test]
fn client_names_are_unique() {
    let dir = std::env::temp_dir().join(format!("avto-clients-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("clients.toml");
    std::fs::write(&path, "[default]\ntoken = \"toml-token\"\n[acme]\ntoken = \"acme-token\"\n").unwrap();
    let p = path.to_string_lossy().into_owned();
    let e = cfg(&[("CLIENTS_CONFIG_PATH", &p), ("CLIENT_TOKEN", "env-token")]).unwrap_err();
    assert!(e.0.contains("`default`") && e.0.contains("unique"), "{e}");
    let c = cfg(&[("CLIENTS_CONFIG_PATH", &p), ("CLIENT_TOKEN", "toml-token")]).unwrap();
    assert_eq!(c.clients.len(), 2, "the same token is the same client");
    let ids: Vec<&str> = c.clients.iter().map(|c| c.config.id.as_str()).collect();
    assert!(ids.contains(&"toml:default") && ids.contains(&"toml:acme"), "{ids:?}");
    assert_eq!(cfg(&[("CLIENT_TOKEN", "t")]).unwrap().clients[0].config.id, "env:CLIENT_TOKEN");
    assert_eq!(cfg(&[]).unwrap().clients[0].config.id, "dev:default");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn admin_token_is_its_own_credential() {
    assert_eq!(cfg(&[]).unwrap().admin_token, None);
    assert_eq!(cfg(&[("ADMIN_TOKEN", "op")]).unwrap().admin_token.as_deref(), Some("op"));
    let e = cfg(&[("ADMIN_TOKEN", "c"), ("CLIENT_TOKEN", "c")]).unwrap_err();
    assert!(e.0.contains("ADMIN_TOKEN"), "{e}");
    let e = cfg(&[("ADMIN_TOKEN", "w"), ("GLOBAL_WORKER_TOKEN", "w")]).unwrap_err();
    assert!(e.0.contains("ADMIN_TOKEN"), "{e}");
}

#[test]
fn production_refuses_dev_defaults() {
    assert!(cfg(&[("ENVIRONMENT", "production")]).is_err());
    assert!(cfg(&[
        ("ENVIRONMENT", "production"),
        ("GLOBAL_WORKER_TOKEN", "w"),
        ("ORCHESTRATOR_SECRET_KEY", "s"),
        ("CLIENT_TOKEN", "c")
    ])
    .is_ok());
}

/// Issue #16 item 7: the spec's variables avto had ignored are read, with their defaults and bounds.
#[test]
fn reward_watcher_limit_and_task_files_dir() {
    let c = cfg(&[]).unwrap();
    assert_eq!(c.reputation_reward_success, 0.001);
    assert_eq!(c.watcher_limit, 500);
    assert_eq!(c.task_files_dir, std::env::temp_dir().join("avtomatika-payloads"));
    let c = cfg(&[("REPUTATION_REWARD_SUCCESS", "0.25"), ("WATCHER_LIMIT", "7"), ("TASK_FILES_DIR", "/var/tmp/jobs")])
        .unwrap();
    assert_eq!(c.reputation_reward_success, 0.25);
    assert_eq!(c.watcher_limit, 7);
    assert_eq!(c.task_files_dir, PathBuf::from("/var/tmp/jobs"));
    for (name, bad) in
        [("REPUTATION_REWARD_SUCCESS", "1.5"), ("REPUTATION_REWARD_SUCCESS", "-0.1"), ("WATCHER_LIMIT", "0")]
    {
        let e = cfg(&[(name, bad)]).unwrap_err();
        assert!(e.0.contains(name), "{name}={bad}: {e}");
    }
}

/// Issue #16 item 7: an Avtomatika variable avto does not read is never ignored silently:
/// `BLUEPRINTS_DIR` stops the start-up saying why, the others are start-up warnings.
#[test]
fn variables_avto_does_not_read_are_refused_or_warned_about() {
    let e = cfg(&[("BLUEPRINTS_DIR", "/etc/avtomatika/blueprints")]).unwrap_err();
    assert!(e.0.starts_with("BLUEPRINTS_DIR is set, but avto does not load blueprints from a directory"), "{e}");
    assert!(e.0.contains("#[avto::blueprint]"), "{e}");
    assert!(cfg(&[("BLUEPRINTS_DIR", " ")]).is_ok(), "an empty value is unset (Avtomatika's default)");
    assert!(cfg(&[]).unwrap().warnings.is_empty());
    let c = cfg(&[
        ("REDIS_STREAM_BLOCK_MS", "1000"),
        ("POSTGRES_DSN", "postgresql://u:p@h/db"),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://collector:4317"),
    ])
    .unwrap();
    assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
    for (w, name) in
        c.warnings.iter().zip(["REDIS_STREAM_BLOCK_MS", "POSTGRES_DSN", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"])
    {
        assert!(w.starts_with(&format!("{name} is set but not read by avto: ")), "{w}");
    }
    assert!(c.warnings[2].contains("GET /metrics"), "{}", c.warnings[2]);
}
