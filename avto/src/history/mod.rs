//! Execution history: one row per job event (created, state started / finished, task dispatched /
//! finished, retries, approvals, worker events, operations on the job's files (`s3_operation`),
//! the end of the job), kept in SQLite or PostgreSQL; and worker
//! history ([`workers`]): a row when a worker registers and when its status changes.
//!
//! Enable it with `HISTORY_DATABASE_URI`:
//!
//! | URI | backend | cargo feature |
//! |---|---|---|
//! | unset or empty | disabled (`GET .../jobs/{id}/history` answers 404 saying so) | |
//! | `sqlite:history.db`, `sqlite:///var/lib/avto/h.db`, `sqlite::memory:` | SQLite file (WAL) | `history-sqlite` |
//! | `postgresql://user:pass@host:5432/db` (or `postgres://`) | PostgreSQL | `history-postgres` |
//! | `memory:` | in-process, not persistent (development and tests) | |
//!
//! Any other scheme, a backend whose feature is not compiled in, an unreachable database or a
//! failed migration is a start-up error (avto never runs with history silently off).
//!
//! Writes never block the engine: [`History::record`] pushes into a bounded queue
//! ([`QUEUE_CAPACITY`]; when full the event is dropped, counted in
//! `avto_history_events_dropped_total` and logged) drained by one background task that inserts
//! in batches of up to [`BATCH_SIZE`] rows in one statement. Reads ([`History::job_history`])
//! first wait until everything recorded before them is written, so a client reads its own writes.
//!
//! The schema is versioned (table `avto_schema_migrations`); migrations run at start-up, inside
//! a transaction and under a lock, so several orchestrators can start against one database.
//! Version 1 is `job_history`, version 2 adds `worker_history` (see [`workers`]).
//!
//! The reputation recalculation reads the history through [`HistoryBackend::task_outcomes`]: per
//! worker, a `COUNT` of its `task_finished` rows since a time and of those whose
//! `details.result_status` is `failure`, computed by the database on the `(worker_id, timestamp)`
//! index (no rows are loaded).

mod events;
mod memory;
#[cfg(feature = "history-postgres")]
mod postgres;
#[cfg(any(feature = "history-sqlite", feature = "history-postgres"))]
mod rows;
#[cfg(feature = "history-sqlite")]
mod sqlite;
pub mod workers;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};

pub use events::{created_record, records_for, s3_operation_details, s3_operation_record, worker_event_record, GHOST};
pub use memory::MemoryHistory;
pub use workers::{TaskOutcomes, WorkerHistoryRecord};

/// Capacity of the write queue (events waiting for the writer task).
pub const QUEUE_CAPACITY: usize = 10_000;
/// Largest number of rows the writer inserts in one statement.
pub const BATCH_SIZE: usize = 500;
/// The schema version this avto writes (migrations 1..=SCHEMA_VERSION of each SQL backend).
pub const SCHEMA_VERSION: i64 = 2;
/// What `GET .../jobs/{id}/history` answers (404) when history is disabled.
pub const DISABLED_MESSAGE: &str = "history is disabled on this orchestrator (set HISTORY_DATABASE_URI)";

