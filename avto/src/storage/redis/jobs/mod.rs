//! Jobs in Redis: one JSON document per job, a leased lock per job, the query indexes (whose
//! sizes are the counts), the stale index crash recovery reads, the retention index
//! (`{p}jobs:expiry`, when each terminal job goes, with `{p}jobs:expiry:client`, whose job it is)
//! and the webhook outbox (`{p}webhooks:due`: jobs whose job-end webhook is not delivered yet,
//! scored by the last claim).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;

mod renew;
mod scripts;

use self::renew::Renewer;
use self::scripts::{CLAIM_STALE, CLAIM_WEBHOOKS, COMMIT, COMMIT_ALL, INSERT, RELEASE, REMOVE_EXPIRED, SAVE};
pub(super) use self::scripts::{INSERT_FN, RETAIN, WRITE};
use super::query::{count_jobs, query_page, COUNTS};
use super::{from_json, reply, to_json, LuaScript, RedisConn};
use crate::job::{now_ms, Job, JobStatus};
use crate::storage::{
    is_unsettled, Finishing, JobGuard, JobStore, PoppedJob, QueuedTask, SavedJob, StorageError, StorageFuture,
};

/// `"1"` for a terminal status (an argument of the scripts).
fn terminal_flag(status: JobStatus) -> &'static str {
    if status.is_terminal() {
        "1"
    } else {
        "0"
    }
}

/// `"1"` for a job with a webhook (an argument of the scripts).
fn hook_flag(job: &Job) -> &'static str {
    if job.webhook_url.is_some() {
        "1"
    } else {
        "0"
    }
}

/// A fresh lock token.
pub(super) fn new_token() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4().simple().encode_lower(&mut buf).to_owned()
}

/// Jobs in Redis.
#[derive(Debug, Clone)]
pub struct RedisJobs {
    pub(super) conn: RedisConn,
    lease: Duration,
    /// How long a terminal job is kept, in ms (0 = forever).
    retention_ms: u64,
    pub(super) waiters: Arc<Waiters>,
    /// Renews the leases of this store's locks held longer than a third of a lease.
    renewer: Arc<Renewer>,
    /// The dispatch view of the worker store on the same connection (see `combined.rs`).
    pub(super) view: Option<Arc<super::workers::View>>,
}

/// Lockers of this process waiting for a job, woken when a lock of this process is released
/// (waiting for another instance's lock falls back to polling with backoff).
#[derive(Debug, Default)]
pub(super) struct Waiters(Mutex<std::collections::HashMap<String, std::sync::Weak<tokio::sync::Notify>>>);

impl Waiters {
    pub(super) fn get(&self, id: &str) -> Arc<tokio::sync::Notify> {
        let mut map = self.0.lock();
        if let Some(n) = map.get(id).and_then(std::sync::Weak::upgrade) {
            return n;
        }
        if map.len() > 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let n = Arc::new(tokio::sync::Notify::new());
        map.insert(id.to_owned(), Arc::downgrade(&n));
        n
    }

    fn released(&self, id: &str) {
        let mut map = self.0.lock();
        match map.get(id).and_then(std::sync::Weak::upgrade) {
            Some(n) => n.notify_waiters(),
            None => {
                map.remove(id);
            }
        }
    }
}

/// The lease of a guard from [`JobStore::unsaved`]: nothing stored yet, nothing locked. Its
/// commit inserts the job.
pub(super) struct Unsaved;

/// The arguments of [`WRITE`] computed for one write (the rest are the job's and the lease's own
/// fields, borrowed): see [`RedisJobs::written`].
struct Written {
    json: String,
    now: u64,
    lease_ms: u64,
    retention_ms: u64,
    /// The job's status, and the status the holder found or last wrote (the index entries the
    /// write moves from).
    status: &'static str,
    old: &'static str,
    /// The flags: unsettled, terminal, with a webhook.
    flags: [&'static str; 3],
}

impl Written {
    /// Appends the arguments of [`WRITE`] (`A[3]` to `A[16]`) for `job` held by `lease`.
    fn push_args<'a>(&'a self, job: &'a Job, lease: &'a Lease, args: &mut Vec<&'a dyn super::ArgRef>) {
        let [unsettled, terminal, hook] = &self.flags;
        args.extend([
            &job.id as &dyn super::ArgRef,
            &lease.token,
            &self.json,
            &self.status,
            &lease.client,
            unsettled,
            &self.now,
            &self.lease_ms,
            terminal,
            &self.retention_ms,
            hook,
            &job.created_at_ms,
            &job.blueprint,
            &self.old,
        ]);
    }
}

