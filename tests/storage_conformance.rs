//! One conformance suite for every storage backend: the same async test functions over the
//! capability traits (`JobStore`, `WorkerStore`, `QuotaStore`, `RateLimitStore`, `NonceStore`,
//! `DataStoreBackend`, `StsStore`, `ScheduleLocks`), instantiated for the in-memory backend and
//! for Redis (`AVTO_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/0`; a missing Redis fails
//! the Redis half, it never skips), twice: with the stores' scripts as Redis functions (what a
//! Redis 7 runs) and as `EVALSHA` scripts (what a Redis without functions gets).
//!
//! Every Redis test uses a unique key prefix and deletes it at the end (`SCAN` + `DEL`: the
//! Redis may be shared, never `FLUSHDB`). Concurrency cases run against two store instances
//! (for Redis: two connections on one prefix, i.e. two orchestrator instances).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use avto::actions::TaskSpec;
use avto::job::{now_ms, Job, JobStatus};
use avto::storage::memory::MemoryJobs;
use avto::storage::{JobStore, Overdue, QueuedTask, Stores, Unassigned, WorkerInfo};
use avto::StorageError;
use futures::future::join_all;
use serde_json::{json, Value};

/// The stores under test, and a second instance on the same backend.
struct Backend {
    a: Stores,
    b: Stores,
    redis: bool,
    /// The connection of `a` (Redis only).
    conn: Option<avto::storage::redis::RedisConn>,
    /// The Redis prefix, deleted when the test ends (Redis only).
    cleanup: Option<avto_tests::RedisPrefix>,
    /// The scripts run as `EVALSHA` scripts, as on a Redis without functions (Redis only).
    eval: bool,
}

impl Backend {
    fn memory() -> Backend {
        let a = Stores::memory();
        Backend { b: a.clone(), a, redis: false, conn: None, cleanup: None, eval: false }
    }

    async fn redis() -> Backend {
        Backend::redis_with(false).await
    }

    /// Redis with the scripts sent as `EVALSHA` scripts (what a Redis before 7.0 gets).
    async fn redis_eval() -> Backend {
        Backend::redis_with(true).await
    }

    async fn redis_with(eval: bool) -> Backend {
        let cleanup = avto_tests::RedisPrefix::new();
        let (url, prefix) = (&cleanup.url, &cleanup.prefix);
        let open = || {
            let r = avto::storage::redis::RedisStores::new(url, prefix, Duration::from_secs(5)).expect("Redis URL");
            if eval {
                r.conn().use_eval_scripts();
            }
            (r.stores(), r)
        };
        let (a, ra) = open();
        let (b, _rb) = open();
        ra.check().await.unwrap_or_else(|e| panic!("the Redis conformance tests need Redis at {url}: {e}"));
        Backend { a, b, redis: true, conn: Some(ra.conn().clone()), cleanup: Some(cleanup), eval }
    }

    /// Two job stores on this backend (for Redis: two instances on the test's prefix) whose
    /// terminal jobs expire `retention` after they ended.
    fn jobs_with_retention(&self, retention: Duration) -> (Arc<dyn JobStore>, Arc<dyn JobStore>) {
        match &self.cleanup {
            Some(c) => {
                let open = || {
                    let r = avto::storage::redis::RedisStores::new(&c.url, &c.prefix, Duration::from_secs(5))
                        .expect("Redis URL")
                        .with_job_retention(Some(retention));
                    if self.eval {
                        r.conn().use_eval_scripts();
                    }
                    r.stores().jobs
                };
                (open(), open())
            }
            None => {
                let jobs: Arc<dyn JobStore> = Arc::new(MemoryJobs::with_retention(Some(retention), 0));
                (jobs.clone(), jobs)
            }
        }
    }

    /// Alternates between the two instances.
    fn nth(&self, i: usize) -> &Stores {
        if i.is_multiple_of(2) {
            &self.a
        } else {
            &self.b
        }
    }
}

#[path = "storage_conformance/combined.rs"]
mod combined;
#[path = "storage_conformance/query.rs"]
mod query;
use query::{
    jobs_query_filters_and_combinations, jobs_query_limits_validated, jobs_query_long_walks,
    jobs_query_paging_under_concurrent_inserts, jobs_query_retention_drops_jobs,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn core_cancel_matching_memory() {
    query::bulk_cancel(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn core_cancel_matching_redis() {
    let prefix = avto_tests::RedisPrefix::new();
    query::bulk_cancel(Some(&prefix)).await;
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(&super::Backend::memory()).await;
                }
            )*
        }
        conformance!(@redis redis, redis; $($name),*);
        // The same on a Redis without functions (`EVALSHA` scripts).
        conformance!(@redis redis_eval, redis_eval; $($name),*);
    };
    // Module `$module` runs every case on the Redis backend `Backend::$open` makes.
    (@redis $module:ident, $open:ident; $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let backend = super::Backend::$open().await;
                    super::$name(&backend).await;
                    drop(backend);
                }
            )*
        }
    };
}

conformance!(
    jobs_insert_get_conflict,
    jobs_lock_save_and_missing,
    jobs_commit_all,
    jobs_insert_locked,
    jobs_concurrent_lockers_never_interleave,
    jobs_list_newest_first_and_counts,
    jobs_quarantine_list,
    jobs_claim_stale_once,
    jobs_saves_that_leave_a_job_waiting_are_no_activity,
    jobs_retention_removes_terminal_jobs,
    jobs_retention_expires_in_real_time,
    jobs_webhook_outbox,
    jobs_query_filters_and_combinations,
    jobs_query_long_walks,
    jobs_query_paging_under_concurrent_inserts,
    jobs_query_retention_drops_jobs,
    jobs_query_limits_validated,
    quotas_exact_under_concurrency,
    quotas_init_keeps_what_is_left,
    quotas_reset_each_month,
    rate_limits_fixed_window,
    rate_limits_exact_under_concurrency,
    nonces_first_use_once,
    data_stores_semantics,
    data_stores_atomic_under_concurrency,
    data_stores_keys_expire,
    sts_tokens,
    schedule_locks_claim_once,
    workers_register_heartbeat_reputation,
    workers_expire_claimed_once,
    queues_fifo_within_priority,
    queues_each_task_popped_once,
    queues_steal_second_task,
    queues_cancel_and_finished,
    queues_overdue_claimed_once,
    queues_overdue_at_most_limit,
    queues_parked_claimed_once,
    queues_remove_returns_tasks,
    queues_take_queue_keeps_the_worker,
    workers_mark_idle_and_hot_skills,
);

// ---------------------------------------------------------------------------------------------
// jobs

fn job(id: &str, client: &str) -> Job {
    let mut j = Job::new(id, "flow", "start", json!({"n": 1}));
    let c = std::sync::Arc::make_mut(&mut j.client);
    (c.name, c.id) = (client.to_owned(), client.to_owned());
    j
}

fn uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn jobs_insert_get_conflict(be: &Backend) {
    let id = uid();
    let j = job(&id, "c1");
    be.a.jobs.insert(j.clone()).await.unwrap();
    assert_eq!(be.b.jobs.get(&id).await.unwrap(), Some(j.clone()));
    let mut other = j.clone();
    other.initial_data = json!({"other": true});
    assert!(matches!(be.b.jobs.insert(other).await, Err(StorageError::Conflict(_))));
    assert_eq!(be.a.jobs.get(&uid()).await.unwrap(), None);
}

async fn jobs_lock_save_and_missing(be: &Backend) {
    assert!(be.a.jobs.lock(&uid()).await.unwrap().is_none());
    let id = uid();
    be.a.jobs.insert(job(&id, "c1")).await.unwrap();
    {
        let mut g = be.a.jobs.lock(&id).await.unwrap().expect("job exists");
        g.current_state = "next".into();
        g.status = JobStatus::WaitingForHuman;
        be.a.jobs.save(&g).await.unwrap();
    }
    let seen = be.b.jobs.get(&id).await.unwrap().unwrap();
    assert_eq!((seen.current_state.as_str(), seen.status), ("next", JobStatus::WaitingForHuman));
    // The lock is free again for the other instance.
    let g = tokio::time::timeout(Duration::from_secs(5), be.b.jobs.lock(&id)).await.expect("lock released");
    let mut g = g.unwrap().expect("job exists");
    // Commit saves and releases in one step.
    g.current_state = "committed".into();
    g.status = JobStatus::Finished;
    be.b.jobs.commit(g).await.unwrap();
    let g = tokio::time::timeout(Duration::from_secs(5), be.a.jobs.lock(&id)).await.expect("lock released");
    let mut g = g.unwrap().expect("job exists");
    assert_eq!((g.current_state.as_str(), g.status), ("committed", JobStatus::Finished));
    // A commit that keeps the job hands it back as written, and releases the lock too.
    g.result = Some(json!({"kept": true}));
    let written = Job::clone(&g);
    assert_eq!(&*be.a.jobs.commit_keeping(g).await.unwrap(), &written);
    let g = tokio::time::timeout(Duration::from_secs(5), be.b.jobs.lock(&id)).await.expect("lock released");
    assert_eq!(g.unwrap().expect("job exists").result, Some(json!({"kept": true})));
}

/// Several locked jobs committed in one call: each written and released, answered in order.
async fn jobs_commit_all(be: &Backend) {
    assert!(be.a.jobs.commit_all(Vec::new()).await.unwrap().is_empty());
    let ids: Vec<String> = (0..3).map(|_| uid()).collect();
    let mut guards = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        be.a.jobs.insert(job(id, "c1")).await.unwrap();
        let mut g = be.a.jobs.lock(id).await.unwrap().expect("job exists");
        g.current_state = format!("picked-{i}");
        g.status = JobStatus::Running;
        guards.push(g);
    }
    let answers = be.a.jobs.commit_all(guards).await.unwrap();
    assert_eq!(answers.len(), 3);
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    for (i, id) in ids.iter().enumerate() {
        let g = tokio::time::timeout(Duration::from_secs(5), be.b.jobs.lock(id)).await.expect("lock released");
        let g = g.unwrap().expect("job exists");
        assert_eq!((g.current_state.as_str(), g.status), (format!("picked-{i}").as_str(), JobStatus::Running));
        be.b.jobs.commit(g).await.unwrap();
    }
    let counts = be.a.jobs.counts(Some("c1")).await.unwrap();
    assert!(counts.get(&JobStatus::Running).copied().unwrap_or(0) >= 3, "{counts:?}");
}

