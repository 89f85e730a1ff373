//! Steps that span the job store and the worker store in one script (one round trip each):
//! a job's commit together with queueing the tasks it dispatched (for a new job whose first
//! handlers ran before it was stored, its insert: see
//! [`JobStore::unsaved`](crate::storage::JobStore::unsaved)), taking tasks off a worker's
//! queue together with the locks of their jobs (a poll), and locking a job together with
//! forgetting the task whose result arrived (a result). See
//! [`JobStore::commit_queueing`](crate::storage::JobStore::commit_queueing),
//! [`JobStore::pop_locked`](crate::storage::JobStore::pop_locked) and
//! [`JobStore::lock_finishing`](crate::storage::JobStore::lock_finishing).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::jobs::{new_token, Lease, RedisJobs, Unsaved, INSERT_FN, RETAIN, WRITE};
use super::lua::{lua, LuaScript};
use super::query::QKEYS;
use super::workers::scripts::{ENQUEUE_FN, TASKS};
use super::workers::RedisWorkers;
use super::{from_json, reply, to_json, ArgRef};
use crate::job::Job;
use crate::storage::{dispatch_deadline, Finishing, JobGuard, PoppedJob, QueuedTask, StorageError};

/// Job locks (`SET NX PX`: one call when the job is free): `take_lock(lk, tok, lease)` is true
/// when the lock is (now) `tok`'s, renewed when it held it already (a retry after a lost reply);
/// `lock_job(job, tok, lease)` locks `job` and answers 0, '' (another holder), 1, '' (no such
/// job: no lock left behind) or 2, its document (locked).
const LOCK_JOB: &str = r#"
local function take_lock(lk, tok, lease)
  if redis.call('SET', lk, tok, 'NX', 'PX', lease) then return true end
  if redis.call('GET', lk) ~= tok then return false end
  redis.call('PEXPIRE', lk, lease)
  return true
end
local function lock_job(job, tok, lease)
  if not job then return 1, '' end
  local lk = P .. 'lock:job:' .. job
  if not take_lock(lk, tok, lease) then return 0, '' end
  local j = redis.call('GET', P .. 'job:' .. job)
  if not j then
    redis.call('DEL', lk)
    return 1, ''
  end
  return 2, j
end
"#;

fn script(body: &str) -> LuaScript {
    lua(&[TASKS, LOCK_JOB], body)
}

/// [`JobStore::lock`](crate::storage::JobStore::lock): {0} = locked by someone else, {1} = no
/// such job, {2, json} = locked for us.
static LOCK: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[LOCK_JOB],
        r#"
local state, j = lock_job(ARGV[3], ARGV[4], ARGV[5])
if state == 2 then return {2, j} end
return {state}
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&LOCK) }

/// The lock script of a result: {0} = locked by someone else, {1} = no such job, {2, json} =
/// locked for us, {3} = the nonce `nk` (unless '') was used before (nothing done); once past
/// another holder, the worker's running task is forgotten (as the worker store's `finished`
/// does), job or no job. The nonce is recorded as the nonce store's `SET_ONCE` does (its value
/// carries the request id, so a retry after a lost reply recognises its own write).
static LOCK_FINISHING: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local id, token, lease, w, tid, nk, nttl = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
if nk ~= '' then
  local v = '1|' .. RID
  if not redis.call('SET', nk, v, 'NX', 'PX', nttl) and redis.call('GET', nk) ~= v then return {3} end
end
local lk = P .. 'lock:job:' .. id
if not take_lock(lk, token, lease) then return {0} end
local t = redis.call('HMGET', tkey(tid), unpack(DETACH_FIELDS))
if t[1] == 'r' and t[2] == w then detach(tid, t) end
local j = redis.call('GET', P .. 'job:' .. id)
if not j then
  redis.call('DEL', lk)
  return {1}
end
return {2, j}
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&LOCK_FINISHING) }

