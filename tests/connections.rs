//! Issue #12 item 10: the listener's connection cap (`MAX_CONNECTIONS`), header-read timeout
//! (`HTTP_HEADER_READ_TIMEOUT_SECONDS`) and idle timeout (`HTTP_IDLE_TIMEOUT_SECONDS`), on the
//! plain and on the TLS listener. Every wait is bounded; a connection the server should close
//! but does not makes the bounded read fail the test.

use std::sync::Arc;
use std::time::Duration;

use avto_tests::blueprints::echo_flow;
use avto_tests::certs::{https_client, Ca};
use avto_tests::{test_config_with, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound on how long the server may take to close a connection it should close.
const BOUND: Duration = Duration::from_secs(15);

fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (EOF or reset); what was read. Panics if the
/// connection stays open longer than [`BOUND`].
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(sock: &mut S, what: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(BOUND, async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{what}: the server kept the connection open");
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `/_public/status` until it answers 200 (bounded).
async fn wait_status_ok(http: &reqwest::Client, url: &str) {
    for _ in 0..100 {
        if http.get(url).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not answer 200 again");
}

/// Connections beyond `MAX_CONNECTIONS` are answered 503 and closed at once; once the held
/// connections close, the server answers again.
#[tokio::test]
async fn plain_connection_cap_refuses_with_503() {
    let cfg = test_config_with(&[("MAX_CONNECTIONS", "4")]);
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr(&s)).await.unwrap());
    }
    let mut extra = TcpStream::connect(addr(&s)).await.unwrap();
    let answer = read_until_closed(&mut extra, "a connection over the cap").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("MAX_CONNECTIONS"), "{answer}");
    let r = reqwest::Client::new().get(s.url("/_public/status")).send().await.unwrap();
    assert_eq!(r.status(), 503, "an HTTP client reads the refusal as 503");
    drop(held);
    wait_status_ok(&reqwest::Client::new(), &s.url("/_public/status")).await;
}

/// A request head sent a byte at a time (slowloris) is cut after the header-read timeout.
#[tokio::test]
async fn plain_slow_headers_are_cut() {
    let cfg = test_config_with(&[("HTTP_HEADER_READ_TIMEOUT_SECONDS", "1")]);
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let sock = TcpStream::connect(addr(&s)).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let drip = async move {
        let _ = wr.write_all(b"GET /_public/status HTTP/1.1\r\nHost: x\r\n").await;
        // 150 header lines over 15 s, never the blank line that ends the head.
        for i in 0..150 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if wr.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).await.is_err() {
                break;
            }
        }
    };
    tokio::spawn(drip);
    let answer = read_until_closed(&mut rd, "a slowloris request head").await;
    assert!(!answer.contains("200 OK"), "{answer}");
}

/// A connection that sends nothing is closed after the header-read timeout; a kept-alive
/// connection is closed after the idle timeout; a long poll outlives both.
#[tokio::test]
async fn plain_idle_connections_are_closed_but_long_polls_are_not() {
    let cfg = test_config_with(&[
        ("HTTP_HEADER_READ_TIMEOUT_SECONDS", "1"),
        ("HTTP_IDLE_TIMEOUT_SECONDS", "1"),
        ("WORKER_POLL_TIMEOUT_SECONDS", "3"),
    ]);
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let mut silent = TcpStream::connect(addr(&s)).await.unwrap();
    read_until_closed(&mut silent, "a connection that never sends a request").await;

    let mut kept = TcpStream::connect(addr(&s)).await.unwrap();
    kept.write_all(b"GET /_public/status HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answer = read_until_closed(&mut kept, "an idle kept-alive connection").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "answered first: {answer}");

    // A long poll (3 s, past both 1 s timeouts) is answered, not cut.
    let w = avto_tests::RawWorker::new(&s.base, "idle-w", &["echo"]);
    assert_eq!(w.register().await.0, 200);
    let (status, body) = w.poll().await;
    assert_eq!(status, 204, "{body}");
}

fn tls_config(dir: &std::path::Path, ca: &Ca, extra: &[(&str, &str)]) -> avto::server::Config {
    let server = ca.server();
    std::fs::write(dir.join("cert.pem"), &server.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &server.key_pem).unwrap();
    let cert = dir.join("cert.pem").to_string_lossy().into_owned();
    let key = dir.join("key.pem").to_string_lossy().into_owned();
    let mut vars: Vec<(&str, &str)> = vec![("TLS_ENABLED", "true"), ("TLS_CERT_PATH", &cert), ("TLS_KEY_PATH", &key)];
    vars.extend_from_slice(extra);
    test_config_with(&vars)
}

/// The TLS listener has the same cap and timeouts: a connection over the cap is closed, an
/// idle TLS connection is closed.
#[tokio::test]
async fn tls_listener_has_the_cap_and_the_timeouts() {
    let ca = Ca::new();
    let dir = std::env::temp_dir().join(format!("avto-conn-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = tls_config(
        &dir,
        &ca,
        &[("MAX_CONNECTIONS", "2"), ("HTTP_HEADER_READ_TIMEOUT_SECONDS", "1"), ("HTTP_IDLE_TIMEOUT_SECONDS", "1")],
    );
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let status = s.base.replace("http://127.0.0.1", "https://localhost") + "/_public/status";

    // Idle after the handshake: closed by the header-read timeout.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr(&s)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    read_until_closed(&mut tls, "an idle TLS connection").await;

    // Two connections hold the cap (in their handshake): a third is closed without an answer.
    let held = [TcpStream::connect(addr(&s)).await.unwrap(), TcpStream::connect(addr(&s)).await.unwrap()];
    let refused = https_client(&ca, None).get(&status).send().await;
    assert!(refused.is_err(), "a TLS connection over the cap is closed: {refused:?}");
    drop(held);
    wait_status_ok(&https_client(&ca, None), &status).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads until `needle` has arrived (bounded by [`BOUND`]); what was read.
async fn read_until_seen(sock: &mut TcpStream, needle: &str, what: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let seen = tokio::time::timeout(BOUND, async {
        while !String::from_utf8_lossy(&out).contains(needle) {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(seen.is_ok() && text.contains(needle), "{what}: no `{needle}` in time; got {text:?}");
    text
}

/// A body that stalls after its head (10 of 100 announced bytes, then nothing) is answered 408
/// with a JSON error once `HTTP_BODY_READ_TIMEOUT_SECONDS` has passed, on a client route and on
/// a worker route; before, the handler waited for the rest forever, holding the connection.
#[tokio::test]
async fn plain_stalled_bodies_are_answered_408() {
    let cfg = test_config_with(&[("HTTP_BODY_READ_TIMEOUT_SECONDS", "1"), ("HTTP_IDLE_TIMEOUT_SECONDS", "60")]);
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let heads = [
        format!(
            "POST /api/v1/jobs/echo HTTP/1.1\r\nHost: x\r\nX-Client-Token: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
            avto_tests::CLIENT_TOKEN
        ),
        format!(
            "POST /_worker/workers/register HTTP/1.1\r\nHost: x\r\nX-Worker-Token: {}\r\nX-Worker-ID: stall-w\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
            avto_tests::WORKER_TOKEN
        ),
    ];
    for head in heads {
        let mut sock = TcpStream::connect(addr(&s)).await.unwrap();
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(br#"{"initial"#).await.unwrap();
        let answer = read_until_seen(&mut sock, "HTTP_BODY_READ_TIMEOUT_SECONDS", "a stalled body").await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains(r#"{"error":"the request body did not arrive within 1 s"#), "{answer}");
    }
}
