//! Jobs in process memory: each job behind its own async lock, with the indexes (per client,
//! quarantined, per status, activity for crash recovery, terminal jobs in the order they ended
//! for retention) kept as jobs are inserted and saved. Every map and index holds the one
//! allocation of a job's id (`Arc<str>`), and a job at rest (terminal, or waiting for a human) is kept frozen (see
//! [`super::frozen`]).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};

use super::frozen::{frozen_when, Cell, Frozen};
use super::query::{Facts, QueryIndex};
use super::FastMap;
use crate::job::{now_ms, Job, JobStatus};
use crate::storage::{counts_as_activity, is_unsettled, JobGuard, JobPage, JobQuery, JobStore, SavedJob, StorageError};

/// A map keyed by job ids. Job ids are made by the server (UUIDs), never chosen by a client or a
/// worker, so a fast hasher (still seeded at random per process) replaces SipHash here.
type IdMap<V> = FastMap<Arc<str>, V>;

/// A map keyed by client ids (`ClientConfig::id`: the server's configuration names them, a
/// request never does), so at most one entry per configured client: the same fast hasher.
type ClientMap<V> = FastMap<Arc<str>, V>;

/// A job locked in memory.
type JobLock = tokio::sync::OwnedMutexGuard<Job>;

/// In-memory jobs: each job behind its own async lock. Terminal jobs are removed after the
/// retention ([`MemoryJobs::with_retention`]) and, beyond the cap on kept terminal jobs, oldest
/// first, so memory stays bounded however long the process runs.
pub struct MemoryJobs {
    jobs: RwLock<IdMap<Cell>>,
    /// Jobs at rest left live (someone held or waited for them when they came to rest, or
    /// a lock thawed them): [`JobStore::remove_expired`] freezes those left alone since.
    unfrozen: Mutex<Vec<Arc<str>>>,
    /// Every index, under one lock so they always agree with each other.
    index: Mutex<Index>,
    /// How long a terminal job is kept (`None` = forever).
    retention: Option<Duration>,
    /// Most terminal jobs kept at once (`usize::MAX` = no cap).
    max_retained: usize,
}

/// Jobs [`MemoryJobs::freeze_left_live`] encodes between two takes of the map's write lock.
const FREEZE_BATCH: usize = 256;

impl Default for MemoryJobs {
    fn default() -> Self {
        Self::with_retention(None, 0)
    }
}

/// What the store knows of one job besides the job itself.
struct Meta {
    /// Interned: one allocation per client.
    client: Arc<str>,
    created_at_ms: u64,
    /// Interned: one allocation per blueprint name.
    blueprint: Arc<str>,
    /// The last saved status.
    status: JobStatus,
    /// Insertion order (key in `Index::by_client`).
    seq: u64,
    /// Quarantine order (key in `Index::quarantined`), once quarantined.
    quarantined: Option<NonZeroU64>,
    /// Set while the job is terminal: the sequence number of its entry in `Index::ended`.
    ended: Option<NonZeroU64>,
}

#[derive(Default)]
struct Index {
    next_seq: u64,
    meta: IdMap<Meta>,
    /// Jobs per client, in insertion order.
    by_client: ClientMap<BTreeMap<u64, Arc<str>>>,
    /// Quarantined jobs per client, in the order they were quarantined.
    quarantined: ClientMap<BTreeMap<NonZeroU64, Arc<str>>>,
    /// Unsettled jobs -> last insert, save or stale claim (epoch ms).
    activity: IdMap<u64>,
    /// Job counts per status, overall and per client, kept as jobs are inserted, saved and
    /// removed (so counting never walks or locks the jobs).
    all: BTreeMap<JobStatus, u64>,
    counts_by_client: ClientMap<BTreeMap<JobStatus, u64>>,
    /// Terminal jobs in the order they ended: (entry sequence number, ended at ms, id). An entry
    /// is current while the job's `Meta::ended` names it; others (the job was removed or left its
    /// terminal status) are skipped when they reach the front.
    ended: VecDeque<(NonZeroU64, u64, Arc<str>)>,
    /// Current entries of `ended`.
    terminal: usize,
    /// The webhook outbox (see [`JobStore::claim_webhooks`]): job id -> stamp, and the same
    /// entries ordered by stamp.
    outbox: IdMap<u64>,
    outbox_order: BTreeSet<(u64, Arc<str>)>,
    /// The query indexes ([`JobStore::query`]).
    query: QueryIndex,
}

