//! Job queries (issue #18; `JobStore::query` / `JobStore::count`, `avto::storage::JobQuery`):
//! filters and their combinations against a filter computed here over the inserted jobs, cursor
//! paging under concurrent inserts, retention dropping jobs from every query index, client
//! isolation, bounds; and `Core::cancel_matching` (dry run, then the real thing) on both
//! backends.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use avto::job::{now_ms, Job, JobStatus};
use avto::storage::{JobCursor, JobQuery, JobStore, JOB_QUERY_MAX_LIMIT};
use avto::StorageError;

use super::{set_status, uid, Backend};

/// A job of `client` and `blueprint` created at `created` (ms).
fn job_at(id: &str, client: &str, blueprint: &str, created: u64) -> Job {
    let mut j = super::job(id, client);
    j.blueprint = blueprint.to_owned();
    j.created_at_ms = created;
    j
}

/// Every page of `q` (limit `limit`), concatenated; panics on a repeat.
async fn all_pages(jobs: &Arc<dyn JobStore>, q: &JobQuery, limit: usize) -> Vec<Job> {
    let mut q = JobQuery { limit, after: None, ..q.clone() };
    let mut out: Vec<Job> = Vec::new();
    for _ in 0..10_000 {
        let page = jobs.query(&q).await.unwrap();
        assert!(page.jobs.len() <= limit);
        out.extend(page.jobs);
        match page.next {
            None => break,
            Some(c) => {
                // The cursor string round-trips (what the HTTP layer hands out).
                q.after = Some(c.to_string().parse().unwrap());
            }
        }
    }
    let ids: HashSet<&str> = out.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids.len(), out.len(), "no job twice");
    out
}

/// What `q` should answer, computed over `jobs` (the current state), newest first.
fn expected(jobs: &[Job], q: &JobQuery) -> Vec<String> {
    let checked = q.checked().unwrap();
    let mut hits: Vec<&Job> = jobs.iter().filter(|j| checked.matches(j)).collect();
    hits.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
    hits.into_iter().map(|j| j.id.clone()).collect()
}

fn ids(jobs: &[Job]) -> Vec<String> {
    jobs.iter().map(|j| j.id.clone()).collect()
}

/// Filters alone and combined, for a client and for the operator, by pages of several sizes;
/// counts agree; a client never sees another client's job.
pub(crate) async fn jobs_query_filters_and_combinations(be: &Backend) {
    let jobs = &be.a.jobs;
    let (ca, cb) = (format!("qa-{}", uid()), format!("qb-{}", uid()));
    let base = 1_700_000_000_000u64;
    let statuses = [JobStatus::Pending, JobStatus::WaitingForHuman, JobStatus::Failed, JobStatus::Finished];
    let mut all = Vec::new();
    for i in 0..90u64 {
        let client = if i % 3 == 2 { &cb } else { &ca };
        let blueprint = if i % 4 == 0 { "bp_x" } else { "bp_y" };
        // Ties: three jobs share each millisecond.
        let id = format!("{}{:02}-{}", if i % 5 == 0 { "pf" } else { "id" }, i, uid());
        let mut j = job_at(&id, client, blueprint, base + (i / 3) * 1000);
        j.status = statuses[(i % 4) as usize];
        jobs.insert(j.clone()).await.unwrap();
        all.push(j);
    }
    // Status changes move jobs between the per-status indexes (through the other instance).
    for j in all.iter_mut().filter(|j| j.status == JobStatus::Pending).step_by(2) {
        set_status(&be.b.jobs, &j.id, JobStatus::Cancelled).await;
        j.status = JobStatus::Cancelled;
    }
    let mid = base + 10 * 1000;
    let queries = vec![
        JobQuery::default(),
        JobQuery::client(&ca),
        JobQuery::client(&cb),
        JobQuery { statuses: vec![JobStatus::Failed], ..JobQuery::client(&ca) },
        JobQuery { statuses: vec![JobStatus::Failed, JobStatus::Cancelled, JobStatus::Failed], ..JobQuery::default() },
        JobQuery { statuses: vec![JobStatus::Running], ..JobQuery::default() },
        JobQuery { statuses: vec![JobStatus::Finished, JobStatus::Failed], ..JobQuery::client(&ca) },
        JobQuery { statuses: vec![JobStatus::Finished], blueprint: Some("bp_x".into()), ..JobQuery::default() },
        JobQuery { blueprint: Some("bp_x".into()), ..JobQuery::client(&ca) },
        JobQuery { blueprint: Some("bp_none".into()), ..JobQuery::default() },
        JobQuery { blueprint: Some("bp_y".into()), statuses: vec![JobStatus::WaitingForHuman], ..JobQuery::default() },
        JobQuery { created_from_ms: Some(mid), created_to_ms: Some(mid + 12_000), ..JobQuery::default() },
        JobQuery { created_to_ms: Some(mid), statuses: vec![JobStatus::Finished], ..JobQuery::client(&ca) },
        JobQuery { created_from_ms: Some(mid), created_to_ms: Some(mid - 1), ..JobQuery::default() },
        JobQuery { id_prefix: Some("pf".into()), ..JobQuery::default() },
        JobQuery { id_prefix: Some("pf".into()), ..JobQuery::client(&cb) },
        JobQuery { id_prefix: Some(all[7].id.clone()), ..JobQuery::default() },
        JobQuery {
            id_prefix: Some("id".into()),
            blueprint: Some("bp_y".into()),
            statuses: vec![JobStatus::Failed, JobStatus::Finished],
            created_from_ms: Some(base + 3000),
            ..JobQuery::client(&ca)
        },
        JobQuery { client: Some(format!("nobody-{}", uid())), ..JobQuery::default() },
    ];
    for q in &queries {
        let want = expected(&all, q);
        for limit in [1, 7, JOB_QUERY_MAX_LIMIT] {
            assert_eq!(ids(&all_pages(jobs, q, limit).await), want, "{q:?}, limit {limit}");
        }
        assert_eq!(be.b.jobs.count(q).await.unwrap(), want.len() as u64, "count of {q:?}");
    }
    // Isolation: a client's query never answers another client's job, even by its exact id.
    let of_a = all.iter().find(|j| j.client.id == ca).unwrap();
    let q = JobQuery { id_prefix: Some(of_a.id.clone()), ..JobQuery::client(&cb) };
    assert!(jobs.query(&q).await.unwrap().jobs.is_empty());
    assert_eq!(jobs.count(&q).await.unwrap(), 0);
    for j in all_pages(jobs, &JobQuery::client(&cb), 50).await {
        assert_eq!(j.client.id, cb);
    }
    // The page is the jobs as stored now.
    let page = jobs.query(&JobQuery { id_prefix: Some(of_a.id.clone()), ..JobQuery::default() }).await.unwrap();
    assert_eq!(page.jobs, vec![of_a.clone()]);
    assert_eq!(page.next, None);
}