async fn jobs_insert_locked(be: &Backend) {
    let (id, client) = (uid(), format!("client-{}", uid()));
    let mut g = be.a.jobs.insert_locked(job(&id, &client)).await.unwrap();
    // Stored at once (reading it would wait for the lock in memory), and locked.
    assert!(matches!(be.b.jobs.insert_locked(job(&id, &client)).await, Err(StorageError::Conflict(_))));
    assert!(tokio::time::timeout(Duration::from_millis(300), be.b.jobs.lock(&id)).await.is_err(), "locked");
    g.status = JobStatus::Running;
    be.a.jobs.commit(g).await.unwrap();
    let g = tokio::time::timeout(Duration::from_secs(5), be.b.jobs.lock(&id)).await.expect("lock released");
    assert_eq!(g.unwrap().expect("job exists").status, JobStatus::Running);
    assert_eq!(be.a.jobs.counts(Some(&client)).await.unwrap(), BTreeMap::from([(JobStatus::Running, 1)]));
}

async fn jobs_concurrent_lockers_never_interleave(be: &Backend) {
    let id = uid();
    be.a.jobs.insert(job(&id, "c1")).await.unwrap();
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let (workers, rounds) = (12, 8);
    let runs = (0..workers).map(|w| {
        let stores = be.nth(w).clone();
        let (id, inside, overlaps) = (id.clone(), inside.clone(), overlaps.clone());
        async move {
            for round in 0..rounds {
                let mut g = stores.jobs.lock(&id).await.unwrap().unwrap();
                if inside.swap(true, Ordering::SeqCst) {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                let n = g.state_history.get("n").and_then(Value::as_u64).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(1)).await;
                g.state_history.insert("n".into(), json!(n + 1));
                inside.store(false, Ordering::SeqCst);
                // Half the rounds save and drop the guard, half commit.
                match round % 2 {
                    0 => stores.jobs.save(&g).await.unwrap(),
                    _ => stores.jobs.commit(g).await.unwrap(),
                }
            }
        }
    });
    join_all(runs.map(tokio::spawn)).await.into_iter().for_each(|r| r.unwrap());
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders of one job lock at once");
    let j = be.a.jobs.get(&id).await.unwrap().unwrap();
    assert_eq!(j.state_history["n"], json!(workers * rounds), "an update was lost");
}

async fn jobs_list_newest_first_and_counts(be: &Backend) {
    let client = format!("client-{}", uid());
    let other = format!("client-{}", uid());
    let base = now_ms();
    let mut ids = Vec::new();
    for (i, status) in [JobStatus::Pending, JobStatus::WaitingForHuman, JobStatus::Finished].into_iter().enumerate() {
        let id = format!("{i}-{}", uid());
        let mut j = job(&id, &client);
        j.created_at_ms = base + i as u64 * 10;
        j.status = status;
        be.nth(i).jobs.insert(j).await.unwrap();
        ids.push(id);
    }
    be.a.jobs.insert(job(&uid(), &other)).await.unwrap();
    let listed: Vec<String> = be.b.jobs.list(&client, 10, 0).await.unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(listed, vec![ids[2].clone(), ids[1].clone(), ids[0].clone()], "newest first");
    let page: Vec<String> = be.a.jobs.list(&client, 1, 1).await.unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(page, vec![ids[1].clone()]);
    assert!(be.a.jobs.list(&client, 5, 3).await.unwrap().is_empty());
    let counts = be.a.jobs.counts(Some(&client)).await.unwrap();
    let expected: BTreeMap<JobStatus, u64> =
        [(JobStatus::Pending, 1), (JobStatus::WaitingForHuman, 1), (JobStatus::Finished, 1)].into();
    assert_eq!(counts, expected);
    // A status change moves the count.
    {
        let mut g = be.b.jobs.lock(&ids[0]).await.unwrap().unwrap();
        g.status = JobStatus::Failed;
        be.b.jobs.save(&g).await.unwrap();
    }
    let counts = be.a.jobs.counts(Some(&client)).await.unwrap();
    assert_eq!(counts.get(&JobStatus::Pending), None);
    assert_eq!(counts.get(&JobStatus::Failed), Some(&1));
    if be.redis {
        // The global counts hold this test's jobs only (a fresh prefix).
        let all = be.a.jobs.counts(None).await.unwrap();
        assert_eq!(all.values().sum::<u64>(), 4);
    } else {
        assert!(be.a.jobs.counts(None).await.unwrap().values().sum::<u64>() >= 4);
    }
}

