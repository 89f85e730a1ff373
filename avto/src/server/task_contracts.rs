//! Task contracts: the JSON Schemas a worker registers with each skill (`input_schema`,
//! `output_schema` and `events_schema` of its `supported_skills` entries), compiled once and
//! checked by the orchestrator for any worker, whatever its SDK:
//!
//! * at registration (and a heartbeat that resends its skills): every schema must be a JSON
//!   object or boolean of at most [`MAX_SCHEMA_BYTES`] that compiles (no remote `$ref`: nothing
//!   is fetched; at most [`MAX_PATTERNS`] regular expressions, each compiled by a linear-time
//!   engine within 64 KiB), else the message is refused with a 400 naming the skill and the field.
//!   `format` is not asserted (as Avtomatika's `jsonschema.validate`, which has no format checker);
//! * before dispatch: the params against the `input_schema` of each candidate worker's skill (a
//!   worker whose schema they break is not chosen; when they break every candidate's, the task
//!   fails with `INVALID_INPUT_ERROR` instead of waiting);
//! * on a success result: its `data` against the sender's `output_schema` for the task's skill
//!   (a violation turns the result into a `CONTRACT_VIOLATION_ERROR` failure);
//! * on an event: its payload against the sender's `events_schema[event_type]` for the task's
//!   skill (undeclared event types pass).
//!
//! Skills with a `schema_dialect` other than `json-schema` are neither compiled nor checked.
//!
//! Bounds: compiled validators are shared by every worker that registers the same schema (same
//! text) and at most [`MAX_VALIDATORS`] are kept (the oldest compiled is dropped first; one in
//! use stays alive with its workers); the compiled contracts of at most [`MAX_WORKERS`] workers
//! are kept, each at most [`FRESH`] old: an instance reads a worker's skills again after that,
//! so a re-registration on another instance takes effect within it (at once on this one).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::protocol::wire::DEFAULT_SCHEMA_DIALECT;

/// Largest schema (its JSON text) a worker may register for one field or one event type.
pub(crate) const MAX_SCHEMA_BYTES: usize = 65_536;
/// Event types one skill may declare in `events_schema`.
pub(crate) const MAX_EVENT_SCHEMAS: usize = 64;
/// Compiled validators kept (shared by the workers registering the same schema).
pub(crate) const MAX_VALIDATORS: usize = 1_000;
/// Workers whose compiled contracts are kept.
pub(crate) const MAX_WORKERS: usize = 10_000;
/// How long an instance trusts the compiled contracts of a worker before reading them again.
pub(crate) const FRESH: Duration = Duration::from_secs(2);
/// Regular expressions (`pattern`, `patternProperties` keys) one schema may hold.
pub(crate) const MAX_PATTERNS: usize = 16;
/// Violations quoted in one message.
const MAX_QUOTED: usize = 10;
/// Bytes one compiled regular expression (and its lazy DFA cache) may take.
const MAX_REGEX_BYTES: usize = 64 * 1024;

/// The regular expressions of a schema (its depth is bounded by the body's, `MAX_JSON_DEPTH`).
fn patterns(schema: &Value) -> usize {
    match schema {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match (k.as_str(), v) {
                ("pattern", Value::String(_)) => 1,
                ("patternProperties", Value::Object(p)) => p.len() + p.values().map(patterns).sum::<usize>(),
                _ => patterns(v),
            })
            .sum(),
        Value::Array(items) => items.iter().map(patterns).sum(),
        _ => 0,
    }
}

type Validator = jsonschema::Validator;

/// Which schema of a skill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schema<'a> {
    Input,
    Output,
    Event(&'a str),
}

/// The compiled schemas of one worker's skills.
#[derive(Default)]
pub(crate) struct WorkerContracts {
    skills: HashMap<String, SkillContract>,
}

#[derive(Default)]
struct SkillContract {
    input: Option<Arc<Validator>>,
    output: Option<Arc<Validator>>,
    events: HashMap<String, Arc<Validator>>,
}

impl WorkerContracts {
    /// Whether `value` keeps `skill`'s `which` schema (true when there is none): `Err` quotes
    /// the violations (at most 10, each with its JSON pointer) and says how many there were.
    pub(crate) fn check(&self, skill: &str, which: Schema<'_>, value: &Value) -> Result<(), String> {
        match self.validator(skill, which) {
            Some(validator) => check(validator, value),
            None => Ok(()),
        }
    }

