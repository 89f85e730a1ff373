//! Storage: every place the runtime and the server keep state, one small trait per capability,
//! with the in-memory backend ([`memory`], always compiled) and the Redis backend (`redis`,
//! feature `redis`) beside them.
//!
//! | capability | trait | in [`memory`] | in `redis` |
//! |---|---|---|---|
//! | blueprint data stores (`data`) | [`DataStoreBackend`], seen by handlers as [`DataStores`] / [`DataStore`] | `MemoryDataStores` | `RedisDataStores` |
//! | jobs (`jobs`) | `JobStore` (locks hand out a `JobGuard`) | `MemoryJobs` | `RedisJobs` |
//! | job queries: filters, cursor paging, counts (`query`) | `JobStore::query`, `JobStore::count` with `JobQuery`, `JobCursor`, `JobPage` | `MemoryJobs` | `RedisJobs` |
//! | workers, their queues and running tasks (`workers`) | `WorkerStore` | `MemoryWorkers` | `RedisWorkers` |
//! | messages between instances (`workers`) | `Bus` | none: one instance needs no bus | `RedisBus` |
//! | client quotas, rate limits, replay nonces (`limits`) | `QuotaStore`, `RateLimitStore`, `NonceStore` | `MemoryQuotas`, `MemoryRateLimits`, `MemoryNonces` | `RedisQuotas`, `RedisRateLimits`, `RedisNonces` |
//! | STS worker tokens (`sts`) | `StsStore` | `MemorySts` | `RedisSts` |
//! | scheduler fire-time claims (`schedule`) | `ScheduleLocks` | `MemoryScheduleLocks` | `RedisScheduleLocks` |
//!
//! Everything but the data stores exists with the `server` feature only. `Stores` bundles one
//! implementation of every capability for the orchestrator (`Stores::memory()`, or
//! `redis::RedisStores::stores()`); the capability modules are private and their items are
//! re-exported here. Both backends pass the same conformance suite
//! (`tests/storage_conformance.rs`).

mod data;
#[cfg(feature = "server")]
pub mod encryption;
#[cfg(feature = "server")]
mod jobs;
#[cfg(feature = "server")]
mod limits;
pub mod memory;
#[cfg(feature = "server")]
mod query;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "server")]
mod schedule;
#[cfg(feature = "server")]
mod sts;
#[cfg(feature = "server")]
mod workers;

#[cfg(feature = "server")]
use std::sync::Arc;

use futures::future::BoxFuture;

pub use self::data::{DataStore, DataStoreBackend, DataStoreSpec, DataStores, InitialValues};
#[cfg(feature = "server")]
pub use self::jobs::{counts_as_activity, is_unsettled, Finishing, JobGuard, JobStore, PoppedJob, SavedJob};
#[cfg(feature = "server")]
pub use self::limits::{quota_month, NonceStore, QuotaStore, RateLimitStore, DEFAULT_RATE_LIMIT_MAX_KEYS};
#[cfg(feature = "server")]
pub use self::query::{
    CheckedQuery, JobCursor, JobPage, JobQuery, JOB_QUERY_COUNT_LIMIT, JOB_QUERY_MAX_ID, JOB_QUERY_MAX_LIMIT,
    JOB_QUERY_MAX_NAME, JOB_QUERY_PREFIX_CANDIDATES, JOB_QUERY_SCAN_LIMIT,
};
#[cfg(feature = "server")]
pub use self::schedule::ScheduleLocks;
#[cfg(feature = "server")]
pub use self::sts::StsStore;
#[cfg(feature = "server")]
pub(crate) use self::workers::{dispatch_deadline, dispatch_deadline_after};
#[cfg(feature = "server")]
pub use self::workers::{
    Bus, BusMessage, Orphan, Overdue, OverdueTask, QueuedTask, SkillView, Unassigned, WorkerCommand, WorkerInfo,
    WorkerLoad, WorkerStore, CANCEL_MEMORY_MS, OPERATOR_DRAIN,
};

/// What a storage operation returns: a boxed future (so the capability traits stay object safe
/// and a backend can be chosen at run time) of a result whose error is a [`StorageError`].
pub type StorageFuture<'a, T> = BoxFuture<'a, Result<T, StorageError>>;

/// Errors of any storage backend.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("unknown data store `{store}` in blueprint `{blueprint}` (declared: {declared})")]
    UnknownStore { blueprint: String, store: String, declared: String },
    #[error("value does not have the expected type: {0}")]
    Type(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request is out of bounds (e.g. a [`JobQuery`] limit or a cursor that does not
    /// parse): the caller's mistake, answered with a 4xx.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A Redis command failed or Redis could not be reached (feature `redis`); the Redis
    /// client's error is the [`source`](std::error::Error::source).
    #[cfg(feature = "redis")]
    #[error("storage backend unavailable: redis: {0}")]
    Redis(#[source] std::sync::Arc<::redis::RedisError>),
}

/// Two storage errors are equal when they are the same kind and say the same (a Redis error
/// compares by its text: the client's error type has no equality).
impl PartialEq for StorageError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other) && self.to_string() == other.to_string()
    }
}

/// One implementation of every storage capability the server uses.
#[cfg(feature = "server")]
#[derive(Clone)]
pub struct Stores {
    pub jobs: Arc<dyn JobStore>,
    pub quotas: Arc<dyn QuotaStore>,
    pub rate: Arc<dyn RateLimitStore>,
    pub nonces: Arc<dyn NonceStore>,
    pub sts: Arc<dyn StsStore>,
    pub workers: Arc<dyn WorkerStore>,
    pub data: Arc<dyn DataStoreBackend>,
    pub schedule_locks: Arc<dyn ScheduleLocks>,
    /// Cross-instance messages (`None` = this instance is alone).
    pub bus: Option<Arc<dyn Bus>>,
    /// Requests sent to a networked backend so far (Redis: every command, script call or
    /// pipeline, `orchestrator_redis_round_trips_total`); `None` in memory.
    pub round_trips: Option<Arc<std::sync::atomic::AtomicU64>>,
}

#[cfg(feature = "server")]
impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").field("bus", &self.bus.is_some()).finish_non_exhaustive()
    }
}

#[cfg(feature = "server")]
impl Stores {
    /// Everything in process memory (one instance; the default).
    pub fn memory() -> Self {
        Stores {
            jobs: Arc::new(memory::MemoryJobs::new()),
            quotas: Arc::new(memory::MemoryQuotas::default()),
            rate: Arc::new(memory::MemoryRateLimits::default()),
            nonces: Arc::new(memory::MemoryNonces::default()),
            sts: Arc::new(memory::MemorySts::default()),
            workers: Arc::new(memory::MemoryWorkers::new()),
            data: Arc::new(memory::MemoryDataStores::new()),
            schedule_locks: Arc::new(memory::MemoryScheduleLocks::new()),
            bus: None,
            round_trips: None,
        }
    }
}