async fn jobs_quarantine_list(be: &Backend) {
    let (client, other) = (format!("client-{}", uid()), format!("client-{}", uid()));
    let mut ids = Vec::new();
    for (i, owner) in [&client, &client, &other, &client].into_iter().enumerate() {
        let id = format!("{i}-{}", uid());
        be.a.jobs.insert(job(&id, owner)).await.unwrap();
        ids.push(id);
    }
    assert!(be.b.jobs.list_quarantined(&client, 10, 0).await.unwrap().is_empty());
    // Quarantined in the order 3, 0, 2 (another client's), then 1 only failed.
    for (i, status) in
        [(3, JobStatus::Quarantined), (0, JobStatus::Quarantined), (2, JobStatus::Quarantined), (1, JobStatus::Failed)]
    {
        let mut g = be.nth(i).jobs.lock(&ids[i]).await.unwrap().unwrap();
        g.status = status;
        be.nth(i).jobs.commit(g).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // Saved again while quarantined: still listed once.
    let g = be.b.jobs.lock(&ids[3]).await.unwrap().unwrap();
    be.b.jobs.commit(g).await.unwrap();
    let listed: Vec<String> =
        be.b.jobs.list_quarantined(&client, 10, 0).await.unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(listed, vec![ids[0].clone(), ids[3].clone()], "this client's, most recently quarantined first");
    let page: Vec<String> =
        be.a.jobs.list_quarantined(&client, 1, 1).await.unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(page, vec![ids[3].clone()]);
    let theirs: Vec<String> =
        be.a.jobs.list_quarantined(&other, 10, 0).await.unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(theirs, vec![ids[2].clone()]);
}

/// Moves job `id` to `status` through a lock and a commit.
async fn set_status(jobs: &Arc<dyn JobStore>, id: &str, status: JobStatus) {
    let mut g = jobs.lock(id).await.unwrap().unwrap();
    g.status = status;
    jobs.commit(g).await.unwrap();
}

fn ids_of(jobs: Vec<Job>) -> Vec<String> {
    jobs.into_iter().map(|j| j.id).collect()
}

async fn jobs_retention_removes_terminal_jobs(be: &Backend) {
    let (a, b) = be.jobs_with_retention(Duration::from_secs(60));
    let client = format!("client-{}", uid());
    let ids: Vec<String> = (0..4).map(|i| format!("{i}-{}", uid())).collect();
    for id in &ids {
        a.insert(job(id, &client)).await.unwrap();
    }
    set_status(&a, &ids[0], JobStatus::Finished).await;
    set_status(&b, &ids[1], JobStatus::Quarantined).await;
    set_status(&a, &ids[2], JobStatus::Cancelled).await;
    set_status(&b, &ids[3], JobStatus::WaitingForHuman).await;
    // Before the retention ends nothing goes.
    assert_eq!(a.remove_expired(now_ms(), 100).await.unwrap(), 0);
    assert!(b.get(&ids[0]).await.unwrap().is_some());
    // A holder of a terminal job while it is removed: its commit does not bring the job back.
    let held = b.lock(&ids[2]).await.unwrap().unwrap();
    let later = now_ms() + 61_000;
    let (r1, r2) = tokio::join!(a.remove_expired(later, 100), b.remove_expired(later, 100));
    assert_eq!(r1.unwrap() + r2.unwrap(), 3, "each terminal job removed once, across instances");
    b.commit(held).await.unwrap();
    for id in &ids[..3] {
        assert!(a.get(id).await.unwrap().is_none(), "terminal job {id} removed");
        assert!(b.lock(id).await.unwrap().is_none());
    }
    // The job that is not terminal stays, however late; the indexes and counts follow.
    assert_eq!(a.remove_expired(u64::MAX / 2, 100).await.unwrap(), 0);
    assert_eq!(b.get(&ids[3]).await.unwrap().unwrap().status, JobStatus::WaitingForHuman);
    assert_eq!(ids_of(b.list(&client, 10, 0).await.unwrap()), vec![ids[3].clone()]);
    assert!(a.list_quarantined(&client, 10, 0).await.unwrap().is_empty());
    let only_waiting: BTreeMap<JobStatus, u64> = [(JobStatus::WaitingForHuman, 1)].into();
    assert_eq!(a.counts(Some(&client)).await.unwrap(), only_waiting);
    assert_eq!(b.counts(None).await.unwrap(), only_waiting, "a fresh store holds this test's jobs only");
    // It ends later: its retention counts from then.
    set_status(&a, &ids[3], JobStatus::Failed).await;
    assert_eq!(b.remove_expired(now_ms() + 30_000, 100).await.unwrap(), 0);
    assert_eq!(b.remove_expired(now_ms() + 61_000, 100).await.unwrap(), 1);
    assert!(a.counts(None).await.unwrap().is_empty());
    assert!(a.list(&client, 10, 0).await.unwrap().is_empty());
}

async fn jobs_retention_expires_in_real_time(be: &Backend) {
    let (a, b) = be.jobs_with_retention(Duration::from_millis(300));
    let client = format!("client-{}", uid());
    let (done, running) = (uid(), uid());
    a.insert(job(&done, &client)).await.unwrap();
    a.insert(job(&running, &client)).await.unwrap();
    set_status(&b, &done, JobStatus::Finished).await;
    set_status(&b, &running, JobStatus::Running).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    if be.redis {
        // The document expired in Redis by itself; lists leave it out (and prune it) before
        // the sweep has run.
        assert!(a.get(&done).await.unwrap().is_none());
        assert_eq!(ids_of(a.list(&client, 10, 0).await.unwrap()), vec![running.clone()]);
    }
    assert_eq!(b.remove_expired(now_ms(), 100).await.unwrap(), 1);
    assert!(a.get(&done).await.unwrap().is_none());
    assert_eq!(ids_of(a.list(&client, 10, 0).await.unwrap()), vec![running.clone()]);
    let only_running: BTreeMap<JobStatus, u64> = [(JobStatus::Running, 1)].into();
    assert_eq!(b.counts(Some(&client)).await.unwrap(), only_running);
}

/// The webhook outbox (issue #14 item 4): a job that ends with a webhook gets an entry in the
/// write of its end, stamped then (its writer's claim); claims hand each entry to one caller per
/// period across instances; touch renews a claim, done removes entries; a terminal job written
/// again is not queued twice; retention takes the entry with the job.
async fn jobs_webhook_outbox(be: &Backend) {
    let (a, b) = be.jobs_with_retention(Duration::from_secs(60));
    let client = format!("client-{}", uid());
    let ids: Vec<String> = (0..4).map(|i| format!("{i}-{}", uid())).collect();
    for (i, id) in ids.iter().enumerate() {
        let mut j = job(id, &client);
        j.webhook_url = (i != 2).then(|| "http://127.0.0.1:9/hook".to_owned());
        a.insert(j).await.unwrap();
    }
    let before = now_ms() - 1;
    set_status(&a, &ids[0], JobStatus::Finished).await;
    set_status(&b, &ids[1], JobStatus::Failed).await;
    set_status(&a, &ids[2], JobStatus::Finished).await;
    set_status(&b, &ids[3], JobStatus::Running).await;
    // The writers hold fresh claims: nothing is due for a cutoff before the writes.
    assert!(a.claim_webhooks(before.saturating_sub(1000), now_ms(), 10).await.unwrap().is_empty());
    // Once their claims are old: each entry to one caller, across instances.
    let now = now_ms() + 1;
    let (x, y) = tokio::join!(a.claim_webhooks(now, now + 1, 10), b.claim_webhooks(now, now + 1, 10));
    let mut claimed = [ids_of(x.unwrap()), ids_of(y.unwrap())].concat();
    claimed.sort();
    assert_eq!(claimed, vec![ids[0].clone(), ids[1].clone()], "the ended jobs with a webhook, once each");
    assert!(b.claim_webhooks(now, now + 2, 10).await.unwrap().is_empty(), "claimed just now");
    // A sender that touches its entry keeps it.
    a.touch_webhook(&ids[0], now + 5_000).await.unwrap();
    assert_eq!(ids_of(b.claim_webhooks(now + 4_000, now + 4_001, 10).await.unwrap()), vec![ids[1].clone()]);
    // Done: gone for good, even when the terminal job is written again.
    b.webhooks_done(std::slice::from_ref(&ids[1])).await.unwrap();
    set_status(&a, &ids[1], JobStatus::Failed).await;
    let late = now + 10_000;
    assert_eq!(ids_of(a.claim_webhooks(late, late + 1, 10).await.unwrap()), vec![ids[0].clone()]);
    a.webhooks_done(&[ids[0].clone(), "no-such-job".to_owned()]).await.unwrap();
    assert!(b.claim_webhooks(late + 1, late + 1, 10).await.unwrap().is_empty());
    // A job removed by retention takes its entry with it.
    set_status(&b, &ids[3], JobStatus::Cancelled).await;
    assert_eq!(a.remove_expired(now_ms() + 61_000, 100).await.unwrap(), 4);
    assert!(a.claim_webhooks(u64::MAX / 2, late + 2, 10).await.unwrap().is_empty());
}

/// In memory, beyond `MAX_RETAINED_JOBS` terminal jobs the oldest go at once (no sweep needed);
/// jobs that are not terminal never go.
#[tokio::test]
async fn memory_max_retained_jobs_drops_oldest_terminal_first() {
    let jobs: Arc<dyn JobStore> = Arc::new(MemoryJobs::with_retention(None, 2));
    let client = format!("client-{}", uid());
    let ids: Vec<String> = (0..5).map(|i| format!("{i}-{}", uid())).collect();
    for id in &ids {
        jobs.insert(job(id, &client)).await.unwrap();
    }
    set_status(&jobs, &ids[0], JobStatus::Quarantined).await;
    set_status(&jobs, &ids[1], JobStatus::Finished).await;
    set_status(&jobs, &ids[4], JobStatus::Running).await;
    assert!(jobs.get(&ids[0]).await.unwrap().is_some(), "two terminal jobs: at the cap");
    set_status(&jobs, &ids[2], JobStatus::Failed).await;
    assert!(jobs.get(&ids[0]).await.unwrap().is_none(), "the oldest terminal job went");
    assert!(jobs.list_quarantined(&client, 10, 0).await.unwrap().is_empty());
    set_status(&jobs, &ids[3], JobStatus::Finished).await;
    let listed = ids_of(jobs.list(&client, 10, 0).await.unwrap());
    assert_eq!(listed, vec![ids[4].clone(), ids[3].clone(), ids[2].clone()], "newest first, oldest terminal gone");
    let counts: BTreeMap<JobStatus, u64> =
        [(JobStatus::Running, 1), (JobStatus::Failed, 1), (JobStatus::Finished, 1)].into();
    assert_eq!(jobs.counts(Some(&client)).await.unwrap(), counts);
    // No retention: the sweep removes nothing.
    assert_eq!(jobs.remove_expired(u64::MAX / 2, 100).await.unwrap(), 0);
}

async fn jobs_claim_stale_once(be: &Backend) {
    let t = now_ms();
    let mut stale = Vec::new();
    for _ in 0..10 {
        let id = uid();
        be.a.jobs.insert(job(&id, "c1")).await.unwrap();
        stale.push(id);
    }
    let mut settled = job(&uid(), "c1");
    settled.status = JobStatus::Finished;
    be.a.jobs.insert(settled).await.unwrap();
    let human = {
        let id = uid();
        be.a.jobs.insert(job(&id, "c1")).await.unwrap();
        let mut g = be.a.jobs.lock(&id).await.unwrap().unwrap();
        g.status = JobStatus::WaitingForHuman;
        be.a.jobs.save(&g).await.unwrap();
        id
    };
    // Nothing is stale yet.
    assert!(be.a.jobs.claim_stale(t.saturating_sub(60_000), t, 100).await.unwrap().is_empty());
    // Later: both instances claim at once; each stale job goes to exactly one of them.
    let (cutoff, now) = (t + 60_000, t + 120_000);
    let (x, y) = tokio::join!(be.a.jobs.claim_stale(cutoff, now, 6), be.b.jobs.claim_stale(cutoff, now, 6));
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut all: Vec<String> = x.iter().chain(y.iter()).cloned().collect();
    all.sort();
    let mut want = stale.clone();
    want.sort();
    assert_eq!(all, want, "every unsettled job claimed once, nothing else (not {human})");
    // Claimed = activity at `now`: not stale again for the same cutoff.
    assert!(be.a.jobs.claim_stale(cutoff, now, 100).await.unwrap().is_empty());
    assert_eq!(be.b.jobs.claim_stale(now, now + 1, 100).await.unwrap().len(), 10);
    // A job that settles leaves the index.
    {
        let mut g = be.a.jobs.lock(&stale[0]).await.unwrap().unwrap();
        g.status = JobStatus::Finished;
        be.a.jobs.save(&g).await.unwrap();
    }
    let later = be.a.jobs.claim_stale(u64::MAX / 4, u64::MAX / 4 + 1, 100).await.unwrap();
    assert_eq!(later.len(), 9);
    assert!(!later.contains(&stale[0]));
}

/// A save that leaves a job waiting for its tasks in the same status (a pick-up) does not make it
/// fresh for crash recovery; every other save of an unsettled job does
/// (`storage::counts_as_activity`).
async fn jobs_saves_that_leave_a_job_waiting_are_no_activity(be: &Backend) {
    let save_as = |id: String, status: JobStatus| async move {
        let mut g = be.a.jobs.lock(&id).await.unwrap().unwrap();
        g.status = status;
        be.a.jobs.commit(g).await.unwrap();
    };
    let mut ids = Vec::new();
    for status in [JobStatus::WaitingForWorker, JobStatus::WaitingForParallelTasks, JobStatus::Running] {
        let id = uid();
        be.a.jobs.insert(job(&id, "c1")).await.unwrap();
        save_as(id.clone(), status).await;
        ids.push(id);
    }
    // Claimed at a time far ahead: each job's activity is now that time.
    let ahead = now_ms() + 3_600_000;
    let mut claimed = be.a.jobs.claim_stale(ahead, ahead, 1000).await.unwrap();
    claimed.retain(|id| ids.contains(id));
    assert_eq!(claimed.len(), 3, "{claimed:?}");
    // Saved again as they were: only the running job's save counts (as activity now, before `ahead`).
    for (id, status) in
        ids.iter().zip([JobStatus::WaitingForWorker, JobStatus::WaitingForParallelTasks, JobStatus::Running])
    {
        save_as(id.clone(), status).await;
    }
    let mut stale = be.a.jobs.claim_stale(ahead - 1, ahead + 1, 1000).await.unwrap();
    stale.retain(|id| ids.contains(id));
    assert_eq!(stale, [ids[2].clone()], "only the save of the running job counted");
    // A status change counts: the waiting job, now running, is fresh again.
    save_as(ids[0].clone(), JobStatus::Running).await;
    let mut stale = be.a.jobs.claim_stale(ahead - 1, ahead + 2, 1000).await.unwrap();
    stale.retain(|id| ids.contains(id));
    assert_eq!(stale, [ids[0].clone()], "the status change counted as activity, the unchanged waits did not");
}

// ---------------------------------------------------------------------------------------------
// quotas, rate limits, nonces

/// 64 job creations at once, spread over two instances: exactly `monthly_attempts` succeed.
async fn quotas_exact_under_concurrency(be: &Backend) {
    let token = uid();
    be.a.quotas.init(&token, 40).await.unwrap();
    be.b.quotas.init(&token, 40).await.unwrap();
    let takes = (0..64).map(|i| {
        let (q, token) = (be.nth(i).quotas.clone(), token.clone());
        tokio::spawn(async move { q.take(&token).await.unwrap() })
    });
    let granted = join_all(takes).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(granted, 40);
    assert!(!be.a.quotas.take(&token).await.unwrap(), "spent for this month");
    assert!(!be.b.quotas.take(&uid()).await.unwrap(), "an unknown token has no quota");
}

async fn quotas_init_keeps_what_is_left(be: &Backend) {
    let token = uid();
    be.a.quotas.init(&token, 2).await.unwrap();
    assert!(be.a.quotas.take(&token).await.unwrap());
    // A restart (or another instance) with the same limit does not refill.
    be.b.quotas.init(&token, 2).await.unwrap();
    assert!(be.b.quotas.take(&token).await.unwrap());
    assert!(!be.a.quotas.take(&token).await.unwrap());
    // A new limit applies to what this month used: 3 allows one more, not three.
    be.b.quotas.init(&token, 3).await.unwrap();
    assert!(be.a.quotas.take(&token).await.unwrap());
    assert!(!be.a.quotas.take(&token).await.unwrap());
}

/// The count is per calendar month: a new month starts at zero, the old one stays spent, and
/// `take` counts in the month of the wall clock (UTC).
async fn quotas_reset_each_month(be: &Backend) {
    let token = uid();
    be.a.quotas.init(&token, 3).await.unwrap();
    let (nov, dec) = ("2026-11", "2026-12");
    for i in 0..3 {
        assert!(be.nth(i).quotas.take_in(&token, nov).await.unwrap());
    }
    assert!(!be.b.quotas.take_in(&token, nov).await.unwrap(), "November is spent");
    // 64 creations at once in the new month, on both instances: exactly the limit again.
    let takes = (0..64).map(|i| {
        let (q, token) = (be.nth(i).quotas.clone(), token.clone());
        tokio::spawn(async move { q.take_in(&token, dec).await.unwrap() })
    });
    let granted = join_all(takes).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(granted, 3, "December starts at zero");
    assert!(!be.a.quotas.take_in(&token, nov).await.unwrap(), "a late November request finds November spent");
    // `take` is `take_in` of the current month.
    let now = avto::storage::quota_month(now_ms());
    let fresh = uid();
    be.a.quotas.init(&fresh, 1).await.unwrap();
    assert!(be.b.quotas.take(&fresh).await.unwrap());
    assert!(!be.a.quotas.take_in(&fresh, &now).await.unwrap(), "take counted in {now}");
}

async fn rate_limits_fixed_window(be: &Backend) {
    let key = uid();
    let period = Duration::from_millis(600);
    for _ in 0..3 {
        assert_eq!(be.a.rate.hit(&key, 3, period).await.unwrap(), Ok(()));
    }
    let retry = be.b.rate.hit(&key, 3, period).await.unwrap().expect_err("over the limit");
    assert!(retry <= period, "{retry:?}");
    assert!(be.a.rate.hit(&uid(), 3, period).await.unwrap().is_ok(), "keys are independent");
    tokio::time::sleep(period + Duration::from_millis(100)).await;
    assert_eq!(be.b.rate.hit(&key, 3, period).await.unwrap(), Ok(()), "a new window");
}

async fn rate_limits_exact_under_concurrency(be: &Backend) {
    let key = uid();
    let hits = (0..60).map(|i| {
        let (r, key) = (be.nth(i).rate.clone(), key.clone());
        tokio::spawn(async move { r.hit(&key, 20, Duration::from_secs(30)).await.unwrap().is_ok() })
    });
    let allowed = join_all(hits).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(allowed, 20);
}

async fn nonces_first_use_once(be: &Backend) {
    let nonce = uid();
    let ttl = Duration::from_millis(500);
    let uses = (0..20).map(|i| {
        let (n, nonce) = (be.nth(i).nonces.clone(), nonce.clone());
        tokio::spawn(async move { n.first_use(&nonce, ttl).await.unwrap() })
    });
    let fresh = join_all(uses).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(fresh, 1, "a nonce is new exactly once");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(be.b.nonces.first_use(&nonce, ttl).await.unwrap(), "forgotten after its ttl");
}

// ---------------------------------------------------------------------------------------------
// data stores, STS tokens, schedule locks

async fn data_stores_semantics(be: &Backend) {
    let ns = format!("bp:{}", uid());
    let d = &be.a.data;
    assert_eq!(d.get(&ns, "k").await.unwrap(), None);
    assert!(d.compare_and_set(&ns, "k", None, json!({"a": 1, "b": [1, 2]}), None).await.unwrap());
    assert!(!d.compare_and_set(&ns, "k", None, json!(2), None).await.unwrap(), "set if absent only once");
    assert_eq!(be.b.data.get(&ns, "k").await.unwrap(), Some(json!({"a": 1, "b": [1, 2]})));
    // Equality is that of values, not of key order.
    assert!(be.b.data.compare_and_set(&ns, "k", Some(json!({"b": [1, 2], "a": 1})), json!("x"), None).await.unwrap());
    assert!(!d.compare_and_set(&ns, "k", Some(json!("y")), json!("z"), None).await.unwrap());
    assert_eq!(d.get(&ns, "k").await.unwrap(), Some(json!("x")));
    d.set(&ns, "n", json!(5), None).await.unwrap();
    assert_eq!(be.b.data.incr(&ns, "n", 3, None).await.unwrap(), 8);
    assert_eq!(d.incr(&ns, "fresh", -2, None).await.unwrap(), -2, "absent counts as 0");
    assert!(matches!(d.incr(&ns, "k", 1, None).await, Err(StorageError::Type(_))), "not an integer");
    assert!(d.delete(&ns, "n").await.unwrap());
    assert!(!d.delete(&ns, "n").await.unwrap());
    assert_eq!(d.get(&ns, "n").await.unwrap(), None);
    assert_eq!(d.get(&format!("{ns}-other"), "k").await.unwrap(), None, "namespaces are separate");
}

/// Data-store keys written with a TTL expire (issue #14 item 1): they read as absent after it,
/// every write renews it, a write without one keeps the key.
async fn data_stores_keys_expire(be: &Backend) {
    let ns = format!("bp:{}", uid());
    let (d, other) = (&be.a.data, &be.b.data);
    let ttl = Some(Duration::from_millis(400));
    d.set(&ns, "set", json!("v"), ttl).await.unwrap();
    assert!(d.compare_and_set(&ns, "cas", None, json!(1), ttl).await.unwrap());
    assert_eq!(d.incr(&ns, "incr", 2, ttl).await.unwrap(), 2);
    d.set(&ns, "kept", json!("k"), ttl).await.unwrap();
    d.set(&ns, "kept", json!("k"), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(other.incr(&ns, "incr", 1, ttl).await.unwrap(), 3, "renewed by this write");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(other.get(&ns, "set").await.unwrap(), None, "expired");
    assert_eq!(d.get(&ns, "cas").await.unwrap(), None, "expired");
    assert!(d.compare_and_set(&ns, "cas", None, json!(5), ttl).await.unwrap(), "an expired key is absent");
    assert_eq!(d.get(&ns, "incr").await.unwrap(), Some(json!(3)), "its last write was 250 ms ago");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(d.incr(&ns, "incr", 1, None).await.unwrap(), 1, "expired: counts from 0 again");
    assert_eq!(other.get(&ns, "kept").await.unwrap(), Some(json!("k")), "written without a TTL: kept");
    assert!(!d.delete(&ns, "set").await.unwrap(), "nothing to delete once expired");
}

/// Keys written by the layout before expiry (one Redis hash per store) are still read, and
/// moved to their own keys on first use.
#[tokio::test]
async fn redis_data_store_keys_of_the_old_layout_are_still_read() {
    let be = Backend::redis().await;
    let conn = be.conn.clone().unwrap();
    let ns = format!("bp:{}", uid());
    let hash = conn.key(&format!("ds:{ns}"));
    let cmd =
        avto::storage::redis::client::cmd("HSET").arg(&hash).arg("old").arg("41").arg("doc").arg(r#"{"a":1}"#).clone();
    conn.query::<i64>(&cmd).await.unwrap();
    assert_eq!(be.a.data.get(&ns, "doc").await.unwrap(), Some(json!({"a": 1})));
    assert_eq!(be.b.data.incr(&ns, "old", 1, None).await.unwrap(), 42);
    let left: i64 = conn.query(avto::storage::redis::client::cmd("HLEN").arg(&hash)).await.unwrap();
    assert_eq!(left, 0, "both keys moved out of the old hash");
    assert_eq!(be.a.data.get(&ns, "old").await.unwrap(), Some(json!(42)));
}

async fn data_stores_atomic_under_concurrency(be: &Backend) {
    let ns = format!("bp:{}", uid());
    let incrs = (0..50).map(|i| {
        let (d, ns) = (be.nth(i).data.clone(), ns.clone());
        tokio::spawn(async move { d.incr(&ns, "hits", 1, None).await.unwrap() })
    });
    let mut seen: Vec<i64> = join_all(incrs).await.into_iter().map(|r| r.unwrap()).collect();
    seen.sort();
    assert_eq!(seen, (1..=50).collect::<Vec<_>>(), "each increment saw a distinct value");
    // Compare-and-set loops (what `DataStore::update` does) lose nothing.
    let updates = (0..20).map(|i| {
        let (d, ns) = (be.nth(i).data.clone(), ns.clone());
        tokio::spawn(async move {
            loop {
                let cur = d.get(&ns, "list").await.unwrap();
                let mut list = cur.clone().unwrap_or(json!([]));
                list.as_array_mut().unwrap().push(json!(i));
                if d.compare_and_set(&ns, "list", cur, list, None).await.unwrap() {
                    return;
                }
            }
        })
    });
    join_all(updates).await.into_iter().for_each(|r| r.unwrap());
    let list = be.a.data.get(&ns, "list").await.unwrap().unwrap();
    assert_eq!(list.as_array().unwrap().len(), 20);
}

async fn sts_tokens(be: &Backend) {
    let (access, refresh) = (uid(), uid());
    be.a.sts.save(&access, "access", "w1", Duration::from_millis(400)).await.unwrap();
    be.a.sts.save(&refresh, "refresh", "w1", Duration::from_secs(60)).await.unwrap();
    assert_eq!(be.b.sts.owner(&access, "access").await.unwrap().as_deref(), Some("w1"));
    assert_eq!(be.b.sts.owner(&access, "refresh").await.unwrap(), None, "kinds are separate");
    assert_eq!(be.b.sts.owner(&uid(), "access").await.unwrap(), None);
    be.b.sts.revoke(&refresh).await.unwrap();
    assert_eq!(be.a.sts.owner(&refresh, "refresh").await.unwrap(), None, "revoked");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(be.a.sts.owner(&access, "access").await.unwrap(), None, "expired");
}

async fn schedule_locks_claim_once(be: &Backend) {
    let key = format!("nightly:{}", uid());
    let ttl = Duration::from_millis(500);
    let claims = (0..10).map(|i| {
        let (l, key) = (be.nth(i).schedule_locks.clone(), key.clone());
        tokio::spawn(async move { l.claim(&key, &format!("instance-{i}"), ttl).await.unwrap() })
    });
    let won = join_all(claims).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(won, 1);
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(be.b.schedule_locks.claim(&key, "instance-x", ttl).await.unwrap(), "free after its ttl");
}

// ---------------------------------------------------------------------------------------------
// workers and queues

fn worker(id: &str, skills: &[&str]) -> WorkerInfo {
    WorkerInfo::from_registration(&json!({
        "worker_id": id,
        "worker_type": "test",
        "supported_skills": skills.iter().map(|s| json!({"name": s})).collect::<Vec<_>>(),
    }))
}

fn task(job: &str, skill: &str, priority: f64) -> QueuedTask {
    let mut spec = TaskSpec::new(skill);
    spec.priority = priority;
    QueuedTask {
        job_id: job.to_owned(),
        task_id: format!("task-{}", uid()),
        spec,
        priority,
        deadline_ms: None,
        enqueued_ms: now_ms(),
        seq: 0, // stamped by enqueue
    }
}

const TTL: u64 = 60_000;

async fn workers_register_heartbeat_reputation(be: &Backend) {
    let (a, b) = (&be.a.workers, &be.b.workers);
    let id = format!("w-{}", uid());
    a.register(worker(&id, &["echo"]), TTL).await.unwrap();
    let seen = b.worker(&id).await.unwrap().expect("registered");
    assert!(seen.has_skill("echo"));
    assert_eq!(seen.reputation, 1.0);
    assert!(b.live_workers(now_ms()).await.unwrap().iter().any(|w| w.info.worker_id == id));
    // A heartbeat merges fields; an unknown worker must re-register.
    let cancel = b.heartbeat(&id, Some(&json!({"status": "busy", "current_tasks": []})), TTL).await.unwrap();
    assert_eq!(cancel, Some(vec![]));
    assert_eq!(a.worker(&id).await.unwrap().unwrap().status, "busy");
    assert_eq!(a.heartbeat(&format!("w-{}", uid()), None, TTL).await.unwrap(), None);
    // Reputation is clamped and survives re-registration.
    a.adjust_reputation(&id, -0.25).await.unwrap();
    b.adjust_reputation(&id, 0.5).await.unwrap();
    assert_eq!(a.worker(&id).await.unwrap().unwrap().reputation, 1.0);
    a.adjust_reputation(&id, -0.5).await.unwrap();
    b.register(worker(&id, &["echo", "other"]), TTL).await.unwrap();
    let again = a.worker(&id).await.unwrap().unwrap();
    assert_eq!(again.reputation, 0.5);
    assert!(again.has_skill("other"));
    let live = a.live_workers(now_ms()).await.unwrap();
    let mine = live.iter().find(|w| w.info.worker_id == id).unwrap();
    assert_eq!(mine.info.reputation, 0.5);
    assert!(b.is_live(&id, now_ms()).await.unwrap());
    assert!(!b.is_live(&format!("w-{}", uid()), now_ms()).await.unwrap());
    // Not live any more once the TTL passed.
    assert!(!a.live_workers(now_ms() + TTL + 1).await.unwrap().iter().any(|w| w.info.worker_id == id));
    assert!(!a.is_live(&id, now_ms() + TTL + 1).await.unwrap());
}

async fn workers_expire_claimed_once(be: &Backend) {
    let mut ids = Vec::new();
    let mut tasks = HashSet::new();
    for i in 0..6 {
        let id = format!("dead-{i}-{}", uid());
        be.nth(i).workers.register(worker(&id, &["echo"]), 50).await.unwrap();
        for _ in 0..3 {
            let t = task("job-x", "echo", 0.0);
            tasks.insert(t.task_id.clone());
            assert!(be.a.workers.enqueue(&id, t).await.unwrap());
        }
        // One of them is running.
        let popped = be.b.workers.pop(&id, now_ms()).await.unwrap().unwrap();
        assert!(tasks.contains(&popped.task_id));
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_millis(80)).await;
    let now = now_ms();
    let (x, y) = tokio::join!(be.a.workers.expire(now), be.b.workers.expire(now));
    let ((q1, o1), (q2, o2)) = (x.unwrap(), y.unwrap());
    let mut got: Vec<String> = q1.iter().chain(q2.iter()).map(|t| t.task_id.clone()).collect();
    got.extend(o1.iter().chain(o2.iter()).map(|o| o.task_id.clone()));
    assert_eq!(got.len(), 18, "each task of each dead worker returned exactly once");
    assert_eq!(got.iter().cloned().collect::<HashSet<_>>(), tasks);
    assert_eq!(o1.len() + o2.len(), 6, "one running task per worker");
    assert!(o1.iter().chain(o2.iter()).all(|o| ids.contains(&o.worker_id) && o.job_id == "job-x"));
    for id in &ids {
        assert!(be.a.workers.worker(id).await.unwrap().is_none(), "removed");
    }
    for t in &tasks {
        assert!(!be.b.workers.task_known(t).await.unwrap());
    }
}

async fn queues_fifo_within_priority(be: &Backend) {
    let id = format!("w-{}", uid());
    be.a.workers.register(worker(&id, &["echo"]), TTL).await.unwrap();
    let mut expected = Vec::new();
    let mut all = Vec::new();
    for p in [1.0, 5.0, 1.0, 5.0, 3.0, 1.0] {
        let t = task("j", "echo", p);
        all.push(t.clone());
        assert!(be.nth(all.len()).workers.enqueue(&id, t).await.unwrap());
    }
    for p in [5.0, 3.0, 1.0] {
        expected.extend(all.iter().filter(|t| t.priority == p).map(|t| t.task_id.clone()));
    }
    assert_eq!(be.a.workers.queue_depth().await.unwrap(), 6);
    let mut popped = Vec::new();
    let mut stamped: Vec<(f64, u64)> = Vec::new();
    for i in 0..6 {
        let t = be.nth(i).workers.pop(&id, now_ms()).await.unwrap().expect("queued");
        assert!(be.a.workers.task_known(&t.task_id).await.unwrap(), "running tasks are known");
        stamped.push((t.priority, t.seq));
        popped.push(t.task_id);
    }
    assert_eq!(popped, expected, "highest priority first, FIFO within a priority");
    assert!(
        stamped.windows(2).all(|w| w[0].0 != w[1].0 || w[0].1 < w[1].1),
        "enqueue stamps the arrival order: {stamped:?}"
    );
    assert!(be.b.workers.pop(&id, now_ms()).await.unwrap().is_none());
    let load = be.a.workers.live_workers(now_ms()).await.unwrap().into_iter().find(|w| w.info.worker_id == id).unwrap();
    assert_eq!((load.queued, load.running), (0, 6));
    assert!(!be.a.workers.enqueue(&format!("ghost-{}", uid()), task("j", "echo", 0.0)).await.unwrap());
}

async fn queues_each_task_popped_once(be: &Backend) {
    let id = format!("w-{}", uid());
    be.a.workers.register(worker(&id, &["echo"]), TTL).await.unwrap();
    let mut ids = HashSet::new();
    for i in 0..100 {
        let t = task("j", "echo", (i % 3) as f64);
        ids.insert(t.task_id.clone());
        be.nth(i).workers.enqueue(&id, t).await.unwrap();
    }
    let poppers = (0..8).map(|i| {
        let (ws, id) = (be.nth(i).workers.clone(), id.clone());
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(t) = ws.pop(&id, now_ms()).await.unwrap() {
                got.push(t.task_id);
            }
            got
        })
    });
    let got: Vec<String> = join_all(poppers).await.into_iter().flat_map(|r| r.unwrap()).collect();
    assert_eq!(got.len(), 100, "no task popped twice");
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), ids);
}

