//! HTTP side of the protocol for one orchestrator.

use super::WorkerError;
use crate::protocol::{
    self, canonical, EventResponse, HeartbeatResponse, RefreshTokenRequest, RegisterResponse, ResultResponse,
    TokenResponse,
};
use crate::transport::Transport;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Duration;

/// Talks to one orchestrator: auth headers, canonical bodies, status mapping.
#[derive(Debug)]
pub(crate) struct OrchestratorClient {
    transport: Transport,
    base: String,
    worker_id: String,
    static_token: String,
    /// STS access token, used instead of the static token when set.
    access_token: RwLock<Option<String>>,
    request_timeout: Duration,
    version_warned: AtomicBool,
    /// The orchestrator answered a poll with a batch (`{"tasks": [...]}`): it is avto, and
    /// takes batched results too.
    batches: AtomicBool,
}

impl OrchestratorClient {
    pub(crate) fn new(
        transport: Transport,
        base: &str,
        worker_id: &str,
        token: &str,
        request_timeout: Duration,
    ) -> Self {
        OrchestratorClient {
            transport,
            base: base.trim_end_matches('/').to_owned(),
            worker_id: worker_id.to_owned(),
            static_token: token.to_owned(),
            access_token: RwLock::new(None),
            request_timeout,
            version_warned: AtomicBool::new(false),
            batches: AtomicBool::new(false),
        }
    }

    /// Whether this orchestrator takes batched results (see [`OrchestratorClient::send_results`]).
    pub(crate) fn batches(&self) -> bool {
        self.batches.load(Ordering::Relaxed)
    }

    /// Stops batching results (an orchestrator that turned out not to know the batch endpoint).
    pub(crate) fn stop_batching(&self) {
        self.batches.store(false, Ordering::Relaxed);
    }

    /// The token currently sent as `X-Worker-Token`.
    pub(crate) fn auth_token(&self) -> String {
        self.access_token.read().unwrap().clone().unwrap_or_else(|| self.static_token.clone())
    }

    pub(crate) fn set_access_token(&self, token: Option<String>) {
        *self.access_token.write().unwrap() = token;
    }

    pub(crate) fn uses_access_token(&self) -> bool {
        self.access_token.read().unwrap().is_some()
    }