impl Index {
    fn seq(&mut self) -> NonZeroU64 {
        self.next_seq += 1;
        NonZeroU64::new(self.next_seq).expect("counts from 1")
    }

    fn count(&mut self, client: &Arc<str>, status: JobStatus, delta: i64) {
        let per_client = self.counts_by_client.entry(client.clone()).or_default();
        for m in [&mut self.all, per_client] {
            let n = m.entry(status).or_insert(0);
            *n = n.saturating_add_signed(delta);
        }
    }

    fn insert(&mut self, id: &Arc<str>, job: &Job, now: u64) {
        let (status, hook) = (job.status, job.webhook_url.is_some());
        let seq = self.seq().get();
        let (client, blueprint) =
            (self.query.intern_client(&job.client.id), self.query.intern_blueprint(&job.blueprint));
        self.query.insert(id, &client, status, &blueprint, job.created_at_ms);
        let meta = Meta {
            client: client.clone(),
            created_at_ms: job.created_at_ms,
            blueprint,
            status,
            seq,
            quarantined: None,
            ended: None,
        };
        self.meta.insert(id.clone(), meta);
        self.by_client.entry(client.clone()).or_default().insert(seq, id.clone());
        self.count(&client, status, 1);
        if hook && status.is_terminal() {
            self.stamp_webhook(id, now);
        }
        self.update(id, status, false, now);
    }

    /// Records the saved status of `id` (nothing for a job removed meanwhile: a holder that
    /// saves a job retention removed does not bring it back). `hook`: the job has a webhook, so
    /// becoming terminal puts it in the outbox.
    fn update(&mut self, id: &str, status: JobStatus, hook: bool, now: u64) {
        let Some((id, meta)) = self.meta.get_key_value(id) else { return };
        let (id, client, old, was_ended, was_quarantined) =
            (id.clone(), meta.client.clone(), meta.status, meta.ended, meta.quarantined.is_some());
        if old != status {
            let created = meta.created_at_ms;
            self.query.status(&id, &client, created, old, status);
            self.count(&client, old, -1);
            self.count(&client, status, 1);
            if hook && status.is_terminal() {
                self.stamp_webhook(&id, now);
            }
        }
        if is_unsettled(status) {
            match self.activity.get_mut(&id) {
                Some(at) if counts_as_activity(old, status) => *at = now,
                Some(_) => {}
                None => {
                    self.activity.insert(id.clone(), now);
                }
            }
        } else {
            self.activity.remove(&id);
        }
        let quarantine_seq = (status == JobStatus::Quarantined && !was_quarantined).then(|| self.seq());
        if let Some(q) = quarantine_seq {
            self.quarantined.entry(client.clone()).or_default().insert(q, id.clone());
        }
        let ended = match (status.is_terminal(), was_ended) {
            (true, None) => {
                let seq = self.seq();
                self.ended.push_back((seq, now, id.clone()));
                self.terminal += 1;
                Some(seq)
            }
            (true, Some(seq)) => Some(seq),
            (false, Some(_)) => {
                self.terminal -= 1;
                None
            }
            (false, None) => None,
        };
        let meta = self.meta.get_mut(&id).expect("looked up above");
        meta.status = status;
        meta.ended = ended;
        if quarantine_seq.is_some() {
            meta.quarantined = quarantine_seq;
        }
    }