    /// Whether `skill` declares `event` in its `events_schema` (what `STRICT_EVENT_VALIDATION` asks).
    pub(crate) fn declares_event(&self, skill: &str, event: &str) -> bool {
        self.skills.get(skill).is_some_and(|c| c.events.contains_key(event))
    }

    /// The compiled `which` schema of `skill`, if it declares one (shared by every worker that
    /// registered the same schema text, so a caller checking one value against many workers can
    /// check it once per validator).
    pub(crate) fn validator(&self, skill: &str, which: Schema<'_>) -> Option<&Arc<Validator>> {
        let contract = self.skills.get(skill)?;
        match which {
            Schema::Input => contract.input.as_ref(),
            Schema::Output => contract.output.as_ref(),
            Schema::Event(event) => contract.events.get(event),
        }
    }
}

/// Whether `value` keeps the schema of `validator` (see [`WorkerContracts::check`]).
pub(crate) fn check(validator: &Validator, value: &Value) -> Result<(), String> {
    if validator.is_valid(value) {
        return Ok(());
    }
    let (found, total) = crate::contracts::violations(validator, value, MAX_QUOTED);
    let quoted: Vec<String> = found
        .iter()
        .map(|v| format!("`{}`: {}", if v.pointer.is_empty() { "/" } else { &v.pointer }, v.message))
        .collect();
    Err(format!("{} ({total} violation(s))", quoted.join("; ")))
}

/// The compiled task contracts of this instance (see the module docs).
pub(crate) struct TaskContracts {
    validators: Mutex<IndexMap<[u8; 32], Arc<Validator>>>,
    workers: Mutex<IndexMap<String, (Instant, Arc<WorkerContracts>)>>,
}

impl std::fmt::Debug for TaskContracts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContracts")
            .field("validators", &self.validators.lock().len())
            .field("workers", &self.workers.lock().len())
            .finish()
    }
}

/// Whether a skill's schemas are JSON Schema (the default dialect).
fn json_schema_dialect(skill: &Map<String, Value>) -> bool {
    skill.get("schema_dialect").and_then(Value::as_str).is_none_or(|d| d == DEFAULT_SCHEMA_DIALECT)
}

/// The schemas a skill declares, with the name of each field (`input_schema`,
/// `events_schema.<type>`, ...). `Err` when `events_schema` is not an object or too long.
fn declared(skill: &Map<String, Value>) -> Result<Vec<(String, Schema<'_>, &Value)>, String> {
    let mut out = Vec::new();
    for (field, which) in [("input_schema", Schema::Input), ("output_schema", Schema::Output)] {
        if let Some(schema) = skill.get(field).filter(|v| !v.is_null()) {
            out.push((field.to_owned(), which, schema));
        }
    }
    match skill.get("events_schema") {
        None | Some(Value::Null) => {}
        Some(Value::Object(events)) if events.len() <= MAX_EVENT_SCHEMAS => {
            for (event, schema) in events {
                out.push((format!("events_schema.{event}"), Schema::Event(event), schema));
            }
        }
        Some(Value::Object(_)) => return Err(format!("more than {MAX_EVENT_SCHEMAS} event types in `events_schema`")),
        Some(_) => return Err("`events_schema` must be an object of event type -> schema".into()),
    }
    Ok(out)
}

impl TaskContracts {
    pub(crate) fn new() -> Self {
        TaskContracts { validators: Mutex::default(), workers: Mutex::default() }
    }