/// What keeps a Redis job lock: the token and its entry in the store's [`Renewer`]. Dropping it
/// releases the lock (unless a commit released it already).
pub(super) struct Lease {
    conn: RedisConn,
    job_id: String,
    client: String,
    token: String,
    lost: Arc<AtomicBool>,
    renewer: Arc<Renewer>,
    /// This lease's entry in `renewer`.
    renewal: u64,
    waiters: Arc<Waiters>,
    /// The job's status as stored: found when the lock was taken, then what this holder saved
    /// (the status index entries a write moves the job from).
    status: Mutex<JobStatus>,
    /// Set by a successful commit, which deleted the lock itself.
    pub(super) committed: bool,
}

impl Lease {
    /// Marks the lock lost: the `Conflict` of a write it refused.
    pub(super) fn lost(&self, job_id: &str) -> StorageError {
        self.lost.store(true, Ordering::SeqCst);
        StorageError::Conflict(format!(
            "the lock on job {job_id} was lost (another instance took over); changes discarded"
        ))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.forget(self.renewal);
        if self.committed {
            self.waiters.released(&self.job_id);
            return;
        }
        let conn = self.conn.clone();
        let key = conn.key(&format!("lock:job:{}", self.job_id));
        let token = std::mem::take(&mut self.token);
        let (waiters, id) = (self.waiters.clone(), std::mem::take(&mut self.job_id));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = conn.script::<i64>(&RELEASE, false, &[&key, &token]).await {
                    tracing::warn!(lock = %key, error = %e, "could not release a job lock (it expires with its lease)");
                }
                waiters.released(&id);
            });
        }
    }
}

