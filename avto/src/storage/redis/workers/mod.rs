//! Workers, their queues and running tasks in Redis (the [`WorkerStore`] of several instances).
//!
//! Each queued, running or parked task has one hash `{p}t:{task_id}` (job, type, data, where it
//! is), so a task is in one place at a time and every move is one script. A worker's queue is a
//! zset scored `-priority` whose members are `{seq:020}:{task_id}`: equal scores pop in
//! lexicographic, i.e. FIFO, order.

pub(super) mod scripts;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::Value;
use serde_json::Value as Json;

use super::{from_json, reply, to_json, RedisConn};
use crate::job::now_ms;
use crate::protocol::worker_status;
use crate::storage::encryption::RecordCipher;
use crate::storage::{
    dispatch_deadline, Orphan, Overdue, OverdueTask, QueuedTask, StorageError, StorageFuture, Unassigned, WorkerInfo,
    WorkerLoad, WorkerStore,
};

/// How old the dispatch view may get before it is listed again.
const VIEW_TTL: Duration = Duration::from_millis(200);

/// Workers, queues and running tasks in Redis.
#[derive(Debug, Clone)]
pub struct RedisWorkers {
    conn: RedisConn,
    /// Worker records as last parsed (a record only changes with registrations and heartbeats,
    /// so most listings parse nothing).
    parsed: Arc<Mutex<HashMap<String, (String, WorkerInfo)>>>,
    view: Arc<View>,
    /// Seals worker records (`REDIS_ENCRYPTION_KEY`): they carry what workers send about
    /// themselves, credentials included.
    cipher: Option<Arc<RecordCipher>>,
}

/// The dispatch view: live workers as listed at most [`VIEW_TTL`] ago, with the tasks this
/// instance queued on them, handed out and saw answered since counted in; a heartbeat that
/// changes a status or hot skills, a registration and a removal make this instance list afresh.
/// Listing every live worker with its loads for each task placed was the most expensive script
/// per job; a slightly old view only affects which worker is chosen (a gone worker is refused by
/// the enqueue script, and the dispatcher then lists afresh).
#[derive(Debug, Default)]
pub(super) struct View {
    list: Mutex<Option<(Instant, Vec<WorkerLoad>)>>,
    /// One listing at a time: callers that find the view old while it is being listed wait for
    /// that listing instead of sending their own.
    listing: tokio::sync::Mutex<()>,
}

impl View {
    fn current(&self) -> Option<Vec<WorkerLoad>> {
        let list = self.list.lock();
        list.as_ref().filter(|(at, _)| at.elapsed() < VIEW_TTL).map(|(_, v)| v.clone())
    }

    fn forget(&self) {
        *self.list.lock() = None;
    }

    /// Counts a move of this instance into the view: `queued` and `running` change by the deltas.
    pub(super) fn count(&self, worker_id: &str, queued: isize, running: isize) {
        if let Some((_, v)) = self.list.lock().as_mut() {
            if let Some(w) = v.iter_mut().find(|w| w.info.worker_id == worker_id) {
                w.queued = w.queued.saturating_add_signed(queued);
                w.running = w.running.saturating_add_signed(running);
            }
        }
    }
}

impl RedisWorkers {
    pub fn new(conn: RedisConn) -> Self {
        RedisWorkers { conn, parsed: Default::default(), view: Default::default(), cipher: None }
    }

    /// The dispatch view, for the job store's steps that move tasks (`combined.rs`), so the
    /// loads dispatch reads count them as the worker store's own moves do.
    pub(super) fn view(&self) -> Arc<View> {
        self.view.clone()
    }

    /// Seals worker records with `cipher` (`REDIS_ENCRYPTION_KEY`).
    pub fn with_cipher(mut self, cipher: Option<Arc<RecordCipher>>) -> Self {
        self.cipher = cipher;
        self
    }

    /// A worker record as stored: JSON, sealed when a key is set.
    fn seal_info(&self, info: &WorkerInfo) -> String {
        let json = to_json(info);
        match &self.cipher {
            None => json,
            Some(c) => c.seal(json.as_bytes(), &format!("w:info:{}", info.worker_id)),
        }
    }

