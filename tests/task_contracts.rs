//! Task contracts (issue #15 item 2): typed `#[avto::task]` functions publish their params and
//! output schemas; the orchestrator checks params before dispatch, result data against the
//! skill's `output_schema` (a violation quarantines the job and costs the worker 0.2 of
//! reputation) and event payloads against its `events_schema`, for any worker; a blueprint
//! dispatches by `TaskContract`, so it and a Rust worker cannot disagree on types.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use avto::prelude::*;
use avto::protocol::sign::MessageKind;
use avto::worker::{Skill, TaskHandle, TaskOutcome};
use avto::TaskContract;
use avto_tests::blueprints::{echo_flow, echo_strict};
use avto_tests::{RawWorker, RustWorker, Server};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResizeParams {
    pub url: String,
    pub width: u32,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Resized {
    pub url: String,
    pub width: u32,
}

/// The contract both sides share.
pub struct Resize;

impl TaskContract for Resize {
    const NAME: &'static str = "resize";
    type Params = ResizeParams;
    type Output = Resized;
}

/// Resizes (the contract's implementation: other types would not compile).
#[avto::task(contract = Resize)]
async fn resize(p: ResizeParams, _task: TaskHandle) -> Result<Resized, avto::TaskError> {
    Ok(Resized { url: format!("{}?w={}", p.url, p.width), width: p.width })
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct Describe {
    pub text: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Description {
    pub words: usize,
}

/// Counts words (typed without a contract: the schemas come from the function's types).
#[avto::task("describe")]
async fn describe(p: Describe) -> Result<Description, avto::TaskError> {
    Ok(Description { words: p.text.split_whitespace().count() })
}

/// Untyped: `{"type": "object"}` and no output schema, like the Python SDK's `dict`.
#[avto::task]
async fn loose(params: Value) -> Value {
    json!({"echo": params})
}

#[avto::blueprint(name = "typed_resize", api_version = "v1", api_endpoint = "jobs/typed_resize")]
pub mod typed_resize {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        let width = ctx.initial_data["width"].as_u64().unwrap_or(0) as u32;
        actions
            .dispatch::<Resize>(ResizeParams { url: "s3://img".into(), width })
            .transitions([("success", "done"), ("failure", "failed")]);
    }

    #[handler(state = "done")]
    async fn done(ctx: &Context, actions: &mut Actions) {
        let out = ctx.task_output::<Resize>().expect("a typed output");
        actions.update_context("seen_width", out.width);
        actions.transition_to("finished");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}

#[test]
fn typed_tasks_publish_their_schemas() {
    let w = RustWorker::builder("schemas-1");
    let w = __avto_task_register_loose(__avto_task_register_describe(__avto_task_register_resize(w)))
        .task(Skill::new("staged").typed_event::<Describe>("stage"), |_p: Value, _t: TaskHandle| async {});
    let body = w.build().unwrap().registration_payload();
    let skills = body["supported_skills"].as_array().unwrap();
    let skill = |n: &str| skills.iter().find(|s| s["name"] == n).unwrap_or_else(|| panic!("{n} in {body}"));
    let resize = skill("resize");
    assert_eq!(resize["input_schema"]["required"], json!(["url", "width"]), "{resize}");
    assert_eq!(resize["output_schema"]["required"], json!(["url", "width"]), "{resize}");
    assert_eq!(resize["description"], "Resizes (the contract's implementation: other types would not compile).");
    let describe = skill("describe");
    assert_eq!(describe["input_schema"]["required"], json!(["text"]), "{describe}");
    assert_eq!(describe["output_schema"]["properties"]["words"]["type"], "integer", "{describe}");
    let loose = skill("loose");
    assert_eq!(loose["input_schema"], json!({"type": "object"}), "{loose}");
    assert!(loose.get("output_schema").is_none(), "{loose}");
    assert_eq!(Resize::input_schema(), resize["input_schema"]);
    assert_eq!(skill("staged")["events_schema"]["stage"]["required"], json!(["text"]), "{body}");
    // Without the macro: the builder holds the handler to the contract the same way.
    let built = RustWorker::builder("schemas-2")
        .contract::<Resize, _, _, _>(|p: ResizeParams, _t: TaskHandle| async move {
            Ok::<_, avto::TaskError>(Resized { url: p.url, width: p.width })
        })
        .build()
        .unwrap()
        .registration_payload();
    assert_eq!(built["supported_skills"][0]["name"], "resize", "{built}");
    assert_eq!(built["supported_skills"][0]["output_schema"], resize["output_schema"], "{built}");
}

/// A typed blueprint and a typed worker sharing `Resize`, end to end, with the schemas in the
/// catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_dispatch_runs_against_a_contract_worker_and_the_catalog_shows_it() {
    let s = Server::start([typed_resize::blueprint()]).await;
    let c = s.client();
    let _w = RustWorker::start(&s.base, "typed-1", |b| __avto_task_register_describe(__avto_task_register_resize(b)));
    c.wait_workers(&["typed-1"]).await;
    let id = c.create("/api/v1/jobs/typed_resize", json!({"width": 64})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["status"], "finished", "{job}");
    let stored = s.core.jobs().get(&id).await.unwrap().unwrap();
    assert_eq!(stored.state_history.get("seen_width"), Some(&json!(64)), "{job}");
    let (status, cat) = c.get("/api/v1/workers/catalog").await;
    assert_eq!(status, 200, "{cat}");
    assert_eq!(cat["resize"]["contract"]["input_schema"]["required"], json!(["url", "width"]), "{cat}");
    assert_eq!(cat["resize"]["contract"]["output_schema"]["title"], "Resized", "{cat}");
    assert_eq!(cat["describe"]["contract"]["input_schema"]["title"], "Describe", "{cat}");
}

/// Params that break the `input_schema` of every worker offering the skill never reach a worker:
/// the task fails at once with `INVALID_INPUT_ERROR` (the `failure` transition, or `failed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_breaking_the_input_schema_are_refused_before_dispatch() {
    let s = Server::start([echo_flow::blueprint(), echo_strict::blueprint()]).await;
    let c = s.client();
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = ran.clone();
    let _w = RustWorker::start(&s.base, "in-1", move |b| {
        let schema = json!({"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}});
        b.task(Skill::new("echo").input_schema(schema), move |p: Value, _t: TaskHandle| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { TaskOutcome::success(json!({"echo": p})) }
        })
    });
    c.wait_workers(&["in-1"]).await;
    // With a `failure` transition: it runs, with the violation as the last error.
    let id = c.create("/api/v1/jobs/echo", json!({"url": 5})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!((job["status"].as_str(), job["current_state"].as_str()), (Some("failed"), Some("failed")), "{job}");
    let stored = s.core.jobs().get(&id).await.unwrap().unwrap();
    let err = stored.last_error.expect("the refusal is the last error");
    assert_eq!(err.code, "INVALID_INPUT_ERROR", "{err:?}");
    assert!(err.message.contains("input_schema") && err.message.contains("/url"), "{err:?}");
    // Without one: the job fails (invalid input), it is not parked waiting for a worker.
    let id = c.create("/api/v1/jobs/echo_strict", json!({"other": 1})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(ran.load(Ordering::SeqCst), 0, "no worker ran a refused task");
    // Params that keep the contract are dispatched.
    let id = c.create("/api/v1/jobs/echo", json!({"url": "u"})).await;
    assert_eq!(c.wait_terminal(&id, T).await["status"], "finished");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

/// A success whose data breaks the worker's `output_schema` becomes a `CONTRACT_VIOLATION_ERROR`
/// failure: the job is quarantined and the worker loses 0.2 of reputation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_breaking_the_output_schema_quarantines_and_costs_reputation() {
    let s = Server::start([echo_strict::blueprint()]).await;
    let c = s.client();
    let _w = RustWorker::start(&s.base, "out-1", |b| {
        let schema = json!({"type": "object", "required": ["width"], "properties": {"width": {"type": "integer"}}});
        b.task(Skill::new("echo").output_schema(schema), |p: Value, _t: TaskHandle| async move {
            TaskOutcome::success(json!({"width": p["width"]}))
        })
    });
    c.wait_workers(&["out-1"]).await;
    let id = c.create("/api/v1/jobs/echo_strict", json!({"width": "wide"})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["status"], "quarantined", "{job}");
    let stored = s.core.jobs().get(&id).await.unwrap().unwrap();
    let err = stored.last_error.expect("the violation is the last error");
    assert_eq!(err.code, "CONTRACT_VIOLATION_ERROR", "{err:?}");
    assert!(err.message.contains("output_schema") && err.message.contains("/width"), "{err:?}");
    assert!(stored.state_history.get("width").is_none(), "nothing of the data was merged");
    let reputation = c.worker("out-1").await.expect("listed")["reputation"].as_f64().unwrap();
    assert!((reputation - 0.8).abs() < 1e-9, "1.0 - REPUTATION_PENALTY_CONTRACT_VIOLATION: {reputation}");
    // Data that keeps it is accepted (and rewarded as usual).
    let id = c.create("/api/v1/jobs/echo_strict", json!({"width": 3})).await;
    assert_eq!(c.wait_terminal(&id, T).await["status"], "finished");
}

/// A worker registering skills with a schema that does not compile is refused with a 400.
#[tokio::test]
async fn a_schema_that_does_not_compile_is_refused_at_registration() {
    let s = Server::start([echo_flow::blueprint()]).await;
    let w = RawWorker::new(&s.base, "bad-schema", &["echo"]);
    let (status, body) = register(&w, json!([{"name": "echo", "output_schema": {"type": 12}}])).await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("skill `echo`") && msg.contains("output_schema"), "{body}");
    assert!(s.client().worker("bad-schema").await.is_none());
    // Nor can a registered worker bring one in with a heartbeat.
    assert_eq!(register(&w, json!([{"name": "echo"}])).await.0, 200);
    let body = json!({"worker_id": w.id, "status": "idle", "supported_skills": [{"name": "echo", "input_schema": {"minimum": "x"}}]});
    let body = w.signed(body, MessageKind::Heartbeat);
    let (status, answer) = w.send(reqwest::Method::PATCH, "/_worker/workers/bad-schema", Some(&body)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("input_schema"), "{answer}");
}

async fn register(w: &RawWorker, skills: Value) -> (u16, Value) {
    let body = json!({"worker_id": w.id, "worker_type": "raw", "supported_skills": skills,
                      "capabilities": {"cost_per_skill": {}, "extra": {}}});
    let body = w.signed(body, MessageKind::Registration);
    w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&body)).await
}

/// An event whose payload breaks the skill's `events_schema` for its type is answered 200
/// `{"status": "error", "code": "CONTRACT_VIOLATION_ERROR"}` and changes nothing; undeclared
/// types pass.
#[tokio::test]
async fn events_breaking_the_events_schema_are_refused() {
    let s = Server::start([echo_flow::blueprint()]).await;
    let c = s.client();
    let w = RawWorker::new(&s.base, "ev-1", &["echo"]);
    let stage = json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}});
    let (status, body) = register(&w, json!([{"name": "echo", "events_schema": {"stage": stage}}])).await;
    assert_eq!(status, 200, "{body}");
    let id = c.create("/api/v1/jobs/echo", json!({})).await;
    let (status, task) = w.poll().await;
    assert_eq!((status, task["job_id"].as_str()), (200, Some(id.as_str())), "{task}");
    // RawWorker::event adds the event id and the worker ids, and signs.
    let event = |event_type: &str, payload: Value| {
        w.event(json!({"event_type": event_type, "payload": payload, "target_job_id": id,
                       "origin_task_id": task["task_id"], "bubbling_chain": []}))
    };
    let (status, answer) = event("stage", json!({"n": "x"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["status"].as_str(), answer["code"].as_str()), (Some("error"), Some("CONTRACT_VIOLATION_ERROR")));
    assert!(answer["message"].as_str().unwrap().contains("/n"), "{answer}");
    for (event_type, payload) in [("stage", json!({"n": 1})), ("undeclared", json!({"anything": true}))] {
        let (status, answer) = event(event_type, payload).await;
        assert_eq!((status, answer["status"].as_str()), (200, Some("event_accepted")), "{event_type}: {answer}");
    }
    assert_eq!(w.succeed(&task, json!({})).await.0, 200);
    assert_eq!(c.wait_terminal(&id, T).await["status"], "finished");
}