/// Why the history store could not start or answer.
///
/// The driver's error (a `sqlx::Error` for SQLite and PostgreSQL) is kept as the
/// [`source`](std::error::Error::source), boxed so that avto's public types do not name sqlx (an
/// optional dependency whose version is avto's business); downcast it to look inside.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// `HISTORY_DATABASE_URI` is malformed, has an unknown scheme, or names a backend not compiled in.
    #[error("HISTORY_DATABASE_URI: {0}")]
    Uri(String),
    /// The database cannot be reached or opened. `message` is the reason as shown (including the
    /// driver error's text); `source` is the driver error, when there is one.
    #[error("history database {target}: cannot connect: {message}")]
    Connect {
        target: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The schema could not be brought up to date. `message` and `source` as for `Connect`.
    #[error("history database {target}: migration failed: {message}")]
    Migration {
        target: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A query failed.
    #[error("history database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// One history row: what happened to which job, when, with the job as it was afterwards.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistoryRecord {
    /// A new UUIDv4 per row.
    pub event_id: String,
    pub job_id: String,
    /// The owning client's *name* (never its token).
    pub client: Option<String>,
    pub blueprint: Option<String>,
    /// Epoch microseconds when the orchestrator observed the event (strictly increasing per process).
    pub timestamp_us: i64,
    /// `job_created`, `state_started`, `state_finished`, `state_failed`, `task_dispatched`,
    /// `task_finished`, `task_retry`, `approval_requested`, `sub_job_started`, `job_completed`,
    /// `job_failed`, `job_cancelled`, `job_quarantined`, `worker_event:{type}`, `s3_operation`.
    pub event_type: String,
    /// The state the event belongs to.
    pub state: Option<String>,
    /// The job's status after the event.
    pub status: Option<String>,
    pub duration_ms: Option<i64>,
    pub previous_state: Option<String>,
    pub next_state: Option<String>,
    pub worker_id: Option<String>,
    pub origin_task_id: Option<String>,
    pub attempt_number: Option<i64>,
    /// Event-specific fields (`task_type`, `error`, `delay_ms`, `child_job_id`, ...): a
    /// `task_finished` row has `result_status` and, for a failure, the worker's `error_code` and
    /// its `error_class` (`transient`, `permanent`, `invalid_input`); `task_retry` and a
    /// `state_failed` that will be retried have `next_retry_at_ms`.
    pub details: Option<Value>,
    /// The job document after the event (JSON text, shared by the rows of one engine step;
    /// `security` and `tracing_context` are left out).
    pub context_snapshot: Option<Arc<str>>,
}

impl HistoryRecord {
    /// The snapshot parsed (None when absent or not JSON).
    pub fn snapshot(&self) -> Option<Value> {
        self.context_snapshot.as_deref().and_then(|s| serde_json::from_str(s).ok())
    }

    /// The row as the client API shows it (nulls are dropped by the API's JSON writer):
    /// `timestamp` as ISO-8601 in `tz`, `context_snapshot` passed through `view`.
    pub fn to_json(&self, tz: chrono_tz::Tz, view: impl Fn(Value) -> Value) -> Value {
        json!({
            "event_id": self.event_id,
            "job_id": self.job_id,
            "client": self.client,
            "blueprint": self.blueprint,
            "timestamp": format_timestamp(self.timestamp_us, tz),
            "event_type": self.event_type,
            "state": self.state,
            "status": self.status,
            "duration_ms": self.duration_ms,
            "previous_state": self.previous_state,
            "next_state": self.next_state,
            "worker_id": self.worker_id,
            "origin_task_id": self.origin_task_id,
            "attempt_number": self.attempt_number,
            "details": self.details,
            "context_snapshot": self.snapshot().map(view),
        })
    }
}

/// ISO-8601 with milliseconds in `tz` (`Z` for UTC).
pub fn format_timestamp(us: i64, tz: chrono_tz::Tz) -> String {
    use chrono::TimeZone;
    match chrono::Utc.timestamp_micros(us).single() {
        Some(t) => t.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => us.to_string(),
    }
}

/// Epoch microseconds, strictly increasing within this process (so the rows of one engine step
/// keep their order even on backends that sort by time only).
pub fn next_timestamp_us() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Where history rows are kept. Implementations: [`MemoryHistory`] (always), SQLite
/// (feature `history-sqlite`), PostgreSQL (feature `history-postgres`).
pub trait HistoryBackend: Send + Sync + 'static {
    /// `sqlite`, `postgresql`, `memory`.
    fn kind(&self) -> &'static str;
    /// Inserts rows (in order).
    fn insert<'a>(&'a self, rows: &'a [HistoryRecord]) -> BoxFuture<'a, Result<(), HistoryError>>;
    /// Every row of a job, oldest first.
    fn job_history<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<Vec<HistoryRecord>, HistoryError>>;
    /// The latest row of each job (of one client, or all), newest first.
    fn jobs<'a>(
        &'a self,
        client: Option<&'a str>,
        limit: usize,
        offset: usize,
    ) -> BoxFuture<'a, Result<Vec<HistoryRecord>, HistoryError>>;
    /// Number of jobs per status of their latest row (of one client, or all).
    fn status_counts<'a>(
        &'a self,
        client: Option<&'a str>,
    ) -> BoxFuture<'a, Result<BTreeMap<String, u64>, HistoryError>>;
    /// The schema version the database is at.
    fn schema_version(&self) -> BoxFuture<'_, Result<i64, HistoryError>>;
    /// Inserts worker history rows (in order).
    fn insert_workers<'a>(&'a self, rows: &'a [WorkerHistoryRecord]) -> BoxFuture<'a, Result<(), HistoryError>>;
    /// The newest `limit` worker history rows of a worker since `since_us` (epoch microseconds),
    /// oldest first.
    fn worker_history<'a>(
        &'a self,
        worker_id: &'a str,
        since_us: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<WorkerHistoryRecord>, HistoryError>>;
    /// Per worker of `worker_ids`, its `task_finished` rows since `since_us`, counted by the
    /// database (an aggregate per worker, no rows are loaded). Workers without rows are absent.
    fn task_outcomes<'a>(
        &'a self,
        worker_ids: &'a [String],
        since_us: i64,
    ) -> BoxFuture<'a, Result<HashMap<String, TaskOutcomes>, HistoryError>>;
}

