//! A typed client of the orchestrator's client API (feature `client`): create jobs, read them,
//! wait until they end, cancel, approve, list, history, files. It needs no server code, so any
//! program (a web backend, a CLI, a test) can use it against a running orchestrator.
//!
//! ```no_run
//! use std::time::Duration;
//! use avto::client::Client;
//!
//! # async fn demo() -> Result<(), avto::client::ClientError> {
//! let client = Client::new("http://127.0.0.1:8080", "my-client-token");
//! let id = client.create("jobs/simple_flow", serde_json::json!({"n": 1})).await?;
//! let job = client.wait(&id, Duration::from_secs(30)).await?;
//! println!("{} ended {} with {:?}", job.id, job.status, job.result);
//! # Ok(())
//! # }
//! ```
//!
//! Every call is bounded: each request by [`Client::request_timeout`] (default 30 s), each wait
//! by the timeout it is given. Waiting polls the job with a backoff (20 ms doubling up to
//! 500 ms by default, [`Client::poll_interval`]), so it needs no webhook receiver.
//!
//! A plain `http://` orchestrator is reached through a pooled hyper-util client of avto's own
//! (HTTP/1.1 keep-alive, `TCP_NODELAY`, no proxy, no redirects, the request's timeout over the
//! whole exchange, answers of at most 256 MiB, user agent `avto-client/VERSION`): reqwest parses
//! every request's URL twice more on its own, a seventh of a created job's instructions in the
//! bench. `https://` orchestrators, one whose URL carries a user and password, uploads and
//! downloads, and every request once [`Client::with_http`] gives a `reqwest::Client`, go through
//! reqwest; a [`ClientError::Transport`]'s [`TransportError`] has the `reqwest::Error` as its
//! source there.

mod error;
mod types;

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

pub use self::error::{ClientError, StatusCode};
pub use self::types::{HistoryEntry, JobId, JobView, NewJob, Page, UploadUrl, Uploaded};
use crate::blueprint::Blueprint;
pub use crate::transport::TransportError;
use crate::transport::{Answer, Transport};

/// A client of one orchestrator with one client token (`X-Client-Token`). Cheap to clone (the
/// connection pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    /// The way to the orchestrator's API: straight through hyper-util for `http://` (see
    /// `crate::transport`), else `http`.
    transport: Transport,
    /// Uploads, downloads, and every request when the program gave its own client.
    http: reqwest::Client,
    base: String,
    token: String,
    prefix: String,
    version: Option<String>,
    request_timeout: Duration,
    poll_initial: Duration,
    poll_max: Duration,
}

/// What [`Client::create`] creates a job of: a blueprint's `api_endpoint` (`"jobs/simple_flow"`,
/// under the client's prefix and version: `/api/v1/jobs/simple_flow`), a path from the base URL
/// (starting with `/`: `"/api/v2/jobs/x"`), or a [`Blueprint`] (its own endpoint and version).
pub trait Endpoint {
    /// The path of the create-job route under the base URL.
    fn create_path(&self, prefix: &str, version: Option<&str>) -> Result<String, ClientError>;
}

impl Endpoint for str {
    fn create_path(&self, prefix: &str, version: Option<&str>) -> Result<String, ClientError> {
        if self.starts_with('/') {
            return Ok(self.to_owned());
        }
        let endpoint = self.trim_matches('/');
        if endpoint.is_empty() {
            return Err(ClientError::Invalid("empty endpoint".into()));
        }
        Ok(match version {
            Some(v) => format!("{prefix}/{v}/{endpoint}"),
            None => format!("{prefix}/{endpoint}"),
        })
    }
}

impl Endpoint for String {
    fn create_path(&self, prefix: &str, version: Option<&str>) -> Result<String, ClientError> {
        self.as_str().create_path(prefix, version)
    }
}

impl Endpoint for Blueprint {
    fn create_path(&self, prefix: &str, _version: Option<&str>) -> Result<String, ClientError> {
        let path = Blueprint::create_path(self)
            .ok_or_else(|| ClientError::Invalid(format!("blueprint `{}` has no api_endpoint", self.name())))?;
        Ok(format!("{prefix}/{path}"))
    }
}