async fn queues_steal_second_task(be: &Backend) {
    let (victim, thief, other) = (format!("v-{}", uid()), format!("t-{}", uid()), format!("o-{}", uid()));
    be.a.workers.register(worker(&victim, &["echo", "gpu"]), TTL).await.unwrap();
    be.a.workers.register(worker(&thief, &["echo"]), TTL).await.unwrap();
    be.a.workers.register(worker(&other, &["echo"]), TTL).await.unwrap();
    let mut echo = Vec::new();
    for (skill, p) in [("echo", 1.0), ("gpu", 9.0), ("echo", 1.0), ("echo", 1.0)] {
        let t = task("j", skill, p);
        if skill == "echo" {
            echo.push(t.task_id.clone());
        }
        be.a.workers.enqueue(&victim, t).await.unwrap();
    }
    // `other` has one queued task only: never a victim.
    be.a.workers.enqueue(&other, task("j", "echo", 0.0)).await.unwrap();
    let skills = vec!["echo".to_owned()];
    let stolen = be.b.workers.steal(&thief, &skills, now_ms()).await.unwrap().expect("a task to steal");
    assert_eq!(stolen.task_id, echo[1], "the victim keeps its next task; the thief gets the one after");
    let loads = be.a.workers.live_workers(now_ms()).await.unwrap();
    let load = |id: &str| loads.iter().find(|w| w.info.worker_id == id).map(|w| (w.queued, w.running)).unwrap();
    assert_eq!(load(&thief), (0, 1));
    assert_eq!(load(&victim), (3, 0));
    assert!(be.a.workers.steal(&format!("ghost-{}", uid()), &skills, now_ms()).await.unwrap().is_none());
    // The victim pops in its order, without the stolen one.
    let next = be.a.workers.pop(&victim, now_ms()).await.unwrap().unwrap();
    assert_eq!(next.spec.task_type, "gpu");
    assert_eq!(be.a.workers.pop(&victim, now_ms()).await.unwrap().unwrap().task_id, echo[0]);
}

