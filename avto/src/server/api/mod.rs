//! The HTTP API: client routes (`/{CLIENT_API_PREFIX}`), worker routes (`/_worker`, RXON) and
//! public routes (`/_public`).

mod auth;
mod client;
#[cfg(feature = "docs")]
mod docs;
pub(super) mod error;
mod files;
mod metrics;
mod openapi;
mod public;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{Map, Value};

pub(super) use auth::Operator;
pub use error::ApiError;

use super::core::Core;

/// One route the router serves: what [`crate::server::Orchestrator::served_routes`] lists and
/// what the OpenAPI document is generated from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedRoute {
    /// `GET`, `POST`, ...
    pub method: Method,
    /// The path template in axum's syntax (`/api/v1/jobs/{job_id}`, `{*filename}` for a rest).
    pub path: String,
    /// The operation: the name of its handler (`job_status`, ...), `create_job` for a
    /// blueprint's create route, `worker` for the RXON routes of workers.
    pub operation: &'static str,
    /// Client routes: the API version segment the route is served under (`None`: without one).
    pub version: Option<&'static str>,
    /// `create_job` routes: the blueprint.
    pub blueprint: Option<&'static str>,
}

/// A router that records what it serves ([`ServedRoute`]), so the OpenAPI document and the
/// tests are derived from the routes themselves.
pub(super) struct Routes {
    router: Router<Arc<Core>>,
    served: Vec<ServedRoute>,
}

impl Routes {
    pub(super) fn new() -> Routes {
        Routes { router: Router::new(), served: Vec::new() }
    }

    /// Serves `handler` on `method path` as operation `operation`.
    pub(super) fn on<H, T>(self, method: Method, path: &str, operation: &'static str, handler: H) -> Routes
    where
        H: axum::handler::Handler<T, Arc<Core>>,
        T: 'static,
    {
        self.on_route(ServedRoute { method, path: path.to_owned(), operation, version: None, blueprint: None }, handler)
    }

    /// Serves `handler` on `route.method route.path`, recorded as `route`.
    pub(super) fn on_route<H, T>(mut self, route: ServedRoute, handler: H) -> Routes
    where
        H: axum::handler::Handler<T, Arc<Core>>,
        T: 'static,
    {
        let filter = axum::routing::MethodFilter::try_from(route.method.clone()).expect("a routable method");
        self.router = self.router.route(&route.path, axum::routing::on(filter, handler));
        self.served.push(route);
        self
    }

    /// The routes of `other` too.
    pub(super) fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.served.extend(other.served);
        self
    }
}

/// Every route, with the OpenAPI document of them generated once (the blueprints are known).
fn routes(core: &Arc<Core>) -> Routes {
    let doc = Arc::new(std::sync::OnceLock::new());
    let mut routes = Routes::new().merge(public::routes(doc.clone())).merge(worker::routes()).merge(metrics::routes());
    if core.config().enable_client_api {
        routes = routes.merge(client::routes(core));
    }
    let _ = doc.set(openapi::document(core, &routes.served));
    routes
}

/// What the router of `core` serves.
pub(super) fn served(core: &Arc<Core>) -> Vec<ServedRoute> {
    routes(core).served
}

/// The whole router.
pub(super) fn router(core: Arc<Core>) -> Router {
    let app = routes(&core).router;
    // Every answer names the RXON version (as the Python orchestrator's middleware does).
    let version_header =
        header::HeaderName::try_from(crate::protocol::PROTOCOL_VERSION_HEADER).expect("a valid header name");
    app.fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed("method not allowed on this route".into()) })
        .layer(axum::middleware::map_response(move |mut r: Response| {
            let version_header = version_header.clone();
            async move {
                r.headers_mut().insert(version_header, HeaderValue::from_static(crate::protocol::PROTOCOL_VERSION));
                r
            }
        }))
        .with_state(core)
}

/// A JSON response body in canonical form.
pub(super) fn json_response(v: &Value) -> Response {
    // Keys sorted, `null` members dropped, integral floats as integers: what the Python
    // orchestrator answers, written straight from the value without a normalised copy.
    canonical_response(crate::protocol::canonical::to_canonical_vec(v))
}

/// A JSON response of a body already in canonical form.
pub(super) fn canonical_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// JSON with a status.
pub(super) fn json_status(status: StatusCode, v: &Value) -> Response {
    let mut r = json_response(v);
    *r.status_mut() = status;
    r
}

/// `axum::extract::Query` whose rejection (a value of the wrong type, a member twice, ...) is a
/// JSON 400 like every other error, not axum's plain-text one.
#[derive(Debug, Clone)]
pub(super) struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(q) => Ok(Query(q.0)),
            Err(e) => Err(ApiError::bad(format!("Invalid query string: {}", truncate(&e.body_text())))),
        }
    }
}

