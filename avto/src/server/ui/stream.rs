//! `GET /ui/api/stream`: the dashboard's live feed, as server-sent events (one stream per tab).
//!
//! Events, each with an `id:` (counting up per stream):
//! - `job`: a [`super::job_row`] each time a job is saved, on this instance or, while a
//!   dashboard is open, on another one sharing its Redis (see the docs of `server::core::changes`);
//!   a client's session gets its own jobs only;
//! - `worker` (operator): `{worker_id, status, removed}`;
//! - `stats` once a second: `{"jobs_per_sec", "changes_per_sec"}` counted from the feed (a
//!   client: its own jobs), and for the operator `"queues"` (tasks waiting for a worker, per
//!   skill), `"queued_on_workers"` and `"live_workers"`;
//! - `resync` when the stream fell behind the feed and lost changes (or another instance's
//!   batch was full): the page fetches its view again;
//! - `shutdown` when the orchestrator stops (the stream then ends, so the graceful shutdown
//!   never waits for it); the comment `: ping` every 15 s keeps proxies from closing it.
//!
//! At most [`PER_SESSION`] streams per session and [`TOTAL`] in all are open (429 beyond).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::session::UiUser;
use crate::server::api::ApiError;
use crate::server::core::{Change, Core};

/// Streams one session may have open.
pub(crate) const PER_SESSION: usize = 64;
/// Streams open in all.
pub(crate) const TOTAL: usize = 1024;
/// How often a `: ping` comment is sent.
const PING_EVERY: Duration = Duration::from_secs(15);
/// How often `stats` are sent.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// Shared stats are computed at most this often, whatever the number of streams.
const STATS_FRESH: Duration = Duration::from_millis(900);

/// The open streams, per session nonce (entries exist only while a stream is open).
#[derive(Debug, Default)]
pub(crate) struct Streams {
    total: usize,
    per_session: HashMap<String, usize>,
}

/// One open stream, counted until dropped.
struct Slot {
    core: Arc<Core>,
    session: String,
}

impl Slot {
    fn take(core: &Arc<Core>, session: &str) -> Result<Slot, ApiError> {
        let mut s = super::state(core).streams.lock();
        let mine = s.per_session.get(session).copied().unwrap_or(0);
        if s.total >= TOTAL || mine >= PER_SESSION {
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "too many open streams (at most {PER_SESSION} per session and {TOTAL} in all): close a tab"
                ),
                retry_after_secs: 5,
            });
        }
        s.total += 1;
        *s.per_session.entry(session.to_owned()).or_default() += 1;
        Ok(Slot { core: core.clone(), session: session.to_owned() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = super::state(&self.core).streams.lock();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_session.get_mut(&self.session) {
            *n -= 1;
            if *n == 0 {
                s.per_session.remove(&self.session);
            }
        }
    }
}

/// What one stream holds between events.
struct Feed {
    slot: Slot,
    user: UiUser,
    rx: tokio::sync::broadcast::Receiver<Change>,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    stats: tokio::time::Interval,
    ping: tokio::time::Interval,
    next_id: u64,
    /// Jobs of this stream that ended, and changes it saw, since the last `stats`.
    ended: u64,
    changes: u64,
    done: bool,
}

impl Feed {
    fn event(&mut self, kind: &str, data: &Value) -> Bytes {
        self.next_id += 1;
        Bytes::from(format!("id: {}\nevent: {kind}\ndata: {data}\n\n", self.next_id))
    }

    /// The event of a change, if this session sees it.
    fn change(&mut self, change: Change) -> Option<Bytes> {
        match change {
            Change::Job(j) if self.user.sees(&j.client_id) => {
                self.changes += 1;
                if j.status.is_terminal() {
                    self.ended += 1;
                }
                Some(self.event("job", &super::change_row(&j)))
            }
            Change::Worker(w) if self.user.is_operator() => {
                self.changes += 1;
                Some(self.event("worker", &json!({"worker_id": w.worker_id, "status": w.status, "removed": w.removed})))
            }
            // Another instance's changes that did not reach this one: the page fetches its view.
            Change::Lost(missed) => Some(self.event("resync", &json!({"missed": missed}))),
            _ => None,
        }
    }

