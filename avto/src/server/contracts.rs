//! Input contracts: the JSON Schema a blueprint publishes for its initial data
//! ([`crate::Blueprint::input_schema`]), compiled once at start-up and checked when a job is
//! created, before it exists (and before the client's quota is charged).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::engine::EngineEnv;

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
pub(crate) struct Contracts {
    by_blueprint: HashMap<&'static str, jsonschema::Validator>,
}

impl std::fmt::Debug for Contracts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contracts").field("blueprints", &self.by_blueprint.keys().collect::<Vec<_>>()).finish()
    }
}

impl Contracts {
    /// Compiles the contract of each blueprint of `env`. A schema that does not compile (a
    /// `JsonSchema` impl written by hand, say) is logged and that blueprint accepts any object.
    pub(crate) fn compile(env: &EngineEnv) -> Contracts {
        let mut by_blueprint = HashMap::new();
        for bp in env.blueprints() {
            let Some(schema) = bp.input_schema() else { continue };
            match jsonschema::validator_for(&schema) {
                Ok(v) => {
                    by_blueprint.insert(bp.name(), v);
                }
                Err(e) => {
                    tracing::error!(blueprint = bp.name(), error = %e, "input contract does not compile; not checked")
                }
            }
        }
        Contracts { by_blueprint }
    }

    /// Every violation (at most [`MAX_VIOLATIONS`]) of `blueprint`'s contract by `data`, with
    /// how many there were in all; empty when it holds or there is no contract.
    pub(crate) fn check(&self, blueprint: &str, data: &Value) -> (Vec<Violation>, usize) {
        let Some(v) = self.by_blueprint.get(blueprint) else { return (Vec::new(), 0) };
        let mut out = Vec::new();
        let mut total = 0;
        for e in v.iter_errors(data) {
            total += 1;
            if out.len() < MAX_VIOLATIONS {
                out.push(Violation { pointer: e.instance_path().to_string(), message: e.to_string() });
            }
        }
        (out, total)
    }
}
