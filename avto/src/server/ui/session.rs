//! Signing in to the dashboard: a stateless session cookie, the CSRF check, and [`UiUser`], the
//! extractor every `/ui/api` handler takes.
//!
//! The cookie `avto_ui` is `v1.<role>.<client id, hex>.<expiry, Unix s>.<nonce>.<mac>`: `mac` the
//! HMAC-SHA256 of the rest with `DASHBOARD_SECRET` (unset: a random key per process), so the
//! server keeps no session table and a changed byte is refused. It is `HttpOnly`,
//! `SameSite=Strict`, `Path=/ui`, `Secure` under TLS, and lasts [`MAX_AGE_SECS`]. Every `POST`
//! also needs the header `X-CSRF-Token` (the HMAC of the session's `mac`, told at sign-in and by
//! `GET /ui/api/me`), and an `Origin`, when the browser sends one, naming the request's `Host`.
//!
//! A client session is its client's identity (`ClientConfig::id`), not its token: it ends when
//! the client is no longer configured. Wrong tokens count against the caller's address like
//! the client API's (`RATE_LIMIT_*`; `avto_security_auth_failures_total`).

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use crate::context::ClientConfig;
use crate::protocol::sign::constant_time_eq;
use crate::server::api::{peer_key, ApiError, JsonObject, Query};
use crate::server::core::Core;
use crate::server::metrics::{reason, role};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "avto_ui";
/// How long a session lasts (12 h).
pub(crate) const MAX_AGE_SECS: u64 = 43_200;
/// The CSRF header every `POST` carries.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// Tokens longer than this are not tokens.
const MAX_TOKEN_BYTES: usize = 4096;

/// Who signed in.
#[derive(Debug, Clone)]
pub(crate) enum Role {
    Operator,
    Client(Arc<ClientConfig>),
}

/// A verified session: who, until when, and its nonce (one per sign-in: it keys the stream count).
#[derive(Debug, Clone)]
pub(crate) struct UiUser {
    pub role: Role,
    pub expires: u64,
    pub nonce: String,
    /// The session's MAC (the CSRF token is derived from it).
    mac: String,
}

impl UiUser {
    /// The client identity a client session is limited to (`None`: the operator sees all).
    pub(crate) fn client_id(&self) -> Option<&str> {
        match &self.role {
            Role::Operator => None,
            Role::Client(c) => Some(&c.id),
        }
    }

    pub(crate) fn is_operator(&self) -> bool {
        matches!(self.role, Role::Operator)
    }

    /// Whether this session may see a job of `client_id`.
    pub(crate) fn sees(&self, client_id: &str) -> bool {
        self.client_id().is_none_or(|own| own == client_id)
    }

    /// 403 unless the operator signed in.
    pub(crate) fn operator_only(&self) -> Result<(), ApiError> {
        match self.is_operator() {
            true => Ok(()),
            false => Err(ApiError::Forbidden("this needs the operator's sign-in (ADMIN_TOKEN)".into())),
        }
    }

    /// What sign-in and `/ui/api/me` answer.
    fn body(&self, key: &[u8]) -> Value {
        let (role, client_id) = match &self.role {
            Role::Operator => ("operator", None),
            Role::Client(c) => ("client", Some(c.id.clone())),
        };
        json!({"role": role, "client_id": client_id, "csrf": csrf_of(key, &self.mac), "expires_at": self.expires})
    }
}

fn mac_hex(key: &[u8], message: &str) -> String {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn csrf_of(key: &[u8], session_mac: &str) -> String {
    mac_hex(key, &format!("csrf|{session_mac}"))
}

/// The signed cookie value of a new session.
pub(crate) fn sign(key: &[u8], role: &Role, expires: u64) -> String {
    let (r, id) = match role {
        Role::Operator => ("o", String::new()),
        Role::Client(c) => ("c", hex::encode(c.id.as_bytes())),
    };
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let body = format!("v1.{r}.{id}.{expires}.{nonce}");
    let mac = mac_hex(key, &body);
    format!("{body}.{mac}")
}

/// A cookie value as signed: `(role letter, client id, expiry, nonce, mac)`, or `None` when it
/// is malformed, tampered with or expired at `now` (Unix s).
pub(crate) fn verify(key: &[u8], value: &str, now: u64) -> Option<(char, String, u64, String, String)> {
    if value.len() > 1024 {
        return None;
    }
    let (body, mac) = value.rsplit_once('.')?;
    if !constant_time_eq(mac_hex(key, body).as_bytes(), mac.as_bytes()) {
        return None;
    }
    let mut parts = body.split('.');
    let (v, r, id, expires, nonce) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if v != "v1" || parts.next().is_some() {
        return None;
    }
    let expires: u64 = expires.parse().ok()?;
    if expires <= now {
        return None;
    }
    let id = String::from_utf8(hex::decode(id).ok()?).ok()?;
    let r = match r {
        "o" => 'o',
        "c" => 'c',
        _ => return None,
    };
    Some((r, id, expires, nonce.to_owned(), mac.to_owned()))
}

fn now_secs() -> u64 {
    crate::job::now_ms() / 1000
}

/// The `avto_ui` cookie of a request, if any.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')))
}

