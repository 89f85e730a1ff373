//! Worker routes (`/_worker`), wire-compatible with Avtomatika's RXON protocol 1.0b17.
//!
//! Every request authenticates with a verified client certificate (HTTPS with `TLS_CA_PATH`;
//! its CN is the worker id) or with `X-Worker-Token` (an STS access token, an individual token
//! from workers.toml, or the global token), as `WORKER_AUTH_MODE` allows; every message body
//! (register, heartbeat, result, event) must be signed (HMAC-SHA256 over canonical JSON), carry a
//! timestamp within 60 s and must not be a replay. All authentication failures are 403 `{"error": ...}`.
//!
//! Two extensions serve avto's own worker SDK and are invisible to RXON workers: `max_tasks` on
//! `tasks/next` (several tasks per poll answer) and `POST /_worker/tasks/results` (several
//! results per request, each verified on its own).
//!
//! Messages are spelled by [`crate::protocol::wire`] both ways: a body is checked (timestamp,
//! nonce, signature) as sent, then read into its wire type, whose serde attributes say what the
//! orchestrator tolerates; answers are the wire answer types, written canonically.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{canonical_response, json_response, parse_object_within, read_body, ApiError, Routes};
use crate::engine::{self, ResultDisposition};
use crate::protocol::replay::{check_timestamp, message_nonce, message_timestamp, nonce_ttl, unix_now};
use crate::protocol::sign::{self, verify_security, MessageKind, ZeroTrustError};
use crate::protocol::wire::{
    response_status, EventResponse, Heartbeat, HeartbeatResponse, RefreshTokenRequest, RegisterResponse,
    ResultResponse, SecurityContext, StatusBody, TaskPayload, TaskResult, TokenResponse, WorkerEventPayload,
    WorkerRegistration,
};
use crate::protocol::{
    self, heartbeat_path, task_next_path, ws_path, AUTH_HEADER_WORKER, AUTH_HEADER_WORKER_ID, EVENT_TYPE_PROGRESS,
    MAX_RESULTS_PER_BATCH, MAX_TASKS_PER_POLL, PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER,
};
use crate::server::auth::{valid_worker_id, StsPair, WorkerIdentity, GLOBAL_WORKER_ID, STS_ACCESS_TTL};
use crate::server::config::WorkerAuthMode;
use crate::server::core::{Core, CoreError, TaskContext, WorkerEvent};
use crate::server::metrics::{reason, role};
use crate::server::ClientCertCn;
use crate::storage::{QueuedTask, WorkerInfo};

pub(super) fn routes() -> Routes {
    // The `{worker_id}` of the paths is axum's path parameter.
    let worker = "{worker_id}";
    let w = "worker";
    Routes::new()
        .on(Method::POST, protocol::ENDPOINT_WORKER_REGISTER, w, register)
        .on(Method::PATCH, &heartbeat_path(worker), w, heartbeat)
        .on(Method::PATCH, &format!("{}/status", heartbeat_path(worker)), w, heartbeat)
        .on(Method::GET, &task_next_path(worker), w, next_task)
        .on(Method::POST, protocol::ENDPOINT_TASK_RESULT, w, result)
        .on(Method::POST, protocol::ENDPOINT_TASK_RESULTS, w, results)
        .on(Method::POST, protocol::ENDPOINT_WORKER_EVENTS, w, event)
        .on(Method::POST, protocol::STS_TOKEN_ENDPOINT, w, sts_issue)
        .on(Method::POST, protocol::STS_REFRESH_ENDPOINT, w, sts_refresh)
        .on(Method::GET, &ws_path(worker), w, websocket)
}

/// Who sent a request, and the key their messages are signed with.
type Sender = WorkerIdentity;

fn forbidden(msg: impl Into<String>) -> ApiError {
    ApiError::Forbidden(msg.into())
}

/// A 403 for a message whose body names another worker than its credential (counted as
/// `worker_id_mismatch`).
fn sender_mismatch(core: &Core, msg: impl Into<String>) -> ApiError {
    core.auth().refused(role::WORKER, reason::WORKER_ID_MISMATCH);
    forbidden(msg)
}

/// A 403 for a request without the worker id it needs (counted as `missing_credentials`).
fn missing_worker_id(core: &Core, msg: &str) -> ApiError {
    core.auth().refused(role::WORKER, reason::MISSING_CREDENTIALS);
    forbidden(msg)
}

