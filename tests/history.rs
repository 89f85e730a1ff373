//! Execution history on SQLite (a temp file) and PostgreSQL (the server on 127.0.0.1:5432, a fresh
//! database per test, dropped at the end): every event kind through the HTTP API, the backend
//! queries, migrations, start-up errors, and the write throughput; worker history rows
//! (`registered`, `status_update`) and the periodic reputation recalculation that reads the
//! `task_finished` rows.
//!
//! PostgreSQL is required: a missing server fails these tests (set AVTO_TEST_POSTGRES_URL to use
//! another admin connection than postgresql://postgres@127.0.0.1:5432/test).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avto::history::{self, HistoryRecord, HistoryUri, TaskOutcomes, WorkerHistoryRecord, SCHEMA_VERSION};
use avto::prelude::*;
use avto::protocol::sign::MessageKind;
use avto::server::config::{ClientEntry, Config};
use avto::server::{Orchestrator, ServeError};
use avto::worker::{TaskHandle, TaskOutcome, Worker};
use avto::ClientConfig;
use avto_tests::blueprints::{approval_flow, echo_flow};
use avto_tests::{test_config, wait_workers, ApiClient, RawWorker, Server, SECRET, WORKER_TOKEN};
use serde_json::{json, Value};
use sqlx::Connection;

/// start -> work -> done, no worker needed.
#[avto::blueprint(name = "hist_linear", api_version = "v1", api_endpoint = "jobs/hist_linear")]
pub mod hist_linear {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("work");
    }

    /// Fails the first run of each job (`initial_data.key`), so the retry is in the history.
    #[handler(state = "work")]
    async fn work(ctx: &Context, actions: &mut Actions) -> Result<(), String> {
        let key = ctx.initial_data["key"].as_str().unwrap_or_default().to_owned();
        if ctx.initial_data["flaky"] == true && FAILED_ONCE.lock().unwrap().insert(key) {
            return Err("first run fails".into());
        }
        actions.transition_to("done");
        Ok(())
    }

    #[handler(state = "done", end)]
    async fn done() {}
}

static FAILED_ONCE: std::sync::LazyLock<Mutex<HashSet<String>>> = std::sync::LazyLock::new(Default::default);

// ---------------------------------------------------------------- databases

/// A fresh PostgreSQL database, dropped by `drop_db` (or on drop, if the test panicked).
struct PgDb {
    admin: String,
    name: String,
    uri: String,
    dropped: bool,
}

fn pg_admin_url() -> String {
    std::env::var("AVTO_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/test".into())
}

impl PgDb {
    async fn create() -> PgDb {
        let admin = pg_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is required for the history tests ({}): {e}", history::redact(&admin))
        });
        let name = format!("avto_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
        let uri = format!("{base}/{name}");
        PgDb { admin, name, uri, dropped: false }
    }

    async fn drop_db(mut self) {
        drop_pg(&self.admin, &self.name).await;
        self.dropped = true;
    }
}

async fn drop_pg(admin: &str, name: &str) {
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.unwrap();
    let _ = conn.close().await;
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if !self.dropped {
            let (admin, name) = (self.admin.clone(), self.name.clone());
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(drop_pg(&admin, &name));
            })
            .join();
        }
    }
}

/// A SQLite file in the temp dir, removed on drop.
struct SqliteFile {
    path: std::path::PathBuf,
    uri: String,
}

impl SqliteFile {
    fn new() -> SqliteFile {
        let path = std::env::temp_dir().join(format!("avto-history-{}.db", uuid::Uuid::new_v4().simple()));
        let uri = format!("sqlite://{}", path.display());
        SqliteFile { path, uri }
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", self.path.display()));
        }
    }
}

// ---------------------------------------------------------------- helpers

fn config(uri: &str) -> Config {
    let mut cfg = test_config();
    cfg.history_database_uri = Some(uri.into());
    cfg.tz = chrono_tz::Europe::Berlin;
    let mk = |name: &str, token: &str| ClientEntry {
        token: token.into(),
        config: ClientConfig { name: name.into(), plan: "free".into(), ..Default::default() },
        quota: None,
    };
    cfg.clients = vec![mk("alice", "alice-token"), mk("bob", "bob-token")];
    cfg
}

