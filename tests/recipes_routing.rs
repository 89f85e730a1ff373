//! Blueprint routing of the cookbook recipes, driven in-process by `avto::testing` (no HTTP):
//! conditions, fan-out and aggregation, approvals, child blueprints, retries, the one-action
//! rule and the runtime backstops.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use avto::engine::ResultDisposition;
use avto::storage::memory::MemoryDataStores;
use avto::testing::{Reply, TestRun};
use avto::{ClientConfig, JobStatus};
use avto_examples as ex;
use avto_tests::blueprints::{backstops, fan_out_three};
use serde_json::{json, Value};

#[tokio::test]
async fn r01_linear_success_and_failure() {
    let mut run = TestRun::new(ex::r01_linear::simple_flow::blueprint())
        .initial_data(json!({"x": 1}))
        .worker("simple_task", |t| Reply::success(json!({"doubled": t.params["x"].as_i64().unwrap() * 2})));
    let job = run.run().await;
    assert_eq!(job.status, JobStatus::Finished);
    assert_eq!(run.path(), ["start", "step_A", "step_B", "finished"]);
    assert_eq!(job.state_history["doubled"], 2);

    let mut run = TestRun::new(ex::r01_linear::simple_flow::blueprint())
        .worker("simple_task", |_| Reply::failure("INVALID_INPUT_ERROR", "x missing"));
    let job = run.run().await;
    assert_eq!((job.status, job.current_state.as_str()), (JobStatus::Failed, "failed"));
    assert_eq!(job.last_error.unwrap().message, "x missing");
}

#[tokio::test]
async fn r02_approval_outcomes() {
    for (decision, status, state) in
        [("approved", JobStatus::Finished, "finished"), ("rejected", JobStatus::Failed, "rejected_by_moderator")]
    {
        let mut run = TestRun::new(ex::r02_approval::moderation::blueprint())
            .worker("data_generation", |_| Reply::success(json!({"draft": "text"})));
        run.start().await;
        assert_eq!((run.status(), run.state()), (JobStatus::WaitingForHuman, "awaiting_approval"));
        let approval = run.job().approval.clone().unwrap();
        assert_eq!(approval.integration.as_deref(), Some("telegram"));
        assert!(run.approve("maybe").await.is_err(), "unknown decisions are refused");
        run.approve(decision).await.unwrap();
        assert_eq!((run.status(), run.state()), (status, state));
        assert!(run.approve(decision).await.is_err(), "a decision is taken once");
    }
}

#[tokio::test]
async fn r03_fan_out_and_aggregation() {
    let mut run = TestRun::new(ex::r03_parallel::parallel::blueprint());
    run.start().await;
    assert_eq!(run.status(), JobStatus::WaitingForParallelTasks);
    let a = run.task("task_A").unwrap();
    let b = run.task("task_B").unwrap();
    // Results arrive in any order; the aggregator runs once, after both.
    assert_eq!(
        run.reply(&b, Reply::success(json!({"part": "B"}))).await,
        ResultDisposition::Accepted("parallel_branch_accepted")
    );
    assert_eq!(run.job().aggregation_target.as_deref(), Some("aggregate_results"));
    assert_eq!(run.status(), JobStatus::WaitingForParallelTasks);
    run.reply(&a, Reply::success(json!({"part": "A"}))).await;
    assert_eq!(run.status(), JobStatus::Finished);
    assert_eq!(run.path(), ["start", "aggregate_results", "end"]);
    let agg = &run.job().state_history["aggregated_data"];
    assert_eq!(agg, &json!([{"part": "A"}, {"part": "B"}]), "results in dispatch order, not arrival order");
    assert_eq!(run.job().aggregation_results.len(), 2);
}

#[tokio::test]
async fn r03_a_failed_branch_fails_the_fan_out() {
    let mut run = TestRun::new(ex::r03_parallel::parallel::blueprint())
        .worker("task_A", |_| Reply::failure("PERMANENT_ERROR", "A is broken"));
    run.start().await;
    assert_eq!((run.status(), run.state()), (JobStatus::Failed, "failed"));
    assert!(!run.path().contains(&"aggregate_results") || run.path().len() == 2);
    assert_eq!(run.cancelled_tasks().len(), 1, "the other branch is cancelled");
    assert!(run.pending_tasks().is_empty());
}

