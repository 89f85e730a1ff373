//! Blueprint contracts: the JSON Schemas a blueprint publishes for its initial data
//! ([`crate::Blueprint::input_schema`]) and for its result per end state
//! ([`crate::Blueprint::output_schemas`]), compiled once when the engine's environment is built.
//! The input is checked when a job is created, before it exists (and before the client's quota is
//! charged); the output when a job reaches `finished`; the payload of a handler's ghost event
//! ([`crate::Actions::send_event`]) against the blueprint's declared events when it is sent.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::Blueprint;

/// Violations reported at most per refused request (the count says how many there were).
pub(crate) const MAX_VIOLATIONS: usize = 100;

/// One way the initial data breaks its contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON pointer (RFC 6901) of the offending value in `initial_data` (`""`: the whole object).
    pub pointer: String,
    /// What is wrong with it.
    pub message: String,
}

/// The compiled contracts of every blueprint that has one.
#[derive(Default)]
pub(crate) struct Contracts {
    inputs: HashMap<&'static str, jsonschema::Validator>,
    /// Blueprint -> end state -> the schema of that end handler's output.
    outputs: HashMap<&'static str, HashMap<&'static str, jsonschema::Validator>>,
    /// Blueprint -> event type -> the schema of its payload.
    events: HashMap<&'static str, HashMap<&'static str, jsonschema::Validator>>,
    /// Blueprint -> the event types it declares (blueprints that declare none are absent).
    declared: HashMap<&'static str, &'static [&'static str]>,
}

impl std::fmt::Debug for Contracts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contracts")
            .field("inputs", &self.inputs.keys().collect::<Vec<_>>())
            .field("outputs", &self.outputs.keys().collect::<Vec<_>>())
            .field("events", &self.declared)
            .finish()
    }
}

/// A schema compiled, or `None` with the reason logged (a `JsonSchema` impl written by hand
/// may produce one that does not compile: that contract is then not checked).
fn compile(bp: Blueprint, what: &str, schema: &Value) -> Option<jsonschema::Validator> {
    jsonschema::validator_for(schema)
        .map_err(
            |e| tracing::error!(blueprint = bp.name(), error = %e, "{what} contract does not compile; not checked"),
        )
        .ok()
}

impl Contracts {
    /// Compiles the contracts of `blueprints`.
    pub(crate) fn compile(blueprints: impl IntoIterator<Item = Blueprint>) -> Contracts {
        let mut c = Contracts::default();
        for bp in blueprints {
            if let Some(v) = bp.input_schema().and_then(|s| compile(bp, "input", &s)) {
                c.inputs.insert(bp.name(), v);
            }
            for (state, schema) in bp.output_schemas() {
                if let Some(v) = compile(bp, "output", &schema) {
                    c.outputs.entry(bp.name()).or_default().insert(state, v);
                }
            }
            if let Some(names) = bp.declared_events() {
                c.declared.insert(bp.name(), names);
            }
            for (event, schema) in (bp.spec().events_schemas)() {
                if let Some(v) = compile(bp, "event", &schema) {
                    c.events.entry(bp.name()).or_default().insert(event, v);
                }
            }
        }
        c
    }

    /// Every violation (at most [`MAX_VIOLATIONS`]) of `blueprint`'s input contract by `data`,
    /// with how many there were in all; empty when it holds or there is no contract.
    pub(crate) fn check_input(&self, blueprint: &str, data: &Value) -> (Vec<Violation>, usize) {
        self.inputs.get(blueprint).map_or((Vec::new(), 0), |v| violations(v, data, MAX_VIOLATIONS))
    }

    /// The same for the output of `blueprint`'s end state `state`.
    pub(crate) fn check_output(&self, blueprint: &str, state: &str, data: &Value) -> (Vec<Violation>, usize) {
        self.outputs
            .get(blueprint)
            .and_then(|m| m.get(state))
            .map_or((Vec::new(), 0), |v| violations(v, data, MAX_VIOLATIONS))
    }
}

impl Contracts {
    /// Whether `blueprint` may send a ghost event of `event_type` with `payload`: the type must be
    /// declared when the blueprint declares its events (or when `strict`, the orchestrator's
    /// `STRICT_EVENT_VALIDATION`), and the payload must match the type's schema. `progress` (the
    /// protocol's own type) is always allowed; its payload is checked when it is declared.
    pub(crate) fn check_event(
        &self,
        blueprint: &str,
        event_type: &str,
        payload: &Value,
        strict: bool,
    ) -> Result<(), String> {
        let declared = self.declared.get(blueprint);
        let known = declared.is_some_and(|names| names.contains(&event_type));
        if !known && event_type != crate::protocol::EVENT_TYPE_PROGRESS && (declared.is_some() || strict) {
            let names = declared.map_or_else(|| "none".to_owned(), |n| n.join(", "));
            let why = if declared.is_some() { "" } else { " (STRICT_EVENT_VALIDATION is on)" };
            return Err(format!(
                "send_event: blueprint `{blueprint}` does not declare event type `{event_type}`{why}; declared: {names}"
            ));
        }
        let Some(v) = self.events.get(blueprint).and_then(|m| m.get(event_type)) else { return Ok(()) };
        let (found, total) = violations(v, payload, MAX_VIOLATIONS);
        if total == 0 {
            return Ok(());
        }
        Err(format!(
            "Blueprint contract violation: the payload of event `{event_type}` breaks its events_schema: {}",
            describe(&found, total)
        ))
    }
}

/// The first `keep` ways `data` breaks the schema of `v`, and how many there are in all.
pub(crate) fn violations(v: &jsonschema::Validator, data: &Value, keep: usize) -> (Vec<Violation>, usize) {
    let mut out = Vec::new();
    let mut total = 0;
    for e in v.iter_errors(data) {
        total += 1;
        if out.len() < keep {
            out.push(Violation { pointer: e.instance_path().to_string(), message: e.to_string() });
        }
    }
    (out, total)
}

/// `violations` as one line: "`/a`: message; `/b`: message (and N more)".
pub(crate) fn describe(violations: &[Violation], total: usize) -> String {
    let mut text = violations
        .iter()
        .take(5)
        .map(|v| if v.pointer.is_empty() { v.message.clone() } else { format!("`{}`: {}", v.pointer, v.message) })
        .collect::<Vec<_>>()
        .join("; ");
    if total > 5 {
        text.push_str(&format!(" (and {} more)", total - 5));
    }
    text
}
