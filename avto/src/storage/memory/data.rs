//! Blueprint data stores in memory. A key written with a TTL reads as absent once it expired and
//! is removed by a later write (each write removes up to [`SWEEP`] expired keys, oldest first),
//! so keys that are written once and never read again do not pile up.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::job::now_ms;
use crate::storage::{DataStoreBackend, StorageError};

/// Expired keys a write removes at most.
const SWEEP: usize = 64;

type Key = (String, String);

/// In-memory data stores.
#[derive(Debug, Default)]
pub struct MemoryDataStores {
    inner: Mutex<Values>,
}

#[derive(Debug, Default)]
struct Values {
    /// Value and, for a key with a TTL, when it expires (epoch ms).
    map: HashMap<Key, (Value, Option<u64>)>,
    /// Keys with a TTL, by expiry.
    expiry: BTreeSet<(u64, Key)>,
}

impl Values {
    /// The live value of `k` (an expired one is removed).
    fn live(&mut self, k: &Key, now: u64) -> Option<&Value> {
        if let Some((_, Some(at))) = self.map.get(k) {
            if *at <= now {
                let at = *at;
                self.map.remove(k);
                self.expiry.remove(&(at, k.clone()));
                return None;
            }
        }
        self.map.get(k).map(|(v, _)| v)
    }

    /// Writes `k` with its lifetime, after removing a few expired keys.
    fn put(&mut self, k: Key, v: Value, ttl: Option<Duration>, now: u64) {
        self.sweep(now);
        let at = ttl.map(|t| now.saturating_add(t.as_millis().min(u64::MAX as u128) as u64));
        if let Some((_, Some(old))) = self.map.insert(k.clone(), (v, at)) {
            self.expiry.remove(&(old, k.clone()));
        }
        if let Some(at) = at {
            self.expiry.insert((at, k));
        }
    }

    fn remove(&mut self, k: &Key) -> Option<Value> {
        let (v, at) = self.map.remove(k)?;
        if let Some(at) = at {
            self.expiry.remove(&(at, k.clone()));
        }
        Some(v)
    }

    fn sweep(&mut self, now: u64) {
        for _ in 0..SWEEP {
            match self.expiry.first() {
                Some((at, _)) if *at <= now => {
                    let (_, k) = self.expiry.pop_first().expect("first exists");
                    self.map.remove(&k);
                }
                _ => break,
            }
        }
    }
}

impl MemoryDataStores {
    pub fn new() -> Self {
        Self::default()
    }

    fn values(&self) -> std::sync::MutexGuard<'_, Values> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key(ns: &str, key: &str) -> Key {
    (ns.to_owned(), key.to_owned())
}

impl DataStoreBackend for MemoryDataStores {
    fn get<'a>(&'a self, ns: &'a str, k: &'a str) -> BoxFuture<'a, Result<Option<Value>, StorageError>> {
        let v = self.values().live(&key(ns, k), now_ms()).cloned();
        Box::pin(async move { Ok(v) })
    }

    fn set<'a>(
        &'a self,
        ns: &'a str,
        k: &'a str,
        value: Value,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.values().put(key(ns, k), value, ttl, now_ms());
        Box::pin(async { Ok(()) })
    }

    fn compare_and_set<'a>(
        &'a self,
        ns: &'a str,
        k: &'a str,
        expected: Option<Value>,
        new: Value,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        let mut values = self.values();
        let (k, now) = (key(ns, k), now_ms());
        let ok = values.live(&k, now) == expected.as_ref();
        if ok {
            values.put(k, new, ttl, now);
        }
        Box::pin(async move { Ok(ok) })
    }

    fn incr<'a>(
        &'a self,
        ns: &'a str,
        k: &'a str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<i64, StorageError>> {
        let mut values = self.values();
        let (full, now) = (key(ns, k), now_ms());
        let current = values.live(&full, now).cloned().unwrap_or(Value::from(0));
        let result = match current.as_i64() {
            Some(n) => {
                let n = n.saturating_add(delta);
                values.put(full, Value::from(n), ttl, now);
                Ok(n)
            }
            None => Err(StorageError::Type(format!("`{k}` is not an integer: {current}"))),
        };
        Box::pin(async move { result })
    }

    fn delete<'a>(&'a self, ns: &'a str, k: &'a str) -> BoxFuture<'a, Result<bool, StorageError>> {
        let mut values = self.values();
        let full = key(ns, k);
        let live = values.live(&full, now_ms()).is_some();
        values.remove(&full);
        Box::pin(async move { Ok(live) })
    }
}
