//! `bench --query-jobs N`: the job-query benchmark (issue #18). Stores N jobs straight into the
//! job store (the in-memory store, and with `REDIS_URL` also Redis under a fresh prefix, deleted
//! afterwards): 20 clients (the first owns 40% of the jobs), 8 blueprints (`bp_rare` 1%), a
//! status mix of a busy deployment (90% finished, 1% failed, 2% waiting for a human, ...),
//! created over the last 30 days. Then times the dashboard's queries, each run 5 times (median
//! and max, ms): first page, next page, filtered pages (status, blueprint, time range, id
//! prefix, combinations) for the operator and for the biggest client, and counts. Also prints
//! what the store costs per job: the bench's RSS growth per job (memory store), Redis
//! `used_memory` per job and the bytes of the query indexes (`MEMORY USAGE`).
//!
//! Then the same over HTTP, as the dashboard asks: an orchestrator (feature `dashboard`) is
//! served on 127.0.0.1 over the stored jobs (the memory store is that orchestrator's own; on
//! Redis one started on the same prefix), signed in with `POST /ui/api/session` as the operator
//! (`ADMIN_TOKEN`) and as the biggest client (its token), and `GET /ui/api/jobs` (first page,
//! next page by cursor, filtered pages) and `GET /ui/api/jobs/count` are timed from the request
//! to the whole JSON body read (5 runs, median and max, ms).

use std::sync::Arc;
use std::time::{Duration, Instant};

use avto::job::{now_ms, Job, JobStatus};
use avto::server::config::ClientEntry;
use avto::server::{Config, Orchestrator};
use avto::storage::redis::client as redis;
use avto::storage::{JobCursor, JobQuery, JobStore};
use futures::StreamExt;
use serde_json::json;

const BLUEPRINTS: [&str; 8] =
    ["bp_main", "bp_etl", "bp_mail", "bp_image", "bp_video", "bp_report", "bp_sync", "bp_rare"];

/// Deterministic pseudo-random numbers (splitmix64), so every run stores the same mix.
fn mix(i: u64, salt: u64) -> u64 {
    let mut z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(salt);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn client_of(i: u64) -> String {
    let r = mix(i, 1) % 100;
    // 40% for client 0, the rest spread over 19 others.
    let c = if r < 40 { 0 } else { 1 + mix(i, 2) % 19 };
    format!("toml:client{c}")
}

fn blueprint_of(i: u64) -> &'static str {
    match mix(i, 3) % 100 {
        0 => BLUEPRINTS[7],
        r => BLUEPRINTS[(r % 7) as usize],
    }
}

fn status_of(i: u64) -> JobStatus {
    match mix(i, 4) % 1000 {
        0..=899 => JobStatus::Finished,
        900..=909 => JobStatus::Failed,
        910..=929 => JobStatus::Cancelled,
        930..=949 => JobStatus::WaitingForHuman,
        950..=979 => JobStatus::WaitingForWorker,
        980..=989 => JobStatus::Running,
        990..=994 => JobStatus::Quarantined,
        _ => JobStatus::Pending,
    }
}

/// Job `i` of `n`, created over the 30 days before `now`.
fn make_job(i: u64, n: u64, now: u64) -> Job {
    let span = 30 * 86_400_000u64;
    let id = uuid::Uuid::from_u64_pair(mix(i, 5), mix(i, 6)).to_string();
    let mut j = Job::new(id, blueprint_of(i), "start", json!({"order": i, "customer": format!("cust-{}", i % 5000)}));
    let c = Arc::make_mut(&mut j.client);
    (c.name, c.id) = (client_of(i).trim_start_matches("toml:").to_owned(), client_of(i));
    j.status = status_of(i);
    j.created_at_ms = now - span + i * span / n + mix(i, 7) % 1000;
    j.updated_at_ms = j.created_at_ms + 1500;
    if j.status.is_terminal() {
        j.current_state = "done".into();
        j.path = vec!["start".into(), "work".into(), "done".into()];
        j.result = Some(json!({"ok": j.status == JobStatus::Finished}));
    }
    j
}

