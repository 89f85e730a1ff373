//! Job webhooks: retried with backoff (`WEBHOOK_RETRY_BASE_SECONDS`, here 0.1 s) up to 3 attempts; a 4xx other
//! than 429 is not retried; a failing receiver never affects the job. Non-public targets are refused
//! unless `WEBHOOK_ALLOW_PRIVATE` (the harness allows them: these receivers listen on 127.0.0.1), at
//! creation and at delivery; logs mask a URL's credentials.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avto::prelude::*;
use avto_tests::{free_port, serve_http, test_config_with, Server};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

#[avto::blueprint(name = "quick_flow", api_version = "v1", api_endpoint = "jobs/quick")]
mod quick_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("done");
    }

    #[handler(state = "done", end)]
    async fn done() {}
}

/// A receiver answering `statuses[i]` to the i-th call (the last one afterwards); records bodies and times.
#[derive(Clone, Default)]
struct Receiver {
    calls: Arc<Mutex<Vec<(Instant, Value)>>>,
    statuses: Arc<Vec<u16>>,
}

async fn receive(State(r): State<Receiver>, Json(body): Json<Value>) -> StatusCode {
    let mut calls = r.calls.lock().unwrap();
    calls.push((Instant::now(), body));
    let i = (calls.len() - 1).min(r.statuses.len() - 1);
    StatusCode::from_u16(r.statuses[i]).unwrap()
}

async fn receiver(statuses: &[u16]) -> (String, Receiver) {
    let r = Receiver { calls: Default::default(), statuses: Arc::new(statuses.to_vec()) };
    let app = Router::new().route("/hook", post(receive)).with_state(r.clone());
    (format!("http://{}/hook", serve_http(app).await), r)
}

async fn server() -> Server {
    Server::with_config([quick_flow::blueprint()], test_config_with(&[("WEBHOOK_RETRY_BASE_SECONDS", "0.1")])).await
}

async fn run_job(s: &Server, url: &str) -> String {
    let (status, body) =
        s.client().post("/api/v1/jobs/quick", &json!({"initial_data": {"n": 1}, "webhook_url": url})).await;
    assert_eq!(status, 202, "{body}");
    let id = body["job_id"].as_str().unwrap().to_owned();
    let job = s.client().wait_terminal(&id, Duration::from_secs(10)).await;
    assert_eq!(job["status"], "finished", "the webhook never affects the job: {job}");
    id
}

async fn calls_after(r: &Receiver, wait: Duration) -> Vec<(Instant, Value)> {
    tokio::time::sleep(wait).await;
    r.calls.lock().unwrap().clone()
}

#[tokio::test]
async fn retried_until_delivered() {
    let s = server().await;
    let (url, r) = receiver(&[500, 500, 200]).await;
    let id = run_job(&s, &url).await;
    let calls = calls_after(&r, Duration::from_millis(1500)).await;
    assert_eq!(calls.len(), 3, "500, 500, then 200: three deliveries");
    for (_, body) in &calls {
        assert_eq!(body["event"], "job_finished");
        assert_eq!(body["job_id"], id.as_str());
        assert_eq!(body["status"], "finished");
    }
    // Backoff: 0.1 s, then 0.2 s.
    assert!(calls[1].0 - calls[0].0 >= Duration::from_millis(90), "first retry after the base delay");
    assert!(calls[2].0 - calls[1].0 >= Duration::from_millis(190), "second retry after twice the base delay");
    assert_eq!(s.client().job(&id).await["status"], "finished");
}

#[tokio::test]
async fn always_failing_receiver_gets_three_attempts() {
    let s = server().await;
    let (url, r) = receiver(&[503]).await;
    run_job(&s, &url).await;
    let calls = calls_after(&r, Duration::from_millis(2000)).await;
    assert_eq!(calls.len(), 3, "exactly 3 attempts");
}

