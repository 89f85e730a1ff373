//! Blueprint data stores: key/value maps shared by every job of a blueprint, as handlers see
//! them ([`DataStores`], [`DataStore`]), over a [`DataStoreBackend`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::StorageError;

/// A blueprint data store and its initial contents.
#[derive(Debug)]
pub struct DataStoreSpec {
    pub name: &'static str,
    /// Initial contents (a JSON object, as source text), applied to keys that do not exist yet.
    pub initial: &'static str,
}

/// Key/value storage behind blueprint data stores. Keys are namespaced by `ns` = `{blueprint}:{store}`.
///
/// Every write takes the key's lifetime: `ttl` = the key expires that long after this write
/// (an expired key reads as absent), `None` = it is kept until deleted.
pub trait DataStoreBackend: Send + Sync + 'static {
    fn get<'a>(&'a self, ns: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Value>, StorageError>>;
    fn set<'a>(
        &'a self,
        ns: &'a str,
        key: &'a str,
        value: Value,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), StorageError>>;
    /// Sets `key` to `new` only if its current value equals `expected` (`None` = absent).
    fn compare_and_set<'a>(
        &'a self,
        ns: &'a str,
        key: &'a str,
        expected: Option<Value>,
        new: Value,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool, StorageError>>;
    /// Atomically adds `delta` to an integer value (absent = 0) and returns the new value.
    fn incr<'a>(
        &'a self,
        ns: &'a str,
        key: &'a str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<i64, StorageError>>;
    fn delete<'a>(&'a self, ns: &'a str, key: &'a str) -> BoxFuture<'a, Result<bool, StorageError>>;
}

/// The keys a store declares an initial value for (kept until deleted, never expired).
type Declared = Arc<std::collections::HashSet<String>>;

/// Which data stores already have their initial values, shared by every job of a process.
///
/// The first touch of a store writes its initial values (each key only if absent, so an
/// instance starting next to running ones changes nothing) and every other touch of that store,
/// from any job, waits until they are written. A failed write is tried again at the next touch.
#[derive(Debug, Default)]
pub struct InitialValues {
    /// Per store (`ns`): set once its initial values are written, to the keys they declare.
    stores: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Declared>>>>,
}

impl InitialValues {
    fn cell(&self, ns: &str) -> Arc<tokio::sync::OnceCell<Declared>> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores.entry(ns.to_owned()).or_default().clone()
    }
}

/// The data stores of one blueprint, as handlers see them (`stores: &DataStores` or `ctx.data_stores`).
///
/// Lifetime of keys: a key the blueprint declares an initial value for is kept until deleted;
/// any other key expires [`DataStores::with_ttl`] after its last write (`DATA_STORE_TTL_SECONDS`
/// in the server), so keys made from request data cannot pile up for ever.
#[derive(Clone)]
pub struct DataStores {
    blueprint: &'static str,
    specs: &'static [DataStoreSpec],
    backend: Arc<dyn DataStoreBackend>,
    initialized: Arc<InitialValues>,
    ttl: Option<Duration>,
}

impl std::fmt::Debug for DataStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStores").field("blueprint", &self.blueprint).field("stores", &self.names()).finish()
    }
}

impl DataStores {
    /// Data stores of `blueprint` on `backend`. `initialized` is shared by every job of the process,
    /// so initial values are written (if absent) once per store, before any job touches it.
    pub fn new(
        blueprint: &'static str,
        specs: &'static [DataStoreSpec],
        backend: Arc<dyn DataStoreBackend>,
        initialized: Arc<InitialValues>,
    ) -> Self {
        DataStores { blueprint, specs, backend, initialized, ttl: None }
    }

    /// Keys without a declared initial value expire `ttl` after their last write (`None`: kept).
    pub fn with_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl.filter(|t| !t.is_zero());
        self
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

