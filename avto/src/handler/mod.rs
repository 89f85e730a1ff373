//! Handler invocation and argument injection (axum-extractor style).
//!
//! The macro turns every handler argument into one extraction:
//! an argument of type `&mut T` comes from [`FromActions`] (only `&mut Actions` implements it),
//! every other argument comes from [`FromContext`]. Both traits carry
//! `#[diagnostic::on_unimplemented]`, and the macro spans the extraction on the argument's type,
//! so an argument that cannot be injected is a compile error on that argument.

use std::future::Future;
use std::pin::Pin;

use serde::de::DeserializeOwned;

use crate::actions::Actions;
use crate::context::{AggregationResults, ClientConfig, Context, TaskError};
use crate::storage::DataStores;

/// Everything one handler run works on.
pub struct Invocation {
    pub(crate) context: Context,
    pub(crate) actions: Actions,
}

impl Invocation {
    pub(crate) fn new(context: Context) -> Self {
        Invocation { context, actions: Actions::new() }
    }
    /// Shared context and mutable actions, borrowed at the same time.
    #[doc(hidden)]
    pub fn split(&mut self) -> (&Context, &mut Actions) {
        (&self.context, &mut self.actions)
    }
    /// Records what the handler returned as [`Output`] (the engine calls this with what the
    /// [`HandlerFuture`] gave).
    pub(crate) fn set_output(&mut self, output: Option<serde_json::Value>) {
        self.actions.output = output;
    }
}

/// Why a handler run failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Retried (up to `JOB_MAX_RETRIES`, with backoff), then the job is quarantined.
    #[error("{0}")]
    Failed(String),
    /// Not retried: the job ends `failed` (e.g. `initial_data` does not deserialize into the handler's type).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl HandlerError {
    pub fn failed(msg: impl std::fmt::Display) -> Self {
        HandlerError::Failed(msg.to_string())
    }
}

/// The boxed future of one handler run: what the handler returned as [`Output`], if anything.
/// `Send`, so handlers run on any executor thread.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<serde_json::Value>, HandlerError>> + Send + 'a>>;

/// The generated entry point of one handler.
pub type HandlerFn = for<'a> fn(&'a mut Invocation) -> HandlerFuture<'a>;

/// An argument a handler can ask for by type (other than `&mut Actions`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be injected into an avto handler",
    label = "this argument cannot be injected",
    note = "handlers can take `&Context`, `&mut Actions`, `&ClientConfig`, `&DataStores`, `&AggregationResults`, `Option<&TaskError>`, `Option<&TaskFiles>`, `&TaskFiles`, `InitialData<T>` (T: Deserialize), `&serde_json::Value` (initial data) or a type implementing `avto::FromContext`"
)]
pub trait FromContext<'a>: Sized {
    fn from_context(ctx: &'a Context) -> Result<Self, HandlerError>;
}

/// A mutable argument: only `&mut Actions`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be injected into an avto handler",
    label = "only `&mut Actions` can be taken mutably",
    note = "take `&Context` for read access and `&mut Actions` to decide what happens next"
)]
pub trait FromActions<'a>: Sized {
    fn from_actions(actions: &'a mut Actions) -> Self;
}

impl<'a> FromActions<'a> for &'a mut Actions {
    fn from_actions(actions: &'a mut Actions) -> Self {
        actions
    }
}

impl<'a> FromContext<'a> for &'a Context {
    fn from_context(ctx: &'a Context) -> Result<Self, HandlerError> {
        Ok(ctx)
    }
}

impl<'a> FromContext<'a> for &'a ClientConfig {
    fn from_context(ctx: &'a Context) -> Result<Self, HandlerError> {
        Ok(&*ctx.client)
    }
}

impl<'a> FromContext<'a> for &'a DataStores {
    fn from_context(ctx: &'a Context) -> Result<Self, HandlerError> {
        Ok(&ctx.data_stores)
    }
}

impl<'a> FromContext<'a> for &'a AggregationResults {
    fn from_context(ctx: &'a Context) -> Result<Self, HandlerError> {
        Ok(&ctx.aggregation_results)
    }
}