fn rss_kb() -> u64 {
    super::proc_stats(Some(std::process::id())).0
}

/// Times `f` 5 times: (median ms, max ms, what the last run answered).
async fn time<T, F: std::future::Future<Output = T>>(mut f: impl FnMut() -> F) -> (f64, f64, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let t = Instant::now();
        last = Some(f().await);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (times[2], times[4], last.unwrap())
}

/// The queries of the dashboard, timed on `jobs`.
async fn measure(jobs: &Arc<dyn JobStore>, n: u64, now: u64) {
    let span = 30 * 86_400_000u64;
    let probe = make_job(n / 2, n, now);
    let day = now - span / 2;
    let big = "toml:client0".to_owned();
    let q = |f: &dyn Fn(&mut JobQuery)| {
        let mut q = JobQuery::default();
        f(&mut q);
        q
    };
    let pages: Vec<(&str, JobQuery)> = vec![
        ("first page (operator)", JobQuery::default()),
        ("first page (client0, 40%)", JobQuery::client(&big)),
        ("status=failed (1%)", q(&|q| q.statuses = vec![JobStatus::Failed])),
        ("status=failed, client0", q(&|q| (q.statuses, q.client) = (vec![JobStatus::Failed], Some(big.clone())))),
        (
            "inbox: waiting_for_human, client0",
            q(&|q| (q.statuses, q.client) = (vec![JobStatus::WaitingForHuman], Some(big.clone()))),
        ),
        (
            "not ended (5 statuses)",
            q(&|q| q.statuses = JobStatus::ALL.into_iter().filter(|s| !s.is_terminal()).collect()),
        ),
        ("blueprint=bp_rare (1%)", q(&|q| q.blueprint = Some("bp_rare".into()))),
        ("blueprint=bp_main (14%)", q(&|q| q.blueprint = Some("bp_main".into()))),
        ("failed + bp_main", q(&|q| (q.statuses, q.blueprint) = (vec![JobStatus::Failed], Some("bp_main".into())))),
        (
            "pending + bp_rare (0.005%)",
            q(&|q| (q.statuses, q.blueprint) = (vec![JobStatus::Pending], Some("bp_rare".into()))),
        ),
        (
            "time range: one day, 15 days ago",
            q(&|q| (q.created_from_ms, q.created_to_ms) = (Some(day), Some(day + 86_400_000))),
        ),
        (
            "time range + failed",
            q(&|q| {
                (q.created_from_ms, q.created_to_ms) = (Some(day), Some(day + 86_400_000));
                q.statuses = vec![JobStatus::Failed]
            }),
        ),
        ("id prefix: 6 chars", q(&|q| q.id_prefix = Some(probe.id[..6].to_owned()))),
        (
            "id prefix: whole id, its client",
            q(&|q| (q.id_prefix, q.client) = (Some(probe.id.clone()), Some(probe.client.id.clone()))),
        ),
        (
            "id prefix: whole id, another client",
            q(&|q| (q.id_prefix, q.client) = (Some(probe.id.clone()), Some("toml:nobody".into()))),
        ),
        ("id prefix: 1 char (dense)", q(&|q| q.id_prefix = Some(probe.id[..1].to_owned()))),
    ];
    println!("  {:<40} {:>9} {:>9} {:>6} {:>9} {:>9}", "query (limit 50)", "page ms", "max", "jobs", "next ms", "max");
    for (name, query) in &pages {
        let (med, max, page) = time(|| jobs.query(query)).await;
        let page = page.expect("query");
        let (next_med, next_max) = match &page.next {
            Some(c) => {
                let next = JobQuery { after: Some(c.clone()), ..query.clone() };
                let (m, x, p) = time(|| jobs.query(&next)).await;
                p.expect("next page");
                (format!("{m:.2}"), format!("{x:.2}"))
            }
            None => ("-".into(), "-".into()),
        };
        println!("  {:<40} {:>9.2} {:>9.2} {:>6} {:>9} {:>9}", name, med, max, page.jobs.len(), next_med, next_max);
    }
    // Deep paging: page 200 of the operator's list (cursor from page 199).
    let mut query = JobQuery::default();
    for _ in 0..199 {
        query.after = jobs.query(&query).await.unwrap().next;
    }
    let (med, max, _) = time(|| jobs.query(&query)).await;
    println!("  {:<40} {:>9.2} {:>9.2}", "page 200 (operator)", med, max);
    let cursor = JobCursor::of(&probe);
    let halfway = JobQuery { after: Some(cursor), ..JobQuery::default() };
    let (med, max, _) = time(|| jobs.query(&halfway)).await;
    println!("  {:<40} {:>9.2} {:>9.2}", "page after a cursor halfway", med, max);
    println!("  {:<40} {:>9} {:>9} {:>12}", "count", "ms", "max", "count");
    for (name, query) in pages.iter().filter(|(n, _)| !n.contains("client0,") && !n.starts_with("first page (client")) {
        let (med, max, n) = time(|| jobs.count(query)).await;
        println!("  {:<40} {:>9.2} {:>9.2} {:>12}", name, med, max, n.expect("count"));
    }
}

