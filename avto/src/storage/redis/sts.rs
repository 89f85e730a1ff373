//! STS tokens in Redis: `{p}sts:{kind}:{sha256}` with the token's lifetime as TTL.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{px_millis, RedisConn};
use crate::storage::encryption::RecordCipher;
use crate::storage::{StorageError, StsStore};

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
            let cmd = redis::cmd("SET").arg(self.key(kind, hash)).arg(value).arg("PX").arg(px_millis(ttl)).clone();
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