    /// Forgets `id` in every index.
    fn remove(&mut self, id: &str) {
        let Some((id, meta)) = self.meta.remove_entry(id) else { return };
        self.query.remove(&id, &meta.client, meta.status, &meta.blueprint, meta.created_at_ms);
        self.count(&meta.client, meta.status, -1);
        if self.counts_by_client.get(&meta.client).is_some_and(|m| m.values().all(|n| *n == 0)) {
            self.counts_by_client.remove(&meta.client);
        }
        remove_entry(&mut self.by_client, &meta.client, meta.seq);
        if let Some(q) = meta.quarantined {
            remove_entry(&mut self.quarantined, &meta.client, q);
        }
        self.activity.remove(&id);
        if meta.ended.is_some() {
            self.terminal -= 1;
        }
        // A sender still working on its webhook has the job already; only a later redelivery
        // would need it.
        if self.unstamp_webhook(&id) {
            tracing::debug!(job_id = &*id, "job removed (retention) while its webhook was in the outbox");
        }
    }

    /// Puts `id` in the outbox stamped `at` (or moves its stamp there).
    fn stamp_webhook(&mut self, id: &Arc<str>, at: u64) {
        if let Some(old) = self.outbox.insert(id.clone(), at) {
            self.outbox_order.remove(&(old, id.clone()));
        }
        self.outbox_order.insert((at, id.clone()));
    }

    /// Takes `id` out of the outbox; whether it was there.
    fn unstamp_webhook(&mut self, id: &str) -> bool {
        match self.outbox.remove_entry(id) {
            Some((id, at)) => self.outbox_order.remove(&(at, id)),
            None => false,
        }
    }

    /// Removes terminal jobs from the front of `ended` while `remove_front` says so for the
    /// oldest (its ended time); returns the removed ids.
    fn drain_ended(&mut self, limit: usize, mut remove_front: impl FnMut(&Self, u64) -> bool) -> Vec<Arc<str>> {
        let mut removed = Vec::new();
        while removed.len() < limit {
            let Some((seq, at, id)) = self.ended.front() else { break };
            let current = self.meta.get(id).is_some_and(|m| m.ended == Some(*seq));
            if current && !remove_front(self, *at) {
                break;
            }
            let (_, _, id) = self.ended.pop_front().expect("front exists");
            if current {
                self.remove(&id);
                removed.push(id);
            }
        }
        removed
    }
}

/// Removes `seq` from `client`'s ordered list, and the list once empty.
fn remove_entry<K: Ord>(lists: &mut ClientMap<BTreeMap<K, Arc<str>>>, client: &str, seq: K) {
    if let Some(list) = lists.get_mut(client) {
        list.remove(&seq);
        if list.is_empty() {
            lists.remove(client);
        }
    }
}

impl Index {
    /// What a query needs to know of job `id`.
    fn facts(&self, id: &str) -> Option<Facts<'_>> {
        self.meta.get(id).map(|m| Facts {
            client: &m.client,
            status: m.status,
            blueprint: &m.blueprint,
            created_at_ms: m.created_at_ms,
        })
    }
}

impl MemoryJobs {
    /// Jobs kept forever.
    pub fn new() -> Self {
        Self::default()
    }

    /// Terminal jobs are removed `retention` after they ended (by
    /// [`JobStore::remove_expired`]; `None` = never) and, whenever more than `max_retained`
    /// (0 = no cap) are kept, the oldest terminal ones at once. Jobs that are not terminal are
    /// never removed.
    pub fn with_retention(retention: Option<Duration>, max_retained: usize) -> Self {
        MemoryJobs {
            jobs: RwLock::default(),
            unfrozen: Mutex::default(),
            index: Mutex::default(),
            retention,
            max_retained: if max_retained == 0 { usize::MAX } else { max_retained },
        }
    }

    /// The lock of job `id`, thawing the job if it is frozen.
    fn entry(&self, id: &str) -> Result<Option<Arc<tokio::sync::Mutex<Job>>>, StorageError> {
        if let Some(Cell::Live(m)) = self.jobs.read().get(id) {
            return Ok(Some(m.clone()));
        }
        let mut jobs = self.jobs.write();
        let Some((key, _)) = jobs.get_key_value(id) else { return Ok(None) };
        let key = key.clone();
        let cell = jobs.get_mut(id).expect("looked up above");
        if let Cell::Frozen(f) = cell {
            let job = f.decode(id)?;
            *cell = Cell::live(job);
            self.unfrozen.lock().push(key);
        }
        match cell {
            Cell::Live(m) => Ok(Some(m.clone())),
            Cell::Frozen(_) => unreachable!("thawed above"),
        }
    }

