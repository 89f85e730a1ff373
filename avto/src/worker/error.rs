//! The worker SDK's error type, and [`Cause`], the underlying error it keeps (shared, so errors stay `Clone`).

use std::sync::Arc;
use std::time::Duration;

/// Everything that can go wrong in the worker SDK.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// Invalid configuration (bad identifier, no orchestrator, unparsable env value, ...).
    #[error("worker configuration: {0}")]
    Config(String),
    /// Could not reach the orchestrator (connection refused, reset, timeout, ...). `message` is
    /// the reason as shown (the request and the cause's text); `source` the `reqwest::Error`
    /// for an orchestrator reached through reqwest (`https://`, or a client given with
    /// [`WorkerBuilder::http_client`](super::WorkerBuilder::http_client)), else the direct
    /// HTTP client's error (see the worker module's docs).
    #[error("network error: {message}")]
    Network {
        message: String,
        #[source]
        source: Option<Cause>,
    },
    /// HTTP 429. `retry_after` from the `Retry-After` header when present.
    #[error("rate limited (429): {message}")]
    RateLimited { retry_after: Option<Duration>, message: String },
    /// Any other non-2xx answer. `body` is the raw answer (usually `{"error": "..."}`).
    #[error("HTTP {status}: {body}")]
    Http { status: u16, body: String },
    /// The answer was not the expected JSON. `message` as for `Network`; `source` the
    /// `serde_json::Error`, when there is one.
    #[error("protocol error: {message}")]
    Protocol {
        message: String,
        #[source]
        source: Option<Cause>,
    },
    /// An event type that the skill did not declare in `events_schema` (strict event validation).
    #[error("undeclared event type '{0}' (declare it with Skill::event_schema or disable strict event validation)")]
    UndeclaredEvent(String),
    /// The orchestrator rejected an event (`{"status": "error", ...}`).
    #[error("event rejected: {0}")]
    EventRejected(String),
}

impl WorkerError {
    /// A network failure: `message` (which includes `cause`'s text) caused by `cause`.
    pub(crate) fn network(message: String, cause: Cause) -> Self {
        WorkerError::Network { message, source: Some(cause) }
    }

    /// An answer that is not what the protocol says, with no underlying error.
    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        WorkerError::Protocol { message: message.into(), source: None }
    }

    /// An answer that does not parse: `message` (which includes `source`'s text) caused by `source`.
    pub(crate) fn unparsable(message: String, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        WorkerError::Protocol { message, source: Some(Cause::new(source)) }
    }

    /// HTTP status of an [`WorkerError::Http`] / [`WorkerError::RateLimited`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            WorkerError::Http { status, .. } => Some(*status),
            WorkerError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// The SDK re-registers when an error text mentions "not found" or "unauthorized" (and on 404).
    pub(crate) fn means_session_lost(&self) -> bool {
        match self {
            WorkerError::Http { status, body } => {
                let text = body.to_lowercase();
                *status == 404 || text.contains("not found") || text.contains("unauthorized")
            }
            _ => false,
        }
    }
}

/// The underlying error of a [`WorkerError`] (e.g. a `reqwest::Error`), shared so that
/// `WorkerError` stays `Clone`: one failed batch of results answers every result in it.
///
/// It is not an error itself but derefs to the underlying one, so
/// [`source`](std::error::Error::source) returns that error and it downcasts to its own type:
/// `err.source().and_then(|e| e.downcast_ref::<reqwest::Error>())` through reqwest,
/// [`TransportError`](super::TransportError) through the SDK's own client for `http://`.
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// Wraps `error`.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Cause(Arc::new(error))
    }
}

impl std::ops::Deref for Cause {
    type Target = dyn std::error::Error + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}
