//! What a task handler returns.

use crate::protocol::wire::FileMetadata;
use crate::protocol::{error_codes, task_status, TaskError};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The result of one task: a status (`success`, `failure`, `cancelled` or a custom transition
/// name), data, an error and optional metadata/costs.
///
/// ```
/// use avto::worker::TaskOutcome;
/// use serde_json::json;
///
/// let ok = TaskOutcome::success(json!({"echo": {"msg": "hi"}}));
/// let bad = TaskOutcome::failure("INVALID_INPUT_ERROR", "msg is missing");
/// let review = TaskOutcome::status("needs_review", json!({"score": 0.4})).with_cost("gpu_seconds", 1.5);
/// assert_eq!(review.status_name(), "needs_review");
/// # let _ = (ok, bad);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutcome {
    pub(crate) status: String,
    pub(crate) data: Value,
    pub(crate) error: Option<TaskError>,
    pub(crate) metadata: Option<Map<String, Value>>,
    pub(crate) costs: Map<String, Value>,
    /// What the S3 offload uploaded, by the key path of its URI in `data` (`a.b`, `list[0]`).
    pub(crate) data_metadata: BTreeMap<String, FileMetadata>,
}

impl TaskOutcome {
    fn new(status: &str, data: Value, error: Option<TaskError>) -> Self {
        TaskOutcome {
            status: status.to_owned(),
            data,
            error,
            metadata: None,
            costs: Map::new(),
            data_metadata: BTreeMap::new(),
        }
    }

    /// `status: success` with `data` (must serialise to a JSON object; `()`/`null` = `{}`).
    pub fn success(data: impl Serialize) -> Self {
        match serde_json::to_value(data) {
            Ok(v) => Self::new(task_status::SUCCESS, v, None),
            Err(e) => Self::serialization_failure(e),
        }
    }

    /// `status: failure` with `error: {code, message}`. `code` is one of
    /// [`crate::protocol::error_codes`] (`TRANSIENT_ERROR` is retried, `PERMANENT_ERROR`
    /// quarantines, `INVALID_INPUT_ERROR` fails the job, ...).
    pub fn failure(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::error(TaskError::new(code, message))
    }

    /// `status: failure` with a full [`TaskError`] (including `details`).
    pub fn error(error: TaskError) -> Self {
        Self::new(task_status::FAILURE, Value::Null, Some(error))
    }

    /// `status: cancelled`.
    pub fn cancelled() -> Self {
        Self::new(task_status::CANCELLED, Value::Null, None)
    }

    /// A custom status (a transition name of the dispatching blueprint) with data.
    pub fn status(name: impl Into<String>, data: impl Serialize) -> Self {
        let name = name.into();
        match serde_json::to_value(data) {
            Ok(v) => Self::new(&name, v, None),
            Err(e) => Self::serialization_failure(e),
        }
    }

    fn serialization_failure(e: serde_json::Error) -> Self {
        Self::failure(error_codes::CONTRACT_VIOLATION_ERROR, format!("task output does not serialise: {e}"))
    }

    /// Attach result `metadata` (must serialise to an object; ignored otherwise).
    pub fn with_metadata(mut self, metadata: impl Serialize) -> Self {
        if let Ok(Value::Object(m)) = serde_json::to_value(metadata) {
            self.metadata = Some(m);
        }
        self
    }

    /// Add a cost entry (`costs` also always carries `execution_time_seconds`).
    pub fn with_cost(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.costs.insert(key.into(), value.into());
        self
    }

    /// Attach `details` to the error of a failure.
    pub fn with_error_details(mut self, details: impl Serialize) -> Self {
        if let Some(err) = self.error.as_mut() {
            err.details = serde_json::to_value(details).ok();
        }
        self
    }

    /// The result status.
    pub fn status_name(&self) -> &str {
        &self.status
    }
    /// The data (`null` when none).
    pub fn data(&self) -> &Value {
        &self.data
    }
    /// The error of a failure.
    pub fn error_info(&self) -> Option<&TaskError> {
        self.error.as_ref()
    }
    /// The files the S3 offload uploaded from the data (`uri`, `size`, `etag`), by the key path
    /// of their URI in it (`a.b`, `list[0]`): the result's `data_metadata`, as the Python SDK
    /// sends it. The orchestrator keeps it with the job and hands the entries of a later task's
    /// params keys to that task (`TaskHandle::params_metadata`).
    pub fn data_metadata(&self) -> &BTreeMap<String, FileMetadata> {
        &self.data_metadata
    }
    pub fn is_success(&self) -> bool {
        self.status == task_status::SUCCESS
    }

