//! Skill declarations (what goes into `supported_skills`), type-erased handlers, and the set of
//! skills a worker was built with ([`SkillSet`]).

use super::{IntoTaskOutcome, TaskHandle, TaskOutcome, WorkerConfig, WorkerError};
use crate::protocol::{self, error_codes, SkillInfo};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

/// A skill's catalogue entry: name, type, description, schemas, custom statuses, cost.
///
/// ```
/// use avto::worker::Skill;
/// use serde_json::json;
///
/// let skill = Skill::new("transcribe")
///     .description("Speech to text")
///     .version("1.2.0")
///     .input_schema(json!({"type": "object", "required": ["audio_url"]}))
///     .output_statuses(["needs_review"])
///     .event_schema("partial_text", json!({"type": "object"}))
///     .cost(0.02);
/// assert_eq!(skill.info().name, "transcribe");
/// ```
#[derive(Debug, Clone)]
pub struct Skill {
    pub(crate) info: SkillInfo,
    pub(crate) cost: Option<f64>,
}

impl Skill {
    /// A skill named `name`; `type` defaults to the name and `input_schema` to
    /// `{"type":"object"}`, as the Python SDK does for `@worker.skill("name")` with `params: dict`.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let mut info = SkillInfo::new(name.clone());
        info.skill_type = Some(name);
        info.input_schema = Some(json!({"type": "object"}));
        Skill { info, cost: None }
    }
    /// The skill of a [`TaskContract`](crate::TaskContract): its name, the JSON Schemas of its
    /// params (`input_schema`) and output (`output_schema`, when typed).
    pub fn of<C: crate::TaskContract>() -> Self {
        let skill = Skill::new(C::NAME).input_schema(C::input_schema());
        match C::output_schema() {
            Some(output) => skill.output_schema(output),
            None => skill,
        }
    }

    /// The schemas `#[avto::task]` probed from the function's types (`None` keeps the default).
    #[doc(hidden)]
    pub fn probed_schemas(mut self, input: Option<Value>, output: Option<Value>) -> Self {
        if let Some(input) = input {
            self.info.input_schema = Some(input);
        }
        if let Some(output) = output {
            self.info.output_schema = Some(output);
        }
        self
    }

    /// `type` (used for per-type concurrency limits and `skill_type` matching).
    pub fn skill_type(mut self, t: impl Into<String>) -> Self {
        self.info.skill_type = Some(t.into());
        self
    }
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.info.description = Some(d.into());
        self
    }
    pub fn version(mut self, v: impl Into<String>) -> Self {
        self.info.version = Some(v.into());
        self
    }
    /// JSON schema of the params (the Python orchestrator filters workers by it at dispatch).
    pub fn input_schema(mut self, schema: Value) -> Self {
        self.info.input_schema = Some(schema);
        self
    }
    /// No input schema at all.
    pub fn without_input_schema(mut self) -> Self {
        self.info.input_schema = None;
        self
    }
    /// JSON schema of the success data (the orchestrator checks results against it).
    pub fn output_schema(mut self, schema: Value) -> Self {
        self.info.output_schema = Some(schema);
        self
    }
    /// Declare an event type (and its payload schema) this skill may emit.
    pub fn event_schema(mut self, event_type: impl Into<String>, schema: Value) -> Self {
        self.info.events_schema.get_or_insert_with(Map::new).insert(event_type.into(), schema);
        self
    }
    /// Declare an event type whose payload is a `T` (its JSON Schema, from schemars); send it
    /// with [`TaskHandle::event`](super::TaskHandle::event)`(event_type, t)`.
    pub fn typed_event<T: schemars::JsonSchema>(self, event_type: impl Into<String>) -> Self {
        self.event_schema(event_type, schemars::schema_for!(T).to_value())
    }

    /// Custom result statuses (transition names) this skill may return.
    pub fn output_statuses<I: IntoIterator<Item = S>, S: Into<String>>(mut self, statuses: I) -> Self {
        self.info.output_statuses = Some(statuses.into_iter().map(Into::into).collect());
        self
    }
    /// Free-form `properties`.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.info.properties.get_or_insert_with(Map::new).insert(key.into(), value.into());
        self
    }
    /// `capabilities.cost_per_skill[name]` (for the `cheapest`/`best_value` strategies and `max_cost`).
    pub fn cost(mut self, cost: f64) -> Self {
        self.cost = Some(cost);
        self
    }
    pub fn info(&self) -> &SkillInfo {
        &self.info
    }
    pub fn name(&self) -> &str {
        &self.info.name
    }
    /// The type used for concurrency limits (the `type`, else the name).
    pub fn type_name(&self) -> &str {
        self.info.skill_type.as_deref().unwrap_or(&self.info.name)
    }
}