    /// Freezes the job of `guard`, just committed at rest (see [`frozen_when`]), unless someone else holds or waits
    /// for it (then the next [`JobStore::remove_expired`] tries again). Gives the guard back: `Ok` when the job was
    /// frozen (no one else can reach the live one any more), `Err` when it was not.
    fn freeze(&self, mut guard: JobLock) -> Result<JobLock, JobLock> {
        let lock = tokio::sync::OwnedMutexGuard::mutex(&guard).clone();
        // The entry's reference, the guard's, and `lock`: anyone else's means they wait for it.
        let alone = |m: &Arc<tokio::sync::Mutex<Job>>| Arc::ptr_eq(m, &lock) && Arc::strong_count(m) == 3;
        let id = guard.id.clone();
        if !self.jobs.read().get(id.as_str()).is_some_and(|c| matches!(c, Cell::Live(m) if alone(m))) {
            self.left_live(&id);
            return Err(guard);
        }
        let Ok(frozen) = Frozen::new(&mut guard) else {
            self.left_live(&id);
            return Err(guard);
        };
        let mut jobs = self.jobs.write();
        match jobs.get_mut(id.as_str()) {
            Some(cell) if matches!(&*cell, Cell::Live(m) if alone(m)) => {
                *cell = Cell::Frozen(frozen);
                Ok(guard)
            }
            Some(_) => {
                drop(jobs);
                self.left_live(&id);
                Err(guard)
            }
            // Removed meanwhile (retention): nothing to keep.
            None => Err(guard),
        }
    }

    /// Remembers that job `id` is still live.
    fn left_live(&self, id: &str) {
        if let Some((key, _)) = self.jobs.read().get_key_value(id) {
            self.unfrozen.lock().push(key.clone());
        }
    }

    /// Freezes the jobs at rest left live that nobody holds or waits for any more; keeps the
    /// others for the next pass. Each job is encoded under its own lock only; the map's write
    /// lock is taken per batch just to swap the cells, so a pass over many jobs never stalls
    /// the store.
    fn freeze_left_live(&self) {
        let mut ids = std::mem::take(&mut *self.unfrozen.lock());
        if ids.is_empty() {
            return;
        }
        ids.sort_unstable();
        ids.dedup();
        let mut busy = Vec::new();
        for batch in ids.chunks(FREEZE_BATCH) {
            // The candidates: live, and nobody else holds a reference (held or waited for).
            let candidates: Vec<(Arc<str>, Arc<tokio::sync::Mutex<Job>>)> = {
                let jobs = self.jobs.read();
                batch
                    .iter()
                    .filter_map(|id| match jobs.get(id) {
                        Some(Cell::Live(m)) if Arc::strong_count(m) > 1 => {
                            busy.push(id.clone());
                            None
                        }
                        Some(Cell::Live(m)) => Some((id.clone(), m.clone())),
                        _ => None,
                    })
                    .collect()
            };
            // Encoded under the job's own lock, held until the swap: the job cannot change between.
            let mut encoded = Vec::with_capacity(candidates.len());
            for (id, m) in candidates {
                let Ok(mut job) = m.clone().try_lock_owned() else {
                    busy.push(id);
                    continue;
                };
                if !frozen_when(job.status) {
                    continue;
                }
                match Frozen::new(&mut job) {
                    Ok(frozen) => encoded.push((id, m, job, frozen)),
                    Err(e) => tracing::warn!(job_id = &*id, error = %e, "a job at rest stays live"),
                }
            }
            if encoded.is_empty() {
                continue;
            }
            let mut jobs = self.jobs.write();
            for (id, m, guard, frozen) in encoded {
                match jobs.get_mut(&id) {
                    // The entry's reference, ours and the guard's: anyone else's means they wait.
                    Some(cell) if matches!(&*cell, Cell::Live(c) if Arc::ptr_eq(c, &m) && Arc::strong_count(c) == 3) => {
                        *cell = Cell::Frozen(frozen);
                    }
                    Some(_) => busy.push(id),
                    // Removed meanwhile (retention): nothing to keep.
                    None => {}
                }
                drop(guard);
            }
        }
        self.unfrozen.lock().extend(busy);
    }

