//! The change feed (feature `dashboard`): a broadcast of what changed, for the dashboard's live
//! stream. A job is sent after every insert and commit of its record, a worker when it
//! registers, when a heartbeat changes its status, when an operator drains it and when it leaves
//! (its `offline` heartbeat).
//!
//! Cheap when nobody listens: with no receiver nothing is built, cloned or sent (two atomic
//! reads). Receivers that fall more than [`CAPACITY`] changes behind lose the oldest and are told
//! ([`tokio::sync::broadcast::error::RecvError::Lagged`]), so a slow reader never holds memory.
//!
//! ## Across instances
//!
//! With several instances on one Redis (a [`crate::storage::Bus`]), the changes made on one
//! instance reach the streams of every other one, over the bus, only while a dashboard is open
//! somewhere:
//! - an instance with open streams keeps the key `{prefix}ui:watching` alive (set with a
//!   [`WATCH_TTL`] TTL, refreshed every [`WATCH_REFRESH`]);
//! - every instance reads that key once every [`CHECK_EVERY`] in the background (the relay
//!   task); while it is set, the instance's changes are also put in an outbox, and the outbox is
//!   published every [`FLUSH_EVERY`] as one [`crate::storage::BusMessage::DashboardChanges`]
//!   (at most [`BATCH_MAX`] changes: beyond, the rest is counted as lost and the streams that
//!   receive the batch get a `resync`);
//! - a receiving instance feeds the batch into its own broadcast, so its streams see them as
//!   they see local ones; an instance skips its own batches (its streams had those changes
//!   already).
//!
//! While nobody watches, saving a job costs nothing more (no message, no key read on that path:
//! the relay's flag is an atomic), and the relay reads one key a second. A change reaches another
//! instance's streams within about [`FLUSH_EVERY`] plus a Redis round trip; when a first stream
//! opens, the other instances start publishing within about two [`CHECK_EVERY`]s (the page
//! fetches its view when it connects, so nothing is missing meanwhile). The batches published
//! are counted by [`Core::dashboard_changes_published`].
//!
//! A dead worker that is expired by the watcher is not sent: the workers page marks it stale
//! from its heartbeat age.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use super::Core;
use crate::job::{Job, JobStatus};
use crate::storage::{Bus, BusMessage};

/// Changes a receiver may fall behind before it loses some (and is told so).
pub(crate) const CAPACITY: usize = 1024;
/// Workers whose last sent status is remembered (to send only real changes); forgotten all at
/// once beyond this (a change may then be sent twice, never lost).
const STATUS_MEMORY: usize = 10_000;
/// How long `{prefix}ui:watching` lives unless refreshed.
pub(crate) const WATCH_TTL: Duration = Duration::from_secs(5);
/// How often an instance with open streams refreshes `{prefix}ui:watching`.
pub(crate) const WATCH_REFRESH: Duration = Duration::from_secs(2);
/// How often every instance reads `{prefix}ui:watching`.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the outbox is published while someone watches.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Changes in one published batch (and in the outbox).
pub(crate) const BATCH_MAX: usize = 2000;

/// One change (cheap to clone: every receiver gets a copy).
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Job(Arc<JobChange>),
    Worker(WorkerChange),
    /// Changes made on another instance that did not reach this one (its batch was full): the
    /// streams resync.
    Lost(u64),
}

/// A change as it travels between instances.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum WireOut<'a> {
    Job(&'a JobChange),
    Worker(&'a WorkerChange),
}

/// A change as received from another instance.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireIn {
    Job(JobChange),
    Worker(WorkerChange),
}

/// A job as it was saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobChange {
    pub id: String,
    pub client_id: String,
    pub blueprint: String,
    pub status: JobStatus,
    pub current_state: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub progress: Option<f64>,
    pub waiting_reason: Option<String>,
    pub error_message: Option<String>,
    pub parent_job_id: Option<String>,
}

