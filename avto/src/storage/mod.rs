//! Storage: small capability traits, one module per backend.
//!
//! The memory backend is always compiled; real backends live behind features.

pub mod memory;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::blueprint::DataStoreSpec;

/// Errors of any storage backend.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StorageError {
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("unknown data store `{store}` in blueprint `{blueprint}` (declared: {declared})")]
    UnknownStore { blueprint: String, store: String, declared: String },
    #[error("value does not have the expected type: {0}")]
    Type(String),
    #[error("conflict: {0}")]
    Conflict(String),
}

/// Key/value storage behind blueprint data stores. Keys are namespaced by `ns` = `{blueprint}:{store}`.
pub trait DataStoreBackend: Send + Sync + 'static {
    fn get<'a>(&'a self, ns: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Value>, StorageError>>;
    fn set<'a>(&'a self, ns: &'a str, key: &'a str, value: Value) -> BoxFuture<'a, Result<(), StorageError>>;
    /// Sets `key` to `new` only if its current value equals `expected` (`None` = absent).
    fn compare_and_set<'a>(
        &'a self,
        ns: &'a str,
        key: &'a str,
        expected: Option<Value>,
        new: Value,
    ) -> BoxFuture<'a, Result<bool, StorageError>>;
    /// Atomically adds `delta` to an integer value (absent = 0) and returns the new value.
    fn incr<'a>(&'a self, ns: &'a str, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64, StorageError>>;
    fn delete<'a>(&'a self, ns: &'a str, key: &'a str) -> BoxFuture<'a, Result<bool, StorageError>>;
}

/// The data stores of one blueprint, as handlers see them (`stores: &DataStores` or `ctx.data_stores`).
#[derive(Clone)]
pub struct DataStores {
    blueprint: &'static str,
    specs: &'static [DataStoreSpec],
    backend: Arc<dyn DataStoreBackend>,
    initialized: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for DataStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStores").field("blueprint", &self.blueprint).field("stores", &self.names()).finish()
    }
}

impl DataStores {
    /// Data stores of `blueprint` on `backend`. `initialized` is shared by every job of the process,
    /// so initial values are written (if absent) once per store.
    pub fn new(
        blueprint: &'static str,
        specs: &'static [DataStoreSpec],
        backend: Arc<dyn DataStoreBackend>,
        initialized: Arc<Mutex<HashSet<String>>>,
    ) -> Self {
        DataStores { blueprint, specs, backend, initialized }
    }

    /// Names of the declared stores.
    pub fn names(&self) -> Vec<&'static str> {
        self.specs.iter().map(|s| s.name).collect()
    }

    /// One store by name. Unknown names give a store whose operations fail with [`StorageError::UnknownStore`].
    pub fn store(&self, name: &str) -> DataStore {
        DataStore { stores: self.clone(), name: name.to_owned() }
    }
}

/// One named data store: a key/value map shared by every job of the blueprint.
#[derive(Debug, Clone)]
pub struct DataStore {
    stores: DataStores,
    name: String,
}

impl DataStore {
    fn ns(&self) -> String {
        format!("{}:{}", self.stores.blueprint, self.name)
    }

    async fn ready(&self) -> Result<String, StorageError> {
        let spec =
            self.stores.specs.iter().find(|s| s.name == self.name).ok_or_else(|| StorageError::UnknownStore {
                blueprint: self.stores.blueprint.to_owned(),
                store: self.name.clone(),
                declared: self.stores.names().join(", "),
            })?;
        let ns = self.ns();
        let first = self.stores.initialized.lock().unwrap().insert(ns.clone());
        if first {
            let initial: Value = serde_json::from_str(spec.initial)
                .map_err(|e| StorageError::Corrupt(format!("initial value of data store `{}`: {e}", self.name)))?;
            if let Value::Object(map) = initial {
                for (k, v) in map {
                    self.stores.backend.compare_and_set(&ns, &k, None, v).await?;
                }
            }
        }
        Ok(ns)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Value>, StorageError> {
        let ns = self.ready().await?;
        self.stores.backend.get(&ns, key).await
    }

    /// A value deserialized into `T` (`None` when absent).
    pub async fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        match self.get(key).await? {
            None => Ok(None),
            Some(v) => T::deserialize(v).map(Some).map_err(|e| StorageError::Type(e.to_string())),
        }
    }

    pub async fn set(&self, key: &str, value: impl Serialize) -> Result<(), StorageError> {
        let ns = self.ready().await?;
        let value = serde_json::to_value(value).map_err(|e| StorageError::Type(e.to_string()))?;
        self.stores.backend.set(&ns, key, value).await
    }

    /// Atomic increment of an integer (absent counts as 0); returns the new value.
    pub async fn incr(&self, key: &str, delta: i64) -> Result<i64, StorageError> {
        let ns = self.ready().await?;
        self.stores.backend.incr(&ns, key, delta).await
    }

    /// Atomic read-modify-write: `f` may run more than once if other jobs write concurrently.
    pub async fn update<F>(&self, key: &str, mut f: F) -> Result<Value, StorageError>
    where
        F: FnMut(Option<&Value>) -> Value + Send,
    {
        let ns = self.ready().await?;
        loop {
            let current = self.stores.backend.get(&ns, key).await?;
            let new = f(current.as_ref());
            if self.stores.backend.compare_and_set(&ns, key, current, new.clone()).await? {
                return Ok(new);
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StorageError> {
        let ns = self.ready().await?;
        self.stores.backend.delete(&ns, key).await
    }
}
