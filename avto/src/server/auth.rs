//! Who is calling, without HTTP: clients (`X-Client-Token`), the operator (`ADMIN_TOKEN`),
//! workers (a verified client certificate, an STS access token, an individual token from
//! workers.toml or the global token, as `WORKER_AUTH_MODE` allows) and the STS tokens workers
//! exchange their credentials for.
//!
//! The API's extractors read the headers and the connection's certificate and ask [`Auth`];
//! every secret is compared in constant time, and client tokens are found through their
//! SHA-256 digests so the time taken says nothing about how much of a token was right.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::config::{self, ClientEntry, Config, ConfigError, WorkerAuthMode, WorkerToken};
use super::metrics::{reason, role, SecurityCounters};
use crate::protocol::sign::{constant_time_eq, sha256_hex};
use crate::storage::{StorageError, StsStore};

/// The worker id of a request authenticated by the global token without naming a worker.
pub(super) const GLOBAL_WORKER_ID: &str = "unknown_authenticated_by_global_token";
/// Lifetime of an STS access token.
pub(super) const STS_ACCESS_TTL: Duration = Duration::from_secs(3600);
/// Lifetime of an STS refresh token.
pub(super) const STS_REFRESH_TTL: Duration = Duration::from_secs(86_400);

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The request is malformed (e.g. an invalid worker id): 400.
    #[error("{0}")]
    Invalid(String),
    /// No credential at all where one is needed: 401.
    #[error("{0}")]
    Missing(String),
    /// A credential that does not allow this: 403.
    #[error("{0}")]
    Refused(String),
    /// The token store could not be asked: 503.
    #[error("token store: {0}")]
    Storage(#[from] StorageError),
}

/// An authenticated worker and the key its messages are signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerIdentity {
    pub worker_id: String,
    pub key: String,
}

/// A fresh STS token pair (see [`Auth::issue_sts`]).
#[derive(Debug, Clone)]
pub struct StsPair {
    pub access: String,
    pub refresh: String,
}

/// Worker ids: 1-128 characters of `[A-Za-z0-9_-]` (they become storage keys and URL parts).
pub(super) fn valid_worker_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// The entry of `clients` (token digest, client) whose token is `token`: every digest compared
/// in full, whichever matches.
fn find_client<'a>(clients: &'a [([u8; 32], Arc<ClientEntry>)], token: &str) -> Option<&'a Arc<ClientEntry>> {
    let digest = token_digest(token);
    let mut found = None;
    for (d, entry) in clients {
        let same = constant_time_eq(d, &digest);
        found = if same { Some(entry) } else { found };
    }
    found
}

/// The credentials of the orchestrator and the STS token store.
pub struct Auth {
    /// The configured clients with the SHA-256 of their tokens (shared: a request holds its
    /// client by the `Arc`, not a copy).
    clients: Vec<([u8; 32], Arc<ClientEntry>)>,
    admin_token: Option<String>,
    global_worker_token: String,
    worker_auth_mode: WorkerAuthMode,
    workers_config_path: Option<PathBuf>,
    /// Individual worker tokens: workers.toml at start-up, replaced by
    /// [`Auth::reload_worker_tokens`] (`POST …/admin/reload-workers`).
    worker_tokens: parking_lot::RwLock<Arc<Vec<WorkerToken>>>,
    /// STS tokens (stored as SHA-256 hashes).
    sts: Arc<dyn StsStore>,
    /// Refusals counted by role and reason (`avto_security_auth_failures_total`).
    security: SecurityCounters,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("clients", &self.clients.len()).field("mode", &self.worker_auth_mode).finish()
    }
}

impl Auth {
    pub(crate) fn new(cfg: &Config, sts: Arc<dyn StsStore>, security: SecurityCounters) -> Auth {
        Auth {
            clients: cfg.clients.iter().map(|c| (token_digest(&c.token), Arc::new(c.clone()))).collect(),
            admin_token: cfg.admin_token.clone(),
            global_worker_token: cfg.global_worker_token.clone(),
            worker_auth_mode: cfg.worker_auth_mode,
            workers_config_path: cfg.workers_config_path.clone(),
            worker_tokens: parking_lot::RwLock::new(Arc::new(cfg.worker_tokens.clone())),
            sts,
            security,
        }
    }

    /// The configured client whose token is `token`, found in constant time: the digest of
    /// `token` is compared with every client's (fixed length, every byte, no early exit).
    pub fn client_by_token(&self, token: &str) -> Option<&Arc<ClientEntry>> {
        find_client(&self.clients, token)
    }

