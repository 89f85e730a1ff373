//! Issue #16 items 1 and 2: every field of the task payload and of a result (spec 3.6, 3.7;
//! checklist 5, 59, 61, 62), spoken raw as the SDKs speak it.
//!
//! * a task carries `params_metadata` (the job's file metadata of its params' keys), the
//!   `skill_version` / `skill_type` its dispatch required (outside `sig`, as Avtomatika adds
//!   them), and its dispatch's `resource_hint` in `params`;
//! * a result that moves the job on leaves its `data_metadata`, `metadata`, `security` (without
//!   the message's signature) and `timestamp` on the job;
//! * a late result for a task that timed out is ignored as `deadline_exceeded`.

use std::time::Duration;

use avto::protocol::sign::{verify_task, MessageKind, TaskSigCheck};
use avto_tests::blueprints::{dispatch_options, files_flow};
use avto_tests::{test_config_with, RawWorker, Server, SECRET};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// Registers `w` with `skills` (skill declarations as the SDK sends them).
async fn register(w: &RawWorker, skills: Value) {
    let body = json!({
        "worker_id": w.id, "worker_type": "raw", "supported_skills": skills,
        "capabilities": {"cost_per_skill": {}, "extra": {}}, "resources": {"properties": {"cpu_cores": 1}},
    });
    let body = w.signed(body, MessageKind::Registration);
    let (status, answer) = w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
}

/// A signed result for `task` with `fields` (status, data, data_metadata, metadata, ...), and
/// `security_extra` added to its security block after signing (the signature does not cover
/// `security`). Returns the answer and the result's `timestamp`.
async fn send_result(w: &RawWorker, task: &Value, fields: Value, security_extra: Value) -> (u16, Value, i64) {
    let mut body = json!({"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": w.id,
                          "origin_worker_id": w.id});
    body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    let mut body = w.signed(body, MessageKind::Result);
    body["security"].as_object_mut().unwrap().extend(security_extra.as_object().unwrap().clone());
    let (status, answer) = w.send(reqwest::Method::POST, "/_worker/tasks/result", Some(&body)).await;
    (status, answer, body["timestamp"].as_i64().unwrap())
}

async fn poll_task(w: &RawWorker) -> Value {
    for _ in 0..5 {
        let (status, task) = w.poll().await;
        if status == 200 {
            return task;
        }
        assert_eq!(status, 204, "{task}");
    }
    panic!("{} was given no task", w.id);
}

