//! The OpenAPI 3.1 document of the HTTP API (`GET /_public/openapi.json`), generated once at
//! start-up from the routes the router serves ([`ServedRoute`]): one operation per client,
//! public and operator route, a create-job operation per blueprint whose request body carries the
//! blueprint's input contract ([`crate::Blueprint::input_schema`]), the error bodies of
//! [`ApiError`](super::ApiError) and the security schemes the extractors of `auth.rs` read.
//!
//! The document's structure (paths, operations, parameters, responses, security) is utoipa's
//! model; every schema is a component written as JSON Schema 2020-12 (what OpenAPI 3.1 uses) and
//! placed in `components.schemas` as it is, so a blueprint's schemars schema keeps every keyword
//! (utoipa's typed schema model would drop `$defs`, `const`, ...). The worker routes
//! (`/_worker/...`, RXON) are not in it: they carry signed messages that the worker protocol
//! specifies, for the worker SDKs, not for generated clients.

use axum::body::Bytes;
use axum::http::Method;
use serde_json::{json, Map, Value};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApiBuilder, PathsBuilder, Ref, Required, Tag,
};

mod ops;
mod schemas;

use super::ServedRoute;
use crate::server::core::Core;
use ops::{op, Answer, Auth, Body};
use schemas::{component_name, components, create_job_schema, lift_defs};

/// Whether a served route is part of the document (every route but the workers' RXON routes).
pub(crate) fn documented(route: &ServedRoute) -> bool {
    route.operation != "worker"
}

/// The OpenAPI path of an axum path template (`{*rest}` is `{rest}`).
pub(crate) fn openapi_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

const CLIENT_TOKEN: &str = "clientToken";
const ADMIN_BEARER: &str = "adminBearer";
const ADMIN_TOKEN: &str = "adminToken";

fn security(auth: Auth) -> Vec<SecurityRequirement> {
    let req = |name: &str| SecurityRequirement::new::<_, [&str; 0], &str>(name, []);
    match auth {
        Auth::Nobody => Vec::new(),
        Auth::Client => vec![req(CLIENT_TOKEN)],
        Auth::Operator => vec![req(ADMIN_BEARER), req(ADMIN_TOKEN)],
        Auth::ClientOrOperator => vec![req(CLIENT_TOKEN), req(ADMIN_BEARER), req(ADMIN_TOKEN)],
    }
}

fn schema_ref(name: &str) -> Ref {
    Ref::from_schema_name(name)
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "Bad input: the message names what is wrong (`violations` lists contract violations with their JSON pointers)",
        401 => "No credential, or one that is not valid",
        403 => "The credential does not allow this route",
        404 => "Not found (another client's job is not found either)",
        408 => "The request body did not arrive in time (`HTTP_BODY_READ_TIMEOUT_SECONDS`)",
        409 => "Not in a state that allows this",
        413 => "The body is larger than the limit",
        429 => "Rate limit or monthly quota spent; `Retry-After` says when to try again",
        500 => "The file store failed",
        501 => "This orchestrator runs without this feature (S3 files)",
        503 => "Storage is unavailable",
        _ => "Error",
    }
}

fn path_param(name: &str) -> utoipa::openapi::path::Parameter {
    let (schema, description) = match name {
        "job_id" => ("JobId", "The job's id (a UUID)"),
        "filename" => ("FileName", "The file's name under the job; may contain `/`"),
        "name" => ("BlueprintName", "The blueprint's name"),
        _ => ("Text", ""),
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema_ref(schema)))
        .build()
}

fn http_method(m: &Method) -> Option<HttpMethod> {
    Some(match *m {
        Method::GET => HttpMethod::Get,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        _ => return None,
    })
}

