//! Blueprint data stores in Redis: one hash per `{blueprint}:{store}`, values as JSON.

use std::sync::LazyLock;

use futures::future::BoxFuture;
use redis::Script;
use serde_json::Value;

use super::{from_json, lua, reply, to_json, RedisConn};
use crate::storage::{DataStoreBackend, StorageError};

/// Sets the field if its raw value is `expected` (`absent` = '1': the field must not exist);
/// else returns {0, current raw value or ''}. A success is answered again to a retry after a
/// lost reply (else the retry would see its own write and report a conflict).
static CAS: LazyLock<Script> = LazyLock::new(|| {
    lua(r#"
local c = cached()
if c then return c end
local k, f, absent, expected, new = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local cur = redis.call('HGET', k, f)
if (absent == '1' and not cur) or (absent == '0' and cur == expected) then
  redis.call('HSET', k, f, new)
  return answer({1})
end
return {0, cur or ''}
"#)
});

/// `HINCRBY` that answers a retry after a lost reply with the first result (no double count).
static INCR: LazyLock<Script> = LazyLock::new(|| {
    lua(r#"
local c = cached()
if c then return c end
return answer(redis.call('HINCRBY', ARGV[3], ARGV[4], ARGV[5]))
"#)
});

/// Data stores in Redis.
#[derive(Debug, Clone)]
pub struct RedisDataStores {
    conn: RedisConn,
}

impl RedisDataStores {
    pub fn new(conn: RedisConn) -> Self {
        RedisDataStores { conn }
    }

    fn key(&self, ns: &str) -> String {
        self.conn.key(&format!("ds:{ns}"))
    }
}

impl DataStoreBackend for RedisDataStores {
    fn get<'a>(&'a self, ns: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Value>, StorageError>> {
        Box::pin(async move {
            let raw: Option<String> = self.conn.query(redis::cmd("HGET").arg(self.key(ns)).arg(key)).await?;
            raw.map(|r| from_json(&format!("data store {ns} key {key}"), &r)).transpose()
        })
    }

    fn set<'a>(&'a self, ns: &'a str, key: &'a str, value: Value) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            self.conn.query::<i64>(redis::cmd("HSET").arg(self.key(ns)).arg(key).arg(to_json(&value))).await?;
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
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move {
            let k = self.key(ns);
            let new = to_json(&new);
            let mut expected_raw = expected.as_ref().map(to_json);
            loop {
                let absent = if expected_raw.is_none() { "1" } else { "0" };
                let exp = expected_raw.clone().unwrap_or_default();
                let parts = reply::array(self.conn.script(&CAS, true, &[&k, &key, &absent, &exp, &new]).await?)?;
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

    fn incr<'a>(&'a self, ns: &'a str, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64, StorageError>> {
        Box::pin(async move {
            match self.conn.script::<i64>(&INCR, true, &[&self.key(ns), &key, &delta]).await {
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
            let n: i64 = self.conn.query(redis::cmd("HDEL").arg(self.key(ns)).arg(key)).await?;
            Ok(n == 1)
        })
    }
}
