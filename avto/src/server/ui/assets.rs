//! The dashboard's pages: `index.html` for every page path (the page's script reads the path)
//! and the bundled assets under `/ui/assets/`.
//!
//! A placeholder until the browser assets land: every page path answers a minimal page.

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::server::core::Core;

const INDEX: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>avto</title></head>\
<body><main><h1>avto dashboard</h1><p>The dashboard's pages are not bundled in this build.</p></main></body></html>\n";

/// `index.html` (every page path answers it; `/ui/login` without a token too).
pub(crate) fn index() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], INDEX).into_response()
}

/// The page paths and the assets (never `/ui/login` nor `/ui/api/*`: those are the session's
/// and the API's).
pub(crate) fn routes() -> Router<Arc<Core>> {
    let page = || get(|| async { index() });
    Router::new()
        .route("/ui", page())
        .route("/ui/", page())
        .route("/ui/jobs", page())
        .route("/ui/jobs/{id}", page())
        .route("/ui/approvals", page())
        .route("/ui/workers", page())
}