/// The document of `served` (the routes of `core`'s router), serialized.
pub(super) fn document(core: &Core, served: &[ServedRoute]) -> Bytes {
    let cfg = core.config();
    let mut schemas = components();
    let mut paths = PathsBuilder::new();
    let mut links_at = Vec::new();
    for route in served.iter().filter(|r| documented(r)) {
        let (Some(method), Some(spec)) = (http_method(&route.method), op(route.operation)) else { continue };
        let operation_id = match (route.blueprint, route.version) {
            (Some(bp), _) => format!("create_job_{}", component_name(bp)),
            (None, Some(v)) => format!("{}_{}", route.operation, component_name(v)),
            (None, None) => route.operation.to_owned(),
        };
        let mut b = OperationBuilder::new()
            .operation_id(Some(operation_id))
            .summary(Some(match route.blueprint {
                Some(bp) => format!("Create a job of blueprint `{bp}`"),
                None => spec.summary.to_owned(),
            }))
            .tag(spec.tag)
            .securities(Some(security(spec.auth)));
        if let Some(bp) = route.blueprint {
            b = b.description(Some(format!(
                "Creates a job of blueprint `{bp}`. `initial_data` is checked against the blueprint's input \
                 contract before the job exists (400 listing every violation). A body without `initial_data` \
                 is taken as the initial data itself, minus the other members named here."
            )));
        }
        for name in route.path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')) {
            b = b.parameter(path_param(name.trim_start_matches('*')));
        }
        for (name, schema, description) in spec.query {
            b = b.parameter(
                ParameterBuilder::new()
                    .name(*name)
                    .parameter_in(ParameterIn::Query)
                    .required(if *name == "filename" { Required::True } else { Required::False })
                    .description(Some(*description))
                    .schema(Some(schema_ref(schema))),
            );
        }
        let body = match (route.blueprint, spec.body) {
            (Some(bp), _) => {
                let name = format!("CreateJob.{}", component_name(bp));
                let input = core
                    .blueprint(bp)
                    .and_then(|b| b.input_schema())
                    .map(|s| lift_defs(s, &format!("{}.input", component_name(bp)), &mut schemas));
                schemas.insert(name.clone(), create_job_schema(input, cfg.max_timeout.as_secs_f64()));
                Some(("application/json", name))
            }
            (None, Body::Json(name)) => Some(("application/json", name.to_owned())),
            (None, Body::Octets) => Some(("application/octet-stream", "Octets".to_owned())),
            (None, Body::None) => None,
        };
        if let Some((content_type, schema)) = body {
            // An upload may be empty; a JSON body may not.
            let required = if content_type == "application/json" { Required::True } else { Required::False };
            b = b.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(required))
                    .content(content_type, ContentBuilder::new().schema(Some(schema_ref(&schema))).build())
                    .build(),
            ));
        }
        let mut responses = ResponsesBuilder::new();
        let error = |status: u16| {
            let mut r = ResponseBuilder::new()
                .description(error_description(status))
                .content("application/json", ContentBuilder::new().schema(Some(schema_ref("Error"))).build());
            if status == 429 {
                r = r.header(
                    "Retry-After",
                    utoipa::openapi::HeaderBuilder::new()
                        .schema(schema_ref("Count"))
                        .description(Some("Seconds to wait"))
                        .build(),
                );
            }
            r
        };
        responses = match spec.answer {
            Answer::Json(status, _) if status >= 400 => responses.response(status.to_string(), error(status)),
            Answer::Json(status, schema) => {
                let ok = ResponseBuilder::new()
                    .description("Success")
                    .content("application/json", ContentBuilder::new().schema(Some(schema_ref(schema))).build());
                if route.blueprint.is_some() {
                    // The new job's routes, for clients and stateful testing (Schemathesis).
                    // Added to the JSON below: utoipa 5.5 writes a link's `operationId` as
                    // `operation_id`.
                    let suffix = route.version.map(|v| format!("_{}", component_name(v))).unwrap_or_default();
                    let links: Map<String, Value> = ["job_status", "cancel_job", "job_history", "approve_job"]
                        .iter()
                        .map(|next| {
                            let link = json!({"operationId": format!("{next}{suffix}"),
                                "parameters": {"job_id": "$response.body#/job_id"}});
                            (next.to_string(), link)
                        })
                        .collect();
                    links_at.push((openapi_path(&route.path), status.to_string(), Value::Object(links)));
                }
                responses.response(status.to_string(), ok)
            }
            Answer::Text(content_type) => responses.response(
                "200",
                ResponseBuilder::new()
                    .description("Success")
                    .content(content_type, ContentBuilder::new().schema(Some(schema_ref("Text"))).build()),
            ),
            Answer::Redirect => responses.response(
                "302",
                ResponseBuilder::new()
                    .description("Redirect to a presigned GET URL")
                    .header("Location", utoipa::openapi::HeaderBuilder::new().schema(schema_ref("Text")).build()),
            ),
        };
        if route.operation == "status" {
            responses = responses.response(
                "503",
                ResponseBuilder::new()
                    .description("A background task stays down")
                    .content("application/json", ContentBuilder::new().schema(Some(schema_ref("Health"))).build()),
            );
        }
        let mut errors: Vec<u16> = spec.errors.to_vec();
        match spec.auth {
            Auth::Nobody => {}
            Auth::Client => errors.extend([401, 429]),
            // A wrong operator credential is 403, a missing one 401; a bad one is 400.
            Auth::Operator => errors.extend([400, 401, 403]),
            Auth::ClientOrOperator => errors.extend([400, 401, 403, 429]),
        }
        errors.sort_unstable();
        errors.dedup();
        for status in errors {
            if !matches!(spec.answer, Answer::Json(s, _) if s == status) {
                responses = responses.response(status.to_string(), error(status));
            }
        }
        paths = paths.path(openapi_path(&route.path), PathItem::new(method, b.responses(responses.build()).build()));
    }
    let components = ComponentsBuilder::new()
        .security_scheme(
            CLIENT_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Client-Token",
                "A client token (CLIENT_TOKEN or clients.toml)",
            ))),
        )
        .security_scheme(
            ADMIN_BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The operator credential, ADMIN_TOKEN"))
                    .build(),
            ),
        )
        .security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Admin-Token",
                "The operator credential, ADMIN_TOKEN",
            ))),
        )
        .build();
    let tags = [
        ("jobs", "Jobs of the calling client"),
        ("blueprints", "The blueprints this orchestrator serves"),
        ("workers", "Live workers and their skills"),
        ("files", "Task files of a job (S3)"),
        ("operator", "Routes of the operator credential (ADMIN_TOKEN)"),
        ("public", "Health and this document"),
    ]
    .map(|(name, description)| {
        let mut t = Tag::new(name);
        t.description = Some(description.to_owned());
        t
    });
    let doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("avto orchestrator")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The client API of an avto orchestrator (generated at start-up from its routes and \
                     blueprints). Errors are JSON `{\"error\": \"...\"}`; a broken input contract adds \
                     `violations`. The worker protocol (RXON, `/_worker/...`) is not part of this document.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .tags(Some(tags))
        .build();
    let mut v = serde_json::to_value(&doc).expect("the OpenAPI model serializes");
    for (path, status, links) in links_at {
        if let Some(r) =
            v.pointer_mut(&format!("/paths/{}/post/responses/{status}", path.replace('~', "~0").replace('/', "~1")))
        {
            r["links"] = links;
        }
    }
    if let Some(c) = v.get_mut("components").and_then(Value::as_object_mut) {
        c.insert("schemas".into(), Value::Object(schemas));
    }
    Bytes::from(serde_json::to_vec(&v).expect("JSON serializes"))
}