    /// The JSON of a stored worker record; `None` (with a warning) when it cannot be opened
    /// (sealed with a key this instance does not have, or plain while a key is set): the worker
    /// then counts as not registered and registers again.
    fn open_info(&self, id: &str, stored: &str) -> Option<String> {
        let opened = match &self.cipher {
            None if RecordCipher::is_sealed(stored) => {
                Err("it is encrypted but REDIS_ENCRYPTION_KEY is not set".into())
            }
            None => return Some(stored.to_owned()),
            Some(c) => c
                .open(stored, &format!("w:info:{id}"))
                .map_err(|e| e.to_string())
                .and_then(|plain| String::from_utf8(plain).map_err(|e| e.to_string())),
        };
        opened
            .map_err(|why: String| {
                tracing::warn!(worker_id = %id, error = %why, "a worker record in Redis cannot be read: the worker must register again");
            })
            .ok()
    }

    /// Runs [`HEARTBEAT`](scripts::HEARTBEAT): `Some(tasks to cancel)`, or `None` for a worker that is not registered.
    async fn heartbeat_script(
        &self,
        worker_id: &str,
        info_json: &str,
        now: u64,
        ttl_ms: u64,
        has_body: &str,
        current: Vec<String>,
    ) -> Result<Option<Vec<String>>, StorageError> {
        let v: Value = self
            .conn
            .script(
                &scripts::HEARTBEAT,
                false,
                &[&worker_id, &info_json, &now.saturating_add(ttl_ms), &now, &has_body, &current],
            )
            .await?;
        let parts = reply::array(v)?;
        match parts.first().and_then(reply::int) {
            Some(1) => Ok(Some(parts[1..].iter().filter_map(reply::string).collect())),
            _ => Ok(None),
        }
    }

    /// A worker record as the scripts hand it back; `None` when it cannot be opened.
    fn parse_info(
        &self,
        id: &str,
        stored: &str,
        reputation: Option<String>,
    ) -> Result<Option<WorkerInfo>, StorageError> {
        let cached = {
            let parsed = self.parsed.lock();
            parsed.get(id).filter(|(raw, _)| raw == stored).map(|(_, info)| info.clone())
        };
        let mut info = match cached {
            Some(info) => info,
            None => {
                let Some(json) = self.open_info(id, stored) else { return Ok(None) };
                let info: WorkerInfo = from_json("worker record", &json)?;
                let mut parsed = self.parsed.lock();
                if parsed.len() > 10_000 {
                    parsed.clear();
                }
                parsed.insert(id.to_owned(), (stored.to_owned(), info.clone()));
                info
            }
        };
        if let Some(r) = reputation.and_then(|r| r.parse::<f64>().ok()) {
            info.reputation = r;
        }
        Ok(Some(info))
    }

    /// A queued task as the scripts hand it back: its arrival order (20 digits, the start of its
    /// queue member) then its JSON.
    pub(in crate::storage::redis) fn parse_task(s: &str) -> Result<QueuedTask, StorageError> {
        let corrupt = || StorageError::Corrupt(format!("queued task without its arrival order: {s:.40}"));
        let (seq, json) = s.split_at_checked(20).ok_or_else(corrupt)?;
        let mut task: QueuedTask = from_json("queued task", json)?;
        task.seq = seq.parse().map_err(|_| corrupt())?;
        Ok(task)
    }

    fn parse_drained(qs: Value, rs: Value, per: usize) -> Result<(Vec<QueuedTask>, Vec<Orphan>), StorageError> {
        let queued = reply::strings(qs)?.iter().map(|j| Self::parse_task(j)).collect::<Result<Vec<_>, _>>()?;
        let rs = reply::strings(rs)?;
        let orphans = rs
            .chunks(per)
            .filter(|c| c.len() == per)
            .map(|c| Orphan {
                task_id: c[0].clone(),
                job_id: c[1].clone(),
                worker_id: c.get(2).cloned().unwrap_or_default(),
            })
            .collect();
        Ok((queued, orphans))
    }
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

impl WorkerStore for RedisWorkers {
    fn register(&self, info: WorkerInfo, ttl_ms: u64) -> StorageFuture<'_, ()> {
        Box::pin(async move {
            let expiry = now_ms().saturating_add(ttl_ms);
            let rep = format!("{}", info.reputation);
            self.conn
                .script::<i64>(&scripts::REGISTER, false, &[&info.worker_id, &self.seal_info(&info), &expiry, &rep])
                .await?;
            self.view.forget();
            Ok(())
        })
    }

