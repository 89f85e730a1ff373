//! Client routes: create jobs, status, cancel, list, approvals, graphs, workers, dashboard.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth::{owned_job, storage, Client};
use super::{
    check_job_id, json_response, json_status, truncate, ApiError, JsonObject, Operator, Path, Query, Routes,
    ServedRoute,
};
use crate::history;
use crate::job::Job;
use crate::server::core::{Core, NewJob};
use crate::storage::WorkerLoad;

pub(super) fn routes(core: &Arc<Core>) -> Routes {
    let prefix = if core.config().client_api_prefix.is_empty() {
        String::new()
    } else {
        format!("/{}", core.config().client_api_prefix)
    };
    let mut r = Routes::new();
    let mut versions: BTreeSet<Option<&'static str>> = BTreeSet::new();
    versions.insert(None);
    for bp in core.env().blueprints() {
        versions.insert(bp.api_version());
        if let Some(path) = bp.create_path() {
            let name = bp.name();
            let route = ServedRoute {
                method: Method::POST,
                path: format!("{prefix}/{path}"),
                operation: "create_job",
                version: bp.api_version(),
                blueprint: Some(name),
            };
            r = r.on_route(
                route,
                move |state: State<Arc<Core>>, client: Client, headers: axum::http::HeaderMap, body: JsonObject| {
                    create_job(state, client, headers, body, name)
                },
            );
        }
    }
    for version in versions {
        let base = match version {
            Some(v) => format!("{prefix}/{v}"),
            None => prefix.clone(),
        };
        let at = |method, path: &str, operation| ServedRoute {
            method,
            path: format!("{base}/{path}"),
            operation,
            version,
            blueprint: None,
        };
        r = r
            .on_route(at(Method::GET, "jobs", "list_jobs"), list_jobs)
            .on_route(at(Method::GET, "jobs/{job_id}", "job_status"), job_status)
            .on_route(at(Method::POST, "jobs/{job_id}", "unknown_endpoint"), unknown_endpoint)
            .on_route(at(Method::POST, "jobs/{job_id}/cancel", "cancel_job"), cancel_job)
            .on_route(at(Method::GET, "jobs/{job_id}/history", "job_history"), job_history)
            .on_route(at(Method::POST, "jobs/{job_id}/approval", "approve_job"), approve_job)
            .on_route(at(Method::GET, "blueprints", "list_blueprints"), list_blueprints)
            .on_route(at(Method::GET, "blueprints/{name}/graph", "blueprint_graph"), graph)
            .on_route(at(Method::GET, "workers", "list_workers"), workers)
            .on_route(at(Method::GET, "workers/catalog", "worker_catalog"), worker_catalog)
            .on_route(at(Method::GET, "dashboard", "dashboard"), dashboard)
            .on_route(at(Method::POST, "admin/reload-workers", "reload_workers"), reload_workers);
        r = super::files::routes(r, &base, version);
    }
    r
}

/// `POST .../jobs/{x}` where no blueprint has that endpoint.
async fn unknown_endpoint(State(core): State<Arc<Core>>, _client: Client, Path(x): Path<String>) -> ApiError {
    let known: Vec<String> = core.env().blueprints().filter_map(|b| b.create_path()).collect();
    ApiError::NotFound(format!(
        "no blueprint has the endpoint `jobs/{}` (endpoints: {})",
        truncate(&x),
        known.join(", ")
    ))
}

/// A timeout in seconds: positive and at most `max` (`MAX_TIMEOUT_SECONDS`), else a 400 naming `key`.
fn opt_secs(body: &Map<String, Value>, key: &str, max: std::time::Duration) -> Result<Option<f64>, ApiError> {
    let max = max.as_secs_f64();
    let bad =
        || ApiError::bad(format!("`{key}` must be a positive number of seconds up to {max} (MAX_TIMEOUT_SECONDS)"));
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f > 0.0 && f <= max => Ok(Some(f)),
            _ => Err(bad()),
        },
        Some(_) => Err(bad()),
    }
}

fn opt_object(body: &Map<String, Value>, key: &str) -> Result<Option<Value>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(_) => Err(ApiError::bad(format!("`{key}` must be a JSON object"))),
    }
}