async fn insert_all(jobs: &Arc<dyn JobStore>, n: u64, now: u64, concurrency: usize) -> Duration {
    let t = Instant::now();
    let mut done = futures::stream::iter(0..n)
        .map(|i| {
            let jobs = jobs.clone();
            async move { jobs.insert(make_job(i, n, now)).await }
        })
        .buffer_unordered(concurrency);
    while let Some(r) = done.next().await {
        r.expect("insert");
    }
    t.elapsed()
}

pub(crate) async fn run(n: usize) {
    let n = n.max(1000) as u64;
    let now = now_ms();
    println!("job-query bench: {n} jobs (20 clients, 8 blueprints, 1% failed, 2% waiting for a human)");

    let in_memory = orchestrator(None);
    let rss0 = rss_kb();
    let memory: Arc<dyn JobStore> = in_memory.core().jobs().clone();
    let took = insert_all(&memory, n, now, 1).await;
    let rss1 = rss_kb();
    println!(
        "\nmemory store: inserted in {:.1} s; bench RSS +{} MiB = {} bytes per stored job (the job itself, the store's maps and every index)",
        took.as_secs_f64(),
        (rss1.saturating_sub(rss0)) / 1024,
        (rss1.saturating_sub(rss0)) * 1024 / n
    );
    measure(&memory, n, now).await;
    drop(memory);
    measure_http(in_memory, n, now).await;

    let Ok(url) = std::env::var("REDIS_URL") else {
        println!("\n(REDIS_URL unset: Redis skipped)");
        return;
    };
    let prefix = format!("qbench-{}:", std::process::id());
    let stores = avto::storage::redis::RedisStores::new(&url, &prefix, Duration::from_secs(30)).expect("REDIS_URL");
    stores.check().await.expect("Redis answers");
    let conn = stores.conn().clone();
    let used = || async {
        let info: String = conn.query(redis::cmd("INFO").arg("memory")).await.unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = used().await;
    let jobs = stores.stores().jobs;
    let took = insert_all(&jobs, n, now, 128).await;
    let after = used().await;
    // The query indexes' own bytes.
    let mut cursor = 0u64;
    let (mut index_bytes, mut list_bytes) = (0u64, 0u64);
    loop {
        let (next, keys): (u64, Vec<String>) = conn
            .query(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(format!("{prefix}jobs:*")).arg("COUNT").arg(1000))
            .await
            .unwrap();
        for k in keys {
            let b: Option<u64> =
                conn.query(redis::cmd("MEMORY").arg("USAGE").arg(&k).arg("SAMPLES").arg(0)).await.unwrap();
            if k.starts_with(&format!("{prefix}jobs:client:")) {
                list_bytes += b.unwrap_or(0);
            } else {
                index_bytes += b.unwrap_or(0);
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    println!(
        "\nRedis store: inserted in {:.1} s ({:.0} jobs/s, 128 at once); used_memory +{} MiB = {} bytes per job; \
         query indexes {} bytes per job (plus the per-client list, {} bytes per job, which existed before)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        after.saturating_sub(before) / (1 << 20),
        after.saturating_sub(before) / n,
        index_bytes / n,
        list_bytes / n
    );
    measure(&jobs, n, now).await;
    drop(jobs);
    measure_http(orchestrator(Some((&url, &prefix))), n, now).await;
    match avto::storage::redis::delete_prefix(&url, &prefix).await {
        Ok(k) => println!("\n(deleted {k} keys under {prefix})"),
        Err(e) => println!("\n(could not delete {prefix}: {e})"),
    }
}

/// The biggest client's token (it owns 40% of the jobs).
const CLIENT0_TOKEN: &str = "bench-client0-token";
const ADMIN_TOKEN: &str = "bench-admin-token";

/// An orchestrator over the memory store (no cap on retained jobs), or on Redis `(url, prefix)`,
/// with the operator token and a token for `toml:client0`. Not started: only its router is served.
fn orchestrator(redis: Option<(&str, &str)>) -> Orchestrator {
    let mut vars = vec![
        ("API_HOST", "127.0.0.1".to_owned()),
        ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("RATE_LIMITING_ENABLED", "false".to_owned()),
        ("MAX_RETAINED_JOBS", "0".to_owned()),
    ];
    if let Some((url, prefix)) = redis {
        vars.push(("REDIS_URL", url.to_owned()));
        vars.push(("REDIS_KEY_PREFIX", prefix.to_owned()));
    }
    let lookup = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    let mut config = Config::from_lookup(&lookup).expect("bench config");
    config.clients.push(ClientEntry {
        token: CLIENT0_TOKEN.into(),
        config: avto::ClientConfig { name: "client0".into(), id: "toml:client0".into(), ..Default::default() },
        quota: None,
    });
    Orchestrator::builder().config(config).build().expect("bench orchestrator")
}

/// Signs in with `token`: the session cookie.
async fn sign_in(http: &reqwest::Client, base: &str, token: &str) -> String {
    let r = http.post(format!("{base}/ui/api/session")).json(&json!({"token": token})).send().await.expect("sign-in");
    assert_eq!(r.status(), 200, "sign-in");
    let cookie = r.headers()[reqwest::header::SET_COOKIE].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// `GET base+path` with the session: the JSON body (panics on a non-200).
async fn get(http: &reqwest::Client, base: &str, cookie: &str, path: &str) -> serde_json::Value {
    let r = http.get(format!("{base}{path}")).header(reqwest::header::COOKIE, cookie).send().await.expect("GET");
    let status = r.status();
    let body = r.text().await.expect("body");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

/// The dashboard's pages and counts over HTTP, on an orchestrator over the stored jobs.
async fn measure_http(orchestrator: Orchestrator, n: u64, now: u64) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = orchestrator.router().into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let span = 30 * 86_400_000u64;
    let probe = make_job(n / 2, n, now);
    let day = now - span / 2;
    let filters: Vec<(&str, String)> = vec![
        ("first page", String::new()),
        ("status=failed (1%)", "status=failed".into()),
        (
            "status: not ended (5 statuses)",
            "status=pending,waiting_for_worker,running,waiting_for_human,quarantined".into(),
        ),
        ("blueprint=bp_rare (1%)", "blueprint=bp_rare".into()),
        ("blueprint=bp_main (14%)", "blueprint=bp_main".into()),
        ("failed + bp_main", "status=failed&blueprint=bp_main".into()),
        ("time range: one day, 15 days ago", format!("from={day}&to={}", day + 86_400_000)),
        ("time range + failed", format!("from={day}&to={}&status=failed", day + 86_400_000)),
        ("id prefix: 6 chars", format!("q={}", &probe.id[..6])),
        ("id prefix: whole id", format!("q={}", probe.id)),
    ];
    for (who, token) in [("operator", ADMIN_TOKEN), ("client0 (40% of the jobs)", CLIENT0_TOKEN)] {
        let (sign_med, sign_max, cookie) = time(|| sign_in(&http, &base, token)).await;
        println!("\n  HTTP, signed in as {who} (POST /ui/api/session: {sign_med:.2} ms, max {sign_max:.2})");
        println!(
            "  {:<40} {:>9} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "GET /ui/api/jobs (limit 50)", "page ms", "max", "jobs", "next ms", "max", "count ms", "max", "count"
        );
        for (name, filter) in &filters {
            let sep = if filter.is_empty() { "" } else { "&" };
            let path = format!("/ui/api/jobs?limit=50{sep}{filter}");
            let (med, max, page) = time(|| get(&http, &base, &cookie, &path)).await;
            let rows = page["jobs"].as_array().map_or(0, Vec::len);
            let (next_med, next_max) = match page["next"].as_str() {
                Some(c) => {
                    let next = format!("{path}&after={c}");
                    let (m, x, _) = time(|| get(&http, &base, &cookie, &next)).await;
                    (format!("{m:.2}"), format!("{x:.2}"))
                }
                None => ("-".into(), "-".into()),
            };
            let count_path = format!("/ui/api/jobs/count?{filter}");
            let (c_med, c_max, count) = time(|| get(&http, &base, &cookie, &count_path)).await;
            println!(
                "  {:<40} {:>9.2} {:>9.2} {:>6} {:>9} {:>9} {:>9.2} {:>9.2} {:>9}",
                name, med, max, rows, next_med, next_max, c_med, c_max, count["count"]
            );
        }
    }
    server.abort();
}

/// `bench --prefill N`: N finished echo jobs of the bench's client (the `CLIENT_TOKEN` client of
/// `echo_server`), ended over the `retention` before now, stored straight into the Redis store
/// under `prefix` (every index entry and retention entry a finished job has), so that a run
/// measures Redis with that many jobs retained, as a deployment keeping a week of jobs does.
pub(crate) async fn prefill(url: &str, prefix: &str, n: usize, retention: Duration) {
    let stores = avto::storage::redis::RedisStores::new(url, prefix, Duration::from_secs(30))
        .expect("REDIS_URL")
        .with_job_retention(Some(retention));
    stores.check().await.expect("Redis answers");
    let jobs = stores.stores().jobs;
    let (now, span) = (now_ms(), retention.as_millis() as u64);
    let t = Instant::now();
    let mut done = futures::stream::iter(0..n as u64)
        .map(|i| {
            let jobs = jobs.clone();
            let id = uuid::Uuid::from_u64_pair(mix(i, 8), mix(i, 9)).to_string();
            let mut j = Job::new(id, "echo_flow", "finished", json!({"text": format!("job {i}"), "n": i}));
            let c = Arc::make_mut(&mut j.client);
            (c.name, c.id) = ("default".to_owned(), "env:CLIENT_TOKEN".to_owned());
            j.status = JobStatus::Finished;
            j.created_at_ms = now - span + i * span / n.max(1) as u64;
            j.updated_at_ms = j.created_at_ms + 5;
            j.path = vec!["start".into(), "finished".into()];
            j.result = Some(json!({"echo": {"text": format!("job {i}"), "n": i}}));
            async move { jobs.insert(j).await }
        })
        .buffer_unordered(128);
    while let Some(r) = done.next().await {
        r.expect("insert");
    }
    let took = t.elapsed().as_secs_f64();
    println!(
        "prefilled {n} finished echo jobs into Redis under {prefix} in {took:.1} s ({:.0} jobs/s)",
        n as f64 / took
    );
}
