//! What every part of a running worker shares ([`WorkerState`]): the configuration, the skills,
//! the orchestrator sessions, and the table of running tasks with what follows from it (the
//! status and available skills a heartbeat reports, the in-flight count shutdown waits for,
//! cancellation).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{watch, Notify};

use super::session::OrchestratorSession;
use super::skill::SkillSet;
use super::WorkerConfig;
use crate::protocol::{sign, worker_status, MessageKind, ResourcesUsage, WorkerCommand};
// Most tasks asked for in one poll: what avto's server allows in one batch.
use crate::protocol::MAX_TASKS_PER_POLL;

/// Handler of a custom WebSocket command.
pub(crate) type CommandHandler = Arc<dyn Fn(WorkerCommand) -> BoxFuture<'static, ()> + Send + Sync>;
/// Resource usage reporter for heartbeats.
pub(crate) type UsageChecker = Arc<dyn Fn() -> ResourcesUsage + Send + Sync>;

/// The state of one worker, shared by its loops and tasks.
pub(crate) struct WorkerState {
    pub(crate) cfg: WorkerConfig,
    pub(crate) skills: SkillSet,
    /// Most tasks at once per skill type.
    type_limits: HashMap<String, usize>,
    /// One per configured orchestrator, in the configured order.
    pub(crate) sessions: Vec<Arc<OrchestratorSession>>,
    commands: HashMap<String, CommandHandler>,
    usage_checker: Option<UsageChecker>,
    /// S3 payload offload (`S3_ENDPOINT_URL`, ...), see [`super::s3`].
    #[cfg(feature = "s3")]
    pub(crate) s3: Option<Arc<super::s3::PayloadOffload>>,
    /// Running tasks by task id.
    active: Mutex<HashMap<String, ActiveTask>>,
    /// Skills (or other items) a handler marked hot.
    hot: Mutex<BTreeSet<String>>,
    /// Tasks whose result is not delivered yet (see [`InFlight`]).
    in_flight: AtomicUsize,
    in_flight_done: Notify,
    /// A task finished: the poll loop may find the worker idle again.
    pub(crate) state_changed: Notify,
    /// Some orchestrator accepted a registration: the poll loop may start.
    pub(crate) registered_any: Notify,
    /// `false` once shutdown began: the worker reports itself full.
    accepting: AtomicBool,
}

/// A running task.
struct ActiveTask {
    job_id: String,
    skill_type: String,
    /// The [`OrchestratorSession::idx`] of the orchestrator that sent it.
    session: usize,
    cancel: watch::Sender<bool>,
}

/// Counts a task in flight until dropped (after its result was delivered).
pub(crate) struct InFlight(Arc<WorkerState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.in_flight_done.notify_waiters();
    }
}

impl WorkerState {
    pub(crate) fn new(
        cfg: WorkerConfig,
        skills: SkillSet,
        type_limits: HashMap<String, usize>,
        sessions: Vec<Arc<OrchestratorSession>>,
        commands: HashMap<String, CommandHandler>,
        usage_checker: Option<UsageChecker>,
        #[cfg(feature = "s3")] s3: Option<Arc<super::s3::PayloadOffload>>,
    ) -> Self {
        WorkerState {
            cfg,
            skills,
            type_limits,
            sessions,
            commands,
            usage_checker,
            #[cfg(feature = "s3")]
            s3,
            active: Mutex::new(HashMap::new()),
            hot: Mutex::new(BTreeSet::new()),
            in_flight: AtomicUsize::new(0),
            in_flight_done: Notify::new(),
            state_changed: Notify::new(),
            registered_any: Notify::new(),
            accepting: AtomicBool::new(true),
        }
    }

    /// `body` with its `security` block when the worker signs its messages.
    pub(crate) fn sign(&self, mut body: Value, kind: MessageKind) -> Value {
        if self.cfg.signs_messages() {
            sign::attach_security(&mut body, &self.cfg.token, &self.cfg.worker_id, kind);
        }
        body
    }

    /// (status, available skill names, hot skill names), as the SDK computes them.
    pub(crate) fn status(&self) -> (&'static str, Vec<String>, Vec<String>) {
        let active = self.active.lock().unwrap();
        if active.len() >= self.cfg.max_concurrent_tasks || !self.accepting.load(Ordering::SeqCst) {
            return (worker_status::FULL, vec![], vec![]);
        }
        let mut by_type: HashMap<&str, usize> = HashMap::new();
        for task in active.values() {
            *by_type.entry(task.skill_type.as_str()).or_default() += 1;
        }
        let hot_set = self.hot.lock().unwrap();
        let mut available = Vec::new();
        let mut hot = Vec::new();
        for (name, entry) in self.skills.iter() {
            let ty = entry.skill.type_name();
            let free = self.type_limits.get(ty).is_none_or(|limit| by_type.get(ty).copied().unwrap_or(0) < *limit);
            if free {
                available.push(name.clone());
                if hot_set.contains(name) {
                    hot.push(name.clone());
                }
            }
        }
        let status = if available.is_empty() { worker_status::BUSY } else { worker_status::IDLE };
        (status, available, hot)
    }

