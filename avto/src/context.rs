//! What a handler sees of its job: [`Context`] and the values inside it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::storage::DataStores;

/// The read-only view of a job that handlers receive (`ctx: &Context`).
///
/// `#[when(...)]` conditions are Rust expressions over a `ctx: &Context`, e.g.
/// `#[when(ctx.initial_data["language"] == "en")]`. Indexing a missing JSON key yields
/// `Value::Null` (in `initial_data` and in `state_history` alike), so conditions are null-safe
/// without extra code. A condition that panics anyway fails the run like a panicking handler.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Context {
    pub job_id: String,
    /// Name of the blueprint this job runs.
    pub blueprint: String,
    /// The state whose handler runs now.
    pub current_state: String,
    /// The job's input (`initial_data` of the create request).
    pub initial_data: Value,
    /// Worker results and `actions.update_context(..)` values, merged in arrival order.
    /// `ctx.state_history["missing"]` is null, like `ctx.initial_data["missing"]`.
    pub state_history: StateHistory,
    /// Results of the parallel branches that fanned into this aggregator state.
    pub aggregation_results: AggregationResults,
    /// The client that created the job (from clients.toml or `CLIENT_TOKEN`).
    pub client: std::sync::Arc<ClientConfig>,
    /// The last task failure (code + message), e.g. in the state a `failure` transition leads to.
    pub last_error: Option<TaskError>,
    pub webhook_url: Option<String>,
    /// Set for jobs started by `run_blueprint`.
    pub parent_job_id: Option<String>,
    /// States entered so far, in order.
    pub path: Vec<String>,
    /// Blueprint data stores (shared by every job of the blueprint).
    pub data_stores: DataStores,
    /// The job's files (`jobs/{job_id}/`), when file storage is configured.
    pub task_files: Option<crate::files::TaskFiles>,
    /// The application state ([`crate::State`] arguments read it).
    pub(crate) app_state: std::sync::Arc<crate::state::AppState>,
}

impl Context {
    /// A value from `state_history` (null when absent).
    pub fn history(&self, key: &str) -> &Value {
        self.state_history.get(key).unwrap_or(&Value::Null)
    }

    /// The output of the task of contract `C` ([`crate::TaskContract`]), typed: read from
    /// `state_history`, where a success result's data is merged (so in the state its `success`
    /// transition leads to; a key written later by another task or `update_context` wins). An
    /// error when the history does not hold a `C::Output`.
    pub fn task_output<C: crate::TaskContract>(&self) -> Result<C::Output, serde_json::Error> {
        serde_json::from_value(Value::Object(self.state_history.0.clone()))
    }
}

/// A job's `state_history` as handlers see it: the JSON object (every `Map` method through
/// `Deref`), with null-safe indexing: `history["missing"]` is `Value::Null`, as for any
/// `serde_json::Value` object, instead of the panic of `Map`'s own `Index`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StateHistory(pub Map<String, Value>);

static NULL: Value = Value::Null;

impl std::ops::Deref for StateHistory {
    type Target = Map<String, Value>;
    fn deref(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl<Q: AsRef<str> + ?Sized> std::ops::Index<&Q> for StateHistory {
    type Output = Value;
    fn index(&self, key: &Q) -> &Value {
        self.0.get(key.as_ref()).unwrap_or(&NULL)
    }
}

impl<'a> IntoIterator for &'a StateHistory {
    type Item = (&'a String, &'a Value);
    type IntoIter = serde_json::map::Iter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<Map<String, Value>> for StateHistory {
    fn from(map: Map<String, Value>) -> Self {
        StateHistory(map)
    }
}

/// The configuration of the client that created a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// The client's table name in clients.toml (`client_premium`), or `default` for `CLIENT_TOKEN`.
    #[serde(default)]
    pub name: String,
    /// The client's identity, which owns its jobs: unique among the configured clients and stable
    /// across restarts and token rotation (`toml:<name>` for a clients.toml table,
    /// `env:CLIENT_TOKEN` for the client of `CLIENT_TOKEN`, `dev:default` for the development
    /// token, `system:scheduler` for schedules). Never a token.
    #[serde(default)]
    pub id: String,
    /// `plan` from clients.toml (`unknown` when missing).
    #[serde(default)]
    pub plan: String,
    /// The `params` sub-table, if any.
    #[serde(default)]
    pub params: Value,
    /// Every field of the client's table except the token (`plan`, `languages`, ...).
    #[serde(default)]
    pub config: Map<String, Value>,
}

impl ClientConfig {
    /// A config value by key (null when absent), e.g. `ctx.client.get("languages")`.
    pub fn get(&self, key: &str) -> &Value {
        self.config.get(key).unwrap_or(&Value::Null)
    }
}

/// An error reported by a worker (`error: {code, message}` of a result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl TaskError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError { code: code.into(), message: message.into(), details: None }
    }

    /// How avto reacts to this code (see [`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        ErrorClass::of(&self.code)
    }
}

/// The error-code policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Retried with exponential backoff and a new task id, up to `JOB_MAX_RETRIES`.
    Transient,
    /// Not retried; without a `failure` transition the job ends `quarantined`.
    Permanent,
    /// Not retried; without a `failure` transition the job ends `failed` (also used for
    /// `DISPATCH_TIMEOUT_ERROR`: no worker picked the task up in time).
    InvalidInput,
}

impl ErrorClass {
    pub fn of(code: &str) -> Self {
        match code {
            "PERMANENT_ERROR" | "SECURITY_ERROR" | "DEPENDENCY_ERROR" | "CONTRACT_VIOLATION_ERROR" => Self::Permanent,
            "INVALID_INPUT_ERROR" | "INTEGRITY_MISMATCH_ERROR" | "DISPATCH_TIMEOUT_ERROR" => Self::InvalidInput,
            _ => Self::Transient,
        }
    }

    /// `transient`, `permanent` or `invalid_input`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::InvalidInput => "invalid_input",
        }
    }
}

/// One finished parallel branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchResult {
    pub task_id: String,
    pub task_type: String,
    /// `success`, `failure` or a custom status.
    pub status: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}

impl BranchResult {
    pub fn is_success(&self) -> bool {
        self.status == "success"
    }
}

/// Results of parallel branches, in dispatch order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AggregationResults(pub Vec<BranchResult>);

impl AggregationResults {
    pub fn iter(&self) -> std::slice::Iter<'_, BranchResult> {
        self.0.iter()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The result of one branch by task id.
    pub fn get(&self, task_id: &str) -> Option<&BranchResult> {
        self.0.iter().find(|b| b.task_id == task_id)
    }
    /// The results of the branches of one task type.
    pub fn of_type<'a>(&'a self, task_type: &'a str) -> impl Iterator<Item = &'a BranchResult> + 'a {
        self.0.iter().filter(move |b| b.task_type == task_type)
    }
    /// The `data` of every successful branch, in dispatch order.
    pub fn successes(&self) -> impl Iterator<Item = &Value> {
        self.0.iter().filter(|b| b.is_success()).map(|b| &b.data)
    }
    /// The outputs of the successful branches of contract `C` ([`crate::TaskContract`]),
    /// typed, in dispatch order.
    pub fn outputs<C: crate::TaskContract>(&self) -> Vec<Result<C::Output, serde_json::Error>> {
        self.of_type(C::NAME).filter(|b| b.is_success()).map(|b| serde_json::from_value(b.data.clone())).collect()
    }
}

impl<'a> IntoIterator for &'a AggregationResults {
    type Item = &'a BranchResult;
    type IntoIter = std::slice::Iter<'a, BranchResult>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