async fn rows(c: &ApiClient, id: &str) -> Vec<Value> {
    let (status, body) = c.get(&format!("/api/v1/jobs/{id}/history?detailed=true")).await;
    assert_eq!(status, 200, "history of {id}: {body}");
    body.as_array().unwrap().clone()
}

fn types(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|r| r["event_type"].as_str().unwrap()).collect()
}

fn find<'a>(rows: &'a [Value], event_type: &str) -> &'a Value {
    rows.iter().find(|r| r["event_type"] == event_type).unwrap_or_else(|| panic!("no {event_type} in {rows:#?}"))
}

/// `want` appears in `have` in this order (other events may be in between).
fn assert_in_order(have: &[&str], want: &[&str]) {
    let mut it = have.iter();
    for w in want {
        assert!(it.any(|h| h == w), "expected {want:?} in order within {have:?}");
    }
}

/// An echo worker whose task fails (transiently) the first time it sees `params.key` with `flaky`.
fn start_worker(base: &str, id: &str) -> tokio::sync::oneshot::Sender<()> {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let worker = Worker::builder()
        .orchestrator_url(base)
        .worker_id(id)
        .token(WORKER_TOKEN)
        .secret_key(SECRET)
        .heartbeat_interval(Duration::from_secs(2))
        .configure(|c| {
            c.idle_poll_delay = Duration::from_millis(50);
            c.result_retry_initial_delay = Duration::from_millis(100);
        })
        .task("echo", move |p: Value, _t: TaskHandle| {
            let first = seen.lock().unwrap().insert(p["key"].as_str().unwrap_or_default().to_owned());
            async move {
                if p["flaky"] == true && first {
                    return TaskOutcome::failure("TRANSIENT_ERROR", "try again");
                }
                TaskOutcome::success(json!({"echo": p}))
            }
        })
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = worker
            .run_until(async {
                let _ = rx.await;
            })
            .await;
    });
    tx
}

// ---------------------------------------------------------------- the suite

