//! How the worker SDK's and the typed client's requests travel ([`Transport`]).
//!
//! A plain `http://` orchestrator is reached through hyper-util's pooled client directly
//! ([`Transport::Direct`]) unless the program gave its own `reqwest::Client`
//! ([`WorkerBuilder::http_client`](crate::worker::WorkerBuilder::http_client),
//! [`Client::with_http`](crate::client::Client::with_http): proxies, certificates): reqwest parses
//! every request's URL twice more on its own (its redirect layer before sending, and the
//! response's URL after), which cost a worker about a tenth of its CPU per task and the bench's
//! client about a seventh of a create (BENCHMARKS.md). The direct client does what the default
//! reqwest clients did: HTTP/1.1 with pooled keep-alive connections, `TCP_NODELAY`, no proxy, no
//! redirects followed, a user agent (`avto-worker/VERSION`, `avto-client/VERSION`), and the
//! request's timeout over the whole exchange (connecting, sending, and reading the answer).
//! `https://` orchestrators and one whose URL carries a user and password (reqwest sends them as
//! Basic authentication) go through reqwest ([`Transport::Reqwest`]).

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The user agent of the worker SDK's requests.
#[cfg(feature = "worker")]
pub(crate) const AGENT_WORKER: &str = concat!("avto-worker/", env!("CARGO_PKG_VERSION"));
/// The user agent of the typed client's requests (through the direct client).
#[cfg(feature = "client")]
pub(crate) const AGENT_CLIENT: &str = concat!("avto-client/", env!("CARGO_PKG_VERSION"));

/// How long an unused connection to an orchestrator is kept (as reqwest's default).
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The most of an answer the direct client reads: far above any poll batch or page an
/// orchestrator sends (each task and job is bounded by its body limits), yet a bound on what a
/// broken or hostile one can make a worker or a client hold.
pub(crate) const ANSWER_LIMIT: usize = 256 * 1024 * 1024;

/// The way to one orchestrator (see the module docs).
#[derive(Clone, Debug)]
pub(crate) enum Transport {
    Reqwest(reqwest::Client),
    /// The client, the most of an answer it reads ([`ANSWER_LIMIT`]), and the user agent.
    Direct {
        client: Client<HttpConnector, Full<Bytes>>,
        limit: usize,
        agent: &'static str,
    },
}

/// What an orchestrator answered: the status, the headers, and the body (or why it could not be
/// read).
pub(crate) struct Answer {
    pub(crate) status: hyper::StatusCode,
    /// Read by the worker SDK (the protocol version, `Retry-After`).
    #[cfg_attr(not(feature = "worker"), allow(dead_code))]
    pub(crate) headers: HeaderMap,
    pub(crate) body: Result<String, TransportError>,
}

impl Answer {
    /// A reqwest response read whole: its status, headers and body.
    pub(crate) async fn read(mut resp: reqwest::Response) -> Answer {
        let (status, headers) = (resp.status(), std::mem::take(resp.headers_mut()));
        let body = resp.text().await.map_err(TransportError::from);
        Answer { status, headers, body }
    }

    /// A header as text (`None`: absent, or not visible ASCII).
    #[cfg_attr(not(feature = "worker"), allow(dead_code))]
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a request to an orchestrator got no answer, or its answer could not be read: connection
/// refused or reset, DNS, TLS, the request's timeout, or an answer beyond the client's limit.
/// Through reqwest (`https://`, or a `reqwest::Client` the program gave) its
/// [`source`](std::error::Error::source) is the `reqwest::Error`.
#[derive(Debug)]
pub struct TransportError(Kind);

#[derive(Debug)]
enum Kind {
    Reqwest(reqwest::Error),
    /// The direct client: connecting or exchanging failed.
    Direct(hyper_util::client::legacy::Error),
    /// The direct client: the answer's body failed, or was longer than its limit.
    Body(Box<dyn std::error::Error + Send + Sync>),
    /// The direct client: no answer within the request's timeout.
    TimedOut(Duration),
    /// The direct client: the request could not be made (a URL that is not one).
    Request(hyper::http::Error),
}

impl TransportError {
    /// The request's timeout ran out.
    pub fn is_timeout(&self) -> bool {
        match &self.0 {
            Kind::Reqwest(e) => e.is_timeout(),
            Kind::TimedOut(_) => true,
            _ => false,
        }
    }

    /// No connection could be made (refused, unreachable, DNS, TLS handshake).
    pub fn is_connect(&self) -> bool {
        match &self.0 {
            Kind::Reqwest(e) => e.is_connect(),
            Kind::Direct(e) => e.is_connect(),
            _ => false,
        }
    }

