//! Public routes: health, the OpenAPI document and its HTML page, the approval webhook and the
//! quarantine list (both of which still require a client token: the Python orchestrator serves
//! them without one).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{json_response, json_status, Routes};
use crate::server::core::Core;

/// Where the OpenAPI document is served.
pub(super) const OPENAPI_PATH: &str = "/_public/openapi.json";
/// Where its HTML page is served.
#[cfg(feature = "docs")]
pub(super) const DOCS_PATH: &str = "/_public/docs";

/// The public routes; `doc` is the OpenAPI document, set once every route is known.
pub(super) fn routes(doc: Arc<std::sync::OnceLock<Bytes>>) -> Routes {
    let r = Routes::new()
        .on(Method::GET, crate::protocol::PUBLIC_STATUS_ENDPOINT, "status", status)
        .on(Method::GET, OPENAPI_PATH, "openapi", move || openapi(doc.clone()))
        .on(Method::POST, "/_public/webhooks/approval/{job_id}", "approval_webhook", super::client::approve_job)
        .on(Method::GET, "/_public/jobs/quarantined", "quarantined_jobs", super::client::quarantined_jobs);
    #[cfg(feature = "docs")]
    let r = r
        .on(Method::GET, DOCS_PATH, "docs", super::docs::page)
        .on(Method::GET, super::docs::CSS_PATH, "docs_css", super::docs::css)
        .on(Method::GET, super::docs::JS_PATH, "docs_js", super::docs::js);
    r
}

/// `GET /_public/openapi.json`: the document generated at start-up, as it was serialized then
/// (plain serde_json: a schema's `"default": null` stays).
async fn openapi(doc: Arc<std::sync::OnceLock<Bytes>>) -> Response {
    let body = doc.get().cloned().unwrap_or_default();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// `GET /_public/status`: 200 `{"status": "ok"}`, or 503 `{"status": "unhealthy", "failed_tasks":
/// [...]}` when a background task panicked too often and stays down (see
/// [`crate::supervise`]): this instance no longer does all of its work.
async fn status(State(core): State<Arc<Core>>) -> Response {
    let failed = core.health().failed();
    if failed.is_empty() {
        return json_response(&json!({"status": crate::protocol::response_status::OK}));
    }
    json_status(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": "unhealthy", "failed_tasks": failed}))
}
