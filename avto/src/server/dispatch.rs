//! Choosing a worker for a task, reputation rewards, and waking the workers' long-polls and
//! WebSockets.
//!
//! Dispatch is push-to-queue (as in Avtomatika): when a blueprint dispatches, the dispatcher
//! picks the best eligible live worker and puts the task on that worker's priority queue
//! (FIFO within a priority). Long-polls drain the queue. A task with no eligible worker waits
//! in the parked list (with the reason visible on the job) and is assigned as soon as a
//! suitable worker registers or heartbeats, or a `busy` / `full` one polls.
//!
//! Only workers whose last report was `idle` get new tasks; among them the ones that reported
//! the skill hot, if any; then the dispatch's strategy chooses (`Dispatcher::choose`). A
//! `busy` or `full` worker is `idle` again with its next heartbeat or as soon as it polls
//! ([`Dispatcher::poll_resumes`]); a `draining` one hands its queued tasks back
//! ([`Dispatcher::take_queue`]) and finishes the ones it runs.
//!
//! State lives behind a [`WorkerStore`] (in [`crate::storage`]: memory always, Redis behind a
//! feature) so several orchestrator instances can share workers and queues; wake-ups of
//! long-polls and WebSocket commands for workers connected to another instance travel over a
//! [`Bus`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use super::task_contracts::{Schema, TaskContracts, WorkerContracts};
use crate::actions::{DispatchStrategy, TaskSpec};
use crate::job::now_ms;
use crate::protocol::worker_status;
use crate::storage::{
    Bus, BusMessage, Orphan, Overdue, OverdueTask, QueuedTask, StorageError, Unassigned, WorkerCommand, WorkerInfo,
    WorkerLoad, WorkerStore, CANCEL_MEMORY_MS,
};

/// Why no worker was chosen.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NoWorker {
    /// No live worker offers the skill.
    NoSkill,
    /// Workers offer the skill but none passes the filters (cost, resources, version, reputation).
    Filtered(String),
    /// The store could not be reached.
    Storage(String),
    /// The params break the `input_schema` of every live worker offering the skill (the
    /// violations of one of them): no worker will take the task as it is.
    Contract(String),
}

impl NoWorker {
    pub fn reason(&self, task_type: &str) -> String {
        match self {
            NoWorker::NoSkill => format!("no live worker offers skill `{task_type}`; waiting for one"),
            NoWorker::Filtered(why) => format!("no eligible worker for `{task_type}` ({why}); waiting for one"),
            NoWorker::Storage(e) => format!("dispatch store unavailable ({e}); will retry"),
            NoWorker::Contract(why) => format!("the params break the input_schema of skill `{task_type}`: {why}"),
        }
    }
}

/// Why the workers offering a skill were not chosen, each distinct reason with how many workers
/// it ruled out (spec 4.1: "rejection reasons with counts"), most frequent first. Bounded: the
/// first [`Rejections::MAX`] distinct reasons are kept, the others only counted.
#[derive(Debug, Default)]
struct Rejections {
    reasons: Vec<(String, usize)>,
    others: usize,
}

impl Rejections {
    const MAX: usize = 8;

    fn add(&mut self, reason: String) {
        if let Some((_, n)) = self.reasons.iter_mut().find(|(r, _)| *r == reason) {
            *n += 1;
        } else if self.reasons.len() < Self::MAX {
            self.reasons.push((reason, 1));
        } else {
            self.others += 1;
        }
    }
}

impl std::fmt::Display for Rejections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sorted: Vec<&(String, usize)> = self.reasons.iter().collect();
        sorted.sort_by_key(|r| std::cmp::Reverse(r.1));
        let parts: Vec<String> =
            sorted.iter().map(|(r, n)| format!("{n} worker{}: {r}", if *n == 1 { "" } else { "s" })).collect();
        write!(f, "{}", parts.join("; "))?;
        if self.others > 0 {
            write!(f, "; {} more for other reasons", self.others)?;
        }
        Ok(())
    }
}