    /// The exchange failed before an answer arrived (the connection closed or was reset while
    /// the request was sent, or it could not be made at all), not by a timeout.
    pub fn is_request(&self) -> bool {
        match &self.0 {
            Kind::Reqwest(e) => e.is_request() && !e.is_timeout(),
            Kind::Direct(_) | Kind::Request(_) => true,
            _ => false,
        }
    }

    /// The request could not be made at all (an invalid URL or header value): nothing was sent.
    #[cfg(feature = "client")]
    pub(crate) fn is_invalid_request(&self) -> bool {
        match &self.0 {
            Kind::Reqwest(e) => e.is_builder(),
            Kind::Request(_) => true,
            _ => false,
        }
    }

    /// The error to keep as a [`WorkerError`](crate::worker::WorkerError)'s cause: reqwest's
    /// own, so that it still downcasts to `reqwest::Error`; the direct client's as this type.
    #[cfg(feature = "worker")]
    pub(crate) fn into_cause(self) -> crate::worker::Cause {
        match self.0 {
            Kind::Reqwest(e) => crate::worker::Cause::new(e),
            other => crate::worker::Cause::new(TransportError(other)),
        }
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kind::Reqwest(e) => e.fmt(f),
            Kind::Direct(e) => {
                // hyper-util's own text is terse ("client error (Connect)"): add its causes.
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
            Kind::Body(e) => write!(f, "reading the answer: {e}"),
            Kind::TimedOut(t) => write!(f, "operation timed out after {} s", t.as_secs_f64()),
            Kind::Request(e) => write!(f, "invalid request: {e}"),
        }
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            Kind::Reqwest(e) => Some(e),
            Kind::Direct(e) => Some(e),
            Kind::Body(e) => Some(&**e),
            Kind::Request(e) => Some(e),
            Kind::TimedOut(_) => None,
        }
    }
}

impl From<reqwest::Error> for TransportError {
    fn from(e: reqwest::Error) -> Self {
        TransportError(Kind::Reqwest(e))
    }
}

/// Whether the part of a URL after `scheme://` names a user (`user:password@host`).
fn has_userinfo(rest: &str) -> bool {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.contains('@')
}

impl Transport {
    /// The direct client (see the module docs), sending `agent` as its user agent.
    pub(crate) fn direct(agent: &'static str) -> Transport {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(http);
        Transport::Direct { client, limit: ANSWER_LIMIT, agent }
    }

    /// The transport for an orchestrator at `url`: the direct client for `http://` unless the
    /// program gave its own client (`given`) or the URL carries a user and password (which
    /// reqwest sends as Basic authentication), else `reqwest` (the given client, or the default).
    pub(crate) fn for_url(url: &str, given: bool, reqwest: &reqwest::Client, direct: &Transport) -> Transport {
        let plain = url.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")) && !has_userinfo(&url[7..]);
        match plain && !given {
            true => direct.clone(),
            false => Transport::Reqwest(reqwest.clone()),
        }
    }

