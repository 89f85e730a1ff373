//! `resource_requirements` matching (Avtomatika's compliance rules, plus the cookbook's short form).
//!
//! Accepted requirement keys:
//! - `resources`: `{devices: [{type, model, id, <property>: value}], properties: {cpu_cores: 8, ...}}`
//!   (a flat `{cpu_cores: 4}` is read as `properties`);
//! - `gpu`: `{model: "NVIDIA T4", vram_gb: 16}` (cookbook recipe 19) = a required device of type `gpu`;
//! - `installed_artifacts` / `installed_models`: names or `{name, version, properties}`;
//! - `installed_software` / `software`: `{name: version | "any"}` or a list of names;
//! - `extra_requirements`: `{key: value}` matched against `capabilities.extra`;
//! - `skill`: `{field: value}` matched against the worker's skill for the task ([`check_skill`]).
//!
//! Property rules: numbers need `worker >= required`; list vs list needs a common element; scalar vs
//! list needs membership; strings named `model` match case-insensitively as a substring;
//! otherwise equality.
//!
//! Besides the requirements, [`check_skill`] holds the skill to the dispatch's custom result
//! statuses (its `output_statuses`).

use serde_json::{Map, Value};

use crate::actions::TaskSpec;
use crate::protocol::wire::{task_status, DEFAULT_SCHEMA_DIALECT};

/// The fields of a skill declaration (rxon's `SkillInfo`): a `skill` requirement on one of them
/// is matched against the declared value, any other against the skill's `properties`.
const SKILL_FIELDS: [&str; 10] = [
    "name",
    "type",
    "description",
    "version",
    "input_schema",
    "output_schema",
    "events_schema",
    "output_statuses",
    "schema_dialect",
    "properties",
];

/// The rules on the worker's skill for the task (found by name in the worker's record `worker`),
/// beyond its version and type (Avtomatika's compliance rules):
/// - the dispatch's custom result statuses (its transition keys other than `success`,
///   `failure` and `cancelled`) must all be among the skill's `output_statuses`, when it
///   declares some: a worker that cannot return a status the blueprint waits for is not chosen;
/// - each `field: value` of the `skill` requirement must equal the skill's field of that name
///   (for the fields of a skill declaration, `schema_dialect` defaulting to `json-schema`), or
///   else, when that is absent, its `properties[field]` (numbers compare by value).
///
/// Costs nothing when the dispatch has no custom status and no `skill` requirement.
pub(super) fn check_skill(worker: &Map<String, Value>, spec: &TaskSpec) -> Result<(), String> {
    let standard = [task_status::SUCCESS, task_status::FAILURE, task_status::CANCELLED];
    let mut custom = spec.transitions.iter().map(|(s, _)| s.as_str()).filter(|s| !standard.contains(s)).peekable();
    let wanted = spec.resource_requirements.as_ref().and_then(|r| r.get("skill")).and_then(Value::as_object);
    if custom.peek().is_none() && wanted.is_none_or(Map::is_empty) {
        return Ok(());
    }
    let empty = Map::new();
    let skill = worker
        .get("supported_skills")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .find(|s| s.get("name").and_then(Value::as_str) == Some(spec.task_type.as_str()))
        .unwrap_or(&empty);
    if let Some(declared) = skill.get("output_statuses").and_then(Value::as_array).filter(|d| !d.is_empty()) {
        let mut missing: Vec<&str> = custom.filter(|s| !declared.iter().any(|d| d.as_str() == Some(s))).collect();
        if !missing.is_empty() {
            missing.sort_unstable();
            missing.dedup();
            return Err(format!("its skill cannot return status {} (output_statuses)", missing.join(", ")));
        }
    }
    for (field, want) in wanted.into_iter().flatten() {
        let declared = match skill.get(field.as_str()).filter(|v| !v.is_null()) {
            Some(v) if SKILL_FIELDS.contains(&field.as_str()) => Some(v.clone()),
            _ if field == "schema_dialect" => Some(Value::String(DEFAULT_SCHEMA_DIALECT.into())),
            _ => None,
        };
        let have = declared.or_else(|| skill.get("properties").and_then(|p| p.get(field.as_str())).cloned());
        if !have.as_ref().is_some_and(|h| same_value(h, want)) {
            let have = have.map_or_else(|| "nothing".to_owned(), |h| h.to_string());
            return Err(format!("its skill's `{field}` is {have}, not {want}"));
        }
    }
    Ok(())
}