    /// What [`JobStore::save`] does: the guard is the job itself, so only the indexes need
    /// updating.
    fn saved(&self, job: &Job) {
        let removed = {
            let mut index = self.index.lock();
            index.update(&job.id, job.status, job.webhook_url.is_some(), now_ms());
            self.enforce_cap(&mut index)
        };
        self.drop_jobs(removed);
    }

    /// Drops the removed jobs themselves (their indexes are already gone).
    fn drop_jobs(&self, ids: Vec<Arc<str>>) {
        if !ids.is_empty() {
            let mut jobs = self.jobs.write();
            for id in ids {
                jobs.remove(&id);
            }
        }
    }

    /// Removes the oldest terminal jobs beyond the cap, right after a job was stored.
    fn enforce_cap(&self, index: &mut Index) -> Vec<Arc<str>> {
        let max = self.max_retained;
        index.drain_ended(usize::MAX, |ix, _| ix.terminal > max)
    }

    /// Snapshots of the jobs `ids` that still exist, in that order.
    fn jobs_of(&self, ids: Vec<Arc<str>>) -> BoxFuture<'_, Result<Vec<Job>, StorageError>> {
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
    fn insert(&self, mut job: Job) -> BoxFuture<'_, Result<(), StorageError>> {
        let id: Arc<str> = Arc::from(job.id.as_str());
        // A job stored at rest is frozen at once (nobody can hold it yet).
        let frozen = if frozen_when(job.status) { Frozen::new(&mut job).ok() } else { None };
        // The index is written before the job is visible, under the jobs' write lock, so a query
        // never finds an id whose job is missing (nor a job it does not index).
        let res = {
            let mut jobs = self.jobs.write();
            match jobs.entry(id) {
                Entry::Occupied(e) => Err(StorageError::Conflict(format!("job {} exists", e.key()))),
                Entry::Vacant(slot) => {
                    let removed = {
                        let mut index = self.index.lock();
                        index.insert(slot.key(), &job, now_ms());
                        self.enforce_cap(&mut index)
                    };
                    slot.insert(frozen.map_or_else(|| Cell::live(job), Cell::Frozen));
                    Ok(removed)
                }
            }
        };
        let res = res.map(|removed| self.drop_jobs(removed));
        Box::pin(async move { res })
    }

    fn lock<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<JobGuard>, StorageError>> {
        let entry = self.entry(id);
        Box::pin(async move {
            match entry? {
                None => Ok(None),
                Some(m) => Ok(Some(JobGuard::Memory(m.lock_owned().await))),
            }
        })
    }

    fn save<'a>(&'a self, guard: &'a JobGuard) -> BoxFuture<'a, Result<(), StorageError>> {
        self.saved(guard);
        Box::pin(async { Ok(()) })
    }

    fn commit(&self, guard: JobGuard) -> BoxFuture<'_, Result<(), StorageError>> {
        self.saved(&guard);
        if let JobGuard::Memory(g) = guard {
            if frozen_when(g.status) {
                let _ = self.freeze(g);
            }
        }
        Box::pin(async { Ok(()) })
    }

    /// A job just frozen is handed back itself (no one else can reach it), any other as a copy.
    fn commit_keeping(&self, guard: JobGuard) -> BoxFuture<'_, Result<SavedJob, StorageError>> {
        self.saved(&guard);
        let saved = match guard {
            JobGuard::Memory(g) if frozen_when(g.status) => match self.freeze(g) {
                Ok(g) => SavedJob::kept(g),
                Err(g) => SavedJob::copy(&g),
            },
            other => SavedJob::copy(&other),
        };
        Box::pin(async { Ok(saved) })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Job>, StorageError>> {
        let found = match self.jobs.read().get(id) {
            None => Ok(None),
            Some(Cell::Live(m)) => Err(m.clone()),
            Some(Cell::Frozen(f)) => Ok(Some(f.decode(id))),
        };
        Box::pin(async move {
            match found {
                Ok(frozen) => frozen.transpose(),
                Err(m) => Ok(Some(m.lock().await.clone())),
            }
        })
    }

    fn list<'a>(
        &'a self,
        client: &'a str,
        limit: usize,
        offset: usize,
    ) -> BoxFuture<'a, Result<Vec<Job>, StorageError>> {
        let ids = newest_first(&self.index.lock().by_client, client, limit, offset);
        self.jobs_of(ids)
    }

    fn query<'a>(&'a self, query: &'a JobQuery) -> BoxFuture<'a, Result<JobPage, StorageError>> {
        Box::pin(async move {
            let q = query.checked()?;
            let (ids, next) = {
                let index = self.index.lock();
                index.query.page(&q, |id| index.facts(id))
            };
            // A job removed between the index read and now is left out; a job whose status
            // changed since is answered as it is now.
            let jobs = self.jobs_of(ids).await?;
            Ok(JobPage { jobs, next })
        })
    }

    fn count<'a>(&'a self, query: &'a JobQuery) -> BoxFuture<'a, Result<u64, StorageError>> {
        let counted = query.checked().map(|q| {
            let index = self.index.lock();
            if q.by_status_only() {
                // The counts per status decide it.
                let counts = match q.client {
                    None => Some(&index.all),
                    Some(c) => index.counts_by_client.get(c),
                };
                return q.statuses.iter().map(|s| counts.and_then(|m| m.get(s)).copied().unwrap_or(0)).sum();
            }
            index.query.count(&q, |id| index.facts(id))
        });
        Box::pin(async move { counted })
    }

    fn list_quarantined<'a>(
        &'a self,
        client: &'a str,
        limit: usize,
        offset: usize,
    ) -> BoxFuture<'a, Result<Vec<Job>, StorageError>> {
        let ids = newest_first(&self.index.lock().quarantined, client, limit, offset);
        self.jobs_of(ids)
    }

    fn counts<'a>(&'a self, client: Option<&'a str>) -> BoxFuture<'a, Result<BTreeMap<JobStatus, u64>, StorageError>> {
        let index = self.index.lock();
        let mut out = match client {
            None => index.all.clone(),
            Some(c) => index.counts_by_client.get(c).cloned().unwrap_or_default(),
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
        let mut index = self.index.lock();
        let mut stale: Vec<(u64, Arc<str>)> =
            index.activity.iter().filter(|(_, t)| **t <= cutoff_ms).map(|(id, t)| (*t, id.clone())).collect();
        stale.sort();
        stale.truncate(limit);
        let ids: Vec<String> = stale.into_iter().map(|(_, id)| id.to_string()).collect();
        for id in &ids {
            if let Some(at) = index.activity.get_mut(id.as_str()) {
                *at = now_ms;
            }
        }
        Box::pin(async move { Ok(ids) })
    }

    fn remove_expired(&self, now_ms: u64, limit: usize) -> BoxFuture<'_, Result<usize, StorageError>> {
        let removed = match self.retention {
            None => Vec::new(),
            Some(retention) => {
                let retention = retention.as_millis().min(u64::MAX as u128) as u64;
                self.index.lock().drain_ended(limit, |_, ended| ended.saturating_add(retention) <= now_ms)
            }
        };
        let n = removed.len();
        self.drop_jobs(removed);
        self.freeze_left_live();
        Box::pin(async move { Ok(n) })
    }

    fn claim_webhooks(
        &self,
        cutoff_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Job>, StorageError>> {
        let ids: Vec<Arc<str>> = {
            let mut index = self.index.lock();
            let due: Vec<Arc<str>> = index
                .outbox_order
                .iter()
                .take_while(|(at, _)| *at <= cutoff_ms)
                .take(limit)
                .map(|(_, id)| id.clone())
                .collect();
            for id in &due {
                index.stamp_webhook(id, now_ms);
            }
            due
        };
        self.jobs_of(ids)
    }

    fn touch_webhook<'a>(&'a self, id: &'a str, now_ms: u64) -> BoxFuture<'a, Result<(), StorageError>> {
        let mut index = self.index.lock();
        if let Some((id, _)) = index.outbox.get_key_value(id) {
            let id = id.clone();
            index.stamp_webhook(&id, now_ms);
        }
        Box::pin(async { Ok(()) })
    }

    fn webhooks_done<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), StorageError>> {
        let mut index = self.index.lock();
        for id in ids {
            index.unstamp_webhook(id);
        }
        Box::pin(async { Ok(()) })
    }
}

