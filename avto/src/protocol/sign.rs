//! HMAC-SHA256 message signatures ("zero trust") and the orchestrator's task signature.
//!
//! * Worker messages (register, heartbeat, result, event): `hex(HMAC-SHA256(worker token,
//!   canonical(body minus "security", "_signature")))`; events additionally leave out
//!   `bubbling_chain`. The token is the worker's individual token or the global worker token (the
//!   static one, even when the request authenticated with an STS access token).
//! * Tasks (orchestrator → worker): `sig = hex(HMAC-SHA256(ORCHESTRATOR_SECRET_KEY,
//!   canonical(task minus "sig", "orchestrator_signature", "security")))`.
//!
//! Everything works on `serde_json::Value` so that the server can verify the body exactly as
//! received (the orchestrator signs and verifies raw dicts, unknown keys included).

use super::canonical::{to_canonical_vec_filtered, to_canonical_vec_signed};
use super::wire::SecurityContext;
use crate::mru::Mru;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Top-level keys never covered by a message signature.
pub const SIGNATURE_IGNORED_FIELDS: [&str; 2] = ["security", "_signature"];
/// Extra key left out of event signatures.
pub const EVENT_IGNORED_FIELD: &str = "bubbling_chain";
/// Keys left out of the task signature (besides `security`).
pub const TASK_SIG_IGNORED_FIELDS: [&str; 2] = ["sig", "orchestrator_signature"];
/// The SDK's placeholder token: a worker configured with it does not sign.
pub const PLACEHOLDER_WORKER_TOKEN: &str = "your-secret-worker-token";

/// Which kind of message is signed (decides the ignored fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageKind {
    Registration,
    Heartbeat,
    Result,
    Event,
}

impl MessageKind {
    /// The extra fields (besides `security`/`_signature`) left out of this kind's signature.
    pub fn ignored_fields(self) -> &'static [&'static str] {
        match self {
            MessageKind::Event => &[EVENT_IGNORED_FIELD],
            _ => &[],
        }
    }
}

/// Lowercase hex HMAC-SHA256 of raw bytes.
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = keyed_mac(key);
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// How many keys each thread keeps ready (the orchestrator signs with a handful: its secret,
/// the global worker token, the webhook keys of its busiest clients).
const KEYED_CACHE: usize = 4;

thread_local! {
    /// The HMAC state after the key (its inner and outer pads hashed), per recent key: a message
    /// then costs a clone instead of two SHA-256 blocks. Keys are the server's own secrets.
    static KEYED: std::cell::RefCell<Mru<Box<[u8]>, HmacSha256, KEYED_CACHE>> = const { std::cell::RefCell::new(Mru::new()) };
}

/// A fresh HMAC-SHA256 keyed with `key`, cloned from this thread's cache of recent keys.
fn keyed_mac(key: &[u8]) -> HmacSha256 {
    KEYED.with_borrow_mut(|cache| {
        let mac = || HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
        cache.get_or_insert_with(key, mac).clone()
    })
}

/// Lowercase hex SHA-256 of raw bytes.
pub fn sha256_hex(message: &[u8]) -> String {
    hex::encode(Sha256::digest(message))
}

/// The canonical bytes a signature covers: `payload` minus `security`, `_signature` and `ignore`
/// (top-level keys only; a non-object payload is signed as is).
pub fn signing_input(payload: &Value, ignore: &[&str]) -> Vec<u8> {
    to_canonical_vec_filtered(payload, |k| not_signed(k, ignore))
}

/// Whether a signature leaves out the top-level member `key`: `security`, `_signature` and `ignore`.
fn not_signed(key: &str, ignore: &[&str]) -> bool {
    SIGNATURE_IGNORED_FIELDS.contains(&key) || ignore.contains(&key)
}

/// rxon `sign_payload`: hex HMAC-SHA256 of the canonical payload minus `security`, `_signature`
/// and `ignore`.
pub fn sign_payload(payload: &Value, secret: &str, ignore: &[&str]) -> String {
    hmac_sha256_hex(secret.as_bytes(), &signing_input(payload, ignore))
}

/// rxon `verify_signature`, constant-time. Empty signature or secret never verifies.
pub fn verify_payload(payload: &Value, signature: &str, secret: &str, ignore: &[&str]) -> bool {
    if signature.is_empty() || secret.is_empty() {
        return false;
    }
    constant_time_eq(sign_payload(payload, secret, ignore).as_bytes(), signature.as_bytes())
}

/// Sign a worker message of `kind` with `token`.
pub fn sign_message(body: &Value, token: &str, kind: MessageKind) -> String {
    sign_payload(body, token, kind.ignored_fields())
}

/// Verify `body.security.signature` of a worker message of `kind` against `token`.
pub fn verify_message(body: &Value, token: &str, kind: MessageKind) -> bool {
    let sig = body.get("security").and_then(|s| s.get("signature")).and_then(Value::as_str).unwrap_or("");
    verify_payload(body, sig, token, kind.ignored_fields())
}

/// Set `body.security = {"signature", "signer_id"}` (the SDK's format), replacing any previous
/// `security`. A non-object body is left alone.
pub fn attach_security(body: &mut Value, token: &str, signer_id: &str, kind: MessageKind) {
    let signature = sign_message(body, token, kind);
    if let Value::Object(map) = body {
        let sec =
            SecurityContext { signature: Some(signature), signer_id: Some(signer_id.to_owned()), ..Default::default() };
        map.insert("security".into(), serde_json::to_value(sec).expect("SecurityContext serialises"));
    }
}

