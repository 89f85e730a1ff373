//! Worker history (orchestrator.md section 6.3): a `registered` row when a worker registers and a
//! `status_update` row when its heartbeats report a new status, and a `worker_event:{type}` row
//! for each event a worker sends about no job, in the `worker_history` table;
//! and what the hourly reputation recalculation reads of the job history: per worker, how many
//! tasks it finished and how many of them failed ([`TaskOutcomes`]).
//!
//! Heartbeats come every few seconds per worker, so [`StatusLog`] bounds the `status_update`
//! rows: one only when the status differs from the last row written for the worker, and at most
//! one per worker per `WORKER_HISTORY_STATUS_INTERVAL_SECONDS`; the final `offline` heartbeat is
//! always written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};

use super::{format_timestamp, next_timestamp_us};

/// `event_type` of the row written when a worker registers (snapshot: its record).
pub const WORKER_REGISTERED: &str = "registered";
/// `event_type` of the row written when a heartbeat changes a worker's status (snapshot: the
/// record with the heartbeat merged in).
pub const WORKER_STATUS_UPDATE: &str = "status_update";

/// One `worker_history` row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerHistoryRecord {
    /// A new UUIDv4 per row.
    pub event_id: String,
    pub worker_id: String,
    /// Epoch microseconds when the orchestrator observed the event.
    pub timestamp_us: i64,
    /// [`WORKER_REGISTERED`], [`WORKER_STATUS_UPDATE`] or `worker_event:{type}`.
    pub event_type: String,
    /// The worker's record after the event (JSON text): what it registered, merged with its
    /// heartbeats, plus `status` and `reputation`; never its security block. For a
    /// `worker_event:{type}` row (an event about no job; events about a job are rows of the job's
    /// history): the event, `{event_id, event_type, sender_id, origin_worker_id, bubbling_chain,
    /// task_id, payload}`.
    pub worker_info_snapshot: Option<Arc<str>>,
}

impl WorkerHistoryRecord {
    /// A row observed now.
    pub fn new(worker_id: &str, event_type: &str, snapshot: &Value) -> Self {
        WorkerHistoryRecord {
            event_id: uuid::Uuid::new_v4().to_string(),
            worker_id: worker_id.to_owned(),
            timestamp_us: next_timestamp_us(),
            event_type: event_type.to_owned(),
            worker_info_snapshot: Some(Arc::from(snapshot.to_string())),
        }
    }

    /// The snapshot parsed (None when absent or not JSON).
    pub fn snapshot(&self) -> Option<Value> {
        self.worker_info_snapshot.as_deref().and_then(|s| serde_json::from_str(s).ok())
    }

    /// The row as JSON, `timestamp` as ISO-8601 in `tz`.
    pub fn to_json(&self, tz: chrono_tz::Tz) -> Value {
        json!({
            "event_id": self.event_id,
            "worker_id": self.worker_id,
            "timestamp": format_timestamp(self.timestamp_us, tz),
            "event_type": self.event_type,
            "worker_info_snapshot": self.snapshot(),
        })
    }
}

/// What one worker's `task_finished` rows say: how many tasks it finished, and how many of
/// those with the result status `failure` (its own failures and the execution timeouts of
/// tasks it had picked up). Any other status (`success`, `cancelled`, a blueprint's custom
/// status) is a task the worker carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskOutcomes {
    pub finished: u64,
    pub failed: u64,
}

impl TaskOutcomes {
    /// The share of finished tasks that did not fail; `None` without any.
    pub fn success_rate(&self) -> Option<f64> {
        (self.finished > 0).then(|| self.finished.saturating_sub(self.failed) as f64 / self.finished as f64)
    }

    /// Counts one `task_finished` row with this result status.
    pub fn count(&mut self, result_status: Option<&str>) {
        self.finished += 1;
        if result_status == Some(crate::protocol::wire::task_status::FAILURE) {
            self.failed += 1;
        }
    }
}

/// Which heartbeats become `status_update` rows (per orchestrator instance): a status different
/// from the last one written for the worker, at most one row per worker per `interval`;
/// `offline` always. A change that comes within the interval is written by the first
/// heartbeat after it that still reports a status other than the last written one.
#[derive(Debug)]
pub struct StatusLog {
    interval: Duration,
    /// A worker not heard of for this long is forgotten (it left without saying goodbye).
    forget_after: Duration,
    inner: Mutex<StatusLogInner>,
}