    /// The three RXON headers.
    pub(crate) fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (protocol::AUTH_HEADER_WORKER, self.auth_token()),
            (protocol::AUTH_HEADER_WORKER_ID, self.worker_id.clone()),
            (protocol::PROTOCOL_VERSION_HEADER, protocol::PROTOCOL_VERSION.to_owned()),
        ]
    }

    /// The WebSocket URL (`http` → `ws`).
    pub(crate) fn ws_url(&self) -> String {
        format!("{}{}", self.base.replacen("http", "ws", 1), protocol::ws_path(&self.worker_id))
    }

    async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Option<Value>, WorkerError> {
        self.request_raw(method, path_and_query, body.map(canonical::to_canonical_string), timeout).await
    }

    /// [`OrchestratorClient::request`] with a body already serialised.
    async fn request_raw(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<String>,
        timeout: Duration,
    ) -> Result<Option<Value>, WorkerError> {
        let Some(text) = self.request_text(method.clone(), path_and_query, body, timeout).await? else {
            return Ok(None);
        };
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| WorkerError::unparsable(format!("{method} {path_and_query}: invalid JSON answer: {e}"), e))?;
        Ok(if v.is_null() { None } else { Some(v) })
    }

    /// The answer's text (`None` for 204 or an empty body), errors mapped.
    async fn request_text(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<String>,
        timeout: Duration,
    ) -> Result<Option<String>, WorkerError> {
        let url = format!("{}{}", self.base, path_and_query);
        let network = |e: crate::transport::TransportError| {
            WorkerError::network(format!("{method} {path_and_query}: {e}"), e.into_cause())
        };
        let token = self.auth_token();
        let headers = [
            (protocol::AUTH_HEADER_WORKER, token.as_str()),
            (protocol::AUTH_HEADER_WORKER_ID, self.worker_id.as_str()),
            (protocol::PROTOCOL_VERSION_HEADER, protocol::PROTOCOL_VERSION),
        ];
        let answer = self.transport.send(method.clone(), url, &headers, body, timeout).await.map_err(network)?;
        if let Some(v) = answer.header(protocol::PROTOCOL_VERSION_HEADER) {
            if v != protocol::PROTOCOL_VERSION && !self.version_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "RXON protocol version mismatch: orchestrator {v}, worker {}",
                    protocol::PROTOCOL_VERSION
                );
            }
        }
        let status = answer.status.as_u16();
        if status == 204 {
            return Ok(None);
        }
        if status == 429 {
            let retry_after = retry_after(answer.header("retry-after"));
            let text = answer.body.unwrap_or_default();
            let message = serde_json::from_str::<protocol::ErrorBody>(&text).map(|e| e.error).unwrap_or(text);
            return Err(WorkerError::RateLimited { retry_after, message });
        }
        let text = answer.body.map_err(network)?;
        if !(200..300).contains(&status) {
            return Err(WorkerError::Http { status, body: text });
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(text))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<T>, WorkerError> {
        match self.request(method, path, body, self.request_timeout).await? {
            None => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| WorkerError::unparsable(format!("{path}: unexpected answer: {e}"), e)),
        }
    }

    pub(crate) async fn register(&self, body: &Value) -> Result<RegisterResponse, WorkerError> {
        self.call(Method::POST, protocol::ENDPOINT_WORKER_REGISTER, Some(body))
            .await?
            .ok_or_else(|| WorkerError::protocol("empty register answer"))
    }

    /// `None` for a JSON `null` answer (unknown worker with an empty body).
    pub(crate) async fn heartbeat(&self, body: &Value) -> Result<Option<HeartbeatResponse>, WorkerError> {
        self.call(Method::PATCH, &protocol::heartbeat_path(&self.worker_id), Some(body)).await
    }

    /// Long-poll for tasks; empty on 204. With `max > 1` the poll asks avto for up to `max`
    /// tasks at once (`max_tasks`, answered `{"tasks": [...]}`); the Python orchestrator ignores
    /// the parameter and answers one task, which is taken as well. The raw JSON of each task is
    /// returned so that its signature can be checked over exactly what was received.
    pub(crate) async fn poll(
        &self,
        timeout: Duration,
        available: &[String],
        hot: &[String],
        max: usize,
    ) -> Result<Vec<Polled>, WorkerError> {
        let mut path = format!(
            "{}?timeout={}&available_skills={}&hot_skills={}",
            protocol::task_next_path(&self.worker_id),
            python_float(timeout.as_secs_f64()),
            available.join(","),
            hot.join(",")
        );
        if max > 1 {
            path.push_str(&format!("&max_tasks={max}"));
        }
        let Some(text) = self.request_text(Method::GET, &path, None, timeout + Duration::from_secs(5)).await? else {
            return Ok(Vec::new());
        };
        let (tasks, batch) = parse_poll_answer(&text)?;
        if batch {
            self.batches.store(true, Ordering::Relaxed);
        }
        Ok(tasks)
    }

    pub(crate) async fn send_result(&self, body: &Value) -> Result<ResultResponse, WorkerError> {
        self.call(Method::POST, protocol::ENDPOINT_TASK_RESULT, Some(body))
            .await?
            .ok_or_else(|| WorkerError::protocol("empty result answer"))
    }

    /// `POST /_worker/tasks/results` (avto only): several signed result bodies, each already in
    /// canonical JSON, in one request. One answer per result, in order; a result the
    /// orchestrator refused comes back as [`WorkerError::Http`] with the status it would have had.
    pub(crate) async fn send_results(
        &self,
        results: &[String],
    ) -> Result<Vec<Result<ResultResponse, WorkerError>>, WorkerError> {
        let body = format!("{{\"results\":[{}]}}", results.join(","));
        let answer = self
            .request_raw(Method::POST, protocol::ENDPOINT_TASK_RESULTS, Some(body), self.request_timeout)
            .await?
            .ok_or_else(|| WorkerError::protocol("empty results answer"))?;
        let answers = match answer.get("results") {
            Some(Value::Array(a)) if a.len() == results.len() => a,
            _ => return Err(WorkerError::protocol("results answer does not match the batch")),
        };
        Ok(answers
            .iter()
            .map(|a| match a.get("http_status").and_then(Value::as_u64) {
                Some(status) => Err(WorkerError::Http { status: status as u16, body: a.to_string() }),
                None => serde_json::from_value(a.clone())
                    .map_err(|e| WorkerError::unparsable(format!("unexpected result answer: {e}"), e)),
            })
            .collect())
    }

    pub(crate) async fn send_event(&self, body: &Value) -> Result<EventResponse, WorkerError> {
        self.call(Method::POST, protocol::ENDPOINT_WORKER_EVENTS, Some(body))
            .await?
            .ok_or_else(|| WorkerError::protocol("empty event answer"))
    }

    /// `POST /_worker/auth/token` (authenticated with the static token).
    pub(crate) async fn sts_token(&self) -> Result<TokenResponse, WorkerError> {
        self.set_access_token(None);
        self.call(Method::POST, protocol::STS_TOKEN_ENDPOINT, None)
            .await?
            .ok_or_else(|| WorkerError::protocol("empty STS answer"))
    }

    /// `POST /_worker/auth/token/refresh`.
    pub(crate) async fn sts_refresh(&self, refresh_token: &str) -> Result<TokenResponse, WorkerError> {
        let body = serde_json::to_value(RefreshTokenRequest { refresh_token: refresh_token.to_owned() })
            .expect("serialisable");
        self.call(Method::POST, protocol::STS_REFRESH_ENDPOINT, Some(&body))
            .await?
            .ok_or_else(|| WorkerError::protocol("empty STS answer"))
    }
}

