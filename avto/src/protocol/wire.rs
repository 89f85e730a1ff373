//! Serde types for every RXON message (rxon 1.0b17 `models.py`).
//!
//! These are the only spelling of each message, on both sides: the worker SDK builds and reads
//! them, and the orchestrator reads what workers send into them (after checking the signature
//! over the body as sent) and answers with them.
//!
//! Deserialising tolerates unknown keys (the orchestrator drops them too). The messages a worker
//! sends (registration, heartbeat, result, event) read as leniently as the orchestrator has always
//! read them:
//! * a field it does not act on never refuses a message: a value of the wrong type reads as absent
//!   or as its default (the worker record, `GET /workers`, keeps the body as sent);
//! * a required string it acts on (`worker_id`, `job_id`, `event_type`, ...) reads as empty when
//!   missing or not a string, and the orchestrator refuses it with its own message;
//! * the result and event fields it acts on are refused while reading, with the messages it has
//!   always answered (400): `status must be a string`, ``Expected object | null for `data` ``,
//!   `payload must be an object`, ...;
//! * a result `error` may be a bare string (a `TRANSIENT_ERROR` with that message), as the Python
//!   SDK sends a handler's string errors.
//!
//! Serialising omits
//! `None` and the defaults the Python SDK omits (`TaskResult.status == "success"`,
//! `SkillInfo.schema_dialect == "json-schema"`, zero `step`/`depth`/`size`), so a body built
//! here and written with [`super::canonical`] looks like the SDK's. Floats stay floats in these
//! types; the canonical writer turns integral ones into integers on the wire.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub use crate::context::TaskError;

/// A JSON object.
pub type JsonObject = Map<String, Value>;

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// Zero-trust signature block carried by signed messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_chain: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonObject>,
}

/// A device in `resources.devices` (GPU, NPU, ...). Matching: `type` equal, `model` substring
/// (case-insensitive), numeric `properties` ≥.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HardwareDevice {
    #[serde(rename = "type")]
    pub device_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<JsonObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<JsonObject>,
}

impl HardwareDevice {
    /// A GPU as the SDK describes `GPU_MODEL`/`GPU_ID`/`GPU_VRAM_GB`: `{"type":"gpu","model",
    /// "id","properties":{"memory_gb"}}`.
    pub fn gpu(model: impl Into<String>, id: impl Into<String>, memory_gb: i64) -> Self {
        let mut props = Map::new();
        props.insert("memory_gb".into(), Value::from(memory_gb));
        HardwareDevice {
            device_type: "gpu".into(),
            model: Some(model.into()),
            id: Some(id.into()),
            properties: Some(props),
            metrics: None,
        }
    }
}

/// Per-device usage in a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceUsage {
    pub unit_id: String,
    pub load_percent: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<JsonObject>,
}

/// Heartbeat `usage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcesUsage {
    #[serde(default)]
    pub cpu_load_percent: f64,
    #[serde(default)]
    pub ram_used_gb: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices_usage: Option<Vec<DeviceUsage>>,
}

/// Registration `resources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<HardwareDevice>>,
    /// `cpu_cores`, `ram_gb`, and anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<JsonObject>,
}

fn default_artifact_version() -> String {
    "unknown".into()
}

/// An installed model / artifact (`installed_artifacts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstalledArtifact {
    pub name: String,
    #[serde(default = "default_artifact_version")]
    pub version: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<JsonObject>,
}

impl InstalledArtifact {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        InstalledArtifact { name: name.into(), version: version.into(), artifact_type: None, properties: None }
    }
}

/// Default `SkillInfo.schema_dialect`.
pub const DEFAULT_SCHEMA_DIALECT: &str = "json-schema";

fn default_schema_dialect() -> String {
    DEFAULT_SCHEMA_DIALECT.into()
}
fn is_default_schema_dialect(s: &String) -> bool {
    s == DEFAULT_SCHEMA_DIALECT
}