    fn heartbeat<'a>(
        &'a self,
        worker_id: &'a str,
        body: Option<&'a Json>,
        ttl_ms: u64,
    ) -> StorageFuture<'a, Option<Vec<String>>> {
        Box::pin(async move {
            let now = now_ms();
            let mut info_json = String::new();
            let mut current: Vec<String> = Vec::new();
            let mut changed = false;
            let map = match body {
                Some(Json::Object(map)) => Some(map),
                _ => None,
            };
            if map.is_some() || self.cipher.is_some() {
                // With a key, a bare heartbeat also checks that the record still opens (it may
                // be plain or sealed with a dropped key): if not, the worker registers again
                // rather than staying live but invisible to dispatch.
                let stored: Option<String> =
                    self.conn.query(redis::cmd("GET").arg(self.conn.key(&format!("w:info:{worker_id}")))).await?;
                let Some(json) = stored.and_then(|s| self.open_info(worker_id, &s)) else { return Ok(None) };
                let Some(map) = map else {
                    return self.heartbeat_script(worker_id, "", now, ttl_ms, "0", current).await;
                };
                let mut info: WorkerInfo = from_json("worker record", &json)?;
                let before = (info.status.clone(), info.hot_skills.clone());
                info.merge_heartbeat(map);
                info_json = self.seal_info(&info);
                changed = (&info.status, &info.hot_skills) != (&before.0, &before.1);
                if let Some(list) = map.get("current_tasks").and_then(Json::as_array) {
                    current = list.iter().filter_map(Json::as_str).map(str::to_owned).collect();
                }
            }
            let has_body = if map.is_some() { "1" } else { "0" };
            let answer = self.heartbeat_script(worker_id, &info_json, now, ttl_ms, has_body, current).await;
            // Dispatch reads status and hot skills: a change is seen at once on this instance.
            if changed {
                self.view.forget();
            }
            answer
        })
    }

    fn worker<'a>(&'a self, worker_id: &'a str) -> StorageFuture<'a, Option<WorkerInfo>> {
        Box::pin(async move {
            let parts = reply::strings(self.conn.script(&scripts::WORKER, false, &[&worker_id]).await?)?;
            match parts.as_slice() {
                [info, rep] => self.parse_info(worker_id, info, Some(rep.clone())),
                _ => Ok(None),
            }
        })
    }

    fn live_workers(&self, now: u64) -> StorageFuture<'_, Vec<WorkerLoad>> {
        Box::pin(async move {
            let parts = reply::array(self.conn.script(&scripts::LIVE, false, &[&now]).await?)?;
            let mut out = Vec::with_capacity(parts.len() / 5);
            for c in parts.chunks(5) {
                let [id, info, rep, queued, running] = c else { continue };
                let id = reply::string(id).unwrap_or_default();
                // A record that cannot be read leaves that worker out, not every worker.
                let info = match self.parse_info(&id, &reply::string(info).unwrap_or_default(), reply::string(rep)) {
                    Ok(Some(info)) => info,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(worker_id = %id, error = %e, "worker record cannot be read; left out");
                        continue;
                    }
                };
                out.push(WorkerLoad {
                    info: Arc::new(info),
                    queued: reply::int(queued).unwrap_or(0) as usize,
                    running: reply::int(running).unwrap_or(0) as usize,
                });
            }
            out.sort_by(|a, b| a.info.worker_id.cmp(&b.info.worker_id));
            Ok(out)
        })
    }

    fn dispatch_view(&self, now: u64) -> StorageFuture<'_, Vec<WorkerLoad>> {
        Box::pin(async move {
            if let Some(v) = self.view.current() {
                return Ok(v);
            }
            let _listing = self.view.listing.lock().await;
            if let Some(v) = self.view.current() {
                return Ok(v);
            }
            let list = self.live_workers(now).await?;
            *self.view.list.lock() = Some((Instant::now(), list.clone()));
            Ok(list)
        })
    }

    fn is_live<'a>(&'a self, worker_id: &'a str, now: u64) -> StorageFuture<'a, bool> {
        Box::pin(async move {
            let expiry: Option<f64> =
                self.conn.query(redis::cmd("ZSCORE").arg(self.conn.key("w:all")).arg(worker_id)).await?;
            Ok(expiry.is_some_and(|e| e > now as f64))
        })
    }

    fn queue_depth(&self) -> StorageFuture<'_, usize> {
        Box::pin(async move { Ok(self.conn.script::<i64>(&scripts::DEPTH, false, &[]).await?.max(0) as usize) })
    }

    fn enqueue<'a>(&'a self, worker_id: &'a str, task: QueuedTask) -> StorageFuture<'a, bool> {
        Box::pin(async move {
            let wake = self.conn.wake_message(worker_id);
            let timeout = opt(task.spec.timeout_seconds.map(crate::job::secs_to_ms));
            let due = opt(dispatch_deadline(&task.spec, task.enqueued_ms, task.deadline_ms));
            let ok: i64 = self
                .conn
                .script(
                    &scripts::ENQUEUE,
                    false,
                    &[
                        &worker_id,
                        &task.task_id,
                        &task.job_id,
                        &task.spec.task_type,
                        &to_json(&task),
                        &(-task.priority),
                        &timeout,
                        &opt(task.deadline_ms),
                        &due,
                        &wake,
                    ],
                )
                .await?;
            match ok {
                1 => self.view.count(worker_id, 1, 0),
                _ => self.view.forget(),
            }
            Ok(ok == 1)
        })
    }

    fn enqueue_wakes(&self) -> bool {
        true
    }

    fn pop<'a>(&'a self, worker_id: &'a str, now: u64) -> StorageFuture<'a, Option<QueuedTask>> {
        Box::pin(async move {
            let json: String = self.conn.script(&scripts::POP, true, &[&worker_id, &now]).await?;
            if json.is_empty() {
                return Ok(None);
            }
            // The queue lengths of the view steer `overflow` and the load-based strategies.
            self.view.count(worker_id, -1, 1);
            Self::parse_task(&json).map(Some)
        })
    }

    fn steal<'a>(&'a self, thief: &'a str, skills: &'a [String], now: u64) -> StorageFuture<'a, Option<QueuedTask>> {
        Box::pin(async move {
            if skills.is_empty() {
                return Ok(None);
            }
            let json: String = self.conn.script(&scripts::STEAL, true, &[&thief, &now, &skills.to_vec()]).await?;
            if json.is_empty() {
                return Ok(None);
            }
            Self::parse_task(&json).map(Some)
        })
    }

    fn finished<'a>(&'a self, worker_id: &'a str, task_id: &'a str) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            self.conn.script::<i64>(&scripts::FINISHED, false, &[&worker_id, &task_id]).await?;
            self.view.count(worker_id, 0, -1);
            Ok(())
        })
    }

    fn cancel<'a>(
        &'a self,
        task_id: &'a str,
        worker_id: Option<&'a str>,
        cancel_ttl_ms: u64,
    ) -> StorageFuture<'a, bool> {
        Box::pin(async move {
            let until = now_ms().saturating_add(cancel_ttl_ms);
            let running: i64 =
                self.conn.script(&scripts::CANCEL, false, &[&task_id, &worker_id.unwrap_or_default(), &until]).await?;
            Ok(running == 1)
        })
    }

    fn park(&self, task: Unassigned) -> StorageFuture<'_, ()> {
        Box::pin(async move {
            let due = opt(dispatch_deadline(&task.spec, task.parked_ms, task.deadline_ms));
            self.conn
                .script::<i64>(
                    &scripts::PARK,
                    false,
                    &[&task.task_id, &task.job_id, &task.spec.task_type, &to_json(&task), &task.parked_ms, &due],
                )
                .await?;
            Ok(())
        })
    }

    fn parked(&self) -> StorageFuture<'_, Vec<Unassigned>> {
        Box::pin(async move {
            let list = reply::strings(self.conn.script(&scripts::PARKED, false, &[]).await?)?;
            list.iter().map(|j| from_json("parked task", j)).collect()
        })
    }

    fn claim_parked<'a>(&'a self, task_id: &'a str) -> StorageFuture<'a, bool> {
        Box::pin(async move { Ok(self.conn.script::<i64>(&scripts::CLAIM_PARKED, true, &[&task_id]).await? == 1) })
    }

    fn remove<'a>(&'a self, worker_id: &'a str) -> StorageFuture<'a, (Vec<QueuedTask>, Vec<Orphan>)> {
        Box::pin(async move {
            let mut parts = reply::array(self.conn.script(&scripts::REMOVE, true, &[&worker_id]).await?)?.into_iter();
            let (qs, rs) = (parts.next().unwrap_or(Value::Nil), parts.next().unwrap_or(Value::Nil));
            let (queued, mut orphans) = Self::parse_drained(qs, rs, 2)?;
            for o in &mut orphans {
                o.worker_id = worker_id.to_owned();
            }
            self.view.forget();
            Ok((queued, orphans))
        })
    }

    fn take_queue<'a>(&'a self, worker_id: &'a str) -> StorageFuture<'a, Vec<QueuedTask>> {
        Box::pin(async move {
            let list = reply::strings(self.conn.script(&scripts::TAKE_QUEUE, true, &[&worker_id]).await?)?;
            if !list.is_empty() {
                self.view.forget();
            }
            list.iter().map(|j| Self::parse_task(j)).collect()
        })
    }

    fn mark_idle<'a>(&'a self, worker_id: &'a str) -> StorageFuture<'a, bool> {
        Box::pin(async move {
            // Every poll asks: the dispatch view answers most of them without a round trip (a
            // status change on another instance is seen here within VIEW_TTL).
            let view = self.dispatch_view(now_ms()).await?;
            let reported = view.iter().find(|w| w.info.worker_id == worker_id).map(|w| w.info.status.as_str());
            if !matches!(reported, Some(worker_status::BUSY | worker_status::FULL)) {
                return Ok(false);
            }
            let stored: Option<String> =
                self.conn.query(redis::cmd("GET").arg(self.conn.key(&format!("w:info:{worker_id}")))).await?;
            let Some(stored) = stored else { return Ok(false) };
            let Some(json) = self.open_info(worker_id, &stored) else { return Ok(false) };
            let mut info: WorkerInfo = from_json("worker record", &json)?;
            if !matches!(info.status.as_str(), worker_status::BUSY | worker_status::FULL) {
                return Ok(false);
            }
            info.set_status(worker_status::IDLE);
            // Compare and set: a heartbeat stored meanwhile is newer than what the poll shows.
            let swapped: i64 =
                self.conn.script(&scripts::SWAP_INFO, true, &[&worker_id, &stored, &self.seal_info(&info)]).await?;
            if swapped == 1 {
                self.view.forget();
            }
            Ok(swapped == 1)
        })
    }

    fn adjust_reputation<'a>(&'a self, worker_id: &'a str, delta: f64) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            self.conn.script::<i64>(&scripts::REPUTATION, true, &[&worker_id, &delta]).await?;
            Ok(())
        })
    }

    fn next_turn(&self) -> StorageFuture<'_, Option<u64>> {
        Box::pin(async move {
            let turn: u64 = self.conn.query(redis::cmd("INCR").arg(self.conn.key("round_robin"))).await?;
            Ok(Some(turn))
        })
    }

    fn overdue(
        &self,
        now: u64,
        default_exec_ms: u64,
        cancel_ttl_ms: u64,
        limit: usize,
    ) -> StorageFuture<'_, Vec<OverdueTask>> {
        Box::pin(async move {
            let until = now.saturating_add(cancel_ttl_ms);
            // Lua numbers are doubles, and ZRANGEBYSCORE's count must print as an integer.
            let limit = limit.clamp(1, 1_000_000) as u64;
            let flat = reply::strings(
                self.conn.script(&scripts::OVERDUE, true, &[&now, &default_exec_ms, &until, &limit]).await?,
            )?;
            Ok(flat
                .chunks(4)
                .filter(|c| c.len() == 4)
                .map(|c| OverdueTask {
                    task_id: c[0].clone(),
                    job_id: c[1].clone(),
                    worker_id: Some(c[2].clone()).filter(|w| !w.is_empty()),
                    kind: if c[3] == "E" { Overdue::Execution } else { Overdue::Dispatch },
                })
                .collect())
        })
    }

    fn expire(&self, now: u64) -> StorageFuture<'_, (Vec<QueuedTask>, Vec<Orphan>)> {
        Box::pin(async move {
            let mut parts = reply::array(self.conn.script(&scripts::EXPIRE, true, &[&now]).await?)?.into_iter();
            let ids = reply::strings(parts.next().unwrap_or(Value::Nil))?;
            for id in &ids {
                tracing::warn!(worker_id = %id, "worker expired (no heartbeat); re-queueing its tasks");
            }
            if !ids.is_empty() {
                self.view.forget();
            }
            let (qs, rs) = (parts.next().unwrap_or(Value::Nil), parts.next().unwrap_or(Value::Nil));
            Self::parse_drained(qs, rs, 3)
        })
    }

    fn task_known<'a>(&'a self, task_id: &'a str) -> StorageFuture<'a, bool> {
        Box::pin(async move {
            let n: i64 = self.conn.query(redis::cmd("EXISTS").arg(self.conn.key(&format!("t:{task_id}")))).await?;
            Ok(n == 1)
        })
    }
}