/// Items 1 (payload, result envelope) and the resource hint: `files_flow` through raw workers.
#[tokio::test]
async fn task_payloads_and_results_carry_every_field() {
    let s = Server::start([files_flow::blueprint()]).await;
    let producer = RawWorker::new(&s.base, "raw-producer", &[]);
    register(&producer, json!([{"name": "produce"}])).await;
    let consumer = RawWorker::new(&s.base, "raw-consumer", &[]);
    register(&consumer, json!([{"name": "consume", "type": "vision", "version": "2.0"}])).await;
    let c = s.client();
    let (status, created) = c
        .post(
            "/api/v1/jobs/files",
            &json!({"initial_data": {}, "metadata": {"tenant": "t1"},
                    "security": {"signer_id": "client-1", "custom": {"k": 1}}}),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let id = created["job_id"].as_str().unwrap().to_owned();

    // The first task: no file metadata yet, no skill requirement, the client's security.
    let task = poll_task(&producer).await;
    for key in ["params_metadata", "skill_version", "skill_type"] {
        assert!(task.get(key).is_none(), "{key} absent when there is none: {task}");
    }
    assert_eq!(task["security"], json!({"signer_id": "client-1", "custom": {"k": 1}}));
    assert_eq!(task["metadata"], json!({"tenant": "t1"}));

    let uri = "s3://avto/jobs/x/image.png";
    let fields = json!({
        "data": {"image": uri, "thumb": "s3://avto/jobs/x/thumb.png"},
        "data_metadata": {
            "image": {"uri": uri, "size": 10, "etag": "e-1", "metadata": {"w": 2}},
            "thumb": {"uri": "s3://avto/jobs/x/thumb.png", "size": 3},
        },
        "metadata": {"stage": "produced"},
    });
    let chain = json!({"identity_chain": ["client-1", "raw-producer"]});
    let (status, answer, _) = send_result(&producer, &task, fields, chain).await;
    assert_eq!((status, answer), (200, json!({"status": "accepted", "transition": "success_transition"})));

    // The second task: the file metadata of its params' keys only, the skill it required (after
    // the signature), the resource hint in its params, the job's metadata merged with the
    // result's and the result's security in place of the client's, without its signature.
    let task = poll_task(&consumer).await;
    assert_eq!(task["params"], json!({"image": uri, "n": 1, "resource_hint": "gpu"}));
    assert_eq!(
        task["params_metadata"],
        json!({"image": {"uri": uri, "size": 10, "etag": "e-1", "metadata": {"w": 2}}})
    );
    assert_eq!((task["skill_version"].as_str(), task["skill_type"].as_str()), (Some("2.0"), Some("vision")));
    assert_eq!(task["metadata"], json!({"tenant": "t1", "stage": "produced"}));
    assert_eq!(task["security"], json!({"signer_id": "raw-producer", "identity_chain": ["client-1", "raw-producer"]}));
    assert_eq!(verify_task(&task, SECRET), TaskSigCheck::Valid, "{task}");

    let (_, answer, sent_at) = send_result(&consumer, &task, json!({"data": {"done": true}}), json!({})).await;
    assert_eq!(answer["transition"], "success_transition", "{answer}");
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["data_metadata"]["thumb"], json!({"uri": "s3://avto/jobs/x/thumb.png", "size": 3}), "{job}");
    assert_eq!(job["data_metadata"]["image"]["etag"], "e-1", "{job}");
    assert_eq!(job["metadata"], json!({"tenant": "t1", "stage": "produced"}));
    let stored = s.core.job(&id).await.unwrap().unwrap();
    assert_eq!(stored.timestamp, Some(sent_at), "the last result's timestamp is kept");
    assert_eq!(stored.security, Some(json!({"signer_id": "raw-consumer"})), "the last result's security");
}

/// The Rust SDK hands what the task carries to its handler: `params_metadata`, the resource
/// hint and the required skill version and type (`TaskHandle`).
#[tokio::test]
async fn the_rust_sdk_hands_the_task_fields_to_its_handler() {
    use avto::worker::{Skill, TaskHandle};
    use avto_tests::RustWorker;
    let s = Server::start([files_flow::blueprint()]).await;
    let producer = RawWorker::new(&s.base, "raw-producer", &["produce"]);
    producer.register().await;
    let consumer = RustWorker::start(&s.base, "rust-consumer", |b| {
        b.task(Skill::new("consume").skill_type("vision").version("2.0"), |p: Value, task: TaskHandle| async move {
            json!({"seen": {
                "params": p,
                "params_metadata": task.params_metadata(),
                "resource_hint": task.resource_hint(),
                "skill": [task.skill_version(), task.skill_type()],
            }})
        })
    });
    avto_tests::wait_workers(&s, 2).await;
    let c = s.client();
    let id = c.create("/api/v1/jobs/files", json!({})).await;
    let task = poll_task(&producer).await;
    let uri = "s3://avto/jobs/x/image.png";
    let fields = json!({"data": {"image": uri}, "data_metadata": {"image": {"uri": uri, "size": 10, "etag": "e-1"}}});
    let (_, answer, _) = send_result(&producer, &task, fields, json!({})).await;
    assert_eq!(answer["status"], "accepted", "{answer}");
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(
        job["state_history"]["seen"],
        json!({
            "params": {"image": uri, "n": 1, "resource_hint": "gpu"},
            "params_metadata": {"image": {"uri": uri, "size": 10, "etag": "e-1"}},
            "resource_hint": "gpu",
            "skill": ["2.0", "vision"],
        })
    );
    consumer.stop().await;
}