/// Walks longer than one chunk of the index (and several per-status indexes merged): 700 jobs,
/// one status in 50, pages of 7 and of 200, against the filter computed here.
pub(crate) async fn jobs_query_long_walks(be: &Backend) {
    let client = format!("ql-{}", uid());
    let start = now_ms() - 10_000_000;
    let mut all = Vec::new();
    let inserts = (0..700u64).map(|i| {
        let mut j = job_at(
            &format!("{:04}-{}", i % 97, uid()),
            &client,
            ["a", "b", "c"][(i % 3) as usize],
            start + i * 10 + i % 2,
        );
        j.status = match i % 50 {
            0 => JobStatus::Failed,
            1..=20 => JobStatus::Finished,
            21..=40 => JobStatus::WaitingForWorker,
            _ => JobStatus::Cancelled,
        };
        all.push(j.clone());
        be.nth(i as usize).jobs.insert(j)
    });
    for r in futures::future::join_all(inserts).await {
        r.unwrap();
    }
    let queries = [
        JobQuery::client(&client),
        JobQuery { statuses: vec![JobStatus::Failed], ..JobQuery::client(&client) },
        JobQuery {
            statuses: vec![JobStatus::Failed, JobStatus::Finished, JobStatus::Cancelled],
            ..JobQuery::client(&client)
        },
        JobQuery {
            statuses: vec![JobStatus::Failed, JobStatus::WaitingForWorker],
            blueprint: Some("b".into()),
            ..JobQuery::client(&client)
        },
        JobQuery { blueprint: Some("c".into()), id_prefix: Some("001".into()), ..JobQuery::client(&client) },
        JobQuery {
            created_from_ms: Some(start + 1234),
            created_to_ms: Some(start + 5678),
            statuses: vec![JobStatus::Finished],
            ..JobQuery::client(&client)
        },
    ];
    for q in &queries {
        let want = expected(&all, q);
        for limit in [7, JOB_QUERY_MAX_LIMIT] {
            assert_eq!(ids(&all_pages(&be.b.jobs, q, limit).await), want, "{q:?}, limit {limit}");
        }
        assert_eq!(be.a.jobs.count(q).await.unwrap(), want.len() as u64, "count of {q:?}");
    }
}

