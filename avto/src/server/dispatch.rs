//! Workers, their queues, and choosing a worker for a task.
//!
//! Dispatch is push-to-queue (as in Avtomatika): when a blueprint dispatches, the dispatcher
//! picks the best eligible live worker and puts the task on that worker's priority queue
//! (FIFO within a priority). Long-polls drain the queue. A task with no eligible worker waits
//! in the unassigned list (with the reason visible on the job) and is assigned as soon as a
//! suitable worker registers or heartbeats.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use crate::actions::{DispatchStrategy, TaskSpec};
use crate::job::now_ms;

/// What the dispatcher needs to know about a worker (from its registration and heartbeats).
#[derive(Debug, Clone, Default)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub worker_type: String,
    /// The registration body as sent, merged with later heartbeats (for `GET /workers`).
    pub record: serde_json::Map<String, Value>,
    pub skills: Vec<SkillView>,
    pub cost_per_skill: HashMap<String, f64>,
    /// `idle`, `busy`, `full`, `offline`, ...
    pub status: String,
    pub reputation: f64,
    pub websockets: bool,
}

/// One skill of a worker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SkillView {
    pub name: String,
    pub version: Option<String>,
    pub skill_type: Option<String>,
}

impl WorkerInfo {
    /// Reads the fields dispatch needs from a registration body; unknown fields are kept in `record`.
    pub fn from_registration(body: &Value) -> Self {
        let record = body.as_object().cloned().unwrap_or_default();
        let mut info = WorkerInfo {
            worker_id: body["worker_id"].as_str().unwrap_or_default().to_owned(),
            worker_type: body["worker_type"].as_str().unwrap_or("generic").to_owned(),
            record,
            status: "idle".into(),
            reputation: 1.0,
            ..Default::default()
        };
        info.refresh_from_record();
        info
    }

    /// Re-derives the typed view after `record` changed.
    pub fn refresh_from_record(&mut self) {
        let r = Value::Object(self.record.clone());
        if let Some(skills) = r["supported_skills"].as_array() {
            self.skills = skills
                .iter()
                .filter_map(|s| {
                    Some(SkillView {
                        name: s["name"].as_str()?.to_owned(),
                        version: s["version"].as_str().map(str::to_owned),
                        skill_type: s["type"].as_str().map(str::to_owned),
                    })
                })
                .collect();
        }
        if let Some(costs) = r["capabilities"]["cost_per_skill"].as_object() {
            self.cost_per_skill = costs.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect();
        }
        self.websockets = r["capabilities"]["extra"]["websockets"].as_bool().unwrap_or(false)
            || r["capabilities"]["websockets"].as_bool().unwrap_or(false);
        if let Some(s) = r["status"].as_str() {
            self.status = s.to_owned();
        }
    }

    pub fn has_skill(&self, name: &str) -> bool {
        self.skills.iter().any(|s| s.name == name)
    }

    fn cost(&self, skill: &str) -> f64 {
        self.cost_per_skill.get(skill).copied().unwrap_or(f64::INFINITY)
    }
}

/// A task waiting on a worker's queue.
#[derive(Debug, Clone)]
pub struct QueuedTask {
    pub job_id: String,
    pub task_id: String,
    pub spec: TaskSpec,
    pub priority: f64,
    /// Epoch ms deadline for the result, if any.
    pub deadline_ms: Option<u64>,
    /// When the task was put on this queue (epoch ms).
    pub enqueued_ms: u64,
    seq: u64,
}

impl PartialEq for QueuedTask {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}
impl Eq for QueuedTask {}
impl PartialOrd for QueuedTask {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for QueuedTask {
    /// Max-heap: higher priority first, then lower sequence number (FIFO).
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.total_cmp(&other.priority).then_with(|| other.seq.cmp(&self.seq))
    }
}

/// A command pushed to a worker over its WebSocket.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerCommand {
    pub command: String,
    pub task_id: Option<String>,
    pub job_id: Option<String>,
}

struct Running {
    job_id: String,
    picked_ms: u64,
    timeout_ms: Option<u64>,
    deadline_ms: Option<u64>,
}

struct WorkerSlot {
    info: WorkerInfo,
    expires_at_ms: u64,
    queue: BinaryHeap<QueuedTask>,
    /// Tasks handed out by a poll and not yet answered.
    running: HashMap<String, Running>,
    /// Task ids the worker must drop (answered in `cancel_task_ids` of the next heartbeat).
    cancel_pending: HashSet<String>,
    notify: Arc<Notify>,
    ws: Option<mpsc::UnboundedSender<WorkerCommand>>,
}