#[derive(Debug)]
struct StatusLogInner {
    /// Worker id -> the status of its last row, when that row was written, when the worker was
    /// last heard of.
    last: HashMap<String, Seen>,
    /// When forgotten workers were last dropped.
    pruned: Instant,
}

#[derive(Debug)]
struct Seen {
    status: String,
    written: Instant,
    heard: Instant,
}

/// How long [`StatusLog`] keeps a worker it no longer hears of (at least the interval).
const FORGET_AFTER: Duration = Duration::from_secs(600);

impl StatusLog {
    pub fn new(interval: Duration) -> Self {
        Self::with_forget_after(interval, FORGET_AFTER.max(interval))
    }

    fn with_forget_after(interval: Duration, forget_after: Duration) -> Self {
        let inner = StatusLogInner { last: HashMap::new(), pruned: Instant::now() };
        StatusLog { interval, forget_after, inner: Mutex::new(inner) }
    }

    /// A row with `status` was written for the worker (its registration, say).
    pub fn written(&self, worker_id: &str, status: &str) {
        let now = Instant::now();
        let seen = Seen { status: status.to_owned(), written: now, heard: now };
        self.inner.lock().last.insert(worker_id.to_owned(), seen);
    }

    /// Whether a heartbeat reporting `status` is to be written now (and if so, notes it as written).
    pub fn should_write(&self, worker_id: &str, status: &str) -> bool {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        // Workers that left without saying goodbye do not accumulate: dropped when not heard
        // of for `forget_after` (looked for once per `forget_after`).
        if now.duration_since(inner.pruned) >= self.forget_after {
            let forget_after = self.forget_after;
            inner.last.retain(|_, s| now.duration_since(s.heard) < forget_after);
            inner.pruned = now;
        }
        let write = match inner.last.get_mut(worker_id) {
            None => true,
            Some(seen) => {
                seen.heard = now;
                status == crate::protocol::worker_status::OFFLINE
                    || (seen.status != status && now.duration_since(seen.written) >= self.interval)
            }
        };
        if write {
            inner.last.insert(worker_id.to_owned(), Seen { status: status.to_owned(), written: now, heard: now });
        }
        write
    }

    /// Forgets a worker (it said goodbye).
    pub fn forget(&self, worker_id: &str) {
        self.inner.lock().last.remove(worker_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_rate_counts_only_failures_against_the_worker() {
        let mut o = TaskOutcomes::default();
        assert_eq!(o.success_rate(), None);
        for s in [Some("success"), Some("failure"), Some("cancelled"), Some("needs_review"), None] {
            o.count(s);
        }
        assert_eq!(o, TaskOutcomes { finished: 5, failed: 1 });
        assert_eq!(o.success_rate(), Some(0.8));
        assert_eq!(TaskOutcomes { finished: 2, failed: 5 }.success_rate(), Some(0.0), "never negative");
    }

    #[test]
    fn status_rows_are_bounded() {
        let log = StatusLog::with_forget_after(Duration::from_millis(200), Duration::from_millis(600));
        assert!(log.should_write("w", "idle"), "the first heartbeat of an unknown worker");
        assert!(!log.should_write("w", "idle"), "same status: nothing");
        assert!(!log.should_write("w", "busy"), "changed, but within the interval");
        std::thread::sleep(Duration::from_millis(250));
        assert!(!log.should_write("w", "idle"), "back to what was written: nothing");
        assert!(log.should_write("w", "busy"), "changed, after the interval");
        assert!(log.should_write("w", "offline"), "the goodbye is always written");
        log.written("v", "idle");
        assert!(!log.should_write("v", "idle"), "a registration counts as the last row");
        log.forget("v");
        assert!(log.should_write("v", "idle"));
        // `w` keeps heartbeating, `v` is never heard of again.
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(250));
            log.should_write("w", "busy");
        }
        assert!(log.inner.lock().last.contains_key("w"), "a worker that heartbeats is kept");
        assert!(!log.inner.lock().last.contains_key("v"), "a worker not heard of is forgotten");
    }
}