/// One skill in `supported_skills`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillInfo {
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub skill_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Event type → JSON schema of its payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_schema: Option<JsonObject>,
    /// Custom result statuses this skill may return (besides success/failure/cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_statuses: Option<Vec<String>>,
    #[serde(default = "default_schema_dialect", skip_serializing_if = "is_default_schema_dialect")]
    pub schema_dialect: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<JsonObject>,
}

impl SkillInfo {
    /// A skill named `name` with everything else unset.
    pub fn new(name: impl Into<String>) -> Self {
        SkillInfo {
            name: name.into(),
            skill_type: None,
            description: None,
            version: None,
            input_schema: None,
            output_schema: None,
            events_schema: None,
            output_statuses: None,
            schema_dialect: default_schema_dialect(),
            properties: None,
        }
    }
}

fn default_hostname() -> String {
    "unknown".into()
}
fn default_ip() -> String {
    "0.0.0.0".into()
}

/// Registration `capabilities`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerCapabilities {
    #[serde(default = "default_hostname")]
    pub hostname: String,
    #[serde(default = "default_ip")]
    pub ip_address: String,
    /// Skill name → cost (used by the `cheapest`/`best_value` strategies and `max_cost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_skill: Option<BTreeMap<String, f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_config_hash: Option<String>,
    /// Free-form extras; the SDK puts `websockets: bool` and `WORKER_EXTRA_*` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<JsonObject>,
}

impl Default for WorkerCapabilities {
    fn default() -> Self {
        WorkerCapabilities {
            hostname: default_hostname(),
            ip_address: default_ip(),
            cost_per_skill: None,
            s3_config_hash: None,
            extra: None,
        }
    }
}

/// S3 object metadata (`params_metadata`, `data_metadata`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMetadata {
    pub uri: String,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonObject>,
}

pub(super) fn default_worker_type() -> String {
    "generic".into()
}

/// `POST /_worker/workers/register` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRegistration {
    /// Empty when missing (the orchestrator refuses it).
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_default")]
    pub worker_id: String,
    #[serde(default = "default_worker_type", deserialize_with = "crate::protocol::lenient::worker_type")]
    pub worker_type: String,
    /// Each entry must at least have a string `name`; a skill whose other fields do not read
    /// reads as its name alone.
    #[serde(
        default,
        deserialize_with = "crate::protocol::lenient::supported_skills",
        skip_serializing_if = "Option::is_none"
    )]
    pub supported_skills: Option<Vec<SkillInfo>>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub available_skills: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub hot_skills: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub installed_software: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub installed_artifacts: Option<Vec<InstalledArtifact>>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<WorkerCapabilities>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub skills_hash: Option<String>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityContext>,
    #[serde(default, deserialize_with = "super::lenient::object_or_none", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonObject>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

impl WorkerRegistration {
    pub fn new(worker_id: impl Into<String>) -> Self {
        WorkerRegistration {
            worker_id: worker_id.into(),
            worker_type: default_worker_type(),
            supported_skills: None,
            available_skills: None,
            hot_skills: None,
            resources: None,
            installed_software: None,
            installed_artifacts: None,
            capabilities: None,
            skills_hash: None,
            security: None,
            metadata: None,
            timestamp: None,
        }
    }
}

/// Register answer: `{"status":"registered","version":"1.0b17"}` (+ `warning` on a version
/// mismatch; the SDK also accepts STS tokens here, which 1.0b30 never sends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
}

impl RegisterResponse {
    pub fn registered() -> Self {
        RegisterResponse {
            status: response_status::REGISTERED.into(),
            version: Some(super::PROTOCOL_VERSION.into()),
            warning: None,
            access_token: None,
            refresh_token: None,
            expires_in: None,
        }
    }
}

