//! The events contract of a blueprint (spec 1.3 `event(name, schema)`, 1.4 `send_event`, 3.9) and
//! `STRICT_EVENT_VALIDATION` (issue #16): `#[avto::blueprint(events(name = Type))]` declares the
//! event types its handlers send; the orchestrator publishes their schemas, refuses an
//! undeclared type or a payload breaking its schema (the handler run fails), and a ghost
//! `progress` event moves the job's progress. With strict validation, undeclared types are
//! refused for blueprints that declare none and for worker events.

use std::time::Duration;

use avto::protocol::sign::MessageKind;
use avto::testing::TestRun;
use avto_tests::blueprints::echo_flow;
use avto_tests::{test_config, RawWorker, Server};
use serde::Serialize;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Warmed {
    /// How many models are warm.
    #[schemars(range(max = 10))]
    pub n: u32,
}

/// start sends `warmed` (with `n` from the initial data, or an event type from `initial_data.kind`)
/// and a ghost `progress`; done ends.
#[avto::blueprint(
    name = "declared_events",
    api_version = "v1",
    api_endpoint = "jobs/declared_events",
    events(warmed = Warmed, note = serde_json::Value)
)]
pub mod declared_events {
    use super::Warmed;
    use avto::prelude::*;
    use serde_json::json;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        let n = ctx.initial_data["n"].as_u64().unwrap_or(1) as u32;
        actions.send_event("warmed", Warmed { n }).send_event("progress", json!({"progress": 0.5, "message": "half"}));
        if let Some(kind) = ctx.initial_data["kind"].as_str() {
            // A type chosen at run time: checked when it is sent.
            actions.send_event(kind, json!({}));
        }
        actions.transition_to("done");
    }

    #[handler(state = "done", end)]
    async fn done(actions: &mut Actions) {
        actions.send_event("note", json!(["anything"]));
    }
}

/// A blueprint that declares no events: any type passes unless validation is strict.
#[avto::blueprint(name = "free_events", api_version = "v1", api_endpoint = "jobs/free_events")]
pub mod free_events {
    use avto::prelude::*;
    use serde_json::json;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.send_event("anything", json!({})).transition_to("done");
    }

    #[handler(state = "done", end)]
    async fn done() {}
}

async fn server(strict: bool) -> Server {
    let mut cfg = test_config();
    cfg.strict_event_validation = strict;
    cfg.job_max_retries = 0;
    Server::with_config([echo_flow::blueprint(), declared_events::blueprint(), free_events::blueprint()], cfg).await
}

#[test]
fn the_blueprint_publishes_its_events() {
    let bp = declared_events::blueprint();
    assert_eq!(bp.declared_events(), Some(&["warmed", "note"][..]));
    let schema = bp.events_schema().expect("an events schema");
    assert_eq!(schema["warmed"]["properties"]["n"]["maximum"], json!(10), "{schema:?}");
    assert!(schema.contains_key("note"), "serde_json::Value has a schema too: {schema:?}");
    assert_eq!(free_events::blueprint().declared_events(), None);
    assert_eq!(free_events::blueprint().events_schema(), None);
}

