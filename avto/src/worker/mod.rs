//! The Rust worker SDK (feature `worker`): workers that speak RXON exactly, so they run
//! against avto and against the Python orchestrator (avtomatika 1.0b30) alike.
//!
//! ```no_run
//! use avto::worker::{errors, Skill, TaskHandle, TaskOutcome, Worker};
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! #[derive(Deserialize)]
//! struct Resize { url: String, width: u32 }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), avto::worker::WorkerError> {
//!     Worker::from_env()?                       // ORCHESTRATOR_URL, WORKER_ID, WORKER_TOKEN, ...
//!         .task("echo", |params: serde_json::Value, _task: TaskHandle| async move {
//!             TaskOutcome::success(json!({ "echo": params }))
//!         })
//!         .task(
//!             Skill::new("resize").description("Resize an image").cost(0.01),
//!             |p: Resize, task: TaskHandle| async move {
//!                 if p.width == 0 {
//!                     return Err(errors::invalid_input("width must be positive"));
//!                 }
//!                 task.progress(0.5, "resizing").await;
//!                 Ok(json!({ "url": p.url, "width": p.width }))
//!             },
//!         )
//!         .build()?
//!         .run()          // until SIGINT/SIGTERM, then drains
//!         .await
//! }
//! ```
//!
//! What the worker does, per orchestrator: register (with skills, costs, resources, installed
//! software and artifacts; exponential backoff), heartbeat every `HEARTBEAT_INTERVAL` with its
//! status (`idle`/`busy`/`full`), the task ids in flight and usage, plus debounced heartbeats on
//! task start and finish; re-register when the orchestrator lost the session. One polling loop
//! long-polls the orchestrators according to [`MultiOrchestratorMode`]. Each task runs in its own
//! tokio task: its `sig` is verified when `ORCHESTRATOR_SECRET_KEY` is set, params are
//! deserialised (failure → `INVALID_INPUT_ERROR`), panics become `TRANSIENT_ERROR`, cancellation
//! (WebSocket `cancel_task` push, heartbeat `cancel_task_ids`) gives a `cancelled` result. Results
//! are signed and retried with backoff; `ignored` answers are final. Against avto the poll takes
//! up to the free slots in one answer and results that finish together share one request (avto's
//! extensions; against the Python orchestrator each is its own request). On shutdown the worker
//! stops polling, sends an `offline` heartbeat, lets running tasks finish (then cancels them) and
//! delivers their results.
//!
//! With the `s3` feature, `s3://` params are downloaded to local paths and local files named in
//! results are uploaded ([`s3`], recipe 12b).
//!
//! **HTTP.** A plain `http://` orchestrator is reached through a pooled hyper-util client of the
//! SDK's own (HTTP/1.1 keep-alive, `TCP_NODELAY`, no proxy, no redirects, each request's timeout
//! over the whole exchange, answers of at most 256 MiB): reqwest parsed each request's URL twice
//! more on its own, about a tenth of a worker's CPU per task. `https://` orchestrators, one whose
//! URL carries a user and password (sent as Basic authentication), and all of them once
//! [`WorkerBuilder::http_client`] gives a `reqwest::Client`, go through reqwest. A
//! [`WorkerError::Network`]'s source is the `reqwest::Error` on that path, a [`TransportError`]
//! on the other.
//!
//! With the `tls` feature, `https://` orchestrators and `wss://` WebSockets work (rustls; the
//! system's roots, or `SSL_CERT_FILE` / `SSL_CERT_DIR`); without it an `https://` URL is a
//! configuration error. For a client certificate (an orchestrator with `TLS_CA_PATH`, where the
//! certificate's CN is the worker id), pass a `reqwest::Client` built with its
//! `reqwest::Identity` to [`WorkerBuilder::http_client`].
//!
//! **Contracts.** A task's params and output types publish their JSON Schemas in the
//! registration (`input_schema`, `output_schema` of the skill; schemars), which the orchestrator
//! checks params, results and events against (avto and the Python orchestrator alike): with
//! `#[avto::task]` when the params type and the `T` of a `Result<T, E>` return implement
//! `schemars::JsonSchema` and describe an object (a struct or a map; `serde_json::Value` params
//! publish `{"type": "object"}` and no output schema, as the Python SDK does for `dict`), with
//! [`Skill::input_schema`] / [`Skill::output_schema`] / [`Skill::event_schema`] by hand, or from a
//! [`TaskContract`](crate::TaskContract) shared with the blueprint that dispatches the task
//! (`#[avto::task(contract = C)]`, [`WorkerBuilder::contract`]): then the compiler checks both
//! sides use the same types. Event types are declared per skill, with the schema of a type
//! ([`Skill::typed_event`]) or by hand ([`Skill::event_schema`]); [`TaskHandle::event`] itself
//! takes any serialisable payload.
//!
//! Not implemented (yet): JSON-schema validation of params/events on the worker side (params are
//! validated by their serde type).