/// A task no worker could take yet.
#[derive(Debug, Clone)]
pub struct Unassigned {
    pub job_id: String,
    pub task_id: String,
    pub spec: TaskSpec,
    pub deadline_ms: Option<u64>,
    /// When it was parked (epoch ms).
    pub parked_ms: u64,
}

/// Which deadline a task missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdue {
    /// Not picked up within its dispatch timeout (or result deadline).
    Dispatch,
    /// Picked up, but no result within its execution timeout (or result deadline).
    Execution,
}

/// A task whose deadline passed.
#[derive(Debug, Clone, PartialEq)]
pub struct OverdueTask {
    pub job_id: String,
    pub task_id: String,
    pub worker_id: Option<String>,
    pub kind: Overdue,
}

/// A task that was held by a worker that is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct Orphan {
    pub job_id: String,
    pub task_id: String,
    pub worker_id: String,
}

/// Why no worker was chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum NoWorker {
    /// No live worker offers the skill.
    NoSkill,
    /// Workers offer the skill but none passes the filters (cost, resources, version, reputation).
    Filtered(String),
}

impl NoWorker {
    pub fn reason(&self, task_type: &str) -> String {
        match self {
            NoWorker::NoSkill => format!("no live worker offers skill `{task_type}`; waiting for one"),
            NoWorker::Filtered(why) => format!("no eligible worker for `{task_type}` ({why}); waiting for one"),
        }
    }
}

/// The in-memory dispatcher: worker registry, per-worker queues, unassigned tasks.
pub struct Dispatcher {
    inner: Mutex<Inner>,
    seq: AtomicU64,
    rr: AtomicU64,
    ttl_ms: u64,
    min_reputation: f64,
}

#[derive(Default)]
struct Inner {
    workers: HashMap<String, WorkerSlot>,
    unassigned: Vec<Unassigned>,
}

impl Dispatcher {
    pub fn new(ttl: std::time::Duration, min_reputation: f64) -> Self {
        Dispatcher {
            inner: Mutex::new(Inner::default()),
            seq: AtomicU64::new(0),
            rr: AtomicU64::new(0),
            ttl_ms: ttl.as_millis() as u64,
            min_reputation,
        }
    }

    /// Adds or replaces a worker (re-registration keeps its queue, running tasks and reputation).
    pub fn register(&self, mut info: WorkerInfo) {
        let now = now_ms();
        let mut inner = self.inner.lock().unwrap();
        match inner.workers.get_mut(&info.worker_id) {
            Some(slot) => {
                info.reputation = slot.info.reputation;
                slot.info = info;
                slot.expires_at_ms = now + self.ttl_ms;
            }
            None => {
                inner.workers.insert(
                    info.worker_id.clone(),
                    WorkerSlot {
                        info,
                        expires_at_ms: now + self.ttl_ms,
                        queue: BinaryHeap::new(),
                        running: HashMap::new(),
                        cancel_pending: HashSet::new(),
                        notify: Arc::new(Notify::new()),
                        ws: None,
                    },
                );
            }
        }
    }

    /// Applies a heartbeat body (merged into the record). Returns `None` for an unknown worker,
    /// else the task ids (of `current_tasks`) the worker must cancel.
    pub fn heartbeat(&self, worker_id: &str, body: Option<&Value>) -> Option<Vec<String>> {
        let now = now_ms();
        let mut inner = self.inner.lock().unwrap();
        let slot = inner.workers.get_mut(worker_id)?;
        slot.expires_at_ms = now + self.ttl_ms;
        let mut cancel = Vec::new();
        if let Some(Value::Object(map)) = body {
            for (k, v) in map {
                if matches!(k.as_str(), "security" | "timestamp") {
                    continue;
                }
                if k == "supported_skills"
                    && v.as_array().is_some_and(|a| a.is_empty())
                    && map.get("status").and_then(Value::as_str) != Some("offline")
                {
                    continue;
                }
                slot.info.record.insert(k.clone(), v.clone());
            }
            slot.info.refresh_from_record();
            if let Some(current) = map.get("current_tasks").and_then(Value::as_array) {
                for t in current.iter().filter_map(Value::as_str) {
                    if slot.cancel_pending.contains(t) {
                        cancel.push(t.to_owned());
                    }
                }
                // Forget cancellations the worker no longer reports.
                let reported: HashSet<&str> = current.iter().filter_map(Value::as_str).collect();
                slot.cancel_pending.retain(|t| reported.contains(t.as_str()));
            }
        }
        Some(cancel)
    }

    /// Whether the worker is known and live.
    pub fn is_live(&self, worker_id: &str) -> bool {
        let now = now_ms();
        self.inner.lock().unwrap().workers.get(worker_id).is_some_and(|s| s.expires_at_ms > now)
    }

