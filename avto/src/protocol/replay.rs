//! Replay protection: the 60 s timestamp window and a nonce memory that outlives it.
//!
//! Order in the orchestrator (before the signature check of [`super::sign::verify_security`]):
//! 1. [`check_timestamp`]: `timestamp` must be present (and not 0) and within ±60 s of now;
//! 2. the nonce ([`message_nonce`]: `event_id`, else `nonce`, else `message_id`, else
//!    `security.signature`) must not have been seen from this worker while the message's
//!    timestamp is still accepted: each nonce is kept [`nonce_ttl`] (until its timestamp has
//!    left the window, at most [`NONCE_TTL`]), so a replay is refused for as long as its
//!    timestamp would pass ([`NonceCache`] keeps every nonce the full [`NONCE_TTL`]). Note that two
//!    byte-identical messages in the same second share the signature and therefore collide;
//!    that is the reference behaviour.

use super::sign::{is_truthy, ZeroTrustError};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Maximum accepted |now − timestamp| in seconds (61 s fails).
pub const TIMESTAMP_WINDOW_SECS: i64 = 60;
/// The longest a nonce must be remembered: a message stamped at the future edge of the window
/// (now + 60 s) is accepted until its timestamp is 60 s old, 120 s later, plus a second for the
/// whole-second clock (see [`nonce_ttl`]).
pub const NONCE_TTL: Duration = Duration::from_secs(2 * TIMESTAMP_WINDOW_SECS as u64 + 2);

/// How long the nonce of a message stamped `timestamp` (accepted at `now_unix`) must be kept:
/// until [`check_timestamp`] refuses that timestamp, i.e. past the whole second
/// `timestamp + 60`, plus one second of margin (between 2 s and [`NONCE_TTL`]).
pub fn nonce_ttl(timestamp: i64, now_unix: i64) -> Duration {
    // Accepted while floor(now) <= timestamp + 60, i.e. until timestamp + 61 (exclusive).
    let remaining = timestamp.saturating_add(TIMESTAMP_WINDOW_SECS + 1).saturating_sub(now_unix);
    Duration::from_secs(remaining.saturating_add(1).clamp(2, NONCE_TTL.as_secs() as i64) as u64)
}

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
        // abs_diff: any i64 a message carries (i64::MIN too) compares without overflow.
        Some(Ok(ts)) if now_unix.abs_diff(ts) > TIMESTAMP_WINDOW_SECS as u64 => Err(ZeroTrustError::TimestampExpired),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Issue #12 item 7: a nonce is kept as long as its timestamp is accepted. With the old 65 s
    /// memory a message stamped now+55 s, refused when replayed at once, passed 67 s later.
    #[test]
    fn a_nonce_outlives_the_acceptance_of_its_timestamp() {
        let now = 1_800_000_000;
        for offset in -TIMESTAMP_WINDOW_SECS..=TIMESTAMP_WINDOW_SECS {
            let ts = now + offset;
            let body = json!({"timestamp": ts});
            assert!(check_timestamp(&body, now).is_ok(), "accepted at receipt ({offset})");
            let ttl = nonce_ttl(ts, now).as_secs() as i64;
            // The receipt happened somewhere in the second `now`, so the nonce lives at least
            // until `now + ttl`; every whole second from then on must refuse the timestamp.
            assert!(check_timestamp(&body, now + ttl).is_err(), "offset {offset}: ttl {ttl} s is too short");
            assert!(ttl as u64 <= NONCE_TTL.as_secs(), "offset {offset}: ttl {ttl} s");
        }
        // Stamped now+55 s: replayed 67 s later, its timestamp still passes, so its nonce must too.
        let ts = now + 55;
        assert!(check_timestamp(&json!({"timestamp": ts}), now + 67).is_ok());
        assert!(nonce_ttl(ts, now) > Duration::from_secs(67));
    }

    /// A timestamp at the ends of i64 is refused, not an overflow panic.
    #[test]
    fn extreme_timestamps_are_refused_without_overflow() {
        let now = unix_now();
        for ts in [json!(i64::MIN), json!(i64::MAX), json!(-1e300), json!(1e300), json!("-9223372036854775808")] {
            assert_eq!(
                check_timestamp(&json!({ "timestamp": ts }), now),
                Err(ZeroTrustError::TimestampExpired),
                "{ts}"
            );
        }
        assert_eq!(nonce_ttl(i64::MAX, now), NONCE_TTL);
        assert_eq!(nonce_ttl(i64::MIN, now), Duration::from_secs(2));
    }
}
