//! The in-memory backend (the embedded default). Every operation holds one lock for its whole
//! read-modify-write, so nothing is lost or duplicated under concurrency.

mod data;

pub use self::data::MemoryDataStores;
