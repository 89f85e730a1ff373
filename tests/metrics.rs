//! `GET /metrics`: Prometheus text with job counts, queue depth, live workers, dispatch and job
//! latency histograms, per-blueprint counters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use avto::history::MemoryHistory;
use avto::server::Orchestrator;
use avto::worker::{TaskHandle, TaskOutcome, Worker};
use avto_tests::blueprints::{approval_flow, echo_flow};
use avto_tests::{test_config, wait_workers, Server, SECRET, WORKER_TOKEN};
use serde_json::{json, Value};

/// `name{labels}` -> value, checking every line is well-formed exposition text.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap();
            assert!(matches!(it.next(), Some("gauge" | "counter" | "histogram")), "{line}");
            assert!(typed.insert(name.to_owned()), "TYPE twice for {name}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = key.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
        let family = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(typed.contains(name) || typed.contains(family), "sample before its TYPE: {line}");
        assert!(out.insert(key.to_owned(), value).is_none(), "duplicate sample {key}");
    }
    out
}

async fn scrape(base: &str) -> (String, BTreeMap<String, f64>) {
    let r = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(avto_tests::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let text = r.text().await.unwrap();
    let m = parse(&text);
    (text, m)
}

fn start_worker(base: &str, id: &str) -> tokio::sync::oneshot::Sender<()> {
    let worker = Worker::builder()
        .orchestrator_url(base)
        .worker_id(id)
        .token(WORKER_TOKEN)
        .secret_key(SECRET)
        .configure(|c| c.idle_poll_delay = Duration::from_millis(50))
        .task("echo", |p: Value, _t: TaskHandle| async move { TaskOutcome::success(json!({"echo": p})) })
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_content() {
    let s = Server::start([echo_flow::blueprint(), approval_flow::blueprint()]).await;
    let c = s.client();

    // Nothing yet: every status present at 0, one counter per blueprint at 0, no auth needed.
    let (text, m) = scrape(&s.base).await;
    assert_eq!(m["avto_jobs{status=\"pending\"}"], 0.0);
    assert_eq!(m["avto_jobs{status=\"finished\"}"], 0.0);
    assert_eq!(m["avto_queue_depth"], 0.0);
    assert_eq!(m["avto_workers_live"], 0.0);
    assert_eq!(m["avto_jobs_created_total{blueprint=\"echo_flow\"}"], 0.0);
    assert_eq!(m["avto_dispatch_latency_seconds_count"], 0.0);
    assert!(!text.contains("avto_history_"), "history metrics only when history is on");

    // A task no worker can take: queue depth 1, one job waiting.
    let waiting = c.create("/api/v1/jobs/echo", json!({"n": 0})).await;
    c.wait_for(&waiting, &["waiting_for_worker"], Duration::from_secs(5)).await;
    let approval = c.create("/api/v1/jobs/approval", json!({})).await;
    c.wait_for(&approval, &["waiting_for_human"], Duration::from_secs(5)).await;
    let (_, m) = scrape(&s.base).await;
    assert_eq!(m["avto_queue_depth"], 1.0);
    assert_eq!(m["avto_jobs{status=\"waiting_for_worker\"}"], 1.0);
    assert_eq!(m["avto_jobs{status=\"waiting_for_human\"}"], 1.0);
    assert_eq!(m["avto_jobs_created_total{blueprint=\"echo_flow\"}"], 1.0);
    assert_eq!(m["avto_jobs_created_total{blueprint=\"approval_flow\"}"], 1.0);

    // A worker arrives (the parked task has waited at least 50 ms by then): it takes the parked
    // task and two more.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _stop = start_worker(&s.base, "metrics-worker");
    wait_workers(&s, 1).await;
    let mut ids = vec![waiting];
    for n in 1..=2 {
        ids.push(c.create("/api/v1/jobs/echo", json!({"n": n})).await);
    }
    for id in &ids {
        assert_eq!(c.wait_terminal(id, Duration::from_secs(20)).await["status"], "finished");
    }
    c.post(&format!("/api/v1/jobs/{approval}/cancel"), &json!({})).await;
    let (text, m) = scrape(&s.base).await;
    assert_eq!(m["avto_workers_live"], 1.0);
    assert_eq!(m["avto_queue_depth"], 0.0);
    assert_eq!(m["avto_jobs{status=\"finished\"}"], 3.0);
    assert_eq!(m["avto_jobs{status=\"cancelled\"}"], 1.0);
    assert_eq!(m["avto_jobs{status=\"waiting_for_worker\"}"], 0.0);
    assert_eq!(m["avto_jobs_created_total{blueprint=\"echo_flow\"}"], 3.0);
    assert_eq!(m["avto_jobs_ended_total{blueprint=\"echo_flow\",status=\"finished\"}"], 3.0);
    assert_eq!(m["avto_jobs_ended_total{blueprint=\"approval_flow\",status=\"cancelled\"}"], 1.0);

    // Histograms: one dispatch per echo job; cumulative buckets ending at the count.
    assert_eq!(m["avto_dispatch_latency_seconds_count"], 3.0);
    assert_eq!(m["avto_dispatch_latency_seconds_bucket{le=\"+Inf\"}"], 3.0);
    assert!(m["avto_dispatch_latency_seconds_sum"] > 0.0);
    // The parked task waited for the worker: at least one pick-up slower than the others.
    assert!(m["avto_dispatch_latency_seconds_bucket{le=\"0.005\"}"] < 3.0, "{text}");
    assert_eq!(m["avto_job_duration_seconds_count{blueprint=\"echo_flow\"}"], 3.0);
    assert_eq!(m["avto_job_duration_seconds_count{blueprint=\"approval_flow\"}"], 1.0);
    let buckets: Vec<f64> = m
        .iter()
        .filter(|(k, _)| k.starts_with("avto_job_duration_seconds_bucket{blueprint=\"echo_flow\""))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(buckets.len(), avto::server::DURATION_BUCKETS.len() + 1);
    let mut sorted = buckets.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(sorted.last(), Some(&3.0));
    for window in
        text.lines().filter(|l| l.starts_with("avto_dispatch_latency_seconds_bucket")).collect::<Vec<_>>().windows(2)
    {
        let v = |l: &str| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap();
        assert!(v(window[0]) <= v(window[1]), "buckets are cumulative: {window:?}");
    }
}

#[tokio::test]
async fn history_writer_metrics() {
    let s = Server::with_builder(
        Orchestrator::builder()
            .blueprint(approval_flow::blueprint())
            .config(test_config())
            .history(Arc::new(MemoryHistory::new())),
    )
    .await;
    let (core, base, c) = (s.core.clone(), s.base.clone(), s.client());
    let id = c.create("/api/v1/jobs/approval", json!({})).await;
    c.wait_for(&id, &["waiting_for_human"], Duration::from_secs(5)).await;
    assert!(core.history().unwrap().flush(Duration::from_secs(5)).await);
    let (_, m) = scrape(&base).await;
    // job_created, state_started, approval_requested, state_finished
    assert_eq!(m["avto_history_events_written_total"], 4.0);
    assert_eq!(m["avto_history_events_dropped_total"], 0.0);
    assert_eq!(m["avto_history_events_failed_total"], 0.0);
    assert_eq!(m["avto_history_queue_depth"], 0.0);
    drop(s);
}

/// Issue #14 item 7 (spec 99): the runtime's scheduling delay is sampled every second and shown
/// as a gauge; on an idle test server a 1 s sleep ends well within a second of when it should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_scheduling_delay_is_sampled() {
    let s = Server::start([echo_flow::blueprint()]).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (text, samples) = scrape(&s.base).await;
    assert!(text.contains("# TYPE avto_runtime_scheduling_delay_seconds gauge"), "{text}");
    let delay = samples["avto_runtime_scheduling_delay_seconds"];
    // A sleep never ends early and the timer rounds up to the next millisecond, so a taken sample
    // is above 0 (the gauge starts at 0 before the first one).
    assert!(delay > 0.0 && delay < 1.0, "scheduling delay {delay} s: no sample taken, or a starved runtime");
}