/// `status` words of the orchestrator's answers.
pub mod response_status {
    /// [`super::RegisterResponse`].
    pub const REGISTERED: &str = "registered";
    /// [`super::HeartbeatResponse`] (and `/_public/status`).
    pub const OK: &str = "ok";
    /// The answer to a heartbeat with an empty body.
    pub const TTL_REFRESHED: &str = "ttl_refreshed";
    /// [`super::ResultResponse::accepted`].
    pub const ACCEPTED: &str = "accepted";
    /// [`super::ResultResponse::ignored`].
    pub const IGNORED: &str = "ignored";
    /// [`super::EventResponse::accepted`].
    pub const EVENT_ACCEPTED: &str = "event_accepted";
}

/// Worker status values in heartbeats.
pub mod worker_status {
    pub const IDLE: &str = "idle";
    pub const BUSY: &str = "busy";
    pub const FULL: &str = "full";
    pub const OFFLINE: &str = "offline";
    /// Defined by rxon; the SDK never sends it.
    pub const DRAINING: &str = "draining";
}

/// `PATCH /_worker/workers/{worker_id}` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Empty when missing (the body then claims no id; the path names the worker).
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_default")]
    pub worker_id: String,
    /// See [`worker_status`]. Empty when missing.
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_default")]
    pub status: String,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResourcesUsage>,
    /// Task ids in flight.
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub current_tasks: Option<Vec<String>>,
    /// Sent only when the skills hash changed since the last acknowledged sync.
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub supported_skills: Option<Vec<SkillInfo>>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub available_skills: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub hot_skills: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub skills_hash: Option<String>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityContext>,
    #[serde(default, deserialize_with = "super::lenient::object_or_none", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonObject>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

impl Heartbeat {
    pub fn new(worker_id: impl Into<String>, status: impl Into<String>) -> Self {
        Heartbeat {
            worker_id: worker_id.into(),
            status: status.into(),
            usage: None,
            current_tasks: None,
            supported_skills: None,
            available_skills: None,
            hot_skills: None,
            skills_hash: None,
            security: None,
            metadata: None,
            timestamp: None,
        }
    }
}

/// Heartbeat answer: `{"status":"ok"}` + optional `require_full_sync`, `cancel_task_ids`,
/// `next_heartbeat_jitter_ms`. (An empty-body heartbeat gets `{"status":"ttl_refreshed"}` or JSON
/// `null`.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_full_sync: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancel_task_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_heartbeat_jitter_ms: Option<f64>,
}

impl HeartbeatResponse {
    /// `{"status": "ok"}`.
    pub fn ok() -> Self {
        HeartbeatResponse { status: response_status::OK.into(), ..Default::default() }
    }
}

/// A task (`GET …/tasks/next` answer, orchestrator → worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPayload {
    pub job_id: String,
    pub task_id: String,
    /// The skill name.
    #[serde(rename = "type")]
    pub task_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<JsonObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing_context: Option<JsonObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_metadata: Option<BTreeMap<String, FileMetadata>>,
    #[serde(default)]
    pub priority: f64,
    /// Absolute epoch deadline (the job's `result_deadline`); may be fractional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// e.g. `{"allowed_skills": [...]}`, enforced by the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<JsonObject>,
    /// HMAC of the task with the orchestrator secret (see [`super::sign::sign_task`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub step: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub depth: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_hash: Option<String>,
    /// The skill version the dispatch required (the orchestrator adds it after signing: not
    /// covered by `sig`, not a field of rxon's `TaskPayload`; the Python SDK ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill_version: Option<String>,
    /// The skill type the dispatch required (added after signing, like `skill_version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill_type: Option<String>,
}

impl TaskPayload {
    pub fn new(job_id: impl Into<String>, task_id: impl Into<String>, task_type: impl Into<String>) -> Self {
        TaskPayload {
            job_id: job_id.into(),
            task_id: task_id.into(),
            task_type: task_type.into(),
            params: None,
            tracing_context: None,
            params_metadata: None,
            priority: 0.0,
            deadline: None,
            security: None,
            metadata: None,
            timestamp: None,
            policy: None,
            sig: None,
            step: 0,
            depth: 0,
            parent_hash: None,
            skill_version: None,
            skill_type: None,
        }
    }