const CREATE_OPTIONS: [&str; 5] = ["webhook_url", "dispatch_timeout", "result_timeout", "security", "metadata"];

/// `POST /{prefix}/{version}/{endpoint}`: body `{"initial_data": {...}, "webhook_url": ..., "dispatch_timeout": s,
/// "result_timeout": s}`. A body without `initial_data` is taken as the initial data itself (minus those options).
async fn create_job(
    State(core): State<Arc<Core>>,
    Client(client): Client,
    headers: axum::http::HeaderMap,
    JsonObject(body): JsonObject,
    blueprint: &'static str,
) -> Result<Response, ApiError> {
    let bp = core.blueprint(blueprint).ok_or_else(|| ApiError::NotFound("Blueprint not found".into()))?;
    let initial_data = match body.get("initial_data") {
        Some(Value::Object(m)) => Value::Object(m.clone()),
        Some(Value::Null) => Value::Object(Map::new()),
        Some(_) => return Err(ApiError::bad("`initial_data` must be a JSON object")),
        None => Value::Object(
            body.iter()
                .filter(|(k, _)| !CREATE_OPTIONS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
    };
    let webhook_url = match body.get("webhook_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if u.starts_with("https://") && !cfg!(feature = "tls") => {
            return Err(ApiError::bad(
                "`webhook_url`: this orchestrator was built without https support (avto's `tls` feature)",
            ))
        }
        Some(Value::String(u)) if u.starts_with("http://") || u.starts_with("https://") => {
            crate::server::webhooks::check_target(u, core.config().webhook_allow_private)
                .await
                .map_err(|e| ApiError::bad(format!("`webhook_url`: {e}")))?;
            Some(u.clone())
        }
        Some(_) => return Err(ApiError::bad("`webhook_url` must be an http:// or https:// URL")),
    };
    let req = NewJob {
        initial_data,
        webhook_url,
        dispatch_timeout: opt_secs(&body, "dispatch_timeout", core.config().max_timeout)?,
        result_timeout: opt_secs(&body, "result_timeout", core.config().max_timeout)?,
        security: opt_object(&body, "security")?,
        metadata: opt_object(&body, "metadata")?,
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::trace::TraceParent::parse),
    };
    // Before the quota is charged: a refused job costs the client nothing.
    core.check_input(bp, &req.initial_data)?;
    super::auth::charge_quota(&core, &client).await?;
    let id = core.create_job(bp, req, &client).await?;
    Ok(json_status(StatusCode::ACCEPTED, &json!({"status": "accepted", "job_id": id})))
}

/// The status view of a job: compact by default, everything but internals when detailed.
pub(super) fn job_view(job: &Job, detailed: bool) -> Value {
    let terminal = job.status.is_terminal();
    let mut v = json!({
        "id": job.id,
        "status": job.status,
        "blueprint_name": job.blueprint,
        "current_state": job.current_state,
        "error_message": job.error_message,
        "waiting_reason": job.waiting_reason,
        "dispatch_deadline_ms": job.dispatch_deadline_ms().filter(|_| !terminal),
        "progress": job.progress,
        "progress_message": job.progress_message,
        "parent_job_id": job.parent_job_id,
        "child_job_id": job.sub_job.as_ref().map(|s| &s.child_job_id),
        "result": if terminal { job.result.clone() } else { None },
    });
    if detailed {
        let m = v.as_object_mut().unwrap();
        m.insert("initial_data".into(), job.initial_data.clone());
        m.insert("state_history".into(), Value::Object(job.state_history.clone()));
        m.insert("path".into(), json!(job.path));
        m.insert("retry_count".into(), json!(job.retry_count));
        m.insert("transition_count".into(), json!(job.transition_count));
        m.insert("last_error".into(), json!(job.last_error));
        m.insert("current_task".into(), json!(job.current_task.as_ref().map(|t| json!({"task_id": t.task_id, "type": t.spec.task_type, "worker_id": t.worker_id, "attempt": t.attempt}))));
        m.insert(
            "branches".into(),
            json!(job
                .branches
                .iter()
                .map(|t| json!({"task_id": t.task_id, "type": t.spec.task_type, "worker_id": t.worker_id}))
                .collect::<Vec<_>>()),
        );
        m.insert("aggregation_results".into(), json!(job.aggregation_results));
        m.insert("approval".into(), json!(job.approval));
        m.insert("webhook_url".into(), json!(job.webhook_url));
        m.insert("metadata".into(), json!(job.metadata));
        m.insert("data_metadata".into(), json!(job.data_metadata));
        m.insert("created_at_ms".into(), json!(job.created_at_ms));
        m.insert("updated_at_ms".into(), json!(job.updated_at_ms));
        if !terminal {
            m.remove("result");
        }
    }
    v
}

