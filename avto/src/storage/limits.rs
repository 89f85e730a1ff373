//! Limits on clients and requests: quotas per client token, fixed-window rate limits, and
//! replay nonces.

use std::time::Duration;

use futures::future::BoxFuture;

use super::StorageError;

/// Request counters per client token (clients.toml `monthly_attempts`).
pub trait QuotaStore: Send + Sync + 'static {
    /// Sets the allowance at start-up: an unknown token, or a different `limit` than the one
    /// last set, starts at `limit`; the same limit keeps what is left, so a restart or a second
    /// instance does not refill it.
    fn init<'a>(&'a self, token: &'a str, limit: u64) -> BoxFuture<'a, Result<(), StorageError>>;
    /// Takes one unit; false when exhausted. Exact under concurrency.
    fn take<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<bool, StorageError>>;
}

/// Fixed-window rate limiting.
pub trait RateLimitStore: Send + Sync + 'static {
    /// Counts a hit on `key`; `Err(retry_after)` when over `limit` in the current window.
    fn hit<'a>(
        &'a self,
        key: &'a str,
        limit: u32,
        period: Duration,
    ) -> BoxFuture<'a, Result<Result<(), Duration>, StorageError>>;
}

/// Replay protection: remembers nonces for a while.
pub trait NonceStore: Send + Sync + 'static {
    /// Records `nonce`; false if it was already seen within `ttl`.
    fn first_use<'a>(&'a self, nonce: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StorageError>>;
}

/// Rate-limit windows kept in memory by default (`RATE_LIMIT_MAX_KEYS`).
pub const DEFAULT_RATE_LIMIT_MAX_KEYS: usize = 100_000;