/// What a worker request authenticates with: its headers, and the CN of the verified client
/// certificate of its connection (HTTPS with `TLS_CA_PATH`; a request extension, never a header).
struct Credentials {
    /// `X-Worker-Token`, `X-Worker-ID` and the protocol version header (their first values;
    /// a header value shares the request's bytes, so keeping these three copies nothing).
    token: Option<HeaderValue>,
    id: Option<HeaderValue>,
    version: Option<HeaderValue>,
    cn: Option<String>,
    /// The rate-limit identity of the peer (its IP address, IPv6 by /64), charged for failures.
    peer: String,
}

impl Credentials {
    fn of(parts: &axum::http::request::Parts) -> Credentials {
        let cn = parts.extensions.get::<ClientCertCn>().and_then(|c| c.0.clone());
        let header = |name: &str| parts.headers.get(name).cloned();
        Credentials {
            token: header(AUTH_HEADER_WORKER),
            id: header(AUTH_HEADER_WORKER_ID),
            version: header(PROTOCOL_VERSION_HEADER),
            cn,
            peer: super::peer_key(&parts.extensions),
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Credentials {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Credentials::of(parts))
    }
}

/// Authenticates a worker request. `hint` is the worker id the request claims. Order (RXON,
/// `WORKER_AUTH_MODE`): a verified client certificate names the worker (unless token-only);
/// else an STS access token; else (unless mtls-only) an individual or the global token.
///
/// A request that fails counts against its peer's address like an unauthenticated client request
/// (`RATE_LIMIT_LIMIT` per `RATE_LIMIT_PERIOD`, one key per address): past it the answer is 429,
/// so guessing tokens (and the STS lookups it costs) is bounded per address.
async fn authenticate(core: &Core, creds: &Credentials, hint: Option<&str>) -> Result<Sender, ApiError> {
    match identify(core, creds, hint).await {
        Err(refused @ (ApiError::Forbidden(_) | ApiError::Unauthorized(_))) => {
            super::auth::rate_limit(core, &format!("anon:{}", creds.peer), "ip", "rxon:auth").await?;
            Err(refused)
        }
        other => other,
    }
}

/// Who a worker request is from (see [`authenticate`] and [`crate::server::auth::Auth::identify_worker`]), without
/// charging failures.
async fn identify(core: &Core, creds: &Credentials, hint: Option<&str>) -> Result<Sender, ApiError> {
    let token = creds.token.as_ref().and_then(|v| v.to_str().ok());
    Ok(core.auth().identify_worker(creds.cn.as_deref(), token, hint).await?)
}

fn header_id(creds: &Credentials) -> Option<&str> {
    creds.id.as_ref().and_then(|v| v.to_str().ok()).filter(|s| !s.is_empty())
}

async fn rate_limit(core: &Core, sender: &Sender, kind: &str) -> Result<(), ApiError> {
    if !core.config().rate_limiting_enabled {
        return Ok(());
    }
    let limit = match kind {
        "poll" => core.config().rate_limit_poll,
        "heartbeat" => core.config().rate_limit_heartbeat,
        _ => core.config().rate_limit,
    };
    let key = format!("worker:{}:{kind}", sender.worker_id);
    match core.rate_hit(&key, Some(limit)).await {
        Ok(Err(wait)) => {
            core.metrics().rate_limited("worker", &format!("rxon:{kind}"));
            Err(ApiError::TooManyRequests { message: "Too Many Requests".into(), retry_after_secs: wait.as_secs() + 1 })
        }
        _ => Ok(()),
    }
}

/// Zero-trust checks of a message body: timestamp window, replay nonce, signature.
/// A nonce is kept for as long as the message's timestamp would still be accepted. Every
/// refusal is counted (`avto_security_replay_detected_total`, `avto_security_auth_failures_total`).
async fn verify(core: &Core, sender: &Sender, body: &Value, kind: MessageKind) -> Result<(), ApiError> {
    if let Some((key, ttl)) = verify_signed(core, sender, body, kind)? {
        let fresh = core.first_use_nonce(&key, ttl).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
        if !fresh {
            return Err(replayed(core));
        }
    }
    Ok(())
}

/// [`verify`] without the replay check: the message's nonce key and how long to keep it, if it
/// has one, for the caller to record (a result records it with its job lock: one store step).
fn verify_signed(
    core: &Core,
    sender: &Sender,
    body: &Value,
    kind: MessageKind,
) -> Result<Option<(String, std::time::Duration)>, ApiError> {
    let refused = |e: ZeroTrustError| {
        core.metrics().security().message_refused(&e);
        forbidden(e.to_string())
    };
    let now = unix_now();
    check_timestamp(body, now).map_err(refused)?;
    verify_security(body, &sender.key, &sender.worker_id, kind).map_err(refused)?;
    Ok(message_nonce(body).map(|nonce| {
        let ttl = match message_timestamp(body) {
            Some(Ok(ts)) => nonce_ttl(ts, now),
            _ => crate::protocol::replay::NONCE_TTL,
        };
        (format!("{}:{nonce}", sender.worker_id), ttl)
    }))
}

/// The refusal of a message whose nonce was seen before (counted).
fn replayed(core: &Core) -> ApiError {
    let e = ZeroTrustError::Duplicate;
    core.metrics().security().message_refused(&e);
    forbidden(e.to_string())
}

async fn body_object(req: Request, core: &Core) -> Result<(Credentials, Map<String, Value>), ApiError> {
    let (parts, body) = req.into_parts();
    let creds = Credentials::of(&parts);
    let bytes = read_body(Request::from_parts(parts, body), core.config()).await?;
    Ok((creds, parse_object_within(&bytes, core.config().max_json_depth)?))
}

/// The `worker_id` a message body claims.
fn body_worker_id(body: &Map<String, Value>) -> Option<String> {
    body.get("worker_id").and_then(Value::as_str).map(str::to_owned)
}

/// Reads a message body and authenticates its sender before judging the body, so a request that
/// fails authentication is a 403 whatever its body (a malformed one too). A request with no
/// credential at all is refused before its body is read. The worker id the request claims is
/// `X-Worker-ID`, else the one `claimed` finds in the body when it parses.
async fn authenticated_body(
    req: Request,
    core: &Core,
    claimed: impl Fn(&Map<String, Value>) -> Option<String>,
) -> Result<(Credentials, Sender, Map<String, Value>), ApiError> {
    let (parts, body) = req.into_parts();
    let creds = Credentials::of(&parts);
    let certificate = creds.cn.is_some() && core.config().worker_auth_mode != WorkerAuthMode::TokenOnly;
    let token = creds.token.as_ref().is_some_and(|t| !t.is_empty());
    if !certificate && !token {
        authenticate(core, &creds, None).await?; // refuses: no credential
    }
    let bytes = read_body(Request::from_parts(parts, body), core.config()).await?;
    let parsed = parse_object_within(&bytes, core.config().max_json_depth);
    let hint = header_id(&creds).map(str::to_owned).or_else(|| parsed.as_ref().ok().and_then(&claimed));
    let sender = authenticate(core, &creds, hint.as_deref()).await?;
    Ok((creds, sender, parsed?))
}

/// Reads a verified message body into its wire type: 400 (with the wire type's message) when a
/// field the orchestrator acts on is wrong; see [`crate::protocol::wire`] for what it tolerates.
fn read<'a, T: Deserialize<'a>>(body: &'a Value) -> Result<T, ApiError> {
    T::deserialize(body).map_err(|e| ApiError::bad(e.to_string()))
}

/// [`read`] of a body no longer needed as a value: its strings and objects move into the wire
/// type instead of being copied (the same answers).
fn read_owned<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, ApiError> {
    T::deserialize(body).map_err(|e| ApiError::bad(e.to_string()))
}

/// A wire answer, written canonically like every JSON answer ([`json_response`]).
fn wire_response<T: Serialize>(answer: &T) -> Response {
    json_response(&serde_json::to_value(answer).expect("wire answers serialise"))
}

async fn register(State(core): State<Arc<Core>>, req: Request) -> Result<Response, ApiError> {
    let (creds, sender, body) = authenticated_body(req, &core, body_worker_id).await?;
    rate_limit(&core, &sender, "register").await?;
    let body = Value::Object(body);
    verify(&core, &sender, &body, MessageKind::Registration).await?;
    let registration: WorkerRegistration = read(&body)?;
    let worker_id = registration.worker_id.as_str();
    if worker_id.is_empty() {
        return Err(ApiError::bad("worker_id is required"));
    }
    if worker_id != sender.worker_id {
        let msg = format!("Immediate sender ID mismatch: body says {worker_id}, credentials say {}", sender.worker_id);
        return Err(sender_mismatch(&core, msg));
    }
    if !valid_worker_id(worker_id) {
        return Err(ApiError::bad("Invalid worker_id: expected 1-128 characters of [A-Za-z0-9_-]"));
    }
    if registration.supported_skills.iter().flatten().any(|skill| !valid_worker_id(&skill.name)) {
        return Err(ApiError::bad(protocol::lenient::SKILL_NAME_REQUIRED));
    }
    // Task contracts: every schema must compile within the bounds (400 naming the skill).
    core.admit_skill_contracts(body.get("supported_skills")).map_err(ApiError::bad)?;
    // The record keeps the registration as sent (`GET /workers`); dispatch reads its view of it.
    core.register_worker(WorkerInfo::from_registration(&body)).await?;
    tracing::info!(worker_id, "worker registered");
    let mut answer = RegisterResponse::registered();
    let mut warnings = Vec::new();
    let version = creds.version.as_ref().and_then(|v| v.to_str().ok());
    if version.is_some_and(|v| v != PROTOCOL_VERSION) {
        warnings.push(format!("protocol version mismatch: orchestrator speaks {PROTOCOL_VERSION}"));
    }
    if let Some(mismatch) = core.s3_mismatch(registration.capabilities.as_ref()) {
        tracing::warn!(worker_id, "{mismatch}");
        warnings.push(mismatch);
    }
    if !warnings.is_empty() {
        answer.warning = Some(warnings.join("; "));
    }
    Ok(wire_response(&answer))
}

async fn heartbeat(
    State(core): State<Arc<Core>>,
    Path(worker_id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let creds = Credentials::of(&parts);
    let req = Request::from_parts(parts, body);
    let sender = authenticate(&core, &creds, Some(&worker_id)).await?;
    rate_limit(&core, &sender, "heartbeat").await?;
    let bytes = read_body(req, core.config()).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(match core.heartbeat(&worker_id, None).await? {
            Some(_) => wire_response(&StatusBody::new(response_status::TTL_REFRESHED)),
            None => not_registered(&worker_id).into_response(),
        });
    }
    let body = Value::Object(parse_object_within(&bytes, core.config().max_json_depth)?);
    verify(&core, &sender, &body, MessageKind::Heartbeat).await?;
    let heartbeat: Heartbeat = read(&body)?;
    // An empty id: the body claims none (the path names the worker).
    if !heartbeat.worker_id.is_empty() && heartbeat.worker_id != worker_id {
        return Err(sender_mismatch(&core, "Immediate sender ID mismatch"));
    }
    core.admit_skill_contracts(body.get("supported_skills")).map_err(ApiError::bad)?;
    // The record merges the heartbeat as sent (`GET /workers`).
    let Some(cancel) = core.heartbeat(&worker_id, Some(&body)).await? else {
        return Err(not_registered(&worker_id));
    };
    let mut answer = HeartbeatResponse { cancel_task_ids: cancel, ..HeartbeatResponse::ok() };
    if heartbeat.skills_hash.is_some() {
        answer.require_full_sync = core.worker(&worker_id).await.is_some_and(|w| w.skills.is_empty());
    }
    Ok(wire_response(&answer))
}

fn not_registered(worker_id: &str) -> ApiError {
    ApiError::NotFound(format!("Worker {worker_id} not found: register again"))
}

/// `max_tasks=N` from the poll's query: `None` when absent (the RXON answer, one task), else
/// 1..=[`MAX_TASKS_PER_POLL`] (the batch answer `{"tasks": [...]}`). The Python orchestrator
/// ignores the parameter and answers one task, which avto's worker SDK also understands.
fn max_tasks(query: Option<&str>) -> Result<Option<usize>, ApiError> {
    let Some(raw) = query.into_iter().flat_map(|q| q.split('&')).find_map(|kv| kv.strip_prefix("max_tasks=")) else {
        return Ok(None);
    };
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_TASKS_PER_POLL).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::bad(format!("max_tasks must be an integer from 1 to {MAX_TASKS_PER_POLL}"))),
    }
}

