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

/// A sample of the page, 0 when the series has none yet.
fn sample(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// Issue #16 item 9 (spec §10.2): security rejections (credentials, signatures, replays), task
/// timeouts and ignored results are counted, with bounded labels. The same on Redis (nonces,
/// timeouts and results go through the store).
async fn refusals_are_counted(s: &Server) {
    use avto::protocol::sign::MessageKind;
    use avto_tests::RawWorker;
    let c = s.client();
    let http = reqwest::Client::new();

    // Clients and the operator.
    let r = http.get(s.url("/api/v1/jobs")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (status, _) = c.with_token("not-a-client").get("/api/v1/jobs").await;
    assert_eq!(status, 401);
    let r = http.get(s.url("/metrics")).bearer_auth("not-the-operator").send().await.unwrap();
    assert_eq!(r.status(), 403);

    // Workers: a wrong token, no token, another worker's id in the body, a bad signature.
    let mut stranger = RawWorker::new(&s.base, "stranger", &["echo"]);
    stranger.token = "not-a-worker-token".into();
    assert_eq!(stranger.register().await.0, 403);
    stranger.token = String::new();
    assert_eq!(stranger.register().await.0, 403);
    let w = RawWorker::new(&s.base, "refusals-worker", &["echo"]);
    assert_eq!(w.register().await.0, 200);
    let spoof = w.signed(json!({"worker_id": "someone-else", "worker_type": "raw"}), MessageKind::Registration);
    assert_eq!(w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&spoof)).await.0, 403);
    let heartbeat = |w: &RawWorker| w.signed(json!({"worker_id": w.id, "status": "idle"}), MessageKind::Heartbeat);
    let path = format!("/_worker/workers/{}", w.id);
    let mut forged = heartbeat(&w);
    forged["security"]["signature"] = json!("0".repeat(64));
    assert_eq!(w.send(reqwest::Method::PATCH, &path, Some(&forged)).await.0, 403);
    // Replays: the same message twice, an old timestamp, none.
    let once = heartbeat(&w);
    assert_eq!(w.send(reqwest::Method::PATCH, &path, Some(&once)).await.0, 200);
    assert_eq!(w.send(reqwest::Method::PATCH, &path, Some(&once)).await.0, 403);
    let mut old = heartbeat(&w);
    old["timestamp"] = json!(avto_tests::unix_now() - 3600);
    assert_eq!(w.send(reqwest::Method::PATCH, &path, Some(&old)).await.0, 403);
    let mut undated = heartbeat(&w);
    undated.as_object_mut().unwrap().remove("timestamp");
    assert_eq!(w.send(reqwest::Method::PATCH, &path, Some(&undated)).await.0, 403);

    // Timeouts: a task nobody takes in time, and one the worker takes but never answers (no
    // retry: the job fails at the first timeout).
    let (status, body) = c.post("/api/v1/jobs/echo", &json!({"initial_data": {"n": 1}, "dispatch_timeout": 0.3})).await;
    assert_eq!(status, 202, "{body}");
    let unclaimed = body["job_id"].as_str().unwrap().to_owned();
    let job = c.wait_terminal(&unclaimed, Duration::from_secs(10)).await;
    assert_eq!(job["status"], "failed", "{job}");
    let (status, body) = c.post("/api/v1/jobs/echo", &json!({"initial_data": {"n": 2}, "result_timeout": 0.3})).await;
    assert_eq!(status, 202, "{body}");
    let silent = body["job_id"].as_str().unwrap().to_owned();
    let mut task = Value::Null;
    for _ in 0..10 {
        let (status, polled) = w.poll().await;
        if status == 200 && polled["job_id"] == silent.as_str() {
            task = polled;
            break;
        }
    }
    assert_eq!(task["job_id"], silent.as_str(), "the worker never got the task");
    let job = c.wait_terminal(&silent, Duration::from_secs(10)).await;
    assert_eq!(job["status"], "failed", "{job}");

    // Ignored results: the late answer to the timed-out task, and one for a job that never existed.
    let (status, late) = w.succeed(&task, json!({})).await;
    assert_eq!((status, late["status"].as_str()), (200, Some("ignored")), "{late}");
    let late_reason = late["reason"].as_str().unwrap().to_owned();
    let phantom = json!({"job_id": "no-such-job", "task_id": "no-such-task"});
    let (status, gone) = w.succeed(&phantom, json!({})).await;
    assert_eq!((status, gone["reason"].as_str()), (200, Some("job_not_found")), "{gone}");

    let (text, m) = scrape(&s.base).await;
    let auth = |role: &str, reason: &str| {
        sample(&m, &format!("avto_security_auth_failures_total{{role=\"{role}\",reason=\"{reason}\"}}"))
    };
    assert_eq!(auth("client", "missing_credentials"), 1.0, "{text}");
    assert_eq!(auth("client", "invalid_token"), 1.0, "{text}");
    assert_eq!(auth("operator", "invalid_token"), 1.0, "{text}");
    assert_eq!(auth("worker", "invalid_token"), 1.0, "{text}");
    assert_eq!(auth("worker", "missing_credentials"), 1.0, "{text}");
    assert_eq!(auth("worker", "worker_id_mismatch"), 1.0, "{text}");
    assert_eq!(auth("worker", "invalid_signature"), 1.0, "{text}");
    let replay = |reason: &str| sample(&m, &format!("avto_security_replay_detected_total{{reason=\"{reason}\"}}"));
    assert_eq!(replay("duplicate"), 1.0, "{text}");
    assert_eq!(replay("expired"), 1.0, "{text}");
    assert_eq!(replay("missing_timestamp"), 1.0, "{text}");
    let timeouts =
        |kind: &str| sample(&m, &format!("avto_jobs_timeouts_total{{blueprint=\"echo_flow\",type=\"{kind}\"}}"));
    assert_eq!(timeouts("dispatch"), 1.0, "{text}");
    assert_eq!(timeouts("execution"), 1.0, "{text}");
    let ignored = |bp: &str, reason: &str| {
        sample(&m, &format!("avto_tasks_ignored_total{{blueprint=\"{bp}\",reason=\"{reason}\"}}"))
    };
    assert_eq!(ignored("echo_flow", &late_reason), 1.0, "{text}");
    assert_eq!(ignored("", "job_not_found"), 1.0, "{text}");
    // Bounded labels: no worker id, token or job id anywhere on the page.
    for chosen in ["stranger", "refusals-worker", "someone-else", "not-a-", &unclaimed, &silent, "no-such-job"] {
        assert!(!text.contains(chosen), "`{chosen}` on the page:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_in_memory() {
    let cfg = avto_tests::test_config_with(&[("JOB_MAX_RETRIES", "0")]);
    refusals_are_counted(&Server::with_config([echo_flow::blueprint()], cfg).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_on_redis() {
    let redis = avto_tests::RedisPrefix::new();
    let cfg = avto_tests::test_config_with(&[("JOB_MAX_RETRIES", "0")]);
    let s = Server::with_redis([echo_flow::blueprint()], &redis.url, &redis.prefix, cfg).await;
    refusals_are_counted(&s).await;
    s.stop().await;
}

/// Issue #16 item 9: rate-limit refusals are counted per scope and route template (never per
/// client, address or worker), on both storages.
async fn rate_limit_refusals_are_counted(s: &Server) {
    use avto_tests::RawWorker;
    let c = s.client();
    let statuses = |path: &'static str, token: &'static str| {
        let c = c.with_token(token);
        async move {
            let mut out = Vec::new();
            for _ in 0..3 {
                out.push(c.get(path).await.0);
            }
            out
        }
    };
    assert_eq!(statuses("/api/v1/jobs", avto_tests::CLIENT_TOKEN).await, [200, 200, 429]);
    assert_eq!(statuses("/api/v1/blueprints", "not-a-client").await, [401, 401, 429]);
    let w = RawWorker::new(&s.base, "limited-worker", &["echo"]);
    assert_eq!(w.register().await.0, 200);
    let mut beats = Vec::new();
    for _ in 0..3 {
        beats.push(w.heartbeat(&[]).await.0);
    }
    assert_eq!(beats, [200, 200, 429]);
    let (text, m) = scrape(&s.base).await;
    let blocked = |scope: &str, path: &str| {
        sample(&m, &format!("avto_ratelimit_blocked_total{{scope=\"{scope}\",path=\"{path}\"}}"))
    };
    assert_eq!(blocked("client", "/api/v1/jobs"), 1.0, "{text}");
    assert_eq!(blocked("ip", "/api/v1/blueprints"), 1.0, "{text}");
    assert_eq!(blocked("worker", "rxon:heartbeat"), 1.0, "{text}");
    assert!(!text.contains("limited-worker") && !text.contains("127.0.0.1"), "{text}");
}

fn rate_limited_config() -> avto::server::Config {
    avto_tests::test_config_with(&[
        ("RATE_LIMITING_ENABLED", "true"),
        ("RATE_LIMIT_LIMIT", "2"),
        ("RATE_LIMIT_HEARTBEAT_LIMIT", "2"),
    ])
}

#[tokio::test]
async fn rate_limit_refusals_are_counted_in_memory() {
    rate_limit_refusals_are_counted(&Server::with_config([echo_flow::blueprint()], rate_limited_config()).await).await;
}

#[tokio::test]
async fn rate_limit_refusals_are_counted_on_redis() {
    let redis = avto_tests::RedisPrefix::new();
    let s = Server::with_redis([echo_flow::blueprint()], &redis.url, &redis.prefix, rate_limited_config()).await;
    rate_limit_refusals_are_counted(&s).await;
    s.stop().await;
}
