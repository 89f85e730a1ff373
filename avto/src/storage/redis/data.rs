//! Blueprint data stores in Redis: one string per key, `{p}dsk:{blueprint}:{store}:{key}`, the
//! value as JSON, with a Redis expiry when written with a TTL.
//!
//! Before keys could expire, a store was one hash, `{p}ds:{blueprint}:{store}`; every operation
//! here moves a key it finds only there into its own string first (kept, as it was written
//! without a TTL), so an upgrade loses no value.

use std::sync::LazyLock;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use super::{from_json, lua, reply, to_json, LuaScript, RedisConn};
use crate::storage::{DataStoreBackend, StorageError};

/// The key's current raw value (after moving it out of the old hash layout), `k` its string key,
/// `h` the old hash and `f` its field there.
const LOAD: &str = r#"
local function load(k, h, f)
  local cur = redis.call('GET', k)
  if not cur then
    cur = redis.call('HGET', h, f)
    if cur then
      redis.call('SET', k, cur)
      redis.call('HDEL', h, f)
    end
  end
  return cur
end
local function store(k, v, ttl)
  if ttl == '0' then redis.call('SET', k, v) else redis.call('SET', k, v, 'PX', ttl) end
end
"#;

static GET: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[LOAD],
        r#"
return load(ARGV[3], ARGV[4], ARGV[5])
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&GET) }

static SET: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[LOAD],
        r#"
redis.call('HDEL', ARGV[4], ARGV[5])
store(ARGV[3], ARGV[6], ARGV[7])
return 1
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&SET) }

static DELETE: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[],
        r#"
return redis.call('DEL', ARGV[3]) + redis.call('HDEL', ARGV[4], ARGV[5])
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&DELETE) }

/// Sets the key if its raw value is `expected` (`absent` = '1': the key must not exist); else
/// returns {0, current raw value or ''}. A success is answered again to a retry after a lost
/// reply (else the retry would see its own write and report a conflict).
static CAS: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[LOAD],
        r#"
local c = cached()
if c then return c end
local k, h, f, absent, expected, new, ttl = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local cur = load(k, h, f)
if (absent == '1' and not cur) or (absent == '0' and cur == expected) then
  store(k, new, ttl)
  return answer({1})
end
return {0, cur or ''}
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&CAS) }

/// `INCRBY` (the lifetime renewed) that answers a retry after a lost reply with the first result
/// (no double count).
static INCR: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[LOAD],
        r#"
local c = cached()
if c then return c end
local k, h, f, delta, ttl = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
load(k, h, f)
local n = redis.call('INCRBY', k, delta)
if ttl == '0' then redis.call('PERSIST', k) else redis.call('PEXPIRE', k, ttl) end
return answer(n)
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&INCR) }

/// Data stores in Redis.
#[derive(Debug, Clone)]
pub struct RedisDataStores {
    conn: RedisConn,
}

/// A TTL as the scripts take it: milliseconds, `0` = kept (at least 1 ms otherwise).
fn ttl_ms(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| (t.as_millis().min(u64::MAX as u128) as u64).max(1))
}

impl RedisDataStores {
    pub fn new(conn: RedisConn) -> Self {
        RedisDataStores { conn }
    }

    /// The key's own string, and the old hash of its store.
    fn keys(&self, ns: &str, key: &str) -> (String, String) {
        (self.conn.key(&format!("dsk:{ns}:{key}")), self.conn.key(&format!("ds:{ns}")))
    }
}

impl DataStoreBackend for RedisDataStores {
    fn get<'a>(&'a self, ns: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Value>, StorageError>> {
        Box::pin(async move {
            let (k, h) = self.keys(ns, key);
            let raw: Option<String> = self.conn.script(&GET, false, &[&k, &h, &key]).await?;
            raw.map(|r| from_json(&format!("data store {ns} key {key}"), &r)).transpose()
        })
    }

    fn set<'a>(
        &'a self,
        ns: &'a str,
        key: &'a str,
        value: Value,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let (k, h) = self.keys(ns, key);
            self.conn.script::<i64>(&SET, false, &[&k, &h, &key, &to_json(&value), &ttl_ms(ttl)]).await?;
            Ok(())
        })
    }

    /// Equality is that of JSON values (as in memory), not of their text: when the stored text
    /// differs from `expected`'s but means the same value, the swap is retried against that text.
    fn compare_and_set<'a>(
        &'a self,
        ns: &'a str,
        key: &'a str,
        expected: Option<Value>,
        new: Value,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move {
            let (k, h) = self.keys(ns, key);
            let new = to_json(&new);
            let ttl = ttl_ms(ttl);
            let mut expected_raw = expected.as_ref().map(to_json);
            loop {
                let absent = if expected_raw.is_none() { "1" } else { "0" };
                let exp = expected_raw.clone().unwrap_or_default();
                let parts =
                    reply::array(self.conn.script(&CAS, true, &[&k, &h, &key, &absent, &exp, &new, &ttl]).await?)?;
                if parts.first().and_then(reply::int) == Some(1) {
                    return Ok(true);
                }
                let (Some(expected), Some(cur)) = (&expected, parts.get(1).and_then(reply::string)) else {
                    return Ok(false);
                };
                if cur.is_empty() || Some(&cur) == expected_raw.as_ref() {
                    return Ok(false);
                }
                let current: Value = from_json(&format!("data store {ns} key {key}"), &cur)?;
                if &current != expected {
                    return Ok(false);
                }
                expected_raw = Some(cur);
            }
        })
    }

    fn incr<'a>(
        &'a self,
        ns: &'a str,
        key: &'a str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<i64, StorageError>> {
        Box::pin(async move {
            let (k, h) = self.keys(ns, key);
            match self.conn.script::<i64>(&INCR, true, &[&k, &h, &key, &delta, &ttl_ms(ttl)]).await {
                Ok(n) => Ok(n),
                Err(e @ StorageError::Redis(_))
                    if e.to_string().contains("not an integer") || e.to_string().contains("overflow") =>
                {
                    let current = self.get(ns, key).await?.unwrap_or(Value::Null);
                    Err(StorageError::Type(format!("`{key}` is not an integer: {current}")))
                }
                Err(e) => Err(e),
            }
        })
    }

    fn delete<'a>(&'a self, ns: &'a str, key: &'a str) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move {
            let (k, h) = self.keys(ns, key);
            let n: i64 = self.conn.script(&DELETE, false, &[&k, &h, &key]).await?;
            Ok(n >= 1)
        })
    }
}
