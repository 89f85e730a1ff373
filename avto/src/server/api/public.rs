//! Public routes: health, and the approval webhook (which still requires the owner's client token).

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
}
