//! Public routes: health, the approval webhook and the quarantine list (both of which still
//! require a client token: the Python orchestrator serves them without one).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use super::{json_response, json_status};
use crate::server::core::Core;

pub(super) fn routes() -> Router<Arc<Core>> {
    Router::new()
        .route(crate::protocol::PUBLIC_STATUS_ENDPOINT, get(status))
        .route("/_public/webhooks/approval/{job_id}", post(super::client::approve_job))
        .route("/_public/jobs/quarantined", get(super::client::quarantined_jobs))
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