    /// `policy.allowed_skills`, when present and a list of strings.
    pub fn allowed_skills(&self) -> Option<Vec<&str>> {
        let list = self.policy.as_ref()?.get("allowed_skills")?.as_array()?;
        Some(list.iter().filter_map(Value::as_str).collect())
    }
}

/// Result statuses with built-in meaning; anything else is a custom transition name.
pub mod task_status {
    pub const SUCCESS: &str = "success";
    pub const FAILURE: &str = "failure";
    pub const CANCELLED: &str = "cancelled";
}

fn default_success() -> String {
    task_status::SUCCESS.into()
}
fn is_success(s: &String) -> bool {
    s == task_status::SUCCESS
}

/// `POST /_worker/tasks/result` body. A missing `status` means `"success"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Empty when missing or not a string (the orchestrator refuses it).
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_default")]
    pub job_id: String,
    /// Empty when missing or not a string (the orchestrator refuses it).
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_default")]
    pub task_id: String,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub origin_worker_id: Option<String>,
    /// See [`task_status`]; a custom status names a transition.
    #[serde(
        default = "default_success",
        deserialize_with = "crate::protocol::lenient::result_status",
        skip_serializing_if = "is_success"
    )]
    pub status: String,
    #[serde(
        default,
        deserialize_with = "crate::protocol::lenient::result_data",
        skip_serializing_if = "Option::is_none"
    )]
    pub data: Option<JsonObject>,
    /// An object `{code, message, details}`; the SDK may also send a bare string.
    #[serde(
        default,
        deserialize_with = "crate::protocol::lenient::result_error",
        skip_serializing_if = "Option::is_none"
    )]
    pub error: Option<TaskError>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub data_metadata: Option<BTreeMap<String, FileMetadata>>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityContext>,
    #[serde(default, deserialize_with = "super::lenient::object_or_none", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonObject>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// The SDK always sends `{"execution_time_seconds": x}` plus handler-supplied costs.
    #[serde(default, deserialize_with = "super::lenient::object_or_none", skip_serializing_if = "Option::is_none")]
    pub costs: Option<JsonObject>,
}

impl TaskResult {
    pub fn new(job_id: impl Into<String>, task_id: impl Into<String>, status: impl Into<String>) -> Self {
        TaskResult {
            job_id: job_id.into(),
            task_id: task_id.into(),
            worker_id: None,
            origin_worker_id: None,
            status: status.into(),
            data: None,
            error: None,
            data_metadata: None,
            security: None,
            metadata: None,
            timestamp: None,
            costs: None,
        }
    }
}

/// `ignored` reasons of a result answer.
pub mod ignored_reason {
    pub const JOB_NOT_FOUND: &str = "job_not_found";
    pub const WORKER_MISMATCH: &str = "worker_mismatch";
    pub const STALE_TASK: &str = "stale_task";
    pub const DEADLINE_EXCEEDED: &str = "deadline_exceeded";
    pub const JOB_CANCELLED: &str = "job_cancelled";
    pub const JOB_ALREADY_TERMINATED: &str = "job_already_terminated";
    pub const MIDDLEWARE_ERROR: &str = "middleware_error";
}

/// `transition` words of an accepted result ([`ResultResponse::accepted`]).
pub mod result_transition {
    /// A result moved the job on along its status's transition (or completed a fan-out).
    pub const SUCCESS_TRANSITION: &str = "success_transition";
    /// A `failure` result: retried, or the job followed `failure` or ended.
    pub const FAILURE_HANDLED: &str = "failure_handled";
    /// A `cancelled` result: the job followed `cancelled` or ended cancelled.
    pub const CANCELLED_HANDLED: &str = "cancelled_handled";
    /// A custom status moved the job along its transition.
    pub const CUSTOM_TRANSITION: &str = "custom_transition";
    /// A status without a transition: the job failed.
    pub const UNHANDLED_STATUS_FAILURE: &str = "unhandled_status_failure";
    /// One branch of a fan-out finished; others are still running.
    pub const PARALLEL_BRANCH_ACCEPTED: &str = "parallel_branch_accepted";
}

