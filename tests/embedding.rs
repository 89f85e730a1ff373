//! Embedding avto (issue #17 items 1 and 2): application state for handlers (`State<T>`, given
//! with `Orchestrator::builder().state(..)` or `TestRun::with_state`, a missing type refused at
//! build naming the handler and the type) and in-process hooks (`on_job_finished` for every
//! terminal status, `on_worker_event` for worker and ghost events, run after the save, their
//! errors and panics logged, never changing the job).

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use avto::protocol::sign::MessageKind;
use avto::server::hooks::WorkerEventInfo;
use avto::testing::TestRun;
use avto::{Job, Orchestrator};
use avto_tests::blueprints::echo_flow;
use avto_tests::{test_config, RawWorker, Server};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(15);

/// Settings an application would load at start-up.
pub struct Settings {
    pub greeting: String,
}

/// A shared counter (a pool, a client: anything `Send + Sync`).
#[derive(Default)]
pub struct Visits {
    pub count: AtomicUsize,
}

#[avto::blueprint(name = "greeter", api_version = "v1", api_endpoint = "jobs/greeter")]
pub mod greeter {
    use super::{Settings, Visits};
    use avto::prelude::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, settings: State<Settings>, visits: State<Visits>, actions: &mut Actions) {
        let n = visits.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let name = ctx.initial_data["name"].as_str().unwrap_or("nobody").to_owned();
        actions
            .update_context("greeting", format!("{}, {name} (visit {n})", settings.greeting))
            .send_event("greeted", json!({"n": n}))
            .transition_to("done");
    }

    #[handler(state = "done", end)]
    async fn done(ctx: &Context) -> Output<serde_json::Value> {
        Output(ctx.state_history["greeting"].clone())
    }
}

#[tokio::test]
async fn handlers_read_application_state_in_a_test_run() {
    let mut run = TestRun::new(greeter::blueprint())
        .with_state(Settings { greeting: "Hello".into() })
        .with_state(Visits::default())
        .initial_data(json!({"name": "Ada"}));
    let job = run.run().await;
    assert_eq!(job.status.as_str(), "finished");
    assert_eq!(job.state_history["done"], json!("Hello, Ada (visit 1)"));
}

#[tokio::test]
#[should_panic(expected = "handler `start` of blueprint `greeter` takes `State<embedding::Visits>`")]
async fn a_test_run_without_the_state_says_which() {
    let mut run = TestRun::new(greeter::blueprint()).with_state(Settings { greeting: "Hi".into() });
    run.run().await;
}

#[tokio::test]
async fn build_refuses_a_missing_state_type_naming_handler_and_type() {
    let err = Orchestrator::builder()
        .blueprint(greeter::blueprint())
        .config(test_config())
        .state(Visits::default())
        .build()
        .expect_err("Settings is missing");
    let msg = err.to_string();
    assert!(msg.contains("handler `start` of blueprint `greeter` takes `State<embedding::Settings>`"), "{msg}");
    assert!(msg.contains(".state(value)"), "{msg}");
    assert!(!msg.contains("Visits"), "Visits was given: {msg}");
}

/// The hooks send what they see here.
fn hooked(
    builder: avto::server::OrchestratorBuilder,
) -> (avto::server::OrchestratorBuilder, mpsc::UnboundedReceiver<Job>, mpsc::UnboundedReceiver<WorkerEventInfo>) {
    let (jobs_tx, jobs) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let builder = builder
        .on_job_finished(move |job: Job| {
            let tx = jobs_tx.clone();
            async move {
                tx.send(job).ok();
                Ok(())
            }
        })
        // A failing hook and a panicking one are only logged: the others still run, jobs go on.
        .on_job_finished(|_job| async { Err("the hook's own error".into()) })
        .on_job_finished(|job: Job| async move {
            if job.blueprint == "greeter" {
                panic!("a hook that panics");
            }
            Ok(())
        })
        .on_worker_event(move |event: WorkerEventInfo| {
            let tx = events_tx.clone();
            async move {
                tx.send(event).ok();
                Ok(())
            }
        });
    (builder, jobs, events)
}