/// Python's `str(float)` for durations: `30.0`, `2.5`.
pub(crate) fn python_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// The longest `Retry-After` a worker honours (a larger one is taken as this).
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A `Retry-After` header in seconds, at most [`MAX_RETRY_AFTER`] (any number an orchestrator
/// sends, `1e300` too, gives a duration the clock can add without overflowing).
pub(crate) fn retry_after(header: Option<&str>) -> Option<Duration> {
    let secs = header?.trim().parse::<f64>().ok().filter(|s| *s >= 0.0)?;
    Some(Duration::try_from_secs_f64(secs).unwrap_or(MAX_RETRY_AFTER).min(MAX_RETRY_AFTER))
}

/// One task of a poll answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Polled {
    /// A task payload as received.
    Task(Value),
    /// A task whose payload cannot be read (e.g. nested deeper than the 128 levels serde_json
    /// reads): what is needed to report it failed, so it neither waits for its timeout nor
    /// takes the other tasks of its batch with it.
    Unreadable { job_id: String, task_id: String, task_type: String, error: String },
}

/// Reads a poll answer: one task, or a batch `{"tasks": [...]}` (the flag). When the answer as
/// a whole cannot be read, its tasks are read one by one, so one bad task does not lose the
/// others (they may be other clients' tasks).
pub(crate) fn parse_poll_answer(text: &str) -> Result<(Vec<Polled>, bool), WorkerError> {
    let whole = match serde_json::from_str::<Value>(text) {
        Ok(Value::Null) => return Ok((Vec::new(), false)),
        Ok(Value::Object(mut batch)) if !batch.contains_key("task_id") && batch.contains_key("tasks") => {
            return match batch.remove("tasks") {
                Some(Value::Array(tasks)) => Ok((tasks.into_iter().map(Polled::Task).collect(), true)),
                _ => Err(WorkerError::protocol("`tasks` of a poll answer is not a list")),
            };
        }
        Ok(task) => return Ok((vec![Polled::Task(task)], false)),
        Err(e) => e,
    };
    // Skipping over a value (raw values, ignored fields) has no depth limit in serde_json.
    #[derive(serde::Deserialize)]
    struct Batch<'a> {
        #[serde(borrow)]
        tasks: Vec<&'a serde_json::value::RawValue>,
    }
    let invalid = || WorkerError::protocol(format!("poll answer: invalid JSON: {whole}"));
    match serde_json::from_str::<Batch<'_>>(text) {
        Ok(b) => Ok((b.tasks.into_iter().filter_map(|raw| read_task(raw.get())).collect(), true)),
        Err(_) => Ok((vec![read_task(text).ok_or_else(invalid)?], false)),
    }
}