#[derive(Debug, Deserialize)]
struct StatusQuery {
    fields: Option<String>,
    detailed: Option<String>,
}

async fn job_status(
    State(core): State<Arc<Core>>,
    Client(client): Client,
    Path(job_id): Path<String>,
    Query(q): Query<StatusQuery>,
) -> Result<Response, ApiError> {
    check_job_id(&job_id)?;
    let job = match core.job(&job_id).await.map_err(storage)? {
        Some(j) if j.client.id == client.config.id => j,
        Some(_) => return Err(job_gone(&core)),
        None => removed_job(&core, &job_id, &client.config.id).await?.ok_or_else(|| job_gone(&core))?,
    };
    let detailed = flag(q.detailed.as_deref(), core.config().detailed_api_responses)?;
    let mut view = job_view(&job, detailed || q.fields.is_some());
    if let Some(fields) = q.fields {
        let wanted: Vec<&str> = fields.split(',').map(str::trim).filter(|f| !f.is_empty()).collect();
        let m = view.as_object_mut().unwrap();
        m.retain(|k, _| k == "id" || wanted.contains(&k.as_str()));
    }
    Ok(json_response(&view))
}

/// A `?detailed=` flag: `true`/`1`, `false`/`0`, or `default` when absent (400 otherwise).
fn flag(v: Option<&str>, default: bool) -> Result<bool, ApiError> {
    match v {
        None => Ok(default),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(ApiError::bad(format!("`detailed` must be true or false, not `{}`", truncate(other)))),
    }
}

/// The 404 of a job the client cannot see. Without retention the store has every job that ever
/// existed: "Job not found". With retention an unknown id and a removed job look alike (telling
/// them apart would need state per removed job, which retention exists to drop), so the message
/// names both.
fn job_gone(core: &Core) -> ApiError {
    let cfg = core.config();
    let mut why = Vec::new();
    if let Some(r) = cfg.job_retention {
        why.push(format!("terminal jobs are removed {} s after they end (JOB_RETENTION_SECONDS)", r.as_secs_f64()));
    }
    if cfg.max_retained_jobs > 0 && cfg.redis_url.is_none() {
        why.push(format!("at most {} terminal jobs are kept (MAX_RETAINED_JOBS)", cfg.max_retained_jobs));
    }
    if why.is_empty() {
        ApiError::NotFound("Job not found".into())
    } else {
        ApiError::NotFound(format!("Job not found (or expired: {})", why.join("; ")))
    }
}

/// A job the job store no longer has (retention removed it), as the history last saw it: the
/// snapshot of its newest row, when the history is enabled and the job is `client`'s.
async fn removed_job(core: &Core, job_id: &str, client: &str) -> Result<Option<Job>, ApiError> {
    let Some(h) = core.history() else { return Ok(None) };
    let rows = h.job_history(job_id).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let job = rows.iter().rev().find_map(|r| serde_json::from_value::<Job>(r.snapshot()?).ok());
    Ok(job.filter(|j| !client.is_empty() && j.client.id == client))
}

/// `GET .../jobs/{id}/history`: the job's history rows, oldest first, snapshots filtered like the
/// status view (`?detailed=`). 404 with an explanation when history is disabled.
async fn job_history(
    State(core): State<Arc<Core>>,
    Client(client): Client,
    Path(job_id): Path<String>,
    Query(q): Query<StatusQuery>,
) -> Result<Response, ApiError> {
    check_job_id(&job_id)?;
    let detailed = flag(q.detailed.as_deref(), core.config().detailed_api_responses)?;
    let owner = core.job(&job_id).await.map_err(storage)?.map(|j| j.client.id.clone());
    let rows = history_view(&core, &job_id, &client.config.id, owner.as_deref(), |j| job_view(j, detailed)).await?;
    Ok(json_response(&rows))
}