async fn queues_cancel_and_finished(be: &Backend) {
    let id = format!("w-{}", uid());
    be.a.workers.register(worker(&id, &["echo"]), TTL).await.unwrap();
    let queued = task("j", "echo", 0.0);
    let running = task("j", "echo", 1.0);
    let done = task("j", "echo", 2.0);
    for t in [&queued, &running, &done] {
        be.a.workers.enqueue(&id, t.clone()).await.unwrap();
    }
    assert_eq!(be.b.workers.pop(&id, now_ms()).await.unwrap().unwrap().task_id, done.task_id);
    assert_eq!(be.b.workers.pop(&id, now_ms()).await.unwrap().unwrap().task_id, running.task_id);
    // finished: only by the worker running it.
    be.a.workers.finished("someone-else", &done.task_id).await.unwrap();
    assert!(be.a.workers.task_known(&done.task_id).await.unwrap());
    be.b.workers.finished(&id, &done.task_id).await.unwrap();
    assert!(!be.a.workers.task_known(&done.task_id).await.unwrap());
    // A queued task is dropped silently; a running one is marked for the worker.
    assert!(!be.a.workers.cancel(&queued.task_id, Some(&id), 60_000).await.unwrap());
    assert!(!be.a.workers.task_known(&queued.task_id).await.unwrap());
    assert!(be.b.workers.cancel(&running.task_id, Some(&id), 60_000).await.unwrap());
    let body = json!({"current_tasks": [running.task_id, "unrelated"]});
    let told = be.a.workers.heartbeat(&id, Some(&body), TTL).await.unwrap().unwrap();
    assert_eq!(told, vec![running.task_id.clone()]);
    assert_eq!(be.a.workers.queue_depth().await.unwrap(), 0);
}