#[tokio::test]
async fn declared_events_are_checked_when_sent() {
    let s = server(false).await;
    let c = s.client();
    let (status, list) = c.get("/api/v1/blueprints").await;
    assert_eq!(status, 200, "{list}");
    let bp = list.as_array().unwrap().iter().find(|b| b["name"] == "declared_events").unwrap();
    assert_eq!(bp["events"], json!(["warmed", "note"]));
    assert_eq!(bp["events_schema"]["warmed"]["properties"]["n"]["type"], "integer", "{bp}");

    // Within the contract: finished, and the ghost progress moved the job's progress.
    let id = c.create("/api/v1/jobs/declared_events", json!({"n": 3})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["status"], "finished", "{job}");
    let (_, detailed) = c.get(&format!("/api/v1/jobs/{id}?detailed=true")).await;
    assert_eq!(detailed["progress"], json!(0.5), "{detailed}");
    assert_eq!(detailed["progress_message"], "half", "{detailed}");

    // A payload breaking the event's schema fails the handler (no retries here).
    let id = c.create("/api/v1/jobs/declared_events", json!({"n": 11})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_ne!(job["status"], "finished", "{job}");
    let error = error_of(&c, &id).await;
    assert!(error.contains("event `warmed` breaks its events_schema") && error.contains("/n"), "{error}");

    // A type the blueprint does not declare, chosen at run time, fails the handler too.
    let id = c.create("/api/v1/jobs/declared_events", json!({"kind": "warmd"})).await;
    assert_ne!(c.wait_terminal(&id, T).await["status"], "finished");
    let error = error_of(&c, &id).await;
    assert!(error.contains("does not declare event type `warmd`") && error.contains("warmed, note"), "{error}");

    // Without strict validation a blueprint that declares nothing may send anything.
    let id = c.create("/api/v1/jobs/free_events", json!({})).await;
    assert_eq!(c.wait_terminal(&id, T).await["status"], "finished");
}

/// The error message of a job that ended (the detailed status shows it).
async fn error_of(c: &avto_tests::ApiClient, id: &str) -> String {
    let (_, job) = c.get(&format!("/api/v1/jobs/{id}?detailed=true")).await;
    job["error_message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn strict_validation_refuses_undeclared_ghost_events() {
    let s = server(true).await;
    let c = s.client();
    let id = c.create("/api/v1/jobs/free_events", json!({})).await;
    assert_ne!(c.wait_terminal(&id, T).await["status"], "finished");
    let error = error_of(&c, &id).await;
    assert!(error.contains("`anything`") && error.contains("STRICT_EVENT_VALIDATION"), "{error}");
    // `progress` and declared types still pass.
    let id = c.create("/api/v1/jobs/declared_events", json!({})).await;
    assert_eq!(c.wait_terminal(&id, T).await["status"], "finished");
}

#[tokio::test]
async fn strict_validation_refuses_undeclared_worker_events() {
    let s = server(true).await;
    let c = s.client();
    let w = RawWorker::new(&s.base, "strict-ev-1", &["echo"]);
    let stage = json!({"type": "object"});
    let body = json!({"worker_id": w.id, "worker_type": "raw",
                      "supported_skills": [{"name": "echo", "events_schema": {"stage": stage}}],
                      "capabilities": {"cost_per_skill": {}, "extra": {}}});
    let (status, answer) = w
        .send(reqwest::Method::POST, "/_worker/workers/register", Some(&w.signed(body, MessageKind::Registration)))
        .await;
    assert_eq!(status, 200, "{answer}");
    let id = c.create("/api/v1/jobs/echo", json!({})).await;
    let (status, task) = w.poll().await;
    assert_eq!((status, task["job_id"].as_str()), (200, Some(id.as_str())), "{task}");
    // RawWorker::event adds the event id and the worker ids, and signs.
    let event = |event_type: &str, payload: Value| {
        w.event(json!({"event_type": event_type, "payload": payload, "target_job_id": id,
                       "origin_task_id": task["task_id"], "bubbling_chain": []}))
    };
    let (status, answer) = event("other", json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["status"].as_str(), answer["code"].as_str()), (Some("error"), Some("CONTRACT_VIOLATION_ERROR")));
    assert!(answer["message"].as_str().unwrap().contains("STRICT_EVENT_VALIDATION"), "{answer}");
    for (event_type, payload) in [("stage", json!({})), ("progress", json!({"progress": 0.2}))] {
        let (status, answer) = event(event_type, payload).await;
        assert_eq!((status, answer["status"].as_str()), (200, Some("event_accepted")), "{event_type}: {answer}");
    }
    assert_eq!(w.succeed(&task, json!({})).await.0, 200);
    assert_eq!(c.wait_terminal(&id, T).await["status"], "finished");
}

/// In-process runs check the same contract.
#[tokio::test]
async fn test_runs_check_events_too() {
    let mut run = TestRun::new(declared_events::blueprint()).initial_data(json!({"n": 2}));
    run.start().await;
    assert_eq!(run.job().status.as_str(), "finished");
    assert_eq!(run.job().progress, Some(0.5));
    let mut run = TestRun::new(declared_events::blueprint()).initial_data(json!({"n": 20}));
    run.start().await;
    assert_ne!(run.job().status.as_str(), "finished");
}