impl<T: Endpoint + ?Sized> Endpoint for &T {
    fn create_path(&self, prefix: &str, version: Option<&str>) -> Result<String, ClientError> {
        (**self).create_path(prefix, version)
    }
}

impl Client {
    /// A client of the orchestrator at `base_url` (`http://host:port`, or `https://` with the
    /// `tls` feature) with a client token, for the routes under `/api/v1`.
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Client {
        let http = reqwest::Client::builder()
            // download_url reads the 302 of the download route itself.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let base = base_url.into().trim_end_matches('/').to_owned();
        let transport = Transport::for_url(&base, false, &http, &Transport::direct(crate::transport::AGENT_CLIENT));
        Client {
            transport,
            http,
            base,
            token: token.into(),
            prefix: "/api".into(),
            version: Some("v1".into()),
            request_timeout: Duration::from_secs(30),
            poll_initial: Duration::from_millis(20),
            poll_max: Duration::from_millis(500),
        }
    }

    /// Sends every request through this `reqwest` client (proxies, certificates, connection pool
    /// of the application). One that follows redirects still works: [`Client::download_url`]
    /// then gives the URL the redirect ended at. Without it, a plain `http://` orchestrator is
    /// reached through a pooled hyper client of avto's own (fewer instructions per request than
    /// reqwest's layers; uploads and downloads still go through reqwest), anything else through a
    /// default `reqwest::Client`.
    pub fn with_http(mut self, http: reqwest::Client) -> Client {
        self.transport = Transport::Reqwest(http.clone());
        self.http = http;
        self
    }

    /// Another token (another client identity) on the same connection pool.
    pub fn with_token(&self, token: impl Into<String>) -> Client {
        Client { token: token.into(), ..self.clone() }
    }

    /// The orchestrator's `CLIENT_API_PREFIX` (default `api`; `""` for none).
    pub fn api_prefix(mut self, prefix: &str) -> Client {
        let p = prefix.trim_matches('/');
        self.prefix = if p.is_empty() { String::new() } else { format!("/{p}") };
        self
    }

    /// The API version of the job routes (default `v1`; `None`: the unversioned routes).
    pub fn api_version(mut self, version: Option<&str>) -> Client {
        self.version = version.map(str::to_owned);
        self
    }