async fn queues_overdue_claimed_once(be: &Backend) {
    let id = format!("w-{}", uid());
    be.a.workers.register(worker(&id, &["echo"]), TTL).await.unwrap();
    let mut dispatch = HashSet::new();
    let mut execution = HashSet::new();
    for i in 0..10 {
        let mut t = task(&format!("job-{i}"), "echo", 0.0);
        t.spec.dispatch_timeout_seconds = Some(0.001);
        dispatch.insert(t.task_id.clone());
        be.a.workers.enqueue(&id, t).await.unwrap();
    }
    for i in 0..5 {
        let mut spec = TaskSpec::new("echo");
        spec.dispatch_timeout_seconds = Some(0.001);
        let u = Unassigned {
            job_id: format!("parked-{i}"),
            task_id: format!("task-{}", uid()),
            spec,
            deadline_ms: None,
            parked_ms: now_ms(),
        };
        dispatch.insert(u.task_id.clone());
        be.b.workers.park(u).await.unwrap();
    }
    // Running tasks: with their own timeout, and with the default one.
    let worker2 = format!("w2-{}", uid());
    be.a.workers.register(worker(&worker2, &["echo"]), TTL).await.unwrap();
    for i in 0..6u32 {
        let mut t = task(&format!("run-{i}"), "echo", 0.0);
        if i.is_multiple_of(2) {
            t.spec.timeout_seconds = Some(0.001);
        }
        execution.insert(t.task_id.clone());
        be.a.workers.enqueue(&worker2, t).await.unwrap();
    }
    // A task that is not overdue.
    let mut fresh = task("fresh", "echo", 0.0);
    fresh.spec.timeout_seconds = Some(3600.0);
    be.a.workers.enqueue(&worker2, fresh.clone()).await.unwrap();
    for _ in 0..7 {
        be.b.workers.pop(&worker2, now_ms()).await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let now = now_ms();
    let default_exec = 5; // ms: the tasks without a timeout are past it too
    let (x, y) = tokio::join!(
        be.a.workers.overdue(now, default_exec, 60_000, 500),
        be.b.workers.overdue(now, default_exec, 60_000, 500)
    );
    let all: Vec<_> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    let ids: Vec<&String> = all.iter().map(|t| &t.task_id).collect();
    assert_eq!(ids.len(), ids.iter().collect::<HashSet<_>>().len(), "each overdue task claimed once");
    let got_dispatch: HashSet<String> =
        all.iter().filter(|t| t.kind == Overdue::Dispatch).map(|t| t.task_id.clone()).collect();
    let got_exec: HashSet<String> =
        all.iter().filter(|t| t.kind == Overdue::Execution).map(|t| t.task_id.clone()).collect();
    assert_eq!(got_dispatch, dispatch);
    assert_eq!(got_exec, execution);
    assert!(all.iter().filter(|t| t.kind == Overdue::Execution).all(|t| t.worker_id.as_deref() == Some(&*worker2)));
    assert!(all.iter().filter(|t| t.job_id.starts_with("parked-")).all(|t| t.worker_id.is_none()));
    // Timed-out running tasks are repeated as cancellations in heartbeat answers.
    let running: Vec<&String> = execution.iter().collect();
    let told = be.a.workers.heartbeat(&worker2, Some(&json!({"current_tasks": running})), TTL).await.unwrap().unwrap();
    assert_eq!(told.into_iter().collect::<HashSet<_>>(), execution);
    assert!(be.a.workers.task_known(&fresh.task_id).await.unwrap(), "the fresh task stays");
    assert!(be.b.workers.overdue(now_ms(), default_exec, 60_000, 500).await.unwrap().is_empty());
}

/// `WATCHER_LIMIT` (issue #16 item 7): one claim of overdue tasks takes at most its limit, across
/// queued, parked and running tasks; the others stay for the next claims, each claimed once.
async fn queues_overdue_at_most_limit(be: &Backend) {
    let id = format!("w-{}", uid());
    be.a.workers.register(worker(&id, &["echo"]), TTL).await.unwrap();
    let mut all = HashSet::new();
    for i in 0..5 {
        let mut t = task(&format!("queued-{i}"), "echo", 0.0);
        t.spec.dispatch_timeout_seconds = Some(0.001);
        all.insert(t.task_id.clone());
        be.a.workers.enqueue(&id, t).await.unwrap();
    }
    for i in 0..4 {
        let mut spec = TaskSpec::new("echo");
        spec.dispatch_timeout_seconds = Some(0.001);
        let u = Unassigned {
            job_id: format!("parked-{i}"),
            task_id: format!("task-{}", uid()),
            spec,
            deadline_ms: None,
            parked_ms: now_ms(),
        };
        all.insert(u.task_id.clone());
        be.b.workers.park(u).await.unwrap();
    }
    let runner = format!("r-{}", uid());
    be.a.workers.register(worker(&runner, &["echo"]), TTL).await.unwrap();
    for i in 0..4u32 {
        let mut t = task(&format!("running-{i}"), "echo", 0.0);
        if i.is_multiple_of(2) {
            t.spec.timeout_seconds = Some(0.001); // the others run past the default timeout
        }
        all.insert(t.task_id.clone());
        be.a.workers.enqueue(&runner, t).await.unwrap();
    }
    for _ in 0..4 {
        be.b.workers.pop(&runner, now_ms()).await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut claimed = Vec::new();
    let mut sizes = Vec::new();
    for i in 0..6 {
        let got = be.nth(i).workers.overdue(now_ms(), 5, 60_000, 3).await.unwrap();
        sizes.push(got.len());
        claimed.extend(got.into_iter().map(|t| t.task_id));
    }
    assert_eq!(sizes, [3, 3, 3, 3, 1, 0], "13 overdue tasks, at most 3 per claim");
    assert_eq!(claimed.len(), all.len());
    assert_eq!(claimed.into_iter().collect::<HashSet<_>>(), all, "each claimed once");
}

async fn queues_parked_claimed_once(be: &Backend) {
    let mut ids = Vec::new();
    for i in 0..20 {
        let u = Unassigned {
            job_id: format!("job-{i}"),
            task_id: format!("task-{}", uid()),
            spec: TaskSpec::new("rare"),
            deadline_ms: None,
            parked_ms: now_ms() + i,
        };
        ids.push(u.task_id.clone());
        be.nth(i as usize).workers.park(u.clone()).await.unwrap();
        be.a.workers.park(u).await.unwrap(); // parking twice keeps one
    }
    let parked: Vec<String> = be.b.workers.parked().await.unwrap().into_iter().map(|u| u.task_id).collect();
    assert_eq!(parked, ids, "parked tasks in parking order");
    assert_eq!(be.a.workers.queue_depth().await.unwrap(), 20);
    let claims = (0..40).map(|i| {
        let (ws, id) = (be.nth(i).workers.clone(), ids[i % 20].clone());
        tokio::spawn(async move { (id.clone(), ws.claim_parked(&id).await.unwrap()) })
    });
    let won: Vec<String> =
        join_all(claims).await.into_iter().map(|r| r.unwrap()).filter(|(_, ok)| *ok).map(|(id, _)| id).collect();
    assert_eq!(won.len(), 20, "each parked task claimed by exactly one caller");
    assert_eq!(won.into_iter().collect::<HashSet<_>>(), ids.into_iter().collect());
    assert!(be.a.workers.parked().await.unwrap().is_empty());
}

async fn queues_remove_returns_tasks(be: &Backend) {
    let id = format!("w-{}", uid());
    be.a.workers.register(worker(&id, &["echo"]), TTL).await.unwrap();
    let mut all = HashSet::new();
    for _ in 0..3 {
        let t = task("j", "echo", 0.0);
        all.insert(t.task_id.clone());
        be.a.workers.enqueue(&id, t).await.unwrap();
    }
    let running = be.b.workers.pop(&id, now_ms()).await.unwrap().unwrap();
    let (queued, orphans) = be.b.workers.remove(&id).await.unwrap();
    assert_eq!(queued.len(), 2);
    assert_eq!(orphans.len(), 1);
    assert_eq!((orphans[0].task_id.as_str(), orphans[0].worker_id.as_str()), (running.task_id.as_str(), id.as_str()));
    let got: HashSet<String> = queued.into_iter().map(|t| t.task_id).chain([running.task_id]).collect();
    assert_eq!(got, all);
    assert!(be.a.workers.worker(&id).await.unwrap().is_none());
    assert_eq!(be.a.workers.remove(&id).await.unwrap(), (vec![], vec![]), "a second removal finds nothing");
    assert!(be.a.workers.pop(&id, now_ms()).await.unwrap().is_none());
}

/// A draining worker's queue is taken whole (highest priority first, once); the worker stays
/// registered with its running task.
async fn queues_take_queue_keeps_the_worker(be: &Backend) {
    let id = format!("w-{}", uid());
    be.a.workers.register(worker(&id, &["echo"]), TTL).await.unwrap();
    let mut queued = Vec::new();
    for p in [0.0, 5.0, 0.0, 1.0] {
        let t = task("j", "echo", p);
        queued.push(t.task_id.clone());
        be.a.workers.enqueue(&id, t).await.unwrap();
    }
    // Pops the priority-5 task: it runs.
    let running = be.b.workers.pop(&id, now_ms()).await.unwrap().unwrap();
    assert_eq!(running.task_id, queued[1]);
    let taken = be.b.workers.take_queue(&id).await.unwrap();
    let ids: Vec<&str> = taken.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, [queued[3].as_str(), queued[0].as_str(), queued[2].as_str()], "priority, then FIFO");
    assert!(be.a.workers.take_queue(&id).await.unwrap().is_empty(), "taken once");
    for t in &taken {
        assert!(!be.a.workers.task_known(&t.task_id).await.unwrap(), "{} is forgotten", t.task_id);
    }
    assert!(be.a.workers.pop(&id, now_ms()).await.unwrap().is_none());
    let live = be.a.workers.live_workers(now_ms()).await.unwrap();
    let me = live.iter().find(|w| w.info.worker_id == id).expect("still live");
    assert_eq!((me.queued, me.running), (0, 1), "still registered, still running its task");
    assert!(be.a.workers.task_known(&running.task_id).await.unwrap());
    assert_eq!(be.a.workers.queue_depth().await.unwrap(), 0);
    assert!(be.b.workers.take_queue(&format!("w-{}", uid())).await.unwrap().is_empty(), "unknown worker");
}

/// A poll turns a `busy` or `full` worker `idle`, never a `draining` one; hot skills come from
/// the registration and the last heartbeat (none when a heartbeat leaves them out).
async fn workers_mark_idle_and_hot_skills(be: &Backend) {
    let (a, b) = (&be.a.workers, &be.b.workers);
    let id = format!("w-{}", uid());
    let mut reg = worker(&id, &["echo", "other"]);
    reg.record.insert("hot_skills".into(), json!(["echo", {"name": "other"}]));
    reg.refresh_from_record();
    a.register(reg, TTL).await.unwrap();
    assert_eq!(b.worker(&id).await.unwrap().unwrap().hot_skills, ["echo", "other"]);
    assert!(!b.mark_idle(&id).await.unwrap(), "already idle");
    for status in ["busy", "full"] {
        b.heartbeat(&id, Some(&json!({"status": status, "hot_skills": ["echo"]})), TTL).await.unwrap();
        let seen = a.worker(&id).await.unwrap().unwrap();
        assert_eq!((seen.status.as_str(), seen.hot_skills.as_slice()), (status, ["echo".to_owned()].as_slice()));
        assert!(!seen.takes_new_tasks());
        assert!(a.mark_idle(&id).await.unwrap(), "{status} -> idle");
        let seen = b.worker(&id).await.unwrap().unwrap();
        assert!(seen.takes_new_tasks(), "{status}: {seen:?}");
        assert_eq!(seen.record["status"], "idle");
        assert_eq!(seen.hot_skills, ["echo"], "a poll keeps the hot skills");
        let listed = b.live_workers(now_ms()).await.unwrap();
        assert_eq!(listed.iter().find(|w| w.info.worker_id == id).unwrap().info.status, "idle");
    }
    b.heartbeat(&id, Some(&json!({"status": "draining"})), TTL).await.unwrap();
    assert!(!a.mark_idle(&id).await.unwrap(), "a draining worker stays draining");
    let seen = b.worker(&id).await.unwrap().unwrap();
    assert_eq!(seen.status, "draining");
    assert!(seen.hot_skills.is_empty(), "a heartbeat without hot_skills reports none");
    assert!(!a.mark_idle(&format!("w-{}", uid())).await.unwrap(), "unknown worker");
}

// ---------------------------------------------------------------------------------------------
// Redis only: a holder that lost its lease cannot overwrite the new holder's work.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_lost_lease_cannot_overwrite() {
    let be = Backend::redis().await;
    let id = uid();
    be.a.jobs.insert(job(&id, "c1")).await.unwrap();
    let mut old = be.a.jobs.lock(&id).await.unwrap().unwrap();
    // Simulate an expired lease: the lock key disappears, another instance takes the job.
    let url = avto_tests::redis_url();
    let prefix = &be.cleanup.as_ref().unwrap().prefix;
    let raw = avto::storage::redis::RedisConn::open(&url, prefix).unwrap();
    raw.query::<i64>(avto::storage::redis::client::cmd("DEL").arg(raw.key(&format!("lock:job:{id}")))).await.unwrap();
    {
        let mut new = be.b.jobs.lock(&id).await.unwrap().unwrap();
        new.current_state = "by-new-holder".into();
        be.b.jobs.save(&new).await.unwrap();
    }
    old.current_state = "by-old-holder".into();
    assert!(matches!(be.a.jobs.save(&old).await, Err(StorageError::Conflict(_))));
    drop(old);
    assert_eq!(be.a.jobs.get(&id).await.unwrap().unwrap().current_state, "by-new-holder");
    // The same for a commit, and the new holder's lock stays.
    let mut old = be.a.jobs.lock(&id).await.unwrap().unwrap();
    raw.query::<i64>(avto::storage::redis::client::cmd("DEL").arg(raw.key(&format!("lock:job:{id}")))).await.unwrap();
    let new = be.b.jobs.lock(&id).await.unwrap().unwrap();
    old.current_state = "by-old-holder".into();
    assert!(matches!(be.a.jobs.commit(old).await, Err(StorageError::Conflict(_))));
    assert_eq!(be.a.jobs.get(&id).await.unwrap().unwrap().current_state, "by-new-holder");
    assert!(tokio::time::timeout(Duration::from_millis(300), be.a.jobs.lock(&id)).await.is_err(), "still held");
    be.b.jobs.commit(new).await.unwrap();
    // In a batch of commits, the one whose lease was lost is refused, the others written.
    let other = uid();
    be.a.jobs.insert(job(&other, "c1")).await.unwrap();
    let (mut old, mut fine) =
        (be.a.jobs.lock(&id).await.unwrap().unwrap(), be.a.jobs.lock(&other).await.unwrap().unwrap());
    raw.query::<i64>(avto::storage::redis::client::cmd("DEL").arg(raw.key(&format!("lock:job:{id}")))).await.unwrap();
    let new = be.b.jobs.lock(&id).await.unwrap().unwrap();
    (old.current_state, fine.current_state) = ("by-old-holder".into(), "batched".into());
    let answers = be.a.jobs.commit_all(vec![old, fine]).await.unwrap();
    assert!(matches!(answers[..], [Err(StorageError::Conflict(_)), Ok(())]), "{answers:?}");
    assert_eq!(be.a.jobs.get(&id).await.unwrap().unwrap().current_state, "by-new-holder");
    assert_eq!(be.a.jobs.get(&other).await.unwrap().unwrap().current_state, "batched");
    assert!(tokio::time::timeout(Duration::from_millis(300), be.a.jobs.lock(&id)).await.is_err(), "still held");
    be.b.jobs.commit(new).await.unwrap();
    let released = tokio::time::timeout(Duration::from_secs(5), be.b.jobs.lock(&other)).await.expect("released");
    be.b.jobs.commit(released.unwrap().unwrap()).await.unwrap();
}