#[tokio::test]
async fn r03_transient_branch_failures_are_retried() {
    let attempts = Arc::new(AtomicU32::new(0));
    let seen = attempts.clone();
    let mut run = TestRun::new(ex::r03_parallel::parallel::blueprint())
        .worker("task_A", move |t| {
            seen.fetch_add(1, Ordering::SeqCst);
            if t.attempt == 0 {
                Reply::failure("TRANSIENT_ERROR", "busy")
            } else {
                Reply::success(json!({"a": 1}))
            }
        })
        .worker("task_B", |_| Reply::success(json!({"b": 2})));
    let job = run.run().await;
    assert_eq!(job.status, JobStatus::Finished);
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn r05_when_routing_in_source_order() {
    for (language, task) in [("en", Some("process_en")), ("de", Some("process_de")), ("fr", None)] {
        let mut run = TestRun::new(ex::r05_when::multilingual::blueprint()).initial_data(json!({"language": language}));
        run.start().await;
        match task {
            Some(t) => {
                assert_eq!(run.pending_tasks().len(), 1);
                assert_eq!(run.pending_tasks()[0].task_type, t);
            }
            None => {
                assert_eq!((run.status(), run.state()), (JobStatus::Failed, "unsupported_language"));
                assert_eq!(run.job().error_message.as_deref(), Some("language not supported"));
            }
        }
    }
}

#[tokio::test]
async fn r07_priority_is_set_from_input() {
    let mut run =
        TestRun::new(ex::r06_r07_r08_dispatch::priority::blueprint()).initial_data(json!({"is_urgent": true}));
    run.start().await;
    assert_eq!(run.pending_tasks()[0].priority, 10.0);
}

#[tokio::test]
async fn r09_data_store_counts_across_jobs() {
    let stores = Arc::new(MemoryDataStores::new());
    for expected in 1..=3 {
        let mut run = TestRun::new(ex::r09_data_stores::analytics::blueprint()).data_stores(stores.clone());
        let job = run.run().await;
        assert_eq!(job.status, JobStatus::Finished);
        assert_eq!(job.state_history["request_number"], expected);
    }
}

#[tokio::test]
async fn r10_cancelled_status_follows_its_transition() {
    let mut run =
        TestRun::new(ex::r10_cancel::cancellable::blueprint()).worker("long_video_processing", |_| Reply::cancelled());
    let job = run.run().await;
    // `task_cancelled` is an end state whose name means status `cancelled`.
    assert_eq!((job.status, job.current_state.as_str()), (JobStatus::Cancelled, "task_cancelled"));

    let mut run = TestRun::new(ex::r10_cancel::cancellable::blueprint());
    run.start().await;
    run.cancel().await.unwrap();
    assert_eq!(run.status(), JobStatus::Cancelled);
    assert_eq!(run.cancelled_tasks().len(), 1, "the running task is cancelled on its worker");
    assert!(run.cancel().await.is_err(), "cancelled is terminal");
}

#[tokio::test]
async fn r13_error_codes_decide_retries_and_the_failure_handler_sees_them() {
    for (code, attempts_expected, end_state, status) in [
        ("PERMANENT_ERROR", 1, "quarantined", JobStatus::Quarantined),
        ("INVALID_INPUT_ERROR", 1, "failed", JobStatus::Failed),
        ("TRANSIENT_ERROR", 4, "failed", JobStatus::Failed),
    ] {
        let attempts = Arc::new(AtomicU32::new(0));
        let seen = attempts.clone();
        let mut run =
            TestRun::new(ex::r13_retry::error_handling::blueprint()).worker("fetch_external_data", move |_| {
                seen.fetch_add(1, Ordering::SeqCst);
                Reply::failure(code, "no")
            });
        let job = run.run().await;
        assert_eq!(attempts.load(Ordering::SeqCst), attempts_expected, "{code}");
        assert_eq!((job.status, job.current_state.as_str()), (status, end_state), "{code}");
        assert_eq!(job.state_history["failure_code"], code);
    }
}

#[tokio::test]
async fn r14_child_blueprints_resume_the_parent_once_on_every_outcome() {
    let mut run = TestRun::new(ex::r14_nested::main_flow::blueprint())
        .blueprint(ex::r14_nested::text_processor::blueprint())
        .initial_data(json!({"raw_text": "hello"}));
    let job = run.run().await;
    assert_eq!(job.status, JobStatus::Finished);
    assert_eq!(run.path(), ["start", "process_user_text", "final_step", "finished"]);
    assert_eq!(job.state_history["child_result"], json!("HELLO"));
    assert_eq!(run.children().len(), 1);
    assert_eq!(run.children()[0].status, JobStatus::Finished);

    let mut run = TestRun::new(ex::r14_nested::main_flow::blueprint())
        .blueprint(ex::r14_nested::text_processor::blueprint())
        .initial_data(json!({"raw_text": ""}));
    let job = run.run().await;
    assert_eq!((job.status, job.current_state.as_str()), (JobStatus::Failed, "failed"));
    assert_eq!(run.path(), ["start", "process_user_text", "sub_job_failed", "failed"]);
    let record = job.state_history.iter().find(|(k, _)| k.starts_with("sub_job_")).unwrap().1;
    assert_eq!(record["outcome"], "failure");
}

#[tokio::test]
async fn r17_client_config_routes() {
    let premium = ClientConfig { name: "p".into(), plan: "premium".into(), ..Default::default() };
    let mut run = TestRun::new(ex::r15_r17_r18_r19::premium::blueprint()).client(premium);
    run.start().await;
    assert_eq!(run.pending_tasks()[0].task_type, "high_quality_generation");

    let mut config = serde_json::Map::new();
    config.insert("languages".into(), json!(["en"]));
    let free = ClientConfig { name: "f".into(), plan: "free".into(), config, ..Default::default() };
    let mut run = TestRun::new(ex::r15_r17_r18_r19::premium::blueprint()).client(free);
    run.start().await;
    assert_eq!(run.pending_tasks()[0].task_type, "standard_quality_generation");

    let mut run = TestRun::new(ex::r15_r17_r18_r19::premium::blueprint());
    let job = run.run().await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error_message.as_deref(), Some("Language not supported for your plan"));
}

