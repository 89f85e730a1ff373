//! `avto::testing::TestServer`: raw workers get the protocol's answers, a killed in-process
//! worker's task goes to another worker after the dead-worker timeout, a graceful stop
//! finishes the running task; state, hooks and tokens of the builder.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use avto::protocol::sign::MessageKind;
use avto::testing::{TestServer, TestWorker, CLIENT_TOKEN, SECRET, WORKER_TOKEN};
use avto::worker::{TaskHandle, TaskOutcome};
use avto::JobStatus;
use avto_tests::blueprints::echo_flow;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(10);

/// Whether `id` is among the orchestrator's live workers.
async fn live(s: &TestServer, id: &str) -> bool {
    s.core().dispatcher().live_workers().await.iter().any(|w| w.info.worker_id == id)
}

#[tokio::test]
async fn raw_workers_get_the_protocols_answers() {
    let s = TestServer::builder().blueprint(echo_flow::blueprint()).start().await.unwrap();
    assert_eq!((s.client_token(), s.worker_token(), s.secret()), (CLIENT_TOKEN, WORKER_TOKEN, SECRET));
    let c = s.client();
    let holder = s.raw_worker("raw-holder", &["echo"]);
    let other = s.raw_worker("raw-other", &["echo"]);
    assert_eq!(holder.register().await.0, 200);
    assert_eq!(other.register().await.0, 200);
    let id = c.create("jobs/echo", json!({"n": 1})).await.unwrap();
    let (status, task) = holder.poll().await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["job_id"], id.as_str());
    assert_eq!(holder.heartbeat(&[task["task_id"].as_str().unwrap()]).await.0, 200);

    // a result for a task another worker holds: ignored, the job keeps waiting
    let (status, answer) = other.succeed(&task, json!({"from": "other"})).await;
    assert_eq!(
        (status, answer["status"].as_str(), answer["reason"].as_str()),
        (200, Some("ignored"), Some("worker_mismatch")),
        "{answer}"
    );
    // a forged result (changed after signing): refused
    let mut forged = holder.signed(
        json!({"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": holder.id,
               "origin_worker_id": holder.id, "status": "success", "data": {"n": 1}}),
        MessageKind::Result,
    );
    forged["data"] = json!({"n": "tampered"});
    let (status, answer) = holder.send(reqwest::Method::POST, "/_worker/tasks/result", Some(&forged)).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(c.get(&id).await.unwrap().status, JobStatus::WaitingForWorker);

    // the real result, then the same one late
    let (status, answer) = holder.succeed(&task, json!({"echo": {"n": 1}})).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    assert_eq!(c.wait(&id, T).await.unwrap().result, Some(json!({"n": 1})));
    let (status, answer) = holder.succeed(&task, json!({"n": 2})).await;
    assert_eq!((status, answer["reason"].as_str()), (200, Some("job_already_terminated")), "{answer}");

    // an event about no job, a failure for an unknown job
    let (status, answer) = holder.event(json!({"event_type": "hello", "payload": {}})).await;
    assert!(status == 200 || status == 202, "{status} {answer}");
    let (status, answer) = holder.fail(&json!({"job_id": "nope", "task_id": "t"}), "TRANSIENT_ERROR", "x").await;
    assert_eq!((status, answer["reason"].as_str()), (200, Some("job_not_found")), "{answer}");
    s.stop().await.unwrap();
}

/// A killed worker sends no goodbye and no more heartbeats: it stays registered until the
/// dead-worker timeout (2 x WORKER_HEALTH_CHECK_INTERVAL_SECONDS), then its task goes to another
/// worker and the job finishes there.
#[tokio::test]
async fn a_killed_workers_task_goes_to_another_worker() {
    let (started_tx, mut started) = mpsc::unbounded_channel::<String>();
    let s = TestServer::builder()
        .blueprint(echo_flow::blueprint())
        .env("WORKER_HEALTH_CHECK_INTERVAL_SECONDS", "1")
        .worker("echo", move |_: Value, task: TaskHandle| {
            let started_tx = started_tx.clone();
            async move {
                let _ = started_tx.send(task.task_id().to_owned());
                std::future::pending::<TaskOutcome>().await
            }
        })
        .start()
        .await
        .unwrap();
    assert!(live(&s, "echo-worker").await);
    let c = s.client();
    let id = c.create("jobs/echo", json!({"n": 1})).await.unwrap();
    let task_id = tokio::time::timeout(T, started.recv()).await.unwrap().unwrap();
    let first = s.worker("echo-worker").unwrap();
    first.kill().await;
    assert!(!first.is_running());
    let killed_at = Instant::now();
    assert!(live(&s, "echo-worker").await, "no offline heartbeat: still registered right after the kill");

    let second = s
        .spawn_worker(s.worker_builder("echo-2").task("echo", |p: Value, _t: TaskHandle| async move {
            TaskOutcome::success(json!({"by": format!("echo-2 {}", p["n"])}))
        }))
        .await
        .unwrap();
    let job = c.wait(&id, T).await.unwrap();
    assert_eq!(job.status, JobStatus::Finished, "{:?}", job.raw);
    assert_eq!(
        job.result,
        Some(json!("echo-2 1")),
        "the second worker's result (the last value its data added to the state history)"
    );
    assert!(killed_at.elapsed() >= Duration::from_millis(1500), "re-queued only once the dead-worker timeout passed");
    assert!(!live(&s, "echo-worker").await, "the killed worker expired");
    assert!(started.try_recv().is_err(), "the killed worker ran nothing more (task {task_id})");
    second.stop().await.unwrap();
    s.stop().await.unwrap();
}

