//! The in-memory [`WorkerStore`]: one lock over all workers, so every operation is atomic.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use crate::actions::TaskSpec;
use crate::protocol::worker_status;
use crate::storage::{
    dispatch_deadline, Orphan, Overdue, OverdueTask, QueuedTask, StorageFuture, Unassigned, WorkerInfo, WorkerLoad,
    WorkerStore, CANCEL_MEMORY_MS,
};

struct Queued(QueuedTask);

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.0.seq == other.0.seq
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// Max-heap: higher priority first, then lower sequence number (FIFO).
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.priority.total_cmp(&other.0.priority).then_with(|| other.0.seq.cmp(&self.0.seq))
    }
}

/// A task being executed by a worker.
#[derive(Debug, Clone, PartialEq)]
struct Running {
    job_id: String,
    picked_ms: u64,
    timeout_ms: Option<u64>,
    deadline_ms: Option<u64>,
}

struct Slot {
    /// Shared with every `WorkerLoad` handed out, so listing workers copies no records.
    info: Arc<WorkerInfo>,
    expires_at_ms: u64,
    queue: BinaryHeap<Queued>,
    running: HashMap<String, Running>,
    /// Task ids the worker must drop -> when to forget them.
    cancel_pending: HashMap<String, u64>,
}

#[derive(Default)]
struct Inner {
    workers: HashMap<String, Slot>,
    parked: Vec<Unassigned>,
    /// Cancellations of workers that expired or went offline, handed back if they register
    /// again: their pending cancellations, plus every task they were running (re-queued elsewhere).
    departed: HashMap<String, HashMap<String, u64>>,
}

/// In-memory workers, queues and running tasks.
#[derive(Default)]
pub struct MemoryWorkers {
    inner: Mutex<Inner>,
    seq: AtomicU64,
}

impl MemoryWorkers {
    pub fn new() -> Self {
        Self::default()
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> StorageFuture<'a, T> {
    Box::pin(async move { Ok(v) })
}

fn dispatch_due(spec: &TaskSpec, since: u64, deadline: Option<u64>, now: u64) -> bool {
    dispatch_deadline(spec, since, deadline).is_some_and(|d| d <= now)
}

fn running_of(task: &QueuedTask, now: u64) -> Running {
    Running {
        job_id: task.job_id.clone(),
        picked_ms: now,
        timeout_ms: task.spec.timeout_seconds.map(crate::job::secs_to_ms),
        deadline_ms: task.deadline_ms,
    }
}

/// Empties a departing worker's slot; remembers what it must still cancel if it comes back.
fn depart(inner: &mut Inner, worker_id: &str, now: u64) -> (Vec<QueuedTask>, Vec<Orphan>) {
    let Some(slot) = inner.workers.remove(worker_id) else { return Default::default() };
    let mut cancels = slot.cancel_pending.clone();
    for task_id in slot.running.keys() {
        cancels.insert(task_id.clone(), now.saturating_add(CANCEL_MEMORY_MS));
    }
    cancels.retain(|_, exp| *exp > now);
    if !cancels.is_empty() {
        inner.departed.insert(worker_id.to_owned(), cancels);
    }
    drain(slot, worker_id)
}

fn drain(slot: Slot, worker_id: &str) -> (Vec<QueuedTask>, Vec<Orphan>) {
    (
        slot.queue.into_iter().map(|q| q.0).collect(),
        slot.running
            .into_iter()
            .map(|(task_id, r)| Orphan { job_id: r.job_id, task_id, worker_id: worker_id.to_owned() })
            .collect(),
    )
}

impl WorkerStore for MemoryWorkers {
    fn register(&self, mut info: WorkerInfo, ttl_ms: u64) -> StorageFuture<'_, ()> {
        let now = crate::job::now_ms();
        let mut inner = self.inner.lock();
        match inner.workers.get_mut(&info.worker_id) {
            Some(slot) => {
                info.reputation = slot.info.reputation;
                slot.info = Arc::new(info);
                slot.expires_at_ms = now.saturating_add(ttl_ms);
            }
            None => {
                let mut cancel_pending = inner.departed.remove(&info.worker_id).unwrap_or_default();
                cancel_pending.retain(|_, exp| *exp > now);
                inner.departed.retain(|_, c| c.values().any(|exp| *exp > now));
                let slot = Slot {
                    info: Arc::new(info),
                    expires_at_ms: now.saturating_add(ttl_ms),
                    queue: BinaryHeap::new(),
                    running: HashMap::new(),
                    cancel_pending,
                };
                inner.workers.insert(slot.info.worker_id.clone(), slot);
            }
        }
        ready(())
    }