    async fn stats(&mut self) -> Bytes {
        let secs = STATS_EVERY.as_secs_f64();
        let mut v = json!({"jobs_per_sec": self.ended as f64 / secs, "changes_per_sec": self.changes as f64 / secs});
        (self.ended, self.changes) = (0, 0);
        if self.user.is_operator() {
            let shared = shared_stats(&self.slot.core).await;
            if let (Some(m), Value::Object(s)) = (v.as_object_mut(), &*shared) {
                m.extend(s.clone());
            }
        }
        self.event("stats", &v)
    }

    /// The next chunk of the stream (`None`: it ends).
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        loop {
            tokio::select! {
                _ = &mut self.shutdown => {
                    self.done = true;
                    return Some(self.event("shutdown", &json!({})));
                }
                received = self.rx.recv() => match received {
                    Ok(change) => {
                        if let Some(ev) = self.change(change) {
                            return Some(ev);
                        }
                    }
                    Err(RecvError::Lagged(missed)) => return Some(self.event("resync", &json!({"missed": missed}))),
                    Err(RecvError::Closed) => return None,
                },
                _ = self.stats.tick() => return Some(self.stats().await),
                _ = self.ping.tick() => return Some(Bytes::from_static(b": ping\n\n")),
            }
        }
    }
}

/// The operator's stats shared by every stream (computed at most every [`STATS_FRESH`]): tasks
/// waiting for a worker per skill, tasks queued on workers, live workers. Samples the workers'
/// reputations for their trends too.
async fn shared_stats(core: &Arc<Core>) -> Arc<Value> {
    if let Some((at, v)) = super::state(core).stats.lock().as_ref() {
        if at.elapsed() < STATS_FRESH {
            return v.clone();
        }
    }
    let live = core.live_workers().await;
    super::state(core).trends.lock().sample(&live, crate::job::now_ms());
    let mut queues: BTreeMap<String, u64> = BTreeMap::new();
    match core.dispatcher().store().parked().await {
        Ok(parked) => {
            for u in parked {
                // Bounded by the skills tasks ask for (blueprint names), not by request data.
                if queues.len() < 1000 || queues.contains_key(&u.spec.task_type) {
                    *queues.entry(u.spec.task_type).or_default() += 1;
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "dashboard stats: could not read the parked tasks"),
    }
    let queued: usize = live.iter().map(|w| w.queued).sum();
    let v = Arc::new(json!({"queues": queues, "queued_on_workers": queued, "live_workers": live.len()}));
    *super::state(core).stats.lock() = Some((std::time::Instant::now(), v.clone()));
    v
}

/// `GET /ui/api/stream`.
pub(super) async fn stream(State(core): State<Arc<Core>>, user: UiUser) -> Result<Response, ApiError> {
    if core.is_shutting_down() {
        return Err(ApiError::Unavailable("the orchestrator is shutting down".into()));
    }
    let slot = Slot::take(&core, &user.nonce)?;
    let rx = core.changes();
    let stopping = core.clone();
    let start = tokio::time::Instant::now();
    let mut stats = tokio::time::interval_at(start + STATS_EVERY, STATS_EVERY);
    stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ping = tokio::time::interval_at(start + PING_EVERY, PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let feed = Feed {
        slot,
        user,
        rx,
        shutdown: Box::pin(async move { stopping.shutting_down().await }),
        stats,
        ping,
        next_id: 0,
        ended: 0,
        changes: 0,
        done: false,
    };
    // The browser reconnects 3 s after the stream breaks.
    let hello =
        futures::stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b"retry: 3000\n: connected\n\n")) });
    let events = futures::stream::unfold(feed, |mut feed| async move {
        let chunk = feed.next().await?;
        Some((Ok::<_, Infallible>(chunk), feed))
    });
    let mut r = Body::from_stream(futures::StreamExt::chain(hello, events)).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}