    pub fn worker(&self, worker_id: &str) -> Option<WorkerInfo> {
        self.inner.lock().unwrap().workers.get(worker_id).map(|s| s.info.clone())
    }

    /// Live workers, sorted by id.
    pub fn live_workers(&self) -> Vec<(WorkerInfo, usize, usize)> {
        let now = now_ms();
        let inner = self.inner.lock().unwrap();
        let mut v: Vec<_> = inner
            .workers
            .values()
            .filter(|s| s.expires_at_ms > now)
            .map(|s| (s.info.clone(), s.queue.len(), s.running.len()))
            .collect();
        v.sort_by(|a, b| a.0.worker_id.cmp(&b.0.worker_id));
        v
    }

    pub fn queue_depth(&self) -> usize {
        let inner = self.inner.lock().unwrap();
        inner.workers.values().map(|s| s.queue.len()).sum::<usize>() + inner.unassigned.len()
    }

    /// Chooses a worker for `spec` and queues the task on it.
    pub fn assign(
        &self,
        job_id: &str,
        task_id: &str,
        spec: &TaskSpec,
        deadline_ms: Option<u64>,
    ) -> Result<String, NoWorker> {
        let mut inner = self.inner.lock().unwrap();
        let worker_id = self.choose(&inner, spec, now_ms())?;
        let slot = inner.workers.get_mut(&worker_id).expect("chosen worker exists");
        slot.queue.push(QueuedTask {
            job_id: job_id.to_owned(),
            task_id: task_id.to_owned(),
            spec: spec.clone(),
            priority: spec.priority,
            deadline_ms,
            enqueued_ms: now_ms(),
            seq: self.seq.fetch_add(1, AtomicOrdering::Relaxed),
        });
        slot.notify.notify_one();
        Ok(worker_id)
    }

    /// Remembers a task that no worker can take yet.
    pub fn park(&self, task: Unassigned) {
        let mut inner = self.inner.lock().unwrap();
        if !inner.unassigned.iter().any(|u| u.task_id == task.task_id) {
            inner.unassigned.push(task);
        }
    }

    /// Unassigned tasks that some live worker can now take (removed from the list).
    pub fn take_assignable(&self) -> Vec<Unassigned> {
        let now = now_ms();
        let mut inner = self.inner.lock().unwrap();
        let list = std::mem::take(&mut inner.unassigned);
        let (ready, waiting): (Vec<_>, Vec<_>) =
            list.into_iter().partition(|u| self.choose(&inner, &u.spec, now).is_ok());
        inner.unassigned = waiting;
        ready
    }

    /// Drops tasks from queues and the unassigned list; running ones are marked for cancellation
    /// (heartbeat `cancel_task_ids`) and pushed over the worker's WebSocket if it has one.
    pub fn cancel(&self, tasks: &[(String, Option<String>, String)]) {
        let mut inner = self.inner.lock().unwrap();
        for (task_id, worker_id, job_id) in tasks {
            inner.unassigned.retain(|u| &u.task_id != task_id);
            let Some(worker_id) = worker_id else { continue };
            let Some(slot) = inner.workers.get_mut(worker_id) else { continue };
            let before = slot.queue.len();
            slot.queue.retain(|q| &q.task_id != task_id);
            if slot.queue.len() != before {
                continue;
            }
            slot.running.remove(task_id);
            slot.cancel_pending.insert(task_id.clone());
            if let Some(ws) = &slot.ws {
                let _ = ws.send(WorkerCommand {
                    command: "cancel_task".into(),
                    task_id: Some(task_id.clone()),
                    job_id: Some(job_id.clone()),
                });
            }
        }
    }

    /// Marks a task as answered.
    pub fn finished(&self, worker_id: &str, task_id: &str) {
        if let Some(slot) = self.inner.lock().unwrap().workers.get_mut(worker_id) {
            slot.running.remove(task_id);
        }
    }

    /// Takes the next task of the worker's queue, if any.
    pub fn try_next(&self, worker_id: &str) -> Option<QueuedTask> {
        let now = now_ms();
        let mut inner = self.inner.lock().unwrap();
        let slot = inner.workers.get_mut(worker_id)?;
        let task = slot.queue.pop()?;
        slot.running.insert(
            task.task_id.clone(),
            Running {
                job_id: task.job_id.clone(),
                picked_ms: now,
                timeout_ms: task.spec.timeout_seconds.map(|s| (s * 1000.0) as u64),
                deadline_ms: task.deadline_ms,
            },
        );
        Some(task)
    }