#[tokio::test]
async fn too_many_requests_is_retried_other_client_errors_are_not() {
    let s = server().await;
    let (url, r) = receiver(&[404]).await;
    run_job(&s, &url).await;
    let calls = calls_after(&r, Duration::from_millis(1000)).await;
    assert_eq!(calls.len(), 1, "a 4xx is not retried");

    let (url, r) = receiver(&[429, 200]).await;
    run_job(&s, &url).await;
    let calls = calls_after(&r, Duration::from_millis(1000)).await;
    assert_eq!(calls.len(), 2, "429 is retried");
}

#[tokio::test]
async fn unreachable_receiver_does_not_affect_the_job() {
    let s = server().await;
    // A port with nothing listening: connection refused on every attempt.
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    run_job(&s, &url).await;
    let id = run_job(&s, &url).await;
    assert_eq!(s.client().job(&id).await["status"], "finished");
}

async fn server_with(vars: &[(&str, &str)]) -> Server {
    // The first setting of a name wins: `vars`, then the short retry base of this file.
    let mut all = vars.to_vec();
    all.push(("WEBHOOK_RETRY_BASE_SECONDS", "0.1"));
    Server::with_config([quick_flow::blueprint()], test_config_with(&all)).await
}

/// Waits (bounded) until `pred` holds for the sender's counters.
async fn wait_counts(s: &Server, what: &str, pred: impl Fn(&avto::server::WebhookCounts) -> bool) {
    for _ in 0..200 {
        if pred(&s.core.webhooks().counts()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: {:?}", s.core.webhooks().counts());
}

#[tokio::test]
async fn non_public_targets_are_refused_at_creation() {
    let s = server_with(&[("WEBHOOK_ALLOW_PRIVATE", "false")]).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://0.0.0.0:9/hook",
        "http://2130706433:9/hook",
        "http://0x7f.1:9/hook",
        "http://0177.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.1/hook",
        "http://[::ffff:127.0.0.1]:9/hook",
        "http://[fe80::1]/hook",
        "http://[fd00::1]/hook",
        "http://224.0.0.1/hook",
        "http://user:pw@localhost:9/hook",
    ] {
        let (status, body) =
            s.client().post("/api/v1/jobs/quick", &json!({"initial_data": {}, "webhook_url": url})).await;
        assert_eq!(status, 400, "{url}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("webhook_url") && error.contains("WEBHOOK_ALLOW_PRIVATE"), "{url}: {error}");
        assert!(!error.contains("pw@"), "no credentials in the answer: {error}");
    }
    let (_, jobs) = s.client().get("/api/v1/jobs").await;
    assert_eq!(jobs, json!([]), "no job was created");
}

/// A name accepted when the job was created may resolve elsewhere later (DNS rebinding): the sender
/// checks again, at the connection, and a literal address too.
#[tokio::test]
async fn non_public_targets_are_refused_at_delivery() {
    let s = server_with(&[("WEBHOOK_ALLOW_PRIVATE", "false")]).await;
    let (url, r) = receiver(&[200]).await;
    let port = url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/hook").to_owned();
    s.core.webhooks().send("default", url.clone(), json!({"event": "job_finished", "job_id": "literal"}));
    s.core.webhooks().send(
        "default",
        format!("http://localhost:{port}/hook"),
        json!({"event": "job_finished", "job_id": "name"}),
    );
    wait_counts(&s, "both refused", |c| c.refused == 2).await;
    assert_eq!(s.core.webhooks().counts().delivered, 0);
    assert!(r.calls.lock().unwrap().is_empty(), "nothing reached the loopback receiver");

    // The same receiver with WEBHOOK_ALLOW_PRIVATE=true (the harness default): delivered.
    let open = server().await;
    open.core.webhooks().send(
        "default",
        format!("http://localhost:{port}/hook"),
        json!({"event": "job_finished", "job_id": "ok"}),
    );
    wait_counts(&open, "delivered", |c| c.delivered == 1).await;
    assert_eq!(r.calls.lock().unwrap().len(), 1);
}

/// Everything the tests of this file log (a global subscriber, set once).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("avto=debug")
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .try_init()
            .expect("the first subscriber of this test binary");
        logs
    })
    .clone()
}

