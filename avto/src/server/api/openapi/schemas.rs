//! The JSON Schemas of the document: the fixed components, a create route's body, and a
//! blueprint's schemars schema made a component (its `$defs` lifted).

use serde_json::{json, Map, Value};

/// A name usable in `components.schemas` (`^[a-zA-Z0-9._-]+$`).
pub(super) fn component_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect()
}

/// `schema` with its `$defs` moved to `components.schemas` as `{prefix}.{name}` and every
/// `#/$defs/...` reference pointed there (a `$ref` resolves against the document's root).
pub(super) fn lift_defs(mut schema: Value, prefix: &str, out: &mut Map<String, Value>) -> Value {
    fn rewrite(v: &mut Value, prefix: &str) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    match x {
                        Value::String(s) if k == "$ref" => {
                            if let Some(name) = s.strip_prefix("#/$defs/").or_else(|| s.strip_prefix("#/definitions/"))
                            {
                                *s = format!("#/components/schemas/{}", component_name(&format!("{prefix}.{name}")));
                            }
                        }
                        _ => rewrite(x, prefix),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, prefix)),
            _ => {}
        }
    }
    if let Value::Object(m) = &mut schema {
        m.remove("$schema");
        for key in ["$defs", "definitions"] {
            if let Some(Value::Object(defs)) = m.remove(key) {
                for (name, mut def) in defs {
                    rewrite(&mut def, prefix);
                    out.insert(component_name(&format!("{prefix}.{name}")), def);
                }
            }
        }
    }
    rewrite(&mut schema, prefix);
    schema
}

/// The request body of a blueprint's create route, its input contract (or any object) as
/// `initial_data`.
pub(super) fn create_job_schema(input: Option<Value>, max_timeout: f64) -> Value {
    // `null` is taken as absent for every member (`initial_data`: `{}`, then checked).
    let timeout = json!({"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": max_timeout,
        "description": "Seconds, at most MAX_TIMEOUT_SECONDS"});
    let required = if input.is_some() { json!(["initial_data"]) } else { json!([]) };
    json!({
        "type": "object",
        "required": required,
        "properties": {
            "initial_data": input.unwrap_or_else(|| json!({"type": ["object", "null"]})),
            "webhook_url": {"type": ["string", "null"], "pattern": "^https?://[^/?#]",
                "description": "Called when the job ends (an address that is or resolves to a private one is refused \
                    unless WEBHOOK_ALLOW_PRIVATE)"},
            "dispatch_timeout": timeout,
            "result_timeout": timeout,
            "security": {"type": ["object", "null"]},
            "metadata": {"type": ["object", "null"]},
        },
    })
}

