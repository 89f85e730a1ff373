//! `GET /_public/docs` (feature `docs`): the OpenAPI document as an HTML page, Swagger UI, whose
//! script and style sheet are served from the binary (`/_public/docs/swagger-ui-bundle.js`,
//! `/_public/docs/swagger-ui.css`, from the swagger-ui-dist crate): the page fetches nothing but
//! these and `/_public/openapi.json`, all relative to itself, so it works without any network.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use tokio::sync::OnceCell;

use super::ApiError;

/// The style sheet's path.
pub(super) const CSS_PATH: &str = "/_public/docs/swagger-ui.css";
/// The script's path.
pub(super) const JS_PATH: &str = "/_public/docs/swagger-ui-bundle.js";

/// The page: no absolute URL, the script's configuration fixed (no online validator badge).
const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>avto orchestrator API</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script>
window.onload = function () {
  window.ui = SwaggerUIBundle({ url: "openapi.json", dom_id: "#swagger-ui", validatorUrl: null, deepLinking: true });
};
</script>
</body>
</html>
"##;

pub(super) async fn page() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], PAGE).into_response()
}

/// One asset of swagger-ui-dist, read once from the crate's own router (its index page is not
/// used: it writes the request's URI into the HTML unescaped).
async fn asset(name: &str) -> Result<Bytes, ApiError> {
    let router = swagger_ui_dist::generate_routes(swagger_ui_dist::ApiDefinition {
        uri_prefix: "/ui",
        api_definition: swagger_ui_dist::OpenApiSource::Uri("/_public/openapi.json"),
        title: None,
    });
    let req = Request::get(format!("/ui/{name}")).body(Body::empty()).map_err(|e| ApiError::Internal(e.to_string()))?;
    let resp = tower::ServiceExt::oneshot(router, req).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let body =
        axum::body::to_bytes(resp.into_body(), usize::MAX).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    // The source maps are not served.
    let text = String::from_utf8_lossy(&body).replace(&format!("/*# sourceMappingURL={name}.map*/"), "");
    let text = text.replace(&format!("//# sourceMappingURL={name}.map"), "");
    Ok(Bytes::from(text))
}

async fn cached(cell: &'static OnceCell<Bytes>, name: &str, content_type: &'static str) -> Result<Response, ApiError> {
    let body = cell.get_or_try_init(|| asset(name)).await?.clone();
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400")),
        ],
        body,
    )
        .into_response())
}

pub(super) async fn css() -> Result<Response, ApiError> {
    static CSS: OnceCell<Bytes> = OnceCell::const_new();
    cached(&CSS, "swagger-ui.css", "text/css; charset=utf-8").await
}

pub(super) async fn js() -> Result<Response, ApiError> {
    static JS: OnceCell<Bytes> = OnceCell::const_new();
    cached(&JS, "swagger-ui-bundle.js", "text/javascript; charset=utf-8").await
}
