//! [`Actions`]: what a handler decides to do next.
//!
//! A handler run takes exactly one action: `transition_to`, `dispatch_task` (once, or several
//! times when every dispatch fans into the same `#[aggregator]` state), `await_human_approval`
//! or `run_blueprint`. A second, different action makes the handler run fail with a clear error
//! (and the job goes through the handler-retry path). `update_context` and `send_event` can be combined with any.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::task_contract::TaskContract;

/// How a worker is chosen among the eligible ones: the live workers offering the skill that
/// pass the filters (reputation, `max_cost`, skill version and type, resources, the params
/// against the skill's `input_schema`) and whose last report was `idle`. When some of them
/// reported the skill hot, only those are chosen among. "Cost" is the worker's
/// `cost_per_skill` for the skill (none: the dearest); "load" its queued plus running tasks.
/// Equally good workers take turns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DispatchStrategy {
    /// The cheapest, then the highest reputation minus load.
    #[default]
    Default,
    /// Each worker in turn (one rotation shared by every instance on a Redis).
    RoundRobin,
    /// The least loaded.
    LeastConnections,
    /// The cheapest, then the least loaded.
    Cheapest,
    /// The lowest cost per reputation, then the least loaded (reputation 0: the dearest).
    BestValue,
    /// The cheapest with fewer tasks than `DISPATCHER_SOFT_LIMIT` (3) waiting on its queue, else
    /// the shortest queue (then the cheapest).
    Overflow,
}

impl DispatchStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::RoundRobin => "round_robin",
            Self::LeastConnections => "least_connections",
            Self::Cheapest => "cheapest",
            Self::BestValue => "best_value",
            Self::Overflow => "overflow",
        }
    }
}

/// One `dispatch_task` as the handler described it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The skill name a worker must offer.
    pub task_type: String,
    #[serde(default)]
    pub params: Value,
    /// worker result status -> next state
    #[serde(default)]
    pub transitions: Vec<(String, String)>,
    /// worker event type -> next state
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_transitions: Vec<(String, String)>,
    #[serde(default)]
    pub priority: f64,
    #[serde(default)]
    pub dispatch_strategy: DispatchStrategy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_requirements: Option<Value>,
    /// Execution timeout in seconds, counted from pick-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// How long the task may wait for a worker to pick it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_timeout_seconds: Option<f64>,
    /// How long, from dispatch, until the result must be in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_timeout_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill_type: Option<String>,
    /// A hint for the worker about the resources to use (e.g. `"gpu"`): written into
    /// `params["resource_hint"]` when the handler's dispatch is applied, so the worker reads it
    /// there (and the skill's `input_schema` sees it), as in Avtomatika.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_hint: Option<String>,
}

impl TaskSpec {
    pub fn new(task_type: impl Into<String>) -> Self {
        TaskSpec {
            task_type: task_type.into(),
            params: Value::Object(Map::new()),
            transitions: Vec::new(),
            event_transitions: Vec::new(),
            priority: 0.0,
            dispatch_strategy: DispatchStrategy::Default,
            max_cost: None,
            resource_requirements: None,
            timeout_seconds: None,
            dispatch_timeout_seconds: None,
            result_timeout_seconds: None,
            skill_version: None,
            skill_type: None,
            resource_hint: None,
        }
    }

    /// The state a result status leads to.
    pub fn target_for(&self, status: &str) -> Option<&str> {
        self.transitions.iter().find(|(s, _)| s == status).map(|(_, t)| t.as_str())
    }

    /// The state a worker event leads to.
    pub fn event_target_for(&self, event: &str) -> Option<&str> {
        self.event_transitions.iter().find(|(s, _)| s == event).map(|(_, t)| t.as_str())
    }
}

/// `await_human_approval` as the handler described it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApprovalSpec {
    pub integration: Option<String>,
    pub message: Option<String>,
    /// decision -> next state
    pub transitions: Vec<(String, String)>,
}

/// `run_blueprint` as the handler described it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubBlueprintSpec {
    pub blueprint: String,
    pub initial_data: Value,
    /// child outcome (`success`, `failure`, `cancelled`) -> next state
    pub transitions: Vec<(String, String)>,
}

/// The one action a handler run took.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Action {
    Transition { target: String, error_message: Option<String> },
    Dispatch(Vec<TaskSpec>),
    Approval(ApprovalSpec),
    RunBlueprint(SubBlueprintSpec),
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Transition { .. } => "transition_to",
            Action::Dispatch(_) => "dispatch_task",
            Action::Approval(_) => "await_human_approval",
            Action::RunBlueprint(_) => "run_blueprint",
        }
    }
}