async fn next_task(
    State(core): State<Arc<Core>>,
    Path(worker_id): Path<String>,
    RawQuery(query): RawQuery,
    creds: Credentials,
) -> Result<Response, ApiError> {
    let batch = max_tasks(query.as_deref())?;
    let sender = authenticate(&core, &creds, Some(&worker_id)).await?;
    rate_limit(&core, &sender, "poll").await?;
    if !core.worker_is_live(&worker_id).await {
        return Err(not_registered(&worker_id));
    }
    let tasks = core.next_tasks(&worker_id, core.config().worker_poll_timeout, batch.unwrap_or(1)).await?;
    if tasks.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    core.metrics().poll_answered(tasks.len());
    let mut payloads = tasks.into_iter().map(|(task, job)| task_payload(&core, task, job));
    match batch {
        None => Ok(canonical_response(payloads.next().expect("one task"))),
        // `{"tasks": [...]}` in canonical form: its one member, the payloads in order.
        Some(_) => {
            let mut body = br#"{"tasks":["#.to_vec();
            for (i, payload) in payloads.enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&payload);
            }
            body.extend_from_slice(b"]}");
            Ok(canonical_response(body))
        }
    }
}

/// The signed [`TaskPayload`] of a task handed to a worker, in canonical form (the answer's
/// bytes), with its `sig` over the payload as it goes out, except `skill_version` and
/// `skill_type`, added after signing as Avtomatika does (they are not fields of rxon's
/// `TaskPayload`, over which the Python SDK checks `sig`). The members `sig` covers are written
/// once, for the signature and the answer alike.
///
/// Two values go out as the job has them rather than typed: `params` that are not an object (a
/// blueprint may dispatch any value; the SDKs refuse such a task, as they always have) and the
/// job's `security`, the client's object (forwarded with all its keys, which the wire
/// `SecurityContext` would not keep; the task signature does not cover it).
fn task_payload(core: &Core, task: QueuedTask, job: TaskContext) -> Vec<u8> {
    let QueuedTask { job_id, task_id, spec, priority, deadline_ms, .. } = task;
    let mut payload = TaskPayload::new(job_id, task_id, spec.task_type);
    payload.params_metadata = Some(job.params_metadata).filter(|m| !m.is_empty());
    let mut as_given = Map::new();
    match spec.params {
        Value::Object(params) => payload.params = Some(params),
        Value::Null => {}
        other => {
            as_given.insert("params".into(), other);
        }
    }
    match job.metadata {
        Some(Value::Object(metadata)) => payload.metadata = Some(metadata),
        None | Some(Value::Null) => {}
        Some(other) => {
            as_given.insert("metadata".into(), other);
        }
    }
    if let Some(security) = job.security {
        as_given.insert("security".into(), security);
    }
    payload.priority = priority;
    payload.timestamp = Some(unix_now());
    payload.tracing_context = Some(job.tracing_context);
    payload.step = job.step.into();
    // Whole seconds (the canonical writer sends an integral float as an integer).
    payload.deadline = deadline_ms.map(|ms| (ms / 1000) as f64);
    let Value::Object(mut map) = serde_json::to_value(&payload).expect("a task payload serialises") else {
        unreachable!("a task payload is an object")
    };
    map.extend(as_given);
    let after = [("skill_version", spec.skill_version), ("skill_type", spec.skill_type)];
    let after = after.into_iter().filter_map(|(k, v)| Some((k, Value::String(v?)))).collect();
    sign::signed_task_canonical(&map, &core.config().secret_key, after)
}

