//! Workers, their queues and running tasks, and the messages between orchestrator instances:
//! the [`WorkerStore`] and [`Bus`] traits and the records they keep.
//!
//! Every method of a [`WorkerStore`] is atomic on its own, so several instances can share one
//! store; the [`Dispatcher`](crate::server::dispatch::Dispatcher) decides which worker gets a
//! task, the store only keeps what was decided.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{StorageError, StorageFuture};
use crate::actions::TaskSpec;
use crate::protocol::worker_status;

/// What the dispatcher needs to know about a worker (from its registration and heartbeats).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub worker_type: String,
    /// The registration body as sent, merged with later heartbeats (for `GET /workers`).
    pub record: serde_json::Map<String, Value>,
    pub skills: Vec<SkillView>,
    pub cost_per_skill: HashMap<String, f64>,
    /// `idle`, `busy`, `full`, `draining`, `offline`, ...: only an `idle` worker (or one that
    /// reported no status) is given new tasks ([`WorkerInfo::takes_new_tasks`]).
    pub status: String,
    pub reputation: f64,
    pub websockets: bool,
    /// Skills the worker reported hot (`hot_skills` of its registration or last heartbeat,
    /// names or `{"name": ..}` objects): dispatch prefers hot workers.
    #[serde(default)]
    pub hot_skills: Vec<String>,
}

/// One skill of a worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SkillView {
    pub name: String,
    pub version: Option<String>,
    pub skill_type: Option<String>,
}

impl WorkerInfo {
    /// Reads the fields dispatch needs from a registration body; unknown fields are kept in `record`.
    pub fn from_registration(body: &Value) -> Self {
        let mut record = body.as_object().cloned().unwrap_or_default();
        record.remove("security");
        let mut info = WorkerInfo {
            worker_id: body["worker_id"].as_str().unwrap_or_default().to_owned(),
            worker_type: body["worker_type"].as_str().unwrap_or("generic").to_owned(),
            record,
            status: worker_status::IDLE.into(),
            reputation: 1.0,
            ..Default::default()
        };
        info.refresh_from_record();
        info
    }

    /// Merges a heartbeat body into the record (the SDK's final `offline` heartbeat sends an
    /// empty skill list, which is kept only then). A heartbeat without `hot_skills` reports none:
    /// both SDKs leave the list out when it is empty, so a skill that went cold stops counting
    /// as hot (Avtomatika keeps the last non-empty list).
    pub fn merge_heartbeat(&mut self, map: &serde_json::Map<String, Value>) {
        let offline = map.get("status").and_then(Value::as_str) == Some(worker_status::OFFLINE);
        if !map.contains_key("hot_skills") {
            self.record.remove("hot_skills");
        }
        for (k, v) in map {
            if matches!(k.as_str(), "security" | "timestamp") {
                continue;
            }
            if k == "supported_skills" && v.as_array().is_some_and(|a| a.is_empty()) && !offline {
                continue;
            }
            self.record.insert(k.clone(), v.clone());
        }
        self.refresh_from_record();
    }