/// `axum::extract::Path` whose rejection (a segment that is not UTF-8 once decoded, ...) is a
/// JSON 400.
#[derive(Debug, Clone)]
pub(super) struct Path<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(Path(p.0)),
            Err(e) => Err(ApiError::bad(format!("Invalid path: {}", truncate(&e.body_text())))),
        }
    }
}

/// A JSON object body, size-limited, with JSON errors for every way it can be wrong.
#[derive(Debug, Clone)]
pub(super) struct JsonObject(pub Map<String, Value>);

impl FromRequest<Arc<Core>> for JsonObject {
    type Rejection = ApiError;
    async fn from_request(req: Request, core: &Arc<Core>) -> Result<Self, ApiError> {
        let bytes = read_body(req, core.config()).await?;
        parse_object_within(&bytes, core.config().max_json_depth).map(JsonObject)
    }
}

/// Reads a body up to `MAX_REQUEST_BODY_BYTES` (413 beyond) that arrives within
/// `HTTP_BODY_READ_TIMEOUT_SECONDS` (408 otherwise: a body that stalls after its head must not
/// hold the connection and its handler forever).
pub(super) async fn read_body(req: Request, cfg: &crate::server::Config) -> Result<Bytes, ApiError> {
    let limit = cfg.max_body_bytes;
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok()) {
        if len > limit {
            return Err(too_large(limit));
        }
    }
    match tokio::time::timeout(cfg.http_body_read_timeout, axum::body::to_bytes(req.into_body(), limit)).await {
        Ok(read) => read.map_err(|_| too_large(limit)),
        Err(_) => Err(body_timeout(cfg.http_body_read_timeout)),
    }
}

/// The answer to a request body that did not arrive in time.
pub(crate) fn body_timeout(after: std::time::Duration) -> ApiError {
    ApiError::RequestTimeout(format!(
        "the request body did not arrive within {} s (HTTP_BODY_READ_TIMEOUT_SECONDS)",
        after.as_secs_f64()
    ))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "request body is larger than the limit of {limit} bytes (MAX_REQUEST_BODY_BYTES)"
    ))
}

/// Parses a JSON object (400 for invalid JSON, a non-object, or one nested deeper than the
/// default `MAX_JSON_DEPTH`, see [`parse_object_within`]).
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    parse_object_within(bytes, crate::server::config::DEFAULT_MAX_JSON_DEPTH)
}

/// Parses a JSON object (400 for invalid JSON, a non-object, or one that nests arrays and
/// objects more than `max_depth` levels deep, the body itself being the first: `MAX_JSON_DEPTH`).
pub fn parse_object_within(bytes: &[u8], max_depth: usize) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad("Invalid JSON body: the body is empty, expected a JSON object"));
    }
    check_depth(bytes, max_depth)?;
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(ApiError::bad(format!("Invalid JSON body: expected a JSON object, got {}", kind(&other)))),
        Err(e) => Err(ApiError::bad(format!("Invalid JSON body: {e}"))),
    }
}