    /// How many tasks one poll may ask for: the free slots, or one when skill types have their
    /// own limits (the orchestrator's queue does not know them, so a batch could overfill one).
    pub(crate) fn batch_size(&self) -> usize {
        if !self.type_limits.is_empty() {
            return 1;
        }
        let active = self.active.lock().unwrap().len();
        self.cfg.max_concurrent_tasks.saturating_sub(active).clamp(1, MAX_TASKS_PER_POLL)
    }

    /// The usage to report now (zeros without a usage checker).
    pub(crate) fn usage(&self) -> ResourcesUsage {
        self.usage_checker.as_ref().map(|f| f()).unwrap_or_default()
    }

    /// The handler of the custom command `name`.
    pub(crate) fn command(&self, name: &str) -> Option<&CommandHandler> {
        self.commands.get(name)
    }

    /// Ids of the tasks running for the session `session` (sorted).
    pub(crate) fn task_ids_of(&self, session: usize) -> Vec<String> {
        let active = self.active.lock().unwrap();
        let mut ids: Vec<String> =
            active.iter().filter(|(_, task)| task.session == session).map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids
    }

    /// Enters a task sent by the session `session` into the table; `None` when a task of that
    /// id is running already. Returns its cancel flag and its [`InFlight`] count.
    pub(crate) fn start_task(
        self: &Arc<Self>,
        task_id: &str,
        job_id: &str,
        skill_type: String,
        session: usize,
    ) -> Option<(watch::Receiver<bool>, InFlight)> {
        let (cancel_tx, cancel_rx) = watch::channel(false);
        {
            let mut active = self.active.lock().unwrap();
            if active.contains_key(task_id) {
                return None;
            }
            active.insert(
                task_id.to_owned(),
                ActiveTask { job_id: job_id.to_owned(), skill_type, session, cancel: cancel_tx },
            );
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.wake_heartbeats();
        Some((cancel_rx, InFlight(self.clone())))
    }

    /// The task's handler is done (its result may still be on its way).
    pub(crate) fn finish_task(&self, task_id: &str) {
        self.active.lock().unwrap().remove(task_id);
        self.wake_heartbeats();
        self.state_changed.notify_one();
    }

    /// Marks `item` hot or not; a change is reported by an early heartbeat.
    pub(crate) fn set_hot(&self, item: String, hot: bool) {
        let changed = {
            let mut set = self.hot.lock().unwrap();
            if hot {
                set.insert(item)
            } else {
                set.remove(&item)
            }
        };
        if changed {
            self.wake_heartbeats();
        }
    }

    /// Asks every session for an early (debounced) heartbeat.
    pub(crate) fn wake_heartbeats(&self) {
        for session in &self.sessions {
            session.heartbeat_wakeup.notify_one();
        }
    }

    /// Cancel a task by id (WebSocket command).
    pub(crate) fn cancel_task(&self, session: usize, task_id: Option<&str>, job_id: Option<&str>) -> bool {
        let active = self.active.lock().unwrap();
        let mut hit = false;
        for (id, task) in active.iter() {
            let matches = match (task_id, job_id) {
                (Some(tid), _) => tid == id,
                (None, Some(jid)) => jid == task.job_id,
                (None, None) => false,
            };
            if matches && task.session == session {
                let _ = task.cancel.send(true);
                hit = true;
            }
        }
        hit
    }

    /// Cancels the tasks of the session `session` a heartbeat answer lists (`cancel_task_ids`).
    pub(crate) fn cancel_listed(&self, session: usize, ids: &[String]) {
        // the spec says task ids; avtomatika 1.0b30 matches job ids: accept both
        let active = self.active.lock().unwrap();
        for (task_id, task) in active.iter() {
            if task.session == session && ids.iter().any(|id| id == task_id || *id == task.job_id) {
                tracing::warn!(%task_id, "task cancelled via heartbeat answer");
                let _ = task.cancel.send(true);
            }
        }
    }

    /// Cancels every running task; returns how many.
    pub(crate) fn cancel_all(&self) -> usize {
        let active = self.active.lock().unwrap();
        for task in active.values() {
            let _ = task.cancel.send(true);
        }
        active.len()
    }

    /// Shutdown began: report full from now on.
    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// Waits until no task is in flight; `false` if some still are after `timeout`.
    pub(crate) async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.in_flight_done.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight.load(Ordering::SeqCst) == 0;
            }
        }
    }
}