#[tokio::test]
async fn hooks_see_every_end_and_every_event_after_the_save() {
    let builder = Orchestrator::builder()
        .blueprints([greeter::blueprint(), echo_flow::blueprint()])
        .config(test_config())
        .state(Settings { greeting: "Hello".into() })
        .state(Visits::default());
    let (builder, mut jobs, mut events) = hooked(builder);
    let s = Server::with_builder(builder).await;
    let c = s.client();

    // finished, with the ghost event.
    let id = c.create("/api/v1/jobs/greeter", json!({"name": "Ada"})).await;
    let job = tokio::time::timeout(T, jobs.recv()).await.expect("on_job_finished within 15 s").unwrap();
    assert_eq!((job.id.as_str(), job.status.as_str()), (id.as_str(), "finished"));
    assert_eq!(job.state_history["done"], json!("Hello, Ada (visit 1)"));
    // The hook ran after the save: the stored job is already terminal.
    assert_eq!(c.wait_terminal(&id, T).await["status"], "finished");
    let ghost = tokio::time::timeout(T, events.recv()).await.expect("on_worker_event within 15 s").unwrap();
    assert_eq!((ghost.event_type.as_str(), ghost.worker_id.as_str()), ("greeted", "ghost"));
    assert_eq!((ghost.job_id.as_deref(), &ghost.payload), (Some(id.as_str()), &json!({"n": 1})));

    // A worker's progress event and an event about no job; then cancelled.
    let w = RawWorker::new(&s.base, "hook-w1", &["echo"]);
    assert_eq!(w.register().await.0, 200);
    let id = c.create("/api/v1/jobs/echo", json!({})).await;
    let (status, task) = w.poll().await;
    assert_eq!(status, 200, "{task}");
    let event = |payload: Value, job: Option<&str>| {
        let mut body = json!({"event_id": uuid::Uuid::new_v4().to_string(), "worker_id": w.id,
                              "origin_worker_id": w.id, "event_type": "progress", "payload": payload});
        if let Some(job) = job {
            body["target_job_id"] = json!(job);
            body["origin_task_id"] = task["task_id"].clone();
        }
        w.signed(body, MessageKind::Event)
    };
    let (status, answer) =
        w.send(reqwest::Method::POST, "/_worker/events", Some(&event(json!({"progress": 0.3}), Some(&id)))).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("event_accepted")), "{answer}");
    let seen = tokio::time::timeout(T, events.recv()).await.unwrap().unwrap();
    assert_eq!((seen.worker_id.as_str(), seen.job_id.as_deref()), ("hook-w1", Some(id.as_str())));
    assert_eq!(seen.payload, json!({"progress": 0.3}));
    let (status, answer) =
        w.send(reqwest::Method::POST, "/_worker/events", Some(&event(json!({"progress": 1.0}), None))).await;
    assert_eq!(status, 200, "{answer}");
    let seen = tokio::time::timeout(T, events.recv()).await.unwrap().unwrap();
    assert_eq!((seen.worker_id.as_str(), seen.job_id), ("hook-w1", None));

    let (status, answer) = c.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{answer}");
    let job = tokio::time::timeout(T, jobs.recv()).await.unwrap().unwrap();
    assert_eq!((job.id.as_str(), job.status.as_str()), (id.as_str(), "cancelled"));

    // A failed job too (the worker reports a permanent error).
    let id = c.create("/api/v1/jobs/echo", json!({})).await;
    let (status, task) = w.poll().await;
    assert_eq!(status, 200, "{task}");
    let body = json!({"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": w.id,
                      "origin_worker_id": w.id, "status": "failure",
                      "error": {"code": "INVALID_INPUT_ERROR", "message": "no"}});
    let body = w.signed(body, MessageKind::Result);
    let (status, answer) = w.send(reqwest::Method::POST, "/_worker/tasks/result", Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    let job = tokio::time::timeout(T, jobs.recv()).await.unwrap().unwrap();
    assert_eq!(job.id, id);
    assert!(job.status.is_terminal() && job.status.as_str() != "finished", "{:?}", job.status);
    // Each job ended once: no second call for any of them.
    assert!(tokio::time::timeout(Duration::from_millis(300), jobs.recv()).await.is_err());
    // The server still answers after the panicking hook.
    assert_eq!(c.get("/_public/status").await.0, 200);
}

/// `OrchestratorBuilder::worker`: a Rust worker in the same process, pointed at the orchestrator
/// once it listens (here on a free port), with its worker token and task key; stopped with it.
#[tokio::test]
async fn an_embedded_worker_runs_beside_the_orchestrator() {
    use avto::worker::{TaskHandle, TaskOutcome, Worker};
    async fn echo(params: Value, _task: TaskHandle) -> TaskOutcome {
        TaskOutcome::success(json!({"echoed": params}))
    }
    let builder = Orchestrator::builder().blueprint(echo_flow::blueprint()).config(test_config()).worker(
        Worker::builder().worker_id("embedded-1").heartbeat_interval(Duration::from_secs(1)).task("echo", echo),
    );
    let s = Server::with_builder(builder).await;
    let c = s.client();
    let id = c.create("/api/v1/jobs/echo", json!({"n": 7})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["status"], "finished", "{job}");
    let (_, workers) = c.get("/api/v1/workers").await;
    assert!(workers.to_string().contains("embedded-1"), "{workers}");
    s.stop().await;
}
