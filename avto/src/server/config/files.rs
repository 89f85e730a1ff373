//! The credential files: clients.toml (`CLIENTS_CONFIG_PATH`: client tokens, plans, quotas)
//! and workers.toml (`WORKERS_CONFIG_PATH`: individual worker tokens, by id or glob pattern),
//! and the implicit clients of `CLIENT_TOKEN` and of development mode.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::ConfigError;
use crate::context::ClientConfig;

/// One client from clients.toml (or `CLIENT_TOKEN`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientEntry {
    pub token: String,
    pub config: ClientConfig,
    /// Jobs the client may create per calendar month, UTC (`monthly_attempts`); `None` = unlimited.
    pub quota: Option<u64>,
}

/// A worker's individual token from workers.toml (table name = worker id, or a glob pattern).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerToken {
    pub pattern: String,
    pub token: String,
}

impl WorkerToken {
    /// Whether this entry applies to `worker_id` (exact name, or a glob with `*` and `?`).
    pub fn matches(&self, worker_id: &str) -> bool {
        glob_match(self.pattern.as_bytes(), worker_id.as_bytes())
    }
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&p[1..], s) || (!s.is_empty() && glob_match(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_match(&p[1..], &s[1..]),
        _ => false,
    }
}

/// The implicit client `default` of `CLIENT_TOKEN` (`id` `env:CLIENT_TOKEN`) or of the
/// development token (`dev:default`).
pub(super) fn default_client(token: &str, id: &str) -> ClientEntry {
    let mut config = Map::new();
    config.insert("plan".into(), Value::String("default".into()));
    ClientEntry {
        token: token.to_owned(),
        config: ClientConfig {
            name: "default".into(),
            id: id.into(),
            plan: "default".into(),
            params: Value::Null,
            config,
        },
        quota: None,
    }
}

/// The identity of a client configured by name (clients.toml, or a [`ClientEntry`] built in code
/// without an id).
pub fn configured_client_id(name: &str) -> String {
    format!("toml:{name}")
}

/// Gives every client without an id its [`configured_client_id`], and refuses two clients with
/// the same name, identity or token (jobs are owned by the identity; handlers see the name).
pub fn check_clients(clients: &mut [ClientEntry]) -> Result<(), ConfigError> {
    for c in clients.iter_mut() {
        if c.config.id.is_empty() {
            c.config.id = configured_client_id(&c.config.name);
        }
    }
    for (i, a) in clients.iter().enumerate() {
        for b in &clients[..i] {
            if a.config.name == b.config.name || a.config.id == b.config.id {
                return Err(ConfigError(format!(
                    "two clients are named `{}` (e.g. CLIENT_TOKEN's client `default` and a [default] table of \
                     clients.toml with another token): client names must be unique",
                    a.config.name
                )));
            }
            if a.token == b.token {
                return Err(ConfigError(format!(
                    "clients `{}` and `{}` have the same token",
                    a.config.name, b.config.name
                )));
            }
        }
    }
    Ok(())
}

/// The individual token of `worker_id` among `tokens`: an exact table name first, then the
/// first glob pattern that matches.
pub fn find_worker_token<'a>(tokens: &'a [WorkerToken], worker_id: &str) -> Option<&'a str> {
    tokens
        .iter()
        .find(|t| t.pattern == worker_id)
        .or_else(|| tokens.iter().find(|t| t.matches(worker_id)))
        .map(|t| t.token.as_str())
}

fn read_toml(path: &Path, what: &str) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{what} {}: cannot read: {e}", path.display())))?;
    text.parse::<toml::Table>().map_err(|e| ConfigError(format!("{what} {}: {e}", path.display())))
}

fn toml_to_json(v: toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Parses clients.toml: one table per client with `token` (required), `plan`, `monthly_attempts`, anything else.
pub fn load_clients(path: &Path) -> Result<Vec<ClientEntry>, ConfigError> {
    parse_clients(read_toml(path, "CLIENTS_CONFIG_PATH")?, &path.display().to_string())
}

pub(super) fn parse_clients(table: toml::Table, origin: &str) -> Result<Vec<ClientEntry>, ConfigError> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (name, value) in table {
        let toml::Value::Table(t) = value else {
            return Err(ConfigError(format!("{origin}: `{name}` must be a table ([{name}])")));
        };
        let token = match t.get("token") {
            Some(toml::Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(ConfigError(format!("{origin}: [{name}] needs a non-empty string `token`"))),
        };
        if let Some(other) = seen.insert(token.clone(), name.clone()) {
            return Err(ConfigError(format!("{origin}: [{name}] and [{other}] have the same token")));
        }
        let quota = match t.get("monthly_attempts") {
            None => None,
            Some(toml::Value::Integer(n)) if *n >= 0 => Some(*n as u64),
            Some(_) => {
                return Err(ConfigError(format!("{origin}: [{name}] monthly_attempts must be a non-negative integer")))
            }
        };
        let plan = match t.get("plan") {
            None => "unknown".to_owned(),
            Some(toml::Value::String(s)) => s.clone(),
            Some(_) => return Err(ConfigError(format!("{origin}: [{name}] plan must be a string"))),
        };
        let params = t.get("params").cloned().map(toml_to_json).unwrap_or(Value::Null);
        let config: Map<String, Value> =
            t.into_iter().filter(|(k, _)| k != "token").map(|(k, v)| (k, toml_to_json(v))).collect();
        let id = configured_client_id(&name);
        out.push(ClientEntry { token, config: ClientConfig { name, id, plan, params, config }, quota });
    }
    Ok(out)
}

/// Parses workers.toml: `[worker-id] token = "..."`; table names with `*` or `?` are glob patterns.
pub fn load_workers(path: &Path) -> Result<Vec<WorkerToken>, ConfigError> {
    parse_workers(read_toml(path, "WORKERS_CONFIG_PATH")?, &path.display().to_string())
}

pub(super) fn parse_workers(table: toml::Table, origin: &str) -> Result<Vec<WorkerToken>, ConfigError> {
    let mut out = Vec::new();
    for (name, value) in table {
        let toml::Value::Table(t) = value else {
            return Err(ConfigError(format!("{origin}: `{name}` must be a table ([{name}])")));
        };
        match t.get("token") {
            Some(toml::Value::String(s)) if !s.is_empty() => out.push(WorkerToken { pattern: name, token: s.clone() }),
            _ => return Err(ConfigError(format!("{origin}: [{name}] needs a non-empty string `token`"))),
        }
    }
    Ok(out)
}
