//! The dashboard's pages: `index.html` for every page path (the page's script reads the path
//! and renders the view) and the bundled assets under `/ui/assets/` (ES modules, the style
//! sheet, the icon), all compiled into the binary with `include_str!`/`include_bytes!`: no CDN,
//! no build step, no inline script or style, so the strict `Content-Security-Policy` that
//! [`super::router`] puts on every `/ui` answer holds.
//!
//! Assets answer with a strong `ETag` (SHA-256 of their bytes) and `Cache-Control: no-cache`:
//! the browser revalidates and gets `304 Not Modified` while the binary is the same, and a new
//! binary's assets at once (their URLs are fixed because the modules import each other by name).

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

/// One bundled file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: Asset =
    Asset { name: "index.html", content_type: "text/html; charset=utf-8", body: include_bytes!("assets/index.html") };

const JS: &str = "text/javascript; charset=utf-8";

/// Everything under `/ui/assets/`.
const ASSETS: &[Asset] = &[
    Asset { name: "app.js", content_type: JS, body: include_bytes!("assets/app.js") },
    Asset { name: "api.js", content_type: JS, body: include_bytes!("assets/api.js") },
    Asset { name: "dom.js", content_type: JS, body: include_bytes!("assets/dom.js") },
    Asset { name: "jobs.js", content_type: JS, body: include_bytes!("assets/jobs.js") },
    Asset { name: "job.js", content_type: JS, body: include_bytes!("assets/job.js") },
    Asset { name: "graph.js", content_type: JS, body: include_bytes!("assets/graph.js") },
    Asset { name: "approvals.js", content_type: JS, body: include_bytes!("assets/approvals.js") },
    Asset { name: "workers.js", content_type: JS, body: include_bytes!("assets/workers.js") },
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("assets/app.css") },
    Asset { name: "favicon.svg", content_type: "image/svg+xml", body: include_bytes!("assets/favicon.svg") },
];

/// The `ETag`s of [`INDEX`] and [`ASSETS`] (in that order), computed once.
fn etags() -> &'static [HeaderValue] {
    static TAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    TAGS.get_or_init(|| {
        std::iter::once(&INDEX)
            .chain(ASSETS)
            .map(|a| {
                let digest = Sha256::digest(a.body);
                HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..16])))
                    .expect("hex is a valid header value")
            })
            .collect()
    })
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(v) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) else { return false };
    let tag = etag.to_str().unwrap_or_default();
    v.split(',').map(|t| t.trim().trim_start_matches("W/")).any(|t| t == tag || t == "*")
}

fn serve(asset: &'static Asset, etag: &HeaderValue, headers: &HeaderMap) -> Response {
    let common = [(header::ETAG, etag.clone()), (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))];
    if not_modified(headers, etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, [(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type))], asset.body).into_response()
}

/// `index.html` (every page path answers it; `/ui/login` without a token too).
pub(crate) fn index() -> Response {
    serve(&INDEX, &etags()[0], &HeaderMap::new())
}

async fn page(headers: HeaderMap) -> Response {
    serve(&INDEX, &etags()[0], &headers)
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == name) {
        Some(i) => serve(&ASSETS[i], &etags()[i + 1], &headers),
        None => {
            (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": "no such dashboard asset"}))).into_response()
        }
    }
}

/// The page paths and the assets (never `/ui/login` nor `/ui/api/*`: those are the session's
/// and the API's). `/ui` itself answers the page too (the script treats it as `/ui/jobs`).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/jobs", get(page))
        .route("/ui/jobs/", get(page))
        .route("/ui/jobs/{id}", get(page))
        .route("/ui/approvals", get(page))
        .route("/ui/workers", get(page))
        .route("/ui/assets/{name}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_an_asset_imports_is_bundled() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let module = line.rsplit("from '").next().unwrap().trim_end_matches("';").trim_start_matches("./");
                assert!(ASSETS.iter().any(|b| b.name == module), "{} imports {module}, which is not bundled", a.name);
            }
        }
    }

    #[test]
    fn no_inline_script_style_or_html_injection() {
        let index = std::str::from_utf8(INDEX.body).unwrap();
        assert!(!index.contains("<style") && !index.contains("style=") && !index.contains("onclick"), "index.html");
        for script in index.match_indices("<script").map(|(i, _)| &index[i..]) {
            assert!(script.starts_with("<script type=\"module\" src=\"/ui/assets/"), "only external module scripts");
        }
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            for banned in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
                assert!(!text.contains(banned), "{} uses {banned}", a.name);
            }
        }
    }

    #[test]
    fn if_none_match_is_answered_304() {
        let tag = &etags()[1];
        let mut h = HeaderMap::new();
        assert_eq!(serve(&ASSETS[0], tag, &h).status(), StatusCode::OK);
        h.insert(header::IF_NONE_MATCH, tag.clone());
        assert_eq!(serve(&ASSETS[0], tag, &h).status(), StatusCode::NOT_MODIFIED);
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(serve(&ASSETS[0], tag, &h).status(), StatusCode::OK);
    }
}
