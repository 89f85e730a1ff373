//! The webhook sender's HTTP client: hyper-util's pooled client over a connector whose DNS
//! resolver refuses non-public addresses ([`CheckedResolver`]), HTTP/1.1, `TCP_NODELAY`, no
//! redirects (hyper follows none), no proxy, and with the `tls` feature rustls (ring) with the
//! system's root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` name others).
//!
//! One attempt is one request: a URL's user and password become an `Authorization: Basic`
//! header and leave the request line, the fragment is not sent, and the attempt is bounded by
//! `WEBHOOK_TIMEOUT_SECONDS` up to the response head. The response body is read (at most
//! [`BODY_LIMIT`] bytes, within what is left of that time) only so the connection can serve the
//! next webhook to the same host; what it says does not change the outcome.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use url::Url;

use super::target::{all_public, NonPublicTarget};

/// How much of a receiver's answer is read (to reuse its connection); a longer one is dropped.
const BODY_LIMIT: usize = 64 * 1024;

/// How long an unused connection to a receiver is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector<CheckedResolver>>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector<CheckedResolver>;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The pooled client the sender's attempts share.
pub(super) struct HttpClient {
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
}

/// What the receiver answered, or why there is no answer.
pub(super) enum Sent {
    Answered(StatusCode),
    /// The resolver refused the target (see [`CheckedResolver`]): the reason.
    Refused(String),
    /// No answer within the attempt's time, or a transport error: its text and causes (never
    /// the URL).
    Failed(String),
}

impl HttpClient {
    pub(super) fn new(connect_timeout: Duration, timeout: Duration, allow_private: bool) -> Self {
        let mut http = HttpConnector::new_with_resolver(CheckedResolver { allow_private });
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector(http));
        HttpClient { client, timeout }
    }

    /// `POST url` with a JSON `body` and the `extra` headers.
    pub(super) async fn post_json(&self, url: &Url, body: Bytes, extra: &[(&'static str, &str)]) -> Sent {
        let request = match request(url, body, extra) {
            Ok(r) => r,
            Err(e) => return Sent::Failed(e),
        };
        let deadline = Instant::now() + self.timeout;
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => return Sent::Failed(format!("no response within {} s", self.timeout.as_secs_f64())),
            Ok(Err(e)) => {
                return match refusal(&e) {
                    Some(why) => Sent::Refused(why),
                    None => Sent::Failed(error_chain(&e)),
                }
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let left = deadline.saturating_duration_since(Instant::now());
        // Read to the end so the connection goes back to the pool; dropped (closed) otherwise.
        let _ = tokio::time::timeout(left, Limited::new(response.into_body(), BODY_LIMIT).collect()).await;
        Sent::Answered(status)
    }
}

#[cfg(feature = "tls")]
fn connector(http: HttpConnector<CheckedResolver>) -> Connector {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_provider_and_native_roots(provider.clone()) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no root certificates for https:// webhooks (SSL_CERT_FILE / SSL_CERT_DIR name others); they will fail");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    builder.https_or_http().enable_http1().wrap_connector(http)
}

#[cfg(not(feature = "tls"))]
fn connector(mut http: HttpConnector<CheckedResolver>) -> Connector {
    // Without `tls`, an https:// target fails each attempt ("invalid URL, scheme is not http").
    http.enforce_http(true);
    http
}

/// The request of one attempt. The URL's credentials, if any, are sent as Basic authentication
/// (percent-decoded, as browsers and the earlier sender did), not in the request target.
fn request(url: &Url, body: Bytes, extra: &[(&'static str, &str)]) -> Result<Request<Full<Bytes>>, String> {
    let credentials = !url.username().is_empty() || url.password().is_some();
    let auth = credentials.then(|| basic_auth(url));
    // The usual URL, without credentials or fragment, is its own request target (no copy).
    let uri: Result<Uri, _> = match credentials || url.fragment().is_some() {
        false => url.as_str().parse(),
        true => {
            let mut target = url.clone();
            target.set_fragment(None);
            let _ = target.set_username("");
            let _ = target.set_password(None);
            target.as_str().parse()
        }
    };
    let uri = uri.map_err(|e| format!("the URL is not a valid request target ({e})"))?;
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(auth) = auth {
        builder = builder.header(AUTHORIZATION, auth?);
    }
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body)).map_err(|e| format!("could not build the request ({e})"))
}

fn basic_auth(url: &Url) -> Result<HeaderValue, String> {
    use base64::Engine as _;
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let pair = format!("{}:{}", decode(url.username()), url.password().map(decode).unwrap_or_default());
    let mut value = HeaderValue::try_from(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
        .map_err(|_| "the URL's credentials do not make a header".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

/// The refusal of [`CheckedResolver`] behind a request error, if that is what failed it.
fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<NonPublicTarget>() {
            return Some(r.0.clone());
        }
        source = s.source();
    }
    None
}

/// The error and its causes (`client error (Connect): tcp connect error: Connection refused`);
/// hyper's errors never carry the URL, so no credentials either.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The sender's DNS resolver: the system's (getaddrinfo), refusing names with a non-public
/// address unless `allow_private`. The connector connects to exactly the addresses it returns
/// (an IP literal is not resolved; [`super::target::check_literal`] checks it before).
#[derive(Debug, Clone, Copy)]
pub(super) struct CheckedResolver {
    allow_private: bool,
}

impl tower_service::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
            if !allow_private {
                all_public(host, &addrs).map_err(|why| Box::new(NonPublicTarget(why)) as Error)?;
            }
            Ok(addrs.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_become_basic_auth_and_leave_the_request_target() {
        let url = Url::parse("https://al%20ice:s3cr%3Aet@hooks.example.com:8443/in/x?v=2#frag").unwrap();
        let r = request(&url, Bytes::from_static(b"{}"), &[("x-avto-event-id", "e1")]).unwrap();
        assert_eq!(r.uri().to_string(), "https://hooks.example.com:8443/in/x?v=2");
        // base64("al ice:s3cr:et")
        assert_eq!(r.headers()[AUTHORIZATION], "Basic YWwgaWNlOnMzY3I6ZXQ=");
        assert!(r.headers()[AUTHORIZATION].is_sensitive());
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()["x-avto-event-id"], "e1");

        let plain = request(&Url::parse("http://h.example/p").unwrap(), Bytes::new(), &[]).unwrap();
        assert_eq!(plain.uri().to_string(), "http://h.example/p");
        assert!(plain.headers().get(AUTHORIZATION).is_none());
        let fragment = request(&Url::parse("http://h.example/p?q=1#f").unwrap(), Bytes::new(), &[]).unwrap();
        assert_eq!(fragment.uri().to_string(), "http://h.example/p?q=1");
        assert!(fragment.headers().get(AUTHORIZATION).is_none());
        let user_only = request(&Url::parse("http://u@h.example/p").unwrap(), Bytes::new(), &[]).unwrap();
        assert_eq!(user_only.headers()[AUTHORIZATION], "Basic dTo=");
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_non_public_addresses() {
        let mut strict = CheckedResolver { allow_private: false };
        let name: Name = "localhost".parse().unwrap();
        let e = tower_service::Service::call(&mut strict, name.clone()).await.expect_err("refused");
        assert!(e.downcast_ref::<NonPublicTarget>().is_some(), "{e}");
        let mut open = CheckedResolver { allow_private: true };
        let addrs: Vec<_> = tower_service::Service::call(&mut open, name).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty(), "{addrs:?}");
    }
}
