//! The RXON worker protocol (wire-compatible with rxon 1.0b17 / avtomatika 1.0b30), shared by
//! the orchestrator's worker API and the Rust worker SDK.
//!
//! * [`canonical`]: canonical JSON (sorted keys, no whitespace, nulls dropped, integral floats as
//!   integers), byte-for-byte what rxon signs and what the Python SDK sends;
//! * [`sign`]: HMAC-SHA256 message signatures, the task `sig`, the zero-trust checks;
//! * [`replay`]: the 60 s timestamp window and the 65 s nonce cache;
//! * [`wire`]: serde types of every message, the only spelling of each on both sides (how the
//!   orchestrator reads what workers send: `lenient`);
//! * constants (versions, headers, endpoints, error codes, statuses) and identifier validation here.
//!
//! ```
//! use avto::protocol::{canonical, sign};
//! use serde_json::json;
//!
//! let body = json!({"worker_id": "w-1", "status": "idle", "timestamp": 1795689991, "usage": null});
//! assert_eq!(canonical::to_canonical_string(&body), r#"{"status":"idle","timestamp":1795689991,"worker_id":"w-1"}"#);
//! let mut signed = body.clone();
//! sign::attach_security(&mut signed, "token", "w-1", sign::MessageKind::Heartbeat);
//! assert!(sign::verify_message(&signed, "token", sign::MessageKind::Heartbeat));
//! ```

pub mod canonical;
pub(crate) mod lenient;
pub mod replay;
pub mod sign;
pub mod wire;

pub use canonical::{to_canonical_string, to_canonical_string_of};
pub use replay::{check_timestamp, message_nonce, nonce_ttl, unix_now, NonceCache, NONCE_TTL, TIMESTAMP_WINDOW_SECS};
pub use sign::{
    attach_security, sign_message, sign_payload, sign_task, verify_message, verify_payload, verify_security,
    verify_task, MessageKind, TaskSigCheck, ZeroTrustError,
};
pub use wire::*;

/// rxon `PROTOCOL_VERSION`.
pub const PROTOCOL_VERSION: &str = "1.0b17";
/// Header carrying [`PROTOCOL_VERSION`] on every request and response.
pub const PROTOCOL_VERSION_HEADER: &str = "X-RXON-Version";
/// Worker auth token header (static token or STS access token).
pub const AUTH_HEADER_WORKER: &str = "X-Worker-Token";
/// Worker id header.
pub const AUTH_HEADER_WORKER_ID: &str = "X-Worker-ID";
/// Client API token header.
pub const AUTH_HEADER_CLIENT: &str = "X-Client-Token";

/// Prefix of every worker route.
pub const WORKER_API_PREFIX: &str = "/_worker";
pub const ENDPOINT_WORKER_REGISTER: &str = "/_worker/workers/register";
pub const ENDPOINT_TASK_RESULT: &str = "/_worker/tasks/result";
/// avto's extension: several results in one request (not in RXON; the Python orchestrator lacks it).
pub const ENDPOINT_TASK_RESULTS: &str = "/_worker/tasks/results";
pub const ENDPOINT_WORKER_EVENTS: &str = "/_worker/events";
pub const STS_TOKEN_ENDPOINT: &str = "/_worker/auth/token";
pub const STS_REFRESH_ENDPOINT: &str = "/_worker/auth/token/refresh";
pub const WS_ENDPOINT: &str = "/_worker/ws";
pub const PUBLIC_STATUS_ENDPOINT: &str = "/_public/status";

/// Most tasks one poll answer carries (`max_tasks`, an avto extension: the batch answer
/// `{"tasks": [...]}`).
pub const MAX_TASKS_PER_POLL: usize = 64;
/// Most results one `POST` to [`ENDPOINT_TASK_RESULTS`] carries (`{"results": [...]}`).
pub const MAX_RESULTS_PER_BATCH: usize = 64;

/// `PATCH` target of heartbeats: `/_worker/workers/{worker_id}`.
pub fn heartbeat_path(worker_id: &str) -> String {
    format!("{WORKER_API_PREFIX}/workers/{worker_id}")
}
/// Long-poll target: `/_worker/workers/{worker_id}/tasks/next`.
pub fn task_next_path(worker_id: &str) -> String {
    format!("{WORKER_API_PREFIX}/workers/{worker_id}/tasks/next")
}
/// WebSocket command channel: `/_worker/ws/{worker_id}`.
pub fn ws_path(worker_id: &str) -> String {
    format!("{WS_ENDPOINT}/{worker_id}")
}