/// 400 naming the member of the top-level object that nests arrays and objects more than
/// `max_depth` levels deep (the body itself is level 1). A scan of the bytes before parsing,
/// so it also names the member of a body deeper than serde_json reads.
pub fn check_depth(bytes: &[u8], max_depth: usize) -> Result<(), ApiError> {
    // Nesting never goes deeper than the body has `{` and `[` bytes (those in strings counted
    // too): a body with no more of them than the limit needs no scan (most bodies).
    if !brackets_exceed(bytes, max_depth) {
        return Ok(());
    }
    let (mut depth, mut expecting_key) = (0usize, false);
    // The span of the current top-level member's key (read only for the answer).
    let mut member = None::<(usize, usize)>;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' => {
                // A string, skipped to its closing quote (`memchr2` looks at many bytes at a
                // time; most of a JSON body is strings). Unterminated: the parser refuses it.
                let start = i;
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', bytes.get(i..).unwrap_or_default()) {
                        Some(k) if bytes[i + k] == b'"' => {
                            i += k;
                            break;
                        }
                        Some(k) => i += k + 2, // an escape and the byte it escapes
                        None => return Ok(()),
                    }
                }
                if depth == 1 && expecting_key {
                    member = Some((start, i));
                    expecting_key = false;
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth == 1 {
                    expecting_key = b == b'{';
                }
                if depth > max_depth {
                    let member =
                        member.and_then(|(start, end)| serde_json::from_slice::<String>(&bytes[start..=end]).ok());
                    let what = match &member {
                        Some(m) => format!("`{}`", truncate(m)),
                        None => "the body".to_owned(),
                    };
                    return Err(ApiError::bad(format!(
                        "Invalid JSON body: {what} nests arrays and objects more than {max_depth} levels deep (MAX_JSON_DEPTH)"
                    )));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expecting_key = true,
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// True when `bytes` holds more than `limit` `{` and `[` bytes. Counted 255 bytes at a time into
/// a byte (`[` and `{` differ only in the 0x20 bit, so one comparison finds both), which the
/// compiler turns into vector code: about 0.8 instructions a byte, against 5.4 for a filtered
/// count (the scan runs over every JSON body the API reads).
fn brackets_exceed(bytes: &[u8], limit: usize) -> bool {
    let mut n = 0usize;
    for chunk in bytes.chunks(255) {
        n += chunk.iter().fold(0u8, |sum, &b| sum.wrapping_add(u8::from(b | 0x20 == b'{'))) as usize;
        if n > limit {
            return true;
        }
    }
    false
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The rate-limit identity of an anonymous request: its peer's IP address, an IPv6 address by
/// its /64 network (one host usually holds a whole /64).
pub(super) fn peer_key(req_ext: &axum::http::Extensions) -> String {
    match req_ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()) {
        None => "unknown".into(),
        Some(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(ip) => ip.to_canonical().to_string(),
    }
}

/// Checks a job id is a UUID (400 otherwise), so bad ids never reach storage.
pub(super) fn check_job_id(id: &str) -> Result<(), ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| ApiError::bad(format!("invalid job id `{}`: expected a UUID", truncate(id))))
}

pub(crate) fn truncate(s: &str) -> String {
    if s.len() <= 80 {
        s.to_owned()
    } else {
        let mut end = 80;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::{brackets_exceed, check_depth, ApiError};

    /// The member a too-deep body is refused for (None: accepted).
    fn refused_member(body: &str, max_depth: usize) -> Option<String> {
        match check_depth(body.as_bytes(), max_depth) {
            Ok(()) => None,
            Err(ApiError::BadRequest(msg)) => Some(msg),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    /// The scan skips strings (brackets, escaped quotes and backslashes in them count for
    /// nothing), names the top-level member that goes too deep (its key unescaped), and reads a
    /// body cut off inside a string or after a backslash without panicking.
    #[test]
    fn the_depth_scan_skips_strings_and_names_the_member() {
        let deep = format!("{}{}", "[".repeat(5), "]".repeat(5));
        let strings = r#""[[[[[[[[", "a\"[[[[[[[[\\", "\\\"{{{{{{{{""#;
        let body = format!(r#"{{"s": [{strings}], "k\"ey": {deep}, "after": 1}}"#);
        let msg = refused_member(&body, 4).expect("refused");
        assert!(msg.contains(r#"`k"ey`"#), "{msg}");
        assert_eq!(refused_member(&body, 6), None);
        // Only strings hold brackets: never too deep.
        assert_eq!(refused_member(&format!(r#"{{"a": [{strings}]}}"#), 2), None);
        // Deep, but the top level is an array: no member to name.
        let msg = refused_member(&format!("[{deep}]"), 3).expect("refused");
        assert!(msg.contains("the body"), "{msg}");
        // Cut off inside a string, after a backslash, right after an opening quote.
        for cut in [r#"{"a": "[[[[[[[["#, r#"{"a": "[[[[[[[[\"#, r#"[[[[[[["[[[["#, r#"[[[[[[["\"#] {
            assert_eq!(refused_member(cut, 7), None, "{cut}");
        }
        // An escaped backslash ends no string early and starts no escape of the quote after it.
        assert!(refused_member(r#"{"a": "x\\", "b": [[[[[[[[1]]]]]]]]}"#, 7).expect("refused").contains("`b`"));
    }

    /// The chunked count says what a plain count says, at every limit around it, for bodies
    /// made only of brackets (every byte of a chunk counted: no overflow) and for mixed ones.
    #[test]
    fn brackets_are_counted_as_a_plain_count_would() {
        let mixed: Vec<u8> = (0..3000u32).map(|i| b"{[]}\"x:,[0{Z\x7b\x5b\xfb\xdb"[(i * 7 % 16) as usize]).collect();
        let bodies: [Vec<u8>; 5] = [Vec::new(), vec![b'{'; 255], vec![b'['; 256], vec![b'{'; 1000], mixed];
        for body in &bodies {
            let plain = body.iter().filter(|&&b| b == b'{' || b == b'[').count();
            for limit in [0, plain.saturating_sub(1), plain, plain + 1, 2000] {
                assert_eq!(brackets_exceed(body, limit), plain > limit, "{} bytes, limit {limit}", body.len());
            }
        }
    }
}