/// JSON equality where numbers compare by value (`16` equals `16.0`), as Python compares them.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// Ok if `worker` (its registration record) satisfies `req`, else the first reason it does not.
pub(super) fn check(worker: &Value, req: &Value) -> Result<(), String> {
    let Some(req) = req.as_object() else { return Ok(()) };
    let mut devices: Vec<Value> = Vec::new();
    let mut properties = Map::new();
    if let Some(res) = req.get("resources").and_then(Value::as_object) {
        if let Some(d) = res.get("devices").and_then(Value::as_array) {
            devices.extend(d.iter().cloned());
        }
        match res.get("properties").and_then(Value::as_object) {
            Some(p) => properties.extend(p.clone()),
            None => properties.extend(res.iter().filter(|(k, _)| *k != "devices").map(|(k, v)| (k.clone(), v.clone()))),
        }
    }
    if let Some(gpu) = req.get("gpu").and_then(Value::as_object) {
        let mut d = gpu.clone();
        d.entry("type").or_insert(Value::String("gpu".into()));
        devices.push(Value::Object(d));
    }
    let worker_devices: Vec<Value> = worker["resources"]["devices"].as_array().cloned().unwrap_or_default();
    let mut used = vec![false; worker_devices.len()];
    for d in &devices {
        let found = worker_devices.iter().enumerate().position(|(i, wd)| !used[i] && device_matches(wd, d));
        match found {
            Some(i) => used[i] = true,
            None => return Err(format!("no device matching {d}")),
        }
    }
    let wprops = &worker["resources"]["properties"];
    for (k, v) in &properties {
        if !value_matches(k, &wprops[k], v) {
            return Err(format!("resource `{k}` does not satisfy {v}"));
        }
    }
    for key in ["installed_artifacts", "installed_models"] {
        if let Some(list) = req.get(key).and_then(Value::as_array) {
            for a in list {
                artifact(worker, a)?;
            }
        }
    }
    for key in ["installed_software", "software"] {
        match req.get(key) {
            Some(Value::Object(map)) => {
                for (name, version) in map {
                    software(worker, name, version.as_str().unwrap_or("any"))?;
                }
            }
            Some(Value::Array(list)) => {
                for name in list.iter().filter_map(Value::as_str) {
                    software(worker, name, "any")?;
                }
            }
            _ => {}
        }
    }
    if let Some(extra) = req.get("extra_requirements").and_then(Value::as_object) {
        for (k, v) in extra {
            if &worker["capabilities"]["extra"][k] != v {
                return Err(format!("capabilities.extra.{k} is not {v}"));
            }
        }
    }
    Ok(())
}