/// `error.code` values (rxon constants) and what the orchestrator does with them.
pub mod error_codes {
    /// Re-dispatched with a new task id up to `JOB_MAX_RETRIES`, then quarantined. The default.
    pub const TRANSIENT_ERROR: &str = "TRANSIENT_ERROR";
    /// Job quarantined, reputation penalty.
    pub const PERMANENT_ERROR: &str = "PERMANENT_ERROR";
    /// Job failed, no retry.
    pub const INVALID_INPUT_ERROR: &str = "INVALID_INPUT_ERROR";
    /// Job failed, no retry.
    pub const INTEGRITY_MISMATCH_ERROR: &str = "INTEGRITY_MISMATCH_ERROR";
    pub const TIMEOUT_ERROR: &str = "TIMEOUT_ERROR";
    pub const LATE_RESULT: &str = "LATE_RESULT";
    pub const RESOURCE_EXHAUSTED_ERROR: &str = "RESOURCE_EXHAUSTED_ERROR";
    pub const LIMIT_EXCEEDED_ERROR: &str = "LIMIT_EXCEEDED_ERROR";
    /// Quarantine + a larger reputation penalty.
    pub const CONTRACT_VIOLATION_ERROR: &str = "CONTRACT_VIOLATION_ERROR";
    pub const DEPENDENCY_MISSING_ERROR: &str = "DEPENDENCY_MISSING_ERROR";
    /// Quarantine.
    pub const DEPENDENCY_ERROR: &str = "DEPENDENCY_ERROR";
    /// Quarantine.
    pub const SECURITY_ERROR: &str = "SECURITY_ERROR";
    pub const INTERNAL_ERROR: &str = "INTERNAL_ERROR";
    /// avto's own (not in rxon): no worker picked the task up within its dispatch timeout. Job
    /// failed, no retry.
    pub const DISPATCH_TIMEOUT_ERROR: &str = "DISPATCH_TIMEOUT_ERROR";
}
pub use error_codes::*;

/// Built-in WebSocket command: cancel a running task.
pub const COMMAND_CANCEL_TASK: &str = "cancel_task";
/// Event type of progress reports (`payload: {"progress": f, "message": s}`).
pub const EVENT_TYPE_PROGRESS: &str = "progress";
/// Heartbeat answer key: resend the skill catalogue.
pub const HB_RESP_REQUIRE_FULL_SYNC: &str = "require_full_sync";
/// Heartbeat answer key: ids to cancel.
pub const HB_RESP_CANCEL_TASKS: &str = "cancel_task_ids";

/// Job statuses of the client API.
pub mod job_status {
    pub const PENDING: &str = "pending";
    pub const WAITING_FOR_WORKER: &str = "waiting_for_worker";
    pub const RUNNING: &str = "running";
    pub const FINISHED: &str = "finished";
    pub const FAILED: &str = "failed";
    pub const ERROR: &str = "error";
    pub const QUARANTINED: &str = "quarantined";
    pub const CANCELLED: &str = "cancelled";
    pub const WAITING_FOR_HUMAN: &str = "waiting_for_human";
    pub const WAITING_FOR_PARALLEL: &str = "waiting_for_parallel_tasks";
    /// rxon `TERMINAL_STATES`.
    pub const TERMINAL: [&str; 5] = [FINISHED, FAILED, ERROR, QUARANTINED, CANCELLED];
}

/// Maximum identifier length.
pub const MAX_IDENTIFIER_LEN: usize = 128;

/// Most worker ids an event's `bubbling_chain` may hold, the orchestrator's own append included
/// (each at most [`MAX_IDENTIFIER_LEN`] bytes); the orchestrator refuses a longer chain (400).
pub const MAX_BUBBLING_CHAIN: usize = 32;

/// `^[a-zA-Z0-9_-]{1,128}$`: worker ids, skill names, blueprint names.
pub fn is_valid_identifier(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_IDENTIFIER_LEN
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An identifier failed [`is_valid_identifier`]; `Display` is rxon's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid {what}: '{value}'. Must be alphanumeric, underscores, or hyphens only (max 128 characters).")]
pub struct InvalidIdentifier {
    pub what: String,
    pub value: String,
}

/// [`is_valid_identifier`] as a `Result`; `what` names the value in the message ("WORKER_ID").
pub fn validate_identifier(value: &str, what: &str) -> Result<(), InvalidIdentifier> {
    if is_valid_identifier(value) {
        Ok(())
    } else {
        Err(InvalidIdentifier { what: what.to_owned(), value: value.to_owned() })
    }
}

/// The SDK's `skills_hash`: sha256 (hex) of the canonical
/// `{"skills": [...], "capabilities": cost_per_skill, "extra": extra}`, where `extra` is the
/// operator-supplied extras (`WORKER_EXTRA_*`), without the `websockets` flag.
pub fn skills_hash(
    skills: &[SkillInfo],
    cost_per_skill: &std::collections::BTreeMap<String, f64>,
    extra: &serde_json::Map<String, serde_json::Value>,
) -> String {
    let contract = serde_json::json!({
        "skills": skills,
        "capabilities": cost_per_skill,
        "extra": extra,
    });
    sign::sha256_hex(canonical::to_canonical_string(&contract).as_bytes())
}

/// The SDK's `capabilities.s3_config_hash`: first 16 hex chars of sha256("endpoint|access_key|bucket"),
/// `None` unless all three are set.
pub fn s3_config_hash(endpoint: Option<&str>, access_key: Option<&str>, bucket: Option<&str>) -> Option<String> {
    match (endpoint, access_key, bucket) {
        (Some(e), Some(a), Some(b)) if !e.is_empty() && !a.is_empty() && !b.is_empty() => {
            Some(sign::sha256_hex(format!("{e}|{a}|{b}").as_bytes())[..16].to_owned())
        }
        _ => None,
    }
}