impl JobChange {
    fn of(job: &Job) -> JobChange {
        JobChange {
            id: job.id.clone(),
            client_id: job.client.id.clone(),
            blueprint: job.blueprint.clone(),
            status: job.status,
            current_state: job.current_state.clone(),
            created_at_ms: job.created_at_ms,
            updated_at_ms: job.updated_at_ms,
            progress: job.progress,
            waiting_reason: job.waiting_reason.clone(),
            error_message: job.error_message.clone(),
            parent_job_id: job.parent_job_id.clone(),
        }
    }
}

/// A worker's new status, or its departure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerChange {
    pub worker_id: String,
    pub status: String,
    pub removed: bool,
}

/// The sender and the last status sent per worker.
#[derive(Debug)]
pub(crate) struct Changes {
    tx: broadcast::Sender<Change>,
    statuses: parking_lot::Mutex<HashMap<String, String>>,
    /// When each worker was last heard from on this instance (registration or heartbeat).
    seen: parking_lot::Mutex<HashMap<String, u64>>,
    /// This instance's id on the bus (random per process): its own batches are skipped.
    instance: String,
    /// A dashboard is open on some instance (set by the relay): changes go to the outbox too.
    relayed: AtomicBool,
    /// Changes waiting for the relay, and how many were left out since the last batch.
    outbox: parking_lot::Mutex<(Vec<Change>, u64)>,
    /// Batches published.
    published: AtomicU64,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            tx: broadcast::Sender::new(CAPACITY),
            statuses: Default::default(),
            seen: Default::default(),
            instance: uuid::Uuid::new_v4().to_string(),
            relayed: AtomicBool::new(false),
            outbox: Default::default(),
            published: AtomicU64::new(0),
        }
    }
}

impl Changes {
    fn local(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    fn relayed(&self) -> bool {
        self.relayed.load(Ordering::Relaxed)
    }

    fn listened(&self) -> bool {
        self.local() || self.relayed()
    }

    /// Sends `change` to this instance's streams and, while someone watches, to the outbox.
    fn send(&self, change: Change) {
        if self.relayed() {
            let mut outbox = self.outbox.lock();
            if outbox.0.len() < BATCH_MAX {
                outbox.0.push(change.clone());
            } else {
                outbox.1 += 1;
            }
        }
        let _ = self.tx.send(change);
    }
}

impl Core {
    /// A receiver of every change from now on.
    pub(crate) fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.tx.subscribe()
    }

    /// The change of `job` as built now, when someone listens (to send once it is saved).
    pub(super) fn job_change(&self, job: &Job) -> Option<Change> {
        self.changes.listened().then(|| Change::Job(std::sync::Arc::new(JobChange::of(job))))
    }

    /// Sends a change built by [`Core::job_change`].
    pub(super) fn send_change(&self, change: Option<Change>) {
        if let Some(c) = change {
            self.changes.send(c);
        }
    }

    /// A worker was heard from (registration or heartbeat) on this instance: the workers page's
    /// heartbeat age. Kept for at most [`STATUS_MEMORY`] workers (forgotten all at once beyond:
    /// their age is unknown until their next heartbeat).
    pub(crate) fn worker_seen(&self, worker_id: &str, removed: bool) {
        let mut seen = self.changes.seen.lock();
        if removed {
            seen.remove(worker_id);
            return;
        }
        let now = crate::job::now_ms();
        if let Some(at) = seen.get_mut(worker_id) {
            *at = now;
            return;
        }
        if seen.len() >= STATUS_MEMORY {
            seen.clear();
        }
        seen.insert(worker_id.to_owned(), now);
    }

    /// When `worker_id` was last heard from on this instance (epoch ms), if known.
    pub(crate) fn worker_last_seen(&self, worker_id: &str) -> Option<u64> {
        self.changes.seen.lock().get(worker_id).copied()
    }

