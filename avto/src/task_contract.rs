//! [`TaskContract`]: one task's skill name, params type and output type, shared by the blueprint
//! that dispatches it and the worker that runs it, so the compiler checks they agree.
//!
//! ```
//! use avto::TaskContract;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, schemars::JsonSchema)]
//! pub struct ResizeParams { pub url: String, pub width: u32 }
//!
//! #[derive(Serialize, Deserialize, schemars::JsonSchema)]
//! pub struct Resized { pub url: String }
//!
//! /// The `resize` task (put it in a crate both the blueprint and the worker depend on).
//! pub struct Resize;
//!
//! impl TaskContract for Resize {
//!     const NAME: &'static str = "resize";
//!     type Params = ResizeParams;
//!     type Output = Resized;
//! }
//!
//! assert_eq!(Resize::input_schema()["required"], serde_json::json!(["url", "width"]));
//! ```
//!
//! The blueprint dispatches it with `actions.dispatch::<Resize>(ResizeParams { .. })` (params of
//! another type do not compile) and reads the result with `ctx.task_output::<Resize>()`; the
//! worker implements it with `#[avto::task(contract = Resize)]` on an
//! `async fn(ResizeParams, TaskHandle) -> Result<Resized, E>` (another params or output type does
//! not compile) or `WorkerBuilder::contract::<Resize, _, _, _>(handler)`. The worker registers
//! both types' JSON Schemas (`input_schema`, `output_schema`), which the orchestrator checks
//! params and results against, so workers in other languages are held to the same contract.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A task's contract: the skill name, the params and the data of a success result. See the
/// [module docs](self).
pub trait TaskContract {
    /// The skill name (1-128 characters of `[A-Za-z0-9_-]`).
    const NAME: &'static str;
    /// The task's params (an object on the wire: a struct, or a map).
    type Params: Serialize + DeserializeOwned + JsonSchema + Send + 'static;
    /// The `data` of a success result (an object on the wire: a struct, or a map).
    type Output: Serialize + DeserializeOwned + JsonSchema + Send + 'static;

    /// The JSON Schema of the params (`{"type": "object"}` when `Params` is untyped).
    fn input_schema() -> Value {
        object_schema::<Self::Params>().unwrap_or_else(|| serde_json::json!({"type": "object"}))
    }

    /// The JSON Schema of the output (`None` when `Output` is untyped).
    fn output_schema() -> Option<Value> {
        object_schema::<Self::Output>()
    }
}

/// T's JSON Schema when it describes a JSON object (`"type": "object"` at the top, as for a
/// struct or a map); `None` for anything else (`serde_json::Value`, `()`, an enum, a scalar), which
/// a worker publishes as no schema (or, for params, the SDKs' `{"type": "object"}`).
pub fn object_schema<T: JsonSchema>() -> Option<Value> {
    let schema = schemars::schema_for!(T).to_value();
    (schema.get("type") == Some(&Value::String("object".into()))).then_some(schema)
}
