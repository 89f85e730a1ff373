//! Scheduler fire-time claims: each `(schedule, fire time)` goes to one orchestrator instance.

use std::time::Duration;

use futures::future::BoxFuture;

use super::StorageError;

/// Claims of fire times, shared by every orchestrator instance.
pub trait ScheduleLocks: Send + Sync + 'static {
    /// Atomically takes `key` for `ttl` if nobody holds it (Redis: `SET key holder NX PX ttl`).
    /// True for exactly one caller per key and TTL period.
    fn claim<'a>(&'a self, key: &'a str, holder: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StorageError>>;
}
