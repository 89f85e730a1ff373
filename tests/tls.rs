//! Outgoing TLS (feature `tls`): a Rust worker reaches the orchestrator at an https:// URL (HTTP
//! and the wss:// WebSocket), and the job's webhook goes to an https:// receiver. TLS is
//! terminated by a small proxy in front of each plain listener, with a certificate from a
//! throwaway CA that `SSL_CERT_FILE` names (read by the orchestrator's webhook client and by the
//! worker, as in production with a private CA). The orchestrator's own HTTPS listener:
//! tls_listener.rs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use avto::worker::{TaskHandle, TaskOutcome};
use avto_tests::blueprints::echo_flow;
use avto_tests::certs::Ca;
use avto_tests::{hook_receiver, RustWorker, Server};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Accepts TLS on a free port and relays each connection to `backend` (plain TCP).
async fn tls_proxy(acceptor: TlsAcceptor, backend: SocketAddr) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut plain) = TcpStream::connect(backend).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_webhook_over_https() {
    let ca = Ca::new();
    let server = ca.server();
    let (cert, key) = (server.der, server.key);
    let dir = std::env::temp_dir().join(format!("avto-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    // SAFETY: the only test of this binary sets it before any client that reads it is built.
    std::env::set_var("SSL_CERT_FILE", &ca_file);

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server_config));

    let s = Server::start([echo_flow::blueprint()]).await;
    let orchestrator: SocketAddr = s.base.trim_start_matches("http://").parse().unwrap();
    let https_base = format!("https://localhost:{}", tls_proxy(acceptor.clone(), orchestrator).await);

    let (hook_addr, mut hooks) = hook_receiver().await;
    let hook_url = format!("https://localhost:{}/hook", tls_proxy(acceptor, hook_addr).await);

    // The worker knows the orchestrator only by its https:// URL (and its WebSocket by wss://).
    let worker = RustWorker::start(&https_base, "tls-worker", |b| {
        b.enable_websockets(true)
            .task("echo", |p: Value, _t: TaskHandle| async move { TaskOutcome::success(json!({ "echo": p })) })
    });
    avto_tests::wait_workers(&s, 1).await;

    let c = s.client();
    let (status, created) =
        c.post("/api/v1/jobs/echo", &json!({"initial_data": {"secure": true}, "webhook_url": hook_url})).await;
    assert_eq!(status, 202, "{created}");
    let id = created["job_id"].as_str().unwrap().to_owned();
    let hook = tokio::time::timeout(Duration::from_secs(20), hooks.recv())
        .await
        .expect("the webhook arrives over https")
        .unwrap();
    assert_eq!(hook["job_id"], id.as_str());
    assert_eq!(hook["status"], "finished", "{hook}");
    assert_eq!(hook["result"], json!({"secure": true}), "{hook}");
    let workers = c.workers().await;
    assert!(workers.iter().any(|w| w["worker_id"] == "tls-worker"), "{workers:?}");

    worker.stop().await;
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
