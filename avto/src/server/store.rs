//! Server storage capabilities: jobs, quotas, rate limits, replay nonces, STS tokens.
//!
//! Each capability is a small trait; [`memory`] implements all of them in-process and
//! `server::redis` (feature `redis`) in a Redis shared by several orchestrator instances.
//! [`Stores`] bundles one implementation of every capability. The same conformance suite
//! (`tests/storage_conformance.rs`) runs against both.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use tokio::sync::OwnedMutexGuard;

use crate::job::{now_ms, Job, JobStatus};
use crate::storage::memory::{MemoryScheduleLocks, MemoryWorkers};
use crate::storage::{Bus, ScheduleLocks, StorageError, WorkerStore};

/// Exclusive access to one job; changes become visible to others through [`JobStore::save`].
pub enum JobGuard {
    /// The job itself, locked in memory (saving is a no-op).
    Memory(OwnedMutexGuard<Job>),
    /// A copy of the job plus whatever keeps the lease (e.g. a distributed lock).
    Leased { job: Job, lease: Box<dyn std::any::Any + Send + Sync> },
}

impl std::ops::Deref for JobGuard {
    type Target = Job;
    fn deref(&self) -> &Job {
        match self {
            JobGuard::Memory(g) => g,
            JobGuard::Leased { job, .. } => job,
        }
    }
}

impl std::ops::DerefMut for JobGuard {
    fn deref_mut(&mut self) -> &mut Job {
        match self {
            JobGuard::Memory(g) => &mut *g,
            JobGuard::Leased { job, .. } => job,
        }
    }
}

/// Where jobs live.
pub trait JobStore: Send + Sync + 'static {
    /// Stores a new job. Fails with `Conflict` if the id exists.
    fn insert(&self, job: Job) -> BoxFuture<'_, Result<(), StorageError>>;
    /// Stores a new job and returns it locked, like [`JobStore::insert`] then [`JobStore::lock`]
    /// (a distributed backend does both in one step). Fails with `Conflict` if the id exists.
    fn insert_locked(&self, job: Job) -> BoxFuture<'_, Result<JobGuard, StorageError>> {
        Box::pin(async move {
            let id = job.id.clone();
            self.insert(job).await?;
            self.lock(&id).await?.ok_or_else(|| StorageError::Conflict(format!("job {id} vanished after its insert")))
        })
    }
    /// Locks a job for a read-modify-write (waits while another holder works on it).
    fn lock<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<JobGuard>, StorageError>>;
    /// Makes the guard's changes durable and visible; the lock stays held.
    fn save<'a>(&'a self, guard: &'a JobGuard) -> BoxFuture<'a, Result<(), StorageError>>;
    /// Saves like [`JobStore::save`] and releases the lock: what every read-modify-write ends
    /// with. A distributed backend does both in one step (one round trip instead of two); on
    /// error the guard is dropped, which releases the lock as usual.
    fn commit(&self, guard: JobGuard) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move { self.save(&guard).await })
    }
    /// A snapshot of a job.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Job>, StorageError>>;
    /// Jobs of one client (its identity, [`crate::ClientConfig::id`]), newest first.
    fn list<'a>(
        &'a self,
        client: &'a str,
        limit: usize,
        offset: usize,
    ) -> BoxFuture<'a, Result<Vec<Job>, StorageError>>;
    /// Quarantined jobs of one client (its identity), most recently quarantined first.
    fn list_quarantined<'a>(
        &'a self,
        client: &'a str,
        limit: usize,
        offset: usize,
    ) -> BoxFuture<'a, Result<Vec<Job>, StorageError>>;
    /// Number of jobs per status, for one client (its identity; `None` = every client).
    fn counts<'a>(&'a self, client: Option<&'a str>) -> BoxFuture<'a, Result<BTreeMap<JobStatus, u64>, StorageError>>;
    /// Claims up to `limit` unsettled jobs (see [`is_unsettled`]) with no insert, save or claim
    /// since `cutoff_ms`, oldest first. A claim counts as activity at `now_ms`, so each stale job
    /// goes to one caller per period, across instances. The watcher re-drives what it claims
    /// (crash recovery: an instance died while it held the job).
    fn claim_stale(
        &self,
        cutoff_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<String>, StorageError>>;
}

