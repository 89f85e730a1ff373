//! The worker SDK's error type.

use std::time::Duration;

/// Everything that can go wrong in the worker SDK.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// Invalid configuration (bad identifier, no orchestrator, unparsable env value, ...).
    #[error("worker configuration: {0}")]
    Config(String),
    /// Could not reach the orchestrator (connection refused, reset, timeout, ...).
    #[error("network error: {0}")]
    Network(String),
    /// HTTP 429. `retry_after` from the `Retry-After` header when present.
    #[error("rate limited (429): {message}")]
    RateLimited { retry_after: Option<Duration>, message: String },
    /// Any other non-2xx answer. `body` is the raw answer (usually `{"error": "..."}`).
    #[error("HTTP {status}: {body}")]
    Http { status: u16, body: String },
    /// The answer was not the expected JSON.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An event type that the skill did not declare in `events_schema` (strict event validation).
    #[error("undeclared event type '{0}' (declare it with Skill::event_schema or disable strict event validation)")]
    UndeclaredEvent(String),
    /// The orchestrator rejected an event (`{"status": "error", ...}`).
    #[error("event rejected: {0}")]
    EventRejected(String),
}

impl WorkerError {
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