/// A graceful stop finishes the running task and delivers its result before the worker leaves.
#[tokio::test]
async fn a_graceful_stop_finishes_the_running_task() {
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let s = TestServer::builder()
        .blueprint(echo_flow::blueprint())
        .worker("echo", move |p: Value, _task: TaskHandle| {
            let started_tx = started_tx.clone();
            async move {
                let _ = started_tx.send(());
                tokio::time::sleep(Duration::from_millis(600)).await;
                TaskOutcome::success(json!({"slow": p}))
            }
        })
        .start()
        .await
        .unwrap();
    let c = s.client();
    let id = c.create("jobs/echo", json!({"n": 5})).await.unwrap();
    tokio::time::timeout(T, started.recv()).await.unwrap().unwrap();
    let w = s.worker("echo-worker").unwrap();
    w.stop().await.expect("a clean stop");
    assert!(!w.is_running());
    let job = c.wait(&id, Duration::from_secs(2)).await.unwrap();
    assert_eq!((job.status, job.result), (JobStatus::Finished, Some(json!({"n": 5}))));
    assert!(!live(&s, "echo-worker").await, "the offline heartbeat took it out of the pool");
    assert!(w.stop().await.is_err(), "a second stop says it is already stopped");
    s.stop().await.unwrap();
}

mod stateful {
    use avto::prelude::*;

    pub struct Greeting(pub &'static str);

    #[avto::blueprint(name = "greet", api_version = "v1", api_endpoint = "jobs/greet")]
    pub mod greet {
        use super::*;

        #[handler(state = "start", start)]
        async fn start(greeting: State<Greeting>, actions: &mut Actions) {
            let text: &str = greeting.0 .0;
            actions.dispatch_task("shout").params(json!({"text": text})).transitions([("success", "done")]);
        }

        #[handler(state = "done", end)]
        async fn done() {}
    }
}

/// The builder passes state and hooks to the orchestrator, and a worker's skill can be any type.
#[tokio::test]
async fn state_hooks_and_workers_of_the_builder() {
    let finished = Arc::new(AtomicUsize::new(0));
    let seen = finished.clone();
    let s = TestServer::builder()
        .blueprint(stateful::greet::blueprint())
        .state(stateful::Greeting("hello"))
        .on_job_finished(move |_job| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .worker("shout", |p: Value, _t: TaskHandle| async move {
            TaskOutcome::success(json!({"loud": p["text"].as_str().unwrap_or_default().to_uppercase()}))
        })
        .start()
        .await
        .unwrap();
    let c = s.client();
    let id = c.create("jobs/greet", json!({})).await.unwrap();
    assert_eq!(c.wait(&id, T).await.unwrap().result, Some(json!("HELLO")));
    let deadline = Instant::now() + T;
    while finished.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the hook ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.url("/x").starts_with(s.base_url()) && s.base_url().starts_with("http://127.0.0.1:"));
    s.stop().await.unwrap();
}

/// A worker that cannot be built is an error of `spawn`, not a panic.
#[test]
fn a_worker_without_tasks_does_not_spawn() {
    assert!(TestWorker::spawn(TestWorker::builder("empty").orchestrator_url("http://127.0.0.1:1")).is_err());
}

/// Rust SDK heartbeats carry a fresh `nonce`: several a second (here every 100 ms) are each
/// accepted, where identical bodies in one second would be refused as replays (the signature
/// is then the nonce) and counted in `avto_security_replay_detected_total`.
#[tokio::test]
async fn frequent_sdk_heartbeats_are_not_replays() {
    let s = TestServer::builder()
        .blueprint(echo_flow::blueprint())
        .worker_with("fast-beats", |b| {
            b.heartbeat_interval(Duration::from_millis(100))
                .task("echo", |p: Value, _t: TaskHandle| async move { TaskOutcome::success(p) })
        })
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let admin = s.admin_token().expect("the test config has an admin token");
    let page =
        reqwest::Client::new().get(s.url("/metrics")).bearer_auth(admin).send().await.unwrap().text().await.unwrap();
    let replays: Vec<&str> = page.lines().filter(|l| l.starts_with("avto_security_replay_detected_total{")).collect();
    assert!(replays.iter().all(|l| l.ends_with(" 0")), "{replays:?}");
    assert!(live(&s, "fast-beats").await);
    s.stop().await.unwrap();
}