/// On Redis, an instance that never saw the worker register reads its schemas from the store: a
/// result breaking the output schema, posted to the other instance, is caught there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_checks_results_against_the_schemas_in_redis() {
    let redis = avto_tests::RedisPrefix::new();
    let cfg = avto_tests::test_config;
    let a = Server::with_redis([echo_strict::blueprint()], &redis.url, &redis.prefix, cfg()).await;
    let b = Server::with_redis([echo_strict::blueprint()], &redis.url, &redis.prefix, cfg()).await;
    let on_a = RawWorker::new(&a.base, "redis-out-1", &["echo"]);
    let schema = json!({"type": "object", "required": ["width"]});
    let (status, body) = register(&on_a, json!([{"name": "echo", "output_schema": schema}])).await;
    assert_eq!(status, 200, "{body}");
    let id = a.client().create("/api/v1/jobs/echo_strict", json!({})).await;
    let on_b = RawWorker::new(&b.base, "redis-out-1", &["echo"]);
    let (status, task) = on_b.poll().await;
    assert_eq!((status, task["job_id"].as_str()), (200, Some(id.as_str())), "{task}");
    let (status, answer) = on_b.succeed(&task, json!({"height": 1})).await;
    assert_eq!((status, answer["transition"].as_str()), (200, Some("failure_handled")), "{answer}");
    let job = a.client().wait_terminal(&id, T).await;
    assert_eq!(job["status"], "quarantined", "{job}");
    let reputation = a.client().worker("redis-out-1").await.expect("listed")["reputation"].as_f64().unwrap();
    assert!((reputation - 0.8).abs() < 1e-9, "{reputation}");
}
