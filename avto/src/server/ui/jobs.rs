//! The jobs list, its count, cancelling every job of a filter, and the approvals inbox (the
//! storage's [`JobQuery`]: newest first, cursor paging, a client session limited to its jobs);
//! a job's graph (its blueprint laid out once by `avto-graph`, the job's path painted over it).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::job_row;
use super::session::UiUser;
use crate::job::{Job, JobStatus};
use crate::server::api::{ApiError, JsonObject, Path};
use crate::server::core::Core;
use crate::storage::{JobQuery, JOB_QUERY_MAX_LIMIT};

/// Rows per page when the page does not say.
const DEFAULT_LIMIT: usize = 50;
/// Query parameters read (anything else is ignored), each at most this long.
const MAX_PARAM: usize = 512;

type Params = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn params(p: Params) -> Result<HashMap<String, String>, ApiError> {
    let Query(map) = p.map_err(|e| ApiError::bad(format!("bad query string: {e}")))?;
    if map.len() > 16 || map.values().any(|v| v.len() > MAX_PARAM) {
        return Err(ApiError::bad(format!("at most 16 parameters of at most {MAX_PARAM} bytes")));
    }
    Ok(map)
}

fn ms(v: Option<&Value>, name: &str) -> Result<Option<u64>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            s.parse().map(Some).map_err(|_| ApiError::bad(format!("`{name}` must be milliseconds")))
        }
        Some(v) => v.as_u64().map(Some).ok_or_else(|| ApiError::bad(format!("`{name}` must be milliseconds"))),
    }
}

fn text(v: Option<&Value>, name: &str) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad(format!("`{name}` must be a string"))),
    }
}

fn statuses(v: Option<&Value>) -> Result<Vec<JobStatus>, ApiError> {
    let names: Vec<String> = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').filter(|x| !x.is_empty()).map(str::to_owned).collect(),
        Some(Value::Array(a)) => {
            a.iter().map(|x| x.as_str().map(str::to_owned)).collect::<Option<_>>().unwrap_or_default()
        }
        Some(_) => return Err(ApiError::bad("`status` must be a list of statuses")),
    };
    if names.len() > 16 {
        return Err(ApiError::bad("too many statuses"));
    }
    names
        .iter()
        .map(|n| JobStatus::parse(n).ok_or_else(|| ApiError::bad(format!("unknown status `{n:.40}`"))))
        .collect()
}

/// The filter of a list, a count or a bulk cancel, limited to the session's jobs.
fn query_of(user: &UiUser, f: &Map<String, Value>) -> Result<JobQuery, ApiError> {
    Ok(JobQuery {
        client: user.client_id().map(str::to_owned),
        statuses: statuses(f.get("status"))?,
        blueprint: text(f.get("blueprint"), "blueprint")?,
        created_from_ms: ms(f.get("from"), "from")?,
        created_to_ms: ms(f.get("to"), "to")?,
        id_prefix: text(f.get("q"), "q")?,
        ..JobQuery::default()
    })
}

fn page_query(user: &UiUser, p: &HashMap<String, String>) -> Result<JobQuery, ApiError> {
    let f: Map<String, Value> = p.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let mut q = query_of(user, &f)?;
    q.limit = match p.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse()
            .ok()
            .filter(|n| (1..=JOB_QUERY_MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad(format!("`limit` must be 1..={JOB_QUERY_MAX_LIMIT}")))?,
    };
    q.after = match p.get("after").filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(a.parse().map_err(|e: crate::storage::StorageError| ApiError::bad(e.to_string()))?),
    };
    Ok(q)
}

/// A storage error as the client API answers it (an invalid query is a 400).
fn storage(e: crate::storage::StorageError) -> ApiError {
    crate::server::core::CoreError::Storage(e).into()
}