impl<'a> FromContext<'a> for Option<&'a TaskError> {
    fn from_context(ctx: &'a Context) -> Result<Self, HandlerError> {
        Ok(ctx.last_error.as_ref())
    }
}

impl<'a> FromContext<'a> for Option<&'a crate::files::TaskFiles> {
    fn from_context(ctx: &'a Context) -> Result<Self, HandlerError> {
        Ok(ctx.task_files.as_ref())
    }
}

impl<'a> FromContext<'a> for &'a crate::files::TaskFiles {
    fn from_context(ctx: &'a Context) -> Result<Self, HandlerError> {
        ctx.task_files.as_ref().ok_or_else(|| {
            HandlerError::Failed(
                "this handler needs TaskFiles but no file storage is configured (set S3_ENDPOINT_URL)".into(),
            )
        })
    }
}

/// The job's `initial_data` itself.
impl<'a> FromContext<'a> for &'a serde_json::Value {
    fn from_context(ctx: &'a Context) -> Result<Self, HandlerError> {
        Ok(&ctx.initial_data)
    }
}

/// Typed initial data: `InitialData(order): InitialData<Order>` deserializes `initial_data`.
/// If it does not fit, the job fails with an invalid-input error (no retry).
#[derive(Debug, Clone, PartialEq)]
pub struct InitialData<T>(pub T);

impl<'a, T: DeserializeOwned> FromContext<'a> for InitialData<T> {
    fn from_context(ctx: &'a Context) -> Result<Self, HandlerError> {
        T::deserialize(&ctx.initial_data).map(InitialData).map_err(|e| {
            HandlerError::InvalidInput(format!("initial_data does not match `{}`: {e}", std::any::type_name::<T>()))
        })
    }
}

impl<T> std::ops::Deref for InitialData<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The result of an end handler: `Output(value)` becomes the job's `result` (it is stored as
/// `state_history[<end state>]`, which is where the result is read from). When `T` implements
/// `schemars::JsonSchema`, its schema is the blueprint's output contract for that end state: it
/// is published (`GET /api/v1/blueprints`, the OpenAPI document) and a job that reaches
/// `finished` with a result breaking it ends `failed` instead ("Blueprint contract violation").
/// Only end handlers may return it (a compile error elsewhere).
#[derive(Debug, Clone, PartialEq)]
pub struct Output<T>(pub T);

/// What a handler may return: `()`, `Result<(), E>` with `E: Display` (an `Err` fails the run),
/// and in end handlers [`Output<T>`] or `Result<Output<T>, E>` with `T: Serialize`.
#[diagnostic::on_unimplemented(
    message = "an avto handler must return `()`, `Result<(), E>`, `Output<T>` or `Result<Output<T>, E>` (`E: Display`, `T: Serialize`)",
    label = "unsupported return type"
)]
pub trait IntoHandlerResult {
    /// The run's outcome: the [`Output`] it returned, if any.
    fn into_handler_result(self) -> Result<Option<serde_json::Value>, HandlerError>;
}

impl IntoHandlerResult for () {
    fn into_handler_result(self) -> Result<Option<serde_json::Value>, HandlerError> {
        Ok(None)
    }
}

impl<E: std::fmt::Display> IntoHandlerResult for Result<(), E> {
    fn into_handler_result(self) -> Result<Option<serde_json::Value>, HandlerError> {
        self.map(|()| None).map_err(|e| HandlerError::Failed(e.to_string()))
    }
}

impl<T: serde::Serialize> IntoHandlerResult for Output<T> {
    fn into_handler_result(self) -> Result<Option<serde_json::Value>, HandlerError> {
        serde_json::to_value(&self.0).map(Some).map_err(|e| {
            HandlerError::Failed(format!("the output `{}` does not serialize: {e}", std::any::type_name::<T>()))
        })
    }
}

impl<T: serde::Serialize, E: std::fmt::Display> IntoHandlerResult for Result<Output<T>, E> {
    fn into_handler_result(self) -> Result<Option<serde_json::Value>, HandlerError> {
        self.map_err(|e| HandlerError::Failed(e.to_string()))?.into_handler_result()
    }
}
