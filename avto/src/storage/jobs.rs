//! Where jobs live: [`JobStore`], the exclusive access it hands out ([`JobGuard`]), and which
//! jobs crash recovery looks at ([`is_unsettled`]).

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use tokio::sync::OwnedMutexGuard;

use super::{JobPage, JobQuery, QueuedTask, StorageError, StorageFuture};
use crate::job::{Job, JobStatus};

/// What [`JobStore::lock_finishing`] did.
#[non_exhaustive]
pub enum Finishing {
    /// The job, locked for the caller.
    Locked(JobGuard),
    /// No such job.
    NoJob,
    /// The nonce was used before: nothing was done.
    Replayed,
}

/// The job of a task taken off a queue by [`JobStore::pop_locked`].
#[non_exhaustive]
pub enum PoppedJob {
    /// Locked for the caller.
    Locked(JobGuard),
    /// Another holder works on the job: lock it the usual way ([`JobStore::lock`]).
    Busy,
    /// No such job (any more).
    Missing,
}

/// Exclusive access to one job; changes become visible to others through [`JobStore::save`].
#[non_exhaustive]
pub enum JobGuard {
    /// The job itself, locked in memory (saving is a no-op).
    Memory(OwnedMutexGuard<Job>),
    /// A copy of the job plus whatever keeps the lease (e.g. a distributed lock). Boxed, so
    /// that a guard (and every future holding one across an `.await`) stays a few words.
    Leased { job: Box<Job>, lease: Box<dyn std::any::Any + Send + Sync> },
}

/// A job as [`JobStore::commit_keeping`] saved it, for what happens after the save: a copy, or
/// the job itself when the store no longer shares it with anyone.
pub struct SavedJob(Saved);

enum Saved {
    Owned(Box<Job>),
    Kept(OwnedMutexGuard<Job>),
}

impl SavedJob {
    /// A copy of `job`.
    pub fn copy(job: &Job) -> Self {
        SavedJob(Saved::Owned(Box::new(job.clone())))
    }
    /// The job itself, taken out of a guard whose job was written as it is (nothing of it is
    /// shared).
    #[cfg(feature = "redis")]
    pub(crate) fn owned(job: Box<Job>) -> Self {
        SavedJob(Saved::Owned(job))
    }
    /// The job itself: only for a guard on a job no one else can reach any more.
    pub(crate) fn kept(guard: OwnedMutexGuard<Job>) -> Self {
        SavedJob(Saved::Kept(guard))
    }
}

impl std::ops::Deref for SavedJob {
    type Target = Job;
    fn deref(&self) -> &Job {
        match &self.0 {
            Saved::Owned(job) => job,
            Saved::Kept(guard) => guard,
        }
    }
}

impl JobGuard {
    /// Takes over the lock of `stored` (a guard on the same job as stored, from
    /// [`JobStore::insert_locked`]), keeping this guard's version of the job: what a guard from
    /// [`JobStore::unsaved`] becomes once its job had to be stored before its commit. Guards of
    /// different kinds (no store hands out both) are left as they are: the commit then fails as
    /// the insert of a job that exists.
    pub(crate) fn adopt(&mut self, stored: JobGuard) {
        match (self, stored) {
            (JobGuard::Leased { lease, .. }, JobGuard::Leased { lease: theirs, .. }) => *lease = theirs,
            _ => debug_assert!(false, "a guard takes over the lock of a guard of its own kind"),
        }
    }
}

impl std::ops::Deref for JobGuard {
    type Target = Job;
    fn deref(&self) -> &Job {
        match self {
            JobGuard::Memory(guard) => guard,
            JobGuard::Leased { job, .. } => job,
        }
    }
}

