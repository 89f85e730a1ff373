//! Public routes: health, the approval webhook and the quarantine list (both of which still
//! require a client token: the Python orchestrator serves them without one).

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use super::json_response;
use crate::server::core::Core;

pub(super) fn routes() -> Router<Arc<Core>> {
    Router::new()
        .route("/_public/status", get(|| async { json_response(&json!({"status": "ok"})) }))
        .route("/_public/webhooks/approval/{job_id}", post(super::client::approve_job))
        .route("/_public/jobs/quarantined", get(super::client::quarantined_jobs))
}