    /// The validator of `schema`, compiled once per schema text.
    fn compile(&self, schema: &Value) -> Result<Arc<Validator>, String> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err("a schema must be a JSON object or a boolean".into());
        }
        let text = serde_json::to_vec(schema).map_err(|e| e.to_string())?;
        if text.len() > MAX_SCHEMA_BYTES {
            return Err(format!("the schema is {} bytes, more than {MAX_SCHEMA_BYTES}", text.len()));
        }
        let digest: [u8; 32] = Sha256::digest(&text).into();
        if let Some(v) = self.validators.lock().get(&digest) {
            return Ok(v.clone());
        }
        if patterns(schema) > MAX_PATTERNS {
            return Err(format!("the schema has more than {MAX_PATTERNS} regular expressions"));
        }
        let regex = jsonschema::PatternOptions::regex().size_limit(MAX_REGEX_BYTES).dfa_size_limit(MAX_REGEX_BYTES);
        let validator = jsonschema::options()
            .with_pattern_options(regex)
            .should_validate_formats(false)
            .build(schema)
            .map_err(|e| format!("the schema does not compile: {e}"))?;
        let validator = Arc::new(validator);
        let mut cache = self.validators.lock();
        if cache.len() >= MAX_VALIDATORS {
            cache.shift_remove_index(0);
        }
        Ok(cache.entry(digest).or_insert(validator).clone())
    }

    /// Checks the schemas of a registration's (or heartbeat's) `supported_skills`: each must
    /// compile within the bounds. `Err` names the skill and the field.
    pub(crate) fn admit(&self, skills: Option<&Value>) -> Result<(), String> {
        let Some(Value::Array(skills)) = skills else { return Ok(()) };
        for skill in skills.iter().filter_map(Value::as_object).filter(|s| json_schema_dialect(s)) {
            let name = skill.get("name").and_then(Value::as_str).unwrap_or("?");
            let refuse = |what: String| format!("skill `{name}`: {what}");
            for (field, _, schema) in declared(skill).map_err(refuse)? {
                self.compile(schema).map_err(|e| refuse(format!("`{field}`: {e}")))?;
            }
        }
        Ok(())
    }

    /// Compiles the contracts of a worker record (its `supported_skills`). A schema that does not
    /// compile (a record written before these checks) is left out with a warning.
    fn build(&self, worker_id: &str, record: &Map<String, Value>) -> WorkerContracts {
        let mut out = WorkerContracts::default();
        let Some(Value::Array(skills)) = record.get("supported_skills") else { return out };
        for skill in skills.iter().filter_map(Value::as_object).filter(|s| json_schema_dialect(s)) {
            let Some(name) = skill.get("name").and_then(Value::as_str) else { continue };
            let Ok(schemas) = declared(skill) else { continue };
            let mut contract = SkillContract::default();
            for (field, which, schema) in schemas {
                match self.compile(schema) {
                    Ok(v) => match which {
                        Schema::Input => contract.input = Some(v),
                        Schema::Output => contract.output = Some(v),
                        Schema::Event(event) => {
                            contract.events.insert(event.to_owned(), v);
                        }
                    },
                    Err(e) => tracing::warn!(worker_id, skill = name, field, error = %e, "schema not checked"),
                }
            }
            out.skills.insert(name.to_owned(), contract);
        }
        out
    }

    /// The compiled contracts of `worker_id`, if compiled less than [`FRESH`] ago.
    pub(crate) fn cached(&self, worker_id: &str) -> Option<Arc<WorkerContracts>> {
        let workers = self.workers.lock();
        let (at, contracts) = workers.get(worker_id)?;
        (at.elapsed() < FRESH).then(|| contracts.clone())
    }

    /// The compiled contracts of a worker from its record (cached for [`FRESH`]).
    pub(crate) fn of(&self, worker_id: &str, record: &Map<String, Value>) -> Arc<WorkerContracts> {
        if let Some(c) = self.cached(worker_id) {
            return c;
        }
        let built = Arc::new(self.build(worker_id, record));
        let mut workers = self.workers.lock();
        if workers.len() >= MAX_WORKERS && !workers.contains_key(worker_id) {
            // The worker first seen longest ago (a refresh keeps a worker's place).
            workers.shift_remove_index(0);
        }
        workers.insert(worker_id.to_owned(), (Instant::now(), built.clone()));
        built
    }

    /// Drops what is known of `worker_id` (it registered again, or sent new skills).
    pub(crate) fn forget(&self, worker_id: &str) {
        self.workers.lock().swap_remove(worker_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(skills: Value) -> Map<String, Value> {
        json!({"worker_id": "w", "supported_skills": skills}).as_object().unwrap().clone()
    }

    #[test]
    fn schemas_are_checked_per_skill_and_kind() {
        let c = TaskContracts::new();
        let r = record(json!([{
            "name": "resize",
            "input_schema": {"type": "object", "required": ["url"]},
            "output_schema": {"type": "object", "properties": {"width": {"type": "integer", "minimum": 1}}, "required": ["width"]},
            "events_schema": {"stage": {"type": "object", "required": ["n"]}}
        }, {"name": "free"}]));
        let w = c.of("w", &r);
        assert!(w.check("resize", Schema::Input, &json!({"url": "u"})).is_ok());
        let err = w.check("resize", Schema::Input, &json!({})).unwrap_err();
        assert!(err.contains("url") && err.contains("1 violation"), "{err}");
        let err = w.check("resize", Schema::Output, &json!({"width": 0})).unwrap_err();
        assert!(err.contains("`/width`"), "{err}");
        assert!(w.check("resize", Schema::Event("stage"), &json!({"n": 1})).is_ok());
        assert!(w.check("resize", Schema::Event("stage"), &json!({})).is_err());
        assert!(w.check("resize", Schema::Event("other"), &json!(1)).is_ok(), "undeclared events pass");
        assert!(w.check("free", Schema::Output, &json!({"x": 1})).is_ok());
        assert!(w.check("unknown", Schema::Output, &json!(1)).is_ok());
    }

    #[test]
    fn bad_schemas_are_refused_at_admission() {
        let c = TaskContracts::new();
        let admit = |skills: Value| c.admit(Some(&skills));
        assert!(admit(json!([{"name": "a", "input_schema": {"type": "object"}, "output_schema": true}])).is_ok());
        let err = admit(json!([{"name": "a", "output_schema": {"type": "no-such-type"}}])).unwrap_err();
        assert!(err.contains("skill `a`") && err.contains("`output_schema`"), "{err}");
        let err = admit(json!([{"name": "a", "input_schema": "object"}])).unwrap_err();
        assert!(err.contains("a JSON object or a boolean"), "{err}");
        // Nothing is fetched: a remote reference does not compile.
        let err = admit(json!([{"name": "a", "input_schema": {"$ref": "http://127.0.0.1:9/x.json"}}])).unwrap_err();
        assert!(err.contains("`input_schema`"), "{err}");
        let big = json!({"type": "object", "description": "x".repeat(MAX_SCHEMA_BYTES)});
        assert!(admit(json!([{"name": "a", "input_schema": big}])).unwrap_err().contains("bytes"));
        let many: serde_json::Map<String, Value> =
            (0..=MAX_PATTERNS).map(|i| (format!("^p{i}"), json!({"type": "string"}))).collect();
        let err = admit(json!([{"name": "a", "input_schema": {"patternProperties": many}}])).unwrap_err();
        assert!(err.contains("regular expressions"), "{err}");
        let huge = json!({"type": "string", "pattern": "\\w{1000}\\w{1000}"});
        assert!(admit(json!([{"name": "a", "output_schema": huge}])).unwrap_err().contains("compile"));
        for common in ["^\\w+$", "^\\d{4}-\\d{2}-\\d{2}$", "^[\\p{L} .'-]{1,100}$", "^[^@\\s]+@[^@\\s]+\\.[a-z]{2,}$"] {
            let schema = json!({"type": "string", "pattern": common});
            assert!(admit(json!([{"name": "a", "input_schema": schema}])).is_ok(), "{common}");
        }
        // Formats are not asserted (as in Avtomatika).
        let w =
            c.of("fmt", &record(json!([{"name": "a", "output_schema": {"properties": {"e": {"format": "email"}}}}])));
        assert!(w.check("a", Schema::Output, &json!({"e": "not an email"})).is_ok());
        let err = admit(json!([{"name": "a", "events_schema": [1]}])).unwrap_err();
        assert!(err.contains("events_schema"), "{err}");
        // Another dialect is not JSON Schema: not compiled, not checked.
        assert!(admit(json!([{"name": "a", "schema_dialect": "avro", "input_schema": "string"}])).is_ok());
    }

    #[test]
    fn validators_are_shared_and_bounded() {
        let c = TaskContracts::new();
        let schema = json!({"type": "object", "required": ["a"]});
        let a = c.compile(&schema).unwrap();
        let b = c.compile(&schema).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one validator per schema text");
        for i in 0..MAX_VALIDATORS + 5 {
            c.compile(&json!({"minimum": i})).unwrap();
        }
        assert_eq!(c.validators.lock().len(), MAX_VALIDATORS);
        // Forgetting a worker makes the next lookup read its record again.
        let w1 = c.of("w", &record(json!([{"name": "s", "output_schema": {"type": "object"}}])));
        assert!(w1.check("s", Schema::Output, &json!(1)).is_err());
        c.forget("w");
        let w2 = c.of("w", &record(json!([{"name": "s"}])));
        assert!(w2.check("s", Schema::Output, &json!(1)).is_ok());
    }
}