/// Takes up to `max` tasks off worker `w`'s queue (as the pop script) and locks each one's job
/// for `token:i` (i = 1, 2, ...): {i, task (see `queued`), 0 | 1 | 2, job document or '', ...}.
/// The members taken are kept under the request id, so a retry after a lost reply hands back
/// those that still run on `w`, locked again for the same tokens.
static POP_LOCKED: LazyLock<LuaScript> = LazyLock::new(|| {
    script(
        r#"
local w, now, max, token, lease = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
local out = {}
local function add(i, data, job)
  local state, j = lock_job(job, token .. ':' .. i, lease)
  table.insert(out, i); table.insert(out, data); table.insert(out, state); table.insert(out, j)
end
if RID ~= '' and AGAIN then
  local c = redis.call('GET', RID)
  if c then
    local i = 0
    for member in string.gmatch(c, '[^\n]+') do
      i = i + 1
      local t = redis.call('HMGET', tkey(string.sub(member, 22)), 'loc', 'worker', 'data', 'job')
      if t[1] == 'r' and t[2] == w and t[3] then add(i, queued(member, t[3]), t[4]) end
    end
    return out
  end
end
local members = {}
-- One ZPOPMIN for as many as are still wanted; again only while one taken was a task gone
-- meanwhile (its hash removed) and the queue may hold more.
while #members < max do
  local want = max - #members
  local m = redis.call('ZPOPMIN', qkey(w), want)
  for k = 1, #m, 2 do
    local data, job = run(w, m[k], w, now, true)
    if data then
      table.insert(members, m[k])
      add(#members, data, job)
    end
  end
  if #m < 2 * want then break end
end
if RID ~= '' and #members > 0 then redis.call('SET', RID, table.concat(members, '\n'), 'PX', 60000) end
return out
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&POP_LOCKED) }

/// The commit script (save and release, see `jobs.rs`) that, once the job is written, queues
/// tasks (ten arguments each from `ARGV[17]`, as the enqueue script takes them): {1, 1 | 0 per
/// task (0: the worker is gone)}, or {0} (the lock was lost; nothing written or queued). A retry
/// after a lost reply that finds the job holding exactly this document answers {1}: the first
/// attempt wrote it and queued the tasks.
static COMMIT_QUEUEING: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[QKEYS, RETAIN, WRITE, TASKS, ENQUEUE_FN],
        r#"
if not write(ARGV, true) then
  if redis.call('GET', P .. 'job:' .. ARGV[3]) == ARGV[5] then return {1} end
  return {0}
end
return enqueue_all(ARGV, 17, {1})
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&COMMIT_QUEUEING) }

/// The insert (see `jobs.rs`) of a job that was not stored yet (a guard from
/// [`JobStore::unsaved`](crate::storage::JobStore::unsaved)) that then queues its tasks (ten
/// arguments each from `ARGV[16]`): {1, 1 | 0 per task}, or {0} (the id is taken; nothing
/// written or queued). A retry after a lost reply whose first attempt stored the job answers {1}:
/// that attempt queued the tasks.
static INSERT_QUEUEING: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[QKEYS, RETAIN, INSERT_FN, TASKS, ENQUEUE_FN],
        r#"
local inserted = insert(ARGV)
if inserted ~= 1 then return {inserted == 2 and 1 or 0} end
-- Stored by this very call (the id was free), so none of its tasks is anywhere yet.
return enqueue_all(ARGV, 16, {1}, true)
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&INSERT_QUEUEING) }

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

impl RedisJobs {
    /// [`JobStore::commit_queueing`](crate::storage::JobStore::commit_queueing).
    pub(super) async fn commit_queueing_now(
        &self,
        guard: JobGuard,
        tasks: Vec<(String, QueuedTask)>,
    ) -> Result<Vec<bool>, StorageError> {
        let JobGuard::Leased { job, lease } = guard else {
            return Err(StorageError::Conflict("a memory job guard cannot be saved to Redis".into()));
        };
        let mut extra = Vec::with_capacity(tasks.len() * 10);
        for (worker, task) in &tasks {
            let due = dispatch_deadline(&task.spec, task.enqueued_ms, task.deadline_ms);
            extra.extend([
                worker.clone(),
                task.task_id.clone(),
                task.job_id.clone(),
                task.spec.task_type.clone(),
                to_json(task),
                (-task.priority).to_string(),
                opt(task.spec.timeout_seconds.map(crate::job::secs_to_ms)),
                opt(task.deadline_ms),
                opt(due),
                self.conn.wake_message(worker),
            ]);
        }
        let parts = if lease.is::<Unsaved>() {
            let parts = reply::array(self.insert_with(&INSERT_QUEUEING, &job, "", true, &extra).await?)?;
            if parts.first().and_then(reply::int) != Some(1) {
                return Err(StorageError::Conflict(format!("job {} exists", job.id)));
            }
            parts
        } else {
            let Ok(mut lease) = lease.downcast::<Lease>() else {
                return Err(StorageError::Conflict("foreign job guard".into()));
            };
            let parts = reply::array(self.write_with(&COMMIT_QUEUEING, &job, &lease, &extra).await?)?;
            if parts.first().and_then(reply::int) != Some(1) {
                return Err(lease.lost(&job.id));
            }
            lease.committed = true;
            parts
        };
        let placed: Vec<bool> = parts[1..].iter().map(|v| reply::int(v) == Some(1)).collect();
        for ((worker, _), ok) in tasks.iter().zip(placed.iter().chain(std::iter::repeat(&true))) {
            self.count(worker, if *ok { 1 } else { 0 }, 0);
        }
        Ok(placed)
    }

