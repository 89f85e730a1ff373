//! The counters of what the orchestrator refused or gave up on (spec §10.2): security
//! rejections, rate-limit refusals, task timeouts and ignored results.
//!
//! Every label takes its value from a fixed set of words, a route template of the router or a
//! blueprint name of the binary: never a worker id, a token, a request path or anything else a
//! caller chose, so the number of series stays bounded whatever the callers send.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::protocol::sign::ZeroTrustError;

/// The `role` of `avto_security_auth_failures_total`: whose credential was refused.
pub(crate) mod role {
    pub(crate) const CLIENT: &str = "client";
    pub(crate) const WORKER: &str = "worker";
    pub(crate) const OPERATOR: &str = "operator";
}

/// The `reason` words of `avto_security_auth_failures_total`.
pub(crate) mod reason {
    /// No credential at all (no token header, no client certificate).
    pub(crate) const MISSING_CREDENTIALS: &str = "missing_credentials";
    /// A token that is no configured, individual, global or live STS token (or the wrong one).
    pub(crate) const INVALID_TOKEN: &str = "invalid_token";
    /// The credential belongs to another worker than the request (or its body) names.
    pub(crate) const WORKER_ID_MISMATCH: &str = "worker_id_mismatch";
    /// A client certificate for another worker than the request names.
    pub(crate) const CERTIFICATE_MISMATCH: &str = "certificate_mismatch";
    /// A client certificate whose CN is no valid worker id.
    pub(crate) const INVALID_CERTIFICATE: &str = "invalid_certificate";
    /// `WORKER_AUTH_MODE=mtls-only` and the request came without a certificate.
    pub(crate) const MTLS_REQUIRED: &str = "mtls_required";
    /// The operator routes are off (`ADMIN_TOKEN` unset).
    pub(crate) const DISABLED: &str = "disabled";
    /// A worker message without its `security` block or signature.
    pub(crate) const MISSING_SIGNATURE: &str = "missing_signature";
    /// A worker message signed in the name of another worker.
    pub(crate) const SIGNER_MISMATCH: &str = "signer_mismatch";
    /// A worker message whose signature is wrong.
    pub(crate) const INVALID_SIGNATURE: &str = "invalid_signature";
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AuthFailureLabels {
    role: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RateLimitLabels {
    /// `client` (a client on a route), `worker` (a worker and a request kind), `ip` (requests
    /// without a valid credential, per address).
    scope: &'static str,
    /// The route template (`/api/v1/jobs/{job_id}`) or `rxon:{kind}` for worker requests.
    path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TimeoutLabels {
    blueprint: String,
    r#type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct IgnoredLabels {
    blueprint: String,
    reason: &'static str,
}

/// Security rejections, shared by the credential checks ([`crate::server::Auth`]) and the
/// message checks of the worker API (cheap to clone: every clone counts into the same series).
#[derive(Debug, Clone, Default)]
pub struct SecurityCounters {
    auth_failures: Family<AuthFailureLabels, Counter>,
    replays: Family<ReasonLabel, Counter>,
}

impl SecurityCounters {
    /// A credential of `role` refused for `reason` (the words of [`super::Metrics`]'s table).
    pub fn auth_failure(&self, role: &'static str, reason: &'static str) {
        self.auth_failures.get_or_create(&AuthFailureLabels { role, reason }).inc();
    }

    /// A worker message refused by the zero-trust checks: replays (a nonce seen before, a
    /// timestamp outside the window or none) count in `avto_security_replay_detected_total`,
    /// signature failures in `avto_security_auth_failures_total{role="worker"}`.
    pub fn message_refused(&self, e: &ZeroTrustError) {
        let replay = |reason| {
            self.replays.get_or_create(&ReasonLabel { reason }).inc();
        };
        match e {
            ZeroTrustError::Duplicate => replay("duplicate"),
            ZeroTrustError::TimestampExpired => replay("expired"),
            ZeroTrustError::MissingTimestamp => replay("missing_timestamp"),
            ZeroTrustError::MissingSecurity | ZeroTrustError::MissingSignature => {
                self.auth_failure(role::WORKER, reason::MISSING_SIGNATURE)
            }
            ZeroTrustError::SignerMismatch { .. } => self.auth_failure(role::WORKER, reason::SIGNER_MISMATCH),
            ZeroTrustError::InvalidSignature => self.auth_failure(role::WORKER, reason::INVALID_SIGNATURE),
        }
    }
}

/// Rate-limit refusals, timeouts and ignored results, with the security counters.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    pub(super) security: SecurityCounters,
    rate_limited: Family<RateLimitLabels, Counter>,
    timeouts: Family<TimeoutLabels, Counter>,
    ignored: Family<IgnoredLabels, Counter>,
}

impl Refusals {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "avto_security_auth_failures",
            "Requests refused for their credential or their message signature, by role and reason",
            self.security.auth_failures.clone(),
        );
        r.register(
            "avto_security_replay_detected",
            "Worker messages refused as replays: a nonce seen before, a timestamp outside the window or none",
            self.security.replays.clone(),
        );
        r.register(
            "avto_ratelimit_blocked",
            "Requests refused by a rate limit (429), by scope and route (rxon:{kind} for workers)",
            self.rate_limited.clone(),
        );
        r.register(
            "avto_jobs_timeouts",
            "Tasks that timed out, by blueprint and type (dispatch: not picked up in time; execution: no result in time)",
            self.timeouts.clone(),
        );
        r.register(
            "avto_tasks_ignored",
            "Worker results ignored, by blueprint and reason (blueprint empty for an unknown job)",
            self.ignored.clone(),
        );
    }

    pub(super) fn rate_limited(&self, scope: &'static str, path: &str) {
        self.rate_limited.get_or_create(&RateLimitLabels { scope, path: path.to_owned() }).inc();
    }

    pub(super) fn timeout(&self, blueprint: &str, kind: &'static str) {
        self.timeouts.get_or_create(&TimeoutLabels { blueprint: blueprint.to_owned(), r#type: kind }).inc();
    }

    pub(super) fn ignored(&self, blueprint: &str, reason: &'static str) {
        self.ignored.get_or_create(&IgnoredLabels { blueprint: blueprint.to_owned(), reason }).inc();
    }
}