/// The default `DISPATCHER_SOFT_LIMIT`: `overflow` keeps a worker while fewer tasks than this
/// wait on its queue.
pub(crate) const DEFAULT_SOFT_LIMIT: usize = 3;

/// What absent params are checked as (the task payload then carries none; the SDKs read `{}`).
static EMPTY_PARAMS: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| Value::Object(Default::default()));

/// The dispatcher: selection logic over a [`WorkerStore`], plus this instance's long-poll
/// waiters and WebSocket connections.
pub struct Dispatcher {
    store: Arc<dyn WorkerStore>,
    bus: Option<Arc<dyn Bus>>,
    notifies: Mutex<HashMap<String, Arc<Notify>>>,
    sockets: Mutex<HashMap<String, mpsc::UnboundedSender<WorkerCommand>>>,
    round_robin: AtomicU64,
    ttl_ms: u64,
    min_reputation: f64,
    /// `DISPATCHER_MAX_CANDIDATES` (unbounded unless set).
    max_candidates: usize,
    /// `DISPATCHER_SOFT_LIMIT`: the queue length at which `overflow` moves on to dearer workers.
    soft_limit: usize,
    rewards: Arc<Rewards>,
    /// The skills' schemas, compiled (params are checked against them here).
    contracts: TaskContracts,
}

/// How long the rewards for successes are collected before they are sent to the store.
const REWARD_BATCH: std::time::Duration = std::time::Duration::from_millis(250);

/// Reputation rewards not sent to the store yet (see [`Dispatcher::adjust_reputation`]). Every
/// successful result earns one, and sending each was a store round trip per job; collected per
/// worker, they cost one per worker every [`REWARD_BATCH`]. A penalty sends the worker's pending
/// rewards first, so changes reach the store in order and the clamping to [0, 1] gives what one
/// by one would.
#[derive(Default)]
struct Rewards {
    pending: Mutex<HashMap<String, f64>>,
    /// Held while sending, so a penalty or a read never overtakes an earlier reward on its way.
    sending: tokio::sync::Mutex<()>,
}

impl Rewards {
    /// Sends the pending rewards of one worker (or of all); the caller holds `sending`.
    async fn send(&self, store: &dyn WorkerStore, only: Option<&str>) {
        let batch: Vec<(String, f64)> = {
            let mut pending = self.pending.lock();
            match only {
                Some(w) => pending.remove_entry(w).into_iter().collect(),
                None => pending.drain().collect(),
            }
        };
        for (worker_id, delta) in batch {
            if let Err(e) = store.adjust_reputation(&worker_id, delta).await {
                tracing::warn!(%worker_id, error = %e, "could not record a reputation reward");
            }
        }
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("ttl_ms", &self.ttl_ms).finish()
    }
}

impl Dispatcher {
    pub fn new(store: Arc<dyn WorkerStore>, ttl: std::time::Duration, min_reputation: f64) -> Self {
        Dispatcher {
            store,
            bus: None,
            notifies: Mutex::default(),
            sockets: Mutex::default(),
            round_robin: AtomicU64::new(0),
            ttl_ms: ttl.as_millis() as u64,
            min_reputation,
            max_candidates: usize::MAX,
            soft_limit: DEFAULT_SOFT_LIMIT,
            rewards: Arc::default(),
            contracts: TaskContracts::new(),
        }
    }

    /// Considers at most `n` eligible workers per dispatch (`DISPATCHER_MAX_CANDIDATES`): a
    /// bound on the work of one dispatch in a large fleet. The scan starts at a position that
    /// moves with every dispatch, so every worker is in some window.
    pub fn with_max_candidates(mut self, n: usize) -> Self {
        self.max_candidates = n.max(1);
        self
    }