/// The handler's way to say what happens next (`actions: &mut Actions`).
#[derive(Debug, Default)]
pub struct Actions {
    pub(crate) action: Option<Action>,
    pub(crate) violations: Vec<String>,
    pub(crate) context_updates: Map<String, Value>,
    /// What an end handler returned as [`crate::Output`]: the job's result.
    pub(crate) output: Option<Value>,
    /// The "ghost" events of [`Actions::send_event`], in call order.
    pub(crate) events: Vec<(String, Value)>,
    /// Where builder calls of a rejected second action go, so they cannot touch the first.
    discarded: Option<Action>,
}

/// Most [`Actions::send_event`] calls one handler run may make.
pub const MAX_EVENTS_PER_RUN: usize = 16;

impl Actions {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn reject(&mut self, attempted: &'static str) {
        let first = self.action.as_ref().map(Action::name).unwrap_or("?");
        self.violations.push(format!(
            "a handler run takes exactly one action: `{attempted}` after `{first}` (several `dispatch_task` calls are allowed only when they fan into one #[aggregator] state)"
        ));
    }

    fn set(&mut self, action: Action) -> &mut Action {
        if self.action.is_some() {
            self.reject(action.name());
            self.discarded.insert(action)
        } else {
            self.action.insert(action)
        }
    }

    /// Moves the job to `state` once the handler returns.
    pub fn transition_to(&mut self, state: &str) -> TransitionBuilder<'_> {
        let action = self.set(Action::Transition { target: state.to_owned(), error_message: None });
        TransitionBuilder { action }
    }

    /// Sends a task to a worker offering skill `task_type`. Call it several times for a parallel
    /// fan-out whose `success` transitions all lead to the same `#[aggregator]` state.
    pub fn dispatch_task(&mut self, task_type: &str) -> DispatchBuilder<'_> {
        let spec = TaskSpec::new(task_type);
        let slot: &mut Action = match &mut self.action {
            Some(Action::Dispatch(_)) => self.action.as_mut().unwrap(),
            Some(_) => {
                self.reject("dispatch_task");
                self.discarded.insert(Action::Dispatch(Vec::new()))
            }
            None => self.action.insert(Action::Dispatch(Vec::new())),
        };
        let Action::Dispatch(tasks) = slot else { unreachable!("slot holds a dispatch") };
        tasks.push(spec);
        DispatchBuilder { spec: tasks.last_mut().unwrap(), _kind: std::marker::PhantomData }
    }

    /// Sends the task of contract `C` ([`TaskContract`]) with its typed params: params of
    /// another type are a compile error, and so is a worker implementing `C` with other types
    /// (`#[avto::task(contract = C)]`). The rest is [`Actions::dispatch_task`]'s (transitions,
    /// priority, ...; the params are set here, so the builder has no `.params(..)`). The result
    /// is read with [`Context::task_output`](crate::Context::task_output).
    pub fn dispatch<C: TaskContract>(&mut self, params: C::Params) -> DispatchBuilder<'_, C> {
        let DispatchBuilder { spec, .. } = self.dispatch_task(C::NAME);
        spec.params = to_json(params);
        DispatchBuilder { spec, _kind: std::marker::PhantomData }
    }

    /// Parks the job in `waiting_for_human` until a decision arrives.
    pub fn await_human_approval(&mut self) -> ApprovalBuilder<'_> {
        let action = self.set(Action::Approval(ApprovalSpec::default()));
        let Action::Approval(spec) = action else { unreachable!() };
        ApprovalBuilder { spec }
    }

    /// Runs another blueprint as a child job; this job resumes exactly once when the child ends.
    pub fn run_blueprint(&mut self, blueprint: &str) -> RunBlueprintBuilder<'_> {
        let action = self.set(Action::RunBlueprint(SubBlueprintSpec {
            blueprint: blueprint.to_owned(),
            initial_data: Value::Object(Map::new()),
            transitions: Vec::new(),
        }));
        let Action::RunBlueprint(spec) = action else { unreachable!() };
        RunBlueprintBuilder { spec }
    }

    /// Records `key = value` in the job's `state_history` (visible to later handlers and in the result).
    /// May be combined with any action.
    pub fn update_context(&mut self, key: &str, value: impl Serialize) -> &mut Self {
        let value = serde_json::to_value(value).unwrap_or_else(|e| Value::String(format!("<unserialisable: {e}>")));
        self.context_updates.insert(key.to_owned(), value);
        self
    }

    /// Emits a "ghost" event about this job, as if a worker named `ghost` had sent it: once the
    /// run's actions are applied it is a `worker_event:{event_type}` row of the job's history
    /// (`worker_id` `ghost`) and, when the job has a `webhook_url`, a `worker_event:{event_type}`
    /// webhook with `payload` as its `result`. May be combined with any action. An `event_type`
    /// that is not an identifier (`[A-Za-z0-9_-]`, 1 to 128 bytes) or more than
    /// [`MAX_EVENTS_PER_RUN`] calls fail the run. A run that fails sends none of its events.
    ///
    /// When the blueprint declares its events (`#[avto::blueprint(.., events(warmed = Warmed))]`)
    /// a literal type it does not declare is a compile error, and a type chosen at run time that
    /// it does not declare, or a payload breaking the declared type's JSON Schema, fails the run
    /// (so does any undeclared type under `STRICT_EVENT_VALIDATION`). A `progress` event also
    /// sets the job's `progress` and `progress_message` from the payload's fields of those names.
    pub fn send_event(&mut self, event_type: &str, payload: impl Serialize) -> &mut Self {
        if !crate::protocol::is_valid_identifier(event_type) {
            self.violations.push(format!("send_event: `{event_type}` is not an event type (an identifier)"));
        } else if self.events.len() >= MAX_EVENTS_PER_RUN {
            self.violations.push(format!("send_event: more than {MAX_EVENTS_PER_RUN} events in one handler run"));
        } else {
            let payload =
                serde_json::to_value(payload).unwrap_or_else(|e| Value::String(format!("<unserialisable: {e}>")));
            self.events.push((event_type.to_owned(), payload));
        }
        self
    }

    /// The action taken so far (for tests of handler logic).
    pub fn action(&self) -> Option<&Action> {
        self.action.as_ref()
    }
}

