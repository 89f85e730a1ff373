//! Issue #16 items 1 and 4: which workers a dispatch may go to (spec 4.3; checklist 5, 70).
//!
//! * `skill_version` / `skill_type`: only a worker whose skill declares exactly that version /
//!   type takes the task; while none does, the job says why it waits;
//! * custom result statuses: a worker whose skill declares `output_statuses` without a status
//!   the dispatch has a transition for is not chosen (one that declares none may be);
//! * the `skill` requirement: each field must equal the skill's field of that name, else its
//!   `properties[field]`.
//!
//! Spoken raw: each worker registers the skill declarations of the case, and the job's detailed
//! status names the worker its task was given to (`current_task.worker_id`) or why it waits.

use std::time::Duration;

use avto::protocol::sign::MessageKind;
use avto_tests::blueprints::dispatch_options;
use avto_tests::{ApiClient, RawWorker, Server};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// Registers worker `id` with `skills` (skill declarations as the SDK sends them).
async fn register(s: &Server, id: &str, skills: Value) -> RawWorker {
    let w = RawWorker::new(&s.base, id, &[]);
    let body = json!({
        "worker_id": id, "worker_type": "raw", "supported_skills": skills,
        "capabilities": {"cost_per_skill": {}, "extra": {}}, "resources": {"properties": {"cpu_cores": 1}},
    });
    let body = w.signed(body, MessageKind::Registration);
    let (status, answer) = w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    w
}

/// The worker the job's task was given to, once it was given to one.
async fn assigned(c: &ApiClient, id: &str) -> String {
    let job = c.wait_until(id, T, "the task given to a worker", |j| j["current_task"]["worker_id"].is_string()).await;
    job["current_task"]["worker_id"].as_str().unwrap().to_owned()
}

