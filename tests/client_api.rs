//! The client API over HTTP: every endpoint, auth, quotas, isolation, and bad input.

use std::time::Duration;

use avto::server::config::{ClientEntry, Config};
use avto::ClientConfig;
use avto_tests::blueprints::{approval_flow, echo_flow};
use avto_tests::{hook_receiver, test_config, Server, CLIENT_TOKEN};
use serde_json::{json, Value};

async fn server() -> Server {
    Server::start([echo_flow::blueprint(), approval_flow::blueprint()]).await
}

#[tokio::test]
async fn health_is_public() {
    let s = server().await;
    let r = reqwest::get(s.url("/_public/status")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-rxon-version"], "1.0b17");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn create_status_list_cancel() {
    let s = server().await;
    let c = s.client();
    let id = c.create("/api/v1/jobs/echo", json!({"msg": "hi"})).await;
    let (status, compact) = c.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(compact["id"], id.as_str());
    assert_eq!(compact["blueprint_name"], "echo_flow");
    assert_eq!(compact["status"], "waiting_for_worker");
    assert!(compact["waiting_reason"].as_str().unwrap().contains("no live worker offers skill `echo`"), "{compact}");
    assert!(compact.get("initial_data").is_none(), "compact view hides details");
    let detailed = c.job(&id).await;
    assert_eq!(detailed["initial_data"], json!({"msg": "hi"}));
    let (_, only) = c.get(&format!("/api/v1/jobs/{id}?fields=status,initial_data")).await;
    assert_eq!(only, json!({"id": id, "status": "waiting_for_worker", "initial_data": {"msg": "hi"}}));

    let (status, list) = c.get("/api/v1/jobs?limit=10").await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());

    let (status, body) = c.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("cancellation_request_accepted")));
    let job = c.job(&id).await;
    assert_eq!(job["status"], "cancelled");
    let (status, body) = c.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("cancelled"));
}

#[tokio::test]
async fn flat_body_is_initial_data() {
    let s = server().await;
    let c = s.client();
    let (status, body) = c.post("/api/v1/jobs/echo", &json!({"video_url": "s3://b/v.mp4", "webhook_url": null})).await;
    assert_eq!(status, 202);
    let job = c.job(body["job_id"].as_str().unwrap()).await;
    assert_eq!(job["initial_data"], json!({"video_url": "s3://b/v.mp4"}));
}

#[tokio::test]
async fn approvals() {
    let s = server().await;
    let c = s.client();
    let id = c.create("/api/v1/jobs/approval", json!({})).await;
    c.wait_for(&id, &["waiting_for_human"], Duration::from_secs(5)).await;
    let (status, body) = c.post(&format!("/api/v1/jobs/{id}/approval"), &json!({"decision": "maybe"})).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("approved, rejected"), "{body}");
    let (status, body) = c.post(&format!("/api/v1/jobs/{id}/approval"), &json!({})).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("decision is required in body")));
    // The Avtomatika-compatible public webhook route, with the owner's token.
    let (status, body) = c.post(&format!("/_public/webhooks/approval/{id}"), &json!({"decision": "approved"})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("approval_received")));
    let job = c.wait_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!(job["status"], "finished");
    assert_eq!(job["current_state"], "approved");
    let (status, _) = c.post(&format!("/api/v1/jobs/{id}/approval"), &json!({"decision": "approved"})).await;
    assert_eq!(status, 409);

    let id = c.create("/api/v1/jobs/approval", json!({})).await;
    c.wait_for(&id, &["waiting_for_human"], Duration::from_secs(5)).await;
    c.post(&format!("/api/v1/jobs/{id}/approval"), &json!({"decision": "rejected"})).await;
    let job = c.wait_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!((job["status"].as_str(), job["current_state"].as_str()), (Some("failed"), Some("rejected")));
}