#[tokio::test]
async fn r18_typed_input_and_outcomes() {
    let mut run = TestRun::new(ex::r15_r17_r18_r19::validation::blueprint()).initial_data(json!({"user_id": 7}));
    let job = run.run().await;
    assert_eq!((job.status, job.current_state.as_str()), (JobStatus::Failed, "invalid_input_failed"));

    let mut run = TestRun::new(ex::r15_r17_r18_r19::validation::blueprint())
        .initial_data(json!({"user_id": "u1", "document_type": "invoice"}))
        .worker("invoice_ocr", |_| Reply::status("rejected", json!({"rejection_reason": "blurry"})));
    let job = run.run().await;
    assert_eq!((job.status, job.current_state.as_str()), (JobStatus::Failed, "handle_rejection"));
    assert_eq!(job.state_history["rejection_reason"], "blurry");
}

async fn backstop(mode: &str, extra: Value) -> avto::Job {
    let mut data = json!({"mode": mode});
    data.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    TestRun::new(backstops::blueprint()).initial_data(data).run().await
}

#[tokio::test]
async fn one_action_per_handler_run() {
    let job = backstop("two_actions", json!({})).await;
    assert_eq!(
        job.status,
        JobStatus::Quarantined,
        "a handler that keeps breaking the rule is quarantined after retries"
    );
    let msg = job.error_message.unwrap();
    assert!(msg.contains("exactly one action"), "{msg}");
    assert_eq!(job.path, ["start"], "the first action was not applied");
}