// Redis only: a lock held longer than its lease is renewed while its guard lives (one task per
// store renews them all), so no other instance takes the job; a released lock is renewed no
// more, and a lock the holder lost is not taken back from its new holder by a renewal.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_leases_are_renewed_while_held() {
    let cleanup = avto_tests::RedisPrefix::new();
    let lease = Duration::from_millis(600);
    let open = || avto::storage::redis::RedisStores::new(&cleanup.url, &cleanup.prefix, lease).unwrap().stores();
    let (a, b) = (open(), open());
    let ids: Vec<String> = (0..4).map(|_| uid()).collect();
    for id in &ids {
        a.jobs.insert(job(id, "c1")).await.unwrap();
    }
    let mut held = Vec::new();
    for id in &ids {
        held.push(a.jobs.lock(id).await.unwrap().unwrap());
    }
    // Three leases later every lock is still held, and its holder still writes.
    tokio::time::sleep(lease * 3).await;
    for id in &ids {
        assert!(tokio::time::timeout(Duration::from_millis(100), b.jobs.lock(id)).await.is_err(), "{id} still held");
    }
    held[0].current_state = "after three leases".into();
    a.jobs.save(&held[0]).await.unwrap();
    // A released lock is another's at once; a committed one too.
    drop(held.remove(1));
    let taken = tokio::time::timeout(Duration::from_secs(5), b.jobs.lock(&ids[1])).await.expect("released");
    b.jobs.commit(taken.unwrap().unwrap()).await.unwrap();
    // A lock lost while held (its key gone, as when a stall outlasts the lease) and taken by
    // another instance stays the new holder's through the old holder's renewals.
    let url = avto_tests::redis_url();
    let raw = avto::storage::redis::RedisConn::open(&url, &cleanup.prefix).unwrap();
    raw.query::<i64>(avto::storage::redis::client::cmd("DEL").arg(raw.key(&format!("lock:job:{}", ids[3]))))
        .await
        .unwrap();
    let mut new = b.jobs.lock(&ids[3]).await.unwrap().unwrap();
    tokio::time::sleep(lease).await;
    let mut lost = held.pop().unwrap();
    lost.current_state = "by the old holder".into();
    assert!(matches!(a.jobs.save(&lost).await, Err(StorageError::Conflict(_))));
    new.current_state = "by the new holder".into();
    b.jobs.commit(new).await.unwrap();
    drop(lost);
    assert_eq!(a.jobs.get(&ids[3]).await.unwrap().unwrap().current_state, "by the new holder");
    // Held all along, then committed.
    a.jobs.commit(held.remove(0)).await.unwrap();
    let c = tokio::time::timeout(Duration::from_secs(5), b.jobs.lock(&ids[0])).await.expect("committed");
    assert_eq!(c.unwrap().unwrap().current_state, "after three leases");
    drop(held);
}