async fn result(State(core): State<Arc<Core>>, req: Request) -> Result<Response, ApiError> {
    let (_, sender, body) = authenticated_body(req, &core, body_worker_id).await?;
    rate_limit(&core, &sender, "result").await?;
    core.metrics().results_received(1);
    Ok(wire_response(&process_result(&core, &sender, Value::Object(body)).await?))
}

/// `POST /_worker/tasks/results` (an avto extension): `{"results": [result, ...]}`, each result
/// exactly the body of `POST /_worker/tasks/result`, signed on its own (timestamp, nonce,
/// signature). Answers `{"results": [answer, ...]}` in the same order, where an answer is what the
/// single endpoint answers, or `{"error": message, "http_status": code}` for a result it would
/// refuse: one bad result does not refuse the others. avto's worker SDK batches results this
/// way only after an orchestrator answered a batch poll (so never against the Python one).
async fn results(State(core): State<Arc<Core>>, req: Request) -> Result<Response, ApiError> {
    let first_worker_id = |b: &Map<String, Value>| {
        b.get("results")?.as_array()?.iter().find_map(|r| r.get("worker_id").and_then(Value::as_str).map(str::to_owned))
    };
    let (_, sender, mut body) = authenticated_body(req, &core, first_worker_id).await?;
    let items = match body.remove("results") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_RESULTS_PER_BATCH => items,
        _ => {
            return Err(ApiError::bad(format!(
                "`results` must be a list of 1 to {MAX_RESULTS_PER_BATCH} result objects"
            )))
        }
    };
    rate_limit(&core, &sender, "result").await?;
    core.metrics().results_received(items.len());
    // The results are applied concurrently, as if each came in a request of its own: their
    // storage steps go out together (on Redis, one write for several scripts instead of one
    // round trip after another), and results of one job take its lock in turn.
    let answers = futures::future::join_all(items.into_iter().map(|item| {
        let (core, sender) = (&core, &sender);
        async move {
            let answer = match item {
                Value::Object(_) => process_result(core, sender, item).await,
                _ => Err(ApiError::bad("each result must be an object")),
            };
            match answer {
                Ok(answer) => serde_json::to_value(answer).expect("wire answers serialise"),
                Err(e) => json!({"error": e.to_string(), "http_status": e.status().as_u16()}),
            }
        }
    }))
    .await;
    Ok(json_response(&json!({ "results": answers })))
}