    /// The longest one request may take (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Client {
        self.request_timeout = timeout;
        self
    }

    /// The backoff of [`Client::wait`]: the first pause between two reads of the job, doubled
    /// after each read up to `max`.
    pub fn poll_interval(mut self, initial: Duration, max: Duration) -> Client {
        self.poll_initial = initial.max(Duration::from_millis(1));
        self.poll_max = max.max(self.poll_initial);
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The `reqwest` client uploads and downloads go through (and every request when given by
    /// [`Client::with_http`], or when the base URL is not plain `http://`).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Creates a job of `endpoint` (see [`Endpoint`]) with this initial data (a JSON object).
    pub async fn create(&self, endpoint: impl Endpoint, initial_data: Value) -> Result<JobId, ClientError> {
        self.create_job(endpoint, &NewJob::new(initial_data)).await
    }

    /// Creates a job with options (webhook, timeouts, metadata, trace parent).
    pub async fn create_job(&self, endpoint: impl Endpoint, job: &NewJob) -> Result<JobId, ClientError> {
        if !job.initial_data.is_object() {
            return Err(ClientError::Invalid("initial_data must be a JSON object".into()));
        }
        let path = endpoint.create_path(&self.prefix, self.version.as_deref())?;
        let body = self.json(Method::POST, &path, Some(&job.body()), job.traceparent.as_deref()).await?;
        match body.get("job_id").and_then(Value::as_str) {
            Some(id) => Ok(JobId(id.to_owned())),
            None => Err(self.decode(Method::POST, &path, format!("no `job_id` in {body}"))),
        }
    }

    /// The job's status document (detailed: everything but internals; see [`JobView::raw`]).
    pub async fn get(&self, job_id: impl AsRef<str>) -> Result<JobView, ClientError> {
        let path = format!("{}?detailed=true", self.job_path(job_id.as_ref(), "")?);
        let body = self.json(Method::GET, &path, None, None).await?;
        JobView::from_json(body).map_err(|e| self.decode(Method::GET, &path, e.to_string()))
    }

    /// Waits until the job is terminal (`finished`, `failed`, `cancelled`, `quarantined`) and
    /// returns it; [`ClientError::Timeout`] after `timeout`.
    pub async fn wait(&self, job_id: impl AsRef<str>, timeout: Duration) -> Result<JobView, ClientError> {
        self.wait_until(job_id, timeout, "a terminal status", JobView::is_terminal).await
    }

    /// Waits until `done` holds for the job (e.g. it waits for an approval); `what` names the
    /// condition in the [`ClientError::Timeout`] after `timeout`. Connection failures and 503
    /// answers are retried until then; other errors end the wait.
    pub async fn wait_until(
        &self,
        job_id: impl AsRef<str>,
        timeout: Duration,
        what: &str,
        done: impl Fn(&JobView) -> bool,
    ) -> Result<JobView, ClientError> {
        let job_id = job_id.as_ref();
        let start = tokio::time::Instant::now();
        let deadline = start + timeout;
        let mut delay = self.poll_initial;
        let mut last = None;
        loop {
            match self.get(job_id).await {
                Ok(job) if done(&job) => return Ok(job),
                Ok(job) => last = Some(Box::new(job)),
                Err(e @ ClientError::Transport { .. }) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(ClientError::Transport { .. }) => {}
                Err(e) if e.status() == Some(StatusCode::SERVICE_UNAVAILABLE) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout {
                    job_id: JobId(job_id.to_owned()),
                    what: what.to_owned(),
                    waited: now - start,
                    last,
                });
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(self.poll_max);
        }
    }

    /// Asks to cancel the job (a running task is told to stop).
    pub async fn cancel(&self, job_id: impl AsRef<str>) -> Result<(), ClientError> {
        let path = self.job_path(job_id.as_ref(), "/cancel")?;
        self.json(Method::POST, &path, None, None).await.map(drop)
    }

    /// The decision for a job waiting for approval (`"approved"`, `"rejected"`, or a
    /// transition name of the blueprint's approval).
    pub async fn approve(&self, job_id: impl AsRef<str>, decision: &str) -> Result<(), ClientError> {
        let path = self.job_path(job_id.as_ref(), "/approval")?;
        self.json(Method::POST, &path, Some(&serde_json::json!({"decision": decision})), None).await.map(drop)
    }

    /// A page of this client's jobs, newest first.
    pub async fn list(&self, page: Page) -> Result<Vec<JobView>, ClientError> {
        let path =
            format!("{}/jobs?limit={}&offset={}&detailed={}", self.api_base(), page.limit, page.offset, page.detailed);
        let body = self.json(Method::GET, &path, None, None).await?;
        let Value::Array(items) = body else {
            return Err(self.decode(Method::GET, &path, "not a JSON array".into()));
        };
        items
            .into_iter()
            .map(|v| JobView::from_json(v).map_err(|e| self.decode(Method::GET, &path, e.to_string())))
            .collect()
    }

    /// The job's history rows, oldest first (404 when the orchestrator keeps no history).
    pub async fn history(&self, job_id: impl AsRef<str>) -> Result<Vec<HistoryEntry>, ClientError> {
        let path = format!("{}?detailed=true", self.job_path(job_id.as_ref(), "/history")?);
        let body = self.json(Method::GET, &path, None, None).await?;
        let Value::Array(rows) = body else {
            return Err(self.decode(Method::GET, &path, "not a JSON array".into()));
        };
        Ok(rows.into_iter().map(HistoryEntry::from_json).collect())
    }

    /// A presigned URL to `PUT` the file `filename` of the job to (S3; 501 without a file store).
    /// `expires_in`: its validity (default 1 hour, at most 7 days).
    pub async fn upload_url(
        &self,
        job_id: impl AsRef<str>,
        filename: &str,
        expires_in: Option<Duration>,
    ) -> Result<UploadUrl, ClientError> {
        let mut path =
            format!("{}?filename={}", self.job_path(job_id.as_ref(), "/files/upload")?, encode(filename, false));
        if let Some(e) = expires_in {
            path.push_str(&format!("&expires_in={}", e.as_secs()));
        }
        let body = self.json(Method::GET, &path, None, None).await?;
        serde_json::from_value(body).map_err(|e| self.decode(Method::GET, &path, e.to_string()))
    }

    /// Uploads `content` as the job's file `filename` through the orchestrator (at most
    /// `S3_MAX_UPLOAD_BYTES`).
    pub async fn upload(
        &self,
        job_id: impl AsRef<str>,
        filename: &str,
        content: impl Into<reqwest::Body>,
    ) -> Result<Uploaded, ClientError> {
        let path = format!("{}/{}", self.job_path(job_id.as_ref(), "/files/content")?, encode(filename, true));
        // Through reqwest: the content may be a stream.
        let resp = self.send(Method::PUT, &path, self.request(Method::PUT, &path).body(content)).await?;
        let body = self.answer_json(Method::PUT, &path, Answer::read(resp).await)?;
        serde_json::from_value(body).map_err(|e| self.decode(Method::PUT, &path, e.to_string()))
    }

    /// A short-lived (60 s) URL to download the job's file `filename` from.
    pub async fn download_url(&self, job_id: impl AsRef<str>, filename: &str) -> Result<String, ClientError> {
        let path = format!("{}/{}", self.job_path(job_id.as_ref(), "/files/download")?, encode(filename, true));
        let resp = self.send(Method::GET, &path, self.request(Method::GET, &path)).await?;
        let status = resp.status();
        if status.is_redirection() {
            if let Some(loc) = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()) {
                return Ok(loc.to_owned());
            }
            return Err(self.decode(Method::GET, &path, format!("{status} without a Location")));
        }
        if status.is_success() {
            return Ok(resp.url().to_string());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(self.api_error(Method::GET, &path, status, &text))
    }

    /// Downloads the job's file `filename` (through [`Client::download_url`]).
    pub async fn download(&self, job_id: impl AsRef<str>, filename: &str) -> Result<Vec<u8>, ClientError> {
        let url = self.download_url(job_id, filename).await?;
        let req = self.http.get(&url).timeout(self.request_timeout);
        let transport =
            |source: reqwest::Error| ClientError::Transport { request: format!("GET {url}"), source: source.into() };
        let resp = req.send().await.map_err(transport)?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(ClientError::Api {
                request: format!("GET {url}"),
                status,
                message: truncate(&text),
                body: Value::Null,
            });
        }
        Ok(resp.bytes().await.map_err(transport)?.to_vec())
    }

    /// Any request of the API (routes without a typed method): `path` from the base URL, the
    /// client token attached. Returns the status and the JSON body (`Null` when not JSON)
    /// whatever the status; only a request without an answer is an error.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), ClientError> {
        let answer = self.exchange(method.clone(), path, body, None).await?;
        let text = answer.body.map_err(|source| self.transport(method, path, source))?;
        Ok((answer.status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    fn api_base(&self) -> String {
        match &self.version {
            Some(v) => format!("{}/{v}", self.prefix),
            None => self.prefix.clone(),
        }
    }

    fn job_path(&self, job_id: &str, rest: &str) -> Result<String, ClientError> {
        if job_id.is_empty() {
            return Err(ClientError::Invalid("empty job id".into()));
        }
        Ok(format!("{}/jobs/{}{rest}", self.api_base(), encode(job_id, false)))
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        crate::mru::request_to(&self.http, method, format!("{}{path}", self.base))
            .header("X-Client-Token", &self.token)
            .timeout(self.request_timeout)
    }

    /// One request of the API through the transport: the client token (and `traceparent`, when
    /// given) attached, `body` sent as JSON.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        traceparent: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut headers = [("X-Client-Token", self.token.as_str()), ("traceparent", "")];
        let n = match traceparent {
            Some(tp) => {
                headers[1].1 = tp;
                2
            }
            None => 1,
        };
        self.transport
            .send(method.clone(), url, &headers[..n], body.map(Value::to_string), self.request_timeout)
            .await
            .map_err(|source| match source.is_invalid_request() {
                // A path (of `raw`) or a header value that cannot be sent: nothing was sent.
                true => ClientError::Invalid(format!("{}: {source}", self.request_name(method, path))),
                false => self.transport(method, path, source),
            })
    }

    /// Sends and reads a 2xx JSON answer; any other status is [`ClientError::Api`].
    async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        traceparent: Option<&str>,
    ) -> Result<Value, ClientError> {
        let answer = self.exchange(method.clone(), path, body, traceparent).await?;
        self.answer_json(method, path, answer)
    }

    /// A 2xx answer's JSON body; any other status is [`ClientError::Api`].
    fn answer_json(&self, method: Method, path: &str, answer: Answer) -> Result<Value, ClientError> {
        if !answer.status.is_success() {
            return Err(self.api_error(method, path, answer.status, answer.body.as_deref().unwrap_or_default()));
        }
        let text = answer.body.map_err(|source| self.transport(method.clone(), path, source))?;
        serde_json::from_str(&text).map_err(|e| self.decode(method, path, format!("{e}: {}", truncate(&text))))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        req.send().await.map_err(|source| self.transport(method, path, source.into()))
    }

    fn api_error(&self, method: Method, path: &str, status: StatusCode, text: &str) -> ClientError {
        let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let message = match body.get("error").and_then(Value::as_str) {
            Some(m) => m.to_owned(),
            None if text.is_empty() => status.canonical_reason().unwrap_or("error").to_owned(),
            None => truncate(text),
        };
        ClientError::Api { request: self.request_name(method, path), status, message, body }
    }

    fn transport(&self, method: Method, path: &str, source: TransportError) -> ClientError {
        ClientError::Transport { request: self.request_name(method, path), source }
    }

    fn decode(&self, method: Method, path: &str, message: String) -> ClientError {
        ClientError::Decode { request: self.request_name(method, path), message }
    }

    fn request_name(&self, method: Method, path: &str) -> String {
        format!("{method} {}{path}", self.base)
    }
}