/// The client API answer of `GET .../jobs/{id}/history` for `client` (a client identity,
/// [`crate::ClientConfig::id`]). `owner` is the owner of the job in the job store (None when
/// the store no longer has it: then the job snapshots of the history rows tell the owner).
/// Other clients' jobs are 404, like unknown ones.
async fn history_view(
    core: &Core,
    job_id: &str,
    client: &str,
    owner: Option<&str>,
    view: impl Fn(&Job) -> Value,
) -> Result<Value, ApiError> {
    let h = core.history().ok_or_else(|| ApiError::NotFound(history::DISABLED_MESSAGE.into()))?;
    let rows = h.job_history(job_id).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let owner = owner
        .map(str::to_owned)
        .or_else(|| rows.iter().find_map(|r| r.snapshot()?.get("client")?.get("id")?.as_str().map(str::to_owned)));
    if client.is_empty() || owner.as_deref() != Some(client) {
        return Err(ApiError::NotFound("Job not found".into()));
    }
    let tz = core.config().tz;
    let list = rows
        .iter()
        .map(|r| {
            r.to_json(tz, |snap| match serde_json::from_value::<Job>(snap.clone()) {
                Ok(job) => view(&job),
                Err(_) => snap,
            })
        })
        .collect();
    Ok(Value::Array(list))
}

async fn cancel_job(
    State(core): State<Arc<Core>>,
    Client(client): Client,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    owned_job(&core, &client, &job_id).await?;
    core.cancel_job(&job_id).await?;
    Ok(json_response(&json!({"status": "cancellation_request_accepted", "job_id": job_id})))
}

/// `POST .../jobs/{id}/approval` with `{"decision": "approved"}`.
pub(super) async fn approve_job(
    State(core): State<Arc<Core>>,
    Client(client): Client,
    Path(job_id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let decision = match body.get("decision") {
        Some(Value::String(d)) if !d.is_empty() => d.clone(),
        Some(_) => return Err(ApiError::bad("decision must be a non-empty string")),
        None => return Err(ApiError::bad("decision is required in body")),
    };
    owned_job(&core, &client, &job_id).await?;
    core.approve(&job_id, &decision).await?;
    Ok(json_response(&json!({"status": "approval_received", "job_id": job_id})))
}

/// `?limit=` (default 100, at most 1000), `?offset=`, `?detailed=` of job lists.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    limit: Option<String>,
    offset: Option<String>,
    detailed: Option<String>,
}

impl ListQuery {
    /// (limit, offset, detailed), or a 400 naming the parameter that is not a number.
    fn page(&self) -> Result<(usize, usize, bool), ApiError> {
        let parse = |v: &Option<String>, default: usize, name: &str| -> Result<usize, ApiError> {
            match v {
                None => Ok(default),
                Some(s) => s
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad(format!("Invalid {name} parameter: expected a non-negative integer"))),
            }
        };
        let limit = parse(&self.limit, 100, "limit")?.min(1000);
        let offset = parse(&self.offset, 0, "offset")?;
        Ok((limit, offset, flag(self.detailed.as_deref(), false)?))
    }
}

async fn list_jobs(
    State(core): State<Arc<Core>>,
    Client(client): Client,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (limit, offset, detailed) = q.page()?;
    let jobs = core.list_jobs(&client.config.id, limit, offset).await.map_err(storage)?;
    let list: Vec<Value> = jobs.iter().map(|j| job_view(j, detailed)).collect();
    Ok(json_response(&Value::Array(list)))
}

/// `GET /_public/jobs/quarantined?limit=&offset=`: the client's quarantined jobs, most recently
/// quarantined first (the Python orchestrator lists every client's, without a token).
pub(super) async fn quarantined_jobs(
    State(core): State<Arc<Core>>,
    Client(client): Client,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (limit, offset, detailed) = q.page()?;
    let jobs = core.list_quarantined(&client.config.id, limit, offset).await.map_err(storage)?;
    let list: Vec<Value> = jobs.iter().map(|j| job_view(j, detailed)).collect();
    Ok(json_response(&Value::Array(list)))
}

