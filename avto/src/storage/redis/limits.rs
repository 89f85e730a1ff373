//! Quotas, rate limits and replay nonces in Redis: one Lua script or `SET NX PX` each, so every
//! count is exact across instances.

use std::sync::LazyLock;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{lua, px_millis, LuaScript, RedisConn, SET_ONCE};
use crate::protocol::sign::sha256_hex;
use crate::storage::{NonceStore, QuotaStore, RateLimitStore, StorageError};

/// Sets the limit; drops the remaining-count key of avto versions that counted requests
/// instead of months.
static QUOTA_INIT: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[],
        r#"
redis.call('SET', ARGV[3], ARGV[5])
redis.call('DEL', ARGV[4])
return 1
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&QUOTA_INIT) }

/// ARGV: used key of the month, limit key, expiry of a new month's count (ms).
static QUOTA_TAKE: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[],
        r#"
local c = cached()
if c then return c end
local limit = tonumber(redis.call('GET', ARGV[4]))
if not limit then return answer(0) end
local used = tonumber(redis.call('GET', ARGV[3]) or '0')
if used < limit then
  if redis.call('INCR', ARGV[3]) == 1 then redis.call('PEXPIRE', ARGV[3], ARGV[5]) end
  return answer(1)
end
return answer(0)
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&QUOTA_TAKE) }

/// How long a month's count is kept after its first unit: past the end of any month it began in.
const QUOTA_MONTH_TTL_MS: u64 = 62 * 86_400_000;

/// -1 = allowed, else milliseconds until the window ends. (Not kept for retries: a hit counted
/// twice after a lost reply is harmless.)
static RATE_HIT: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[],
        r#"
local k, limit, period = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local n = redis.call('INCR', k)
local ttl = redis.call('PTTL', k)
if n == 1 or ttl < 0 then
  redis.call('PEXPIRE', k, period)
  ttl = period
end
if n > limit then return ttl end
return -1
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&RATE_HIT) }

/// Monthly job-creation quotas in Redis (tokens are stored hashed).
#[derive(Debug, Clone)]
pub struct RedisQuotas {
    conn: RedisConn,
}

impl RedisQuotas {
    pub fn new(conn: RedisConn) -> Self {
        RedisQuotas { conn }
    }
}

impl QuotaStore for RedisQuotas {
    fn init<'a>(&'a self, token: &'a str, limit: u64) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let h = sha256_hex(token.as_bytes());
            let (lk, legacy) = (self.conn.key(&format!("quota_limit:{h}")), self.conn.key(&format!("quota:{h}")));
            self.conn.script::<i64>(&QUOTA_INIT, false, &[&lk, &legacy, &limit.to_string()]).await?;
            Ok(())
        })
    }

    fn take_in<'a>(&'a self, token: &'a str, month: &'a str) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move {
            let h = sha256_hex(token.as_bytes());
            let (k, lk) =
                (self.conn.key(&format!("quota_used:{h}:{month}")), self.conn.key(&format!("quota_limit:{h}")));
            Ok(self.conn.script::<i64>(&QUOTA_TAKE, true, &[&k, &lk, &QUOTA_MONTH_TTL_MS.to_string()]).await? == 1)
        })
    }
}

/// Fixed-window rate limits in Redis.
#[derive(Debug, Clone)]
pub struct RedisRateLimits {
    conn: RedisConn,
}

impl RedisRateLimits {
    pub fn new(conn: RedisConn) -> Self {
        RedisRateLimits { conn }
    }
}

impl RateLimitStore for RedisRateLimits {
    fn hit<'a>(
        &'a self,
        key: &'a str,
        limit: u32,
        period: Duration,
    ) -> BoxFuture<'a, Result<Result<(), Duration>, StorageError>> {
        Box::pin(async move {
            let k = self.conn.key(&format!("rl:{key}"));
            let wait: i64 = self.conn.script(&RATE_HIT, false, &[&k, &limit, &px_millis(period)]).await?;
            Ok(if wait < 0 { Ok(()) } else { Err(Duration::from_millis(wait as u64)) })
        })
    }
}

/// Replay nonces in Redis.
#[derive(Debug, Clone)]
pub struct RedisNonces {
    conn: RedisConn,
}

impl RedisNonces {
    pub fn new(conn: RedisConn) -> Self {
        RedisNonces { conn }
    }
}

impl NonceStore for RedisNonces {
    fn first_use<'a>(&'a self, nonce: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move {
            let k = self.conn.key(&format!("nonce:{nonce}"));
            Ok(self.conn.script::<i64>(&SET_ONCE, true, &[&k, &"1", &px_millis(ttl)]).await? == 1)
        })
    }
}
