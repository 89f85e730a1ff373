//! The orchestrator's own HTTPS listener (feature `tls`, `TLS_ENABLED`) with client certificates
//! (`TLS_CA_PATH`), from a throwaway CA: `WORKER_AUTH_MODE=mtls-only` takes the certificate's CN
//! as the worker id and refuses tokens alone; `TLS_REQUIRE_CLIENT_CERT` refuses connections
//! without a certificate; settings that cannot work fail at start-up.

use std::time::Duration;

use avto::protocol::sign::MessageKind;
use avto::worker::{TaskHandle, TaskOutcome};
use avto_tests::blueprints::echo_flow;
use avto_tests::certs::{https_client, Ca};
use avto_tests::{ApiClient, RustWorker, Server};
use serde_json::{json, Value};

/// The orchestrator's own HTTPS listener with client certificates: in `mtls-only` mode a
/// worker is whoever its certificate names, tokens alone are refused, and a certificate for
/// another worker cannot speak for it; a Rust SDK worker with a certificate runs a job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_with_client_certificates() {
    let ca = Ca::new();
    let dir = std::env::temp_dir().join(format!("avto-mtls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let server = ca.server();
    let files = [("cert.pem", &server.cert_pem), ("key.pem", &server.key_pem), ("ca.pem", &ca.cert.pem())];
    for (name, pem) in files {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (cert_path, key_path, ca_path) = (path("cert.pem"), path("key.pem"), path("ca.pem"));
    let tls_vars = |mode: &'static str, require: &'static str| {
        avto_tests::test_config_with(&[
            ("TLS_ENABLED", "true"),
            ("TLS_CERT_PATH", &cert_path),
            ("TLS_KEY_PATH", &key_path),
            ("TLS_CA_PATH", &ca_path),
            ("TLS_REQUIRE_CLIENT_CERT", require),
            ("WORKER_AUTH_MODE", mode),
        ])
    };

    let s = Server::with_config([echo_flow::blueprint()], tls_vars("mtls-only", "false")).await;
    let base = s.base.replace("http://127.0.0.1", "https://localhost");
    let raw = |http: reqwest::Client, id: &str| {
        let mut w = avto_tests::RawWorker::new(&base, id, &["echo"]);
        w.http = http;
        w
    };
    let worker_cert = ca.client("cert-worker");

    // No certificate: the global token alone is refused in mtls-only mode.
    let (status, body) = raw(https_client(&ca, None), "cert-worker").register().await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Invalid authentication method"), "{body}");
    // A certificate for cert-worker cannot register another worker...
    let (status, body) = raw(https_client(&ca, Some(&worker_cert)), "someone-else").register().await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("client certificate is for cert-worker"), "{body}");
    // ...but registers cert-worker, and its messages are still signed with the worker's token.
    let w = raw(https_client(&ca, Some(&worker_cert)), "cert-worker");
    assert_eq!(w.register().await.0, 200);
    let mut forged = w.signed(json!({"worker_id": "cert-worker", "status": "idle"}), MessageKind::Heartbeat);
    forged["status"] = json!("busy");
    let (status, _) = w.send(reqwest::Method::PATCH, "/_worker/workers/cert-worker", Some(&forged)).await;
    assert_eq!(status, 403, "a certificate does not replace the message signature");
    // A certificate from another CA is refused at the handshake.
    let stranger = Ca::new().client("cert-worker");
    let refused = https_client(&ca, Some(&stranger)).get(format!("{base}/_public/status")).send().await;
    assert!(refused.is_err(), "a client certificate from an unknown CA is refused");

    // The Rust SDK with a certificate runs a job end to end over HTTPS.
    let sdk = RustWorker::spawn(
        RustWorker::builder("cert-worker")
            .orchestrator_url(&base)
            .http_client(https_client(&ca, Some(&worker_cert)))
            .task("echo", |p: Value, _t: TaskHandle| async move { TaskOutcome::success(json!({ "echo": p })) }),
    );
    avto_tests::wait_workers(&s, 1).await;
    // The client API over HTTPS (no certificate: clients authenticate with their token).
    let c = ApiClient { http: https_client(&ca, None), base: base.clone(), token: avto_tests::CLIENT_TOKEN.into() };
    let id = c.create("/api/v1/jobs/echo", json!({"over": "https"})).await;
    let job = c.wait_terminal(&id, Duration::from_secs(10)).await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["result"], json!({"over": "https"}));
    sdk.stop().await;
    s.stop().await;

    // TLS_REQUIRE_CLIENT_CERT: no certificate, no connection.
    let s = Server::with_config([echo_flow::blueprint()], tls_vars("mixed", "true")).await;
    let base = s.base.replace("http://127.0.0.1", "https://localhost");
    let without = https_client(&ca, None).get(format!("{base}/_public/status")).send().await;
    assert!(without.is_err(), "a connection without a client certificate is refused");
    let with = https_client(&ca, Some(&worker_cert)).get(format!("{base}/_public/status")).send().await.unwrap();
    assert_eq!(with.status(), 200);
    s.stop().await;

    // Settings that cannot work fail at start-up, naming the variable.
    let bad = |vars: &[(&str, &str)]| {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        avto::server::Config::from_lookup(&|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
            .expect_err("refused")
            .to_string()
    };
    assert!(bad(&[("WORKER_AUTH_MODE", "certs")]).contains("WORKER_AUTH_MODE"));
    assert!(bad(&[("WORKER_AUTH_MODE", "mtls-only")]).contains("TLS_CA_PATH"));
    assert!(bad(&[("TLS_ENABLED", "true")]).contains("TLS_CERT_PATH"));
    assert!(bad(&[
        ("TLS_ENABLED", "true"),
        ("TLS_CERT_PATH", &cert_path),
        ("TLS_KEY_PATH", &key_path),
        ("TLS_REQUIRE_CLIENT_CERT", "true")
    ])
    .contains("TLS_CA_PATH"));
    let _ = std::fs::remove_dir_all(&dir);
}