// Redis only: the scripts run as Redis functions, loaded again when Redis lost them (a restart
// without persistence, `FUNCTION FLUSH`), and as `EVALSHA` scripts for a user that may not run
// functions (a Redis before 7.0 answers `FCALL` the same way: unknown command).

/// The names of the avto function libraries Redis holds.
async fn avto_libraries(conn: &avto::storage::redis::RedisConn) -> Vec<String> {
    use avto::storage::redis::client::Value;
    fn names(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Array(items) | Value::Set(items) => items.iter().for_each(|i| names(i, out)),
            Value::Map(pairs) => {
                for (k, v) in pairs {
                    names(k, out);
                    names(v, out);
                }
            }
            Value::BulkString(b) => {
                let s = String::from_utf8_lossy(b);
                if s.starts_with("avto_") && s.len() == 45 {
                    out.push(s.into_owned());
                }
            }
            _ => {}
        }
    }
    let list: Value = conn
        .query(avto::storage::redis::client::cmd("FUNCTION").arg("LIST").arg("LIBRARYNAME").arg("avto_*"))
        .await
        .unwrap();
    let mut out = Vec::new();
    names(&list, &mut out);
    out.sort();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_functions_lost_by_redis_are_loaded_again() {
    let be = Backend::redis().await;
    let conn = be.conn.clone().unwrap();
    let id = uid();
    be.a.jobs.insert(job(&id, "c1")).await.unwrap();
    let mut held = be.a.jobs.lock(&id).await.unwrap().unwrap();
    let loaded = avto_libraries(&conn).await;
    assert!(loaded.len() >= 2, "the insert and the lock ran as functions: {loaded:?}");
    for name in &loaded {
        // Another test may have deleted it first: its own calls load it again, as ours must.
        let _ = conn.query::<()>(avto::storage::redis::client::cmd("FUNCTION").arg("DELETE").arg(name)).await;
    }
    held.current_state = "after-the-flush".into();
    be.a.jobs.commit(held).await.unwrap();
    assert_eq!(be.b.jobs.get(&id).await.unwrap().unwrap().current_state, "after-the-flush");
    let again = be.a.jobs.lock(&id).await.unwrap().unwrap();
    be.a.jobs.commit(again).await.unwrap();
    assert!(!avto_libraries(&conn).await.is_empty(), "loaded again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_start_up_loads_this_builds_libraries_and_deletes_other_builds() {
    let cleanup = avto_tests::RedisPrefix::new();
    let r = avto::storage::redis::RedisStores::new(&cleanup.url, &cleanup.prefix, Duration::from_secs(5)).unwrap();
    let conn = r.conn();
    // A library an earlier build left behind.
    let stray = format!("avto_{}00000000", uuid::Uuid::new_v4().simple());
    let code = format!("#!lua name={stray}\nredis.register_function('{stray}', function() return 1 end)");
    conn.query::<String>(avto::storage::redis::client::cmd("FUNCTION").arg("LOAD").arg(&code)).await.unwrap();
    r.check().await.unwrap();
    let libraries = avto_libraries(conn).await;
    assert!(!libraries.contains(&stray), "the other build's library is deleted");
    assert!(libraries.len() >= 40, "every script of this build is loaded: {}", libraries.len());
    // And they answer: no call has to load one.
    let id = uid();
    let stores = r.stores();
    stores.jobs.insert(job(&id, "c1")).await.unwrap();
    assert_eq!(stores.jobs.get(&id).await.unwrap().unwrap().id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_user_without_functions_gets_evalsha_scripts() {
    let cleanup = avto_tests::RedisPrefix::new();
    let admin = avto::storage::redis::RedisConn::open(&cleanup.url, &cleanup.prefix).unwrap();
    let user = format!("avto-test-{}", uid());
    let cmd = |args: &[&str]| {
        let mut c = avto::storage::redis::client::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c
    };
    // Everything but functions, as a managed Redis's ACL may say.
    admin
        .query::<()>(&cmd(&["ACL", "SETUSER", &user, "on", "nopass", "~*", "&*", "+@all", "-fcall", "-function"]))
        .await
        .unwrap();
    let url = cleanup.url.replacen("redis://", &format!("redis://{user}:unused@"), 1);
    let r = avto::storage::redis::RedisStores::new(&url, &cleanup.prefix, Duration::from_secs(5)).unwrap();
    let stores = r.stores();
    let id = uid();
    let outcome = async {
        stores.jobs.insert(job(&id, "c1")).await?;
        let mut held = stores.jobs.lock(&id).await?.expect("the job");
        held.current_state = "by-evalsha".into();
        stores.jobs.commit(held).await?;
        stores.jobs.get(&id).await
    }
    .await;
    let _ = admin.query::<i64>(&cmd(&["ACL", "DELUSER", &user])).await;
    assert_eq!(outcome.unwrap().unwrap().current_state, "by-evalsha");
}

/// Kills backend `a`'s Redis data connection every 15 ms until the flag is set; the task
/// returns how many times it did.
fn kill_connections(be: &Backend) -> (Arc<AtomicBool>, tokio::task::JoinHandle<usize>) {
    let conn = be.conn.clone().unwrap();
    let killer = avto::storage::redis::RedisConn::open(&avto_tests::redis_url(), "unused:").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let kills = tokio::spawn(async move {
        let mut kills = 0;
        while !flag.load(Ordering::SeqCst) {
            if let Ok(ids) = conn.client_ids().await {
                let cmd = avto::storage::redis::client::cmd("CLIENT").arg("KILL").arg("ID").arg(ids[0]).clone();
                if killer.query::<i64>(&cmd).await.unwrap_or(0) > 0 {
                    kills += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        kills
    });
    (stop, kills)
}

// Redis only: pops and steals whose reply is lost are sent again and hand each task out exactly
// once: a retry gets the task the first attempt took (read again from the task's hash).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_pops_after_lost_replies_hand_out_each_task_once() {
    let be = Backend::redis().await;
    let (owner, thief) = (format!("w-{}", uid()), format!("w-{}", uid()));
    be.a.workers.register(worker(&owner, &["echo"]), TTL).await.unwrap();
    be.a.workers.register(worker(&thief, &["echo"]), TTL).await.unwrap();
    let mut queued = HashSet::new();
    for _ in 0..1000 {
        let t = task("j", "echo", 1.0);
        queued.insert(t.task_id.clone());
        assert!(be.a.workers.enqueue(&owner, t).await.unwrap());
    }
    let (stop, kills) = kill_connections(&be);
    let skills = vec!["echo".to_owned()];
    // Six poppers take from the owner's queue until it is empty; two stealers take for the thief
    // until no queue has two tasks left. Neither finds nothing while the other can still take.
    let takers = (0..8).map(|i| {
        let (ws, owner, thief, skills) = (be.a.workers.clone(), owner.clone(), thief.clone(), skills.clone());
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let t = match i % 4 {
                    0 => ws.steal(&thief, &skills, now_ms()).await.unwrap(),
                    _ => ws.pop(&owner, now_ms()).await.unwrap(),
                };
                match t {
                    Some(t) => got.push(t.task_id),
                    None => return got,
                }
            }
        })
    });
    let mut got = Vec::new();
    for t in join_all(takers).await {
        got.extend(t.unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    let kills = kills.await.unwrap();
    assert!(kills > 3, "the connection was killed under the pops ({kills} times)");
    let unique: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(unique.len(), got.len(), "a task handed out twice");
    let lost = queued.difference(&unique).count();
    assert_eq!(lost, 0, "{lost} of {} tasks were taken off the queue but never handed out", queued.len());
    assert_eq!(unique.len(), queued.len());
}

// Redis only: operations whose reply is lost (the connection killed under them) are sent again
// and must not count twice: job status counts, data store increments and compare-and-set,
// quotas, claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_retries_after_lost_replies_count_once() {
    let be = Backend::redis().await;
    let (stop, kills) = kill_connections(&be);
    let client = format!("client-{}", uid());
    let ns = format!("bp:{}", uid());
    let token = uid();
    be.a.quotas.init(&token, 1000).await.unwrap();
    let work = (0..40).map(|i| {
        let (stores, client, ns, token) = (be.a.clone(), client.clone(), ns.clone(), token.clone());
        tokio::spawn(async move {
            let id = format!("{i}-{}", uid());
            stores.jobs.insert(job(&id, &client)).await.unwrap();
            for status in [JobStatus::WaitingForWorker, JobStatus::Running, JobStatus::Finished] {
                let mut g = stores.jobs.lock(&id).await.unwrap().unwrap();
                g.status = status;
                stores.jobs.save(&g).await.unwrap();
            }
            // A commit too: sent again after a lost reply, it finds its lock gone but its write done.
            for status in [JobStatus::Running, JobStatus::Finished] {
                let mut g = stores.jobs.lock(&id).await.unwrap().unwrap();
                g.status = status;
                g.current_state = format!("{status}");
                stores.jobs.commit(g).await.unwrap();
            }
            for _ in 0..5 {
                stores.data.incr(&ns, "n", 1, None).await.unwrap();
                assert!(stores.quotas.take(&token).await.unwrap());
                loop {
                    let cur = stores.data.get(&ns, "list").await.unwrap();
                    let mut list = cur.clone().unwrap_or(json!([]));
                    list.as_array_mut().unwrap().push(json!(i));
                    if stores.data.compare_and_set(&ns, "list", cur, list, None).await.unwrap() {
                        break;
                    }
                }
            }
        })
    });
    join_all(work).await.into_iter().for_each(|r| r.unwrap());
    stop.store(true, Ordering::SeqCst);
    let kills = kills.await.unwrap();
    assert!(kills > 3, "the connection was killed under the operations ({kills} times)");
    let counts = be.b.jobs.counts(Some(&client)).await.unwrap();
    assert_eq!(counts, BTreeMap::from([(JobStatus::Finished, 40)]), "each status change counted once");
    assert_eq!(be.b.data.get(&ns, "n").await.unwrap(), Some(json!(200)), "each increment applied once");
    assert_eq!(be.b.data.get(&ns, "list").await.unwrap().unwrap().as_array().unwrap().len(), 200);
    let mut left = 0;
    while be.b.quotas.take(&token).await.unwrap() {
        left += 1;
    }
    assert_eq!(left, 800, "each quota unit taken once");
}