/// A plain loop, not `map(..).collect()`: this is instantiated in the user's crate for every
/// array length a blueprint passes, and the adapter chain is about twenty functions each time.
fn to_pairs<'s>(pairs: impl IntoIterator<Item = (&'s str, &'s str)>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (a, b) in pairs {
        out.push((a.to_owned(), b.to_owned()));
    }
    out
}

fn to_json(value: impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| Value::String(format!("<unserialisable: {e}>")))
}

/// Returned by [`Actions::transition_to`].
#[derive(Debug)]
pub struct TransitionBuilder<'a> {
    action: &'a mut Action,
}

impl TransitionBuilder<'_> {
    /// Records an error message on the job (shown in its status), e.g. when routing to a failure state.
    pub fn error_message(self, message: impl Into<String>) -> Self {
        if let Action::Transition { error_message, .. } = self.action {
            *error_message = Some(message.into());
        }
        self
    }
}

/// Returned by [`Actions::dispatch_task`] (and, typed by its contract, by
/// [`Actions::dispatch`]); every method sets one field of the task.
#[derive(Debug)]
pub struct DispatchBuilder<'a, K = Untyped> {
    spec: &'a mut TaskSpec,
    _kind: std::marker::PhantomData<K>,
}

/// A dispatch by skill name ([`Actions::dispatch_task`]): its params are set with
/// [`DispatchBuilder::params`].
#[derive(Debug)]
pub struct Untyped;

impl DispatchBuilder<'_, Untyped> {
    /// The task's parameters (any serialisable value; objects are what workers expect).
    pub fn params(self, params: impl Serialize) -> Self {
        self.spec.params = to_json(params);
        self
    }
}