    /// Re-derives the typed view after `record` changed.
    pub fn refresh_from_record(&mut self) {
        let r = &self.record;
        if let Some(skills) = r.get("supported_skills").and_then(Value::as_array) {
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
        let caps = r.get("capabilities").cloned().unwrap_or(Value::Null);
        if let Some(costs) = caps["cost_per_skill"].as_object() {
            self.cost_per_skill = costs.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect();
        }
        self.websockets =
            caps["extra"]["websockets"].as_bool().unwrap_or(false) || caps["websockets"].as_bool().unwrap_or(false);
        if let Some(s) = r.get("status").and_then(Value::as_str) {
            self.status = s.to_owned();
        }
        self.hot_skills = match r.get("hot_skills") {
            Some(Value::Array(hot)) => {
                hot.iter().filter_map(|h| h.as_str().or_else(|| h["name"].as_str())).map(str::to_owned).collect()
            }
            _ => Vec::new(),
        };
    }

    pub fn has_skill(&self, name: &str) -> bool {
        self.skills.iter().any(|s| s.name == name)
    }

    /// Sets the status (in the record too, where heartbeats merge theirs).
    pub fn set_status(&mut self, status: &str) {
        self.record.insert("status".into(), Value::String(status.to_owned()));
        self.status = status.to_owned();
    }

    /// Whether the worker reported `skill` hot.
    pub fn is_hot(&self, skill: &str) -> bool {
        self.hot_skills.iter().any(|h| h == skill)
    }

    /// Whether new tasks may go to this worker: its last report was `idle` (or had no status).
    /// `busy` and `full` workers take nothing new until they report `idle` or poll for work
    /// (both SDKs poll only with a free slot); a `draining` one finishes what it runs and takes
    /// nothing new; `offline` and any other status take nothing either.
    pub fn takes_new_tasks(&self) -> bool {
        self.reports_idle() && self.operator_drain().is_none()
    }

    /// Whether its last report was `idle` (or had no status): [`WorkerInfo::takes_new_tasks`]
    /// without the operator's drain, for a caller that looked at that already.
    pub(crate) fn reports_idle(&self) -> bool {
        matches!(self.status.as_str(), worker_status::IDLE | "")
    }

    /// Why an operator drained the worker (the dashboard's drain), if one did: it then takes no
    /// new tasks whatever it reports, until it registers again.
    pub fn operator_drain(&self) -> Option<&str> {
        let drain = self.record.get(OPERATOR_DRAIN)?;
        Some(drain.get("reason").and_then(Value::as_str).unwrap_or(""))
    }

    pub fn cost(&self, skill: &str) -> f64 {
        self.cost_per_skill.get(skill).copied().unwrap_or(f64::INFINITY)
    }
}

/// The member of a worker's record an operator's drain sets (`{"reason": .., "at_ms": ..}`).
pub const OPERATOR_DRAIN: &str = "operator_drain";

/// A live worker and how loaded it is.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerLoad {
    pub info: Arc<WorkerInfo>,
    pub queued: usize,
    pub running: usize,
}

/// A task waiting on a worker's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedTask {
    pub job_id: String,
    pub task_id: String,
    pub spec: TaskSpec,
    pub priority: f64,
    /// Epoch ms deadline for the result, if any.
    pub deadline_ms: Option<u64>,
    /// When the task was put on its queue (epoch ms).
    pub enqueued_ms: u64,
    /// Arrival order (FIFO within a priority), stamped by [`WorkerStore::enqueue`].
    pub seq: u64,
}

/// A command pushed to a worker over its WebSocket (and between instances in a
/// [`BusMessage::Command`]): the RXON message itself.
pub use crate::protocol::wire::WorkerCommand;

/// A task no worker could take yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unassigned {
    pub job_id: String,
    pub task_id: String,
    pub spec: TaskSpec,
    pub deadline_ms: Option<u64>,
    /// When it was parked (epoch ms).
    pub parked_ms: u64,
}

/// Which deadline a task missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Overdue {
    /// Not picked up within its dispatch timeout (or result deadline).
    Dispatch,
    /// Picked up, but no result within its execution timeout (or result deadline).
    Execution,
}

/// A task whose deadline passed (claimed by exactly one caller).
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

/// When a task waiting since `since` (queued or parked) misses its dispatch deadline, if ever.
pub(crate) fn dispatch_deadline(spec: &TaskSpec, since: u64, deadline: Option<u64>) -> Option<u64> {
    dispatch_deadline_after(spec.dispatch_timeout_seconds, since, deadline)
}

/// [`dispatch_deadline`] of a task whose dispatch timeout is `dispatch_timeout_seconds`.
pub(crate) fn dispatch_deadline_after(
    dispatch_timeout_seconds: Option<f64>,
    since: u64,
    deadline: Option<u64>,
) -> Option<u64> {
    let by_dispatch = dispatch_timeout_seconds.map(|s| crate::job::after_secs(since, s));
    [by_dispatch, deadline].into_iter().flatten().min()
}

