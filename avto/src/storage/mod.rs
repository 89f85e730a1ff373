//! Storage: small capability traits, one module per backend.
//!
//! The memory backend is always compiled; real backends live behind features.

mod data;
pub mod memory;
#[cfg(feature = "server")]
mod schedule;

pub use self::data::{DataStore, DataStoreBackend, DataStores, InitialValues};
#[cfg(feature = "server")]
pub use self::schedule::ScheduleLocks;

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