async fn list_blueprints(State(core): State<Arc<Core>>, _client: Client) -> Response {
    let prefix = &core.config().client_api_prefix;
    let list: Vec<Value> = core
        .env()
        .blueprints()
        .map(|bp| {
            json!({
                "name": bp.name(),
                "api_version": bp.api_version(),
                "endpoint": bp.create_path().map(|p| format!("/{prefix}/{p}").replace("//", "/")),
                "start_state": bp.start_state(),
                "states": bp.states().iter().map(|s| s.name).collect::<Vec<_>>(),
                "input_schema": bp.input_schema(),
                "output_schema": bp.output_schema(),
                "events": bp.declared_events(),
                "events_schema": bp.events_schema(),
            })
        })
        .collect();
    json_response(&Value::Array(list))
}

async fn graph(State(core): State<Arc<Core>>, _client: Client, Path(name): Path<String>) -> Result<Response, ApiError> {
    let bp = core.blueprint(&name).ok_or_else(|| ApiError::NotFound("Blueprint not found".into()))?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("text/vnd.graphviz; charset=utf-8"))], bp.dot())
        .into_response())
}

/// `GET …/workers`: the live workers. With the operator credential (`ADMIN_TOKEN`) each
/// worker's whole registration (hostname, addresses, installed software, metadata, ...) minus
/// its security block; with a client token a summary (id, type, status, reputation, skill names,
/// load), so clients do not see what workers told the orchestrator about themselves.
async fn workers(State(core): State<Arc<Core>>, parts: Parts) -> Result<Response, ApiError> {
    let operator = match Operator::check(&parts, &core)? {
        Some(_) => true,
        None => {
            let mut parts = parts;
            Client::from_request_parts(&mut parts, &core).await?;
            false
        }
    };
    let list: Vec<Value> = core
        .live_workers()
        .await
        .into_iter()
        .map(|WorkerLoad { info: w, queued, running }| {
            let mut rec = if operator {
                let mut rec = w.record.clone();
                rec.remove("security");
                rec
            } else {
                let mut rec = Map::new();
                rec.insert("worker_id".into(), json!(w.worker_id));
                rec.insert("worker_type".into(), json!(w.worker_type));
                rec.insert("supported_skills".into(), json!(w.skills.iter().map(|s| &s.name).collect::<Vec<_>>()));
                rec
            };
            rec.insert("status".into(), json!(w.status));
            rec.insert("reputation".into(), json!(w.reputation));
            rec.insert("queued_tasks".into(), json!(queued));
            rec.insert("running_tasks".into(), json!(running));
            Value::Object(rec)
        })
        .collect();
    Ok(json_response(&Value::Array(list)))
}

/// `GET …/workers/catalog` (client credential): the skills live workers offer, with their
/// contracts (see [`Core::worker_catalog`]).
async fn worker_catalog(State(core): State<Arc<Core>>, _client: Client) -> Response {
    json_response(&*core.worker_catalog().await)
}

/// `POST …/admin/reload-workers` (operator credential): reads workers.toml (`WORKERS_CONFIG_PATH`)
/// again. 409 when no file is configured, 400 (and the old tokens kept) when it does not load.
async fn reload_workers(State(core): State<Arc<Core>>, _operator: Operator) -> Result<Response, ApiError> {
    let Some(n) = core.reload_worker_tokens().await.map_err(|e| ApiError::bad(e.to_string()))? else {
        return Err(ApiError::Conflict("WORKERS_CONFIG_PATH is not set: there is nothing to reload".into()));
    };
    Ok(json_response(&json!({"status": "workers_reloaded", "workers": n})))
}

async fn dashboard(State(core): State<Arc<Core>>, Client(client): Client) -> Result<Response, ApiError> {
    let counts = core.job_counts(Some(&client.config.id)).await.map_err(storage)?;
    let mut jobs = Map::new();
    jobs.insert("queued".into(), json!(core.queue_depth().await));
    for (status, n) in counts {
        jobs.insert(status.as_str().into(), json!(n));
    }
    let workers = core.live_worker_count().await;
    Ok(json_response(&json!({"workers": {"total": workers}, "jobs": jobs})))
}