/// One task result (the body of `POST /_worker/tasks/result`): verified, read, then applied.
async fn process_result(core: &Arc<Core>, sender: &Sender, body: Value) -> Result<ResultResponse, ApiError> {
    // The nonce is recorded with the job's lock (one store step), after the checks below.
    let nonce = verify_signed(core, sender, &body, MessageKind::Result)?;
    let result: TaskResult = read_owned(body)?;
    for (name, value) in [("job_id", &result.job_id), ("task_id", &result.task_id)] {
        if value.is_empty() {
            return Err(ApiError::bad(format!("`{name}` is required (a non-empty string)")));
        }
    }
    if let Some(w) = result.worker_id.as_deref().filter(|w| *w != sender.worker_id) {
        return Err(sender_mismatch(core, format!("Immediate sender ID mismatch: result signed for {w}")));
    }
    let job_id = result.job_id.clone();
    let nonce = nonce.as_ref().map(|(key, ttl)| (key.as_str(), *ttl));
    let answer = match core.submit_result(&sender.worker_id, &job_id, engine_input(result, sender), nonce).await? {
        Some(ResultDisposition::Accepted(transition)) => ResultResponse::accepted(transition),
        Some(ResultDisposition::Ignored { reason, message }) => ResultResponse::ignored(reason.as_str(), message),
        None => return Err(replayed(core)),
    };
    Ok(answer)
}