fn device_matches(worker: &Value, req: &Value) -> bool {
    let Some(req) = req.as_object() else { return false };
    for (k, v) in req {
        let have = device_property(worker, k);
        let ok = match k.as_str() {
            "type" | "id" => {
                have == v
                    || (have.is_string()
                        && v.is_string()
                        && have.as_str().map(str::to_lowercase) == v.as_str().map(str::to_lowercase))
            }
            "properties" => {
                v.as_object().is_none_or(|p| p.iter().all(|(pk, pv)| value_matches(pk, &worker["properties"][pk], pv)))
            }
            _ => value_matches(k, have, v),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A device attribute, top level or under `properties`. `vram_gb` also reads `memory_gb`,
/// which is where both worker SDKs put `GPU_VRAM_GB`.
fn device_property<'a>(device: &'a Value, key: &str) -> &'a Value {
    let direct = |k: &str| {
        device.get(k).filter(|v| !v.is_null()).or_else(|| device["properties"].get(k).filter(|v| !v.is_null()))
    };
    direct(key).or_else(|| if key == "vram_gb" { direct("memory_gb") } else { None }).unwrap_or(&Value::Null)
}

fn value_matches(key: &str, have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Null, _) => false,
        (Value::Number(h), Value::Number(w)) => h.as_f64().unwrap_or(f64::NAN) >= w.as_f64().unwrap_or(f64::INFINITY),
        (Value::String(h), Value::String(w)) if key == "model" || key.ends_with("_model") => {
            h.to_lowercase().contains(&w.to_lowercase())
        }
        (Value::Array(h), Value::Array(w)) => w.iter().any(|x| h.contains(x)),
        (Value::Array(h), w) => h.contains(w),
        (h, Value::Array(w)) => w.contains(h),
        (h, w) => h == w,
    }
}

fn artifact(worker: &Value, req: &Value) -> Result<(), String> {
    let (name, version, props) = match req {
        Value::String(n) => (n.as_str(), None, None),
        Value::Object(o) => (
            o.get("name").and_then(Value::as_str).unwrap_or_default(),
            o.get("version").and_then(Value::as_str).filter(|v| *v != "unknown"),
            o.get("properties").and_then(Value::as_object),
        ),
        _ => return Ok(()),
    };
    let have = worker["installed_artifacts"].as_array().cloned().unwrap_or_default();
    let ok = have.iter().any(|a| {
        let a_name = a.as_str().or_else(|| a["name"].as_str());
        a_name == Some(name)
            && version.is_none_or(|v| a["version"].as_str() == Some(v))
            && props.is_none_or(|p| p.iter().all(|(k, v)| value_matches(k, &a["properties"][k], v)))
    });
    if ok {
        Ok(())
    } else {
        Err(format!("artifact `{name}` is not installed"))
    }
}

