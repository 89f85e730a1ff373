//! HTTP side of the protocol for one orchestrator.

use super::WorkerError;
use crate::protocol::{
    self, canonical, EventResponse, HeartbeatResponse, RefreshTokenRequest, RegisterResponse, ResultResponse,
    TokenResponse,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Duration;

/// Talks to one orchestrator: auth headers, canonical bodies, status mapping.
#[derive(Debug)]
pub(crate) struct OrchestratorClient {
    http: reqwest::Client,
    base: String,
    worker_id: String,
    static_token: String,
    /// STS access token, used instead of the static token when set.
    access_token: RwLock<Option<String>>,
    request_timeout: Duration,
    version_warned: AtomicBool,
}

impl OrchestratorClient {
    pub fn new(http: reqwest::Client, base: &str, worker_id: &str, token: &str, request_timeout: Duration) -> Self {
        OrchestratorClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            worker_id: worker_id.to_owned(),
            static_token: token.to_owned(),
            access_token: RwLock::new(None),
            request_timeout,
            version_warned: AtomicBool::new(false),
        }
    }

    /// The token currently sent as `X-Worker-Token`.
    pub fn auth_token(&self) -> String {
        self.access_token.read().unwrap().clone().unwrap_or_else(|| self.static_token.clone())
    }

    pub fn set_access_token(&self, token: Option<String>) {
        *self.access_token.write().unwrap() = token;
    }

    pub fn uses_access_token(&self) -> bool {
        self.access_token.read().unwrap().is_some()
    }

    /// The three RXON headers.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (protocol::AUTH_HEADER_WORKER, self.auth_token()),
            (protocol::AUTH_HEADER_WORKER_ID, self.worker_id.clone()),
            (protocol::PROTOCOL_VERSION_HEADER, protocol::PROTOCOL_VERSION.to_owned()),
        ]
    }

    /// The WebSocket URL (`http` → `ws`).
    pub fn ws_url(&self) -> String {
        format!("{}{}", self.base.replacen("http", "ws", 1), protocol::ws_path(&self.worker_id))
    }

    async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Option<Value>, WorkerError> {
        let url = format!("{}{}", self.base, path_and_query);
        let mut req = self.http.request(method.clone(), &url).timeout(timeout);
        for (k, v) in self.headers() {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(canonical::to_canonical_string(b));
        }
        let resp = req.send().await.map_err(|e| WorkerError::Network(format!("{method} {path_and_query}: {e}")))?;
        let status = resp.status();
        if let Some(v) = resp.headers().get(protocol::PROTOCOL_VERSION_HEADER).and_then(|v| v.to_str().ok()) {
            if v != protocol::PROTOCOL_VERSION && !self.version_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "RXON protocol version mismatch: orchestrator {v}, worker {}",
                    protocol::PROTOCOL_VERSION
                );
            }
        }
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64);
            let text = resp.text().await.unwrap_or_default();
            let message = serde_json::from_str::<protocol::ErrorBody>(&text).map(|e| e.error).unwrap_or(text);
            return Err(WorkerError::RateLimited { retry_after, message });
        }
        let text = resp.text().await.map_err(|e| WorkerError::Network(format!("{method} {path_and_query}: {e}")))?;
        if !status.is_success() {
            return Err(WorkerError::Http { status: status.as_u16(), body: text });
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| WorkerError::Protocol(format!("{method} {path_and_query}: invalid JSON answer: {e}")))?;
        Ok(if v.is_null() { None } else { Some(v) })
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
                .map_err(|e| WorkerError::Protocol(format!("{path}: unexpected answer: {e}"))),
        }
    }

    pub async fn register(&self, body: &Value) -> Result<RegisterResponse, WorkerError> {
        self.call(Method::POST, protocol::ENDPOINT_WORKER_REGISTER, Some(body))
            .await?
            .ok_or_else(|| WorkerError::Protocol("empty register answer".into()))
    }

    /// `None` for a JSON `null` answer (unknown worker with an empty body).
    pub async fn heartbeat(&self, body: &Value) -> Result<Option<HeartbeatResponse>, WorkerError> {
        self.call(Method::PATCH, &protocol::heartbeat_path(&self.worker_id), Some(body)).await
    }

    /// Long-poll for a task; `None` on 204. The raw JSON is returned so that its signature can be
    /// checked over exactly what was received.
    pub async fn poll(
        &self,
        timeout: Duration,
        available: &[String],
        hot: &[String],
    ) -> Result<Option<Value>, WorkerError> {
        let path = format!(
            "{}?timeout={}&available_skills={}&hot_skills={}",
            protocol::task_next_path(&self.worker_id),
            python_float(timeout.as_secs_f64()),
            available.join(","),
            hot.join(",")
        );
        self.request(Method::GET, &path, None, timeout + Duration::from_secs(5)).await
    }

    pub async fn send_result(&self, body: &Value) -> Result<ResultResponse, WorkerError> {
        self.call(Method::POST, protocol::ENDPOINT_TASK_RESULT, Some(body))
            .await?
            .ok_or_else(|| WorkerError::Protocol("empty result answer".into()))
    }

    pub async fn send_event(&self, body: &Value) -> Result<EventResponse, WorkerError> {
        self.call(Method::POST, protocol::ENDPOINT_WORKER_EVENTS, Some(body))
            .await?
            .ok_or_else(|| WorkerError::Protocol("empty event answer".into()))
    }

    /// `POST /_worker/auth/token` (authenticated with the static token).
    pub async fn sts_token(&self) -> Result<TokenResponse, WorkerError> {
        self.set_access_token(None);
        self.call(Method::POST, protocol::STS_TOKEN_ENDPOINT, None)
            .await?
            .ok_or_else(|| WorkerError::Protocol("empty STS answer".into()))
    }

    /// `POST /_worker/auth/token/refresh`.
    pub async fn sts_refresh(&self, refresh_token: &str) -> Result<TokenResponse, WorkerError> {
        let body = serde_json::to_value(RefreshTokenRequest { refresh_token: refresh_token.to_owned() })
            .expect("serialisable");
        self.call(Method::POST, protocol::STS_REFRESH_ENDPOINT, Some(&body))
            .await?
            .ok_or_else(|| WorkerError::Protocol("empty STS answer".into()))
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
