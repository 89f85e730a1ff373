//! Macro-generated blueprints at run time, and `avto_dsl::scan` (what `cargo avto graph`
//! prints) agreeing byte for byte with the `DOT` constants the macro generates.

#[path = "fixtures/flows.rs"]
mod flows;

use avto::testing::{Reply, TestRun};
use avto::JobStatus;
use flows::*;
use serde_json::json;

#[test]
fn scan_prints_the_dot_the_macro_generates() {
    let graphs = avto_dsl::scan::graphs_in_source(include_str!("fixtures/flows.rs")).unwrap();
    let generated = [
        ("simple_flow", simple_flow::NAME, simple_flow::DOT),
        ("multilingual", multilingual::NAME, multilingual::DOT),
        ("parallel", parallel::NAME, parallel::DOT),
        ("moderation", moderation::NAME, moderation::DOT),
        ("nested::text_processing", nested::text_processing::NAME, nested::text_processing::DOT),
        ("nested::main_flow", nested::main_flow::NAME, nested::main_flow::DOT),
    ];
    assert_eq!(graphs.len(), generated.len());
    for (graph, (module, name, dot)) in graphs.iter().zip(generated) {
        assert_eq!(graph.module, module);
        assert_eq!(graph.name, name);
        assert_eq!(graph.dot, dot, "DOT of `{module}` differs between the macro and the scanner");
    }
}

#[test]
fn condition_source_is_canonical() {
    let conds: Vec<_> = multilingual::blueprint()
        .spec()
        .handlers
        .iter()
        .filter_map(|h| h.condition.as_ref().map(|c| c.source))
        .collect();
    assert_eq!(
        conds,
        [
            r#"ctx.initial_data["language"] == "en""#,
            r#"ctx.initial_data["language"] == "de" && ctx.initial_data["text"].as_str().is_some_and(| t | !t.is_empty())"#,
        ]
    );
}

#[tokio::test]
async fn linear_success_and_failure() {
    let mut run = TestRun::new(simple_flow::blueprint())
        .initial_data(json!({"msg": "hi"}))
        .worker("simple_task", |t| Reply::success(t.params.clone()));
    let job = run.run().await;
    assert_eq!(job.status, JobStatus::Finished);
    assert_eq!(job.path, ["start", "step_A", "step_B", "finished"]);

    let mut run =
        TestRun::new(simple_flow::blueprint()).worker("simple_task", |_| Reply::failure("PERMANENT_ERROR", "broken"));
    let job = run.run().await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.current_state, "failed");
}

#[tokio::test]
async fn when_conditions_route_in_source_order_with_fallback() {
    for (data, path, status) in [
        (json!({"language": "en"}), vec!["start", "process_text", "finished"], JobStatus::Finished),
        (json!({"language": "de", "text": "hallo"}), vec!["start", "process_text", "finished"], JobStatus::Finished),
        (json!({"language": "de", "text": ""}), vec!["start", "process_text", "failed"], JobStatus::Failed),
        (json!({"language": "fr"}), vec!["start", "process_text", "failed"], JobStatus::Failed),
    ] {
        let mut run = TestRun::new(multilingual::blueprint())
            .initial_data(data.clone())
            .worker("process_en", |_| Reply::success(json!({"lang": "en"})))
            .worker("process_de", |_| Reply::success(json!({"lang": "de"})));
        let job = run.run().await;
        assert_eq!(job.path, path, "{data}");
        assert_eq!(job.status, status, "{data}");
    }
}

#[tokio::test]
async fn parallel_fan_in() {
    let mut run = TestRun::new(parallel::blueprint())
        .worker("task_A", |_| Reply::success(json!("a")))
        .worker("task_B", |_| Reply::success(json!("b")));
    let job = run.run().await;
    assert_eq!(job.status, JobStatus::Finished);
    assert_eq!(job.path, ["start", "aggregate_results", "end"]);
    assert_eq!(job.state_history["aggregated"], json!(["a", "b"]));
}

#[tokio::test]
async fn approval_and_data_store() {
    let mut run = TestRun::new(moderation::blueprint());
    run.start().await;
    assert_eq!(run.status(), JobStatus::WaitingForHuman);
    assert_eq!(run.job().state_history["request_number"], json!(1));
    run.approve("rejected").await.unwrap();
    assert_eq!(run.status(), JobStatus::Cancelled);
    assert_eq!(run.state(), "rejected_cancelled");
}

#[tokio::test]
async fn nested_blueprint() {
    let mut run = TestRun::new(nested::main_flow::blueprint())
        .blueprint(nested::text_processing::blueprint())
        .initial_data(json!({"raw_text": "hello"}));
    let job = run.run().await;
    assert_eq!(job.status, JobStatus::Finished);

    let mut run = TestRun::new(nested::main_flow::blueprint())
        .blueprint(nested::text_processing::blueprint())
        .initial_data(json!({"raw_text": ""}));
    let job = run.run().await;
    assert_eq!(job.current_state, "sub_job_failed");
}