/// The session of a request (401 without a valid one).
fn session(parts: &Parts, core: &Core) -> Result<UiUser, ApiError> {
    let unauthorized = || ApiError::Unauthorized("not signed in to the dashboard (or the session expired)".into());
    let key = super::key(core);
    let value = cookie(&parts.headers).ok_or_else(unauthorized)?;
    let (r, id, expires, nonce, mac) = verify(key, value, now_secs()).ok_or_else(unauthorized)?;
    let role = match r {
        'o' => Role::Operator,
        _ => {
            // The client must still be configured (its entry may have gone with a reload).
            let entry = core.config().clients.iter().find(|c| c.config.id == id).ok_or_else(unauthorized)?;
            Role::Client(Arc::new(entry.config.clone()))
        }
    };
    Ok(UiUser { role, expires, nonce, mac })
}

/// A `POST`'s CSRF header and `Origin` (403 when either is wrong).
fn check_csrf(parts: &Parts, key: &[u8], user: &UiUser) -> Result<(), ApiError> {
    let h = &parts.headers;
    let expected = csrf_of(key, &user.mac);
    let sent = h.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::Forbidden("missing or wrong X-CSRF-Token header".into()));
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin_host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, rest)| rest);
        if host.is_none() || origin_host != host {
            return Err(ApiError::Forbidden("the request's Origin is not this server".into()));
        }
    }
    Ok(())
}

impl FromRequestParts<Arc<Core>> for UiUser {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, core: &Arc<Core>) -> Result<Self, ApiError> {
        let user = session(parts, core)?;
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            check_csrf(parts, super::key(core), &user)?;
        }
        Ok(user)
    }
}

/// Who `token` signs in as; a wrong token is counted (metrics and the caller's rate limit).
async fn sign_in_as(core: &Core, parts_ext: &axum::http::Extensions, token: &str) -> Result<Role, ApiError> {
    if !token.is_empty() && token.len() <= MAX_TOKEN_BYTES {
        if let Some(entry) = core.auth().client_by_token(token) {
            return Ok(Role::Client(Arc::new(entry.config.clone())));
        }
        // Counted as an operator failure when it is not ADMIN_TOKEN either.
        if core.auth().check_operator(token).is_ok() {
            return Ok(Role::Operator);
        }
    } else {
        core.auth().refused(role::CLIENT, reason::INVALID_TOKEN);
    }
    if core.config().rate_limiting_enabled {
        let key = format!("anon:{}", peer_key(parts_ext));
        if let Err(wait) = core.rate_hit(&key, None).await.map_err(|e| ApiError::Unavailable(e.to_string()))? {
            core.metrics().rate_limited("ip", "/ui/api/session");
            return Err(ApiError::TooManyRequests {
                message: "Too Many Requests".into(),
                retry_after_secs: wait.as_secs() + 1,
            });
        }
    }
    Err(ApiError::Unauthorized("wrong token: sign in with a client token or the operator's ADMIN_TOKEN".into()))
}

/// The `Set-Cookie` of a new session for `role`.
fn session_cookie(core: &Core, role: Role) -> (UiUser, HeaderValue) {
    let key = super::key(core);
    let expires = now_secs() + MAX_AGE_SECS;
    let value = sign(key, &role, expires);
    let secure = if core.config().tls.is_some() { "; Secure" } else { "" };
    let header = format!("{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={MAX_AGE_SECS}{secure}");
    let (_, _, _, nonce, mac) = verify(key, &value, now_secs()).expect("a cookie just signed verifies");
    (UiUser { role, expires, nonce, mac }, HeaderValue::from_str(&header).expect("a cookie of ASCII"))
}

