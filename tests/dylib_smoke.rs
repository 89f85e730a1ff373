//! A program linked through `avto-dylib`: its blueprint registers across the shared object's
//! boundary, and a job runs end to end (HTTP API, in-process worker, task result, end state).
//!
//! `harness = false` (see Cargo.toml): a plain `main` that panics on failure.

use std::time::Duration;

use avto::prelude::*;
use avto::testing::TestServer;
use avto::worker::{TaskHandle, TaskOutcome};
// What a program opting in writes: avto (and tokio, axum, ...) now come from the shared object.
use avto_dylib as _;
use serde_json::{json, Value};

#[avto::blueprint(name = "dylib_smoke", api_version = "v1", api_endpoint = "jobs/dylib_smoke")]
mod smoke_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("double")
            .params(ctx.initial_data.clone())
            .transitions([("success", "done"), ("failure", "failed")]);
    }

    #[handler(state = "done", end)]
    async fn done() {}

    #[handler(state = "failed", end = "failed")]
    async fn failed() {}
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("a Tokio runtime");
    rt.block_on(a_job_runs_through_the_shared_object());
    println!("a job ran through libavto_dylib.so: ok");
}

async fn a_job_runs_through_the_shared_object() {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    assert!(maps.contains("libavto_dylib"), "this test binary maps libavto_dylib.so");
    assert!(
        avto::Blueprint::registered().iter().any(|b| b.name() == "dylib_smoke"),
        "the blueprint registered itself through inventory, across the shared object"
    );

    let server = TestServer::builder()
        .blueprint(smoke_flow::blueprint())
        .worker("double", |p: Value, _t: TaskHandle| async move {
            TaskOutcome::success(json!({"n": p["n"].as_i64().unwrap_or(0) * 2}))
        })
        .start()
        .await
        .expect("the orchestrator starts");
    let client = server.client();
    let id = client.create("/api/v1/jobs/dylib_smoke", json!({"n": 21})).await.expect("created");
    let view = client.wait(&id, Duration::from_secs(30)).await.expect("the job ends");
    assert_eq!(view.status, avto::JobStatus::Finished);
    assert_eq!(view.current_state, "done");
    server.stop().await.expect("the orchestrator and its worker stop cleanly");
}