    /// The queue length at which the `overflow` strategy moves on to a dearer worker
    /// (`DISPATCHER_SOFT_LIMIT`, default 3).
    pub fn with_soft_limit(mut self, n: usize) -> Self {
        self.soft_limit = n;
        self
    }

    /// Routes wake-ups and commands through `bus` (several instances).
    pub fn with_bus(mut self, bus: Arc<dyn Bus>) -> Self {
        self.bus = Some(bus);
        self
    }

    pub fn store(&self) -> &Arc<dyn WorkerStore> {
        &self.store
    }

    /// The task contracts of the workers' skills, compiled.
    pub(crate) fn contracts(&self) -> &TaskContracts {
        &self.contracts
    }

    /// The compiled contracts of `worker_id` (from its record, read again when older than
    /// [`super::task_contracts::FRESH`]); `None` for an unknown worker.
    pub(crate) async fn contracts_of(&self, worker_id: &str) -> Option<Arc<WorkerContracts>> {
        if let Some(c) = self.contracts.cached(worker_id) {
            return Some(c);
        }
        let info = self.store.worker(worker_id).await.ok().flatten()?;
        Some(self.contracts.of(worker_id, &info.record))
    }

    /// Whether wake-ups and commands travel over a bus (several instances).
    pub fn has_bus(&self) -> bool {
        self.bus.is_some()
    }

    /// Applies a message from the bus (called by the bus subscriber of this instance).
    pub fn on_bus(&self, msg: BusMessage) {
        match msg {
            BusMessage::Wake(worker) => self.wake_local(&worker),
            BusMessage::Command(worker, cmd) => {
                if let Some(tx) = self.sockets.lock().get(&worker) {
                    let _ = tx.send(cmd);
                }
            }
            // Not the dispatcher's: the core reads workers.toml (see `Core::on_bus`).
            BusMessage::ReloadWorkerTokens | BusMessage::DashboardChanges { .. } => {}
        }
    }

    /// The bus between the instances, if any (the dashboard relays its changes over it).
    #[cfg(feature = "dashboard")]
    pub(crate) fn bus(&self) -> Option<&Arc<dyn Bus>> {
        self.bus.as_ref()
    }

    /// Sends `msg` to every instance sharing the bus (none without one).
    pub(crate) async fn broadcast(&self, msg: BusMessage) -> Result<(), crate::storage::StorageError> {
        match &self.bus {
            Some(bus) => bus.publish(msg).await,
            None => Ok(()),
        }
    }

    fn wake_local(&self, worker_id: &str) {
        if let Some(n) = self.notifies.lock().get(worker_id) {
            n.notify_one();
        }
    }

    /// Wakes the worker's long-polls on other instances. (A local long-poll is always woken
    /// directly as well: the bus may be reconnecting, and a second wake-up, from the bus, only
    /// makes the poll look at its queue once more.)
    async fn publish_wake(&self, worker_id: &str) {
        if let Some(bus) = &self.bus {
            let _ = bus.publish(BusMessage::Wake(worker_id.to_owned())).await;
        }
    }

    pub(crate) async fn command(&self, worker_id: &str, cmd: WorkerCommand) {
        let local = self.sockets.lock().get(worker_id).cloned();
        if let Some(tx) = local {
            let _ = tx.send(cmd);
        } else if let Some(bus) = &self.bus {
            let _ = bus.publish(BusMessage::Command(worker_id.to_owned(), cmd)).await;
        }
    }

    pub async fn register(&self, info: WorkerInfo) -> Result<(), StorageError> {
        self.store.register(info, self.ttl_ms).await
    }

    pub async fn heartbeat(&self, worker_id: &str, body: Option<&Value>) -> Result<Option<Vec<String>>, StorageError> {
        self.store.heartbeat(worker_id, body, self.ttl_ms).await
    }