#[tokio::test]
async fn logs_mask_the_credentials_of_webhook_urls() {
    let logs = captured_logs();
    let s = server().await;
    let (url, r) = receiver(&[500]).await;
    let secret_url = url.replace("http://", "http://hookuser:hooksecret@") + "?token=tok123&plain=1";
    run_job(&s, &secret_url).await;
    // And a receiver that refuses connections: the transport error is logged without the URL.
    let refused_url = format!("http://hookuser:hooksecret@127.0.0.1:{}/hook?token=tok123", free_port());
    run_job(&s, &refused_url).await;
    wait_counts(&s, "gave up", |c| c.failed == 2).await;
    assert_eq!(r.calls.lock().unwrap().len(), 3);
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(text.contains("webhook failed") && text.contains("***@127.0.0.1"), "the failures are logged: {text}");
    assert!(text.contains("Connection refused") || text.contains("connect"), "with their cause: {text}");
    for secret in ["hookuser", "hooksecret", "tok123"] {
        assert!(!text.contains(secret), "`{secret}` in the logs: {text}");
    }
}

/// A receiver that accepts connections and never answers; counts the connections.
async fn black_hole() -> (String, Arc<Mutex<Vec<tokio::net::TcpStream>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            keep.lock().unwrap().push(socket);
        }
    });
    (url, held)
}