/// `GET /ui/api/jobs?status=a,b&blueprint=..&from=ms&to=ms&q=prefix&after=cursor&limit=n`.
pub(super) async fn list(State(core): State<Arc<Core>>, user: UiUser, p: Params) -> Result<Json<Value>, ApiError> {
    let q = page_query(&user, &params(p)?)?;
    let page = core.query_jobs(&q).await.map_err(storage)?;
    let next = page.next.map(|c| c.to_string());
    Ok(Json(json!({"jobs": page.jobs.iter().map(job_row).collect::<Vec<_>>(), "next": next})))
}

/// `GET /ui/api/jobs/count?...` (the list's filters).
pub(super) async fn count(State(core): State<Arc<Core>>, user: UiUser, p: Params) -> Result<Json<Value>, ApiError> {
    let q = page_query(&user, &params(p)?)?;
    Ok(Json(json!({"count": core.count_jobs(&q).await.map_err(storage)?})))
}

/// `POST /ui/api/jobs/cancel {"filter": {status, blueprint, from, to, q}, "dry_run": bool}`.
pub(super) async fn cancel(
    State(core): State<Arc<Core>>,
    user: UiUser,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let filter = match body.get("filter") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(ApiError::bad("`filter` must be an object")),
    };
    let dry_run = match body.get("dry_run") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad("`dry_run` must be true or false")),
    };
    let q = JobQuery { limit: JOB_QUERY_MAX_LIMIT, ..query_of(&user, &filter)? };
    let done = core.cancel_matching(&q, dry_run).await?;
    Ok(Json(json!({"matched": done.matched, "cancelled": done.cancelled, "more": done.more})))
}

fn approval_row(job: &Job) -> Value {
    let mut row = job_row(job);
    row["approval"] = super::approval_view(job);
    row
}

/// `GET /ui/api/approvals?after=cursor`: the session's jobs waiting for a decision.
pub(super) async fn approvals(State(core): State<Arc<Core>>, user: UiUser, p: Params) -> Result<Json<Value>, ApiError> {
    let mut p = params(p)?;
    p.insert("status".into(), "waiting_for_human".into());
    let q = page_query(&user, &p)?;
    let page = core.query_jobs(&q).await.map_err(storage)?;
    let next = page.next.map(|c| c.to_string());
    Ok(Json(json!({"jobs": page.jobs.iter().map(approval_row).collect::<Vec<_>>(), "next": next})))
}

/// Each blueprint's graph laid out once (keyed by the blueprints the server was built with, so
/// bounded by them, never by request data).
fn layouts() -> &'static parking_lot::Mutex<HashMap<&'static str, Arc<avto_graph::Layout>>> {
    static LAYOUTS: std::sync::OnceLock<parking_lot::Mutex<HashMap<&'static str, Arc<avto_graph::Layout>>>> =
        std::sync::OnceLock::new();
    LAYOUTS.get_or_init(Default::default)
}

/// `GET /ui/api/jobs/{id}/graph.svg`: the job's blueprint with the path it took (`×n` on edges
/// taken more than once), visited states, and its current state marked by shape and colour.
pub(super) async fn graph(
    State(core): State<Arc<Core>>,
    user: UiUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = super::job::visible_job(&core, &user, &id).await?;
    let bp = core
        .blueprint(&job.blueprint)
        .ok_or_else(|| ApiError::NotFound(format!("blueprint `{:.100}` is not served here", job.blueprint)))?;
    let dot = bp.dot();
    let cached = layouts().lock().get(dot).cloned();
    let layout = match cached {
        Some(l) => l,
        None => {
            let laid = tokio::task::spawn_blocking(move || avto_graph::Layout::new(dot))
                .await
                .map_err(|e| ApiError::Unavailable(format!("graph layout: {e}")))?
                .map_err(|e| ApiError::Unavailable(format!("graph layout: {e}")))?;
            let laid = Arc::new(laid);
            layouts().lock().insert(dot, laid.clone());
            laid
        }
    };
    let overlay = avto_graph::Overlay::from_path(&job.path, Some(job.current_state.as_str()));
    let svg = layout.svg_with(&overlay);
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"))], svg).into_response())
}