impl std::ops::DerefMut for JobGuard {
    fn deref_mut(&mut self) -> &mut Job {
        match self {
            JobGuard::Memory(guard) => &mut *guard,
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
    /// A guard on a new job that is not stored yet, or the job back (the default: this store
    /// cannot, and the caller takes [`JobStore::insert_locked`]). The guard's first commit
    /// ([`JobStore::commit`], [`JobStore::commit_keeping`], [`JobStore::commit_queueing`])
    /// inserts the job as it is then, with its tasks, in one step: a job whose first handler
    /// runs at once is written once instead of twice. Until then nobody else can see the job, and
    /// [`JobStore::save`] fails. Should the job have to be stored before its commit (before
    /// something outside the job names it), the caller stores its first version with
    /// [`JobStore::insert_locked`] and the guard takes over that lock.
    fn unsaved(&self, job: Box<Job>) -> Result<JobGuard, Box<Job>> {
        Err(job)
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
    /// Commits each guard like [`JobStore::commit`], in one step where the store can (the
    /// pick-ups of a poll's batch): an answer per guard, in order. The default commits them one
    /// after the other.
    fn commit_all(&self, guards: Vec<JobGuard>) -> StorageFuture<'_, Vec<Result<(), StorageError>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(guards.len());
            for guard in guards {
                out.push(self.commit(guard).await);
            }
            Ok(out)
        })
    }
    /// Commits like [`JobStore::commit`] and hands back the job as it was saved (the default: a
    /// copy taken before).
    fn commit_keeping(&self, guard: JobGuard) -> BoxFuture<'_, Result<SavedJob, StorageError>> {
        Box::pin(async move {
            let saved = SavedJob::copy(&guard);
            self.commit(guard).await?;
            Ok(saved)
        })
    }
    /// Combined steps of a store that shares its backend with the [`WorkerStore`](super::WorkerStore)
    /// (one round trip instead of two or more; `None`, the default: this store cannot, and the
    /// caller takes the separate steps).
    ///
    /// Locks job `id` like [`JobStore::lock`] and, once it holds the lock, forgets the running
    /// task `task_id` of `worker_id` like [`WorkerStore::finished`](super::WorkerStore::finished)
    /// in the same step (also when the job does not exist): what applying a result begins with.
    /// With `nonce` (key, TTL) it first records the message's replay nonce like
    /// [`NonceStore::first_use`](super::NonceStore::first_use), and does nothing else when the
    /// nonce was used before ([`Finishing::Replayed`]).
    fn lock_finishing<'a>(
        &'a self,
        _id: &'a str,
        _worker_id: &'a str,
        _task_id: &'a str,
        _nonce: Option<(&'a str, std::time::Duration)>,
    ) -> Option<StorageFuture<'a, Finishing>> {
        None
    }
    /// Takes up to `max` tasks off `worker_id`'s queue like [`WorkerStore::pop`](super::WorkerStore::pop)
    /// (recording each as running) and, in the same step, locks the job of each that no one else
    /// holds. `None`, the default: this store cannot (see [`JobStore::lock_finishing`]).
    fn pop_locked<'a>(
        &'a self,
        _worker_id: &'a str,
        _now_ms: u64,
        _max: usize,
    ) -> Option<StorageFuture<'a, Vec<(QueuedTask, PoppedJob)>>> {
        None
    }
    /// Whether [`JobStore::commit_queueing`] queues tasks in the commit's own step (a store that
    /// shares its backend with the [`WorkerStore`](super::WorkerStore)). The default: no, tasks
    /// are queued on the worker store while the job is locked.
    fn commits_queueing(&self) -> bool {
        false
    }
    /// Commits like [`JobStore::commit`] and, in the same step and only if the commit succeeds,
    /// queues each task on its worker like [`WorkerStore::enqueue`](super::WorkerStore::enqueue)
    /// (stamping its arrival order and waking the worker's long-polls on every instance).
    /// Answers, per task, whether it was queued (false: its worker is gone, and the job names a
    /// worker that does not hold the task: the caller places it again). Called only when
    /// [`JobStore::commits_queueing`]; the default commits and queues none.
    fn commit_queueing(&self, guard: JobGuard, tasks: Vec<(String, QueuedTask)>) -> StorageFuture<'_, Vec<bool>> {
        Box::pin(async move {
            self.commit(guard).await?;
            Ok(vec![false; tasks.len()])
        })
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
    /// One page of the jobs matching `query`, newest first by `(created_at_ms, id)`: see
    /// [`crate::storage::JobQuery`] for the filters and the paging guarantees. Fails with
    /// [`StorageError::Invalid`] for a query out of bounds ([`JobQuery::checked`]).
    fn query<'a>(&'a self, query: &'a JobQuery) -> BoxFuture<'a, Result<JobPage, StorageError>>;
    /// How many jobs match `query` (its `after` and `limit` are ignored): exact when one index
    /// decides it, otherwise counted over a bounded walk and estimated beyond it (see
    /// [`crate::storage::JobQuery`], "Counting").
    fn count<'a>(&'a self, query: &'a JobQuery) -> BoxFuture<'a, Result<u64, StorageError>>;
    /// Quarantined jobs of one client (its identity), most recently quarantined first.
    fn list_quarantined<'a>(
        &'a self,
        client: &'a str,
        limit: usize,
        offset: usize,
    ) -> BoxFuture<'a, Result<Vec<Job>, StorageError>>;
    /// Number of jobs per status, for one client (its identity; `None` = every client).
    fn counts<'a>(&'a self, client: Option<&'a str>) -> BoxFuture<'a, Result<BTreeMap<JobStatus, u64>, StorageError>>;
    /// Claims up to `limit` unsettled jobs (see [`is_unsettled`]) with no insert, save (see
    /// [`counts_as_activity`]) or claim since `cutoff_ms`, oldest first. A claim counts as
    /// activity at `now_ms`, so each stale job goes to one caller per period, across instances.
    /// The watcher re-drives what it claims (crash recovery: an instance died while it held the
    /// job).
    fn claim_stale(
        &self,
        cutoff_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<String>, StorageError>>;
    /// Removes up to `limit` terminal jobs whose retention (`JOB_RETENTION_SECONDS`, a setting of
    /// the store) ended by `now_ms`, oldest first, together with their index entries and counts;
    /// returns how many it removed. The watcher calls it every pass. Safe to run on several
    /// instances at once (each job is removed once); a store without retention removes nothing.
    fn remove_expired(&self, now_ms: u64, limit: usize) -> BoxFuture<'_, Result<usize, StorageError>>;

    /// The webhook outbox. A job that becomes terminal with a `webhook_url` gets an entry in the
    /// same write that stores its terminal state, stamped with the time of that write (so the
    /// instance that wrote it holds the first claim). Claims up to `limit` entries stamped at or
    /// before `cutoff_ms`, oldest first, stamps them `now_ms` (each goes to one caller per
    /// period, across instances) and returns their jobs; an entry whose job is gone is dropped.
    /// The sender calls [`JobStore::touch_webhook`] while it works on one and
    /// [`JobStore::webhooks_done`] when it is delivered or given up, so an entry claimable again
    /// means its sender died (or stalled). A store without an outbox (the default) returns
    /// nothing: its webhooks live only in the sender's memory.
    fn claim_webhooks(
        &self,
        _cutoff_ms: u64,
        _now_ms: u64,
        _limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Job>, StorageError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// Stamps the outbox entry of job `id` `now_ms` (its sender still works on it).
    fn touch_webhook<'a>(&'a self, _id: &'a str, _now_ms: u64) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async { Ok(()) })
    }
    /// Removes the outbox entries of jobs `ids` (delivered, or given up).
    fn webhooks_done<'a>(&'a self, _ids: &'a [String]) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async { Ok(()) })
    }
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

/// Whether saving a job that was in `old` as `new` counts as activity for crash recovery
/// ([`JobStore::claim_stale`]): every save of an unsettled job does but one that leaves it
/// waiting for its tasks as it was (a pick-up, one of several results): recovering such a job
/// only places again the tasks no queue holds, so its last status change (or claim) is the time
/// that matters, and the pick-up of every task costs the index no write.
pub fn counts_as_activity(old: JobStatus, new: JobStatus) -> bool {
    is_unsettled(new)
        && (old != new || !matches!(new, JobStatus::WaitingForWorker | JobStatus::WaitingForParallelTasks))
}

#[cfg(test)]
mod tests {
    /// A guard is held across `.await`s by most units of work, inside futures axum copies
    /// whole when it boxes a handler's: it stays a few words (the job itself is boxed or shared).
    #[test]
    fn a_job_guard_is_a_few_words() {
        let size = std::mem::size_of::<super::JobGuard>();
        assert!(size <= 4 * std::mem::size_of::<usize>(), "JobGuard is {size} bytes");
    }
}
