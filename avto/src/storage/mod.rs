//! Storage: small capability traits, one module per backend.
//!
//! The memory backend is always compiled; real backends live behind features.

mod data;
#[cfg(feature = "server")]
mod jobs;
#[cfg(feature = "server")]
mod limits;
pub mod memory;
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

pub use self::data::{DataStore, DataStoreBackend, DataStores, InitialValues};
#[cfg(feature = "server")]
pub use self::jobs::{is_unsettled, JobGuard, JobStore};
#[cfg(feature = "server")]
pub use self::limits::{NonceStore, QuotaStore, RateLimitStore, DEFAULT_RATE_LIMIT_MAX_KEYS};
#[cfg(feature = "server")]
pub use self::schedule::ScheduleLocks;
#[cfg(feature = "server")]
pub use self::sts::StsStore;
#[cfg(feature = "server")]
pub(crate) use self::workers::dispatch_deadline;
#[cfg(feature = "server")]
pub use self::workers::{
    Bus, BusMessage, Orphan, Overdue, OverdueTask, QueuedTask, SkillView, Unassigned, WorkerCommand, WorkerInfo,
    WorkerLoad, WorkerStore, CANCEL_MEMORY_MS,
};

/// What a storage operation returns: a boxed future (so the capability traits stay object safe
/// and a backend can be chosen at run time) of a result whose error is a [`StorageError`].
pub type StorageFuture<'a, T> = BoxFuture<'a, Result<T, StorageError>>;

/// Errors of any storage backend.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
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
        }
    }
}