    /// Checks an operator credential. Refused when it is wrong or when no `ADMIN_TOKEN` is
    /// configured (operator routes are then off).
    pub fn check_operator(&self, presented: &str) -> Result<(), AuthError> {
        let refused = |reason, msg: &str| {
            self.security.auth_failure(role::OPERATOR, reason);
            Err(AuthError::Refused(msg.to_owned()))
        };
        match &self.admin_token {
            None => refused(reason::DISABLED, "operator routes are disabled: ADMIN_TOKEN is not set"),
            Some(t) if constant_time_eq(t.as_bytes(), presented.as_bytes()) => Ok(()),
            Some(_) => refused(reason::INVALID_TOKEN, "Forbidden: invalid operator token"),
        }
    }

    /// Counts a refused credential (`avto_security_auth_failures_total{role,reason}`) that the
    /// HTTP layer found wrong before asking here (a missing header, an unknown client token, a
    /// message body naming another worker).
    pub fn refused(&self, role: &'static str, reason: &'static str) {
        self.security.auth_failure(role, reason);
    }

    /// The individual token of `worker_id` (exact workers.toml entry, else a matching pattern).
    pub fn worker_token(&self, worker_id: &str) -> Option<String> {
        let tokens = self.worker_tokens.read().clone();
        config::find_worker_token(&tokens, worker_id).map(str::to_owned)
    }

    /// Reads `WORKERS_CONFIG_PATH` again and replaces the individual worker tokens (all at once;
    /// a file that does not load changes nothing). Returns how many entries it has, or `None`
    /// when no workers.toml is configured.
    pub fn reload_worker_tokens(&self) -> Result<Option<usize>, ConfigError> {
        let Some(path) = &self.workers_config_path else { return Ok(None) };
        let tokens = config::load_workers(path)?;
        let n = tokens.len();
        *self.worker_tokens.write() = Arc::new(tokens);
        tracing::info!(path = %path.display(), workers = n, "worker tokens reloaded");
        Ok(Some(n))
    }