    /// The worker's wake-up signal (for long-polls).
    pub fn notifier(&self, worker_id: &str) -> Option<Arc<Notify>> {
        self.inner.lock().unwrap().workers.get(worker_id).map(|s| s.notify.clone())
    }

    /// Connects a WebSocket command channel (replacing an older one).
    pub fn attach_ws(&self, worker_id: &str, tx: mpsc::UnboundedSender<WorkerCommand>) -> bool {
        match self.inner.lock().unwrap().workers.get_mut(worker_id) {
            Some(slot) => {
                slot.ws = Some(tx);
                slot.info.websockets = true;
                true
            }
            None => false,
        }
    }

    pub fn detach_ws(&self, worker_id: &str, tx: &mpsc::UnboundedSender<WorkerCommand>) {
        if let Some(slot) = self.inner.lock().unwrap().workers.get_mut(worker_id) {
            if slot.ws.as_ref().is_some_and(|w| w.same_channel(tx)) {
                slot.ws = None;
            }
        }
    }

    /// Marks a worker offline (final heartbeat): its queued tasks come back for re-dispatch.
    pub fn remove(&self, worker_id: &str) -> (Vec<QueuedTask>, Vec<Orphan>) {
        let mut inner = self.inner.lock().unwrap();
        match inner.workers.remove(worker_id) {
            Some(slot) => (
                slot.queue.into_vec(),
                slot.running
                    .into_iter()
                    .map(|(task_id, r)| Orphan { job_id: r.job_id, task_id, worker_id: worker_id.to_owned() })
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        }
    }

    /// Tasks past a deadline (removed from queues / running sets; the caller fails or retries them).
    pub fn overdue(&self, now: u64, default_exec_ms: u64) -> Vec<OverdueTask> {
        let mut inner = self.inner.lock().unwrap();
        let mut out = Vec::new();
        let dispatch_due = |spec: &TaskSpec, since: u64, deadline: Option<u64>| {
            let by_dispatch = spec.dispatch_timeout_seconds.map(|s| since + (s * 1000.0) as u64);
            [by_dispatch, deadline].into_iter().flatten().min().is_some_and(|d| d <= now)
        };
        inner.unassigned.retain(|u| {
            let due = dispatch_due(&u.spec, u.parked_ms, u.deadline_ms);
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
            let before = slot.queue.len();
            if before > 0 {
                let mut keep = BinaryHeap::with_capacity(before);
                for q in std::mem::take(&mut slot.queue) {
                    if dispatch_due(&q.spec, q.enqueued_ms, q.deadline_ms) {
                        out.push(OverdueTask {
                            job_id: q.job_id,
                            task_id: q.task_id,
                            worker_id: Some(wid.clone()),
                            kind: Overdue::Dispatch,
                        });
                    } else {
                        keep.push(q);
                    }
                }
                slot.queue = keep;
            }
            slot.running.retain(|tid, r| {
                let exec = r.picked_ms + r.timeout_ms.unwrap_or(default_exec_ms);
                let due = exec <= now || r.deadline_ms.is_some_and(|d| d <= now);
                if due {
                    out.push(OverdueTask {
                        job_id: r.job_id.clone(),
                        task_id: tid.clone(),
                        worker_id: Some(wid.clone()),
                        kind: Overdue::Execution,
                    });
                    slot.cancel_pending.insert(tid.clone());
                    if let Some(ws) = &slot.ws {
                        let _ = ws.send(WorkerCommand {
                            command: "cancel_task".into(),
                            task_id: Some(tid.clone()),
                            job_id: Some(r.job_id.clone()),
                        });
                    }
                }
                !due
            });
        }
        out
    }

    /// Removes workers whose TTL passed. Returns their queued tasks (to dispatch again) and the
    /// tasks they were running (to re-queue on another worker).
    pub fn expire(&self, now: u64) -> (Vec<QueuedTask>, Vec<Orphan>) {
        let mut inner = self.inner.lock().unwrap();
        let dead: Vec<String> =
            inner.workers.iter().filter(|(_, s)| s.expires_at_ms <= now).map(|(k, _)| k.clone()).collect();
        let mut queued = Vec::new();
        let mut orphans = Vec::new();
        for id in dead {
            if let Some(slot) = inner.workers.remove(&id) {
                tracing::warn!(worker_id = %id, "worker expired (no heartbeat); re-queueing its tasks");
                queued.extend(slot.queue.into_vec());
                orphans.extend(slot.running.into_iter().map(|(task_id, r)| Orphan {
                    job_id: r.job_id,
                    task_id,
                    worker_id: id.clone(),
                }));
            }
        }
        (queued, orphans)
    }

    /// Changes a worker's reputation by `delta` (clamped to 0.0..=1.0).
    pub fn adjust_reputation(&self, worker_id: &str, delta: f64) {
        if let Some(slot) = self.inner.lock().unwrap().workers.get_mut(worker_id) {
            slot.info.reputation = (slot.info.reputation + delta).clamp(0.0, 1.0);
        }
    }

    fn choose(&self, inner: &Inner, spec: &TaskSpec, now: u64) -> Result<String, NoWorker> {
        let skill = spec.task_type.as_str();
        let mut with_skill = 0usize;
        let mut why = String::new();
        let mut candidates: Vec<(&WorkerSlot, usize)> = Vec::new();
        for slot in inner.workers.values() {
            let w = &slot.info;
            if slot.expires_at_ms <= now || w.status == "offline" || !w.has_skill(skill) {
                continue;
            }
            with_skill += 1;
            if let Err(reason) = self.eligible(w, spec) {
                why = reason;
                continue;
            }
            candidates.push((slot, slot.queue.len() + slot.running.len()));
        }
        if candidates.is_empty() {
            return Err(if with_skill == 0 { NoWorker::NoSkill } else { NoWorker::Filtered(why) });
        }
        candidates.sort_by(|a, b| a.0.info.worker_id.cmp(&b.0.info.worker_id));
        // Workers that reported `full`/`busy` go last, but are still used when nobody else is there.
        let available = |s: &WorkerSlot| matches!(s.info.status.as_str(), "idle" | "" | "draining") as u8;
        let rr = self.rr.fetch_add(1, AtomicOrdering::Relaxed) as usize;
        let pick = match spec.dispatch_strategy {
            DispatchStrategy::RoundRobin => rr % candidates.len(),
            DispatchStrategy::LeastConnections => {
                argmin(&candidates, rr, |(s, load)| (1 - available(s), *load as f64, 0.0))
            }
            DispatchStrategy::Cheapest => {
                argmin(&candidates, rr, |(s, load)| (1 - available(s), s.info.cost(skill), *load as f64))
            }
            DispatchStrategy::BestValue => argmin(&candidates, rr, |(s, load)| {
                let cost = s.info.cost(skill);
                let value = if cost.is_finite() && cost > 0.0 { s.info.reputation / cost } else { s.info.reputation };
                (1 - available(s), -value, *load as f64)
            }),
            DispatchStrategy::Overflow => {
                // Fill workers in id order up to the soft limit, then spill over to the least loaded.
                candidates
                    .iter()
                    .position(|(s, load)| available(s) == 1 && *load < OVERFLOW_SOFT_LIMIT)
                    .unwrap_or_else(|| argmin(&candidates, rr, |(_, load)| (0, *load as f64, 0.0)))
            }
            DispatchStrategy::Default => argmin(&candidates, rr, |(s, load)| {
                (1 - available(s), s.info.cost(skill), *load as f64 - s.info.reputation)
            }),
        };
        Ok(candidates[pick].0.info.worker_id.clone())
    }

    fn eligible(&self, w: &WorkerInfo, spec: &TaskSpec) -> Result<(), String> {
        if w.reputation < self.min_reputation {
            return Err(format!("reputation below {}", self.min_reputation));
        }
        if let Some(max) = spec.max_cost {
            if w.cost(&spec.task_type) > max {
                return Err(format!("cost above max_cost {max}"));
            }
        }
        let skill = w.skills.iter().find(|s| s.name == spec.task_type);
        if let Some(v) = &spec.skill_version {
            if skill.and_then(|s| s.version.as_ref()) != Some(v) {
                return Err(format!("skill version is not {v}"));
            }
        }
        if let Some(t) = &spec.skill_type {
            if skill.and_then(|s| s.skill_type.as_ref()) != Some(t) {
                return Err(format!("skill type is not {t}"));
            }
        }
        if let Some(req) = &spec.resource_requirements {
            super::requirements::check(&Value::Object(w.record.clone()), req)?;
        }
        Ok(())
    }
}

const OVERFLOW_SOFT_LIMIT: usize = 3;

/// Index of the smallest key; ties are broken by rotating with `rr`, so equally good workers share load.
fn argmin<T>(items: &[T], rr: usize, key: impl Fn(&T) -> (u8, f64, f64)) -> usize {
    let keys: Vec<(u8, f64, f64)> = items.iter().map(key).collect();
    let best = keys
        .iter()
        .copied()
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.total_cmp(&b.2)))
        .expect("non-empty");
    let ties: Vec<usize> = (0..keys.len()).filter(|&i| keys[i] == best).collect();
    ties[rr % ties.len()]
}