fn software(worker: &Value, name: &str, version: &str) -> Result<(), String> {
    let have = &worker["installed_software"][name];
    let ok = match have {
        Value::Null => false,
        _ if version == "any" => true,
        Value::String(v) => v == version,
        other => {
            let text = other.to_string();
            text == version
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("software `{name}` {version} is not installed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gpu_worker() -> Value {
        json!({
            "resources": {"devices": [{"type": "gpu", "model": "NVIDIA T4 Tensor Core", "vram_gb": 16}],
                          "properties": {"cpu_cores": 8, "ram_gb": 32}},
            "installed_artifacts": [{"name": "stable-diffusion-1.5", "version": "1.5", "type": "model"}],
            "installed_software": {"python": "3.11", "ffmpeg": "6.0"},
            "capabilities": {"extra": {"region": "eu"}}
        })
    }

    #[test]
    fn cookbook_recipe_19() {
        let req = json!({"gpu": {"model": "NVIDIA T4", "vram_gb": 16}, "installed_models": ["stable-diffusion-1.5"]});
        assert_eq!(check(&gpu_worker(), &req), Ok(()));
        let req = json!({"gpu": {"model": "t4", "vram_gb": 16}, "installed_models": ["stable-diffusion-1.5"]});
        assert_eq!(check(&gpu_worker(), &req), Ok(()));
        let req = json!({"gpu": {"model": "T4", "vram_gb": 24}});
        assert!(check(&gpu_worker(), &req).is_err());
        let req = json!({"gpu": {"model": "A100"}});
        assert!(check(&gpu_worker(), &req).is_err());
        let req = json!({"installed_models": ["llama"]});
        assert!(check(&gpu_worker(), &req).unwrap_err().contains("llama"));
    }

    #[test]
    fn vram_from_sdk_memory_gb() {
        let worker =
            json!({"resources": {"devices": [{"type": "gpu", "model": "NVIDIA T4", "properties": {"memory_gb": 16}}]}});
        assert_eq!(check(&worker, &json!({"gpu": {"model": "NVIDIA T4", "vram_gb": 16}})), Ok(()));
        assert!(check(&worker, &json!({"gpu": {"model": "NVIDIA T4", "vram_gb": 24}})).is_err());
    }

    fn spec(transitions: &[&str], skill: Option<Value>) -> TaskSpec {
        let mut spec = TaskSpec::new("classify");
        spec.transitions = transitions.iter().map(|s| (s.to_string(), "next".to_owned())).collect();
        spec.resource_requirements = skill.map(|s| json!({"skill": s}));
        spec
    }

    fn worker(skill: Value) -> Map<String, Value> {
        json!({"supported_skills": [{"name": "other", "output_statuses": ["x"]}, skill]}).as_object().unwrap().clone()
    }

    #[test]
    fn custom_statuses_must_be_declared_output_statuses() {
        let narrow = worker(json!({"name": "classify", "output_statuses": ["rejected"]}));
        let standard = spec(&["success", "failure", "cancelled"], None);
        assert_eq!(check_skill(&narrow, &standard), Ok(()), "standard statuses need no declaration");
        let err = check_skill(&narrow, &spec(&["success", "needs_review", "maybe", "needs_review"], None)).unwrap_err();
        assert_eq!(err, "its skill cannot return status maybe, needs_review (output_statuses)");
        assert_eq!(check_skill(&narrow, &spec(&["rejected"], None)), Ok(()));
        for undeclared in [json!({"name": "classify"}), json!({"name": "classify", "output_statuses": []})] {
            assert_eq!(check_skill(&worker(undeclared), &spec(&["needs_review"], None)), Ok(()));
        }
    }

    #[test]
    fn skill_requirement_reads_declared_fields_then_properties() {
        let w = worker(json!({"name": "classify", "version": "2.0", "type": "vision",
                              "properties": {"engine": "cycles", "vram": 16, "version": "9"}}));
        for ok in [
            json!({"engine": "cycles", "vram": 16.0}),
            json!({"version": "2.0", "type": "vision"}),
            json!({"schema_dialect": "json-schema", "name": "classify"}),
            json!({}),
        ] {
            assert_eq!(check_skill(&w, &spec(&["success"], Some(ok.clone()))), Ok(()), "{ok}");
        }
        for bad in [json!({"engine": "eevee"}), json!({"version": "9"}), json!({"missing": 1}), json!({"vram": "16"})] {
            let err = check_skill(&w, &spec(&["success"], Some(bad.clone()))).unwrap_err();
            assert!(err.starts_with("its skill's `"), "{bad}: {err}");
        }
        let none = Map::new();
        assert!(check_skill(&none, &spec(&["success"], Some(json!({"engine": "cycles"})))).is_err());
    }

    #[test]
    fn properties_software_extra() {
        assert_eq!(check(&gpu_worker(), &json!({"resources": {"cpu_cores": 4}})), Ok(()));
        assert!(check(&gpu_worker(), &json!({"resources": {"properties": {"ram_gb": 64}}})).is_err());
        assert_eq!(check(&gpu_worker(), &json!({"installed_software": {"ffmpeg": "any", "python": "3.11"}})), Ok(()));
        assert!(check(&gpu_worker(), &json!({"installed_software": {"python": "3.12"}})).is_err());
        assert_eq!(check(&gpu_worker(), &json!({"extra_requirements": {"region": "eu"}})), Ok(()));
        assert!(check(&gpu_worker(), &json!({"extra_requirements": {"region": "us"}})).is_err());
        assert!(check(&json!({}), &json!({"gpu": {"model": "T4"}})).is_err());
    }
}