/// Everything the history API must show, on one database.
async fn api_suite(uri: &str) {
    let s = Server::with_config(
        [hist_linear::blueprint(), echo_flow::blueprint(), approval_flow::blueprint()],
        config(uri),
    )
    .await;
    let alice = s.client().with_token("alice-token");
    let bob = s.client().with_token("bob-token");
    let _stop = start_worker(&s.base, "hist-worker");
    wait_workers(&s, 1).await;

    // 1. States, transitions, durations, handler retry, end.
    let key = uuid::Uuid::new_v4().to_string();
    let id = alice.create("/api/v1/jobs/hist_linear", json!({"key": key, "flaky": true})).await;
    let job = alice.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "finished", "{job}");
    let r = rows(&alice, &id).await;
    let t = types(&r);
    assert_in_order(
        &t,
        &[
            "job_created",
            "state_started",
            "state_finished",
            "state_started",
            "state_failed",
            "state_started",
            "state_finished",
            "job_completed",
        ],
    );
    assert_eq!(t.iter().filter(|e| **e == "job_completed").count(), 1, "{t:?}");
    let created = &r[0];
    assert_eq!(created["event_type"], "job_created");
    assert_eq!(created["state"], "start");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["client"], "alice");
    assert_eq!(created["details"], json!({"source": "api"}));
    assert_eq!(created["context_snapshot"]["initial_data"]["key"], key.as_str());
    let first_finish = find(&r, "state_finished");
    assert_eq!(
        (first_finish["previous_state"].as_str(), first_finish["next_state"].as_str()),
        (Some("start"), Some("work"))
    );
    assert!(first_finish["duration_ms"].is_u64(), "{first_finish}");
    let failed = find(&r, "state_failed");
    assert_eq!(failed["state"], "work");
    assert_eq!(failed["attempt_number"], 1);
    assert_eq!(failed["details"]["error"], "first run fails");
    let retried: Vec<&Value> =
        r.iter().filter(|e| e["event_type"] == "state_started" && e["state"] == "work").collect();
    assert_eq!(retried.iter().map(|e| e["attempt_number"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);
    let done = find(&r, "job_completed");
    assert_eq!(done["status"], "finished");
    assert!(done["duration_ms"].as_u64().unwrap() >= 500, "the handler retry backs off ~1 s: {done}");
    assert_eq!(done["context_snapshot"]["result"], Value::Null, "no result: state_history is empty");
    // Timestamps: ISO-8601 in TZ (Europe/Berlin), non-decreasing; nulls omitted; no token anywhere.
    let ts: Vec<&str> = r.iter().map(|e| e["timestamp"].as_str().unwrap()).collect();
    assert!(ts.iter().all(|t| t.ends_with("+01:00") || t.ends_with("+02:00")), "{ts:?}");
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
    assert!(r.iter().all(|e| e.as_object().unwrap().values().all(|v| !v.is_null())));
    assert!(!serde_json::to_string(&r).unwrap().contains("alice-token"));

    // Compact snapshots by default (no initial_data), like the status endpoint.
    let (status, compact) = alice.get(&format!("/api/v1/jobs/{id}/history")).await;
    assert_eq!(status, 200);
    assert!(compact[0]["context_snapshot"].get("initial_data").is_none(), "{}", compact[0]);
    assert_eq!(compact[0]["context_snapshot"]["id"], id.as_str());

    // 2. Tasks: dispatched, finished by a worker, retried after a transient failure.
    let key = uuid::Uuid::new_v4().to_string();
    let id = alice.create("/api/v1/jobs/echo", json!({"key": key, "flaky": true})).await;
    let job = alice.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "finished", "{job}");
    let r = rows(&alice, &id).await;
    let t = types(&r);
    assert_in_order(
        &t,
        &[
            "job_created",
            "state_started",
            "task_dispatched",
            "state_finished",
            "task_finished",
            "task_retry",
            "task_finished",
            "state_started",
            "job_completed",
        ],
    );
    let dispatched = find(&r, "task_dispatched");
    assert_eq!(dispatched["details"]["task_type"], "echo");
    assert_eq!(dispatched["attempt_number"], 1);
    let task_id = dispatched["origin_task_id"].as_str().unwrap();
    let finished: Vec<&Value> = r.iter().filter(|e| e["event_type"] == "task_finished").collect();
    assert_eq!(finished[0]["origin_task_id"], task_id);
    assert_eq!(finished[0]["worker_id"], "hist-worker");
    assert_eq!(finished[0]["details"]["result_status"], "failure");
    assert_eq!(finished[1]["details"]["result_status"], "success");
    let retry = find(&r, "task_retry");
    assert_eq!(retry["origin_task_id"], task_id);
    assert_eq!(retry["attempt_number"], 2);
    assert_eq!(retry["details"]["next_task_id"], finished[1]["origin_task_id"]);
    assert_eq!(find(&r, "job_completed")["context_snapshot"]["result"]["key"], key.as_str());

    // 3. Approval and cancellation.
    let id = alice.create("/api/v1/jobs/approval", json!({})).await;
    alice.wait_for(&id, &["waiting_for_human"], Duration::from_secs(5)).await;
    let (status, _) = alice.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200);
    let r = rows(&alice, &id).await;
    assert_in_order(
        &types(&r),
        &["job_created", "state_started", "approval_requested", "state_finished", "job_cancelled"],
    );
    assert_eq!(find(&r, "approval_requested")["details"], json!({"integration": "test", "message": "please approve"}));
    let cancelled = find(&r, "job_cancelled");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["details"]["error_message"], "cancelled by the client");

    // 4. Isolation and bad input: another client's job is as unknown as a random id.
    let (status, body) = bob.get(&format!("/api/v1/jobs/{id}/history")).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("Job not found")));
    let (status, _) = alice.get(&format!("/api/v1/jobs/{}/history", uuid::Uuid::new_v4())).await;
    assert_eq!(status, 404);
    let (status, body) = alice.get("/api/v1/jobs/not-a-uuid/history").await;
    assert_eq!(status, 400, "{body}");

    // 5. The backend's job list and summary (latest row per job), as the server wrote them.
    let h = s.core.history().expect("history enabled");
    let list = h.jobs(Some("alice"), 10, 0).await.unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].job_id, id, "newest first");
    assert_eq!(list[0].status.as_deref(), Some("cancelled"));
    let counts = h.status_counts(Some("alice")).await.unwrap();
    assert_eq!(counts.get("finished"), Some(&2));
    assert_eq!(counts.get("cancelled"), Some(&1));
    assert!(h.jobs(Some("bob"), 10, 0).await.unwrap().is_empty());
    assert_eq!(h.stats().dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(h.stats().failed.load(std::sync::atomic::Ordering::Relaxed), 0);
}