/// Why the job waits, once it waits for a worker that can take its task.
async fn waiting_reason(c: &ApiClient, id: &str) -> String {
    let job = c.wait_until(id, T, "a waiting reason", |j| j["waiting_reason"].is_string()).await;
    assert!(job["current_task"]["worker_id"].is_null(), "{job}");
    job["waiting_reason"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn skill_version_and_type_pick_the_workers_that_declare_them() {
    let s = Server::start([dispatch_options::blueprint()]).await;
    let c = s.client();
    register(&s, "w-v1", json!([{"name": "render", "type": "vision", "version": "1.0"}])).await;

    let v2 = c.create("/api/v1/jobs/dispatch", json!({"skill": "render", "skill_version": "2.0"})).await;
    let why = waiting_reason(&c, &v2).await;
    assert!(why.contains("skill version is not 2.0"), "{why}");
    let ocr = c.create("/api/v1/jobs/dispatch", json!({"skill": "render", "skill_type": "ocr"})).await;
    let why = waiting_reason(&c, &ocr).await;
    assert!(why.contains("skill type is not ocr"), "{why}");
    let any = c.create("/api/v1/jobs/dispatch", json!({"skill": "render"})).await;
    assert_eq!(assigned(&c, &any).await, "w-v1", "no requirement: any version and type");

    // A version 2.0 without a type takes the 2.0 job; the ocr job still waits.
    let w = register(&s, "w-v2", json!([{"name": "render", "version": "2.0"}])).await;
    assert_eq!(assigned(&c, &v2).await, "w-v2");
    let task = w.poll().await.1;
    assert_eq!((task["job_id"].as_str(), task["skill_version"].as_str()), (Some(v2.as_str()), Some("2.0")));
    assert!(task.get("skill_type").is_none(), "{task}");
    // Every reason with how many workers it ruled out (spec 4.1).
    let why = waiting_reason(&c, &ocr).await;
    assert!(
        ["(1 worker: skill type is not ocr)", "(2 workers: skill type is not ocr)"].iter().any(|r| why.contains(r)),
        "{why}"
    );
    register(&s, "w-ocr", json!([{"name": "render", "type": "ocr", "version": "1.0"}])).await;
    assert_eq!(assigned(&c, &ocr).await, "w-ocr");

    // Both at once: each worker lacks one of them, until one has both.
    let both = json!({"skill": "render", "skill_version": "2.0", "skill_type": "vision"});
    let id = c.create("/api/v1/jobs/dispatch", both.clone()).await;
    let why = waiting_reason(&c, &id).await;
    assert!(why.contains("skill version is not 2.0") || why.contains("skill type is not vision"), "{why}");
    register(&s, "w-both", json!([{"name": "render", "type": "vision", "version": "2.0"}])).await;
    assert_eq!(assigned(&c, &id).await, "w-both");
    for _ in 0..4 {
        let id = c.create("/api/v1/jobs/dispatch", both.clone()).await;
        assert_eq!(assigned(&c, &id).await, "w-both", "the only worker with both");
    }
}

#[tokio::test]
async fn custom_statuses_need_a_skill_that_can_return_them() {
    let s = Server::start([dispatch_options::blueprint()]).await;
    let c = s.client();
    register(&s, "w-narrow", json!([{"name": "classify", "output_statuses": ["rejected"]}])).await;
    let review = json!({"skill": "classify", "review": true});

    let id = c.create("/api/v1/jobs/dispatch", review.clone()).await;
    let why = waiting_reason(&c, &id).await;
    assert!(why.contains("cannot return status needs_review"), "{why}");
    // Without the custom status the same worker is fine.
    let plain = c.create("/api/v1/jobs/dispatch", json!({"skill": "classify"})).await;
    assert_eq!(assigned(&c, &plain).await, "w-narrow");

    // A skill declaring no output statuses (or an empty list) is not held to any.
    register(&s, "w-undeclared", json!([{"name": "classify", "output_statuses": []}])).await;
    assert_eq!(assigned(&c, &id).await, "w-undeclared");
    register(&s, "w-wide", json!([{"name": "classify", "output_statuses": ["needs_review", "rejected"]}])).await;
    for _ in 0..6 {
        let id = c.create("/api/v1/jobs/dispatch", review.clone()).await;
        let w = assigned(&c, &id).await;
        assert!(w == "w-undeclared" || w == "w-wide", "never the worker that cannot answer needs_review: {w}");
    }
}

#[tokio::test]
async fn the_skill_requirement_matches_skill_fields_then_properties() {
    let s = Server::start([dispatch_options::blueprint()]).await;
    let c = s.client();
    register(
        &s,
        "w-cycles",
        json!([{"name": "render", "version": "1.0", "properties": {"engine": "cycles", "max_res": 4096}}]),
    )
    .await;
    register(
        &s,
        "w-eevee",
        json!([{"name": "render", "version": "2.0", "description": "fast", "properties": {"engine": "eevee", "version": "9"}}]),
    )
    .await;
    let job = |skill: Value| json!({"skill": "render", "requirements": {"skill": skill}});
    for (skill, worker) in [
        (json!({"engine": "cycles"}), "w-cycles"),
        (json!({"engine": "eevee"}), "w-eevee"),
        (json!({"max_res": 4096.0}), "w-cycles"),
        // A field of the declaration is read there, not from the properties.
        (json!({"version": "2.0"}), "w-eevee"),
        (json!({"description": "fast", "schema_dialect": "json-schema"}), "w-eevee"),
        (json!({"engine": "cycles", "version": "1.0"}), "w-cycles"),
    ] {
        for _ in 0..3 {
            let id = c.create("/api/v1/jobs/dispatch", job(skill.clone())).await;
            assert_eq!(assigned(&c, &id).await, worker, "{skill}");
        }
    }
    for skill in [json!({"engine": "octane"}), json!({"version": "9"}), json!({"engine": "cycles", "version": "2.0"})] {
        let id = c.create("/api/v1/jobs/dispatch", job(skill.clone())).await;
        let why = waiting_reason(&c, &id).await;
        assert!(why.contains("its skill's `"), "{skill}: {why}");
    }
}