/// How long a cancellation is repeated in heartbeat answers (a worker may report the task late).
pub const CANCEL_MEMORY_MS: u64 = 10 * 60 * 1000;

/// Where workers, queues and running tasks live. Every method is atomic on its own; methods
/// that hand something out (`pop`, `claim_parked`, `overdue`, `expire`) give each item to
/// exactly one caller, even with several orchestrator instances.
pub trait WorkerStore: Send + Sync + 'static {
    /// Adds or replaces a worker; re-registration keeps its queue, running tasks and reputation.
    fn register(&self, info: WorkerInfo, ttl_ms: u64) -> StorageFuture<'_, ()>;
    /// Refreshes the TTL and merges a heartbeat. `None` for an unknown worker, else the task ids
    /// of `current_tasks` the worker must cancel.
    fn heartbeat<'a>(
        &'a self,
        worker_id: &'a str,
        body: Option<&'a Value>,
        ttl_ms: u64,
    ) -> StorageFuture<'a, Option<Vec<String>>>;
    fn worker<'a>(&'a self, worker_id: &'a str) -> StorageFuture<'a, Option<WorkerInfo>>;
    /// Live workers (TTL not passed), sorted by id, with their loads.
    fn live_workers(&self, now: u64) -> StorageFuture<'_, Vec<WorkerLoad>>;
    /// The live workers to choose from when placing a task. A backend where listing them is
    /// costly may answer from a list up to a few hundred milliseconds old (with the tasks it
    /// queued, handed out and saw answered since counted in); [`WorkerStore::enqueue`] still
    /// refuses a worker that is gone.
    fn dispatch_view(&self, now: u64) -> StorageFuture<'_, Vec<WorkerLoad>> {
        self.live_workers(now)
    }
    /// Whether one worker is live (a backend can answer without listing every worker).
    fn is_live<'a>(&'a self, worker_id: &'a str, now: u64) -> StorageFuture<'a, bool> {
        Box::pin(async move { Ok(self.live_workers(now).await?.iter().any(|w| w.info.worker_id == worker_id)) })
    }
    /// Tasks queued on all workers plus parked tasks.
    fn queue_depth(&self) -> StorageFuture<'_, usize>;
    /// Queues a task on a worker, stamping its arrival order (`seq`: FIFO within a priority,
    /// across instances); false if the worker is gone.
    fn enqueue<'a>(&'a self, worker_id: &'a str, task: QueuedTask) -> StorageFuture<'a, bool>;
    /// Whether [`WorkerStore::enqueue`] also publishes [`BusMessage::Wake`] to the other
    /// instances in the same step (so the dispatcher does not publish it again).
    fn enqueue_wakes(&self) -> bool {
        false
    }
    /// Takes the next task of a worker's queue (highest priority, then FIFO) and records it as running.
    fn pop<'a>(&'a self, worker_id: &'a str, now: u64) -> StorageFuture<'a, Option<QueuedTask>>;
    /// Moves one task from the longest queue of another live worker that offers `skills` to `thief`.
    fn steal<'a>(&'a self, thief: &'a str, skills: &'a [String], now: u64) -> StorageFuture<'a, Option<QueuedTask>>;
    /// Forgets a running task (its result arrived).
    fn finished<'a>(&'a self, worker_id: &'a str, task_id: &'a str) -> StorageFuture<'a, ()>;
    /// Drops a task from its queue or the parked list; a running one is marked for cancellation.
    /// Returns true if the worker was running it (so it should be told).
    fn cancel<'a>(
        &'a self,
        task_id: &'a str,
        worker_id: Option<&'a str>,
        cancel_ttl_ms: u64,
    ) -> StorageFuture<'a, bool>;
    fn park(&self, task: Unassigned) -> StorageFuture<'_, ()>;
    fn parked(&self) -> StorageFuture<'_, Vec<Unassigned>>;
    /// Removes a parked task; true for exactly one caller.
    fn claim_parked<'a>(&'a self, task_id: &'a str) -> StorageFuture<'a, bool>;
    /// Removes a worker; returns its queued and running tasks.
    fn remove<'a>(&'a self, worker_id: &'a str) -> StorageFuture<'a, (Vec<QueuedTask>, Vec<Orphan>)>;
    /// Takes every task waiting on a worker's queue, highest priority first (the worker
    /// reported `draining`: its queued tasks go back through dispatch). The worker stays
    /// registered and keeps its running tasks.
    fn take_queue<'a>(&'a self, worker_id: &'a str) -> StorageFuture<'a, Vec<QueuedTask>>;
    /// A worker asks for work (it polls, so it has a free slot): if its last report was `busy`
    /// or `full`, its status becomes `idle` (any other status is kept, as is a report that came
    /// in meanwhile). True when it changed. Called for every poll: a backend where reading the
    /// record is costly may look at its dispatch view first.
    fn mark_idle<'a>(&'a self, worker_id: &'a str) -> StorageFuture<'a, bool>;
    fn adjust_reputation<'a>(&'a self, worker_id: &'a str, delta: f64) -> StorageFuture<'a, ()>;
    /// The next turn of the round-robin rotation, shared by every instance on this store
    /// (`None`: the store shares none, as in memory where there is one instance; the dispatcher
    /// then counts by itself).
    fn next_turn(&self) -> StorageFuture<'_, Option<u64>> {
        Box::pin(async { Ok(None) })
    }
    /// Claims at most `limit` tasks past a deadline (removed from queues, running sets and the
    /// parked list); the others stay for a later call.
    fn overdue(
        &self,
        now: u64,
        default_exec_ms: u64,
        cancel_ttl_ms: u64,
        limit: usize,
    ) -> StorageFuture<'_, Vec<OverdueTask>>;
    /// Claims workers whose TTL passed: removes them and returns their tasks.
    fn expire(&self, now: u64) -> StorageFuture<'_, (Vec<QueuedTask>, Vec<Orphan>)>;
    /// Whether the task is queued, running or parked anywhere (crash recovery re-places the
    /// in-flight tasks of a job that the store does not know).
    fn task_known<'a>(&'a self, task_id: &'a str) -> StorageFuture<'a, bool>;
}

