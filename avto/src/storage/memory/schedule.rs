//! Scheduler fire-time claims in process memory.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::storage::{ScheduleLocks, StorageError};

/// Claims in process memory (one instance, or several sharing this value in tests).
#[derive(Debug, Default)]
pub struct MemoryScheduleLocks {
    held: Mutex<HashMap<String, (String, std::time::Instant)>>,
}

impl MemoryScheduleLocks {
    pub fn new() -> Self {
        Self::default()
    }
}

impl ScheduleLocks for MemoryScheduleLocks {
    fn claim<'a>(&'a self, key: &'a str, holder: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StorageError>> {
        let now = std::time::Instant::now();
        let mut held = self.held.lock();
        held.retain(|_, (_, until)| *until > now);
        let won = if held.contains_key(key) {
            false
        } else {
            held.insert(
                key.to_owned(),
                (holder.to_owned(), now.checked_add(ttl).unwrap_or(now + Duration::from_secs(86_400 * 365))),
            );
            true
        };
        Box::pin(async move { Ok(won) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_locks_claim_once() {
        let l = MemoryScheduleLocks::new();
        assert!(l.claim("k", "a", Duration::from_secs(60)).await.unwrap());
        assert!(!l.claim("k", "b", Duration::from_secs(60)).await.unwrap());
        assert!(l.claim("k2", "b", Duration::from_secs(60)).await.unwrap());
        assert!(l.claim("k3", "b", Duration::ZERO).await.unwrap());
        assert!(l.claim("k3", "b", Duration::from_secs(1)).await.unwrap(), "expired claims are free again");
    }
}