    /// `data` as it goes on the wire: an object (`null` → `{}`, nothing for `cancelled`), or a
    /// `CONTRACT_VIOLATION_ERROR` failure when the handler produced a non-object.
    pub(crate) fn into_wire(self) -> TaskOutcome {
        match &self.data {
            Value::Object(_) => self,
            Value::Null if self.status == task_status::CANCELLED => self,
            Value::Null => TaskOutcome { data: Value::Object(Map::new()), ..self },
            other => {
                let kind = match other {
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::String(_) => "a string",
                    _ => "an array",
                };
                Self::failure(
                    error_codes::CONTRACT_VIOLATION_ERROR,
                    format!("task data must be a JSON object, the handler returned {kind}"),
                )
                .into_wire()
            }
        }
    }
}

impl From<TaskError> for TaskOutcome {
    fn from(e: TaskError) -> Self {
        TaskOutcome::error(e)
    }
}

/// Anything a task handler may return.
///
/// * [`TaskOutcome`] as is;
/// * `Result<T: Serialize, E: Into<TaskError>>`: `Ok` = success with `T` as data, `Err` = failure;
/// * `serde_json::Value` and `()`: success.
pub trait IntoTaskOutcome {
    fn into_outcome(self) -> TaskOutcome;
}

impl IntoTaskOutcome for TaskOutcome {
    fn into_outcome(self) -> TaskOutcome {
        self
    }
}

impl<T: Serialize, E: Into<TaskError>> IntoTaskOutcome for Result<T, E> {
    fn into_outcome(self) -> TaskOutcome {
        match self {
            Ok(data) => TaskOutcome::success(data),
            Err(e) => TaskOutcome::error(e.into()),
        }
    }
}

impl IntoTaskOutcome for Value {
    fn into_outcome(self) -> TaskOutcome {
        TaskOutcome::success(self)
    }
}

impl IntoTaskOutcome for () {
    fn into_outcome(self) -> TaskOutcome {
        TaskOutcome::success(Value::Null)
    }
}

/// What a handler of a [`TaskContract`](crate::TaskContract) returns: `Result<T, E>` with
/// `T` the contract's `Output` and `E: Into<TaskError>` (the compiler holds the handler to it).
pub trait Returns<T>: IntoTaskOutcome {}

impl<T: Serialize, E: Into<TaskError>> Returns<T> for Result<T, E> {}

/// Shorthands for [`TaskError`]s with the standard codes.
pub mod errors {
    use super::*;

    /// `TRANSIENT_ERROR`: retried by the orchestrator (new task id), then quarantined.
    pub fn transient(message: impl Into<String>) -> TaskError {
        TaskError::new(error_codes::TRANSIENT_ERROR, message)
    }
    /// `PERMANENT_ERROR`: the job is quarantined.
    pub fn permanent(message: impl Into<String>) -> TaskError {
        TaskError::new(error_codes::PERMANENT_ERROR, message)
    }
    /// `INVALID_INPUT_ERROR`: the job fails, no retry.
    pub fn invalid_input(message: impl Into<String>) -> TaskError {
        TaskError::new(error_codes::INVALID_INPUT_ERROR, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_data_is_always_an_object() {
        assert_eq!(TaskOutcome::success(()).into_wire().data, json!({}));
        assert_eq!(TaskOutcome::failure("X", "y").into_wire().data, json!({}));
        assert_eq!(TaskOutcome::cancelled().into_wire().data, Value::Null);
        for bad in [json!(1), json!("s"), json!([1]), json!(true)] {
            let o = TaskOutcome::success(bad).into_wire();
            assert_eq!(o.status, "failure");
            assert_eq!(o.error.unwrap().code, "CONTRACT_VIOLATION_ERROR");
        }
        let custom = TaskOutcome::status("needs_review", json!({"a": 1})).into_wire();
        assert_eq!((custom.status.as_str(), custom.data), ("needs_review", json!({"a": 1})));
    }
}