/// One task of an answer that could not be read as a whole.
fn read_task(raw: &str) -> Option<Polled> {
    #[derive(serde::Deserialize)]
    struct Ids {
        job_id: String,
        task_id: String,
        #[serde(rename = "type", default)]
        task_type: String,
    }
    let error = match serde_json::from_str::<Value>(raw) {
        Ok(v) => return Some(Polled::Task(v)),
        Err(e) => e.to_string(),
    };
    match serde_json::from_str::<Ids>(raw) {
        Ok(Ids { job_id, task_id, task_type }) => Some(Polled::Unreadable { job_id, task_id, task_type, error }),
        Err(_) => {
            tracing::error!("dropping a task of a poll answer that cannot be read, not even its ids: {error}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    /// A `Retry-After` of any size is a duration the clock can add (`1e300` panicked).
    #[test]
    fn retry_after_is_bounded() {
        assert_eq!(retry_after(Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(Some("1e300")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(Some("1e15")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(Some("inf")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(Some("-1")), None);
        assert_eq!(retry_after(Some("NaN")), None);
        assert_eq!(retry_after(None), None);
        let _ = std::time::Instant::now() + retry_after(Some("1e300")).unwrap();
    }

    /// Issue #12 item 8: a task nested deeper than serde_json reads lost its whole batch.
    #[test]
    fn one_unreadable_task_does_not_lose_its_batch() {
        let good = r#"{"job_id":"j1","task_id":"t1","type":"echo","params":{"x":1}}"#;
        let bad = format!(r#"{{"job_id":"j2","task_id":"t2","type":"echo","params":{{"deep":{}}}}}"#, nested(200));
        let (tasks, batch) = parse_poll_answer(&format!(r#"{{"tasks":[{good},{bad}]}}"#)).unwrap();
        assert!(batch);
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0], Polled::Task(serde_json::from_str(good).unwrap()));
        match &tasks[1] {
            Polled::Unreadable { job_id, task_id, task_type, error } => {
                assert_eq!((job_id.as_str(), task_id.as_str(), task_type.as_str()), ("j2", "t2", "echo"));
                assert!(error.contains("recursion limit"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        // One task alone (the RXON answer).
        let (tasks, batch) = parse_poll_answer(&bad).unwrap();
        assert!(!batch && matches!(&tasks[..], [Polled::Unreadable { task_id, .. }] if task_id == "t2"));
        // Not JSON at all stays an error.
        assert!(parse_poll_answer("{\"tasks\": [").is_err());
    }

    /// A network or parse failure keeps the transport's / serde_json's error as its source
    /// (through clones too), with the text it had when the error was flattened into a String:
    /// `reqwest::Error` through reqwest, the direct client's error through it.
    #[tokio::test]
    async fn errors_keep_their_cause_as_source() {
        use crate::transport::TransportError;
        use std::error::Error as _;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let path = protocol::ENDPOINT_WORKER_REGISTER;
        let via = |transport: Transport, base: &str| {
            OrchestratorClient::new(transport, base, "w1", "token", Duration::from_secs(5))
        };
        let client = |base: &str| via(Transport::Reqwest(reqwest::Client::new()), base);

        // Nothing listens on port 1.
        let err = client("http://127.0.0.1:1").register(&serde_json::json!({})).await.unwrap_err();
        assert!(matches!(err, WorkerError::Network { .. }), "{err:?}");
        let cause = err.source().and_then(|c| c.downcast_ref::<reqwest::Error>()).expect("the reqwest error");
        assert!(cause.is_connect(), "{cause:?}");
        assert_eq!(err.to_string(), format!("network error: POST {path}: {cause}"));
        assert!(err.clone().source().and_then(|c| c.downcast_ref::<reqwest::Error>()).is_some());
        // The same through the direct client: its error, which says what failed.
        let err = via(Transport::direct(crate::transport::AGENT_WORKER), "http://127.0.0.1:1")
            .register(&serde_json::json!({}))
            .await
            .unwrap_err();
        assert!(matches!(err, WorkerError::Network { .. }), "{err:?}");
        let cause = err.source().and_then(|c| c.downcast_ref::<TransportError>()).expect("the transport error");
        assert!(cause.is_connect(), "{cause:?}");
        assert!(err.to_string().contains("refused"), "{err}");
        assert_eq!(err.to_string(), format!("network error: POST {path}: {cause}"));

        // An orchestrator that answers something that is not JSON.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = conn.read(&mut request).await;
            let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 3\r\n\r\n{x}";
            conn.write_all(answer.as_bytes()).await.unwrap();
        });
        let err = client(&base).register(&serde_json::json!({})).await.unwrap_err();
        assert!(matches!(err, WorkerError::Protocol { .. }), "{err:?}");
        let cause = err.source().and_then(|c| c.downcast_ref::<serde_json::Error>()).expect("the serde_json error");
        assert_eq!(err.to_string(), format!("protocol error: POST {path}: invalid JSON answer: {cause}"));
        assert!(WorkerError::protocol("empty register answer").source().is_none());
    }
}
