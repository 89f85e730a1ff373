//! Short-lived worker tokens (STS): [`StsStore`].

use std::time::Duration;

use futures::future::BoxFuture;

use super::StorageError;

/// Short-lived worker tokens (STS): only SHA-256 hashes are stored, each with its kind
/// (`access` / `refresh`), owner and lifetime.
pub trait StsStore: Send + Sync + 'static {
    /// Stores `hash` for `worker_id` for `ttl`.
    fn save<'a>(
        &'a self,
        hash: &'a str,
        kind: &'a str,
        worker_id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StorageError>>;
    /// The owner of a live token of `kind`.
    fn owner<'a>(&'a self, hash: &'a str, kind: &'a str) -> BoxFuture<'a, Result<Option<String>, StorageError>>;
    /// Forgets a token (of any kind).
    fn revoke<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<(), StorageError>>;
}