#[tokio::test]
async fn graph_blueprints_workers_dashboard() {
    let s = server().await;
    let c = s.client();
    let r = c
        .http
        .get(s.url("/api/v1/blueprints/echo_flow/graph"))
        .header("X-Client-Token", CLIENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/vnd.graphviz"));
    assert_eq!(r.text().await.unwrap(), echo_flow::DOT);
    let (status, body) = c.get("/api/v1/blueprints/nope/graph").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("Blueprint not found")));
    let (_, bps) = c.get("/api/v1/blueprints").await;
    assert_eq!(bps.as_array().unwrap().len(), 2);
    let (status, workers) = c.get("/api/v1/workers").await;
    assert_eq!((status, workers), (200, json!([])));
    c.create("/api/v1/jobs/echo", json!({})).await;
    let (status, dash) = c.get("/api/v1/dashboard").await;
    assert_eq!(status, 200);
    assert_eq!(dash["workers"]["total"], 0);
    assert_eq!(dash["jobs"]["waiting_for_worker"], 1, "{dash}");
}

#[tokio::test]
async fn auth_errors_are_401_json() {
    let s = server().await;
    let r = reqwest::Client::new().get(s.url("/api/v1/jobs")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"error": "Missing X-Client-Token header"}));
    let (status, body) = s.client().with_token("wrong").get("/api/v1/jobs").await;
    assert_eq!((status, body), (401, json!({"error": "Unauthorized: Invalid token"})));
}

fn two_clients(quota: Option<u64>) -> Config {
    let mut cfg = test_config();
    let mk = |name: &str, token: &str, quota| ClientEntry {
        token: token.into(),
        config: ClientConfig { name: name.into(), plan: "free".into(), ..Default::default() },
        quota,
    };
    cfg.clients = vec![mk("alice", "alice-token", quota), mk("bob", "bob-token", None)];
    cfg
}

#[tokio::test]
async fn clients_are_isolated() {
    let s = Server::with_config([echo_flow::blueprint()], two_clients(None)).await;
    let alice = s.client().with_token("alice-token");
    let bob = s.client().with_token("bob-token");
    let id = alice.create("/api/v1/jobs/echo", json!({"secret": 1})).await;
    let (status, body) = bob.get(&format!("/api/v1/jobs/{id}")).await;
    let unknown = bob.get(&format!("/api/v1/jobs/{}", uuid::Uuid::new_v4())).await;
    assert_eq!((status, &body), (404, &unknown.1), "another client's job never leaks: it is as unknown as a random id");
    assert!(body["error"].as_str().unwrap().starts_with("Job not found"), "{body}");
    let (status, _) = bob.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 404);
    let (_, list) = bob.get("/api/v1/jobs").await;
    assert_eq!(list, json!([]));
    let (_, list) = alice.get("/api/v1/jobs").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

/// `monthly_attempts` counts job creations (64 at once: exactly the quota succeed), not reads.
#[tokio::test]
async fn quotas_are_exact_under_concurrency() {
    let s = Server::with_config([echo_flow::blueprint()], two_clients(Some(50))).await;
    let alice = s.client().with_token("alice-token");
    let (status, _) = alice.get("/api/v1/jobs").await;
    assert_eq!(status, 200);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let a = alice.clone();
        tasks.push(tokio::spawn(async move { a.post("/api/v1/jobs/echo", &json!({"initial_data": {}})).await }));
    }
    let mut ok = Vec::new();
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            (202, body) => ok.push(body["job_id"].as_str().unwrap().to_owned()),
            (429, body) => {
                assert!(body["error"].as_str().unwrap().contains("Quota exceeded"), "{body}");
                limited += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((ok.len(), limited), (50, 14));
    // Reads are not creations: the spent quota leaves them alone.
    let (status, list) = alice.get("/api/v1/jobs?limit=100").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 50);
    for id in &ok[..5] {
        assert_eq!(alice.get(&format!("/api/v1/jobs/{id}")).await.0, 200);
    }
    let (status, _) = alice.post("/api/v1/jobs/echo", &json!({"initial_data": {}})).await;
    assert_eq!(status, 429, "creations stay refused");
    let (status, _) = s.client().with_token("bob-token").post("/api/v1/jobs/echo", &json!({})).await;
    assert_eq!(status, 202, "other clients are not affected");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let mut cfg = test_config();
    cfg.rate_limiting_enabled = true;
    cfg.rate_limit = 5;
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let c = s.client();
    for _ in 0..5 {
        assert_eq!(c.get("/api/v1/jobs").await.0, 200);
    }
    let r = c.http.get(s.url("/api/v1/jobs")).header("X-Client-Token", CLIENT_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"error": "Too Many Requests"}));
}