/// The task signature (`sig`) over `task` minus `sig`, `orchestrator_signature` and `security`.
pub fn sign_task(task: &Value, secret: &str) -> String {
    sign_payload(task, secret, &TASK_SIG_IGNORED_FIELDS)
}

/// The canonical form of `task` with its `sig` ([`sign_task`]) and then the members of `after`
/// (added after signing, not covered; `null` ones left out), the members `sig` covers written
/// once: byte for byte the canonical form of `task` with `sig` and `after` inserted.
pub fn signed_task_canonical(task: &Map<String, Value>, secret: &str, after: Vec<(&'static str, Value)>) -> Vec<u8> {
    to_canonical_vec_signed(
        task,
        |k| !not_signed(k, &TASK_SIG_IGNORED_FIELDS),
        |input| {
            let mut members = after;
            members.push(("sig", Value::String(hmac_sha256_hex(secret.as_bytes(), input))));
            members
        },
    )
}

/// Keys of rxon's `TaskPayload`. The SDK verifies the signature over the payload parsed into that
/// struct, so keys the orchestrator adds after signing (`skill_version`, `skill_type`) do not count.
pub const TASK_PAYLOAD_KEYS: [&str; 16] = [
    "job_id",
    "task_id",
    "type",
    "params",
    "tracing_context",
    "params_metadata",
    "priority",
    "deadline",
    "security",
    "metadata",
    "timestamp",
    "policy",
    "sig",
    "step",
    "depth",
    "parent_hash",
];

/// Verify a task's `sig` (or `orchestrator_signature`) with the orchestrator secret.
///
/// Accepts a signature over the raw task, and one over the task restricted to
/// [`TASK_PAYLOAD_KEYS`] (what the Python SDK checks). Returns [`TaskSigCheck`].
pub fn verify_task(task: &Value, secret: &str) -> TaskSigCheck {
    let sig = task
        .get("sig")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| task.get("orchestrator_signature").and_then(Value::as_str).filter(|s| !s.is_empty()));
    let Some(sig) = sig else { return TaskSigCheck::Missing };
    if verify_payload(task, sig, secret, &TASK_SIG_IGNORED_FIELDS) {
        return TaskSigCheck::Valid;
    }
    if let Value::Object(map) = task {
        let unknown = |k: &str| !TASK_PAYLOAD_KEYS.contains(&k);
        if map.keys().any(|k| unknown(k)) {
            let input = to_canonical_vec_filtered(task, |k| unknown(k) || not_signed(k, &TASK_SIG_IGNORED_FIELDS));
            if constant_time_eq(hmac_sha256_hex(secret.as_bytes(), &input).as_bytes(), sig.as_bytes()) {
                return TaskSigCheck::Valid;
            }
        }
    }
    TaskSigCheck::Invalid
}

/// Outcome of [`verify_task`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskSigCheck {
    Valid,
    Invalid,
    /// Neither `sig` nor `orchestrator_signature` present.
    Missing,
}

/// Constant-time byte comparison (lengths may leak).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why the orchestrator rejects a signed worker message. `Display` is the orchestrator's error
/// text (all of these are HTTP 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZeroTrustError {
    #[error("Missing required timestamp for replay protection")]
    MissingTimestamp,
    #[error("Message timestamp expired (replay protection)")]
    TimestampExpired,
    #[error("Duplicate message detected (replay attack)")]
    Duplicate,
    #[error("Missing required security context")]
    MissingSecurity,
    #[error("Missing required cryptographic signature")]
    MissingSignature,
    #[error("Message signer ID '{signer}' does not match worker ID '{worker}'")]
    SignerMismatch { signer: String, worker: String },
    #[error("Invalid cryptographic signature")]
    InvalidSignature,
}

/// The signature part of the orchestrator's zero-trust check (after the timestamp and nonce
/// checks, see [`super::replay`]): `security` present, `signature` present, `signer_id` (if any)
/// equal to the authenticated worker, signature valid for `secret`. With no secret (empty) the
/// check passes, as in the orchestrator.
pub fn verify_security(
    body: &Value,
    secret: &str,
    authenticated_worker_id: &str,
    kind: MessageKind,
) -> Result<(), ZeroTrustError> {
    let security = body.get("security").filter(|s| is_truthy(s));
    let Some(security) = security else {
        return if secret.is_empty() { Ok(()) } else { Err(ZeroTrustError::MissingSecurity) };
    };
    let signature = security.get("signature").and_then(Value::as_str).filter(|s| !s.is_empty());
    let Some(signature) = signature else {
        return if secret.is_empty() { Ok(()) } else { Err(ZeroTrustError::MissingSignature) };
    };
    if let Some(signer) = security.get("signer_id").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        if signer != authenticated_worker_id {
            return Err(ZeroTrustError::SignerMismatch {
                signer: signer.to_owned(),
                worker: authenticated_worker_id.to_owned(),
            });
        }
    }
    if !secret.is_empty() && !verify_payload(body, signature, secret, kind.ignored_fields()) {
        return Err(ZeroTrustError::InvalidSignature);
    }
    Ok(())
}

/// Python truthiness of a JSON value (`if payload.get("security"):`).
pub(crate) fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}