    pub async fn worker(&self, worker_id: &str) -> Option<WorkerInfo> {
        let sending = self.rewards.sending.lock().await;
        self.rewards.send(&*self.store, Some(worker_id)).await;
        drop(sending);
        self.store.worker(worker_id).await.ok().flatten()
    }

    pub async fn is_live(&self, worker_id: &str) -> bool {
        self.store.is_live(worker_id, now_ms()).await.unwrap_or(false)
    }

    pub async fn live_workers(&self) -> Vec<WorkerLoad> {
        let sending = self.rewards.sending.lock().await;
        self.rewards.send(&*self.store, None).await;
        drop(sending);
        self.store.live_workers(now_ms()).await.unwrap_or_default()
    }

    pub async fn queue_depth(&self) -> usize {
        self.store.queue_depth().await.unwrap_or(0)
    }

    /// Chooses a worker for `spec` and queues the task on it.
    pub async fn assign(
        &self,
        job_id: &str,
        task_id: &str,
        spec: &TaskSpec,
        deadline_ms: Option<u64>,
    ) -> Result<String, NoWorker> {
        self.assign_with(job_id, task_id, spec, spec.dispatch_timeout_seconds, deadline_ms, false)
            .await
            .map(|(worker, _)| worker)
    }

    /// Chooses a worker for `spec` and, unless `defer`, queues the task on it. With `defer` the
    /// task to queue comes back instead (the job store queues it with the job's commit:
    /// [`crate::storage::JobStore::commit_queueing`]; then call [`Dispatcher::queued_on`]). The
    /// queued task's spec is `spec` with `dispatch_timeout_seconds` (the caller's default filled in).
    pub(crate) async fn assign_with(
        &self,
        job_id: &str,
        task_id: &str,
        spec: &TaskSpec,
        dispatch_timeout_seconds: Option<f64>,
        deadline_ms: Option<u64>,
        defer: bool,
    ) -> Result<(String, Option<QueuedTask>), NoWorker> {
        let storage = |e: StorageError| NoWorker::Storage(e.to_string());
        // First from the store's dispatch view, which may be slightly old; from a fresh list when
        // that view has no eligible worker (one may have just registered) or the chosen one is gone.
        let mut fresh = false;
        // Round robin rotates over the workers of every instance, not of each one.
        let shared_turn = match spec.dispatch_strategy {
            DispatchStrategy::RoundRobin => self.store.next_turn().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not read the shared round-robin turn; this instance's own is used");
                None
            }),
            _ => None,
        };
        for _ in 0..3 {
            let now = now_ms();
            let workers = match fresh {
                false => self.store.dispatch_view(now).await,
                true => self.store.live_workers(now).await,
            }
            .map_err(storage)?;
            let worker_id = match self.choose(&workers, spec, shared_turn) {
                Ok(id) => id,
                Err(_) if !fresh => {
                    fresh = true;
                    continue;
                }
                Err(no) => return Err(no),
            };
            let task = QueuedTask {
                job_id: job_id.to_owned(),
                task_id: task_id.to_owned(),
                spec: TaskSpec { dispatch_timeout_seconds, ..spec.clone() },
                priority: spec.priority,
                deadline_ms,
                enqueued_ms: now,
                seq: 0,
            };
            if defer {
                return Ok((worker_id, Some(task)));
            }
            if self.store.enqueue(&worker_id, task).await.map_err(storage)? {
                self.wake_local(&worker_id);
                if !self.store.enqueue_wakes() {
                    self.publish_wake(&worker_id).await;
                }
                return Ok((worker_id, None));
            }
            // The worker vanished between choosing and queueing: choose again, from a fresh list.
            fresh = true;
        }
        Err(NoWorker::Filtered("workers keep disappearing".into()))
    }

    /// A task was queued on `worker_id` by a job's commit (which woke the other instances):
    /// wakes its long-polls here.
    pub(crate) fn queued_on(&self, worker_id: &str) {
        self.wake_local(worker_id);
    }

    /// Remembers a task that no worker can take yet.
    pub async fn park(&self, task: Unassigned) -> Result<(), StorageError> {
        self.store.park(task).await
    }

    /// Parked tasks that some live worker can now take, the highest priority first (FIFO within a
    /// priority); each is claimed for this caller.
    pub async fn take_assignable(&self) -> Vec<Unassigned> {
        let Ok(mut parked) = self.store.parked().await else { return Vec::new() };
        if parked.is_empty() {
            return parked;
        }
        // The most urgent first, FIFO within a priority: that is the order they are placed in.
        parked.sort_by(|a, b| b.spec.priority.total_cmp(&a.spec.priority).then(a.parked_ms.cmp(&b.parked_ms)));
        let Ok(workers) = self.store.live_workers(now_ms()).await else { return Vec::new() };
        let mut out = Vec::new();
        for u in parked {
            // A task no worker will ever take as it is (its params break every contract) is
            // claimed too: placing it fails it.
            let takeable = matches!(self.choose(&workers, &u.spec, None), Ok(_) | Err(NoWorker::Contract(_)));
            if takeable && self.store.claim_parked(&u.task_id).await.unwrap_or(false) {
                out.push(u);
            }
        }
        out
    }

    /// Cancels tasks wherever they are; running ones are told (WebSocket push, heartbeat answer).
    pub async fn cancel(&self, tasks: &[(String, Option<String>, String)]) {
        for (task_id, worker_id, job_id) in tasks {
            let running = self.store.cancel(task_id, worker_id.as_deref(), CANCEL_MEMORY_MS).await.unwrap_or(false);
            if let (true, Some(worker)) = (running, worker_id) {
                self.command(worker, WorkerCommand::cancel_task(task_id, job_id)).await;
            }
        }
    }

    /// Marks a task as answered.
    pub async fn finished(&self, worker_id: &str, task_id: &str) {
        let _ = self.store.finished(worker_id, task_id).await;
    }

    /// The next task for a worker: its own queue first, then (if allowed) one stolen from the
    /// longest queue of another worker with the same skills.
    pub async fn try_next(&self, worker_id: &str, steal: bool) -> Result<Option<QueuedTask>, StorageError> {
        let now = now_ms();
        if let Some(t) = self.store.pop(worker_id, now).await? {
            return Ok(Some(t));
        }
        if !steal {
            return Ok(None);
        }
        self.try_steal(worker_id, now).await
    }

    /// One task stolen for `worker_id` from the longest queue of another worker with the same
    /// skills (none for a draining worker).
    pub async fn try_steal(&self, worker_id: &str, now: u64) -> Result<Option<QueuedTask>, StorageError> {
        // The thief's skills from the dispatch view (kept for dispatch anyway) rather than a read
        // of its record on every empty poll.
        let view = self.store.dispatch_view(now).await?;
        let me: Arc<WorkerInfo> = match view.iter().find(|w| w.info.worker_id == worker_id) {
            Some(me) => me.info.clone(),
            None => match self.store.worker(worker_id).await? {
                Some(me) => Arc::new(me),
                None => return Ok(None),
            },
        };
        // A draining worker finishes what it has; it takes nothing from others.
        if me.status == worker_status::DRAINING || me.operator_drain().is_some() {
            return Ok(None);
        }
        let skills: Vec<String> = me.skills.iter().map(|s| s.name.clone()).collect();
        self.store.steal(worker_id, &skills, now).await
    }

    /// A worker asks for work. Both SDKs poll only with a free slot, so a `busy` or `full` it
    /// reported earlier is over: it is `idle` again, without waiting for its next heartbeat (up
    /// to the SDKs' 2 s cooldown later). True when its status changed, so parked tasks may now
    /// go to it.
    pub async fn poll_resumes(&self, worker_id: &str) -> bool {
        self.store.mark_idle(worker_id).await.unwrap_or_else(|e| {
            tracing::warn!(worker_id, error = %e, "could not record a polling worker as idle");
            false
        })
    }

    /// Takes the tasks waiting on a worker's queue (it reported `draining`), to be placed again.
    pub async fn take_queue(&self, worker_id: &str) -> Vec<QueuedTask> {
        self.store.take_queue(worker_id).await.unwrap_or_else(|e| {
            tracing::warn!(worker_id, error = %e, "could not take the queue of a draining worker");
            Vec::new()
        })
    }

    /// The worker's wake-up signal on this instance (for long-polls).
    pub fn notifier(&self, worker_id: &str) -> Arc<Notify> {
        self.notifies.lock().entry(worker_id.to_owned()).or_insert_with(|| Arc::new(Notify::new())).clone()
    }

    /// Connects a WebSocket command channel (replacing an older one on this instance).
    pub fn attach_ws(&self, worker_id: &str, tx: mpsc::UnboundedSender<WorkerCommand>) {
        self.sockets.lock().insert(worker_id.to_owned(), tx);
    }

    pub fn detach_ws(&self, worker_id: &str, tx: &mpsc::UnboundedSender<WorkerCommand>) {
        let mut sockets = self.sockets.lock();
        if sockets.get(worker_id).is_some_and(|w| w.same_channel(tx)) {
            sockets.remove(worker_id);
        }
    }

    /// Removes a worker (final heartbeat); its tasks come back for re-dispatch.
    pub async fn remove(&self, worker_id: &str) -> (Vec<QueuedTask>, Vec<Orphan>) {
        self.store.remove(worker_id).await.unwrap_or_default()
    }

    /// Changes a worker's reputation. Rewards (`delta > 0`, one per successful result) are sent
    /// to the store in batches every 250 ms, penalties at once after the worker's pending rewards;
    /// reads through the dispatcher send pending rewards first. Other instances see a reward up
    /// to 250 ms late, and a crash loses at most that much of them.
    pub async fn adjust_reputation(&self, worker_id: &str, delta: f64) {
        if delta > 0.0 {
            let first = {
                let mut pending = self.rewards.pending.lock();
                let first = pending.is_empty();
                *pending.entry(worker_id.to_owned()).or_insert(0.0) += delta;
                first
            };
            if first {
                let (store, rewards) = (self.store.clone(), self.rewards.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(REWARD_BATCH).await;
                    let _sending = rewards.sending.lock().await;
                    rewards.send(&*store, None).await;
                });
            }
            return;
        }
        let _sending = self.rewards.sending.lock().await;
        self.rewards.send(&*self.store, Some(worker_id)).await;
        let _ = self.store.adjust_reputation(worker_id, delta).await;
    }

    /// Claims at most `limit` overdue tasks; running ones are told to stop.
    pub async fn overdue(&self, now: u64, default_exec_ms: u64, limit: usize) -> Vec<OverdueTask> {
        let list = self.store.overdue(now, default_exec_ms, CANCEL_MEMORY_MS, limit).await.unwrap_or_default();
        for t in &list {
            if let (Overdue::Execution, Some(w)) = (t.kind, &t.worker_id) {
                self.command(w, WorkerCommand::cancel_task(&t.task_id, &t.job_id)).await;
            }
        }
        list
    }

    /// Claims dead workers and returns their tasks.
    pub async fn expire(&self, now: u64) -> (Vec<QueuedTask>, Vec<Orphan>) {
        self.store.expire(now).await.unwrap_or_default()
    }

    /// Chooses a worker for `spec` among `workers`: those offering the skill that pass the
    /// filters (reputation, `max_cost`, version, type, resources: [`Dispatcher::eligible`]; the
    /// params against the worker's `input_schema`) and take new tasks now (status `idle`:
    /// [`WorkerInfo::takes_new_tasks`]). When some of them reported the skill hot, only those;
    /// then the strategy of the dispatch picks one (ties rotate).
    ///
    /// `shared_turn`: the rotation's turn when the store shares one across instances.
    fn choose(&self, workers: &[WorkerLoad], spec: &TaskSpec, shared_turn: Option<u64>) -> Result<String, NoWorker> {
        let skill = spec.task_type.as_str();
        let mut with_skill = 0usize;
        let mut broken_contracts = 0usize;
        let mut contract_why = String::new();
        let mut why = Rejections::default();
        let mut candidates: Vec<&WorkerLoad> = Vec::new();
        let turn = shared_turn.unwrap_or_else(|| self.round_robin.fetch_add(1, AtomicOrdering::Relaxed)) as usize;
        // The params are checked once per distinct input schema, not once per worker.
        let params = if spec.params.is_null() { &EMPTY_PARAMS } else { &spec.params };
        let mut checked: Vec<(Arc<jsonschema::Validator>, Result<(), String>)> = Vec::new();
        // With a candidate cap the scan starts at a rotating position (every worker gets its turn).
        let start = if self.max_candidates < workers.len() { turn % workers.len() } else { 0 };
        for w in workers[start..].iter().chain(&workers[..start]) {
            if w.info.status == worker_status::OFFLINE || !w.info.has_skill(skill) {
                continue;
            }
            with_skill += 1;
            if let Err(reason) = self.eligible(&w.info, spec) {
                why.add(reason);
                continue;
            }
            // Params are checked last (the costliest filter), against this worker's own schema.
            let contracts = self.contracts.of(&w.info.worker_id, &w.info.record);
            let verdict = match contracts.validator(skill, Schema::Input) {
                None => Ok(()),
                Some(v) => match checked.iter().find(|(seen, _)| Arc::ptr_eq(seen, v)) {
                    Some((_, verdict)) => verdict.clone(),
                    None => {
                        let verdict = super::task_contracts::check(v, params);
                        checked.push((v.clone(), verdict.clone()));
                        verdict
                    }
                },
            };
            if let Err(violations) = verdict {
                broken_contracts += 1;
                why.add(format!("params break its input_schema: {violations}"));
                contract_why = violations;
                continue;
            }
            // After the contract: params no offering worker accepts fail the task at once, while
            // a worker that is `busy`, `full` or `draining` now may take it later.
            if w.info.operator_drain().is_some() {
                why.add("drained by the operator".to_owned());
                continue;
            }
            if !w.info.reports_idle() {
                why.add(format!("it reports `{:.32}` and takes no new tasks", w.info.status));
                continue;
            }
            candidates.push(w);
            if candidates.len() >= self.max_candidates {
                break;
            }
        }
        if candidates.is_empty() {
            return Err(match with_skill {
                0 => NoWorker::NoSkill,
                n if n == broken_contracts => NoWorker::Contract(contract_why),
                _ => NoWorker::Filtered(why.to_string()),
            });
        }
        // Hot workers (the skill is loaded) are preferred; the others when no hot one qualifies.
        if candidates.iter().any(|w| w.info.is_hot(skill)) {
            candidates.retain(|w| w.info.is_hot(skill));
        }
        let load = |w: &WorkerLoad| (w.queued + w.running) as f64;
        let cost = |w: &WorkerLoad| w.info.cost(skill);
        let pick = match spec.dispatch_strategy {
            DispatchStrategy::RoundRobin => turn % candidates.len(),
            DispatchStrategy::LeastConnections => argmin(&candidates, turn, |w| (load(w), 0.0)),
            DispatchStrategy::Cheapest => argmin(&candidates, turn, |w| (cost(w), load(w))),
            // Cost per unit of reputation (a missing cost or a reputation of 0 ranks last).
            DispatchStrategy::BestValue => argmin(&candidates, turn, |w| {
                let per_reputation = if w.info.reputation > 0.0 { cost(w) / w.info.reputation } else { f64::INFINITY };
                (per_reputation, load(w))
            }),
            // The cheapest whose queue is below the soft limit, else the shortest queue.
            DispatchStrategy::Overflow => {
                let below: Vec<&WorkerLoad> =
                    candidates.iter().copied().filter(|w| w.queued < self.soft_limit).collect();
                match below.is_empty() {
                    false => {
                        let chosen = below[argmin(&below, turn, |w| (cost(w), 0.0))];
                        candidates.iter().position(|w| std::ptr::eq(*w, chosen)).expect("a candidate")
                    }
                    true => argmin(&candidates, turn, |w| (w.queued as f64, cost(w))),
                }
            }
            // Cheapest, then reputation minus load: a better reputation counts as much as one
            // task less, so equally good workers share the load.
            DispatchStrategy::Default => argmin(&candidates, turn, |w| (cost(w), load(w) - w.info.reputation)),
        };
        Ok(candidates[pick].info.worker_id.clone())
    }

    /// Whether `w` passes the filters of `spec` (reputation, `max_cost`, skill version and type,
    /// requirements); `Err` says which it fails.
    pub(crate) fn eligible(&self, w: &WorkerInfo, spec: &TaskSpec) -> Result<(), String> {
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
        super::requirements::check_skill(&w.record, spec)?;
        if let Some(req) = &spec.resource_requirements {
            super::requirements::check(&Value::Object(w.record.clone()), req)?;
        }
        Ok(())
    }
}

