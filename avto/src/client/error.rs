//! [`ClientError`]: what a call of the client API can end with besides its answer.

use std::time::Duration;

use serde_json::Value;

pub use reqwest::StatusCode;

use super::{JobId, JobView};

/// Why a [`Client`](super::Client) call did not return its typed answer. `request` is the
/// method and URL (`GET http://host/api/v1/jobs/...`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The orchestrator answered with an error status: `message` is the `error` field of its JSON
    /// body (`{"error": "..."}`; a 400 of a contract also lists `violations`), `body` the whole body
    /// (`Null` when it was not JSON).
    #[error("{request}: {status}: {message}")]
    Api { request: String, status: StatusCode, message: String, body: Value },
    /// The request did not get an answer: connection refused or reset, DNS, TLS, or the request
    /// timeout ([`Client::request_timeout`](super::Client::request_timeout)) ran out (see
    /// [`TransportError::is_timeout`](super::TransportError::is_timeout) and the others).
    #[error("{request}: {source}")]
    Transport {
        request: String,
        #[source]
        source: super::TransportError,
    },
    /// The orchestrator answered 2xx with a body this client cannot read.
    #[error("{request}: unexpected answer: {message}")]
    Decode { request: String, message: String },
    /// [`Client::wait`](super::Client::wait) ran out of time; `last` is the job as last seen.
    #[error("job {job_id} did not reach {what} in {waited:?} (last status: {})", last.as_ref().map(|j| j.status.as_str()).unwrap_or("unknown"))]
    Timeout { job_id: JobId, what: String, waited: Duration, last: Option<Box<JobView>> },
    /// A base URL or an argument that cannot form a request URL.
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The HTTP status of an [`ClientError::Api`] answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's JSON error body of an [`ClientError::Api`] answer.
    pub fn body(&self) -> Option<&Value> {
        match self {
            ClientError::Api { body, .. } => Some(body),
            _ => None,
        }
    }

    /// A 404: unknown job (or another client's), unknown endpoint, file not found.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    /// [`ClientError::Timeout`] of a wait.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Timeout { .. })
    }
}