    /// Who a worker request is from. `cn` is the CN of the connection's verified client
    /// certificate, `token` the `X-Worker-Token` header, `hint` the worker id the request claims.
    /// Order (RXON, `WORKER_AUTH_MODE`): a verified client certificate names the worker (unless
    /// token-only); else an STS access token; else (unless mtls-only) an individual or the
    /// global token.
    pub async fn identify_worker(
        &self,
        cn: Option<&str>,
        token: Option<&str>,
        hint: Option<&str>,
    ) -> Result<WorkerIdentity, AuthError> {
        let refused = |reason, msg: &str| {
            self.security.auth_failure(role::WORKER, reason);
            Err(AuthError::Refused(msg.to_owned()))
        };
        if let Some(hint) = hint {
            if !valid_worker_id(hint) {
                return Err(AuthError::Invalid("Invalid worker_id: expected 1-128 characters of [A-Za-z0-9_-]".into()));
            }
        }
        let global = self.global_worker_token.as_str();
        let key_for = |id: &str| self.worker_token(id).unwrap_or_else(|| global.to_owned());
        let mode = self.worker_auth_mode;
        if let (Some(cn), false) = (cn, mode == WorkerAuthMode::TokenOnly) {
            return match hint {
                Some(h) if h != cn => refused(
                    reason::CERTIFICATE_MISMATCH,
                    &format!("Unauthorized: client certificate is for {cn}, the request is for {h}"),
                ),
                _ if !valid_worker_id(cn) => {
                    refused(reason::INVALID_CERTIFICATE, "Unauthorized: client certificate CN is not a valid worker id")
                }
                _ => Ok(WorkerIdentity { key: key_for(cn), worker_id: cn.to_owned() }),
            };
        }
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return match mode {
                WorkerAuthMode::MtlsOnly => {
                    refused(reason::MTLS_REQUIRED, "Unauthorized: Client certificate required.")
                }
                WorkerAuthMode::TokenOnly => {
                    refused(reason::MISSING_CREDENTIALS, "Unauthorized: Missing X-Worker-Token header.")
                }
                WorkerAuthMode::Mixed => refused(
                    reason::MISSING_CREDENTIALS,
                    "Unauthorized: Missing X-Worker-Token header or client certificate.",
                ),
            };
        };
        let is_global = constant_time_eq(token.as_bytes(), global.as_bytes());
        // STS access token (a configured token is never one: skip the lookup)
        let configured = is_global
            || hint
                .and_then(|h| self.worker_token(h))
                .is_some_and(|t| constant_time_eq(token.as_bytes(), t.as_bytes()));
        let sts_owner = match configured {
            true => None,
            false => self.sts_owner(token, "access").await?,
        };
        if let Some(owner) = sts_owner {
            return match hint {
                Some(h) if h != owner => {
                    refused(reason::WORKER_ID_MISMATCH, "Unauthorized: token belongs to another worker")
                }
                _ => Ok(WorkerIdentity { key: key_for(&owner), worker_id: owner }),
            };
        }
        if mode == WorkerAuthMode::MtlsOnly {
            return refused(
                reason::MTLS_REQUIRED,
                "Unauthorized: Invalid authentication method (WORKER_AUTH_MODE=mtls-only)",
            );
        }
        let Some(hint) = hint else {
            if is_global {
                return Ok(WorkerIdentity { worker_id: GLOBAL_WORKER_ID.into(), key: global.to_owned() });
            }
            return refused(reason::INVALID_TOKEN, "Unauthorized: No valid token found");
        };
        if let Some(individual) = self.worker_token(hint) {
            return if constant_time_eq(token.as_bytes(), individual.as_bytes()) {
                Ok(WorkerIdentity { worker_id: hint.to_owned(), key: individual })
            } else {
                refused(reason::INVALID_TOKEN, "Unauthorized: Invalid individual worker token")
            };
        }
        if is_global {
            return Ok(WorkerIdentity { worker_id: hint.to_owned(), key: global.to_owned() });
        }
        refused(reason::INVALID_TOKEN, "Unauthorized: No valid token found")
    }

    /// Issues an STS token pair for `worker_id` (stored hashed, with their lifetimes).
    pub async fn issue_sts(&self, worker_id: &str) -> Result<StsPair, StorageError> {
        let fresh = || format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let pair = StsPair { access: fresh(), refresh: fresh() };
        self.sts.save(&sha256_hex(pair.access.as_bytes()), "access", worker_id, STS_ACCESS_TTL).await?;
        self.sts.save(&sha256_hex(pair.refresh.as_bytes()), "refresh", worker_id, STS_REFRESH_TTL).await?;
        Ok(pair)
    }

    /// Exchanges refresh token `token` of `worker_id` for a fresh pair (the old one is revoked).
    pub async fn refresh_sts(&self, worker_id: &str, token: &str) -> Result<StsPair, AuthError> {
        match self.sts_owner(token, "refresh").await? {
            Some(owner) if owner == worker_id => {
                self.sts.revoke(&sha256_hex(token.as_bytes())).await?;
                Ok(self.issue_sts(worker_id).await?)
            }
            Some(_) => {
                self.security.auth_failure(role::WORKER, reason::WORKER_ID_MISMATCH);
                Err(AuthError::Refused("Unauthorized: refresh token belongs to another worker".into()))
            }
            None => {
                self.security.auth_failure(role::WORKER, reason::INVALID_TOKEN);
                Err(AuthError::Refused("Unauthorized: Invalid refresh token (not found)".into()))
            }
        }
    }

    /// The worker owning a live STS token of `kind` (`access` / `refresh`).
    async fn sts_owner(&self, token: &str, kind: &str) -> Result<Option<String>, StorageError> {
        self.sts.owner(&sha256_hex(token.as_bytes()), kind).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token store failure is the source; the text and the HTTP answer are what they were
    /// when it was flattened into a String.
    #[test]
    fn storage_errors_are_the_source() {
        use std::error::Error as _;
        let err = AuthError::from(StorageError::Unavailable("redis is down".into()));
        assert_eq!(
            err.source().and_then(|e| e.downcast_ref::<StorageError>()),
            Some(&StorageError::Unavailable("redis is down".into()))
        );
        assert_eq!(err.to_string(), "token store: storage backend unavailable: redis is down");
        assert_eq!(
            crate::server::api::ApiError::from(err),
            crate::server::api::ApiError::Unavailable("storage backend unavailable: redis is down".into())
        );
    }

    /// Issue #12 item 11: client tokens are found through their digests (constant time), exactly.
    #[test]
    fn client_tokens_are_matched_by_digest() {
        let entry = |name: &str, token: &str| ClientEntry {
            token: token.into(),
            config: crate::context::ClientConfig { name: name.into(), ..Default::default() },
            quota: None,
        };
        let clients: Vec<_> = [entry("a", "token-a"), entry("b", "token-b")]
            .into_iter()
            .map(|c| (token_digest(&c.token), Arc::new(c)))
            .collect();
        assert_eq!(find_client(&clients, "token-b").map(|c| c.config.name.as_str()), Some("b"));
        assert_eq!(find_client(&clients, "token-a").map(|c| c.config.name.as_str()), Some("a"));
        for wrong in ["", "token-", "token-a ", "TOKEN-A", "token-c"] {
            assert!(find_client(&clients, wrong).is_none(), "{wrong:?}");
        }
    }
}
