//! Replay protection: the 60 s timestamp window and the 65 s nonce memory.
//!
//! Order in the orchestrator (before the signature check of [`super::sign::verify_security`]):
//! 1. [`check_timestamp`]: `timestamp` must be present (and not 0) and within ±60 s of now;
//! 2. the nonce ([`message_nonce`]: `event_id`, else `nonce`, else `message_id`, else
//!    `security.signature`) must not have been seen from this worker in the last 65 s
//!    ([`NonceCache`]). Note that two byte-identical messages in the same second share the
//!    signature and therefore collide; that is the reference behaviour.

use super::sign::{is_truthy, ZeroTrustError};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Maximum accepted |now − timestamp| in seconds (61 s fails).
pub const TIMESTAMP_WINDOW_SECS: i64 = 60;
/// How long a nonce is remembered.
pub const NONCE_TTL: Duration = Duration::from_secs(65);

/// Current Unix time in whole seconds.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The message timestamp as the orchestrator reads it: `int(timestamp)` of a truthy value
/// (integers, floats truncated toward zero, numeric strings). `None` = missing/falsy.
pub fn message_timestamp(body: &Value) -> Option<Result<i64, ()>> {
    let ts = body.get("timestamp").filter(|v| is_truthy(v))?;
    Some(match ts {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f.trunc() as i64)).ok_or(()),
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| ()),
        Value::Bool(true) => Ok(1),
        _ => Err(()),
    })
}

/// Timestamp check. `Err(MissingTimestamp)` also covers an unparsable value.
pub fn check_timestamp(body: &Value, now_unix: i64) -> Result<(), ZeroTrustError> {
    match message_timestamp(body) {
        None | Some(Err(())) => Err(ZeroTrustError::MissingTimestamp),
        Some(Ok(ts)) if (now_unix - ts).abs() > TIMESTAMP_WINDOW_SECS => Err(ZeroTrustError::TimestampExpired),
        Some(Ok(_)) => Ok(()),
    }
}

/// The replay nonce of a message: `event_id`, `nonce` or `message_id` (first truthy one), else
/// `security.signature`.
pub fn message_nonce(body: &Value) -> Option<String> {
    for key in ["event_id", "nonce", "message_id"] {
        if let Some(v) = body.get(key).filter(|v| is_truthy(v)) {
            return Some(match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
    }
    body.get("security")
        .and_then(|s| s.get("signature"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Remembers `(worker_id, nonce)` pairs for [`NONCE_TTL`]. Not synchronised: wrap it in a
/// `Mutex` when shared.
#[derive(Debug)]
pub struct NonceCache {
    ttl: Duration,
    seen: HashMap<(String, String), Instant>,
    order: VecDeque<(Instant, (String, String))>,
}

impl Default for NonceCache {
    fn default() -> Self {
        Self::new(NONCE_TTL)
    }
}

impl NonceCache {
    pub fn new(ttl: Duration) -> Self {
        NonceCache { ttl, seen: HashMap::new(), order: VecDeque::new() }
    }

    /// Record the nonce; `true` if it is new (or its previous sighting expired), `false` for a
    /// replay (`set_nx_ttl` semantics).
    pub fn check_and_insert(&mut self, worker_id: &str, nonce: &str, now: Instant) -> bool {
        self.prune(now);
        let key = (worker_id.to_owned(), nonce.to_owned());
        if let Some(expiry) = self.seen.get(&key) {
            if *expiry > now {
                return false;
            }
        }
        let expiry = now + self.ttl;
        self.seen.insert(key.clone(), expiry);
        self.order.push_back((expiry, key));
        true
    }

    /// Check the nonce of a whole message ([`message_nonce`]); messages without one pass.
    pub fn check_message(&mut self, worker_id: &str, body: &Value, now: Instant) -> Result<(), ZeroTrustError> {
        match message_nonce(body) {
            Some(nonce) if !self.check_and_insert(worker_id, &nonce, now) => Err(ZeroTrustError::Duplicate),
            _ => Ok(()),
        }
    }

    /// Drop expired entries.
    pub fn prune(&mut self, now: Instant) {
        while let Some((expiry, _)) = self.order.front() {
            if *expiry > now {
                break;
            }
            let (expiry, key) = self.order.pop_front().expect("front exists");
            if self.seen.get(&key).is_some_and(|e| *e <= expiry) {
                self.seen.remove(&key);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}
