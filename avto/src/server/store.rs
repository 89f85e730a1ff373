//! Server storage capabilities: jobs, quotas, rate limits, replay nonces, STS tokens.
//!
//! Each capability is a small trait; [`memory`] implements all of them in-process and
//! `server::redis` (feature `redis`) in a Redis shared by several orchestrator instances.
//! [`Stores`] bundles one implementation of every capability. The same conformance suite
//! (`tests/storage_conformance.rs`) runs against both.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::job::now_ms;
use crate::storage::memory::{
    MemoryJobs, MemoryNonces, MemoryQuotas, MemoryRateLimits, MemoryScheduleLocks, MemoryWorkers,
};
use crate::storage::{Bus, JobStore, NonceStore, QuotaStore, RateLimitStore, ScheduleLocks, StorageError, WorkerStore};

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

/// One implementation of every storage capability the server uses.
#[derive(Clone)]
pub struct Stores {
    pub jobs: Arc<dyn JobStore>,
    pub quotas: Arc<dyn QuotaStore>,
    pub rate: Arc<dyn RateLimitStore>,
    pub nonces: Arc<dyn NonceStore>,
    pub sts: Arc<dyn StsStore>,
    pub workers: Arc<dyn WorkerStore>,
    pub data: Arc<dyn crate::storage::DataStoreBackend>,
    pub schedule_locks: Arc<dyn ScheduleLocks>,
    /// Cross-instance messages (`None` = this instance is alone).
    pub bus: Option<Arc<dyn Bus>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").field("bus", &self.bus.is_some()).finish_non_exhaustive()
    }
}

impl Stores {
    /// Everything in process memory (one instance; the default).
    pub fn memory() -> Self {
        Stores {
            jobs: Arc::new(MemoryJobs::new()),
            quotas: Arc::new(MemoryQuotas::default()),
            rate: Arc::new(MemoryRateLimits::default()),
            nonces: Arc::new(MemoryNonces::default()),
            sts: Arc::new(memory::MemorySts::default()),
            workers: Arc::new(MemoryWorkers::new()),
            data: Arc::new(crate::storage::memory::MemoryDataStores::new()),
            schedule_locks: Arc::new(MemoryScheduleLocks::new()),
            bus: None,
        }
    }
}

/// In-memory implementations of every server capability.
pub mod memory {
    use super::*;

    /// In-memory STS tokens.
    #[derive(Default)]
    pub struct MemorySts {
        /// hash -> (kind, worker id, expiry ms)
        tokens: Mutex<HashMap<String, (String, String, u64)>>,
    }

    impl StsStore for MemorySts {
        fn save<'a>(
            &'a self,
            hash: &'a str,
            kind: &'a str,
            worker_id: &'a str,
            ttl: Duration,
        ) -> BoxFuture<'a, Result<(), StorageError>> {
            let now = now_ms();
            let mut tokens = self.tokens.lock();
            tokens.retain(|_, (_, _, exp)| *exp > now);
            tokens.insert(
                hash.to_owned(),
                (kind.to_owned(), worker_id.to_owned(), now.saturating_add(ttl.as_millis() as u64)),
            );
            Box::pin(async { Ok(()) })
        }

        fn owner<'a>(&'a self, hash: &'a str, kind: &'a str) -> BoxFuture<'a, Result<Option<String>, StorageError>> {
            let now = now_ms();
            let owner = match self.tokens.lock().get(hash) {
                Some((k, w, exp)) if k == kind && *exp > now => Some(w.clone()),
                _ => None,
            };
            Box::pin(async move { Ok(owner) })
        }

        fn revoke<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
            self.tokens.lock().remove(hash);
            Box::pin(async { Ok(()) })
        }
    }
}
