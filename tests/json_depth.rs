//! Issue #12 item 8: nesting depth.
//!
//! A 127-level `initial_data` was accepted; the task payload nested it deeper, and the Rust
//! worker SDK then failed to parse its whole batch poll (the other tasks of the batch, another
//! client's, were lost until their timeout). On Redis the same job could not be read back and
//! broke the client's whole job list. Now: one depth limit at the edge (`MAX_JSON_DEPTH`, 64,
//! leaving room for the envelopes under serde_json's 128), the SDK reports a task it cannot read
//! as failed without losing the others, and a record that cannot be read affects itself only.

use std::time::Duration;

use avto::worker::{TaskHandle, TaskOutcome};
use avto_tests::blueprints::echo_flow;
use avto_tests::{test_config, test_config_with, RawWorker, RustWorker, Server};
use serde_json::{json, Value};

/// An object nested `depth` levels deep (`{}` is 1).
fn nested(depth: usize) -> Value {
    let mut v = json!({});
    for _ in 1..depth {
        v = json!({ "a": v });
    }
    v
}

/// Dispatches `echo` with the initial data wrapped 100 levels deeper: a payload deeper than
/// serde_json reads (what a blueprint may build even from data the edge accepted).
#[avto::blueprint(name = "deep_params", api_version = "v1", api_endpoint = "jobs/deep_params")]
pub mod deep_params {
    use avto::prelude::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        let mut v = ctx.initial_data.clone();
        for _ in 0..100 {
            v = json!({ "wrap": v });
        }
        actions
            .dispatch_task("echo")
            .params(json!({ "deep": v }))
            .transitions([("success", "finished"), ("failure", "failed")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end = "failed")]
    async fn failed() {}
}

/// Records a value 100 levels deeper than its initial data in the job: a job record deeper than
/// serde_json reads back.
#[avto::blueprint(name = "deep_record", api_version = "v1", api_endpoint = "jobs/deep_record")]
pub mod deep_record {
    use avto::prelude::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        let mut v = ctx.initial_data.clone();
        for _ in 0..100 {
            v = json!({ "wrap": v });
        }
        actions.update_context("deep", v);
        actions.transition_to("finished");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

async fn edge_limit(server: &Server) {
    let c = server.client();
    let (status, body) = c.post("/api/v1/jobs/echo", &json!({"initial_data": nested(127)})).await;
    assert_eq!(status, 400, "{body}");
    let msg = body.to_string();
    assert!(msg.contains("initial_data") && msg.contains("MAX_JSON_DEPTH"), "{body}");
    // Deeper than serde_json reads at all: the same 400.
    let (status, body) = c.post("/api/v1/jobs/echo", &json!({"initial_data": {"x": 1}, "deep": nested(127)})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("`deep`"), "{body}");
    // The body at the limit (64 levels: the body, then 63 of initial_data) is accepted and reads back.
    let id = c.create("/api/v1/jobs/echo", nested(63)).await;
    assert_eq!(c.job(&id).await["initial_data"], nested(63));
    let (status, list) = c.get("/api/v1/jobs").await;
    assert_eq!(status, 200, "{list}");
    assert!(list.to_string().contains(&id), "{list}");
    // Worker messages obey the same limit.
    let w = RawWorker::new(&server.base, "w-depth", &["echo"]);
    assert_eq!(w.register().await.0, 200);
    let (status, task) = w.poll().await;
    assert_eq!(status, 200, "{task}");
    let (status, answer) = w.succeed(&task, nested(127)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("`data`"), "{answer}");
    assert_eq!(w.succeed(&task, json!({"ok": true})).await.0, 200);
}

#[tokio::test]
async fn deep_bodies_are_refused_at_the_edge_memory() {
    let server = Server::start([echo_flow::blueprint()]).await;
    edge_limit(&server).await;
}

#[tokio::test]
async fn deep_bodies_are_refused_at_the_edge_redis() {
    let p = avto_tests::RedisPrefix::new();
    let server = Server::with_redis([echo_flow::blueprint()], &p.url, &p.prefix, test_config()).await;
    edge_limit(&server).await;
}

#[tokio::test]
async fn the_depth_limit_is_configurable() {
    let server = Server::with_config([echo_flow::blueprint()], test_config_with(&[("MAX_JSON_DEPTH", "5")])).await;
    let c = server.client();
    assert_eq!(c.post("/api/v1/jobs/echo", &json!({"initial_data": nested(4)})).await.0, 202);
    let (status, body) = c.post("/api/v1/jobs/echo", &json!({"initial_data": nested(5)})).await;
    assert_eq!(status, 400, "{body}");
}

/// A task the SDK cannot read is reported failed at once, and the other task of its batch runs.
#[tokio::test]
async fn an_unreadable_task_fails_alone_and_its_batch_runs() {
    let server = Server::start([deep_params::blueprint(), echo_flow::blueprint()]).await;
    let c = server.client();
    let deep = c.create("/api/v1/jobs/deep_params", nested(40)).await;
    let normal = c.create("/api/v1/jobs/echo", json!({"msg": "hi"})).await;
    for id in [&deep, &normal] {
        c.wait_until(id, Duration::from_secs(10), "parked", |j| j["status"] == "waiting_for_worker").await;
    }
    let _worker = RustWorker::start(&server.base, "w-sdk-depth", |b| {
        b.max_concurrent_tasks(8).task("echo", |params: Value, _task: TaskHandle| async move {
            TaskOutcome::success(json!({"echo": params}))
        })
    });
    let job = c.wait_terminal(&normal, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "finished", "{job}");
    // Reported failed by the SDK (INVALID_INPUT_ERROR), long before any timeout.
    let job = c.wait_terminal(&deep, Duration::from_secs(30)).await;
    assert_eq!((&job["status"], &job["current_state"]), (&json!("failed"), &json!("failed")), "{job}");
}

/// On Redis a job record deeper than serde_json reads cannot be read back: that job alone is
/// affected, the client's list still answers with the others.
#[tokio::test]
async fn an_unreadable_record_leaves_the_job_list_alone_redis() {
    let p = avto_tests::RedisPrefix::new();
    let server =
        Server::with_redis([deep_record::blueprint(), echo_flow::blueprint()], &p.url, &p.prefix, test_config()).await;
    let c = server.client();
    let good = c.create("/api/v1/jobs/echo", json!({"msg": "hi"})).await;
    let deep = c.create("/api/v1/jobs/deep_record", nested(40)).await;
    // Until its record is saved deep, the job reads; afterwards it does not.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = c.get(&format!("/api/v1/jobs/{deep}")).await;
        if status != 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the deep record still reads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, list) = c.get("/api/v1/jobs").await;
    assert_eq!(status, 200, "{list}");
    assert!(list.to_string().contains(&good), "{list}");
    assert_eq!(c.get(&format!("/api/v1/jobs/{good}")).await.0, 200);
}