impl From<&str> for Skill {
    fn from(name: &str) -> Self {
        Skill::new(name)
    }
}

impl From<String> for Skill {
    fn from(name: String) -> Self {
        Skill::new(name)
    }
}

/// A task handler with its params type erased: raw params in, outcome out.
pub(crate) type BoxedHandler = Arc<dyn Fn(Value, TaskHandle) -> BoxFuture<'static, TaskOutcome> + Send + Sync>;

/// Wrap a typed handler. Params that do not deserialise into `P` give an
/// `INVALID_INPUT_ERROR` failure without running the handler.
pub(crate) fn erase<P, F, Fut, R>(f: F) -> BoxedHandler
where
    P: DeserializeOwned + Send + 'static,
    F: Fn(P, TaskHandle) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoTaskOutcome + 'static,
{
    Arc::new(move |params: Value, handle: TaskHandle| -> BoxFuture<'static, TaskOutcome> {
        match serde_json::from_value::<P>(params) {
            Ok(p) => {
                let fut = f(p, handle);
                Box::pin(async move { fut.await.into_outcome() })
            }
            Err(e) => {
                let outcome =
                    TaskOutcome::failure(error_codes::INVALID_INPUT_ERROR, format!("invalid task params: {e}"));
                Box::pin(async move { outcome })
            }
        }
    })
}

/// A registered skill: catalogue entry + handler.
#[derive(Clone)]
pub(crate) struct SkillEntry {
    pub skill: Skill,
    pub handler: BoxedHandler,
}

/// The skills a worker was built with, fixed from then on: handlers by name, the declaration
/// order, the catalogue sent to orchestrators, costs and the `skills_hash` over all of it.
pub(crate) struct SkillSet {
    by_name: BTreeMap<String, Arc<SkillEntry>>,
    /// Names in declaration order (the order of `supported_skills`).
    pub(crate) order: Vec<String>,
    /// `supported_skills`, in declaration order.
    pub(crate) infos: Vec<SkillInfo>,
    /// `COST_PER_SKILL` with each [`Skill::cost`] added.
    pub(crate) cost_per_skill: BTreeMap<String, f64>,
    /// The `skills_hash` this worker reports.
    pub(crate) hash: String,
}

impl SkillSet {
    /// Checks names and types and that no skill is declared twice.
    pub(crate) fn new(entries: Vec<SkillEntry>, cfg: &WorkerConfig) -> Result<Self, WorkerError> {
        let mut by_name = BTreeMap::new();
        let mut order = Vec::new();
        let mut cost_per_skill = cfg.cost_per_skill.clone();
        for entry in entries {
            let name = entry.skill.name().to_owned();
            protocol::validate_identifier(&name, "skill name").map_err(|e| WorkerError::Config(e.to_string()))?;
            if let Some(skill_type) = &entry.skill.info.skill_type {
                protocol::validate_identifier(skill_type, "skill type")
                    .map_err(|e| WorkerError::Config(e.to_string()))?;
            }
            if let Some(cost) = entry.skill.cost {
                cost_per_skill.insert(name.clone(), cost);
            }
            if by_name.insert(name.clone(), Arc::new(entry)).is_some() {
                return Err(WorkerError::Config(format!("task '{name}' declared twice")));
            }
            order.push(name);
        }
        let infos: Vec<SkillInfo> = order.iter().map(|name| by_name[name].skill.info.clone()).collect();
        let hash = protocol::skills_hash(&infos, &cost_per_skill, &cfg.extra_capabilities);
        Ok(SkillSet { by_name, order, infos, cost_per_skill, hash })
    }

    /// The skill registered under `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<SkillEntry>> {
        self.by_name.get(name)
    }

    /// Every skill with its name, in declaration order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &Arc<SkillEntry>)> + '_ {
        self.order.iter().map(|name| (name, &self.by_name[name]))
    }
}