/// A parsed `HISTORY_DATABASE_URI`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum HistoryUri {
    /// `memory:`
    Memory,
    /// `sqlite:<path>`; `None` = an in-memory SQLite database (`sqlite::memory:`).
    Sqlite(Option<PathBuf>),
    /// `postgresql://...` / `postgres://...` (the full URI is the DSN).
    Postgres(String),
}

impl HistoryUri {
    /// Parses a URI and checks that its backend is compiled in.
    pub fn parse(uri: &str) -> Result<HistoryUri, HistoryError> {
        let uri = uri.trim();
        let parsed = if uri == "memory:" {
            HistoryUri::Memory
        } else if let Some(rest) = uri.strip_prefix("sqlite:") {
            let rest = rest.split('?').next().unwrap_or_default();
            let path = rest.strip_prefix("//").unwrap_or(rest);
            match path {
                "" => return Err(HistoryError::Uri("`sqlite:` needs a file path, e.g. sqlite:avto-history.db".into())),
                ":memory:" | "/:memory:" => HistoryUri::Sqlite(None),
                p => HistoryUri::Sqlite(Some(PathBuf::from(p))),
            }
        } else if uri.starts_with("postgresql://") || uri.starts_with("postgres://") {
            HistoryUri::Postgres(uri.to_owned())
        } else {
            let scheme = uri.split(':').next().unwrap_or_default();
            return Err(HistoryError::Uri(format!(
                "unsupported scheme `{scheme}`: expected sqlite:<path> or postgresql://user:password@host:port/database"
            )));
        };
        match &parsed {
            #[cfg(not(feature = "history-sqlite"))]
            HistoryUri::Sqlite(_) => {
                Err(HistoryError::Uri("SQLite history needs avto built with the cargo feature `history-sqlite`".into()))
            }
            #[cfg(not(feature = "history-postgres"))]
            HistoryUri::Postgres(_) => Err(HistoryError::Uri(
                "PostgreSQL history needs avto built with the cargo feature `history-postgres`".into(),
            )),
            _ => Ok(parsed),
        }
    }