/// Paging while other tasks insert jobs (newer ones, and older ones inside the part not paged
/// yet): no job is answered twice, and every job that existed when paging began is answered.
pub(crate) async fn jobs_query_paging_under_concurrent_inserts(be: &Backend) {
    let client = format!("qp-{}", uid());
    let start = now_ms() - 1_000_000;
    let mut before = HashSet::new();
    for i in 0..120u64 {
        let id = format!("{i:03}-{}", uid());
        be.a.jobs.insert(job_at(&id, &client, "flow", start + i * 1000)).await.unwrap();
        before.insert(id);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (jobs, stop, client) = (be.nth(w).jobs.clone(), stop.clone(), client.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    // New jobs, and jobs dated among the old ones (a clock behind, say).
                    let created = if n.is_multiple_of(2) { now_ms() } else { start + (n * 7919) % 120_000 };
                    jobs.insert(job_at(&format!("w{w}-{n}-{}", uid()), &client, "flow", created)).await.unwrap();
                    tokio::task::yield_now().await;
                }
                n
            })
        })
        .collect();
    let mut q = JobQuery { limit: 7, ..JobQuery::client(&client) };
    let mut seen: Vec<String> = Vec::new();
    let mut last: Option<JobCursor> = None;
    loop {
        let page = be.b.jobs.query(&q).await.unwrap();
        for j in &page.jobs {
            let pos = JobCursor::of(j);
            assert!(last.as_ref().is_none_or(|l| pos < *l), "strictly newest first: {pos} after {last:?}");
            last = Some(pos);
        }
        seen.extend(page.jobs.iter().map(|j| j.id.clone()));
        match page.next {
            Some(c) => q.after = Some(c),
            None => break,
        }
        // Between pages for sure (the writers race with them too): a newer job, and one dated
        // in the part already paged and one in the part still to page.
        let pages = seen.len() as u64;
        for created in [now_ms(), start + 119_000 - pages * 100, start + (pages * 37) % 60_000] {
            be.a.jobs.insert(job_at(&format!("x{pages}-{}", uid()), &client, "flow", created)).await.unwrap();
        }
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no job twice");
    for id in &before {
        assert!(unique.contains(id), "job {id} skipped");
    }
}

/// Retention removes a job from every query index: pages, counts, every filter; on Redis no
/// query index key is left once every job is gone.
pub(crate) async fn jobs_query_retention_drops_jobs(be: &Backend) {
    let (a, b) = be.jobs_with_retention(Duration::from_secs(60));
    let client = format!("qr-{}", uid());
    let ids: Vec<String> = (0..6).map(|i| format!("r{i}-{}", uid())).collect();
    for (i, id) in ids.iter().enumerate() {
        a.insert(job_at(id, &client, if i % 2 == 0 { "keep" } else { "drop" }, now_ms() - 1000 + i as u64))
            .await
            .unwrap();
    }
    set_status(&a, &ids[1], JobStatus::Finished).await;
    set_status(&b, &ids[3], JobStatus::Failed).await;
    set_status(&a, &ids[5], JobStatus::Quarantined).await;
    set_status(&b, &ids[0], JobStatus::WaitingForHuman).await;
    let failed = JobQuery { statuses: vec![JobStatus::Failed], ..JobQuery::client(&client) };
    assert_eq!(b.count(&failed).await.unwrap(), 1);
    assert_eq!(b.remove_expired(now_ms() + 61_000, 100).await.unwrap(), 3);
    let left = vec![ids[4].clone(), ids[2].clone(), ids[0].clone()];
    for q in [JobQuery::client(&client), JobQuery::default()] {
        assert_eq!(ids_of_pages(&a, &q).await, left);
        assert_eq!(a.count(&q).await.unwrap(), 3);
    }
    for q in [
        failed,
        JobQuery { blueprint: Some("drop".into()), ..JobQuery::default() },
        JobQuery { blueprint: Some("drop".into()), ..JobQuery::client(&client) },
        JobQuery { id_prefix: Some(ids[3].clone()), ..JobQuery::default() },
        JobQuery { statuses: vec![JobStatus::Finished, JobStatus::Quarantined], ..JobQuery::default() },
    ] {
        assert!(a.query(&q).await.unwrap().jobs.is_empty(), "{q:?}");
        assert_eq!(b.count(&q).await.unwrap(), 0, "{q:?}");
    }
    for id in &left {
        set_status(&a, id, JobStatus::Cancelled).await;
    }
    assert_eq!(a.remove_expired(now_ms() + 61_000, 100).await.unwrap(), 3);
    assert_eq!(a.count(&JobQuery::default()).await.unwrap(), 0);
    assert!(a.query(&JobQuery::default()).await.unwrap().jobs.is_empty());
    if let Some(conn) = &be.conn {
        let pattern = format!("{}jobs:*", conn.prefix());
        let keys: Vec<String> = conn.query(avto::storage::redis::client::cmd("KEYS").arg(&pattern)).await.unwrap();
        assert!(keys.is_empty(), "index keys left: {keys:?}");
    }
}