/// Result answer: `{"status":"accepted","transition":…}` or
/// `{"status":"ignored","reason":…,"message":…}` (both HTTP 200).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultResponse {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ResultResponse {
    pub fn accepted(transition: impl Into<String>) -> Self {
        ResultResponse {
            status: response_status::ACCEPTED.into(),
            transition: Some(transition.into()),
            reason: None,
            message: None,
        }
    }
    pub fn ignored(reason: impl Into<String>, message: impl Into<String>) -> Self {
        ResultResponse {
            status: response_status::IGNORED.into(),
            transition: None,
            reason: Some(reason.into()),
            message: Some(message.into()),
        }
    }
    pub fn is_ignored(&self) -> bool {
        self.status == response_status::IGNORED
    }
}

/// `POST /_worker/events` body (also sent as a WebSocket text frame).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerEventPayload {
    /// uuid4; also the replay nonce. Empty when missing.
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_default")]
    pub event_id: String,
    /// Empty when missing.
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_default")]
    pub worker_id: String,
    /// Empty when missing.
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_default")]
    pub origin_worker_id: String,
    /// [`super::EVENT_TYPE_PROGRESS`] or a type the skill declares. Empty when missing (the
    /// orchestrator refuses it).
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_default")]
    pub event_type: String,
    /// Empty when missing or null.
    #[serde(default, deserialize_with = "crate::protocol::lenient::event_payload")]
    pub payload: JsonObject,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub origin_task_id: Option<String>,
    /// Not covered by the signature.
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub bubbling_chain: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub target_job_id: Option<String>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub target_task_id: Option<String>,
    #[serde(default, deserialize_with = "super::lenient::object_or_none", skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<JsonObject>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_default")]
    pub priority: f64,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(default, deserialize_with = "crate::protocol::lenient::or_none", skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityContext>,
    #[serde(default, deserialize_with = "super::lenient::object_or_none", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonObject>,
}

/// Event answer: `{"status":"event_accepted"}` or `{"status":"error","code":…,…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventResponse {
    pub status: String,
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl EventResponse {
    /// `{"status": "event_accepted"}`.
    pub fn accepted() -> Self {
        EventResponse { status: response_status::EVENT_ACCEPTED.into(), extra: JsonObject::new() }
    }

    /// `{"status": "error", "code": code, "message": message}` (e.g. a payload that breaks the
    /// skill's `events_schema`: `CONTRACT_VIOLATION_ERROR`).
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        let mut extra = JsonObject::new();
        extra.insert("code".into(), Value::String(code.to_owned()));
        extra.insert("message".into(), Value::String(message.into()));
        EventResponse { status: "error".into(), extra }
    }
}

/// Orchestrator → worker command (WebSocket text frame), e.g.
/// `{"command":"cancel_task","task_id":…,"job_id":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerCommand {
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<JsonObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonObject>,
}

impl WorkerCommand {
    pub fn cancel_task(task_id: impl Into<String>, job_id: impl Into<String>) -> Self {
        WorkerCommand {
            command: super::COMMAND_CANCEL_TASK.into(),
            task_id: Some(task_id.into()),
            job_id: Some(job_id.into()),
            params: None,
            metadata: None,
        }
    }
}

/// STS answer of `POST /_worker/auth/token` and `…/token/refresh`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub expires_in: i64,
    pub worker_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonObject>,
}

/// `POST /_worker/auth/token/refresh` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshTokenRequest {
    pub refresh_token: String,
}

/// Error body of every non-2xx answer: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>) -> Self {
        ErrorBody { error: error.into() }
    }
}

/// `{"status": "..."}` answers (`/_public/status`, heartbeat `ok`, `ttl_refreshed`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusBody {
    pub status: String,
}

impl StatusBody {
    /// `{"status": status}`, e.g. [`response_status::TTL_REFRESHED`].
    pub fn new(status: impl Into<String>) -> Self {
        StatusBody { status: status.into() }
    }
}
