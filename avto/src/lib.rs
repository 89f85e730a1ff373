//! # avto
//!
//! A workflow orchestrator whose workflow graph is checked by the compiler.
//!
//! Blueprints are state machines written as inline modules of async handlers; the
//! `#[avto::blueprint]` macro builds their transition table at compile time (unknown
//! targets, missing start or end states, unreachable states, ... are compile errors) and
//! emits the graph as Graphviz DOT. See the README for a tour.
#![cfg_attr(docsrs, feature(doc_auto_cfg))]
#![warn(unreachable_pub)]

#[doc(hidden)]
pub mod __private;

pub mod actions;
pub mod blueprint;
#[cfg(feature = "client")]
pub mod client;
pub mod context;
mod contracts;
pub mod engine;
pub mod files;
pub mod handler;
#[cfg(feature = "server")]
pub mod history;
pub mod job;
mod mru;
pub mod protocol;
#[cfg(feature = "server")]
pub mod server;
pub mod state;
pub mod storage;
#[cfg(feature = "server")]
pub mod supervise;
pub mod task_contract;
pub mod testing;
pub mod trace;
#[cfg(any(feature = "client", feature = "worker"))]
mod transport;
#[cfg(feature = "worker")]
pub mod worker;

pub use actions::{Actions, DispatchStrategy};
pub use avto_macros::{aggregator, blueprint, handler, task, when};
pub use blueprint::Blueprint;
pub use context::{AggregationResults, BranchResult, ClientConfig, Context, ErrorClass, StateHistory, TaskError};
pub use contracts::Violation;
pub use files::TaskFiles;
pub use handler::{FromContext, HandlerError, InitialData, Output};
pub use job::{Job, JobStatus};
#[cfg(feature = "server")]
pub use server::{serve, Orchestrator};
pub use state::State;
pub use storage::{DataStore, DataStores, StorageError};
pub use task_contract::TaskContract;

/// The result type of `main` functions that call [`serve`].
#[cfg(feature = "server")]
pub type Result<T, E = server::ServeError> = std::result::Result<T, E>;

/// What blueprint modules usually import: `use avto::prelude::*;`.
pub mod prelude {
    pub use crate::actions::{Actions, DispatchStrategy};
    pub use crate::context::{AggregationResults, BranchResult, ClientConfig, Context, TaskError};
    pub use crate::files::TaskFiles;
    pub use crate::handler::{HandlerError, InitialData, Output};
    pub use crate::job::JobStatus;
    pub use crate::state::State;
    pub use crate::storage::{DataStore, DataStores, StorageError};
    pub use crate::task_contract::TaskContract;
    pub use avto_macros::{aggregator, handler, when};
    pub use serde_json::json;
    pub use std::time::Duration;
}

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