    fn heartbeat<'a>(
        &'a self,
        worker_id: &'a str,
        body: Option<&'a Value>,
        ttl_ms: u64,
    ) -> StorageFuture<'a, Option<Vec<String>>> {
        let now = crate::job::now_ms();
        let mut inner = self.inner.lock();
        let Some(slot) = inner.workers.get_mut(worker_id) else { return ready(None) };
        slot.expires_at_ms = now.saturating_add(ttl_ms);
        let mut cancel = Vec::new();
        if let Some(Value::Object(map)) = body {
            Arc::make_mut(&mut slot.info).merge_heartbeat(map);
            slot.cancel_pending.retain(|_, expires| *expires > now);
            if let Some(current) = map.get("current_tasks").and_then(Value::as_array) {
                cancel.extend(
                    current
                        .iter()
                        .filter_map(Value::as_str)
                        .filter(|t| slot.cancel_pending.contains_key(*t))
                        .map(str::to_owned),
                );
            }
        }
        ready(Some(cancel))
    }

    fn worker<'a>(&'a self, worker_id: &'a str) -> StorageFuture<'a, Option<WorkerInfo>> {
        ready(self.inner.lock().workers.get(worker_id).map(|s| WorkerInfo::clone(&s.info)))
    }

    fn live_workers(&self, now: u64) -> StorageFuture<'_, Vec<WorkerLoad>> {
        let inner = self.inner.lock();
        let mut v: Vec<WorkerLoad> = inner
            .workers
            .values()
            .filter(|s| s.expires_at_ms > now)
            .map(|s| WorkerLoad { info: s.info.clone(), queued: s.queue.len(), running: s.running.len() })
            .collect();
        v.sort_by(|a, b| a.info.worker_id.cmp(&b.info.worker_id));
        ready(v)
    }

    fn is_live<'a>(&'a self, worker_id: &'a str, now: u64) -> StorageFuture<'a, bool> {
        ready(self.inner.lock().workers.get(worker_id).is_some_and(|s| s.expires_at_ms > now))
    }

    fn queue_depth(&self) -> StorageFuture<'_, usize> {
        let inner = self.inner.lock();
        ready(inner.workers.values().map(|s| s.queue.len()).sum::<usize>() + inner.parked.len())
    }

    fn enqueue<'a>(&'a self, worker_id: &'a str, mut task: QueuedTask) -> StorageFuture<'a, bool> {
        let mut inner = self.inner.lock();
        task.seq = self.seq.fetch_add(1, AtomicOrdering::Relaxed);
        let ok = match inner.workers.get_mut(worker_id) {
            Some(slot) => {
                slot.queue.push(Queued(task));
                true
            }
            None => false,
        };
        ready(ok)
    }

    fn pop<'a>(&'a self, worker_id: &'a str, now: u64) -> StorageFuture<'a, Option<QueuedTask>> {
        let mut inner = self.inner.lock();
        let task = inner.workers.get_mut(worker_id).and_then(|slot| {
            let task = slot.queue.pop()?.0;
            slot.running.insert(task.task_id.clone(), running_of(&task, now));
            Some(task)
        });
        ready(task)
    }

    fn steal<'a>(&'a self, thief: &'a str, skills: &'a [String], now: u64) -> StorageFuture<'a, Option<QueuedTask>> {
        let mut inner = self.inner.lock();
        if !inner.workers.contains_key(thief) {
            return ready(None);
        }
        // The victim: the live worker (not the thief) with the longest backlog the thief can run
        // (at least two tasks, so the victim keeps its next one).
        let victim = inner
            .workers
            .iter()
            .filter(|(id, s)| id.as_str() != thief && s.expires_at_ms > now)
            .map(|(id, s)| (id.clone(), s.queue.iter().filter(|q| skills.contains(&q.0.spec.task_type)).count()))
            .filter(|(_, n)| *n > 1)
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
            .map(|(id, _)| id);
        let Some(victim) = victim else { return ready(None) };
        let slot = inner.workers.get_mut(&victim).expect("victim exists");
        // Ascending order: the last matching item is the victim's next task; take the one before it.
        let mut items: Vec<Queued> = std::mem::take(&mut slot.queue).into_sorted_vec();
        let matching: Vec<usize> = (0..items.len()).filter(|&i| skills.contains(&items[i].0.spec.task_type)).collect();
        let stolen = items.remove(matching[matching.len() - 2]).0;
        slot.queue = items.into_iter().collect();
        let thief_slot = inner.workers.get_mut(thief).expect("checked above");
        thief_slot.running.insert(stolen.task_id.clone(), running_of(&stolen, now));
        ready(Some(stolen))
    }

    fn finished<'a>(&'a self, worker_id: &'a str, task_id: &'a str) -> StorageFuture<'a, ()> {
        if let Some(slot) = self.inner.lock().workers.get_mut(worker_id) {
            slot.running.remove(task_id);
        }
        ready(())
    }

    fn cancel<'a>(
        &'a self,
        task_id: &'a str,
        worker_id: Option<&'a str>,
        cancel_ttl_ms: u64,
    ) -> StorageFuture<'a, bool> {
        let now = crate::job::now_ms();
        let mut inner = self.inner.lock();
        inner.parked.retain(|u| u.task_id != task_id);
        let Some(slot) = worker_id.and_then(|w| inner.workers.get_mut(w)) else { return ready(false) };
        let before = slot.queue.len();
        slot.queue.retain(|q| q.0.task_id != task_id);
        if slot.queue.len() != before {
            return ready(false);
        }
        slot.running.remove(task_id);
        slot.cancel_pending.insert(task_id.to_owned(), now.saturating_add(cancel_ttl_ms));
        ready(true)
    }

    fn park(&self, task: Unassigned) -> StorageFuture<'_, ()> {
        let mut inner = self.inner.lock();
        if !inner.parked.iter().any(|u| u.task_id == task.task_id) {
            inner.parked.push(task);
        }
        ready(())
    }

    fn parked(&self) -> StorageFuture<'_, Vec<Unassigned>> {
        ready(self.inner.lock().parked.clone())
    }

    fn claim_parked<'a>(&'a self, task_id: &'a str) -> StorageFuture<'a, bool> {
        let mut inner = self.inner.lock();
        let before = inner.parked.len();
        inner.parked.retain(|u| u.task_id != task_id);
        ready(inner.parked.len() != before)
    }

    fn remove<'a>(&'a self, worker_id: &'a str) -> StorageFuture<'a, (Vec<QueuedTask>, Vec<Orphan>)> {
        let now = crate::job::now_ms();
        ready(depart(&mut self.inner.lock(), worker_id, now))
    }

    fn take_queue<'a>(&'a self, worker_id: &'a str) -> StorageFuture<'a, Vec<QueuedTask>> {
        let mut inner = self.inner.lock();
        let Some(slot) = inner.workers.get_mut(worker_id) else { return ready(Vec::new()) };
        let mut tasks: Vec<QueuedTask> =
            std::mem::take(&mut slot.queue).into_sorted_vec().into_iter().map(|q| q.0).collect();
        tasks.reverse();
        ready(tasks)
    }

    fn mark_idle<'a>(&'a self, worker_id: &'a str) -> StorageFuture<'a, bool> {
        let mut inner = self.inner.lock();
        let Some(slot) = inner.workers.get_mut(worker_id) else { return ready(false) };
        if !matches!(slot.info.status.as_str(), worker_status::BUSY | worker_status::FULL) {
            return ready(false);
        }
        Arc::make_mut(&mut slot.info).set_status(worker_status::IDLE);
        ready(true)
    }

    fn adjust_reputation<'a>(&'a self, worker_id: &'a str, delta: f64) -> StorageFuture<'a, ()> {
        if let Some(slot) = self.inner.lock().workers.get_mut(worker_id) {
            let info = Arc::make_mut(&mut slot.info);
            info.reputation = (info.reputation + delta).clamp(0.0, 1.0);
        }
        ready(())
    }

    fn overdue(
        &self,
        now: u64,
        default_exec_ms: u64,
        cancel_ttl_ms: u64,
        limit: usize,
    ) -> StorageFuture<'_, Vec<OverdueTask>> {
        let mut inner = self.inner.lock();
        let mut out = Vec::new();
        inner.parked.retain(|u| {
            let due = out.len() < limit && dispatch_due(&u.spec, u.parked_ms, u.deadline_ms, now);
            if due {
                out.push(OverdueTask {
                    job_id: u.job_id.clone(),
                    task_id: u.task_id.clone(),
                    worker_id: None,
                    kind: Overdue::Dispatch,
                });
            }
            !due
        });
        for (wid, slot) in inner.workers.iter_mut() {
            if out.len() >= limit {
                break;
            }
            if slot.queue.iter().any(|q| dispatch_due(&q.0.spec, q.0.enqueued_ms, q.0.deadline_ms, now)) {
                let mut keep = BinaryHeap::with_capacity(slot.queue.len());
                for q in std::mem::take(&mut slot.queue) {
                    if out.len() < limit && dispatch_due(&q.0.spec, q.0.enqueued_ms, q.0.deadline_ms, now) {
                        out.push(OverdueTask {
                            job_id: q.0.job_id,
                            task_id: q.0.task_id,
                            worker_id: Some(wid.clone()),
                            kind: Overdue::Dispatch,
                        });
                    } else {
                        keep.push(q);
                    }
                }
                slot.queue = keep;
            }
            let mut stopped = Vec::new();
            slot.running.retain(|tid, r| {
                let exec = r.picked_ms.saturating_add(r.timeout_ms.unwrap_or(default_exec_ms));
                let due = out.len() < limit && (exec <= now || r.deadline_ms.is_some_and(|d| d <= now));
                if due {
                    out.push(OverdueTask {
                        job_id: r.job_id.clone(),
                        task_id: tid.clone(),
                        worker_id: Some(wid.clone()),
                        kind: Overdue::Execution,
                    });
                    stopped.push(tid.clone());
                }
                !due
            });
            for tid in stopped {
                slot.cancel_pending.insert(tid, now.saturating_add(cancel_ttl_ms));
            }
        }
        ready(out)
    }

    fn expire(&self, now: u64) -> StorageFuture<'_, (Vec<QueuedTask>, Vec<Orphan>)> {
        let mut inner = self.inner.lock();
        let dead: Vec<String> =
            inner.workers.iter().filter(|(_, s)| s.expires_at_ms <= now).map(|(k, _)| k.clone()).collect();
        let mut queued = Vec::new();
        let mut orphans = Vec::new();
        for id in dead {
            tracing::warn!(worker_id = %id, "worker expired (no heartbeat); re-queueing its tasks");
            let (q, o) = depart(&mut inner, &id, now);
            queued.extend(q);
            orphans.extend(o);
        }
        ready((queued, orphans))
    }

    fn task_known<'a>(&'a self, task_id: &'a str) -> StorageFuture<'a, bool> {
        let inner = self.inner.lock();
        let known = inner.parked.iter().any(|u| u.task_id == task_id)
            || inner
                .workers
                .values()
                .any(|s| s.running.contains_key(task_id) || s.queue.iter().any(|q| q.0.task_id == task_id));
        ready(known)
    }
}