impl RedisJobs {
    /// Jobs of a zset index (scored by time), newest first.
    fn list_index(&self, index: String, limit: usize, offset: usize) -> BoxFuture<'_, Result<Vec<Job>, StorageError>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            // Redis ranks are i64; an offset beyond any list answers nothing instead of overflowing.
            let last = i64::MAX as usize;
            let (start, stop) = (offset.min(last), offset.saturating_add(limit - 1).min(last));
            let range = redis::cmd("ZREVRANGE").arg(self.conn.key(&index)).arg(start).arg(stop).clone();
            let ids: Vec<String> = self.conn.query(&range).await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let keys: Vec<String> = ids.iter().map(|id| self.conn.key(&format!("job:{id}"))).collect();
            let docs: Vec<Option<String>> = self.conn.query(redis::cmd("MGET").arg(&keys)).await?;
            let mut jobs = Vec::with_capacity(docs.len());
            let mut expired = Vec::new();
            for (id, doc) in ids.iter().zip(docs) {
                let Some(doc) = doc else {
                    expired.push(id);
                    continue;
                };
                match from_json(&format!("job {id}"), &doc) {
                    Ok(job) => jobs.push(job),
                    // A record that cannot be read (e.g. nested deeper than serde_json reads)
                    // is left out: it must not take the client's whole list with it.
                    Err(e) => {
                        tracing::warn!(job_id = %id, error = %e, "job record cannot be read; left out of the list")
                    }
                }
            }
            // Documents that expired (retention) before the sweep removed their index entries:
            // pruned here (the sweep corrects the counts).
            if !expired.is_empty() {
                let prune = redis::cmd("ZREM").arg(self.conn.key(&index)).arg(&expired).clone();
                if let Err(e) = self.conn.query::<i64>(&prune).await {
                    tracing::debug!(error = %e, "could not prune expired jobs from an index (the sweep will)");
                }
            }
            Ok(jobs)
        })
    }

    pub fn new(conn: RedisConn, lease: Duration) -> Self {
        let lease = lease.max(Duration::from_millis(300));
        RedisJobs {
            renewer: Arc::new(Renewer::new(conn.clone(), lease)),
            conn,
            lease,
            retention_ms: 0,
            waiters: Arc::default(),
            view: None,
        }
    }

    /// Terminal jobs expire `retention` after they ended (`None` or zero = kept forever): the
    /// document by a Redis expiry, its index entries and counts by
    /// [`JobStore::remove_expired`].
    pub fn with_retention(mut self, retention: Option<Duration>) -> Self {
        self.retention_ms = retention.map_or(0, |r| r.as_millis().min(u64::MAX as u128) as u64);
        self
    }

    pub(super) fn lease_ms(&self) -> u64 {
        self.lease.as_millis() as u64
    }

    /// Runs [`INSERT`], taking the lock for `token` unless it is empty (`once`: see [`INSERT_FN`]).
    async fn insert_as(&self, job: &Job, token: &str, once: bool) -> Result<(), StorageError> {
        let inserted: i64 = self.insert_with(&INSERT, job, token, once, &[]).await?;
        match inserted {
            1 | 2 => Ok(()),
            _ => Err(StorageError::Conflict(format!("job {} exists", job.id))),
        }
    }

    /// Runs a script that inserts `job` (the arguments of [`INSERT_FN`], then `extra`), with a
    /// request id when `once` (see [`INSERT_FN`]).
    pub(super) async fn insert_with<T: redis::FromRedisValue>(
        &self,
        script: &LuaScript,
        job: &Job,
        token: &str,
        once: bool,
        extra: &[String],
    ) -> Result<T, StorageError> {
        let unsettled = if is_unsettled(job.status) { "1" } else { "0" };
        let (json, now, lease_ms) = (to_json(job), now_ms(), self.lease_ms());
        let (status, terminal, hook) = (job.status.as_str(), terminal_flag(job.status), hook_flag(job));
        let mut args: Vec<&dyn super::ArgRef> = vec![
            &job.id,
            &json,
            &job.client.id,
            &job.created_at_ms,
            &status,
            &unsettled,
            &now,
            &token,
            &lease_ms,
            &terminal,
            &self.retention_ms,
            &hook,
            &job.blueprint,
        ];
        args.extend(extra.iter().map(|a| a as &dyn super::ArgRef));
        self.conn.script(script, once, &args).await
    }

    /// The lease of a lock just taken for `token` on `job` as stored.
    pub(super) fn lease(&self, job: &Job, token: String) -> Lease {
        let lost = Arc::new(AtomicBool::new(false));
        Lease {
            conn: self.conn.clone(),
            job_id: job.id.clone(),
            client: job.client.id.clone(),
            renewal: self.renewer.hold(&job.id, &token, lost.clone()),
            renewer: self.renewer.clone(),
            token,
            lost,
            waiters: self.waiters.clone(),
            status: Mutex::new(job.status),
            committed: false,
        }
    }

    /// Runs [`SAVE`] or [`COMMIT`] for the holder of `lease`; `Conflict` once the lock is lost.
    async fn write(&self, script: &LuaScript, job: &Job, lease: &Lease) -> Result<(), StorageError> {
        let saved: i64 = self.write_with(script, job, lease, &[]).await?;
        if saved != 1 {
            return Err(lease.lost(&job.id));
        }
        *lease.status.lock() = job.status;
        Ok(())
    }

    /// Runs a script that writes `job` for the holder of `lease` (the arguments of [`WRITE`],
    /// then `extra`).
    pub(super) async fn write_with<T: redis::FromRedisValue>(
        &self,
        script: &LuaScript,
        job: &Job,
        lease: &Lease,
        extra: &[String],
    ) -> Result<T, StorageError> {
        let written = self.written(job, lease)?;
        let mut args = Vec::with_capacity(14 + extra.len());
        written.push_args(job, lease, &mut args);
        args.extend(extra.iter().map(|a| a as &dyn super::ArgRef));
        self.conn.script(script, false, &args).await
    }

    /// What [`WRITE`] is given beside the job and lease themselves, for the holder of `lease`;
    /// `Conflict` once the lock is lost.
    fn written(&self, job: &Job, lease: &Lease) -> Result<Written, StorageError> {
        if lease.lost.load(Ordering::SeqCst) {
            return Err(StorageError::Conflict(format!("the lock on job {} was lost; changes discarded", job.id)));
        }
        Ok(Written {
            json: to_json(job),
            now: now_ms(),
            lease_ms: self.lease_ms(),
            retention_ms: self.retention_ms,
            status: job.status.as_str(),
            old: lease.status.lock().as_str(),
            flags: [if is_unsettled(job.status) { "1" } else { "0" }, terminal_flag(job.status), hook_flag(job)],
        })
    }

    /// [`JobStore::commit_all`]: the guards of Redis leases in one [`COMMIT_ALL`] (one alone in a
    /// [`COMMIT`]), others (a job not stored yet) on their own.
    async fn commit_all_now(&self, mut guards: Vec<JobGuard>) -> Result<Vec<Result<(), StorageError>>, StorageError> {
        if guards.len() == 1 {
            let guard = guards.pop().expect("one guard");
            return Ok(vec![self.commit_job(guard).await.map(drop)]);
        }
        let mut out = vec![None; guards.len()];
        let mut held = Vec::new();
        for (i, guard) in guards.into_iter().enumerate() {
            let JobGuard::Leased { job, lease } = guard else {
                out[i] = Some(Err(StorageError::Conflict("a memory job guard cannot be saved to Redis".into())));
                continue;
            };
            let lease = match lease.downcast::<Lease>() {
                Ok(lease) => lease,
                Err(lease) => {
                    out[i] = Some(self.commit_job(JobGuard::Leased { job, lease }).await.map(drop));
                    continue;
                }
            };
            match self.written(&job, &lease) {
                Ok(w) => held.push((i, job, lease, w)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        if !held.is_empty() {
            let mut args = Vec::with_capacity(14 * held.len());
            for (_, job, lease, w) in &held {
                w.push_args(job, lease, &mut args);
            }
            let answers: Vec<i64> = self.conn.script(&COMMIT_ALL, false, &args).await?;
            drop(args);
            for ((i, job, mut lease, _), answer) in
                held.into_iter().zip(answers.into_iter().chain(std::iter::repeat(0)))
            {
                out[i] = Some(match answer {
                    1 => {
                        *lease.status.lock() = job.status;
                        lease.committed = true;
                        Ok(())
                    }
                    _ => Err(lease.lost(&job.id)),
                });
            }
        }
        Ok(out.into_iter().map(|o| o.unwrap_or_else(|| Err(StorageError::Conflict("not committed".into())))).collect())
    }

    /// [`JobStore::commit`]: the job as written (for [`JobStore::commit_keeping`], without a copy).
    async fn commit_job(&self, guard: JobGuard) -> Result<Box<Job>, StorageError> {
        let JobGuard::Leased { job, lease } = guard else {
            return Err(StorageError::Conflict("a memory job guard cannot be saved to Redis".into()));
        };
        if lease.is::<Unsaved>() {
            self.insert_as(&job, "", true).await?;
            return Ok(job);
        }
        let Ok(mut lease) = lease.downcast::<Lease>() else {
            return Err(StorageError::Conflict("foreign job guard".into()));
        };
        self.write(&COMMIT, &job, &lease).await?;
        lease.committed = true;
        Ok(job)
    }
}

impl JobStore for RedisJobs {
    fn insert(&self, job: Job) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move { self.insert_as(&job, "", false).await })
    }

    fn insert_locked(&self, job: Job) -> BoxFuture<'_, Result<JobGuard, StorageError>> {
        Box::pin(async move {
            let token = new_token();
            self.insert_as(&job, &token, false).await?;
            let lease = self.lease(&job, token);
            Ok(JobGuard::Leased { job: Box::new(job), lease: Box::new(lease) })
        })
    }

    fn unsaved(&self, job: Box<Job>) -> Result<JobGuard, Box<Job>> {
        Ok(JobGuard::Leased { job, lease: Box::new(Unsaved) })
    }

    fn lock<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<JobGuard>, StorageError>> {
        Box::pin(async move {
            match self.lock_by(id, None).await? {
                Finishing::Locked(guard) => Ok(Some(guard)),
                _ => Ok(None),
            }
        })
    }

    fn lock_finishing<'a>(
        &'a self,
        id: &'a str,
        worker_id: &'a str,
        task_id: &'a str,
        nonce: Option<(&'a str, Duration)>,
    ) -> Option<StorageFuture<'a, Finishing>> {
        Some(Box::pin(self.lock_finishing_now(id, worker_id, task_id, nonce)))
    }

    fn pop_locked<'a>(
        &'a self,
        worker_id: &'a str,
        now_ms: u64,
        max: usize,
    ) -> Option<StorageFuture<'a, Vec<(QueuedTask, PoppedJob)>>> {
        Some(Box::pin(self.pop_locked_now(worker_id, now_ms, max)))
    }

    fn save<'a>(&'a self, guard: &'a JobGuard) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let JobGuard::Leased { job, lease } = guard else {
                return Err(StorageError::Conflict("a memory job guard cannot be saved to Redis".into()));
            };
            let Some(lease) = lease.downcast_ref::<Lease>() else {
                if lease.is::<Unsaved>() {
                    return Err(StorageError::Conflict(format!("job {} is not stored yet: commit it", job.id)));
                }
                return Err(StorageError::Conflict("foreign job guard".into()));
            };
            self.write(&SAVE, job, lease).await
        })
    }

    fn commit(&self, guard: JobGuard) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move { self.commit_job(guard).await.map(drop) })
    }

    fn commit_all(&self, guards: Vec<JobGuard>) -> StorageFuture<'_, Vec<Result<(), StorageError>>> {
        Box::pin(self.commit_all_now(guards))
    }

    fn commit_keeping(&self, guard: JobGuard) -> BoxFuture<'_, Result<SavedJob, StorageError>> {
        Box::pin(async move { self.commit_job(guard).await.map(SavedJob::owned) })
    }

    fn commits_queueing(&self) -> bool {
        true
    }

    fn commit_queueing(&self, guard: JobGuard, tasks: Vec<(String, QueuedTask)>) -> StorageFuture<'_, Vec<bool>> {
        Box::pin(self.commit_queueing_now(guard, tasks))
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Job>, StorageError>> {
        Box::pin(async move {
            let json: Option<String> =
                self.conn.query(redis::cmd("GET").arg(self.conn.key(&format!("job:{id}")))).await?;
            json.map(|j| from_json(&format!("job {id}"), &j)).transpose()
        })
    }

    fn query<'a>(
        &'a self,
        query: &'a crate::storage::JobQuery,
    ) -> BoxFuture<'a, Result<crate::storage::JobPage, StorageError>> {
        Box::pin(query_page(&self.conn, query))
    }

    fn count<'a>(&'a self, query: &'a crate::storage::JobQuery) -> BoxFuture<'a, Result<u64, StorageError>> {
        Box::pin(count_jobs(&self.conn, query))
    }

    fn list_quarantined<'a>(
        &'a self,
        client: &'a str,
        limit: usize,
        offset: usize,
    ) -> BoxFuture<'a, Result<Vec<Job>, StorageError>> {
        self.list_index(format!("jobs:quarantined:{client}"), limit, offset)
    }

    fn list<'a>(
        &'a self,
        client: &'a str,
        limit: usize,
        offset: usize,
    ) -> BoxFuture<'a, Result<Vec<Job>, StorageError>> {
        self.list_index(format!("jobs:client:{client}"), limit, offset)
    }

    fn counts<'a>(&'a self, client: Option<&'a str>) -> BoxFuture<'a, Result<BTreeMap<JobStatus, u64>, StorageError>> {
        Box::pin(async move {
            let v: redis::Value = self.conn.script(&COUNTS, false, &[&client.unwrap_or("")]).await?;
            let parts = reply::array(v)?;
            Ok(parts
                .chunks(2)
                .filter_map(|c| {
                    let (s, n) = (reply::string(c.first()?)?, reply::int(c.get(1)?)?);
                    Some((JobStatus::parse(&s)?, n as u64)).filter(|_| n > 0)
                })
                .collect())
        })
    }

    fn claim_stale(
        &self,
        cutoff_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<String>, StorageError>> {
        Box::pin(async move {
            let v: redis::Value = self.conn.script(&CLAIM_STALE, true, &[&cutoff_ms, &now_ms, &(limit as u64)]).await?;
            reply::strings(v)
        })
    }

    fn remove_expired(&self, now_ms: u64, limit: usize) -> BoxFuture<'_, Result<usize, StorageError>> {
        Box::pin(async move {
            if self.retention_ms == 0 {
                return Ok(0);
            }
            let n: i64 = self.conn.script(&REMOVE_EXPIRED, false, &[&now_ms, &(limit as u64)]).await?;
            Ok(n.max(0) as usize)
        })
    }

    fn claim_webhooks(
        &self,
        cutoff_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Job>, StorageError>> {
        Box::pin(async move {
            let v: redis::Value =
                self.conn.script(&CLAIM_WEBHOOKS, true, &[&cutoff_ms, &now_ms, &(limit as u64)]).await?;
            let ids = reply::strings(v)?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let keys: Vec<String> = ids.iter().map(|id| self.conn.key(&format!("job:{id}"))).collect();
            let docs: Vec<Option<String>> = self.conn.query(redis::cmd("MGET").arg(&keys)).await?;
            let mut jobs = Vec::with_capacity(docs.len());
            for (id, doc) in ids.iter().zip(docs) {
                match doc.map(|d| from_json::<Job>(&format!("job {id}"), &d)) {
                    Some(Ok(job)) => jobs.push(job),
                    Some(Err(e)) => {
                        tracing::warn!(job_id = %id, error = %e, "job record cannot be read; webhook skipped")
                    }
                    None => {}
                }
            }
            Ok(jobs)
        })
    }

    fn touch_webhook<'a>(&'a self, id: &'a str, now_ms: u64) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let cmd = redis::cmd("ZADD").arg(self.conn.key("webhooks:due")).arg("XX").arg(now_ms).arg(id).clone();
            self.conn.query::<i64>(&cmd).await.map(|_| ())
        })
    }

    fn webhooks_done<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(());
            }
            let cmd = redis::cmd("ZREM").arg(self.conn.key("webhooks:due")).arg(ids).clone();
            self.conn.query::<i64>(&cmd).await.map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The insert's answers to an id that is taken: a first attempt is refused; a retry (after a
    /// lost reply) of an insert without a lock takes the job as its own even after it moved on,
    /// and one with a lock only while its lock and document are as it left them. Needs the Redis
    /// of the tests (`REDIS_URL`, default 127.0.0.1:6379), like every Redis test.
    #[tokio::test]
    async fn an_insert_sent_again_finds_its_own_job() {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
        let prefix = format!("avto-test:insert-again:{}:", uuid::Uuid::new_v4().simple());
        let conn = RedisConn::open(&url, &prefix).unwrap();
        let jobs = RedisJobs::new(conn.clone(), Duration::from_secs(30));
        let job = Job::new("j1", "bp", "start", serde_json::json!({}));
        jobs.insert(job.clone()).await.unwrap();
        let mut moved = job.clone();
        moved.status = JobStatus::WaitingForWorker;
        let _: String = conn.query(&INSERT.load(false)).await.unwrap();
        // ARGV[1]: the request id after its mark (1: a first attempt, 0: a retry), or none.
        let answer = |rid: &str, job: &Job, token: &str| {
            let mut cmd = INSERT.call_with(false, 15);
            cmd.arg(rid).arg(&prefix).arg(&job.id).arg(to_json(job)).arg("c").arg(job.created_at_ms);
            cmd.arg(job.status.as_str()).arg("1").arg(now_ms()).arg(token).arg(30_000).arg("0").arg(0).arg("0");
            cmd.arg("bp");
            let conn = conn.clone();
            async move { conn.query::<i64>(&cmd).await.unwrap() }
        };
        let (first, retry) = (format!("1{prefix}rid:x"), format!("0{prefix}rid:x"));
        assert_eq!(answer(&first, &moved, "").await, 0, "a first attempt: the id is taken");
        assert_eq!(answer(&retry, &moved, "").await, 2, "a retry without a lock: its own");
        assert_eq!(answer("", &job, "").await, 2, "no request id: the same document");
        assert_eq!(answer("", &moved, "").await, 0, "no request id: another document");
        assert_eq!(answer(&retry, &job, "tok").await, 0, "a retry with a lock it does not hold");
        crate::storage::redis::delete_prefix(&url, &prefix).await.unwrap();
    }
}