    /// The target without secrets, for messages.
    pub fn display(&self) -> String {
        match self {
            HistoryUri::Memory => "memory:".into(),
            HistoryUri::Sqlite(None) => "sqlite::memory:".into(),
            HistoryUri::Sqlite(Some(p)) => format!("sqlite:{}", p.display()),
            HistoryUri::Postgres(uri) => redact(uri),
        }
    }
}

/// `scheme://user:password@host/db` -> `scheme://user@host/db`.
pub fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else { return uri.to_owned() };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let tail = tail.split('?').next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}{tail}")
        }
        None => format!("{scheme}://{authority}{tail}"),
    }
}

/// Opens the backend a URI names and brings its schema up to date. `timeout` bounds the wait
/// for a database that is still starting (connection refused is retried until then).
pub fn connect(uri: &str, timeout: Duration) -> BoxFuture<'static, Result<Arc<dyn HistoryBackend>, HistoryError>> {
    let parsed = HistoryUri::parse(uri);
    Box::pin(async move {
        let _ = timeout;
        match parsed? {
            HistoryUri::Memory => Ok(Arc::new(MemoryHistory::new()) as Arc<dyn HistoryBackend>),
            #[cfg(feature = "history-sqlite")]
            HistoryUri::Sqlite(path) => Ok(Arc::new(sqlite::SqliteHistory::connect(path, timeout).await?) as _),
            #[cfg(feature = "history-postgres")]
            HistoryUri::Postgres(dsn) => Ok(Arc::new(postgres::PgHistory::connect(&dsn, timeout).await?) as _),
            #[allow(unreachable_patterns)]
            other => Err(HistoryError::Uri(format!("{} is not compiled in", other.display()))),
        }
    })
}

enum Msg {
    Record(HistoryRecord),
    Worker(WorkerHistoryRecord),
    Flush(oneshot::Sender<()>),
}

/// Counters of the writer, for `/metrics`.
#[derive(Debug, Default)]
pub struct HistoryStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
    pub batches: AtomicU64,
}

/// The history front: a bounded queue into the writer task, and reads.
#[derive(Clone)]
pub struct History {
    tx: mpsc::Sender<Msg>,
    backend: Arc<dyn HistoryBackend>,
    stats: Arc<HistoryStats>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("backend", &self.backend.kind()).field("stats", &self.stats).finish()
    }
}

impl History {
    /// Starts the writer task (on the current Tokio runtime) in front of `backend`, restarted
    /// when it panics (up to 5 times in a row).
    pub fn start(backend: Arc<dyn HistoryBackend>) -> History {
        Self::start_supervised(backend, &crate::supervise::Health::new(5))
    }

    /// Like [`History::start`], the writer supervised by `health` (the orchestrator's, so
    /// `/_public/status` reports a writer that stays down; see [`crate::supervise`]).
    /// The rows of a batch whose writing panicked are lost; the writer goes on with the next.
    pub fn start_supervised(backend: Arc<dyn HistoryBackend>, health: &Arc<crate::supervise::Health>) -> History {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let stats = Arc::new(HistoryStats::default());
        // Shared, so a restarted writer takes over the queue (a tokio lock is released, never
        // poisoned, when the writer panics).
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let (b, s) = (backend.clone(), stats.clone());
        crate::supervise::supervise(health, "history_writer", move || writer(rx.clone(), b.clone(), s.clone()));
        History { tx, backend, stats }
    }

    /// The backend (`sqlite`, `postgresql`, `memory`).
    pub fn backend(&self) -> &Arc<dyn HistoryBackend> {
        &self.backend
    }

    /// Writer counters.
    pub fn stats(&self) -> &HistoryStats {
        &self.stats
    }

    /// Events waiting for the writer.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues rows for writing. Never waits: when the queue is full the rows are dropped (and counted).
    pub fn record(&self, rows: impl IntoIterator<Item = HistoryRecord>) {
        for row in rows {
            self.send(Msg::Record(row));
        }
    }

    /// Queues a worker history row, like [`History::record`].
    pub fn record_worker(&self, row: WorkerHistoryRecord) {
        self.send(Msg::Worker(row));
    }

