//! Who is calling, for HTTP: the extractors of the client and operator credentials, the rate
//! limits charged on the way in, and whether a job belongs to the calling client. What a
//! credential is worth is [`crate::server::auth`]'s concern; this module reads the headers.

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::header;
use axum::http::request::Parts;

use super::{check_job_id, ApiError};
use crate::job::Job;
use crate::server::config::ClientEntry;
use crate::server::core::Core;
use crate::server::metrics::{reason, role};

/// The authenticated client of a request: token checked first, then the rate limit of that
/// client on that route (`RATE_LIMIT_LIMIT` per `RATE_LIMIT_PERIOD`, keyed by client and route
/// template, so varying a job id does not escape it). A request without a valid
/// token counts against the limit of its IP address only (an IPv6 address by its /64), so no
/// request data ever becomes a rate-limit key.
#[derive(Debug, Clone)]
pub(crate) struct Client(pub Arc<ClientEntry>);

impl FromRequestParts<Arc<Core>> for Client {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, core: &Arc<Core>) -> Result<Self, ApiError> {
        let route = parts.extensions.get::<MatchedPath>().map_or("-", |m| m.as_str());
        let entry = match authenticate(parts, core) {
            Ok(entry) => entry,
            Err(e) => {
                rate_limit(core, &format!("anon:{}", super::peer_key(&parts.extensions)), "ip", route).await?;
                return Err(e);
            }
        };
        rate_limit(core, &format!("client:{}:{route}", entry.config.id), "client", route).await?;
        Ok(Client(entry.clone()))
    }
}

/// Takes one job creation from the client's `monthly_attempts` (429 when this calendar month's
/// are spent). Only creating a job counts: reads fall under the rate limits only.
pub(super) async fn charge_quota(core: &Core, client: &ClientEntry) -> Result<(), ApiError> {
    if client.quota.is_some() && !core.take_quota(&client.token).await.map_err(storage)? {
        return Err(ApiError::TooManyRequests {
            message: format!("Quota exceeded for client `{}` (monthly_attempts)", client.config.name),
            retry_after_secs: secs_to_next_month(crate::job::now_ms()),
        });
    }
    Ok(())
}

/// Seconds until the next calendar month (UTC) begins, when a spent quota is new again.
fn secs_to_next_month(now_ms: u64) -> u64 {
    let month = crate::storage::quota_month(now_ms);
    // The next month starts at most 31 days ahead: find its first day.
    let day = 86_400_000;
    let mut t = now_ms - now_ms % day;
    while crate::storage::quota_month(t) == month {
        t += day;
    }
    (t - now_ms).div_ceil(1000).max(1)
}

/// The configured client whose token the request carries (401 otherwise; counted in
/// `avto_security_auth_failures_total{role="client"}`).
fn authenticate<'c>(parts: &Parts, core: &'c Core) -> Result<&'c Arc<ClientEntry>, ApiError> {
    let invalid = || {
        core.auth().refused(role::CLIENT, reason::INVALID_TOKEN);
        ApiError::Unauthorized("Unauthorized: Invalid token".into())
    };
    let Some(token) = parts.headers.get("x-client-token") else {
        core.auth().refused(role::CLIENT, reason::MISSING_CREDENTIALS);
        return Err(ApiError::Unauthorized("Missing X-Client-Token header".into()));
    };
    let token = token.to_str().map_err(|_| invalid())?;
    core.auth().client_by_token(token).ok_or_else(invalid)
}

/// Counts one request against `key` (429 with `Retry-After` over the limit; a refusal is
/// counted in `avto_ratelimit_blocked_total{scope,path}`, `path` a route template or `rxon:{kind}`).
pub(super) async fn rate_limit(core: &Core, key: &str, scope: &'static str, path: &str) -> Result<(), ApiError> {
    if !core.config().rate_limiting_enabled {
        return Ok(());
    }
    if let Err(wait) = core.rate_hit(key, None).await.map_err(storage)? {
        core.metrics().rate_limited(scope, path);
        return Err(ApiError::TooManyRequests {
            message: "Too Many Requests".into(),
            retry_after_secs: wait.as_secs() + 1,
        });
    }
    Ok(())
}

pub(super) fn storage(e: crate::storage::StorageError) -> ApiError {
    ApiError::Unavailable(format!("storage error: {e}"))
}

/// A request authenticated with the operator credential (`ADMIN_TOKEN`), sent as
/// `Authorization: Bearer <token>` (what Prometheus scrapers send) or `X-Admin-Token: <token>`.
/// 401 without it, 403 when it is wrong, when the request only carries a client token, or when
/// no `ADMIN_TOKEN` is configured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operator;

impl Operator {
    /// `Ok(None)` when the request carries no operator credential at all.
    pub(crate) fn check(parts: &axum::http::request::Parts, core: &Core) -> Result<Option<Operator>, ApiError> {
        let h = &parts.headers;
        let presented = h
            .get("x-admin-token")
            .or_else(|| h.get(header::AUTHORIZATION))
            .map(|v| v.to_str().unwrap_or_default())
            .map(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v).trim());
        let Some(presented) = presented else { return Ok(None) };
        core.auth().check_operator(presented)?;
        Ok(Some(Operator))
    }
}

impl axum::extract::FromRequestParts<Arc<Core>> for Operator {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, core: &Arc<Core>) -> Result<Self, ApiError> {
        let op = Operator::check(parts, core)?;
        if op.is_none() {
            core.auth().refused(role::OPERATOR, reason::MISSING_CREDENTIALS);
        }
        match op {
            Some(op) => Ok(op),
            None if parts.headers.contains_key("x-client-token") => Err(ApiError::Forbidden(
                "Forbidden: this route needs the operator credential (ADMIN_TOKEN), not a client token".into(),
            )),
            None => Err(ApiError::Unauthorized(
                "this route needs the operator credential: Authorization: Bearer <ADMIN_TOKEN>".into(),
            )),
        }
    }
}

/// Loads a job of this client (404 for unknown ids and for other clients' jobs, so nothing leaks).
pub(super) async fn owned_job(core: &Core, client: &ClientEntry, job_id: &str) -> Result<Job, ApiError> {
    check_job_id(job_id)?;
    match core.job(job_id).await.map_err(storage)? {
        Some(j) if j.client.id == client.config.id => Ok(j),
        _ => Err(ApiError::NotFound("Job not found".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::secs_to_next_month;

    #[test]
    fn a_spent_quota_is_retried_at_the_next_utc_month() {
        let jan_1_2027 = 1_798_761_600_000; // 2027-01-01T00:00:00Z
        assert_eq!(secs_to_next_month(jan_1_2027 - 1), 1);
        assert_eq!(secs_to_next_month(jan_1_2027 - 86_400_000 - 500), 86_401);
        assert_eq!(secs_to_next_month(jan_1_2027), 31 * 86_400, "January has 31 days");
    }
}