/// Percent-encodes a path segment (or a path, keeping `/`, when `keep_slash`) or a query value.
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// At most 500 bytes of an answer in an error message.
fn truncate(text: &str) -> String {
    let mut end = text.len().min(500);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_paths() {
        let c = Client::new("http://h:1/", "t");
        assert_eq!(c.base_url(), "http://h:1");
        assert_eq!("jobs/x".create_path("/api", Some("v1")).unwrap(), "/api/v1/jobs/x");
        assert_eq!("/other/jobs/x".create_path("/api", Some("v1")).unwrap(), "/other/jobs/x");
        assert_eq!("jobs/x".create_path("", None).unwrap(), "/jobs/x");
        assert!("".create_path("/api", None).is_err());
        assert_eq!(c.job_path("a b/c", "/cancel").unwrap(), "/api/v1/jobs/a%20b%2Fc/cancel");
        assert!(c.job_path("", "").is_err());
        let c = c.api_prefix("/").api_version(None);
        assert_eq!(c.job_path("j", "").unwrap(), "/jobs/j");
        assert_eq!(encode("dir/ä.txt", true), "dir/%C3%A4.txt");
    }

    #[test]
    fn plain_http_goes_direct_unless_a_client_is_given() {
        let direct = |c: &Client| matches!(c.transport, Transport::Direct { .. });
        assert!(direct(&Client::new("http://127.0.0.1:8080", "t")));
        assert!(!direct(&Client::new("https://orchestrator", "t")));
        assert!(!direct(&Client::new("http://user:pw@orchestrator", "t")), "reqwest sends Basic authentication");
        let given = Client::new("http://127.0.0.1:8080", "t").with_http(reqwest::Client::new());
        assert!(!direct(&given));
        assert!(!direct(&given.with_token("u")), "another token keeps the client's transport");
    }

    /// What the direct client sends: the token, a `traceparent` when the job has one, the JSON
    /// body, its user agent; and an error answer's JSON read into [`ClientError::Api`].
    #[tokio::test]
    async fn the_direct_client_sends_the_token_traceparent_and_body() {
        let (base, conns, mut requests) = crate::transport::tests::server(|n| match n {
            0 => Some(crate::transport::tests::ok(r#"{"job_id":"j-1"}"#)),
            _ => Some(
                "HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n{\"error\":\"taken\"}"
                    .into(),
            ),
        })
        .await;
        let c = Client::new(&base, "tok-1");
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let id = c.create_job("jobs/x", &NewJob::new(serde_json::json!({"a": 1})).traceparent(tp)).await.unwrap();
        assert_eq!(id.0, "j-1");
        let (head, body) = requests.recv().await.unwrap();
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("post /api/v1/jobs/x http/1.1\r\n"), "{head}");
        for line in [
            "x-client-token: tok-1".to_owned(),
            format!("traceparent: {tp}"),
            "content-type: application/json".to_owned(),
            format!("user-agent: avto-client/{}", env!("CARGO_PKG_VERSION")),
        ] {
            assert!(head.contains(&line), "{line} in {head}");
        }
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), serde_json::json!({"initial_data": {"a": 1}}));
        let e = c.cancel("j-1").await.unwrap_err();
        assert_eq!(
            (e.status(), e.to_string()),
            (Some(StatusCode::CONFLICT), format!("POST {base}/api/v1/jobs/j-1/cancel: 409 Conflict: taken"))
        );
        let (head, body) = requests.recv().await.unwrap();
        assert!(!head.to_ascii_lowercase().contains("traceparent"), "{head}");
        assert_eq!(body, "");
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1, "one pooled connection");
    }

    /// A request that cannot be made (a path with a space, a header value with a line break) is
    /// `Invalid`, sent nowhere.
    #[tokio::test]
    async fn a_request_that_cannot_be_made_is_invalid() {
        let c = Client::new("http://127.0.0.1:1", "t");
        let e = c.raw(Method::GET, "/a b", None).await.unwrap_err();
        assert!(
            matches!(&e, ClientError::Invalid(m) if m.starts_with("GET http://127.0.0.1:1/a b: invalid request")),
            "{e}"
        );
        let job = NewJob::new(serde_json::json!({})).traceparent("00-x\r\nX-Evil: 1");
        let e = c.create_job("jobs/x", &job).await.unwrap_err();
        assert!(matches!(e, ClientError::Invalid(_)), "{e}");
    }

    #[test]
    fn new_job_body() {
        let job = NewJob::new(serde_json::json!({"a": 1}))
            .webhook_url("http://h/hook")
            .dispatch_timeout(Duration::from_millis(1500))
            .metadata(serde_json::json!({"k": "v"}));
        assert_eq!(
            job.body(),
            serde_json::json!({"initial_data": {"a": 1}, "webhook_url": "http://h/hook", "dispatch_timeout": 1.5, "metadata": {"k": "v"}})
        );
    }

    #[test]
    fn views_read_the_common_fields() {
        let raw = serde_json::json!({"id": "j1", "status": "finished", "blueprint_name": "bp", "current_state": "end",
                                     "result": {"x": 1}, "progress": null, "extra": true});
        let v = JobView::from_json(raw.clone()).unwrap();
        assert_eq!((v.id.as_str(), v.status, v.blueprint.as_str()), ("j1", crate::JobStatus::Finished, "bp"));
        assert_eq!(v.result, Some(serde_json::json!({"x": 1})));
        assert!(v.is_terminal());
        assert_eq!(v.raw, raw);
        assert!(JobView::from_json(serde_json::json!({"id": "j", "status": "nonsense"})).is_err());
    }
}