#[tokio::test]
async fn runtime_rejects_targets_outside_the_table() {
    let job = backstop("dynamic", json!({"target": "nowhere"})).await;
    assert_eq!(job.status, JobStatus::Quarantined);
    assert!(job.error_message.unwrap().contains("`nowhere` is not a state of blueprint `backstops`"));
    let job = backstop("dynamic", json!({"target": "done"})).await;
    assert_eq!(job.status, JobStatus::Finished, "targets inside the table are fine");
}

#[tokio::test]
async fn panics_and_missing_actions_fail_the_run_not_the_engine() {
    let job = backstop("panic", json!({})).await;
    assert_eq!(job.status, JobStatus::Quarantined);
    assert!(job.error_message.unwrap().contains("panicked: boom"));
    let job = backstop("nothing", json!({})).await;
    assert_eq!(job.status, JobStatus::Quarantined, "{job:?}");
    assert!(job.error_message.unwrap().contains("took no action"));
    let job = backstop("other", json!({})).await;
    assert_eq!(job.status, JobStatus::Finished);
}

#[tokio::test]
async fn a_panicking_guard_fails_the_run_like_a_panicking_handler() {
    // Before: the guard's panic unwound through the engine (here: out of the test runner; in the
    // server: the job stayed `running` and panicked again on every recovery pass).
    let job = backstop("guard_panic", json!({})).await;
    assert_eq!(job.status, JobStatus::Quarantined, "retried, then quarantined: {job:?}");
    assert_eq!(job.retry_count, 3, "retried like a failing handler (JOB_MAX_RETRIES)");
    let msg = job.error_message.unwrap();
    assert!(msg.contains("panicked: n is a number"), "{msg}");
    assert!(msg.contains("guarded_by_a_panic"), "the message names the handler: {msg}");
    let job = backstop("guard_panic", json!({"n": 1})).await;
    assert_eq!((job.status, job.path), (JobStatus::Finished, vec!["start".to_owned(), "done".to_owned()]));
}

#[tokio::test]
async fn state_history_indexes_to_null_like_initial_data() {
    let job = backstop("null_safe", json!({})).await;
    assert_eq!(job.status, JobStatus::Finished, "{job:?}");
    assert_eq!(job.state_history["seen"], json!([null, null]), "the guard and the handler read null");
}

#[tokio::test]
async fn aggregation_results_in_dispatch_order_whatever_the_arrival_order() {
    let mut run = TestRun::new(fan_out_three::blueprint());
    run.start().await;
    let tasks = run.pending_tasks().to_vec();
    let parts: Vec<&Value> = tasks.iter().map(|t| &t.params["part"]).collect();
    assert_eq!(parts, [0, 1, 2], "dispatched in this order");
    // Answered in reverse order; the middle branch fails once (its retry gets a new task id).
    run.reply(&tasks[2], Reply::success(json!({"part": 2}))).await;
    run.reply(&tasks[1], Reply::failure("TRANSIENT_ERROR", "again")).await;
    let retry = run.pending_tasks().iter().find(|t| t.params["part"] == 1).cloned().expect("part 1 retried");
    assert_ne!(retry.task_id, tasks[1].task_id);
    run.reply(&retry, Reply::success(json!({"part": 1}))).await;
    assert_eq!(run.status(), JobStatus::WaitingForParallelTasks);
    run.reply(&tasks[0], Reply::success(json!({"part": 0}))).await;
    assert_eq!(run.status(), JobStatus::Finished, "{:?}", run.job());
    assert_eq!(run.job().state_history["parts"], json!([0, 1, 2]), "the aggregator saw dispatch order");
    let ids: Vec<&str> = run.job().aggregation_results.iter().map(|r| r.task_id.as_str()).collect();
    assert_eq!(ids, [tasks[0].task_id.as_str(), retry.task_id.as_str(), tasks[2].task_id.as_str()]);
    assert!(run.job().branch_order.is_empty(), "no leftover bookkeeping after the fan-in");
}