fn record(job: &str, client: &str, event_type: &str, status: &str, ts: i64) -> HistoryRecord {
    HistoryRecord {
        event_id: uuid::Uuid::new_v4().to_string(),
        job_id: job.into(),
        client: Some(client.into()),
        blueprint: Some("bp".into()),
        timestamp_us: ts,
        event_type: event_type.into(),
        status: Some(status.into()),
        state: Some("s".into()),
        duration_ms: Some(12),
        attempt_number: Some(1),
        details: Some(json!({"k": "v\u{0}"})),
        context_snapshot: Some(Arc::from(json!({"id": job, "text": "nul \u{0} and ünïcode"}).to_string())),
        ..Default::default()
    }
}

/// The backend contract, straight on the database.
async fn backend_suite(uri: &str) {
    let b = history::connect(uri, Duration::from_secs(10)).await.expect("connect");
    assert_eq!(b.schema_version().await.unwrap(), SCHEMA_VERSION);
    // Migrating again (a second instance starting) changes nothing.
    let again = history::connect(uri, Duration::from_secs(10)).await.expect("connect twice");
    assert_eq!(again.schema_version().await.unwrap(), SCHEMA_VERSION);

    let client = format!("c-{}", uuid::Uuid::new_v4().simple());
    let (j1, j2, j3) =
        (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    let t0 = history::next_timestamp_us();
    let rows = vec![
        record(&j1, &client, "job_created", "pending", t0),
        record(&j2, "someone-else", "job_created", "pending", t0 + 1),
        record(&j1, &client, "state_started", "running", t0 + 2),
        record(&j3, &client, "job_created", "pending", t0 + 3),
        // Same timestamp: insertion order decides.
        record(&j1, &client, "job_completed", "finished", t0 + 4),
        record(&j1, &client, "late_note", "finished", t0 + 4),
    ];
    b.insert(&rows).await.unwrap();
    let got = b.job_history(&j1).await.unwrap();
    assert_eq!(
        got.iter().map(|r| r.event_type.as_str()).collect::<Vec<_>>(),
        ["job_created", "state_started", "job_completed", "late_note"]
    );
    assert_eq!(got[0].timestamp_us, t0, "microsecond timestamps survive the round trip");
    assert_eq!(got[0].event_id, rows[0].event_id);
    assert_eq!(got[0].duration_ms, Some(12));
    assert_eq!(got[0].client.as_deref(), Some(client.as_str()));
    assert_eq!(got[0].details.as_ref().unwrap()["k"].as_str().unwrap().trim_end_matches(['\u{0}', '\u{fffd}']), "v");
    assert_eq!(got[0].snapshot().unwrap()["id"], j1.as_str());
    assert!(got[0].snapshot().unwrap()["text"].as_str().unwrap().contains("ünïcode"));

    let list = b.jobs(Some(&client), 10, 0).await.unwrap();
    assert_eq!(list.iter().map(|r| r.job_id.as_str()).collect::<Vec<_>>(), [j1.as_str(), j3.as_str()]);
    assert_eq!(list[0].event_type, "late_note");
    let page = b.jobs(Some(&client), 1, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].job_id, j3);
    let counts = b.status_counts(Some(&client)).await.unwrap();
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), [("finished".to_string(), 1), ("pending".to_string(), 1)]);
    assert!(b.jobs(None, 100, 0).await.unwrap().len() >= 3);
    assert!(b.job_history("no-such-job").await.unwrap().is_empty());

    // Worker history: rows of one worker, newest `limit` since a time, oldest first.
    let w = format!("w-{}", uuid::Uuid::new_v4().simple());
    let wrows = [
        WorkerHistoryRecord::new(&w, "registered", &json!({"worker_id": w, "status": "idle", "text": "ü \u{0}"})),
        WorkerHistoryRecord::new("other-worker", "registered", &json!({})),
        WorkerHistoryRecord::new(&w, "status_update", &json!({"worker_id": w, "status": "busy"})),
    ];
    b.insert_workers(&wrows).await.unwrap();
    let got = b.worker_history(&w, 0, 10).await.unwrap();
    assert_eq!(got.iter().map(|r| r.event_type.as_str()).collect::<Vec<_>>(), ["registered", "status_update"]);
    assert_eq!(got[0].event_id, wrows[0].event_id);
    assert_eq!(got[0].timestamp_us, wrows[0].timestamp_us, "microsecond timestamps survive the round trip");
    assert_eq!(got[0].snapshot().unwrap()["status"], "idle");
    assert!(got[0].snapshot().unwrap()["text"].as_str().unwrap().starts_with('ü'));
    assert_eq!(got[1].snapshot().unwrap()["status"], "busy");
    let newest = b.worker_history(&w, 0, 1).await.unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].event_type, "status_update", "the newest rows within the limit");
    assert_eq!(b.worker_history(&w, wrows[2].timestamp_us, 10).await.unwrap().len(), 1, "since a time");
    assert!(b.worker_history("nobody", 0, 10).await.unwrap().is_empty());

    // Task outcomes per worker: `task_finished` rows since a time, failures by result status.
    let (w1, w2) = (format!("{w}-1"), format!("{w}-2"));
    let now = history::next_timestamp_us();
    let finished = |worker: &str, status: &str, ts: i64| HistoryRecord {
        worker_id: Some(worker.into()),
        details: Some(json!({"result_status": status})),
        ..record(&j1, &client, "task_finished", "running", ts)
    };
    b.insert(&[
        finished(&w1, "success", now),
        finished(&w1, "failure", now + 1),
        finished(&w1, "needs_review", now + 2),
        finished(&w1, "failure", now - 3_600_000_000), // an hour before `since`: not counted
        finished(&w2, "failure", now + 3),
        HistoryRecord { worker_id: Some(w1.clone()), ..record(&j1, &client, "task_dispatched", "running", now) },
        HistoryRecord {
            worker_id: Some(w2.clone()),
            details: Some(json!("not an object")),
            ..record(&j1, &client, "task_finished", "running", now + 4)
        },
    ])
    .await
    .unwrap();
    let since = now - 60_000_000;
    let out = b.task_outcomes(&[w1.clone(), w2.clone(), "nobody".into()], since).await.unwrap();
    assert_eq!(out.get(&w1), Some(&TaskOutcomes { finished: 3, failed: 1 }));
    assert_eq!(out.get(&w2), Some(&TaskOutcomes { finished: 2, failed: 1 }));
    assert!(!out.contains_key("nobody"), "{out:?}");
    assert!(b.task_outcomes(&[], since).await.unwrap().is_empty());
    let many: Vec<String> = (0..1200).map(|i| format!("{w}-{i}")).collect();
    assert_eq!(b.task_outcomes(&many, since).await.unwrap().len(), 2, "more ids than one statement binds");
}