    /// [`JobStore::lock_finishing`](crate::storage::JobStore::lock_finishing).
    pub(super) async fn lock_finishing_now(
        &self,
        id: &str,
        worker_id: &str,
        task_id: &str,
        nonce: Option<(&str, Duration)>,
    ) -> Result<Finishing, StorageError> {
        let nonce = nonce.map(|(key, ttl)| (self.conn.key(&format!("nonce:{key}")), super::px_millis(ttl)));
        let locked = self.lock_by(id, Some((worker_id, task_id, nonce))).await?;
        if !matches!(locked, Finishing::Replayed) {
            self.count(worker_id, 0, -1);
        }
        Ok(locked)
    }

    /// Counts a move of a task into the dispatch view of the worker store on this connection.
    fn count(&self, worker_id: &str, queued: isize, running: isize) {
        if let Some(view) = &self.view {
            view.count(worker_id, queued, running);
        }
    }

    /// [`JobStore::lock`], and with `finishing` = (worker, task, nonce key and TTL)
    /// [`JobStore::lock_finishing`](crate::storage::JobStore::lock_finishing): the lock script
    /// again with backoff while another holder works on the job (the nonce is recorded by the
    /// first attempt).
    pub(super) async fn lock_by(
        &self,
        id: &str,
        mut finishing: Option<(&str, &str, Option<(String, u64)>)>,
    ) -> Result<Finishing, StorageError> {
        let token = new_token();
        let mut delay = Duration::from_millis(1);
        let mut waiter: Option<Arc<tokio::sync::Notify>> = None;
        loop {
            // Registered before the attempt, so a release in between is not missed.
            let notified = waiter.as_ref().map(|w| w.clone().notified_owned());
            let v: redis::Value = match &mut finishing {
                None => self.conn.script(&LOCK, false, &[&id, &token, &self.lease_ms()]).await?,
                Some((worker, task, nonce)) => {
                    let (nk, nttl) = nonce.take().unwrap_or_default();
                    let args: [&dyn ArgRef; 7] = [&id, &token, &self.lease_ms(), &*worker, &*task, &nk, &nttl];
                    self.conn.script(&LOCK_FINISHING, !nk.is_empty(), &args).await?
                }
            };
            let parts = reply::array(v)?;
            match parts.first().and_then(reply::int) {
                Some(2) => {
                    let json = parts.get(1).and_then(reply::string).unwrap_or_default();
                    let job: Job = from_json(&format!("job {id}"), &json)?;
                    let lease = self.lease(&job, token);
                    return Ok(Finishing::Locked(JobGuard::Leased { job: Box::new(job), lease: Box::new(lease) }));
                }
                Some(1) => return Ok(Finishing::NoJob),
                Some(3) => return Ok(Finishing::Replayed),
                _ => {
                    // Another holder works on the job: wait for a release in this process, or
                    // poll with jittered backoff (up to 50 ms) for one elsewhere.
                    let jitter = rand::random::<f64>() * 0.5 + 0.75;
                    match notified {
                        Some(n) => {
                            let _ = tokio::time::timeout(delay.mul_f64(jitter), n).await;
                        }
                        None => {
                            waiter = Some(self.waiters.get(id));
                            continue;
                        }
                    }
                    delay = (delay * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    /// [`JobStore::pop_locked`](crate::storage::JobStore::pop_locked).
    pub(super) async fn pop_locked_now(
        &self,
        worker_id: &str,
        now: u64,
        max: usize,
    ) -> Result<Vec<(QueuedTask, PoppedJob)>, StorageError> {
        let token = new_token();
        let max = max.clamp(1, 1000) as u64;
        let v: redis::Value =
            self.conn.script(&POP_LOCKED, true, &[&worker_id, &now, &max, &token, &self.lease_ms()]).await?;
        let parts = reply::array(v)?;
        let mut out = Vec::with_capacity(parts.len() / 4);
        for c in parts.chunks(4) {
            let [i, task, state, json] = c else { continue };
            let task = RedisWorkers::parse_task(&reply::string(task).unwrap_or_default())?;
            let job = match reply::int(state) {
                Some(2) => {
                    let json = reply::string(json).unwrap_or_default();
                    let job: Job = from_json(&format!("job {}", task.job_id), &json)?;
                    let token = format!("{token}:{}", reply::int(i).unwrap_or(0));
                    let lease = self.lease(&job, token);
                    PoppedJob::Locked(JobGuard::Leased { job: Box::new(job), lease: Box::new(lease) })
                }
                Some(0) => PoppedJob::Busy,
                _ => PoppedJob::Missing,
            };
            self.count(worker_id, -1, 1);
            out.push((task, job));
        }
        Ok(out)
    }
}