/// Index of the smallest key; ties are broken by rotating with `turn` (a counter that grows per
/// choice), so equally good workers share load.
fn argmin<T>(items: &[T], turn: usize, key: impl Fn(&T) -> (f64, f64)) -> usize {
    let keys: Vec<(f64, f64)> = items.iter().map(key).collect();
    let best = keys.iter().copied().min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1))).expect("non-empty");
    let ties: Vec<usize> = (0..keys.len()).filter(|&i| keys[i] == best).collect();
    ties[turn % ties.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn rejections_are_counted_per_reason() {
        let mut r = Rejections::default();
        for reason in ["reputation below 0.3", "cost above max_cost 2", "reputation below 0.3"] {
            r.add(reason.to_owned());
        }
        assert_eq!(r.to_string(), "2 workers: reputation below 0.3; 1 worker: cost above max_cost 2");
        for i in 0..20 {
            r.add(format!("reason {i}"));
        }
        assert_eq!(r.reasons.len(), Rejections::MAX);
        assert!(r.to_string().ends_with("; 14 more for other reasons"), "{r}");
    }

    use super::*;
    use std::collections::BTreeMap;

    fn worker(id: &str) -> WorkerInfo {
        WorkerInfo::from_registration(&serde_json::json!({
            "worker_id": id,
            "supported_skills": [{"name": "echo"}],
        }))
    }

    /// With `DISPATCHER_MAX_CANDIDATES` below the fleet size each dispatch chooses among a window
    /// of workers that moves, so all of them still get tasks.
    #[tokio::test]
    async fn a_candidate_cap_still_reaches_every_worker() {
        let store = Arc::new(crate::storage::memory::MemoryWorkers::new());
        let ids: Vec<String> = (0..10).map(|i| format!("w-{i}")).collect();
        for id in &ids {
            store.register(worker(id), 60_000).await.unwrap();
        }
        let d = Dispatcher::new(store, std::time::Duration::from_secs(60), 0.3).with_max_candidates(3);
        let mut spec = TaskSpec::new("echo");
        spec.dispatch_strategy = DispatchStrategy::RoundRobin;
        let mut chosen: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..40 {
            let w = d.assign(&format!("job-{i}"), &format!("task-{i}"), &spec, None).await.unwrap();
            *chosen.entry(w).or_default() += 1;
        }
        assert_eq!(chosen.len(), ids.len(), "every worker got tasks: {chosen:?}");
    }
}
