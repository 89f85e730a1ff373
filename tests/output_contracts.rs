//! Output contracts and `TestRun` input checks (issue #15 item 1): an end handler returning
//! `Output<T>` makes the job's result, `T`'s JSON Schema is published as the blueprint's output
//! contract, and a job that would finish with a result breaking it ends `failed` ("Blueprint
//! contract violation") instead. `TestRun` refuses input breaking the input contract as the
//! orchestrator does.

use std::time::Duration;

use avto::prelude::*;
use avto::testing::{Reply, TestRun};
use avto_tests::{RawWorker, Server};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct Essay {
    pub text: String,
}

/// The result: `score` must be 0-100 (a constraint the Rust type alone does not keep).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Grade {
    #[schemars(range(max = 100))]
    pub score: u32,
    pub words: usize,
}

/// Rejected essays end with a reason, in their own end state.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Rejection {
    pub reason: String,
}

#[avto::blueprint(name = "grading", api_version = "v1", api_endpoint = "jobs/grading")]
pub mod grading {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(InitialData(e): InitialData<Essay>, actions: &mut Actions) {
        if e.text.is_empty() {
            actions.transition_to("rejected");
        } else {
            actions.dispatch_task("grade").params(json!({"text": e.text})).transitions([("success", "graded")]);
        }
    }

    /// The worker's score becomes the result (out of range when the worker says so).
    #[handler(state = "graded", end)]
    async fn graded(ctx: &Context) -> Result<Output<Grade>, String> {
        let score = ctx.state_history.get("score").and_then(Value::as_u64).ok_or("no score")?;
        let words = ctx.initial_data["text"].as_str().unwrap_or("").split_whitespace().count();
        Ok(Output(Grade { score: score as u32, words }))
    }

    #[handler(state = "rejected", end = "failed")]
    async fn rejected() -> Output<Rejection> {
        Output(Rejection { reason: "empty essay".into() })
    }
}

#[test]
fn end_handlers_publish_the_output_contract_per_end_state() {
    let bp = grading::blueprint();
    let per_state = bp.output_schemas();
    let states: Vec<&str> = per_state.iter().map(|(s, _)| *s).collect();
    assert_eq!(states, vec!["graded", "rejected"]);
    assert_eq!(per_state[0].1["properties"]["score"]["maximum"], json!(100), "{}", per_state[0].1);
    let all = bp.output_schema().expect("an output contract");
    assert_eq!(all["anyOf"].as_array().map(Vec::len), Some(2), "{all}");
}

#[tokio::test]
async fn an_output_becomes_the_result_and_one_breaking_the_contract_fails_the_job() {
    let mut ok = TestRun::new(grading::blueprint())
        .initial_data(json!({"text": "three short words"}))
        .worker("grade", |_| Reply::success(json!({"score": 87})));
    let job = ok.run().await;
    assert_eq!(job.status, JobStatus::Finished, "{:?}", job.error_message);
    assert_eq!(job.result, Some(json!({"score": 87, "words": 3})));

    let mut bad = TestRun::new(grading::blueprint())
        .initial_data(json!({"text": "x"}))
        .worker("grade", |_| Reply::success(json!({"score": 140})));
    let job = bad.run().await;
    assert_eq!(job.status, JobStatus::Failed);
    let why = job.error_message.clone().unwrap_or_default();
    assert!(why.starts_with("Blueprint contract violation"), "{why}");
    assert!(why.contains("`/score`") && why.contains("graded"), "{why}");

    // Only `finished` is checked (spec): an output of another end status is the result as is.
    let mut rejected = TestRun::new(grading::blueprint()).initial_data(json!({"text": ""}));
    let job = rejected.run().await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.result, Some(json!({"reason": "empty essay"})));
}

#[tokio::test]
async fn test_run_refuses_input_breaking_the_contract_like_the_orchestrator() {
    let mut run = TestRun::new(grading::blueprint()).initial_data(json!({"text": 5}));
    let violations = run.try_start().await.expect_err("the contract wants a string");
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].pointer, "/text");
    let mut run = TestRun::new(grading::blueprint()).initial_data(json!({"text": ""}));
    assert_eq!(run.try_start().await.expect("it holds").status, JobStatus::Failed);
}

#[tokio::test]
#[should_panic(expected = "breaks blueprint `grading`'s input contract: `/text`")]
async fn test_run_start_panics_on_input_breaking_the_contract() {
    TestRun::new(grading::blueprint()).initial_data(json!({"text": 5})).start().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_publishes_and_checks_the_output_contract() {
    let s = Server::start([grading::blueprint()]).await;
    let c = s.client();
    let (_, blueprints) = c.get("/api/v1/blueprints").await;
    let g = blueprints.as_array().unwrap().iter().find(|b| b["name"] == "grading").unwrap().clone();
    assert_eq!(g["output_schema"]["anyOf"][0]["properties"]["score"]["maximum"], json!(100), "{g}");
    assert_eq!(g["input_schema"]["required"], json!(["text"]), "{g}");

    let worker = RawWorker::new(&s.base, "grader", &["grade"]);
    assert_eq!(worker.register().await.0, 200);
    let good = c.create("/api/v1/jobs/grading", json!({"text": "a b"})).await;
    let bad = c.create("/api/v1/jobs/grading", json!({"text": "c"})).await;
    for _ in 0..2 {
        let (status, task) = worker.poll().await;
        assert_eq!(status, 200, "{task}");
        let score = if task["job_id"] == good.as_str() { 50 } else { 101 };
        assert_eq!(worker.succeed(&task, json!({"score": score})).await.0, 200);
    }
    let job = c.wait_terminal(&good, Duration::from_secs(10)).await;
    assert_eq!(
        (job["status"].as_str(), &job["result"]),
        (Some("finished"), &json!({"score": 50, "words": 2})),
        "{job}"
    );
    let job = c.wait_terminal(&bad, Duration::from_secs(10)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job["error_message"].as_str().unwrap().contains("Blueprint contract violation"), "{job}");
}