/// Statuses in which a job's progress depends on something an instance does next (run a
/// handler, place a task, resume after a child): the jobs crash recovery looks at. A job waiting
/// for a human depends on nobody, a terminal one never changes.
pub fn is_unsettled(status: JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Pending
            | JobStatus::Running
            | JobStatus::AwaitingRetry
            | JobStatus::WaitingForWorker
            | JobStatus::WaitingForParallelTasks
            | JobStatus::WaitingForSubJob
    )
}

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

/// Rate-limit windows kept in memory by default (`RATE_LIMIT_MAX_KEYS`).
pub const DEFAULT_RATE_LIMIT_MAX_KEYS: usize = 100_000;

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
            jobs: Arc::new(memory::MemoryJobs::new()),
            quotas: Arc::new(memory::MemoryQuotas::default()),
            rate: Arc::new(memory::MemoryRateLimits::default()),
            nonces: Arc::new(memory::MemoryNonces::default()),
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

    /// In-memory jobs: each job behind its own async lock.
    #[derive(Default)]
    pub struct MemoryJobs {
        jobs: RwLock<HashMap<String, Arc<tokio::sync::Mutex<Job>>>>,
        by_client: Mutex<HashMap<String, Vec<String>>>,
        /// Quarantined jobs per client, in the order they were quarantined.
        quarantined: Mutex<HashMap<String, indexmap::IndexSet<String>>>,
        /// Unsettled jobs -> last insert, save or stale claim (epoch ms).
        activity: Mutex<HashMap<String, u64>>,
        /// Job counts per status, kept as jobs are inserted and saved (so counting never walks
        /// or locks the jobs).
        counts: Mutex<Counts>,
    }

    /// Per-status job counts, overall and per client, and the last saved status of every job.
    #[derive(Default)]
    struct Counts {
        status_of: HashMap<String, JobStatus>,
        all: BTreeMap<JobStatus, u64>,
        by_client: HashMap<String, BTreeMap<JobStatus, u64>>,
    }

    impl Counts {
        fn set(&mut self, id: &str, client: &str, status: JobStatus) {
            let old = self.status_of.insert(id.to_owned(), status);
            if old == Some(status) {
                return;
            }
            let per_client = self.by_client.entry(client.to_owned()).or_default();
            if let Some(old) = old {
                for m in [&mut self.all, &mut *per_client] {
                    if let Some(n) = m.get_mut(&old) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
            *self.all.entry(status).or_insert(0) += 1;
            *per_client.entry(status).or_insert(0) += 1;
        }
    }

    impl MemoryJobs {
        pub fn new() -> Self {
            Self::default()
        }
        fn entry(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<Job>>> {
            self.jobs.read().get(id).cloned()
        }

        /// Snapshots of the jobs `ids` that still exist, in that order.
        fn jobs_of(&self, ids: Vec<String>) -> BoxFuture<'_, Result<Vec<Job>, StorageError>> {
            Box::pin(async move {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(j) = self.get(&id).await? {
                        out.push(j);
                    }
                }
                Ok(out)
            })
        }
    }

    impl JobStore for MemoryJobs {
        fn insert(&self, job: Job) -> BoxFuture<'_, Result<(), StorageError>> {
            let id = job.id.clone();
            let client = job.client.id.clone();
            let status = job.status;
            let res = {
                let mut jobs = self.jobs.write();
                if jobs.contains_key(&id) {
                    Err(StorageError::Conflict(format!("job {id} exists")))
                } else {
                    jobs.insert(id.clone(), Arc::new(tokio::sync::Mutex::new(job)));
                    Ok(())
                }
            };
            if res.is_ok() {
                self.counts.lock().set(&id, &client, status);
                if is_unsettled(status) {
                    self.activity.lock().insert(id.clone(), now_ms());
                }
                self.by_client.lock().entry(client).or_default().push(id);
            }
            Box::pin(async move { res })
        }

        fn lock<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<JobGuard>, StorageError>> {
            let entry = self.entry(id);
            Box::pin(async move {
                match entry {
                    None => Ok(None),
                    Some(m) => Ok(Some(JobGuard::Memory(m.lock_owned().await))),
                }
            })
        }

        fn save<'a>(&'a self, guard: &'a JobGuard) -> BoxFuture<'a, Result<(), StorageError>> {
            // The guard is the job itself; only the indexes need updating.
            self.counts.lock().set(&guard.id, &guard.client.id, guard.status);
            let mut activity = self.activity.lock();
            if is_unsettled(guard.status) {
                activity.insert(guard.id.clone(), now_ms());
            } else {
                activity.remove(&guard.id);
            }
            if guard.status == JobStatus::Quarantined {
                let mut q = self.quarantined.lock();
                q.entry(guard.client.id.clone()).or_default().insert(guard.id.clone());
            }
            Box::pin(async { Ok(()) })
        }

        fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Job>, StorageError>> {
            let entry = self.entry(id);
            Box::pin(async move {
                match entry {
                    None => Ok(None),
                    Some(m) => Ok(Some(m.lock().await.clone())),
                }
            })
        }

        fn list<'a>(
            &'a self,
            client: &'a str,
            limit: usize,
            offset: usize,
        ) -> BoxFuture<'a, Result<Vec<Job>, StorageError>> {
            let ids: Vec<String> = self
                .by_client
                .lock()
                .get(client)
                .map(|v| v.iter().rev().skip(offset).take(limit).cloned().collect())
                .unwrap_or_default();
            self.jobs_of(ids)
        }

        fn list_quarantined<'a>(
            &'a self,
            client: &'a str,
            limit: usize,
            offset: usize,
        ) -> BoxFuture<'a, Result<Vec<Job>, StorageError>> {
            let ids: Vec<String> = self
                .quarantined
                .lock()
                .get(client)
                .map(|q| q.iter().rev().skip(offset).take(limit).cloned().collect())
                .unwrap_or_default();
            self.jobs_of(ids)
        }

        fn counts<'a>(
            &'a self,
            client: Option<&'a str>,
        ) -> BoxFuture<'a, Result<BTreeMap<JobStatus, u64>, StorageError>> {
            let counts = self.counts.lock();
            let mut out = match client {
                None => counts.all.clone(),
                Some(c) => counts.by_client.get(c).cloned().unwrap_or_default(),
            };
            out.retain(|_, n| *n > 0);
            Box::pin(async move { Ok(out) })
        }

        fn claim_stale(
            &self,
            cutoff_ms: u64,
            now_ms: u64,
            limit: usize,
        ) -> BoxFuture<'_, Result<Vec<String>, StorageError>> {
            let mut activity = self.activity.lock();
            let mut stale: Vec<(u64, String)> =
                activity.iter().filter(|(_, t)| **t <= cutoff_ms).map(|(id, t)| (*t, id.clone())).collect();
            stale.sort();
            stale.truncate(limit);
            let ids: Vec<String> = stale.into_iter().map(|(_, id)| id).collect();
            for id in &ids {
                activity.insert(id.clone(), now_ms);
            }
            Box::pin(async move { Ok(ids) })
        }
    }

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

    /// In-memory quotas.
    #[derive(Default)]
    pub struct MemoryQuotas {
        /// token -> (limit, remaining)
        remaining: Mutex<HashMap<String, (u64, u64)>>,
    }

    impl QuotaStore for MemoryQuotas {
        fn init<'a>(&'a self, token: &'a str, limit: u64) -> BoxFuture<'a, Result<(), StorageError>> {
            let mut remaining = self.remaining.lock();
            if remaining.get(token).is_none_or(|(l, _)| *l != limit) {
                remaining.insert(token.to_owned(), (limit, limit));
            }
            Box::pin(async { Ok(()) })
        }
        fn take<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<bool, StorageError>> {
            let ok = match self.remaining.lock().get_mut(token) {
                Some((_, n)) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            };
            Box::pin(async move { Ok(ok) })
        }
    }

    /// In-memory fixed-window rate limits: at most `max_keys` windows (the oldest go first when
    /// a new key arrives at the cap), each forgotten once its period is over.
    pub struct MemoryRateLimits {
        max_keys: usize,
        /// key -> (window start ms, hits, window end ms), and the windows by end time (oldest
        /// first; an entry whose key started a newer window since is skipped).
        windows: Mutex<(HashMap<String, (u64, u32, u64)>, VecDeque<(u64, String)>)>,
    }

    impl Default for MemoryRateLimits {
        fn default() -> Self {
            Self::new(super::DEFAULT_RATE_LIMIT_MAX_KEYS)
        }
    }

    impl MemoryRateLimits {
        /// Keeps at most `max_keys` windows (at least 1).
        pub fn new(max_keys: usize) -> Self {
            MemoryRateLimits { max_keys: max_keys.max(1), windows: Mutex::default() }
        }

        /// Windows currently kept.
        pub fn len(&self) -> usize {
            self.windows.lock().0.len()
        }

        /// Whether no window is kept.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }

    impl RateLimitStore for MemoryRateLimits {
        fn hit<'a>(
            &'a self,
            key: &'a str,
            limit: u32,
            period: Duration,
        ) -> BoxFuture<'a, Result<Result<(), Duration>, StorageError>> {
            let now = now_ms();
            let period_ms = (period.as_millis().max(1)).min(u64::MAX as u128 / 4) as u64;
            let mut guard = self.windows.lock();
            let (map, order) = &mut *guard;
            // Forget ended windows; at the cap, the oldest ones.
            while let Some((end, k)) = order.front() {
                let end = *end;
                if map.get(k).is_none_or(|w| w.2 != end) {
                    order.pop_front(); // that key started a newer window since
                } else if end <= now || (map.len() >= self.max_keys && !map.contains_key(key)) {
                    let (_, k) = order.pop_front().unwrap();
                    map.remove(&k);
                } else {
                    break;
                }
            }
            let w = map.entry(key.to_owned()).or_insert((now, 0, 0));
            if w.1 == 0 || now >= w.2 {
                *w = (now, 0, now.saturating_add(period_ms));
                order.push_back((w.2, key.to_owned()));
            }
            w.1 = w.1.saturating_add(1);
            let res = if w.1 > limit { Err(Duration::from_millis(w.2.saturating_sub(now))) } else { Ok(()) };
            Box::pin(async move { Ok(res) })
        }
    }

    /// In-memory replay nonces.
    #[derive(Default)]
    pub struct MemoryNonces {
        seen: Mutex<(HashMap<String, u64>, VecDeque<(u64, String)>)>,
    }

    impl NonceStore for MemoryNonces {
        fn first_use<'a>(&'a self, nonce: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StorageError>> {
            let now = now_ms();
            let mut guard = self.seen.lock();
            let (map, order) = &mut *guard;
            while let Some((exp, _)) = order.front() {
                if *exp > now {
                    break;
                }
                let (_, n) = order.pop_front().unwrap();
                if map.get(&n).is_some_and(|e| *e <= now) {
                    map.remove(&n);
                }
            }
            let fresh = match map.get(nonce) {
                Some(exp) if *exp > now => false,
                _ => {
                    let exp = now.saturating_add(ttl.as_millis() as u64);
                    map.insert(nonce.to_owned(), exp);
                    order.push_back((exp, nonce.to_owned()));
                    true
                }
            };
            Box::pin(async move { Ok(fresh) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryRateLimits;
    use super::*;

    /// Issue #12 item 2: the rate-limit map is bounded (the oldest windows go at the cap) and
    /// forgets windows whose period ended.
    #[tokio::test]
    async fn memory_rate_limits_are_bounded_and_expire() {
        let rl = MemoryRateLimits::new(10);
        for i in 0..1000 {
            assert!(rl.hit(&format!("k{i}"), 5, Duration::from_secs(60)).await.unwrap().is_ok());
            assert!(rl.len() <= 10, "{} windows after {i} keys", rl.len());
        }
        // The newest keys are still counted: over the limit they are refused.
        for _ in 0..4 {
            assert!(rl.hit("k999", 5, Duration::from_secs(60)).await.unwrap().is_ok());
        }
        assert!(rl.hit("k999", 5, Duration::from_secs(60)).await.unwrap().is_err());
        // Windows of 1 ms are gone once they ended.
        let rl = MemoryRateLimits::new(1000);
        for i in 0..100 {
            rl.hit(&format!("short{i}"), 5, Duration::from_millis(1)).await.unwrap().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        rl.hit("other", 5, Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!(rl.len(), 1, "ended windows are forgotten");
    }
}
