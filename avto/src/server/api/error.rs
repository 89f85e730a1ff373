//! `ApiError`: every error answer is JSON `{"error": "..."}` with a fixed status per variant.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::server::core::CoreError;

/// An error answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    /// Worker authentication failures are 403 (as in RXON), never 401.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 408: the request body did not arrive in time (`HTTP_BODY_READ_TIMEOUT_SECONDS`).
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// 501: a feature that this orchestrator runs without (e.g. S3 files).
    #[error("{0}")]
    NotImplemented(String),
    /// 400 with the list of what is wrong: `{"error", "violations": [{"pointer", "message"}]}`.
    #[error("{message}")]
    Invalid { message: String, violations: Vec<crate::contracts::Violation> },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
            tracing::error!(%status, error = %self, "request failed");
        }
        let retry = match &self {
            ApiError::TooManyRequests { retry_after_secs, .. } => Some(*retry_after_secs),
            _ => None,
        };
        let body = match &self {
            ApiError::Invalid { message, violations } => json!({"error": message, "violations": violations}),
            _ => json!({"error": self.to_string()}),
        };
        let mut resp = (status, super::json_response(&body)).into_response();
        if let Some(secs) = retry {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

impl From<crate::server::auth::AuthError> for ApiError {
    fn from(e: crate::server::auth::AuthError) -> Self {
        use crate::server::auth::AuthError;
        match e {
            AuthError::Invalid(m) => ApiError::BadRequest(m),
            AuthError::Missing(m) => ApiError::Unauthorized(m),
            AuthError::Refused(m) => ApiError::Forbidden(m),
            AuthError::Storage(e) => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::JobNotFound => ApiError::NotFound("Job not found".into()),
            CoreError::Storage(crate::storage::StorageError::Invalid(m)) => ApiError::BadRequest(m),
            CoreError::Storage(s) => ApiError::Unavailable(format!("storage error: {s}")),
            CoreError::Cancel(c) => ApiError::Conflict(format!("Job cannot be cancelled: {c}")),
            CoreError::Approval(crate::engine::ApprovalError::NotWaiting(s)) => {
                ApiError::Conflict(format!("Job is not in a state that can be approved (it is {s})"))
            }
            CoreError::Approval(a) => ApiError::BadRequest(a.to_string()),
            CoreError::Forbidden(m) => ApiError::Forbidden(m),
            CoreError::Conflict(m) => ApiError::Conflict(m),
            // The worker API answers these 200 with a `CONTRACT_VIOLATION_ERROR` body (RXON).
            CoreError::EventContract(m) => ApiError::BadRequest(m),
            ref contract @ CoreError::Contract { ref violations, .. } => {
                ApiError::Invalid { message: contract.to_string(), violations: violations.clone() }
            }
        }
    }
}
