//! `#[avto::task]` declares worker tasks that `avto::worker::run()` serves, and they run
//! against avto end to end.

use std::time::Duration;

use avto::worker::{TaskHandle, TaskOutcome};
use avto_tests::blueprints::echo_flow;
use avto_tests::{Server, SECRET, WORKER_TOKEN};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
struct Greet {
    name: String,
}

/// Greets someone.
#[avto::task("greet")]
async fn greet(params: Greet, task: TaskHandle) -> TaskOutcome {
    task.progress(0.5, "greeting").await;
    TaskOutcome::success(json!({"greeting": format!("Hello, {}!", params.name)}))
}

/// Echo the params back.
#[avto::task(name = "echo", version = "2.0")]
async fn echo(params: Value) -> Result<Value, avto::TaskError> {
    Ok(json!({"echo": params}))
}

#[avto::task]
async fn ping() -> Value {
    json!({"pong": true})
}

#[test]
fn declared_tasks_are_registered_with_name_description_and_version() {
    let worker = avto::worker::builder_with_declared_tasks().unwrap().worker_id("macro-1").token("t").build().unwrap();
    let body = worker.registration_payload();
    let skills = body["supported_skills"].as_array().unwrap();
    let names: Vec<&str> = skills.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["echo", "greet", "ping"], "sorted by name");
    assert_eq!(skills[1]["description"], "Greets someone.");
    assert_eq!(skills[0]["version"], "2.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_tasks_run_against_avto() {
    let s = Server::start([echo_flow::blueprint()]).await;
    let worker = avto::worker::builder_with_declared_tasks()
        .unwrap()
        .worker_id("macro-worker")
        .orchestrator_url(s.base.clone())
        .token(WORKER_TOKEN)
        .secret_key(SECRET)
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run_until(async {
        let _ = rx.await;
    }));
    avto_tests::wait_workers(&s, 1).await;
    let c = s.client();
    let id = c.create("/api/v1/jobs/echo", json!({"x": 1})).await;
    let job = c.wait_terminal(&id, Duration::from_secs(10)).await;
    assert_eq!(job["status"], "finished");
    assert_eq!(job["result"], json!({"x": 1}));
    let _ = tx.send(());
    run.await.unwrap().unwrap();
}
