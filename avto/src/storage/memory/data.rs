//! Blueprint data stores in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::storage::{DataStoreBackend, StorageError};

/// In-memory data stores.
#[derive(Debug, Default)]
pub struct MemoryDataStores {
    values: Mutex<HashMap<(String, String), Value>>,
}

impl MemoryDataStores {
    pub fn new() -> Self {
        Self::default()
    }
}

impl DataStoreBackend for MemoryDataStores {
    fn get<'a>(&'a self, ns: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Value>, StorageError>> {
        let v = self.values.lock().unwrap().get(&(ns.to_owned(), key.to_owned())).cloned();
        Box::pin(async move { Ok(v) })
    }

    fn set<'a>(&'a self, ns: &'a str, key: &'a str, value: Value) -> BoxFuture<'a, Result<(), StorageError>> {
        self.values.lock().unwrap().insert((ns.to_owned(), key.to_owned()), value);
        Box::pin(async { Ok(()) })
    }

    fn compare_and_set<'a>(
        &'a self,
        ns: &'a str,
        key: &'a str,
        expected: Option<Value>,
        new: Value,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        let mut values = self.values.lock().unwrap();
        let k = (ns.to_owned(), key.to_owned());
        let ok = values.get(&k) == expected.as_ref();
        if ok {
            values.insert(k, new);
        }
        Box::pin(async move { Ok(ok) })
    }

    fn incr<'a>(&'a self, ns: &'a str, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64, StorageError>> {
        let mut values = self.values.lock().unwrap();
        let entry = values.entry((ns.to_owned(), key.to_owned())).or_insert(Value::from(0));
        let result = match entry.as_i64() {
            Some(n) => {
                let n = n.saturating_add(delta);
                *entry = Value::from(n);
                Ok(n)
            }
            None => Err(StorageError::Type(format!("`{key}` is not an integer: {entry}"))),
        };
        Box::pin(async move { result })
    }

    fn delete<'a>(&'a self, ns: &'a str, key: &'a str) -> BoxFuture<'a, Result<bool, StorageError>> {
        let removed = self.values.lock().unwrap().remove(&(ns.to_owned(), key.to_owned())).is_some();
        Box::pin(async move { Ok(removed) })
    }
}