/// Events per second through the queue and the batching writer (printed; a low floor is asserted).
async fn throughput(uri: &str, label: &str) -> f64 {
    let b = history::connect(uri, Duration::from_secs(10)).await.expect("connect");
    let h = history::History::start(b);
    let snapshot: Arc<str> = Arc::from(json!({"id": "x", "state_history": {"payload": "y".repeat(600)}}).to_string());
    const N: usize = 20_000;
    let started = Instant::now();
    for chunk in 0..(N / 5000) {
        let job = uuid::Uuid::new_v4().to_string();
        h.record((0..5000).map(|i| HistoryRecord {
            event_id: uuid::Uuid::new_v4().to_string(),
            job_id: format!("{job}-{}", i % 50),
            client: Some("bench".into()),
            timestamp_us: history::next_timestamp_us(),
            event_type: "state_started".into(),
            state: Some(format!("s{chunk}")),
            status: Some("running".into()),
            context_snapshot: Some(snapshot.clone()),
            ..Default::default()
        }));
        assert!(h.flush(Duration::from_secs(120)).await, "writer too slow");
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = N as f64 / secs;
    assert_eq!(h.stats().written.load(std::sync::atomic::Ordering::Relaxed), N as u64);
    assert_eq!(h.stats().dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
    println!("history write throughput [{label}]: {N} events in {secs:.2} s = {rate:.0} events/s");
    assert!(rate > 500.0, "{label}: only {rate:.0} events/s");
    rate
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_history_api() {
    let db = SqliteFile::new();
    api_suite(&db.uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_history_api() {
    let db = PgDb::create().await;
    api_suite(&db.uri).await;
    db.drop_db().await;
}

#[tokio::test]
async fn sqlite_backend_contract() {
    let db = SqliteFile::new();
    backend_suite(&db.uri).await;
    // The file persists: a new connection reads the same rows.
    let b = history::connect(&db.uri, Duration::from_secs(5)).await.unwrap();
    assert!(!b.jobs(None, 10, 0).await.unwrap().is_empty());
    // In-memory SQLite works too (one connection kept open).
    backend_suite("sqlite::memory:").await;
}

#[tokio::test]
async fn postgres_backend_contract() {
    let db = PgDb::create().await;
    backend_suite(&db.uri).await;
    db.drop_db().await;
}

#[tokio::test]
async fn memory_backend_contract() {
    let b = history::MemoryHistory::new();
    let client = "c";
    let rows =
        vec![record("j1", client, "job_created", "pending", 1), record("j1", client, "job_completed", "finished", 2)];
    use avto::history::HistoryBackend;
    b.insert(&rows).await.unwrap();
    assert_eq!(b.job_history("j1").await.unwrap().len(), 2);
    assert_eq!(b.jobs(Some(client), 10, 0).await.unwrap()[0].event_type, "job_completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_throughput_both_databases() {
    let file = SqliteFile::new();
    throughput(&file.uri, "sqlite").await;
    let pg = PgDb::create().await;
    throughput(&pg.uri, "postgresql").await;
    pg.drop_db().await;
}

#[tokio::test]
async fn history_disabled_is_a_clear_404() {
    let s = Server::start([echo_flow::blueprint()]).await;
    let c = s.client();
    let id = c.create("/api/v1/jobs/echo", json!({})).await;
    let (status, body) = c.get(&format!("/api/v1/jobs/{id}/history")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], history::DISABLED_MESSAGE);
    assert!(s.core.history().is_none());
}

#[tokio::test]
async fn bad_uris_fail_at_start_up() {
    let lookup = |uri: &'static str| {
        move |k: &str| match k {
            "HISTORY_DATABASE_URI" => Some(uri.to_string()),
            _ => None,
        }
    };
    let e = Config::from_lookup(&lookup("mysql://root:hunter2@localhost/db")).unwrap_err();
    assert!(e.0.contains("unsupported scheme `mysql`"), "{e}");
    assert!(!e.0.contains("hunter2"), "{e}");
    let e = Config::from_lookup(&lookup("sqlite:")).unwrap_err();
    assert!(e.0.contains("needs a file path"), "{e}");
    assert_eq!(HistoryUri::parse("postgres://u@h/db").unwrap(), HistoryUri::Postgres("postgres://u@h/db".into()));

    // Unreachable PostgreSQL: listen() fails after the connect timeout, naming the target without the password.
    let mut cfg = config("postgresql://postgres:hunter2@127.0.0.1:1/nothing");
    cfg.history_connect_timeout = Duration::from_millis(800);
    let orch = Orchestrator::builder().blueprint(echo_flow::blueprint()).config(cfg).build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    let err = orch.listen(listener, async {}).await.unwrap_err();
    assert!(matches!(err, ServeError::History(history::HistoryError::Connect { .. })), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("postgresql://postgres@127.0.0.1:1/nothing") && msg.contains("cannot connect"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // SQLite in a directory that does not exist.
    let cfg = config("sqlite:///nonexistent-dir-avto/h.db");
    let orch = Orchestrator::builder().blueprint(echo_flow::blueprint()).config(cfg).build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let msg = orch.listen(listener, async {}).await.unwrap_err().to_string();
    assert!(msg.contains("does not exist"), "{msg}");
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let db = SqliteFile::new();
    history::connect(&db.uri, Duration::from_secs(5)).await.unwrap();
    let mut conn = sqlx::SqliteConnection::connect(&db.uri).await.unwrap();
    sqlx::query("INSERT INTO avto_schema_migrations (version, description, applied_at) VALUES (?, 'future', 0)")
        .bind(SCHEMA_VERSION + 1)
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    let e = history::connect(&db.uri, Duration::from_secs(5)).await.err().expect("refused");
    assert!(e.to_string().contains("newer than this avto knows"), "{e}");
}

// ---------------------------------------------------------------- worker history and reputation

/// `registered` and `status_update` rows through the worker API: a row for a registration, one
/// per changed status (at most one per worker per `WORKER_HISTORY_STATUS_INTERVAL_SECONDS`), the
/// goodbye always; snapshots are the worker's record without its security block.
async fn worker_history_suite(uri: &str) {
    let mut cfg = config(uri);
    cfg.worker_history_status_interval = Duration::from_millis(1500);
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let id = format!("wh-{}", uuid::Uuid::new_v4().simple());
    let w = RawWorker::new(&s.base, &id, &["echo"]);
    let types = |rows: &[WorkerHistoryRecord]| rows.iter().map(|r| r.event_type.clone()).collect::<Vec<_>>();

    assert_eq!(w.register().await.0, 200);
    let h = s.core.history().expect("history enabled (set before the server answers)");
    let rows = h.worker_history(&id, 0, 100).await.unwrap();
    assert_eq!(types(&rows), ["registered"]);
    let snap = rows[0].snapshot().unwrap();
    assert_eq!((snap["worker_id"].as_str(), snap["worker_type"].as_str()), (Some(id.as_str()), Some("raw")));
    assert_eq!((snap["status"].as_str(), snap["reputation"].as_f64()), (Some("idle"), Some(1.0)));
    assert!(snap.get("security").is_none(), "{snap}");

    // Heartbeats every few seconds: the same status writes nothing; a change within the
    // interval waits for the first heartbeat after it that still reports it.
    assert_eq!(w.heartbeat(&[]).await.0, 200);
    assert_eq!(w.heartbeat(&["t-1"]).await.0, 200);
    assert_eq!(types(&h.worker_history(&id, 0, 100).await.unwrap()), ["registered"]);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(w.heartbeat(&["t-1"]).await.0, 200);
    assert_eq!(w.heartbeat(&["t-1"]).await.0, 200);
    let rows = h.worker_history(&id, 0, 100).await.unwrap();
    assert_eq!(types(&rows), ["registered", "status_update"]);
    let snap = rows[1].snapshot().unwrap();
    assert_eq!(snap["status"], "busy", "the merged record: {snap}");
    assert_eq!(snap["current_tasks"], json!(["t-1"]));
    assert_eq!(snap["worker_type"], "raw", "the registration is still there");
    assert!(snap.get("security").is_none(), "{snap}");

    // The goodbye (`offline`) is written at once.
    let body = w.signed(json!({"worker_id": id, "status": "offline"}), MessageKind::Heartbeat);
    assert_eq!(w.send(reqwest::Method::PATCH, &format!("/_worker/workers/{id}"), Some(&body)).await.0, 200);
    let rows = h.worker_history(&id, 0, 100).await.unwrap();
    assert_eq!(types(&rows), ["registered", "status_update", "status_update"]);
    assert_eq!(rows[2].snapshot().unwrap()["status"], "offline");
    assert!(rows.windows(2).all(|p| p[0].timestamp_us < p[1].timestamp_us));
    assert_eq!(h.stats().failed.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_worker_history() {
    let db = SqliteFile::new();
    worker_history_suite(&db.uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_worker_history() {
    let db = PgDb::create().await;
    worker_history_suite(&db.uri).await;
    db.drop_db().await;
}

/// A worker's reputation as the store has it.
async fn reputation(s: &Server, id: &str) -> f64 {
    s.core.worker(id).await.unwrap_or_else(|| panic!("worker {id} is gone")).reputation
}

async fn wait_reputation(s: &Server, id: &str, want: f64, within: Duration) {
    let started = Instant::now();
    loop {
        let r = reputation(s, id).await;
        if (r - want).abs() < 1e-9 {
            return;
        }
        assert!(started.elapsed() < within, "reputation of {id} stayed {r}, expected {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Spec 79: every `REPUTATION_RECALC_INTERVAL_SECONDS` each live worker's `task_finished` rows
/// of the last 30 days make `0.7 x success_rate + 0.3 x current`; in memory storage with SQLite
/// history, on a short interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reputation_is_recalculated_from_the_history_every_interval() {
    let db = SqliteFile::new();
    let mut cfg = config(&db.uri);
    cfg.reputation_recalc_interval = Duration::from_millis(500);
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let (busy, quiet) =
        (RawWorker::new(&s.base, "rep-busy", &["echo"]), RawWorker::new(&s.base, "rep-quiet", &["echo"]));
    assert_eq!(busy.register().await.0, 200);
    assert_eq!(quiet.register().await.0, 200);
    assert!(s.core.health().tasks().contains_key("reputation"));

    // Three of four tasks of the window succeeded; a failure 31 days ago is outside it.
    let h = s.core.history().unwrap();
    let now = history::next_timestamp_us();
    let row = |status: &str, ts: i64| HistoryRecord {
        event_id: uuid::Uuid::new_v4().to_string(),
        job_id: uuid::Uuid::new_v4().to_string(),
        timestamp_us: ts,
        event_type: "task_finished".into(),
        worker_id: Some("rep-busy".into()),
        details: Some(json!({"result_status": status})),
        ..Default::default()
    };
    h.record([
        row("success", now),
        row("success", now),
        row("failure", now),
        row("success", now),
        row("failure", now - 31 * 86_400 * 1_000_000),
    ]);
    // 0.7 x 0.75 + 0.3 x 1.0, then the old value decays: 0.7 x 0.75 + 0.3 x 0.825.
    wait_reputation(&s, "rep-busy", 0.825, Duration::from_secs(5)).await;
    wait_reputation(&s, "rep-busy", 0.7725, Duration::from_secs(5)).await;
    assert_eq!(reputation(&s, "rep-quiet").await, 1.0, "no rows: unchanged");
    assert!(s.core.metrics().reputation_recalculations() >= 2);

    // Without history there is nothing to count: the task does not run.
    let plain = Server::start([echo_flow::blueprint()]).await;
    let started = Instant::now();
    while !plain.core.health().tasks().contains_key("watcher") {
        assert!(started.elapsed() < Duration::from_secs(5), "the server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!plain.core.health().tasks().contains_key("reputation"));
    assert_eq!(plain.core.recalculate_reputations().await.unwrap(), 0);
}