/// Dispatches `work` with the resource hint `gpu` and the params `initial_data["params"]`
/// (none when absent). `success` -> finished.
#[avto::blueprint(name = "hinted")]
pub mod hinted {
    use avto::prelude::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        let task = actions.dispatch_task("work").resource_hint("gpu").transitions([("success", "finished")]);
        if let Some(params) = ctx.initial_data.get("params") {
            let _ = task.params(params.clone());
        }
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

/// The resource hint goes into the params (made an object when there were none); params that
/// are not an object cannot take it, and the handler run fails saying so.
#[tokio::test]
async fn a_resource_hint_goes_into_the_params() {
    use avto::testing::{Reply, TestRun};
    for (params, sent) in
        [(None, json!({"resource_hint": "gpu"})), (Some(json!({"a": 1})), json!({"a": 1, "resource_hint": "gpu"}))]
    {
        let data = params.map_or_else(|| json!({}), |p| json!({"params": p}));
        let mut run = TestRun::new(hinted::blueprint()).initial_data(data);
        run.start().await;
        let task = run.task("work").expect("dispatched");
        assert_eq!(task.params, sent);
        assert_eq!(task.record.spec.resource_hint.as_deref(), Some("gpu"));
        run.reply(&task, Reply::success(json!({}))).await;
        assert_eq!(run.status(), avto::JobStatus::Finished);
    }
    let config = avto::engine::EngineConfig { max_retries: 0, ..Default::default() };
    let job = TestRun::new(hinted::blueprint()).initial_data(json!({"params": [1, 2]})).config(config).run().await;
    assert_eq!(job.status, avto::JobStatus::Quarantined, "{job:?}");
    assert!(job.error_message.as_deref().is_some_and(|m| m.contains("resource_hint")), "{:?}", job.error_message);
}

/// Item 2: a result for a task the watcher timed out is ignored as `deadline_exceeded`, whether
/// the task was retried (a new task id took its place) or the job ended; before, it was
/// `stale_task` and `job_already_terminated`.
#[tokio::test]
async fn late_results_of_timed_out_tasks_are_deadline_exceeded() {
    for retries in ["1", "0"] {
        let cfg = test_config_with(&[("JOB_MAX_RETRIES", retries)]);
        let s = Server::with_config([dispatch_options::blueprint()], cfg).await;
        let w = RawWorker::new(&s.base, "raw-late", &["work"]);
        w.register().await;
        let c = s.client();
        let id = c.create("/api/v1/jobs/dispatch", json!({"timeout": 0.3})).await;
        let first = poll_task(&w).await;
        let late =
            |job: &Value| job["status"] == "failed" || job["current_task"]["attempt"].as_u64().is_some_and(|a| a >= 1);
        let job = c.wait_until(&id, T, "the execution timeout", late).await;
        assert_eq!(job["last_error"]["code"], "TIMEOUT_ERROR", "{job}");
        let (status, answer) = w.succeed(&first, json!({"late": true})).await;
        assert_eq!(status, 200);
        assert_eq!(answer["status"], "ignored", "JOB_MAX_RETRIES={retries}: {answer}");
        assert_eq!(answer["reason"], "deadline_exceeded", "JOB_MAX_RETRIES={retries}: {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| m.contains("timed out")), "{answer}");
        if retries == "1" {
            // The retry is a task like any other: its result in time is taken.
            let second = poll_task(&w).await;
            assert_ne!(second["task_id"], first["task_id"]);
            let (_, answer) = w.succeed(&second, json!({"ok": true})).await;
            assert_eq!(answer["status"], "accepted", "{answer}");
            assert_eq!(c.wait_terminal(&id, T).await["status"], "finished");
        } else {
            // Retries spent: the dispatch's `failure` transition was followed.
            assert_eq!(c.job(&id).await["current_state"], "failed");
        }
        // A result for a task that never timed out is still what it was.
        let (_, answer) = w.succeed(&json!({"job_id": id, "task_id": "task-unknown"}), json!({})).await;
        assert_eq!(answer["reason"], "job_already_terminated", "{answer}");
    }
}