    /// A worker's status as reported now: sent when it differs from the last one sent (or the
    /// worker left).
    pub(crate) fn worker_changed(&self, worker_id: &str, status: &str, removed: bool) {
        if !self.changes.listened() {
            return;
        }
        {
            let mut last = self.changes.statuses.lock();
            if removed {
                last.remove(worker_id);
            } else {
                if last.get(worker_id).is_some_and(|s| s == status) {
                    return;
                }
                if last.len() >= STATUS_MEMORY {
                    last.clear();
                }
                last.insert(worker_id.to_owned(), status.to_owned());
            }
        }
        let change = WorkerChange { worker_id: worker_id.to_owned(), status: status.to_owned(), removed };
        self.changes.send(Change::Worker(change));
    }

    /// Batches of dashboard changes this instance published to the other instances.
    pub fn dashboard_changes_published(&self) -> u64 {
        self.changes.published.load(Ordering::Relaxed)
    }

    /// A batch from the bus: fed to this instance's streams unless it is this instance's own.
    pub(crate) fn changes_from_bus(&self, from: &str, changes: Vec<Value>, lost: u64) {
        if from == self.changes.instance || !self.changes.local() {
            return;
        }
        let mut lost = lost;
        for c in changes.into_iter().take(BATCH_MAX) {
            let change = match serde_json::from_value::<WireIn>(c) {
                Ok(WireIn::Job(j)) => Change::Job(Arc::new(j)),
                Ok(WireIn::Worker(w)) => Change::Worker(w),
                Err(e) => {
                    tracing::debug!(error = %e, "ignoring a malformed dashboard change from the bus");
                    lost += 1;
                    continue;
                }
            };
            let _ = self.changes.tx.send(change);
        }
        if lost > 0 {
            let _ = self.changes.tx.send(Change::Lost(lost));
        }
    }

    /// Starts the relay of changes between instances (see the module docs) when there is a bus.
    pub(crate) fn start_change_relay(self: &Arc<Self>) {
        let Some(bus) = self.dispatcher.bus().cloned() else { return };
        let core = Arc::downgrade(self);
        crate::supervise::supervise(&self.health, "dashboard_relay", move || {
            let (core, bus) = (core.clone(), bus.clone());
            async move {
                let mut last_check: Option<tokio::time::Instant> = None;
                let mut last_set: Option<tokio::time::Instant> = None;
                loop {
                    let Some(core) = core.upgrade() else { return };
                    let now = tokio::time::Instant::now();
                    if last_check.is_none_or(|t| now.duration_since(t) >= CHECK_EVERY) {
                        last_check = Some(now);
                        relay_check(&core, &*bus, &mut last_set, now).await;
                    }
                    if core.changes.relayed() {
                        relay_flush(&core, &*bus).await;
                    }
                    let pause = if core.changes.relayed() { FLUSH_EVERY } else { CHECK_EVERY };
                    drop(core);
                    tokio::time::sleep(pause).await;
                }
            }
        });
    }
}

/// Refreshes `ui:watching` while this instance has streams, then reads it: whether to relay.
async fn relay_check(
    core: &Core,
    bus: &dyn Bus,
    last_set: &mut Option<tokio::time::Instant>,
    now: tokio::time::Instant,
) {
    let changes = &core.changes;
    if changes.local() {
        if last_set.is_none_or(|t| now.duration_since(t) >= WATCH_REFRESH) {
            match bus.set_watching(WATCH_TTL).await {
                Ok(()) => *last_set = Some(now),
                Err(e) => tracing::debug!(error = %e, "dashboard relay: could not mark the streams as open"),
            }
        }
    } else {
        *last_set = None;
    }
    let watched = match bus.watched().await {
        Ok(w) => w,
        Err(e) => {
            tracing::debug!(error = %e, "dashboard relay: could not read whether a dashboard is open");
            false
        }
    };
    if !watched && changes.relayed.swap(false, Ordering::Relaxed) {
        *changes.outbox.lock() = Default::default();
    } else if watched {
        changes.relayed.store(true, Ordering::Relaxed);
    }
}