/// The engine's input from a worker's result: the lease holder is the authenticated sender (the
/// body's `worker_id` was checked to be the same or absent), and an absent `data` is empty. The
/// security context goes without its `signature` (that of this message, checked already). The
/// rest of the message (job id, costs, origin, ...) is the server's business.
fn engine_input(result: TaskResult, sender: &Sender) -> engine::TaskResult {
    let security = result
        .security
        .map(|s| SecurityContext { signature: None, ..s })
        .filter(|s| *s != SecurityContext::default())
        .map(|s| serde_json::to_value(s).expect("a security context serialises"));
    engine::TaskResult {
        task_id: result.task_id,
        worker_id: Some(sender.worker_id.clone()),
        status: result.status,
        data: Value::Object(result.data.unwrap_or_default()),
        error: result.error,
        data_metadata: result.data_metadata.unwrap_or_default(),
        security,
        metadata: result.metadata,
        timestamp: result.timestamp,
    }
}

async fn process_event(core: &Arc<Core>, sender: &Sender, body: Value) -> Result<EventResponse, ApiError> {
    verify(core, sender, &body, MessageKind::Event).await?;
    let event: WorkerEventPayload = read(&body)?;
    let event_type = event.event_type.as_str();
    if event_type.is_empty() {
        return Err(ApiError::bad("event_type is required"));
    }
    for (name, value) in [("event_type", event_type), ("origin_worker_id", event.origin_worker_id.as_str())]
        .into_iter()
        .chain(event.target_job_id.as_deref().map(|v| ("target_job_id", v)))
        .chain(event.target_task_id.as_deref().map(|v| ("target_task_id", v)))
        .chain(event.origin_task_id.as_deref().map(|v| ("origin_task_id", v)))
    {
        if value.len() > protocol::MAX_IDENTIFIER_LEN {
            return Err(ApiError::bad(format!("`{name}` is longer than {} bytes", protocol::MAX_IDENTIFIER_LEN)));
        }
    }
    if event_type == EVENT_TYPE_PROGRESS {
        let max = core.config().progress_message_max_bytes;
        match event.payload.get("message") {
            None | Some(Value::Null) => {}
            Some(Value::String(m)) if m.len() <= max => {}
            Some(Value::String(_)) => {
                return Err(ApiError::bad(format!(
                    "`payload.message` is longer than {max} bytes (MAX_PROGRESS_MESSAGE_BYTES)"
                )))
            }
            Some(_) => return Err(ApiError::bad("`payload.message` must be a string")),
        }
    }
    let bubbling_chain = bubbling_chain(&body, &event.origin_worker_id, &sender.worker_id)?;
    // A missing or null payload reaches the engine as null, as sent (an event transition then
    // records no `event_<type>` entry), not as the empty object the wire type reads it as.
    let sent = body.get("payload").is_some_and(Value::is_object);
    let event = WorkerEvent {
        task_id: event.target_task_id.or(event.origin_task_id),
        payload: if sent { Value::Object(event.payload) } else { Value::Null },
        // No job: the event is only recorded (no job is touched).
        job_id: event.target_job_id.filter(|j| !j.is_empty()),
        event_id: event.event_id,
        event_type: event.event_type,
        origin_worker_id: event.origin_worker_id,
        bubbling_chain,
    };
    match core.worker_event(&sender.worker_id, &event).await {
        Ok(()) => Ok(EventResponse::accepted()),
        // RXON: a payload breaking the skill's events_schema is answered 200 with an error body.
        Err(CoreError::EventContract(message)) => Ok(EventResponse::error(protocol::CONTRACT_VIOLATION_ERROR, message)),
        Err(e) => Err(e.into()),
    }
}

