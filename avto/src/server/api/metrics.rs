//! `GET /metrics` (operator credential): the Prometheus page of [`crate::server::metrics`],
//! from a snapshot of what the stores count now.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::Method;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::prometheus_text;

use super::{Operator, Routes};
use crate::server::core::Core;
use crate::server::metrics::{HistoryNumbers, Snapshot};

pub(super) fn routes() -> Routes {
    Routes::new().on(Method::GET, "/metrics", "metrics", metrics_page)
}

/// What the stores count at this moment (counters, never a walk over the jobs).
async fn snapshot(core: &Core) -> Snapshot {
    Snapshot {
        job_counts: core.job_counts(None).await.unwrap_or_default(),
        queue_depth: core.queue_depth().await,
        live_workers: core.live_worker_count().await,
        blueprints: core.env().blueprints().map(|b| b.name().to_owned()).collect(),
        history: core.history().map(|h| {
            let s = h.stats();
            HistoryNumbers {
                written: s.written.load(Ordering::Relaxed),
                dropped: s.dropped.load(Ordering::Relaxed),
                failed: s.failed.load(Ordering::Relaxed),
                queued: h.queued(),
            }
        }),
        webhooks: core.webhooks().counts(),
        redis_round_trips: core.storage_round_trips(),
    }
}

async fn metrics_page(State(core): State<Arc<Core>>, _operator: Operator) -> Response {
    let body = core.metrics().render(&snapshot(&core).await);
    ([(header::CONTENT_TYPE, HeaderValue::from_static(prometheus_text::CONTENT_TYPE))], body).into_response()
}