/// Publishes the outbox as one batch (nothing when it is empty).
async fn relay_flush(core: &Core, bus: &dyn Bus) {
    let (batch, lost) = std::mem::take(&mut *core.changes.outbox.lock());
    if batch.is_empty() && lost == 0 {
        return;
    }
    let changes = batch
        .iter()
        .filter_map(|c| match c {
            Change::Job(j) => serde_json::to_value(WireOut::Job(j)).ok(),
            Change::Worker(w) => serde_json::to_value(WireOut::Worker(w)).ok(),
            Change::Lost(_) => None,
        })
        .collect();
    let msg = BusMessage::DashboardChanges { from: core.changes.instance.clone(), changes, lost };
    match bus.publish(msg).await {
        Ok(()) => {
            core.changes.published.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::debug!(error = %e, "dashboard relay: could not publish a batch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `rx` holds now, one line per change.
    fn received(rx: &mut tokio::sync::broadcast::Receiver<Change>) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(c) = rx.try_recv() {
            seen.push(match c {
                Change::Job(j) => format!("job {} {}", j.id, j.status),
                Change::Worker(w) => format!("worker {} {} {}", w.worker_id, w.status, w.removed),
                Change::Lost(n) => format!("lost {n}"),
            });
        }
        seen
    }

    /// The core of an orchestrator with the default configuration.
    fn test_core() -> Arc<Core> {
        crate::server::Orchestrator::builder()
            .config(crate::server::Config::builder().build().unwrap())
            .build()
            .unwrap()
            .core()
            .clone()
    }

    /// Nothing is built without a receiver; a receiver gets jobs and real status changes only.
    #[tokio::test]
    async fn changes_reach_receivers_only_when_there_are_some() {
        let core = test_core();
        let job = Job::new("j1", "bp", "start", serde_json::Value::Null);
        assert!(core.job_change(&job).is_none(), "no receiver: nothing built");
        let mut rx = core.changes();
        core.send_change(core.job_change(&job));
        core.worker_changed("w1", "idle", false);
        core.worker_changed("w1", "idle", false);
        core.worker_changed("w1", "busy", false);
        core.worker_changed("w1", "offline", true);
        let seen = received(&mut rx);
        assert_eq!(seen, ["job j1 pending", "worker w1 idle false", "worker w1 busy false", "worker w1 offline true"]);
    }

    /// A batch from another instance reaches the streams (a full one with a resync); this
    /// instance's own batches are skipped (its streams had them already).
    #[tokio::test]
    async fn batches_from_the_bus_reach_streams_except_this_instances_own() {
        let core = test_core();
        let job = JobChange::of(&Job::new("j1", "bp", "start", serde_json::Value::Null));
        let worker = WorkerChange { worker_id: "w1".into(), status: "busy".into(), removed: false };
        let batch = vec![
            serde_json::to_value(WireOut::Job(&job)).unwrap(),
            serde_json::to_value(WireOut::Worker(&worker)).unwrap(),
        ];
        let mut rx = core.changes();
        let own = core.changes.instance.clone();
        core.changes_from_bus(&own, batch.clone(), 0);
        assert!(rx.try_recv().is_err(), "an instance's own batch is skipped");
        core.changes_from_bus("another", batch, 3);
        let seen = received(&mut rx);
        assert_eq!(seen, ["job j1 pending", "worker w1 busy false", "lost 3"]);
    }

    /// While nobody watches anywhere nothing goes to the outbox; while someone does, every
    /// change does, up to [`BATCH_MAX`] (the rest is counted).
    #[tokio::test]
    async fn the_outbox_fills_only_while_someone_watches_and_is_bounded() {
        let core = test_core();
        let job = Job::new("j1", "bp", "start", serde_json::Value::Null);
        assert!(core.job_change(&job).is_none());
        core.worker_changed("w1", "idle", false);
        assert!(core.changes.outbox.lock().0.is_empty());
        core.changes.relayed.store(true, Ordering::Relaxed);
        for _ in 0..BATCH_MAX + 5 {
            core.send_change(core.job_change(&job));
        }
        let outbox = core.changes.outbox.lock();
        assert_eq!((outbox.0.len(), outbox.1), (BATCH_MAX, 5));
    }
}
