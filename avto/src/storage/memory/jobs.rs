//! Jobs in process memory: each job behind its own async lock, with the indexes (per client,
//! quarantined, per status, activity for crash recovery) kept as jobs are inserted and saved.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};

use crate::job::{now_ms, Job, JobStatus};
use crate::storage::{is_unsettled, JobGuard, JobStore, StorageError};

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

    fn counts<'a>(&'a self, client: Option<&'a str>) -> BoxFuture<'a, Result<BTreeMap<JobStatus, u64>, StorageError>> {
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
