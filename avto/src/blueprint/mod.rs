//! The runtime side of the compile-time transition table.
//!
//! `#[avto::blueprint]` expands every blueprint module into one `static` [`BlueprintSpec`];
//! [`Blueprint`] is a cheap handle to it. The engine walks the table at run time and still
//! rejects any target outside it (a backstop for code the macro could not see).

use crate::handler::HandlerFn;
use crate::job::JobStatus;
use crate::storage::DataStoreSpec;
use crate::Context;

/// The whole compiled table of one blueprint. Built by the macro; never by hand.
#[derive(Debug)]
pub struct BlueprintSpec {
    pub name: &'static str,
    pub api_version: Option<&'static str>,
    pub api_endpoint: Option<&'static str>,
    pub start: &'static str,
    /// Every state, in source order.
    pub states: &'static [StateSpec],
    /// Every handler and aggregator, in source order (conditional handlers are tried in this order).
    pub handlers: &'static [HandlerSpec],
    /// Every edge the macro found, in source order.
    pub edges: &'static [EdgeSpec],
    pub data_stores: &'static [DataStoreSpec],
    /// The Graphviz DOT of the table (identical to the module's `DOT` constant).
    pub dot: &'static str,
    /// The input contract: the JSON Schema of the `T` of every `InitialData<T>` a handler takes,
    /// where `T: schemars::JsonSchema` (`None`: any JSON object is accepted).
    pub input_schema: fn() -> Option<serde_json::Value>,
    /// The output contract: for each end state whose handler returns `Output<T>` with
    /// `T: schemars::JsonSchema`, (state, T's JSON Schema).
    pub output_schemas: fn() -> Vec<(&'static str, serde_json::Value)>,
    /// `events(name = Type, ...)`: the event types its handlers may send
    /// ([`crate::Actions::send_event`]); `None`: not declared, any type may be sent.
    pub events: Option<&'static [&'static str]>,
    /// The declared events' payload schemas: (event type, the JSON Schema of its type, for each
    /// type that is `schemars::JsonSchema`).
    pub events_schemas: fn() -> Vec<(&'static str, serde_json::Value)>,
}

/// One state of the table.
#[derive(Debug)]
pub struct StateSpec {
    pub name: &'static str,
    pub kind: StateKind,
}

/// What kind of state it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateKind {
    Normal,
    /// An end state and the job status it means.
    End(JobStatus),
    /// A fan-in state handled by an `#[aggregator]`.
    Aggregator,
}

/// One handler function.
pub struct HandlerSpec {
    pub state: &'static str,
    /// The Rust function name.
    pub name: &'static str,
    /// The `#[when(...)]` guard, if any.
    pub condition: Option<Condition>,
    pub call: HandlerFn,
    /// The `T` of each `State<T>` argument (checked against the application state at build).
    pub state_types: fn() -> Vec<crate::state::StateType>,
}

impl std::fmt::Debug for HandlerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerSpec")
            .field("state", &self.state)
            .field("name", &self.name)
            .field("condition", &self.condition.as_ref().map(|c| c.source))
            .finish()
    }
}

/// A `#[when(...)]` guard: its source text (for DOT and errors) and its compiled form.
pub struct Condition {
    pub source: &'static str,
    pub eval: fn(&Context) -> bool,
}

/// How an edge is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EdgeKind {
    /// `transition_to`
    Transition,
    /// a `dispatch_task` result status
    Dispatch,
    /// a `dispatch_task` worker event
    Event,
    /// an `await_human_approval` decision
    Approval,
    /// a `run_blueprint` child outcome
    SubBlueprint,
}

/// One edge of the graph.
#[derive(Debug)]
pub struct EdgeSpec {
    pub from: &'static str,
    pub to: &'static str,
    /// Outcome label (`success`, `approved`, a custom status), empty for plain transitions.
    pub label: &'static str,
    pub kind: EdgeKind,
    /// The handler function the edge comes from.
    pub handler: &'static str,
}

/// A compiled blueprint: a handle to its static table.
#[derive(Debug, Clone, Copy)]
pub struct Blueprint {
    spec: &'static BlueprintSpec,
}

impl PartialEq for Blueprint {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.spec, other.spec)
    }
}

impl Blueprint {
    #[doc(hidden)]
    pub const fn from_spec(spec: &'static BlueprintSpec) -> Self {
        Blueprint { spec }
    }