async fn ids_of_pages(jobs: &Arc<dyn JobStore>, q: &JobQuery) -> Vec<String> {
    ids(&all_pages(jobs, q, 2).await)
}

/// Out-of-bounds queries are refused with `Invalid`, by `query` and by `count`.
pub(crate) async fn jobs_query_limits_validated(be: &Backend) {
    for q in [
        JobQuery { limit: 0, ..JobQuery::default() },
        JobQuery { limit: JOB_QUERY_MAX_LIMIT + 1, ..JobQuery::default() },
        JobQuery { id_prefix: Some("x".repeat(1000)), ..JobQuery::default() },
        JobQuery { blueprint: Some("b".repeat(1000)), ..JobQuery::default() },
        JobQuery { client: Some(String::new()), ..JobQuery::default() },
    ] {
        assert!(matches!(be.a.jobs.query(&q).await, Err(StorageError::Invalid(_))), "{q:?}");
        assert!(matches!(be.a.jobs.count(&q).await, Err(StorageError::Invalid(_))), "{q:?}");
    }
    assert!(matches!("12.".parse::<JobCursor>(), Err(StorageError::Invalid(_))));
    // A cursor far in the future or past is fine (nothing before / everything after it).
    let q = JobQuery { after: Some(JobCursor { created_at_ms: u64::MAX, id: "~".into() }), ..JobQuery::default() };
    be.a.jobs.query(&q).await.unwrap();
}

/// `Core::cancel_matching`: the dry run's `matched` is what the real call then cancels, through
/// the one-job cancel (status `cancelled`); ended jobs and other clients' jobs are untouched.
pub(crate) async fn bulk_cancel(redis: Option<&avto_tests::RedisPrefix>) {
    let mut config = avto_tests::test_config();
    if let Some(r) = redis {
        config.redis_url = Some(r.url.clone());
        config.redis_key_prefix = r.prefix.clone();
    }
    let o = avto::server::Orchestrator::builder().config(config).build().unwrap();
    let core = o.core().clone();
    let (client, other) = (format!("bc-{}", uid()), format!("bo-{}", uid()));
    let mut waiting = Vec::new();
    for i in 0..30u64 {
        let c = if i % 5 == 4 { &other } else { &client };
        let mut j = job_at(&format!("bc{i}-{}", uid()), c, if i % 2 == 0 { "a" } else { "b" }, now_ms() - 100 + i);
        j.status = if i % 3 == 0 { JobStatus::Finished } else { JobStatus::WaitingForHuman };
        if j.status == JobStatus::WaitingForHuman && c == &client && j.blueprint == "a" {
            waiting.push(j.id.clone());
        }
        core.jobs().insert(j).await.unwrap();
    }
    let q = JobQuery { blueprint: Some("a".into()), ..JobQuery::client(&client) };
    let dry = core.cancel_matching(&q, true).await.unwrap();
    assert_eq!((dry.matched, dry.cancelled, dry.more), (waiting.len() as u64, 0, false));
    assert_eq!(
        core.count_jobs(&JobQuery { statuses: vec![JobStatus::Cancelled], ..JobQuery::default() }).await.unwrap(),
        0
    );
    let done = core.cancel_matching(&q, false).await.unwrap();
    assert_eq!((done.matched, done.cancelled, done.more), (dry.matched, dry.matched, false));
    for id in &waiting {
        assert_eq!(core.job(id).await.unwrap().unwrap().status, JobStatus::Cancelled);
    }
    let cancelled = JobQuery { statuses: vec![JobStatus::Cancelled], ..JobQuery::default() };
    assert_eq!(core.count_jobs(&cancelled).await.unwrap(), waiting.len() as u64, "no other job cancelled");
    let again = core.cancel_matching(&q, false).await.unwrap();
    assert_eq!((again.matched, again.cancelled), (0, 0));
    // A filter naming only ended statuses matches nothing; a bad filter is refused.
    let ended = JobQuery { statuses: vec![JobStatus::Finished], ..JobQuery::default() };
    assert_eq!(core.cancel_matching(&ended, true).await.unwrap().matched, 0);
    let bad = JobQuery { blueprint: Some(String::new()), ..JobQuery::default() };
    assert!(core.cancel_matching(&bad, true).await.is_err());
}