impl<K> DispatchBuilder<'_, K> {
    /// Result status -> next state, e.g. `[("success", "step_B"), ("failure", "failed")]`.
    /// Targets must be string literals: the macro checks them against the blueprint's states.
    pub fn transitions<'s>(self, pairs: impl IntoIterator<Item = (&'s str, &'s str)>) -> Self {
        self.spec.transitions = to_pairs(pairs);
        self
    }
    /// Worker event type -> next state (an event short-circuits the waiting task).
    pub fn event_transitions<'s>(self, pairs: impl IntoIterator<Item = (&'s str, &'s str)>) -> Self {
        self.spec.event_transitions = to_pairs(pairs);
        self
    }
    /// Higher runs first; FIFO among equal priorities.
    pub fn priority(self, priority: f64) -> Self {
        self.spec.priority = priority;
        self
    }
    pub fn dispatch_strategy(self, strategy: DispatchStrategy) -> Self {
        self.spec.dispatch_strategy = strategy;
        self
    }
    /// Upper bound on the worker's `cost_per_skill` for this task type.
    pub fn max_cost(self, max_cost: f64) -> Self {
        self.spec.max_cost = Some(max_cost);
        self
    }
    /// e.g. `json!({"gpu": {"model": "NVIDIA T4", "vram_gb": 16}, "installed_models": ["sd-1.5"]})`.
    pub fn resource_requirements(self, requirements: impl Serialize) -> Self {
        self.spec.resource_requirements = Some(to_json(requirements));
        self
    }
    /// Execution timeout, counted from pick-up.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.spec.timeout_seconds = Some(timeout.as_secs_f64());
        self
    }
    /// How long the task may wait for a worker.
    pub fn dispatch_timeout(self, timeout: Duration) -> Self {
        self.spec.dispatch_timeout_seconds = Some(timeout.as_secs_f64());
        self
    }
    /// How long, from dispatch, until the result must be in.
    pub fn result_timeout(self, timeout: Duration) -> Self {
        self.spec.result_timeout_seconds = Some(timeout.as_secs_f64());
        self
    }
    /// Only workers whose skill declares exactly this `version` take the task (it also goes to
    /// the worker as the payload's `skill_version`).
    pub fn skill_version(self, version: &str) -> Self {
        self.spec.skill_version = Some(version.to_owned());
        self
    }
    /// Only workers whose skill declares exactly this `type` take the task (it also goes to
    /// the worker as the payload's `skill_type`).
    pub fn skill_type(self, skill_type: &str) -> Self {
        self.spec.skill_type = Some(skill_type.to_owned());
        self
    }
    /// A hint for the worker (e.g. `"gpu"`), sent as `params["resource_hint"]` (replacing a
    /// `resource_hint` of the params; an empty hint sends nothing). The params must then be an
    /// object (or none), else the handler run fails.
    pub fn resource_hint(self, hint: &str) -> Self {
        self.spec.resource_hint = Some(hint.to_owned()).filter(|h| !h.is_empty());
        self
    }
}

/// Returned by [`Actions::await_human_approval`].
#[derive(Debug)]
pub struct ApprovalBuilder<'a> {
    spec: &'a mut ApprovalSpec,
}

impl ApprovalBuilder<'_> {
    /// Where the request is meant to go (`telegram`, `slack`, ...): recorded and sent in the webhook.
    pub fn integration(self, integration: &str) -> Self {
        self.spec.integration = Some(integration.to_owned());
        self
    }
    pub fn message(self, message: impl Into<String>) -> Self {
        self.spec.message = Some(message.into());
        self
    }
    /// Decision -> next state, e.g. `[("approved", "publish"), ("rejected", "rejected")]`.
    pub fn transitions<'s>(self, pairs: impl IntoIterator<Item = (&'s str, &'s str)>) -> Self {
        self.spec.transitions = to_pairs(pairs);
        self
    }
}

/// Returned by [`Actions::run_blueprint`].
#[derive(Debug)]
pub struct RunBlueprintBuilder<'a> {
    spec: &'a mut SubBlueprintSpec,
}

impl RunBlueprintBuilder<'_> {
    pub fn initial_data(self, data: impl Serialize) -> Self {
        self.spec.initial_data = to_json(data);
        self
    }
    /// Child outcome (`success`, `failure`, `cancelled`) -> next state.
    pub fn transitions<'s>(self, pairs: impl IntoIterator<Item = (&'s str, &'s str)>) -> Self {
        self.spec.transitions = to_pairs(pairs);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_event_is_bounded() {
        let mut a = Actions::new();
        a.send_event("warmed", serde_json::json!({"n": 1})).transition_to("next");
        assert_eq!(a.events, [("warmed".to_owned(), serde_json::json!({"n": 1}))]);
        assert!(a.violations.is_empty(), "combines with an action: {:?}", a.violations);
        a.send_event("not an identifier", ());
        a.send_event(&"t".repeat(129), ());
        assert_eq!(a.violations.len(), 2, "{:?}", a.violations);
        let mut a = Actions::new();
        for _ in 0..MAX_EVENTS_PER_RUN + 1 {
            a.send_event("e", ());
        }
        assert_eq!((a.events.len(), a.violations.len()), (MAX_EVENTS_PER_RUN, 1));
    }
}