mod backoff;
mod builder;
mod client;
mod config;
mod error;
mod execute;
mod handle;
mod heartbeat;
mod outcome;
mod poll;
mod result_batch;
mod run;
#[cfg(feature = "s3")]
pub mod s3;
mod select;
mod session;
mod shutdown;
mod skill;
mod state;
mod ws;

pub use crate::transport::TransportError;
pub use builder::WorkerBuilder;
pub use config::{
    parse_orchestrators, MultiOrchestratorMode, OrchestratorConfig, WorkerConfig, PLACEHOLDER_WORKER_TOKEN,
};
pub use error::{Cause, WorkerError};
pub use handle::{RecordedEvent, TaskHandle, TestTaskControl};
pub use outcome::{errors, IntoTaskOutcome, Returns, TaskOutcome};
pub use run::{ShutdownHandle, Worker};
pub use skill::Skill;

pub use crate::protocol::{HardwareDevice, InstalledArtifact, ResourcesUsage, TaskError, TaskPayload, WorkerCommand};

/// A task declared for [`run`] (what `#[avto::task]` will submit). Registered with
/// `inventory::submit!`.
#[doc(hidden)]
pub struct DeclaredTask {
    /// The skill name (for ordering and diagnostics).
    pub name: &'static str,
    /// Adds the task to a builder.
    pub register: fn(WorkerBuilder) -> WorkerBuilder,
}

inventory::collect!(DeclaredTask);

/// A builder from the environment with every declared task (sorted by name) registered.
pub fn builder_with_declared_tasks() -> Result<WorkerBuilder, WorkerError> {
    let mut tasks: Vec<&DeclaredTask> = inventory::iter::<DeclaredTask>.into_iter().collect();
    tasks.sort_by_key(|t| t.name);
    let mut builder = Worker::from_env()?;
    for t in tasks {
        builder = (t.register)(builder);
    }
    Ok(builder)
}

/// Run a worker configured from the environment with every declared task, until SIGINT/SIGTERM.
///
/// With feature `otel` and `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, task spans
/// are exported by OTLP/HTTP as service `OTEL_SERVICE_NAME` (default `avto-worker`); a global `tracing` subscriber
/// (logs filtered by `RUST_LOG`, default `info`) is installed unless the program installed one already.
pub async fn run() -> Result<(), WorkerError> {
    #[cfg(feature = "otel")]
    if let Some(provider) = crate::trace::otel::otlp_provider("avto-worker") {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        use tracing_subscriber::Layer as _;
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::registry()
            .with(crate::trace::otel::layer(&provider))
            .with(tracing_subscriber::fmt::layer().with_filter(filter))
            .try_init();
    }
    let ran = builder_with_declared_tasks()?.build()?.run().await;
    #[cfg(feature = "otel")]
    let _ = tokio::task::spawn_blocking(crate::trace::otel::shutdown).await;
    ran
}