/// A message between orchestrator instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BusMessage {
    /// A task was queued for this worker: wake its long-poll. (With the empty worker id: a
    /// Redis instance says hello after it subscribed, see `storage::redis`.)
    Wake(String),
    /// Send this command over the worker's WebSocket, wherever it is connected.
    Command(String, WorkerCommand),
    /// Read workers.toml again (an operator reloaded the worker tokens on one instance).
    ReloadWorkerTokens,
    /// Job and worker changes made on instance `from` for the dashboards' live streams of the
    /// other instances (feature `dashboard`; sent only while a dashboard is open somewhere, see
    /// [`Bus::set_watching`]). Each change is `{"job": {..}}` or `{"worker": {..}}`, oldest
    /// first; `lost` counts the changes left out (a full batch): receivers resync their streams.
    DashboardChanges { from: String, changes: Vec<serde_json::Value>, lost: u64 },
}

/// Delivers [`BusMessage`]s to every instance (including this one).
pub trait Bus: Send + Sync + 'static {
    fn publish(&self, msg: BusMessage) -> BoxFuture<'_, Result<(), StorageError>>;
    /// Marks, for `ttl`, that a dashboard stream is open on some instance (what
    /// [`Bus::watched`] reads). The default (a bus that keeps no state) does nothing.
    fn set_watching(&self, ttl: std::time::Duration) -> BoxFuture<'_, Result<(), StorageError>> {
        let _ = ttl;
        Box::pin(async { Ok(()) })
    }
    /// Whether a dashboard stream is open on any instance (set within its TTL by
    /// [`Bus::set_watching`]). The default: never.
    fn watched(&self) -> BoxFuture<'_, Result<bool, StorageError>> {
        Box::pin(async { Ok(false) })
    }
}