/// A page of one client's ids from a per-client list (keyed by insertion order), newest first.
fn newest_first<K>(
    lists: &ClientMap<BTreeMap<K, Arc<str>>>,
    client: &str,
    limit: usize,
    offset: usize,
) -> Vec<Arc<str>> {
    lists.get(client).map(|l| l.values().rev().skip(offset).take(limit).cloned().collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn frozen(store: &MemoryJobs, id: &str) -> bool {
        matches!(store.jobs.read().get(id), Some(Cell::Frozen(_)))
    }

    #[tokio::test]
    async fn a_job_somebody_waited_for_at_rest_is_frozen_by_the_next_pass_unchanged() {
        let store = MemoryJobs::default();
        for i in 0..(FREEZE_BATCH + 3) {
            store.insert(Job::new(format!("job-{i}"), "bp", "start", json!({"i": i}))).await.unwrap();
        }
        let mut expected = Vec::new();
        for i in 0..(FREEZE_BATCH + 3) {
            let id = format!("job-{i}");
            let mut guard = store.lock(&id).await.unwrap().unwrap();
            // Somebody else already waits for the job when it comes to rest: it stays live.
            let waiter = store.entry(&id).unwrap().unwrap();
            let JobGuard::Memory(job) = &mut guard else { unreachable!("the memory store's guard") };
            job.status = JobStatus::Finished;
            job.result = Some(json!({"done": i}));
            expected.push((**job).clone());
            store.commit(guard).await.unwrap();
            assert!(!frozen(&store, &id), "held by another when it came to rest");
            drop(waiter);
        }
        // One job is held during the pass: it stays live for the pass after.
        let held = store.lock("job-1").await.unwrap().unwrap();
        store.remove_expired(now_ms(), 10).await.unwrap();
        for job in &expected {
            assert_eq!(frozen(&store, &job.id), job.id != "job-1", "{}", job.id);
            if job.id != "job-1" {
                assert_eq!(store.get(&job.id).await.unwrap().as_ref(), Some(job), "read back as committed");
            }
        }
        assert_eq!(&*held, &expected[1]);
        drop(held);
        store.remove_expired(now_ms(), 10).await.unwrap();
        assert!(frozen(&store, "job-1"), "frozen once nobody holds it");
        assert!(store.unfrozen.lock().is_empty());
        // Locking thaws it; the job is the same.
        let guard = store.lock("job-1").await.unwrap().unwrap();
        assert!(!frozen(&store, "job-1"));
        assert_eq!(&*guard, &expected[1]);
    }

    #[tokio::test]
    async fn commit_keeping_hands_back_the_job_as_saved_frozen_or_live() {
        let store = MemoryJobs::default();
        for id in ["alone", "awaited"] {
            store.insert(Job::new(id, "bp", "start", json!({"in": id}))).await.unwrap();
            let mut guard = store.lock(id).await.unwrap().unwrap();
            let waiter = (id == "awaited").then(|| store.entry(id).unwrap().unwrap());
            guard.status = JobStatus::Finished;
            guard.result = Some(json!({"done": id}));
            let expected = Job::clone(&guard);
            let saved = store.commit_keeping(guard).await.unwrap();
            assert_eq!(&*saved, &expected);
            assert_eq!(frozen(&store, id), waiter.is_none(), "{id}");
            assert_eq!(store.get(id).await.unwrap().as_ref(), Some(&expected), "{id}: read back as committed");
        }
    }
}