    fn spec(&self) -> Result<&'static DataStoreSpec, StorageError> {
        self.stores.specs.iter().find(|s| s.name == self.name).ok_or_else(|| StorageError::UnknownStore {
            blueprint: self.stores.blueprint.to_owned(),
            store: self.name.clone(),
            declared: self.stores.names().join(", "),
        })
    }

    /// The store's namespace once its initial values are in place, with the lifetime of a write
    /// of `key`: kept for a key with a declared initial value, else the stores' TTL.
    async fn ready_for(&self, key: &str) -> Result<(String, Option<Duration>), StorageError> {
        let (ns, declared) = self.ready_declared().await?;
        let ttl = if declared.contains(key) { None } else { self.stores.ttl };
        Ok((ns, ttl))
    }

    async fn ready(&self) -> Result<String, StorageError> {
        Ok(self.ready_declared().await?.0)
    }

    async fn ready_declared(&self) -> Result<(String, Declared), StorageError> {
        let spec = self.spec()?;
        let ns = self.ns();
        // Concurrent first touches wait here for the one that writes, so no job reads or
        // changes a key before its initial value is in place.
        let cell = self.stores.initialized.cell(&ns);
        cell.get_or_try_init(|| async {
            let initial: Value = serde_json::from_str(spec.initial)
                .map_err(|e| StorageError::Corrupt(format!("initial value of data store `{}`: {e}", self.name)))?;
            let mut declared = std::collections::HashSet::new();
            if let Value::Object(map) = initial {
                for (k, v) in map {
                    self.stores.backend.compare_and_set(&ns, &k, None, v, None).await?;
                    declared.insert(k);
                }
            }
            Ok::<Declared, StorageError>(Arc::new(declared))
        })
        .await
        .cloned()
        .map(|declared| (ns, declared))
    }

    /// Writes this store's initial values now (keys that are absent only), so they are in
    /// place before the first job runs. Later touches do not write again.
    pub async fn initialize(&self) -> Result<(), StorageError> {
        self.ready().await.map(|_| ())
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
        let (ns, ttl) = self.ready_for(key).await?;
        let value = serde_json::to_value(value).map_err(|e| StorageError::Type(e.to_string()))?;
        self.stores.backend.set(&ns, key, value, ttl).await
    }

    /// Atomic increment of an integer (absent counts as 0); returns the new value.
    pub async fn incr(&self, key: &str, delta: i64) -> Result<i64, StorageError> {
        let (ns, ttl) = self.ready_for(key).await?;
        self.stores.backend.incr(&ns, key, delta, ttl).await
    }

    /// Atomic read-modify-write: `f` may run more than once if other jobs write concurrently.
    pub async fn update<F>(&self, key: &str, mut f: F) -> Result<Value, StorageError>
    where
        F: FnMut(Option<&Value>) -> Value + Send,
    {
        let (ns, ttl) = self.ready_for(key).await?;
        loop {
            let current = self.stores.backend.get(&ns, key).await?;
            let new = f(current.as_ref());
            if self.stores.backend.compare_and_set(&ns, key, current, new.clone(), ttl).await? {
                return Ok(new);
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StorageError> {
        let ns = self.ready().await?;
        self.stores.backend.delete(&ns, key).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::storage::memory;

    static SPECS: &[DataStoreSpec] = &[DataStoreSpec { name: "tank", initial: r#"{"level": 100}"# }];
    const JOBS: usize = 50;

    /// Memory, except that writing an initial value (a compare-and-set on an absent key) waits
    /// until every other job has touched the store, or a second at most: the window in which the
    /// old code let the other jobs in before the initial value was written.
    struct SlowInit {
        inner: memory::MemoryDataStores,
        touches: AtomicUsize,
    }

    impl DataStoreBackend for SlowInit {
        fn get<'a>(&'a self, ns: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Value>, StorageError>> {
            self.touches.fetch_add(1, Ordering::SeqCst);
            self.inner.get(ns, key)
        }
        fn set<'a>(
            &'a self,
            ns: &'a str,
            key: &'a str,
            value: Value,
            ttl: Option<Duration>,
        ) -> BoxFuture<'a, Result<(), StorageError>> {
            self.inner.set(ns, key, value, ttl)
        }
        fn compare_and_set<'a>(
            &'a self,
            ns: &'a str,
            key: &'a str,
            expected: Option<Value>,
            new: Value,
            ttl: Option<Duration>,
        ) -> BoxFuture<'a, Result<bool, StorageError>> {
            Box::pin(async move {
                if expected.is_none() {
                    for _ in 0..100 {
                        if self.touches.load(Ordering::SeqCst) >= JOBS - 1 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                self.inner.compare_and_set(ns, key, expected, new, ttl).await
            })
        }
        fn incr<'a>(
            &'a self,
            ns: &'a str,
            key: &'a str,
            delta: i64,
            ttl: Option<Duration>,
        ) -> BoxFuture<'a, Result<i64, StorageError>> {
            self.touches.fetch_add(1, Ordering::SeqCst);
            self.inner.incr(ns, key, delta, ttl)
        }
        fn delete<'a>(&'a self, ns: &'a str, key: &'a str) -> BoxFuture<'a, Result<bool, StorageError>> {
            self.inner.delete(ns, key)
        }
    }

    /// With a TTL, keys the store declares an initial value for are kept; others expire.
    #[tokio::test]
    async fn declared_keys_are_kept_and_others_expire() {
        let backend = Arc::new(memory::MemoryDataStores::new());
        let tank = DataStores::new("bp", SPECS, backend, Arc::default())
            .with_ttl(Some(Duration::from_millis(50)))
            .store("tank");
        tank.set("level", 7).await.unwrap();
        tank.set("other", 1).await.unwrap();
        tank.update("updated", |_| Value::from(2)).await.unwrap();
        assert_eq!(tank.incr("counted", 3).await.unwrap(), 3);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(tank.get("level").await.unwrap(), Some(Value::from(7)), "declared: kept");
        for key in ["other", "updated", "counted"] {
            assert_eq!(tank.get(key).await.unwrap(), None, "{key} expired");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn initial_values_are_in_place_before_any_job_touches_the_store() {
        let backend = Arc::new(SlowInit { inner: memory::MemoryDataStores::new(), touches: AtomicUsize::new(0) });
        let stores = DataStores::new("bp", SPECS, backend.clone(), Arc::default());
        let jobs: Vec<_> = (0..JOBS)
            .map(|_| {
                let tank = stores.store("tank");
                tokio::spawn(async move { tank.incr("level", -1).await })
            })
            .collect();
        let mut seen = Vec::new();
        for job in jobs {
            seen.push(job.await.unwrap().unwrap());
        }
        seen.sort();
        assert_eq!(seen, (100 - JOBS as i64..100).collect::<Vec<_>>(), "every job counted down from 100");
        assert_eq!(stores.store("tank").get("level").await.unwrap(), Some(Value::from(100 - JOBS as i64)));
    }
}
