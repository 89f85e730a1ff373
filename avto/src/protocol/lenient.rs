//! How the orchestrator reads what workers send: the `deserialize_with` helpers behind the serde
//! attributes of the worker → orchestrator messages in [`super::wire`] (registration, heartbeat,
//! result, event). The module docs of `wire` state the policy: the orchestrator checks a message's
//! timestamp, nonce and signature on the body as sent, then reads it into its wire type as
//! leniently as it always has ([`or_none`] and [`or_default`] for the fields it does not act on;
//! one helper per field it does act on, with the 400 message it has always answered).

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::wire::{task_status, JsonObject, SkillInfo, TaskError};
use super::TRANSIENT_ERROR;

/// `Some(value)` when the value reads as `T`; `None` when it is null or of another type.
pub(super) fn or_none<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    Ok(T::deserialize(Value::deserialize(d)?).ok())
}

/// [`or_none`] for a JSON object: the map as parsed, not read a second time into a new one.
pub(super) fn object_or_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<JsonObject>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Object(map) => Some(map),
        _ => None,
    })
}

/// The value when it reads as `T`, else `T::default()` (an empty string, `0.0`, ...).
pub(super) fn or_default<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(d: D) -> Result<T, D::Error> {
    Ok(or_none(d)?.unwrap_or_default())
}

/// `WorkerRegistration.worker_type`: a string, else `"generic"` (its default).
pub(super) fn worker_type<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(or_none(d)?.unwrap_or_else(super::wire::default_worker_type))
}

/// `WorkerRegistration.supported_skills`: null or a list whose every entry is an object with a
/// string `name` (the handler then checks the name is an identifier). A skill whose other fields
/// do not read reads as its name alone: dispatch reads skills from the record, as sent.
pub(super) fn supported_skills<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<SkillInfo>>, D::Error> {
    let entries = match Value::deserialize(d)? {
        Value::Null => return Ok(None),
        Value::Array(entries) => entries,
        _ => return Err(D::Error::custom("supported_skills must be a list")),
    };
    entries
        .into_iter()
        .map(|entry| {
            let Some(name) = entry.get("name").and_then(Value::as_str).map(str::to_owned) else {
                return Err(D::Error::custom(SKILL_NAME_REQUIRED));
            };
            Ok(SkillInfo::deserialize(entry).unwrap_or_else(|_| SkillInfo::new(name)))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The answer to a registered skill without a valid name.
pub(crate) const SKILL_NAME_REQUIRED: &str = "every supported skill needs a `name` of [A-Za-z0-9_-]{1,128}";

/// `TaskResult.status`: absent or null means `success`; otherwise a non-empty string.
pub(super) fn result_status<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(task_status::SUCCESS.to_owned()),
        Value::String(s) if !s.is_empty() => Ok(s),
        _ => Err(D::Error::custom("status must be a string")),
    }
}

/// `TaskResult.data`: an object or null.
pub(super) fn result_data<'de, D: Deserializer<'de>>(d: D) -> Result<Option<JsonObject>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Object(data) => Ok(Some(data)),
        _ => Err(D::Error::custom("Expected object | null for `data`")),
    }
}

/// `TaskResult.error` as the SDK sends it: an object `{code, message, details}` (a missing or
/// non-string code is `TRANSIENT_ERROR`, a non-string message is written out as JSON) or a bare
/// string (a `TRANSIENT_ERROR` with that message).
pub(super) fn result_error<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TaskError>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(message) => Ok(Some(TaskError::new(TRANSIENT_ERROR, message))),
        Value::Object(mut error) => Ok(Some(TaskError {
            code: error.get("code").and_then(Value::as_str).unwrap_or(TRANSIENT_ERROR).to_owned(),
            message: match error.remove("message") {
                Some(Value::String(s)) => s,
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            },
            details: error.remove("details").filter(|d| !d.is_null()),
        })),
        _ => Err(D::Error::custom("error must be an object {code, message} or a string")),
    }
}

/// `WorkerEventPayload.payload`: an object; absent or null is an empty one.
pub(super) fn event_payload<'de, D: Deserializer<'de>>(d: D) -> Result<JsonObject, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(Map::new()),
        Value::Object(payload) => Ok(payload),
        _ => Err(D::Error::custom("payload must be an object")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::wire::TaskResult;

    #[test]
    fn object_fields_keep_objects_and_drop_anything_else() {
        let base = json!({"job_id": "j", "task_id": "t"});
        for (value, kept) in [
            (json!({"a": 1, "b": {"c": [1, 2]}}), true),
            (json!({}), true),
            (json!("text"), false),
            (json!([1]), false),
            (json!(3), false),
            (json!(null), false),
        ] {
            let mut body = base.clone();
            body["metadata"] = value.clone();
            body["costs"] = value.clone();
            let r: TaskResult = serde_json::from_value(body).unwrap();
            let expect = kept.then(|| value.as_object().unwrap().clone());
            assert_eq!(r.metadata, expect, "{value}");
            assert_eq!(r.costs, expect, "{value}");
        }
    }
}