/// `POST /ui/api/session {"token": ..}`: signs in (sets the cookie).
pub(super) async fn create(
    State(core): State<Arc<Core>>,
    ext: axum::http::Extensions,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let token =
        body.get("token").and_then(Value::as_str).ok_or_else(|| ApiError::bad("`token` (a string) is required"))?;
    let role = sign_in_as(&core, &ext, token).await?;
    let (user, cookie) = session_cookie(&core, role);
    let mut r = Json(user.body(super::key(&core))).into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(r)
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct LoginQuery {
    token: Option<String>,
}

/// `GET /ui/login?token=..` (the link the quickstart prints): signs in and sends the browser
/// to `/ui/` (303, so the token leaves the address bar); a wrong token goes to
/// `/ui/login?failed=1`. Without `token`, the sign-in page.
pub(super) async fn login(
    State(core): State<Arc<Core>>,
    ext: axum::http::Extensions,
    Query(q): Query<LoginQuery>,
) -> Response {
    let Some(token) = q.token else { return super::assets::index() };
    let see_other = |to: &'static str| {
        let mut r = StatusCode::SEE_OTHER.into_response();
        r.headers_mut().insert(header::LOCATION, HeaderValue::from_static(to));
        r
    };
    match sign_in_as(&core, &ext, &token).await {
        Ok(role) => {
            let (_, cookie) = session_cookie(&core, role);
            let mut r = see_other("/ui/");
            r.headers_mut().insert(header::SET_COOKIE, cookie);
            r
        }
        Err(ApiError::TooManyRequests { .. }) => see_other("/ui/login?failed=rate"),
        Err(_) => see_other("/ui/login?failed=1"),
    }
}

/// `GET /ui/api/me`: the session (401 without one).
pub(super) async fn me(State(core): State<Arc<Core>>, user: UiUser) -> Json<Value> {
    Json(user.body(super::key(&core)))
}

/// `POST /ui/api/logout`: clears the cookie (a stateless session stays valid until it expires
/// for whoever kept a copy; the browser forgets it).
pub(super) async fn logout(_user: UiUser) -> Response {
    let mut r = Json(json!({"status": "signed_out"})).into_response();
    let clear = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&clear).expect("ASCII"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str) -> Role {
        Role::Client(Arc::new(ClientConfig { id: id.into(), ..Default::default() }))
    }

    #[test]
    fn a_signed_cookie_verifies_until_it_expires() {
        let key = b"k1";
        let v = sign(key, &client("toml:a.b|c"), 1_000);
        let (r, id, exp, nonce, _) = verify(key, &v, 999).expect("valid before expiry");
        assert_eq!((r, id.as_str(), exp), ('c', "toml:a.b|c", 1_000));
        assert_eq!(nonce.len(), 32);
        assert!(verify(key, &v, 1_000).is_none(), "expired at its expiry");
        let op = sign(key, &Role::Operator, 1_000);
        assert_eq!(verify(key, &op, 0).map(|s| (s.0, s.1)), Some(('o', String::new())));
    }

    #[test]
    fn a_tampered_or_foreign_cookie_is_refused() {
        let key = b"k1";
        let v = sign(key, &client("a"), 10_000);
        assert!(verify(b"k2", &v, 0).is_none(), "another key");
        // Every single-character change is refused.
        for i in 0..v.len() {
            let mut bytes = v.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let changed = String::from_utf8(bytes).unwrap();
            if changed != v {
                assert!(verify(key, &changed, 0).is_none(), "changed at {i}: {changed}");
            }
        }
        // A client cookie made an operator one (the MAC no longer matches).
        let forged = v.replacen("v1.c.", "v1.o.", 1);
        assert!(verify(key, &forged, 0).is_none());
        for junk in ["", ".", "v1", "v1.o..1.n", &"x".repeat(5000)] {
            assert!(verify(key, junk, 0).is_none(), "{junk:.20}");
        }
    }

    #[test]
    fn the_csrf_token_is_bound_to_the_session() {
        let key = b"k";
        let a = verify(key, &sign(key, &Role::Operator, 10), 0).unwrap().4;
        let b = verify(key, &sign(key, &Role::Operator, 10), 0).unwrap().4;
        assert_ne!(csrf_of(key, &a), csrf_of(key, &b));
        assert_eq!(csrf_of(key, &a), csrf_of(key, &a));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("x=1; avto_ui=v1.o..5.n.m; y=2"));
        assert_eq!(cookie(&h), Some("v1.o..5.n.m"));
        h.insert(header::COOKIE, HeaderValue::from_static("avto_uix=1"));
        assert_eq!(cookie(&h), None);
    }
}