    pub fn spec(&self) -> &'static BlueprintSpec {
        self.spec
    }
    pub fn name(&self) -> &'static str {
        self.spec.name
    }
    pub fn api_version(&self) -> Option<&'static str> {
        self.spec.api_version
    }
    pub fn api_endpoint(&self) -> Option<&'static str> {
        self.spec.api_endpoint
    }
    pub fn start_state(&self) -> &'static str {
        self.spec.start
    }
    pub fn dot(&self) -> &'static str {
        self.spec.dot
    }
    /// The input contract (JSON Schema, draft 2020-12) of the blueprint's initial data: made
    /// from every `InitialData<T>` its handlers take where `T: schemars::JsonSchema`. `None`:
    /// any JSON object is accepted. The orchestrator refuses a job whose initial data breaks it
    /// (400, every violation with its JSON pointer) before the job exists.
    pub fn input_schema(&self) -> Option<serde_json::Value> {
        (self.spec.input_schema)()
    }
    /// The output contract per end state: the JSON Schema of the `T` of each end handler that
    /// returns `Output<T>` where `T: schemars::JsonSchema`. A job that reaches `finished` with a
    /// result breaking its end state's schema ends `failed` instead.
    pub fn output_schemas(&self) -> Vec<(&'static str, serde_json::Value)> {
        (self.spec.output_schemas)()
    }
    /// The event types its handlers may send, when the blueprint declares them
    /// (`#[avto::blueprint(..., events(name = PayloadType, ...))]`). A ghost event of another type
    /// fails the handler that sent it; so does one whose type is undeclared when
    /// `STRICT_EVENT_VALIDATION` is on and the blueprint declares none.
    pub fn declared_events(&self) -> Option<&'static [&'static str]> {
        self.spec.events
    }
    /// The events contract, as published (Avtomatika's `events_schema`): event type -> the JSON
    /// Schema of its payload, for each declared type whose payload type has one.
    pub fn events_schema(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        let schemas = (self.spec.events_schemas)();
        (!schemas.is_empty()).then(|| schemas.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
    /// The output contract as one schema, as published: none, the only one, or `anyOf` all of
    /// them (the result is one of the end handlers' outputs).
    pub fn output_schema(&self) -> Option<serde_json::Value> {
        let mut schemas: Vec<serde_json::Value> = Vec::new();
        for (_, s) in self.output_schemas() {
            if !schemas.contains(&s) {
                schemas.push(s);
            }
        }
        match schemas.len() {
            0 => None,
            1 => schemas.pop(),
            _ => Some(serde_json::json!({ "anyOf": schemas })),
        }
    }
    pub fn states(&self) -> &'static [StateSpec] {
        self.spec.states
    }
    pub fn edges(&self) -> &'static [EdgeSpec] {
        self.spec.edges
    }
    pub fn state(&self, name: &str) -> Option<&'static StateSpec> {
        self.spec.states.iter().find(|s| s.name == name)
    }
    /// The job status an end state means, `None` for other states.
    pub fn end_status(&self, state: &str) -> Option<JobStatus> {
        match self.state(state)?.kind {
            StateKind::End(status) => Some(status),
            _ => None,
        }
    }
    pub fn is_aggregator(&self, state: &str) -> bool {
        matches!(self.state(state).map(|s| s.kind), Some(StateKind::Aggregator))
    }
    /// Handlers of one state in the order they are tried.
    pub fn handlers_for<'a>(&'a self, state: &'a str) -> impl Iterator<Item = &'static HandlerSpec> + 'a {
        self.spec.handlers.iter().filter(move |h| h.state == state)
    }
    /// Blueprints registered with `inventory` by `#[avto::blueprint]` in this binary, sorted by name.
    pub fn registered() -> Vec<Blueprint> {
        let mut all: Vec<Blueprint> =
            inventory::iter::<crate::__private::Registration>.into_iter().map(|r| Blueprint { spec: r.0 }).collect();
        all.sort_by_key(|b| b.name());
        all
    }
    /// The route of the create-job endpoint under the client prefix (`v1/jobs/echo`), if any.
    pub fn create_path(&self) -> Option<String> {
        let endpoint = self.api_endpoint()?.trim_matches('/');
        Some(match self.api_version() {
            Some(v) => format!("{v}/{endpoint}"),
            None => endpoint.to_owned(),
        })
    }
}
