//! The dashboard (feature `dashboard`), served at `/ui/`: the browser pages ([`assets`]) and the
//! JSON API they call under `/ui/api`, signed in with a session cookie ([`session`]).
//!
//! | file | role |
//! |---|---|
//! | `mod.rs` | the router, the security headers of every `/ui` answer, the job row shared by the views |
//! | `session.rs` | sign-in, the signed cookie, CSRF, the [`session::UiUser`] extractor |
//! | `stream.rs` | `GET /ui/api/stream`: server-sent events from the change feed, stats, pings |
//! | `job.rs` | `GET /ui/api/jobs/{id}` (the job, its timeline, children, why it waits), cancel, approval |
//! | `jobs.rs` | `GET /ui/api/jobs` (filters, cursor paging), its count, cancel every job of a filter, the approvals inbox |
//! | `workers.rs` | `GET /ui/api/workers` (with reputation trends), drain (operator only) |
//! | `assets.rs` | `index.html` for every page path and the bundled `/ui/assets/*` |
//!
//! Every answer carries a strict `Content-Security-Policy` (no inline script or style, nothing
//! from elsewhere), `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`; the API's
//! also `Cache-Control: no-store`. A client session sees only its own jobs (another client's is
//! a 404, as if it did not exist); the workers endpoints are the operator's.

mod assets;
mod job;
mod jobs;
mod session;
mod stream;
mod workers;

use std::sync::{Arc, OnceLock};

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::core::Core;
use crate::job::Job;

/// The `Content-Security-Policy` of every `/ui` answer.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What the dashboard keeps in memory (per orchestrator): the session key, the open streams,
/// the workers' reputation samples and the last stats.
#[derive(Debug, Default)]
pub(crate) struct UiState {
    key: OnceLock<Vec<u8>>,
    pub(super) streams: parking_lot::Mutex<stream::Streams>,
    pub(super) trends: parking_lot::Mutex<workers::Trends>,
    pub(super) stats: parking_lot::Mutex<Option<(std::time::Instant, Arc<Value>)>>,
}

/// The dashboard's state of `core` (created on first use).
pub(crate) fn state(core: &Core) -> &UiState {
    core.ui_slot()
        .get_or_init(|| Box::new(UiState::default()))
        .downcast_ref::<UiState>()
        .expect("the core's dashboard slot holds the dashboard's state")
}

/// The session key: `DASHBOARD_SECRET`, else a random key for the life of the process.
fn key(core: &Core) -> &[u8] {
    state(core).key.get_or_init(|| match &core.config().dashboard_secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => {
            tracing::info!(
                "DASHBOARD_SECRET is not set: dashboard sessions are signed with a random key and end when the process restarts"
            );
            rand::random::<[u8; 32]>().to_vec()
        }
    })
}

/// The dashboard's routes (full paths under `/ui`).
pub(crate) fn router() -> Router<Arc<Core>> {
    let api = Router::new()
        .route("/ui/api/session", post(session::create))
        .route("/ui/api/me", get(session::me))
        .route("/ui/api/logout", post(session::logout))
        .route("/ui/api/stream", get(stream::stream))
        .route("/ui/api/jobs", get(jobs::list))
        .route("/ui/api/jobs/count", get(jobs::count))
        .route("/ui/api/jobs/cancel", post(jobs::cancel))
        .route("/ui/api/approvals", get(jobs::approvals))
        .route("/ui/api/jobs/{id}", get(job::job))
        .route("/ui/api/jobs/{id}/graph.svg", get(jobs::graph))
        .route("/ui/api/jobs/{id}/cancel", post(job::cancel))
        .route("/ui/api/jobs/{id}/approval", post(job::approval))
        .route("/ui/api/workers", get(workers::list))
        .route("/ui/api/workers/{id}/drain", post(workers::drain))
        .route(
            "/ui/api/{*rest}",
            axum::routing::any(|| async {
                crate::server::api::ApiError::NotFound("no such dashboard API route".into())
            }),
        )
        .layer(axum::middleware::map_response(|mut r: Response| async move {
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }));
    Router::new().route("/ui/login", get(session::login)).merge(assets::routes()).merge(api).layer(
        axum::middleware::map_response(|mut r: Response| async move {
            let h = r.headers_mut();
            h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            r
        }),
    )
}

/// A job as a row of the dashboard's lists (and of the stream's `job` events).
pub(crate) fn job_row(job: &Job) -> Value {
    json!({
        "id": job.id,
        "blueprint": job.blueprint,
        "status": job.status,
        "current_state": job.current_state,
        "created_at_ms": job.created_at_ms,
        "updated_at_ms": job.updated_at_ms,
        "progress": job.progress,
        "waiting_reason": job.waiting_reason,
        "error_message": job.error_message,
        "client_id": job.client.id,
        "parent_job_id": job.parent_job_id,
    })
}

/// A job's approval wait as the job page, its "why" and the approvals inbox show it: the
/// message, the integration, the decisions its blueprint allows and when the wait started (the
/// job's last update for a job stored before waits recorded their start).
pub(crate) fn approval_view(job: &Job) -> Value {
    let a = job.approval.as_deref();
    json!({
        "message": a.and_then(|a| a.message.clone()),
        "integration": a.and_then(|a| a.integration.clone()),
        "decisions": a.map(|a| a.transitions.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>()).unwrap_or_default(),
        "since_ms": a.and_then(|a| a.since_ms).unwrap_or(job.updated_at_ms),
    })
}

/// The row of a change from the feed (the same members as [`job_row`]).
pub(crate) fn change_row(c: &super::core::JobChange) -> Value {
    json!({
        "id": c.id,
        "blueprint": c.blueprint,
        "status": c.status,
        "current_state": c.current_state,
        "created_at_ms": c.created_at_ms,
        "updated_at_ms": c.updated_at_ms,
        "progress": c.progress,
        "waiting_reason": c.waiting_reason,
        "error_message": c.error_message,
        "client_id": c.client_id,
        "parent_job_id": c.parent_job_id,
    })
}