/// The fixed component schemas.
pub(super) fn components() -> Map<String, Value> {
    let job_list = json!({"type": "array", "items": {"$ref": "#/components/schemas/Job"}});
    let obj = json!({"type": "object"});
    let v = json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string"},
                "violations": {"type": "array", "items": {"$ref": "#/components/schemas/Violation"}},
            },
        },
        "Violation": {
            "type": "object",
            "required": ["pointer", "message"],
            "properties": {
                "pointer": {"type": "string", "description": "JSON pointer (RFC 6901) into initial_data"},
                "message": {"type": "string"},
            },
        },
        "JobId": {"type": "string", "format": "uuid"},
        "BlueprintName": {"type": "string"},
        "FileName": {
            "type": "string",
            "minLength": 1,
            // Relative, no empty, `.` or `..` segment, no backslash or NUL (files::check_key);
            // at most 255 bytes a segment and 1024 in all with `jobs/{job_id}/`.
            "pattern": "^(?!/)(?!.*//)(?!.*/$)(?!\\.\\.?(/|$))(?!.*/\\.\\.?(/|$))[^\\\\\\u0000]+$",
        },
        "Text": {"type": "string"},
        "Count": {"type": "integer", "minimum": 0, "maximum": u64::MAX},
        "ExpiresIn": {"type": "integer", "minimum": 1, "maximum": 604800},
        "Flag": {"type": "string", "enum": ["true", "false", "1", "0"]},
        "Fields": {"type": "string"},
        "Octets": {"type": "string", "contentMediaType": "application/octet-stream"},
        "Decision": {
            "type": "object",
            "required": ["decision"],
            "properties": {"decision": {"type": "string", "minLength": 1}},
        },
        "JobAccepted": {
            "type": "object",
            "required": ["status", "job_id"],
            "properties": {"status": {"const": "accepted"}, "job_id": {"type": "string", "format": "uuid"}},
        },
        "JobCancelled": {
            "type": "object",
            "required": ["status", "job_id"],
            "properties": {"status": {"const": "cancellation_request_accepted"}, "job_id": {"type": "string"}},
        },
        "ApprovalReceived": {
            "type": "object",
            "required": ["status", "job_id"],
            "properties": {"status": {"const": "approval_received"}, "job_id": {"type": "string"}},
        },
        "Job": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"type": "string"},
                "status": {"type": "string"},
                "blueprint_name": {"type": "string"},
                "current_state": {"type": "string"},
                "error_message": {"type": "string"},
                "waiting_reason": {"type": "string"},
                "dispatch_deadline_ms": {"type": "integer"},
                "progress_message": {"type": "string"},
                "parent_job_id": {"type": "string"},
                "child_job_id": {"type": "string"},
                "initial_data": obj,
                "retry_count": {"type": "integer"},
                "transition_count": {"type": "integer"},
                "created_at_ms": {"type": "integer"},
                "updated_at_ms": {"type": "integer"},
                "result": {"description": "Once the job is terminal"},
            },
        },
        "JobList": job_list,
        "HistoryRows": {"type": "array", "items": obj},
        "BlueprintList": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "start_state", "states"],
                "properties": {
                    "name": {"type": "string"},
                    "api_version": {"type": "string"},
                    "endpoint": {"type": "string"},
                    "start_state": {"type": "string"},
                    "states": {"type": "array", "items": {"type": "string"}},
                    "input_schema": {"description": "The blueprint's input contract (JSON Schema)"},
                    "output_schema": {"description": "The blueprint's output contract (JSON Schema): the result of a job that finished"},
                    "events": {"type": "array", "items": {"type": "string"}, "description": "The event types its handlers may send, when the blueprint declares them"},
                    "events_schema": {"type": "object", "description": "Event type -> the JSON Schema of its payload"},
                },
            },
        },
        "WorkerList": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "worker_id": {"type": "string"},
                    "worker_type": {"type": "string"},
                    "status": {"type": "string"},
                    "reputation": {"type": "number"},
                    "queued_tasks": {"type": "integer"},
                    "running_tasks": {"type": "integer"},
                },
            },
        },
        "Catalog": {
            "type": "object",
            "description": "Skill name -> its contract and providers",
            "additionalProperties": {
                "type": "object",
                "required": ["contract", "providers_count", "worker_types", "average_reputation"],
                "properties": {
                    "contract": obj,
                    "providers_count": {"type": "integer"},
                    "worker_types": {"type": "array", "items": {"type": "string"}},
                    "average_reputation": {"type": "number"},
                },
            },
        },
        "Dashboard": {
            "type": "object",
            "required": ["workers", "jobs"],
            "properties": {
                "workers": {"type": "object", "properties": {"total": {"type": "integer"}}},
                "jobs": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
        "WorkersReloaded": {
            "type": "object",
            "required": ["status", "workers"],
            "properties": {"status": {"const": "workers_reloaded"}, "workers": {"type": "integer"}},
        },
        "PresignedUpload": {
            "type": "object",
            "required": ["url", "expires_in", "method"],
            "properties": {"url": {"type": "string"}, "expires_in": {"type": "integer"}, "method": {"const": "PUT"}},
        },
        "Uploaded": {
            "type": "object",
            "required": ["status", "s3_uri", "size"],
            "properties": {"status": {"const": "uploaded"}, "s3_uri": {"type": "string"}, "size": {"type": "integer"}},
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "unhealthy"]},
                "failed_tasks": {"type": "array", "items": {"type": "string"}},
            },
        },
        "OpenApiDocument": {"type": "object", "required": ["openapi", "paths"]},
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("an object literal"),
    }
}
