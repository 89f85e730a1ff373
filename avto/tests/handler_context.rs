//! A handler run is lent the job's input, history, branch results and path (its `Context` takes
//! them from the job, without a copy) and the engine puts them back however the run ends. These
//! tests read them in later runs and in the finished job after runs that panicked, failed,
//! waited for a task and went on.

use avto::prelude::*;
use avto::testing::{Reply, TestRun};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs of `start` so far (one test uses this blueprint).
static STARTS: AtomicUsize = AtomicUsize::new(0);

#[avto::blueprint(name = "lent_context")]
mod flow {
    use super::*;

    /// Panics on its first run, fails on its second, dispatches on its third: every retry must
    /// see the input and the history the job had before the first.
    #[handler(state = "start", start)]
    #[when(ctx.initial_data["n"] == 7)]
    async fn start(ctx: &Context, actions: &mut Actions) -> Result<(), String> {
        match STARTS.fetch_add(1, Ordering::SeqCst) {
            0 => panic!("the first run panics"),
            1 => Err(format!("the second run fails (n = {})", ctx.initial_data["n"])),
            _ => {
                actions
                    .dispatch_task("double")
                    .params(json!({"n": ctx.initial_data["n"], "seen_path": ctx.path}))
                    .transitions([("success", "check"), ("failure", "failed")]);
                Ok(())
            }
        }
    }

    #[handler(state = "check")]
    #[when(ctx.initial_data["n"] == 7 && ctx.state_history["doubled"] == 14)]
    async fn check(actions: &mut Actions) {
        actions.update_context("checked", true).transition_to("done");
    }

    #[handler(state = "done", end)]
    async fn done(ctx: &Context) -> Output<serde_json::Value> {
        Output(json!({
            "initial": ctx.initial_data,
            "doubled": ctx.state_history["doubled"],
            "checked": ctx.state_history["checked"],
            "path": ctx.path,
        }))
    }

    #[handler(state = "failed", end = "failed")]
    async fn failed() {}
}

#[tokio::test]
async fn the_job_keeps_its_input_history_and_path_across_runs_that_panic_fail_and_succeed() {
    let mut run =
        TestRun::new(flow::blueprint()).initial_data(json!({"n": 7, "keep": "me"})).worker("double", |task| {
            assert_eq!(task.params["n"], 7, "the task was given the input: {:?}", task.params);
            assert_eq!(task.params["seen_path"], json!(["start"]), "the third run saw the path: {:?}", task.params);
            Reply::success(json!({"doubled": 14}))
        });
    let job = run.run().await;
    assert_eq!(job.status, JobStatus::Finished, "{job:?}");
    assert_eq!(job.initial_data, json!({"n": 7, "keep": "me"}), "the input is the job's again");
    assert_eq!(job.state_history.get("doubled"), Some(&json!(14)));
    assert_eq!(
        job.result,
        Some(json!({
            "initial": {"n": 7, "keep": "me"},
            "doubled": 14,
            "checked": true,
            "path": ["start", "check", "done"],
        })),
        "every run read what the earlier ones left"
    );
    assert_eq!(job.path, ["start", "check", "done"]);
    assert_eq!(STARTS.load(Ordering::SeqCst), 3, "one panic and one failure were retried");
}
