//! Scheduler fire-time claims in Redis: `{p}sched:{key}`, set once per TTL.

use std::time::Duration;

use futures::future::BoxFuture;

use super::{px_millis, RedisConn, SET_ONCE};
use crate::storage::{ScheduleLocks, StorageError};

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
            Ok(self.conn.script::<i64>(&SET_ONCE, true, &[&k, &holder, &px_millis(ttl)]).await? == 1)
        })
    }
}