    fn send(&self, msg: Msg) {
        if let Err(e) = self.tx.try_send(msg) {
            let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if n % 1000 == 0 {
                let why = if matches!(e, mpsc::error::TrySendError::Full(_)) { "queue full" } else { "writer stopped" };
                tracing::warn!(dropped_total = n + 1, "history event dropped ({why})");
            }
        }
    }

    /// Waits until every row queued before this call is written (or failed), at most `timeout`.
    /// Returns false on timeout.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = oneshot::channel();
        let wait = async {
            if self.tx.send(Msg::Flush(ack)).await.is_err() {
                return;
            }
            let _ = done.await;
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Every row of a job, oldest first (after writing what was queued before).
    pub async fn job_history(&self, job_id: &str) -> Result<Vec<HistoryRecord>, HistoryError> {
        self.flush(Duration::from_secs(5)).await;
        self.backend.job_history(job_id).await
    }

    /// The latest row of each job of `client` (or of every client), newest first.
    pub async fn jobs(
        &self,
        client: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<HistoryRecord>, HistoryError> {
        self.flush(Duration::from_secs(5)).await;
        self.backend.jobs(client, limit, offset).await
    }

    /// Jobs per status of their latest row.
    pub async fn status_counts(&self, client: Option<&str>) -> Result<BTreeMap<String, u64>, HistoryError> {
        self.flush(Duration::from_secs(5)).await;
        self.backend.status_counts(client).await
    }

    /// The newest `limit` worker history rows of a worker since `since_us`, oldest first.
    pub async fn worker_history(
        &self,
        worker_id: &str,
        since_us: i64,
        limit: usize,
    ) -> Result<Vec<WorkerHistoryRecord>, HistoryError> {
        self.flush(Duration::from_secs(5)).await;
        self.backend.worker_history(worker_id, since_us, limit).await
    }

    /// Finished and failed tasks per worker since `since_us` (see [`HistoryBackend::task_outcomes`]).
    pub async fn task_outcomes(
        &self,
        worker_ids: &[String],
        since_us: i64,
    ) -> Result<HashMap<String, TaskOutcomes>, HistoryError> {
        self.flush(Duration::from_secs(5)).await;
        self.backend.task_outcomes(worker_ids, since_us).await
    }
}

async fn writer(
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Msg>>>,
    backend: Arc<dyn HistoryBackend>,
    stats: Arc<HistoryStats>,
) {
    let mut rx = rx.lock().await;
    let mut msgs = Vec::with_capacity(BATCH_SIZE);
    let mut batch = Vec::with_capacity(BATCH_SIZE);
    let mut workers = Vec::new();
    while rx.recv_many(&mut msgs, BATCH_SIZE).await > 0 {
        for msg in msgs.drain(..) {
            match msg {
                Msg::Record(r) => batch.push(r),
                Msg::Worker(r) => workers.push(r),
                Msg::Flush(ack) => {
                    write(&*backend, &mut batch, &stats).await;
                    write(&*backend, &mut workers, &stats).await;
                    let _ = ack.send(());
                }
            }
        }
        write(&*backend, &mut batch, &stats).await;
        write(&*backend, &mut workers, &stats).await;
    }
}

/// A kind of row the writer inserts in batches.
trait WriterRow: Sized + Send + Sync {
    fn insert<'a>(backend: &'a dyn HistoryBackend, rows: &'a [Self]) -> BoxFuture<'a, Result<(), HistoryError>>;
    /// Logs a row the database refused.
    fn lost(&self, e: &HistoryError);
}

impl WriterRow for HistoryRecord {
    fn insert<'a>(backend: &'a dyn HistoryBackend, rows: &'a [Self]) -> BoxFuture<'a, Result<(), HistoryError>> {
        backend.insert(rows)
    }
    fn lost(&self, e: &HistoryError) {
        tracing::error!(error = %e, job_id = %self.job_id, event_type = %self.event_type, "history row lost");
    }
}

impl WriterRow for WorkerHistoryRecord {
    fn insert<'a>(backend: &'a dyn HistoryBackend, rows: &'a [Self]) -> BoxFuture<'a, Result<(), HistoryError>> {
        backend.insert_workers(rows)
    }
    fn lost(&self, e: &HistoryError) {
        tracing::error!(error = %e, worker_id = %self.worker_id, event_type = %self.event_type, "history row lost");
    }
}

/// Writes a batch: up to three attempts, then row by row (so one bad row loses only itself).
async fn write<R: WriterRow>(backend: &dyn HistoryBackend, batch: &mut Vec<R>, stats: &HistoryStats) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let mut last = None;
    for delay_ms in [0u64, 100, 1000] {
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        match R::insert(backend, batch).await {
            Ok(()) => {
                stats.written.fetch_add(n, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
                batch.clear();
                return;
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        tracing::warn!(error = %e, rows = n, "history batch insert failed; writing rows one by one");
    }
    for row in batch.drain(..) {
        match R::insert(backend, std::slice::from_ref(&row)).await {
            Ok(()) => {
                stats.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                row.lost(&e);
            }
        }
    }
}

/// A JSON object from `(key, value)` pairs, leaving out nulls.
pub(crate) fn object(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Object(
        pairs.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.to_owned(), v)).collect::<Map<_, _>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(HistoryUri::parse("memory:").unwrap(), HistoryUri::Memory);
        let e = HistoryUri::parse("mysql://root@localhost/db").unwrap_err();
        assert!(e.to_string().contains("unsupported scheme `mysql`"), "{e}");
        assert!(!e.to_string().contains("root@"), "never echo credentials: {e}");
        assert!(HistoryUri::parse("sqlite:").is_err());
        assert_eq!(redact("postgresql://u:secret@h:5432/db?sslmode=disable"), "postgresql://u@h:5432/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }

    #[cfg(feature = "history-sqlite")]
    #[test]
    fn sqlite_paths() {
        let p = |u: &str| HistoryUri::parse(u).unwrap();
        assert_eq!(p("sqlite:history.db"), HistoryUri::Sqlite(Some("history.db".into())));
        assert_eq!(p("sqlite:///tmp/h.db"), HistoryUri::Sqlite(Some("/tmp/h.db".into())));
        assert_eq!(p("sqlite:/tmp/h.db"), HistoryUri::Sqlite(Some("/tmp/h.db".into())));
        assert_eq!(p("sqlite::memory:"), HistoryUri::Sqlite(None));
        assert_eq!(p("sqlite:/:memory:"), HistoryUri::Sqlite(None));
    }

    #[test]
    fn timestamps_increase_and_format_in_tz() {
        let a = next_timestamp_us();
        let b = next_timestamp_us();
        assert!(b > a);
        assert_eq!(format_timestamp(1_724_752_800_123_000, chrono_tz::UTC), "2024-08-27T10:00:00.123Z");
        assert_eq!(format_timestamp(1_724_752_800_123_000, chrono_tz::Europe::Berlin), "2024-08-27T12:00:00.123+02:00");
    }

    #[tokio::test]
    async fn queue_drops_instead_of_blocking_and_flush_waits() {
        let backend = Arc::new(MemoryHistory::new());
        let h = History::start(backend.clone());
        let row = |i: usize| HistoryRecord {
            event_id: uuid::Uuid::new_v4().to_string(),
            job_id: "j".into(),
            timestamp_us: i as i64,
            event_type: "x".into(),
            ..Default::default()
        };
        h.record((0..10).map(row));
        assert!(h.flush(Duration::from_secs(5)).await);
        assert_eq!(backend.job_history("j").await.unwrap().len(), 10);
        assert_eq!(h.stats().written.load(Ordering::Relaxed), 10);
    }
}