async fn wait_calls(r: &Receiver, n: usize, within: Duration, what: &str) {
    let started = Instant::now();
    while r.calls.lock().unwrap().len() < n {
        assert!(started.elapsed() < within, "{what}: {} of {n} calls after {within:?}", r.calls.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates `n` jobs of the client with `token`, each with `url` as its webhook (they end at once).
async fn jobs_with_webhook(s: &Server, token: &str, url: &str, n: usize) {
    let c = s.client().with_token(token);
    for i in 0..n {
        let (status, body) = c.post("/api/v1/jobs/quick", &json!({"initial_data": {"i": i}, "webhook_url": url})).await;
        assert_eq!(status, 202, "{body}");
    }
}

/// Two clients, `alpha-token` and `beta-token`, plus `vars`.
async fn two_client_server(name: &str, vars: &[(&str, &str)]) -> (Server, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("avto-webhooks-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let clients = dir.join("clients.toml");
    std::fs::write(&clients, "[alpha]\ntoken = \"alpha-token\"\n\n[beta]\ntoken = \"beta-token\"\n").unwrap();
    let mut all = vec![("CLIENTS_CONFIG_PATH", clients.to_str().unwrap())];
    all.extend_from_slice(vars);
    let s = Server::with_config([quick_flow::blueprint()], test_config_with(&all)).await;
    (s, dir)
}

/// 40 of one client's webhooks hang on a receiver that never answers (each attempt up to 30 s):
/// another client's webhook still goes out at once (it waited for the hanging ones before): the
/// hanging client holds at most `WEBHOOK_MAX_PER_CLIENT` (16) of the 32 slots.
#[tokio::test]
async fn a_black_hole_receiver_of_one_client_does_not_delay_another_clients_webhook() {
    let (s, dir) = two_client_server("black-hole", &[("WEBHOOK_TIMEOUT_SECONDS", "30")]).await;
    let (hole, held) = black_hole().await;
    jobs_with_webhook(&s, "alpha-token", &hole, 40).await;
    let started = Instant::now();
    while held.lock().unwrap().len() < 16 {
        assert!(started.elapsed() < Duration::from_secs(10), "the black hole gets its connections");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (url, r) = receiver(&[200]).await;
    jobs_with_webhook(&s, "beta-token", &url, 1).await;
    // Far below one black-hole attempt (30 s): beta's webhook is not queued behind alpha's.
    wait_calls(&r, 1, Duration::from_secs(8), "beta's webhook while alpha's hang").await;
    assert!(held.lock().unwrap().len() <= 16, "alpha holds at most WEBHOOK_MAX_PER_CLIENT (16) attempts at once");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A webhook waiting to retry holds no slot: with 40 webhooks failing and waiting 30 s for their
/// retry, every first attempt still happens at once (32 slots held through the waits before).
#[tokio::test]
async fn retries_wait_without_holding_a_slot() {
    let s = server_with(&[
        ("WEBHOOK_RETRY_BASE_SECONDS", "30"),
        ("WEBHOOK_MAX_PER_CLIENT", "40"),
        ("WEBHOOK_MAX_PER_HOST", "40"),
    ])
    .await;
    let (url, r) = receiver(&[503]).await;
    jobs_with_webhook(&s, avto_tests::CLIENT_TOKEN, &url, 40).await;
    wait_calls(&r, 40, Duration::from_secs(8), "first attempts of all 40 webhooks").await;
}

/// `WEBHOOK_TIMEOUT_SECONDS` bounds each attempt: a receiver that never answers costs 3 attempts
/// of 1 s, then the webhook gives up.
#[tokio::test]
async fn each_attempt_is_bounded_by_the_webhook_timeout() {
    let s = server_with(&[("WEBHOOK_TIMEOUT_SECONDS", "1")]).await;
    let (hole, held) = black_hole().await;
    jobs_with_webhook(&s, avto_tests::CLIENT_TOKEN, &hole, 1).await;
    let started = Instant::now();
    while s.core.webhooks().counts().failed < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "gave up after 3 attempts: {:?}",
            s.core.webhooks().counts()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(held.lock().unwrap().len(), 3, "three attempts");
}

/// A receiver that, on each webhook, reads the job back through the client API (as a user's
/// receiver would: "the job finished, fetch its result") and records the status it saw.
#[derive(Clone)]
struct ReadBack {
    api: avto_tests::ApiClient,
    seen: Arc<Mutex<Vec<(Value, Value)>>>,
}

async fn read_back(State(r): State<ReadBack>, Json(body): Json<Value>) -> StatusCode {
    let id = body["job_id"].as_str().unwrap_or_default().to_owned();
    let (_, job) = r.api.get(&format!("/api/v1/jobs/{id}")).await;
    r.seen.lock().unwrap().push((body, job));
    StatusCode::OK
}

/// Issue #13 item 3: a webhook is an after-commit effect. Its receiver reads the job back at
/// once and finds it terminal, with the status the webhook announced, on Redis (where the job
/// is saved by the commit, not shared in memory) and in memory alike.
#[tokio::test]
async fn the_webhook_receiver_reads_the_job_back_terminal() {
    let redis = avto_tests::RedisPrefix::new();
    let config = || test_config_with(&[("WEBHOOK_RETRY_BASE_SECONDS", "0.1")]);
    let on_redis = Server::with_redis([quick_flow::blueprint()], &redis.url, &redis.prefix, config()).await;
    let in_memory = Server::with_config([quick_flow::blueprint()], config()).await;
    for (backend, s) in [("redis", &on_redis), ("memory", &in_memory)] {
        let r = ReadBack { api: s.client(), seen: Default::default() };
        let app = Router::new().route("/hook", post(read_back)).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(run_job(s, &url).await);
        }
        let started = Instant::now();
        while r.seen.lock().unwrap().len() < ids.len() {
            assert!(started.elapsed() < Duration::from_secs(10), "{backend}: webhooks did not arrive");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (hook, job) in r.seen.lock().unwrap().iter() {
            assert_eq!(hook["status"], "finished", "{backend}: {hook}");
            assert_eq!(job["status"], hook["status"], "{backend}: the receiver read {job} after {hook}");
            assert_eq!(job["id"], hook["job_id"], "{backend}: {job}");
        }
    }
}

/// A receiver that keeps each call's headers and raw body, answering `statuses[i]` to the i-th.
#[derive(Clone, Default)]
struct RawReceiver {
    calls: Arc<Mutex<Vec<(axum::http::HeaderMap, axum::body::Bytes)>>>,
    statuses: Arc<Vec<u16>>,
}

async fn raw_receive(
    State(r): State<RawReceiver>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let mut calls = r.calls.lock().unwrap();
    calls.push((headers, body));
    let i = (calls.len() - 1).min(r.statuses.len() - 1);
    StatusCode::from_u16(r.statuses[i]).unwrap()
}

async fn raw_receiver(statuses: &[u16]) -> (String, RawReceiver) {
    let r = RawReceiver { calls: Default::default(), statuses: Arc::new(statuses.to_vec()) };
    let app = Router::new().route("/hook", post(raw_receive)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, r)
}

fn header<'h>(h: &'h axum::http::HeaderMap, name: &str) -> &'h str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// Issue #14 item 4: each webhook carries an event id (the same on its retries, for
/// deduplication) and, with `WEBHOOK_SECRET`, an HMAC-SHA256 signature over
/// `{X-Avto-Timestamp}.{body}` that a receiver can check; the body has the spec's fields.
#[tokio::test]
async fn webhooks_carry_an_event_id_and_a_signature_receivers_can_verify() {
    const SECRET: &str = "webhook-test-secret";
    let s = server_with(&[("WEBHOOK_SECRET", SECRET)]).await;
    let (url, r) = raw_receiver(&[500, 200]).await;
    let id = run_job(&s, &url).await;
    let started = Instant::now();
    while r.calls.lock().unwrap().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "the retry did not arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = r.calls.lock().unwrap().clone();
    let event_ids: Vec<&str> = calls.iter().map(|(h, _)| header(h, "x-avto-event-id")).collect();
    assert!(uuid::Uuid::parse_str(event_ids[0]).is_ok(), "{event_ids:?}");
    assert_eq!(event_ids[0], event_ids[1], "a retry carries the same event id");
    for (headers, body) in &calls {
        let timestamp = header(headers, "x-avto-timestamp");
        let age = avto_tests::unix_now() - timestamp.parse::<i64>().expect("a Unix timestamp");
        assert!((0..30).contains(&age), "timestamp {timestamp}");
        let mut message = format!("{timestamp}.").into_bytes();
        message.extend_from_slice(body);
        let expected = format!("sha256={}", avto::protocol::sign::hmac_sha256_hex(SECRET.as_bytes(), &message));
        assert_eq!(header(headers, "x-avto-signature"), expected, "the signature verifies");
        let mut forged = message.clone();
        forged.extend_from_slice(b" ");
        let other = format!("sha256={}", avto::protocol::sign::hmac_sha256_hex(SECRET.as_bytes(), &forged));
        assert_ne!(header(headers, "x-avto-signature"), other, "a changed body does not verify");
        let body: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(body["event"], "job_finished");
        assert_eq!(body["job_id"], id.as_str());
        for field in ["error", "metadata", "timestamp", "result", "status"] {
            assert!(body.as_object().unwrap().contains_key(field), "{field} in {body}");
        }
        assert!(body["timestamp"].as_f64().unwrap() > 1.7e9, "{body}");
    }

    // Without a secret: an event id and a timestamp, no signature.
    let plain = server().await;
    let (url, r) = raw_receiver(&[200]).await;
    run_job(&plain, &url).await;
    let started = Instant::now();
    while r.calls.lock().unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "the webhook did not arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (headers, _) = r.calls.lock().unwrap()[0].clone();
    assert!(!header(&headers, "x-avto-event-id").is_empty());
    assert!(headers.get("x-avto-signature").is_none());
}

/// Issue #14 item 4 (spec 11.1): an event a worker sends about a job with a `webhook_url` is
/// sent on as a `worker_event:{type}` webhook whose `result` is the event's payload.
#[tokio::test]
async fn worker_events_are_sent_as_worker_event_webhooks() {
    use avto::protocol::sign::MessageKind;
    let s = Server::with_config([avto_tests::blueprints::echo_flow::blueprint()], test_config_with(&[])).await;
    let (url, r) = raw_receiver(&[200]).await;
    let w = avto_tests::RawWorker::new(&s.base, "hook-events", &["echo"]);
    assert_eq!(w.register().await.0, 200);
    let (status, body) = s.client().post("/api/v1/jobs/echo", &json!({"initial_data": {}, "webhook_url": url})).await;
    assert_eq!(status, 202, "{body}");
    let id = body["job_id"].as_str().unwrap().to_owned();
    let (_, task) = w.poll().await;
    let task_id = task["task_id"].as_str().unwrap();
    let event = w.signed(
        json!({"event_id": uuid::Uuid::new_v4().to_string(), "worker_id": w.id, "origin_worker_id": w.id,
               "event_type": "progress", "payload": {"progress": 0.5, "message": "halfway"},
               "target_job_id": id, "origin_task_id": task_id, "target_task_id": task_id, "bubbling_chain": []}),
        MessageKind::Event,
    );
    let (status, answer) = w.send(reqwest::Method::POST, "/_worker/events", Some(&event)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(w.succeed(&task, json!({"ok": true})).await.0, 200);
    let started = Instant::now();
    while r.calls.lock().unwrap().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "webhooks did not arrive: {}",
            r.calls.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bodies: Vec<Value> = r.calls.lock().unwrap().iter().map(|(_, b)| serde_json::from_slice(b).unwrap()).collect();
    let progress = bodies.iter().find(|b| b["event"] == "worker_event:progress").expect("a worker_event webhook");
    assert_eq!(progress["job_id"], id.as_str());
    assert_eq!(progress["result"], json!({"progress": 0.5, "message": "halfway"}));
    assert!(bodies.iter().any(|b| b["event"] == "job_finished"), "{bodies:?}");
}

/// Issue #14 item 4: a job that ended but whose webhook its instance never sent (here: stored
/// terminal straight into the job store, as an instance that died right after the write of the
/// job's end would leave it) is in the outbox; once its claim is old, the watcher sends it, once,
/// and `/metrics` counts it as redelivered and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_sends_what_a_silent_sender_left_in_the_outbox() {
    // A claim of (0.5 + 0.5) x 2 + 0.1 x 4 + 5 = 7.4 s.
    let s = server_with(&[("WEBHOOK_CONNECT_TIMEOUT_SECONDS", "0.5"), ("WEBHOOK_TIMEOUT_SECONDS", "0.5")]).await;
    let (url, r) = raw_receiver(&[200]).await;
    let mut job = avto::Job::new(uuid::Uuid::new_v4().to_string(), "quick_flow", "done", json!({}));
    job.status = avto::JobStatus::Finished;
    job.webhook_url = Some(url);
    let id = job.id.clone();
    let stored_at = Instant::now();
    s.core.jobs().insert(job).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.calls.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the outbox entry was never sent: {:?}", s.core.webhooks().counts());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waited = stored_at.elapsed();
    assert!(waited >= Duration::from_secs(7), "sent only once the claim was old ({waited:?})");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = r.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "sent once");
    let body: Value = serde_json::from_slice(&calls[0].1).unwrap();
    assert_eq!((body["event"].as_str(), body["job_id"].as_str()), (Some("job_finished"), Some(id.as_str())));
    let counts = s.core.webhooks().counts();
    assert_eq!((counts.redelivered, counts.delivered), (1, 1), "{counts:?}");
    let page = reqwest::Client::new()
        .get(s.url("/metrics"))
        .bearer_auth(avto_tests::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in ["avto_webhooks_total{outcome=\"delivered\"} 1", "avto_webhooks_total{outcome=\"redelivered\"} 1"] {
        assert!(page.contains(line), "{line} on the metrics page:\n{page}");
    }
}