/// The event's `bubbling_chain` (absent or null: empty) with the authenticated `sender` appended
/// unless it is already there or is the event's origin. A chain that is not a list of worker ids
/// of at most [`protocol::MAX_IDENTIFIER_LEN`] bytes, or that would hold more than
/// [`protocol::MAX_BUBBLING_CHAIN`] of them, is refused (400).
fn bubbling_chain(body: &Value, origin: &str, sender: &str) -> Result<Vec<String>, ApiError> {
    let max = protocol::MAX_BUBBLING_CHAIN;
    let mut chain = match body.get("bubbling_chain") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) if ids.len() <= max => ids
            .iter()
            .map(|id| match id {
                Value::String(id) if !id.is_empty() && id.len() <= protocol::MAX_IDENTIFIER_LEN => Ok(id.clone()),
                _ => Err(ApiError::bad(format!(
                    "`bubbling_chain` must be a list of worker ids (strings of 1 to {} bytes)",
                    protocol::MAX_IDENTIFIER_LEN
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(_)) => {
            return Err(ApiError::bad(format!("`bubbling_chain` holds more than {max} worker ids")))
        }
        Some(_) => return Err(ApiError::bad("`bubbling_chain` must be a list of worker ids")),
    };
    if sender != origin && !chain.iter().any(|id| id == sender) {
        if chain.len() == max {
            return Err(ApiError::bad(format!(
                "`bubbling_chain` holds {max} worker ids: no room for the sender's (at most {max})"
            )));
        }
        chain.push(sender.to_owned());
    }
    Ok(chain)
}

async fn event(State(core): State<Arc<Core>>, req: Request) -> Result<Response, ApiError> {
    let (_, sender, body) = authenticated_body(req, &core, body_worker_id).await?;
    rate_limit(&core, &sender, "event").await?;
    Ok(wire_response(&process_event(&core, &sender, Value::Object(body)).await?))
}

fn sts_answer(worker_id: &str, pair: StsPair) -> TokenResponse {
    TokenResponse {
        access_token: pair.access,
        refresh_token: Some(pair.refresh),
        expires_in: i64::try_from(STS_ACCESS_TTL.as_secs()).unwrap_or(i64::MAX),
        worker_id: worker_id.to_owned(),
        metadata: None,
    }
}

async fn sts_issue(State(core): State<Arc<Core>>, creds: Credentials) -> Result<Response, ApiError> {
    let sender = authenticate(&core, &creds, header_id(&creds)).await?;
    if sender.worker_id == GLOBAL_WORKER_ID {
        return Err(missing_worker_id(&core, "Unauthorized: X-Worker-ID is required to issue a token"));
    }
    rate_limit(&core, &sender, "sts").await?;
    let pair = core.auth().issue_sts(&sender.worker_id).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(wire_response(&sts_answer(&sender.worker_id, pair)))
}

async fn sts_refresh(State(core): State<Arc<Core>>, req: Request) -> Result<Response, ApiError> {
    let (creds, body) = body_object(req, &core).await?;
    let worker_id = header_id(&creds)
        .ok_or_else(|| missing_worker_id(&core, "Unauthorized: X-Worker-ID header is required"))?
        .to_owned();
    let request = RefreshTokenRequest::deserialize(Value::Object(body))
        .map_err(|_| ApiError::bad("refresh_token is required"))?;
    let pair = core.auth().refresh_sts(&worker_id, &request.refresh_token).await?;
    Ok(wire_response(&sts_answer(&worker_id, pair)))
}

async fn websocket(
    State(core): State<Arc<Core>>,
    Path(worker_id): Path<String>,
    creds: Credentials,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let sender = authenticate(&core, &creds, Some(&worker_id)).await?;
    rate_limit(&core, &sender, "websocket").await?;
    // A frame or message larger than a request body is refused (the connection closes), like a body.
    let max = core.config().max_body_bytes;
    Ok(ws.max_message_size(max).max_frame_size(max).on_upgrade(move |socket| ws_session(core, sender, socket)))
}

/// How long a close frame may take to go out before the session ends anyway.
const CLOSE_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends `msg` unless the peer does not take it within `within` (it stopped reading): a peer can
/// never block its session. `false` when the frame did not go out.
async fn send_within(socket: &mut WebSocket, msg: Message, within: std::time::Duration) -> bool {
    matches!(tokio::time::timeout(within, socket.send(msg)).await, Ok(Ok(())))
}

async fn ws_session(core: Arc<Core>, sender: Sender, mut socket: WebSocket) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    if core.worker(&sender.worker_id).await.is_none() {
        let _ = socket.send(Message::Close(None)).await;
        return;
    }
    core.attach_ws(&sender.worker_id, tx.clone());
    // Events over the socket share the rate limit of `POST /_worker/events`; one over the limit is
    // dropped (logged once per run of refusals, so a flood does not flood the log either).
    let mut limited = false;
    // Every wait has an end: the socket is pinged every half HTTP_IDLE_TIMEOUT_SECONDS (WebSocket
    // clients answer pings on their own), and one that has sent nothing, not even a pong, for
    // HTTP_IDLE_TIMEOUT_SECONDS is closed, so a vanished peer does not hold its connection slot.
    let idle = core.config().http_idle_timeout;
    let mut heard = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(heard + idle / 2, idle / 2);
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if heard.elapsed() >= idle {
                    tracing::info!(worker_id = %sender.worker_id, "websocket closed: nothing heard within HTTP_IDLE_TIMEOUT_SECONDS");
                    let close = axum::extract::ws::CloseFrame { code: 1001, reason: "idle".into() };
                    send_within(&mut socket, Message::Close(Some(close)), CLOSE_WITHIN).await;
                    break;
                }
                if !send_within(&mut socket, Message::Ping(Default::default()), idle).await {
                    break;
                }
            }
            _ = core.shutting_down() => {
                let close = axum::extract::ws::CloseFrame { code: 1001, reason: "orchestrator shutting down".into() };
                send_within(&mut socket, Message::Close(Some(close)), CLOSE_WITHIN).await;
                break;
            }
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let frame = protocol::to_canonical_string_of(&cmd).expect("a command serialises");
                let text = Message::Text(frame.into());
                if !send_within(&mut socket, text, idle).await {
                    break;
                }
            }
            msg = socket.recv() => {
                heard = tokio::time::Instant::now();
                match msg {
                    Some(Ok(Message::Text(text))) => {
                        if let Err(e) = rate_limit(&core, &sender, "event").await {
                            if !std::mem::replace(&mut limited, true) {
                                tracing::warn!(worker_id = %sender.worker_id, error = %e, "websocket events dropped: rate limit");
                            }
                            continue;
                        }
                        limited = false;
                        match parse_object_within(text.as_bytes(), core.config().max_json_depth).map(Value::Object) {
                            Ok(body) => {
                                match process_event(&core, &sender, body).await {
                                    Ok(answer) if answer.status != response_status::EVENT_ACCEPTED => {
                                        tracing::warn!(worker_id = %sender.worker_id, answer = ?answer.extra, "websocket event refused")
                                    }
                                    Ok(_) => {}
                                    // An event that arrives after its job ended (a progress frame
                                    // overtaken by the task's result over HTTP) is expected.
                                    Err(e) if e.status() == axum::http::StatusCode::CONFLICT => {
                                        tracing::debug!(worker_id = %sender.worker_id, error = %e, "websocket event for an ended job ignored")
                                    }
                                    Err(e) => tracing::warn!(worker_id = %sender.worker_id, error = %e, "websocket event rejected"),
                                }
                            }
                            Err(e) => tracing::warn!(worker_id = %sender.worker_id, error = %e, "websocket frame refused"),
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
    }
    core.detach_ws(&sender.worker_id, &tx);
}

#[cfg(test)]
mod tests;
