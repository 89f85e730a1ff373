//! The in-memory backend (the embedded default; one instance), one file per capability as in
//! [`crate::storage`]. Every operation holds one lock for its whole read-modify-write, so
//! nothing is lost or duplicated under concurrency.

mod data;
#[cfg(feature = "server")]
mod frozen;
#[cfg(feature = "server")]
mod jobs;
#[cfg(feature = "server")]
mod limits;
#[cfg(feature = "server")]
mod query;
#[cfg(feature = "server")]
mod schedule;
#[cfg(feature = "server")]
mod sts;
#[cfg(feature = "server")]
mod workers;

pub use self::data::MemoryDataStores;

/// A map with a fast hasher (foldhash, seeded at random per process) instead of SipHash: only
/// for keys no client or worker chooses (server-made ids, statuses, configured client ids); each
/// alias of it says which.
#[cfg(feature = "server")]
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
#[cfg(feature = "server")]
pub use self::jobs::MemoryJobs;
#[cfg(feature = "server")]
pub use self::limits::{MemoryNonces, MemoryQuotas, MemoryRateLimits};
#[cfg(feature = "server")]
pub use self::schedule::MemoryScheduleLocks;
#[cfg(feature = "server")]
pub use self::sts::MemorySts;
#[cfg(feature = "server")]
pub use self::workers::MemoryWorkers;