    /// Sends one request (a JSON body, when given) and reads its answer, all within `timeout`.
    /// `Err`: no answer.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: String,
        headers: &[(&'static str, &str)],
        body: Option<String>,
        timeout: Duration,
    ) -> Result<Answer, TransportError> {
        match self {
            Transport::Reqwest(http) => {
                let mut req = crate::mru::request_to(http, method, url).timeout(timeout);
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                if let Some(b) = body {
                    req = req.header(CONTENT_TYPE, "application/json").body(b);
                }
                Ok(Answer::read(req.send().await?).await)
            }
            Transport::Direct { client, limit, agent } => {
                let mut req = Request::builder().method(method).uri(url).header(USER_AGENT, *agent);
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                let req = match body {
                    Some(b) => req.header(CONTENT_TYPE, "application/json").body(Full::new(Bytes::from(b))),
                    None => req.body(Full::default()),
                }
                .map_err(|e| TransportError(Kind::Request(e)))?;
                let exchange = async {
                    let resp = client.request(req).await.map_err(|e| TransportError(Kind::Direct(e)))?;
                    let (parts, incoming) = resp.into_parts();
                    let body = Limited::new(incoming, *limit)
                        .collect()
                        .await
                        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                        .map_err(|e| TransportError(Kind::Body(e)));
                    Ok(Answer { status: parts.status, headers: parts.headers, body })
                };
                tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(TransportError(Kind::TimedOut(timeout))))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    /// A server that answers each request on a connection with `answer(n)` (n = 0, 1, ... over
    /// all connections) after reading its head and body; it hands back each request's head and
    /// body, and counts the connections.
    pub(crate) async fn server(
        answer: fn(usize) -> Option<String>,
    ) -> (String, Arc<AtomicUsize>, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (conns, served) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let counted = conns.clone();
        tokio::spawn(async move {
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let (served, tx) = (served.clone(), tx.clone());
                tokio::spawn(async move {
                    let mut conn = BufReader::new(conn);
                    loop {
                        let mut head = String::new();
                        loop {
                            let mut line = String::new();
                            if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            head.push_str(&line);
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        let mut body = vec![0u8; len];
                        conn.read_exact(&mut body).await.unwrap();
                        let _ = tx.send((head, String::from_utf8(body).unwrap()));
                        match answer(served.fetch_add(1, Ordering::SeqCst)) {
                            Some(a) => conn.get_mut().write_all(a.as_bytes()).await.unwrap(),
                            None => std::future::pending::<()>().await,
                        }
                    }
                });
            }
        });
        (base, conns, rx)
    }

    pub(crate) fn ok(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{}: 9.9\r\ncontent-length: {}\r\n\r\n{body}",
            crate::protocol::PROTOCOL_VERSION_HEADER,
            body.len()
        )
    }

    #[tokio::test]
    async fn the_direct_client_sends_what_reqwest_sent_and_keeps_its_connection() {
        let (base, conns, mut requests) = server(|n| match n {
            0 => Some(ok(r#"{"a":1}"#)),
            _ => Some("HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\ncontent-length: 2\r\n\r\n{}".into()),
        })
        .await;
        let t = Transport::direct("avto-worker/test");
        let headers = [("X-Worker-Token", "tok")];
        let a = t
            .send(Method::POST, format!("{base}/x?y=1"), &headers, Some("{\"b\":2}".into()), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            (a.status.as_u16(), a.header(crate::protocol::PROTOCOL_VERSION_HEADER), a.body.as_deref().unwrap()),
            (200, Some("9.9"), r#"{"a":1}"#)
        );
        let (head, body) = requests.recv().await.unwrap();
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("post /x?y=1 http/1.1\r\n"), "{head}");
        for line in
            ["user-agent: avto-worker/", "x-worker-token: tok", "content-type: application/json", "host: 127.0.0.1:"]
        {
            assert!(head.contains(line), "{line} in {head}");
        }
        assert_eq!(body, "{\"b\":2}");
        // The second request goes over the same connection.
        let a = t.send(Method::GET, format!("{base}/z"), &headers, None, Duration::from_secs(5)).await.unwrap();
        assert_eq!((a.status.as_u16(), a.header("retry-after")), (429, Some("2")));
        assert!(requests.recv().await.unwrap().0.starts_with("GET /z HTTP/1.1\r\n"));
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_direct_client_gives_up_after_the_timeout() {
        let (base, _, _requests) = server(|_| None).await;
        let started = std::time::Instant::now();
        let err = Transport::direct("avto-client/test")
            .send(Method::GET, format!("{base}/slow"), &[], None, Duration::from_millis(300))
            .await
            .err()
            .expect("no answer");
        assert!(err.is_timeout() && !err.is_connect() && !err.is_request(), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        assert_eq!(err.to_string(), "operation timed out after 0.3 s");
    }

    /// An orchestrator (or whatever answers at its address) cannot make a worker hold an answer
    /// of any size: past the limit the answer is an error, read no further.
    #[tokio::test]
    async fn an_answer_beyond_the_limit_is_refused() {
        let (base, _, _requests) = server(|n| {
            let body = "x".repeat(if n == 0 { 1024 } else { 1025 });
            Some(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()))
        })
        .await;
        let Transport::Direct { client, agent, .. } = Transport::direct("avto-client/test") else { unreachable!() };
        let t = Transport::Direct { client, limit: 1024, agent };
        let a = t.send(Method::GET, format!("{base}/a"), &[], None, Duration::from_secs(5)).await.unwrap();
        assert_eq!(a.body.unwrap().len(), 1024);
        let a = t.send(Method::GET, format!("{base}/b"), &[], None, Duration::from_secs(5)).await.unwrap();
        let err = a.body.expect_err("over the limit");
        assert!(err.to_string().contains("length limit exceeded"), "{err}");
    }

    #[test]
    fn only_plain_http_without_a_given_client_goes_direct() {
        let (reqwest, direct) = (reqwest::Client::new(), Transport::direct("avto-worker/test"));
        let direct_for = |url: &str, given: bool| {
            matches!(Transport::for_url(url, given, &reqwest, &direct), Transport::Direct { .. })
        };
        assert!(direct_for("http://127.0.0.1:8080", false));
        assert!(direct_for("HTTP://orchestrator", false));
        assert!(!direct_for("https://orchestrator", false));
        assert!(!direct_for("http://127.0.0.1:8080", true));
        // Credentials in the URL: reqwest turns them into Basic authentication.
        assert!(!direct_for("http://user:secret@orchestrator:8080", false));
        assert!(direct_for("http://orchestrator:8080/path@x?q=a@b", false));
    }
}
