//! Quotas, rate limits, replay nonces, STS tokens and scheduler claims in Redis.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::future::BoxFuture;
use redis::Script;

use super::{lua, RedisConn};
use crate::protocol::sign::sha256_hex;
use crate::server::encryption::RecordCipher;
use crate::storage::{NonceStore, QuotaStore, RateLimitStore, ScheduleLocks, StorageError, StsStore};

static QUOTA_INIT: LazyLock<Script> = LazyLock::new(|| {
    lua(r#"
local k, lk, limit = ARGV[3], ARGV[4], ARGV[5]
if redis.call('GET', lk) ~= limit or redis.call('EXISTS', k) == 0 then
  redis.call('SET', lk, limit)
  redis.call('SET', k, limit)
end
return 1
"#)
});

static QUOTA_TAKE: LazyLock<Script> = LazyLock::new(|| {
    lua(r#"
local c = cached()
if c then return c end
local n = tonumber(redis.call('GET', ARGV[3]))
if n and n > 0 then
  redis.call('DECR', ARGV[3])
  return answer(1)
end
return answer(0)
"#)
});

/// -1 = allowed, else milliseconds until the window ends. (Not kept for retries: a hit counted
/// twice after a lost reply is harmless.)
static RATE_HIT: LazyLock<Script> = LazyLock::new(|| {
    lua(r#"
local k, limit, period = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local n = redis.call('INCR', k)
local ttl = redis.call('PTTL', k)
if n == 1 or ttl < 0 then
  redis.call('PEXPIRE', k, period)
  ttl = period
end
if n > limit then return ttl end
return -1
"#)
});

/// `SET key value NX PX ttl` (1 = set by this call). The value carries the request id, so a
/// retry after a lost reply recognises its own write and answers 1 again.
static SET_ONCE: LazyLock<Script> = LazyLock::new(|| {
    lua(r#"
local v = ARGV[4] .. '|' .. RID
if redis.call('SET', ARGV[3], v, 'NX', 'PX', ARGV[5]) then return 1 end
if redis.call('GET', ARGV[3]) == v then return 1 end
return 0
"#)
});

fn ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

/// Request quotas in Redis (tokens are stored hashed).
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
            let (k, lk) = (self.conn.key(&format!("quota:{h}")), self.conn.key(&format!("quota_limit:{h}")));
            self.conn.script::<i64>(&QUOTA_INIT, false, &[&k, &lk, &limit.to_string()]).await?;
            Ok(())
        })
    }

    fn take<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move {
            let k = self.conn.key(&format!("quota:{}", sha256_hex(token.as_bytes())));
            Ok(self.conn.script::<i64>(&QUOTA_TAKE, true, &[&k]).await? == 1)
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
            let wait: i64 = self.conn.script(&RATE_HIT, false, &[&k, &limit, &ms(period)]).await?;
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
            Ok(self.conn.script::<i64>(&SET_ONCE, true, &[&k, &"1", &ms(ttl)]).await? == 1)
        })
    }
}

/// STS tokens in Redis (by hash, with their lifetime as TTL). With `REDIS_ENCRYPTION_KEY` the
/// owner is sealed, bound to its key: a binding written or moved by anyone without the key
/// authenticates nobody.
#[derive(Debug, Clone)]
pub struct RedisSts {
    conn: RedisConn,
    cipher: Option<Arc<RecordCipher>>,
}

impl RedisSts {
    pub fn new(conn: RedisConn) -> Self {
        RedisSts { conn, cipher: None }
    }

    /// Seals owners with `cipher` (`REDIS_ENCRYPTION_KEY`).
    pub fn with_cipher(mut self, cipher: Option<Arc<RecordCipher>>) -> Self {
        self.cipher = cipher;
        self
    }

    fn key(&self, kind: &str, hash: &str) -> String {
        self.conn.key(&format!("sts:{kind}:{hash}"))
    }
}

impl StsStore for RedisSts {
    fn save<'a>(
        &'a self,
        hash: &'a str,
        kind: &'a str,
        worker_id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let value = match &self.cipher {
                None => worker_id.to_owned(),
                Some(c) => c.seal(worker_id.as_bytes(), &format!("sts:{kind}:{hash}")),
            };
            let cmd = redis::cmd("SET").arg(self.key(kind, hash)).arg(value).arg("PX").arg(ms(ttl)).clone();
            self.conn.query::<()>(&cmd).await
        })
    }

    fn owner<'a>(&'a self, hash: &'a str, kind: &'a str) -> BoxFuture<'a, Result<Option<String>, StorageError>> {
        Box::pin(async move {
            let stored: Option<String> = self.conn.query(redis::cmd("GET").arg(self.key(kind, hash))).await?;
            let Some(stored) = stored else { return Ok(None) };
            let opened = match &self.cipher {
                None if RecordCipher::is_sealed(&stored) => {
                    Err("the binding is encrypted but REDIS_ENCRYPTION_KEY is not set".to_owned())
                }
                None => Ok(stored),
                Some(c) => c
                    .open(&stored, &format!("sts:{kind}:{hash}"))
                    .map_err(|e| e.to_string())
                    .and_then(|plain| String::from_utf8(plain).map_err(|e| e.to_string())),
            };
            match opened {
                Ok(owner) => Ok(Some(owner)),
                Err(why) => {
                    tracing::warn!(kind, error = %why, "an STS token binding in Redis cannot be read: the token is refused");
                    Ok(None)
                }
            }
        })
    }

    fn revoke<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let keys = [self.key("access", hash), self.key("refresh", hash)];
            self.conn.query::<i64>(redis::cmd("DEL").arg(&keys[..])).await?;
            Ok(())
        })
    }
}

/// Scheduler fire-time claims in Redis (`SET NX PX`), shared by every instance.
#[derive(Debug, Clone)]
pub struct RedisScheduleLocks {
    conn: RedisConn,
}

impl RedisScheduleLocks {
    pub fn new(conn: RedisConn) -> Self {
        RedisScheduleLocks { conn }
    }
}

impl ScheduleLocks for RedisScheduleLocks {
    fn claim<'a>(&'a self, key: &'a str, holder: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move {
            let k = self.conn.key(&format!("sched:{key}"));
            Ok(self.conn.script::<i64>(&SET_ONCE, true, &[&k, &holder, &ms(ttl)]).await? == 1)
        })
    }
}
