//! STS tokens in process memory (expired ones are dropped at the next save).

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::job::now_ms;
use crate::storage::{StorageError, StsStore};

/// In-memory STS tokens.
#[derive(Default)]
pub struct MemorySts {
    /// hash -> (kind, worker id, expiry ms)
    tokens: Mutex<HashMap<String, (String, String, u64)>>,
}

impl StsStore for MemorySts {
    fn save<'a>(
        &'a self,
        hash: &'a str,
        kind: &'a str,
        worker_id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        let now = now_ms();
        let mut tokens = self.tokens.lock();
        tokens.retain(|_, (_, _, exp)| *exp > now);
        tokens.insert(
            hash.to_owned(),
            (kind.to_owned(), worker_id.to_owned(), now.saturating_add(ttl.as_millis() as u64)),
        );
        Box::pin(async { Ok(()) })
    }

    fn owner<'a>(&'a self, hash: &'a str, kind: &'a str) -> BoxFuture<'a, Result<Option<String>, StorageError>> {
        let now = now_ms();
        let owner = match self.tokens.lock().get(hash) {
            Some((k, w, exp)) if k == kind && *exp > now => Some(w.clone()),
            _ => None,
        };
        Box::pin(async move { Ok(owner) })
    }

    fn revoke<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        self.tokens.lock().remove(hash);
        Box::pin(async { Ok(()) })
    }
}