#[tokio::test]
async fn bad_input_gets_clear_4xx_json_and_changes_nothing() {
    let s = server().await;
    let c = s.client();
    let raw = |body: &'static str| {
        c.http
            .post(s.url("/api/v1/jobs/echo"))
            .header("X-Client-Token", CLIENT_TOKEN)
            .header("content-type", "application/json")
            .body(body)
    };
    for (body, needle) in [
        ("{not json", "Invalid JSON body"),
        ("[1,2]", "expected a JSON object, got an array"),
        ("\"x\"", "expected a JSON object, got a string"),
        ("", "the body is empty"),
        (r#"{"initial_data": 5}"#, "`initial_data` must be a JSON object"),
        (r#"{"initial_data": {}, "webhook_url": "ftp://x"}"#, "webhook_url"),
        (r#"{"initial_data": {}, "dispatch_timeout": -3}"#, "dispatch_timeout"),
        (r#"{"initial_data": {}, "result_timeout": "soon"}"#, "result_timeout"),
    ] {
        let r = raw(body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(needle), "{body}: {v}");
    }
    // Oversized bodies: 413 with a JSON error.
    let big = format!(r#"{{"initial_data": {{"x": "{}"}}}}"#, "a".repeat(2 * 1024 * 1024));
    let r =
        c.http.post(s.url("/api/v1/jobs/echo")).header("X-Client-Token", CLIENT_TOKEN).body(big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("MAX_REQUEST_BODY_BYTES"));
    // Unknown blueprint endpoint, unknown / malformed job ids, unknown routes, wrong methods.
    assert_eq!(c.post("/api/v1/jobs/nope", &json!({})).await.0, 404);
    let (status, body) = c.get("/api/v1/jobs/not-a-uuid").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("invalid job id"));
    let (status, body) = c.get(&format!("/api/v1/jobs/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().starts_with("Job not found (or expired"), "{body}");
    let (status, body) = c.get("/api/v1/jobs?limit=ten").await;
    assert_eq!(status, 400, "{body}");
    let r = c.http.delete(s.url("/api/v1/jobs")).header("X-Client-Token", CLIENT_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let r = c.http.get(s.url("/nothing/here")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let (status, body) = c.get("/api/v1/jobs/00000000-0000-0000-0000-000000000000?detailed=perhaps").await;
    assert_eq!(status, 404, "{body}");
    // Nothing was created by any of this.
    let (_, list) = c.get("/api/v1/jobs").await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn many_concurrent_jobs_are_neither_lost_nor_duplicated() {
    let s = server().await;
    let c = s.client();
    // 300 creates, 64 at a time: concurrent enough to race, and not 300 connections opened at
    // once, which on a loaded 2-core machine can outlast the server's 10 s header-read timeout.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in 0..300 {
        let (c, gate) = (c.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = gate.acquire_owned().await.unwrap();
            c.create("/api/v1/jobs/approval", json!({"i": i})).await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        assert!(ids.insert(t.await.unwrap()));
    }
    let mut decided = Vec::new();
    for id in &ids {
        c.wait_for(id, &["waiting_for_human"], Duration::from_secs(10)).await;
        let c = c.clone();
        let id = id.clone();
        decided.push(tokio::spawn(async move {
            let (status, _) = c.post(&format!("/api/v1/jobs/{id}/approval"), &json!({"decision": "approved"})).await;
            assert_eq!(status, 200);
            c.wait_terminal(&id, Duration::from_secs(10)).await["status"].as_str().unwrap().to_owned()
        }));
    }
    for d in decided {
        assert_eq!(d.await.unwrap(), "finished");
    }
    let (_, list) = c.get("/api/v1/jobs?limit=1000").await;
    let listed: std::collections::HashSet<String> =
        list.as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(listed, ids);
}

#[tokio::test]
async fn webhooks_on_terminal_states() {
    let (addr, mut rx) = hook_receiver().await;
    let hook = format!("http://{addr}/hook");

    let s = server().await;
    let c = s.client();
    let (status, body) = c.post("/api/v1/jobs/approval", &json!({"initial_data": {}, "webhook_url": hook})).await;
    assert_eq!(status, 202);
    let id = body["job_id"].as_str().unwrap().to_owned();
    c.wait_for(&id, &["waiting_for_human"], Duration::from_secs(5)).await;
    c.post(&format!("/api/v1/jobs/{id}/approval"), &json!({"decision": "rejected"})).await;
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!(got["event"], "job_failed");
    assert_eq!(got["job_id"], id.as_str());
    assert_eq!(got["status"], "failed");
    assert_eq!(got["state"], "rejected");
}

/// Answers of 500 bytes or more are compressed for clients that accept it (zstd preferred on a
/// tie, else what the client prefers); small answers and clients that accept nothing stay plain.
#[tokio::test]
async fn large_answers_are_compressed() {
    let s = server().await;
    let c = s.client();
    let id = c.create("/api/v1/jobs/approval", json!({"text": "x".repeat(2000)})).await;
    let url = s.url(&format!("/api/v1/jobs/{id}?detailed=true"));
    let get = |accept: Option<&'static str>| {
        let mut r = reqwest::Client::new().get(url.clone()).header("X-Client-Token", CLIENT_TOKEN);
        if let Some(a) = accept {
            r = r.header("Accept-Encoding", a);
        }
        async move {
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["x-rxon-version"], "1.0b17", "the protocol header stays");
            let enc = r.headers().get("content-encoding").map(|v| v.to_str().unwrap().to_owned());
            (enc, r.bytes().await.unwrap().to_vec())
        }
    };
    let (enc, plain) = get(None).await;
    assert_eq!(enc, None);
    let doc: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(doc["initial_data"]["text"].as_str().unwrap().len(), 2000);

    let (enc, body) = get(Some("gzip")).await;
    assert_eq!(enc.as_deref(), Some("gzip"));
    assert!(body.len() < plain.len() / 4, "{} bytes gzipped vs {} plain", body.len(), plain.len());
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out).unwrap();
    assert_eq!(out, plain);

    let (enc, body) = get(Some("gzip, zstd")).await;
    assert_eq!(enc.as_deref(), Some("zstd"), "zstd on a tie");
    assert_eq!(zstd::decode_all(&body[..]).unwrap(), plain);
    let (enc, _) = get(Some("zstd;q=0.5, gzip")).await;
    assert_eq!(enc.as_deref(), Some("gzip"), "the client's preference first");

    // A small answer is not worth it.
    let r = reqwest::Client::new()
        .get(s.url("/_public/status"))
        .header("Accept-Encoding", "gzip, zstd")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

/// Issue #12 item 9: operator routes need the operator credential (`ADMIN_TOKEN`). A client
/// token may not reload worker tokens nor read `/metrics`, and sees only a summary of each worker
/// (never its hostname, addresses or the metadata it registered with).
#[tokio::test]
async fn operator_routes_need_the_admin_token() {
    let s = server().await;
    let c = s.client();
    let w = avto_tests::RawWorker::new(&s.base, "op-w", &["echo"]);
    let mut body = json!({"worker_id": "op-w", "worker_type": "raw", "supported_skills": [{"name": "echo"}],
                          "hostname": "db-host-7", "ip_address": "10.1.2.3",
                          "metadata": {"api_key": "sk-secret"}, "installed_software": {"cuda": "12"}});
    body = w.signed(body, avto::protocol::sign::MessageKind::Registration);
    assert_eq!(w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&body)).await.0, 200);

    // A client sees a summary.
    let (status, list) = c.get("/api/v1/workers").await;
    assert_eq!(status, 200, "{list}");
    let summary = &list[0];
    assert_eq!((summary["worker_id"].as_str(), summary["status"].as_str()), (Some("op-w"), Some("idle")));
    assert_eq!(summary["supported_skills"], json!(["echo"]));
    let text = list.to_string();
    for secret in ["db-host-7", "10.1.2.3", "sk-secret", "cuda"] {
        assert!(!text.contains(secret), "a client sees `{secret}`: {text}");
    }
    // The operator sees the registration.
    let (status, full) = c.admin(reqwest::Method::GET, "/api/v1/workers", None).await;
    assert_eq!(status, 200);
    assert_eq!(full[0]["hostname"], "db-host-7");
    assert_eq!(full[0]["metadata"]["api_key"], "sk-secret");
    assert!(full[0].get("security").is_none(), "never the security block");
    // Anonymous callers see nothing; a wrong operator token is refused.
    let anon = reqwest::get(s.url("/api/v1/workers")).await.unwrap();
    assert_eq!(anon.status(), 401);
    let wrong = reqwest::Client::new().get(s.url("/api/v1/workers")).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 403);

    // /metrics: operator only.
    let anon = reqwest::get(s.url("/metrics")).await.unwrap();
    assert_eq!(anon.status(), 401);
    let r = reqwest::Client::new().get(s.url("/metrics")).header("X-Client-Token", CLIENT_TOKEN).send().await;
    assert_eq!(r.unwrap().status(), 403, "a client token is not the operator credential");
    let r = reqwest::Client::new().get(s.url("/metrics")).bearer_auth(avto_tests::ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::Client::new().get(s.url("/metrics")).header("X-Admin-Token", avto_tests::ADMIN_TOKEN).send();
    assert_eq!(r.await.unwrap().status(), 200, "X-Admin-Token works too");

    // The admin route: a client token is 403.
    let (status, body) = c.post("/api/v1/admin/reload-workers", &json!({})).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("ADMIN_TOKEN"), "{body}");

    // Without ADMIN_TOKEN the operator routes are off.
    let mut cfg = test_config();
    cfg.admin_token = None;
    let off = Server::with_config([echo_flow::blueprint()], cfg).await;
    let r = reqwest::Client::new().get(off.url("/metrics")).bearer_auth(avto_tests::ADMIN_TOKEN).send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("ADMIN_TOKEN is not set"));
}

/// Issue #12 item 9: job counts (dashboard, `/metrics`) come from counters kept as jobs change,
/// never from a walk that locks every job: counting answers at once while a job is locked.
#[tokio::test]
async fn job_counts_do_not_walk_or_lock_jobs() {
    use futures::FutureExt as _;
    let s = server().await;
    let c = s.client();
    let a = c.create("/api/v1/jobs/approval", json!({})).await;
    c.wait_for(&a, &["waiting_for_human"], Duration::from_secs(5)).await;
    let b = c.create("/api/v1/jobs/echo", json!({})).await;
    c.wait_for(&b, &["waiting_for_worker"], Duration::from_secs(5)).await;
    let guard = s.core.jobs().lock(&a).await.unwrap().unwrap();
    let counts = s.core.jobs().counts(None).now_or_never().expect("counting does not wait for a locked job").unwrap();
    assert_eq!(counts.get(&avto::JobStatus::WaitingForHuman), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&avto::JobStatus::WaitingForWorker), Some(&1), "{counts:?}");
    let mine =
        s.core.jobs().counts(Some("env:CLIENT_TOKEN")).now_or_never().expect("no walk per client either").unwrap();
    assert_eq!(mine.values().sum::<u64>(), 2, "{mine:?}");
    drop(guard);
    // The counts follow status changes.
    c.post(&format!("/api/v1/jobs/{a}/approval"), &json!({"decision": "rejected"})).await;
    c.wait_terminal(&a, Duration::from_secs(5)).await;
    let (_, dash) = c.get("/api/v1/dashboard").await;
    assert_eq!((dash["jobs"]["failed"].as_u64(), dash["jobs"].get("waiting_for_human")), (Some(1), None), "{dash}");
    assert_eq!(dash["jobs"]["waiting_for_worker"], 1, "{dash}");
}

/// Issue #12 item 2: the rate limit of a client is per route template, not per path (random job
/// ids do not escape it), and requests without a valid token are limited by IP address only.
#[tokio::test]
async fn rate_limit_is_per_client_and_route_not_per_path() {
    let cfg = avto_tests::test_config_with(&[("RATE_LIMITING_ENABLED", "true"), ("RATE_LIMIT_LIMIT", "5")]);
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let c = s.client();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(c.get(&format!("/api/v1/jobs/{}", uuid::Uuid::new_v4())).await.0);
    }
    assert_eq!(statuses, [404, 404, 404, 404, 404, 429, 429, 429, 429, 429]);
    // Another route has its own window.
    assert_eq!(c.get("/api/v1/jobs").await.0, 200);
    // Token-less requests with ever new paths share one window: their address.
    let anon = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = anon.get(s.url(&format!("/api/v1/jobs/{}?n={i}", uuid::Uuid::new_v4()))).send().await.unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    // The client is not affected by the anonymous window.
    assert_eq!(c.get("/api/v1/blueprints").await.0, 200);
}

/// Issue #12 item 2: no request data becomes a rate-limit key. Token-less requests with long
/// random paths leave one short key in Redis (the address), not one per path.
#[tokio::test]
async fn anonymous_requests_leave_one_rate_limit_key() {
    let url = std::env::var("AVTO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = format!("avto-test:{}:", uuid::Uuid::new_v4().simple());
    let cfg = avto_tests::test_config_with(&[("RATE_LIMITING_ENABLED", "true"), ("RATE_LIMIT_LIMIT", "1000")]);
    let s = Server::with_redis([echo_flow::blueprint()], &url, &prefix, cfg).await;
    let http = reqwest::Client::new();
    for i in 0..30 {
        let path = format!("/api/v1/jobs/{}-{i}", "x".repeat(2000));
        assert_eq!(http.get(s.url(&path)).send().await.unwrap().status(), 401);
    }
    let conn = avto::storage::redis::RedisConn::open(&url, &prefix).unwrap();
    let mut keys: Vec<String> =
        conn.query(avto::storage::redis::client::cmd("KEYS").arg(format!("{prefix}rl:*"))).await.unwrap();
    keys.sort();
    avto_tests::delete_redis_prefix(&url, &prefix);
    assert_eq!(keys, [format!("{prefix}rl:anon:127.0.0.1")]);
    s.stop().await;
}

/// Issue #12 item 6: jobs are owned by the client's identity, not its name. A job of
/// CLIENT_TOKEN's client `default` is invisible to a clients.toml table `[default]` with its own
/// token served by another instance on the same Redis (the job outlives the configuration that
/// created it): no read, no listing, no cancel, no count.
#[tokio::test]
async fn jobs_are_owned_by_client_identity_not_name() {
    let url = std::env::var("AVTO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = format!("avto-test:{}:", uuid::Uuid::new_v4().simple());
    let a = Server::with_redis([echo_flow::blueprint()], &url, &prefix, test_config()).await;
    let id = a.client().create("/api/v1/jobs/echo", json!({})).await;

    let dir = std::env::temp_dir().join(format!("avto-clients-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("clients.toml");
    std::fs::write(&file, "[default]\ntoken = \"toml-default-token\"\n").unwrap();
    let mut cfg = test_config();
    cfg.clients = avto::server::config::load_clients(&file).unwrap();
    let b = Server::with_redis([echo_flow::blueprint()], &url, &prefix, cfg).await;
    let other = b.client().with_token("toml-default-token");
    assert_eq!(other.get(&format!("/api/v1/jobs/{id}")).await.0, 404);
    assert_eq!(other.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await.0, 404);
    assert_eq!(other.get("/api/v1/jobs").await.1, json!([]));
    let (_, dash) = other.get("/api/v1/dashboard").await;
    assert!(dash["jobs"].get("waiting_for_worker").is_none(), "{dash}");
    // The owner still has it (through either instance).
    assert_eq!(a.client().get(&format!("/api/v1/jobs/{id}")).await.0, 200);
    let (_, mine) = a.client().get("/api/v1/jobs").await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
    a.stop().await;
    b.stop().await;
    avto_tests::delete_redis_prefix(&url, &prefix);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #12 item 11: a file name whose key would pass S3's 1024 bytes (or a segment past 255)
/// is a 400 naming the limit, not a 500 from the store (S3's `KeyTooLongError`, a file system's
/// "file name too long").
#[tokio::test]
async fn too_long_file_names_are_400() {
    let dir = std::env::temp_dir().join(format!("avto-files-{}", uuid::Uuid::new_v4().simple()));
    let s = Server::with_builder(
        avto::server::Orchestrator::builder()
            .blueprint(echo_flow::blueprint())
            .config(test_config())
            .object_store(std::sync::Arc::new(avto::files::LocalObjectStore::new(&dir))),
    )
    .await;
    let (base, c) = (s.base.clone(), s.client());
    let id = c.create("/api/v1/jobs/echo", json!({})).await;
    let put = |name: String| {
        let url = format!("{base}/api/v1/jobs/{id}/files/content/{name}");
        let req = c.http.put(url).header("X-Client-Token", CLIENT_TOKEN).body("data");
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = put("ok.txt".into()).await;
    assert_eq!(status, 200, "{body}");
    let long_key = ["a".repeat(200), "b".repeat(200), "c".repeat(200), "d".repeat(200), "e".repeat(200)].join("/");
    for name in [long_key, "x".repeat(300)] {
        let (status, body) = put(name).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains("1024"), "{body}");
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Retention (`JOB_RETENTION_SECONDS`): a job removed from the store after it ended answers from
/// the history's last snapshot when there is a history, else 404 with a message that says jobs
/// expire (an unknown id gets the same: no state is kept per removed job).
#[tokio::test]
async fn removed_jobs_answer_from_history_or_404() {
    for with_history in [false, true] {
        let config = Config { job_retention: Some(Duration::from_millis(300)), ..two_clients(None) };
        let mut builder = avto::server::Orchestrator::builder().blueprints([approval_flow::blueprint()]).config(config);
        if with_history {
            builder = builder.history(std::sync::Arc::new(avto::history::MemoryHistory::new()));
        }
        let s = Server::with_builder(builder).await;
        let c = s.client().with_token("alice-token");
        let id = c.create("/api/v1/jobs/approval", json!({})).await;
        let (status, body) = c.post(&format!("/api/v1/jobs/{id}/approval"), &json!({"decision": "approved"})).await;
        assert_eq!(status, 200, "{body}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.core.job(&id).await.unwrap().is_some_and(|j| !j.status.is_terminal()) {
            assert!(std::time::Instant::now() < deadline, "the job did not finish");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(c.get(&format!("/api/v1/jobs/{id}")).await.1["status"], "finished", "kept until its retention ends");
        while s.core.job(&id).await.unwrap().is_some() {
            assert!(std::time::Instant::now() < deadline, "the watcher did not remove the finished job");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, list) = c.get("/api/v1/jobs").await;
        assert!(!list.to_string().contains(&id), "gone from the client's list: {list}");
        let (status, body) = c.get(&format!("/api/v1/jobs/{id}")).await;
        if with_history {
            assert_eq!(status, 200, "{body}");
            assert_eq!((body["id"].as_str(), body["status"].as_str()), (Some(id.as_str()), Some("finished")));
            let (status, theirs) = s.client().with_token("bob-token").get(&format!("/api/v1/jobs/{id}")).await;
            assert_eq!(status, 404, "still the owner's only: {theirs}");
        } else {
            assert_eq!(status, 404);
            let error = body["error"].as_str().unwrap();
            assert!(
                error.starts_with("Job not found (or expired") && error.contains("JOB_RETENTION_SECONDS"),
                "{error}"
            );
            let (status, unknown) = c.get(&format!("/api/v1/jobs/{}", uuid::Uuid::new_v4())).await;
            assert_eq!((status, unknown), (404, body), "an unknown id answers the same");
        }
        s.stop().await;
    }
}
