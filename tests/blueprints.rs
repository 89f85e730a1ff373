//! Blueprints used by the integration tests.

use avto::prelude::*;
use serde_json::Value;

/// start -> dispatch `echo` -> finished | failed (the Python reference's echo blueprint).
#[avto::blueprint(name = "echo_flow", api_version = "v1", api_endpoint = "jobs/echo")]
pub mod echo_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions.dispatch_task("echo").params(ctx.initial_data.clone()).transitions([
            ("success", "finished"),
            ("failure", "failed"),
            ("cancelled", "cancelled"),
        ]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}

    #[handler(state = "cancelled", end)]
    async fn cancelled() {}
}

/// The echo task without a `failure` transition: failures follow the error-code policy.
#[avto::blueprint(name = "echo_strict", api_version = "v1", api_endpoint = "jobs/echo_strict")]
pub mod echo_strict {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions.dispatch_task("echo").params(ctx.initial_data.clone()).transitions([("success", "finished")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

/// start -> dispatch `classify` -> finished, or `review` when the worker answers `needs_review`.
#[avto::blueprint(name = "review_flow", api_version = "v1", api_endpoint = "jobs/review")]
pub mod review_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("classify")
            .params(ctx.initial_data.clone())
            .transitions([("success", "finished"), ("needs_review", "review")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "review", end)]
    async fn review() {}
}

/// A task whose worker can short-circuit it with an `early_exit` event.
#[avto::blueprint(name = "event_flow", api_version = "v1", api_endpoint = "jobs/events")]
pub mod event_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions
            .dispatch_task("echo")
            .transitions([("success", "finished")])
            .event_transitions([("early_exit", "exited_early")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "exited_early", end)]
    async fn exited_early() {}
}

/// Waits for a human decision.
#[avto::blueprint(name = "approval_flow", api_version = "v1", api_endpoint = "jobs/approval")]
pub mod approval_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions
            .await_human_approval()
            .integration("test")
            .message("please approve")
            .transitions([("approved", "approved"), ("rejected", "rejected")]);
    }

    #[handler(state = "approved", end)]
    async fn approved() {}

    #[handler(state = "rejected", end = "failed")]
    async fn rejected() {}
}

/// Picks its next state from the input, through a helper the macro cannot see: the engine
/// must still reject a target outside the table.
pub fn route_dynamically(actions: &mut Actions, target: &str) {
    actions.transition_to(target);
}

/// Misbehaving handlers, for the runtime backstops.
#[avto::blueprint(name = "backstops")]
pub mod backstops {
    use super::*;

    #[handler(state = "start", start)]
    #[when(ctx.initial_data["mode"] == "two_actions")]
    async fn two_actions(actions: &mut Actions) {
        actions.transition_to("done");
        actions.await_human_approval().transitions([("ok", "done")]);
    }

    #[handler(state = "start", start)]
    #[when(ctx.initial_data["mode"] == "dynamic")]
    async fn dynamic(ctx: &Context, actions: &mut Actions) {
        route_dynamically(actions, ctx.initial_data["target"].as_str().unwrap_or("nowhere"));
    }

    #[handler(state = "start", start)]
    #[when(ctx.initial_data["mode"] == "panic")]
    async fn panics(actions: &mut Actions) {
        let _ = actions;
        panic!("boom");
    }

    #[handler(state = "start", start)]
    #[when(ctx.initial_data["mode"] == "nothing")]
    async fn does_nothing() {}

    // A guard that panics (here: when `n` is missing) fails the run like a panicking handler.
    #[handler(state = "start", start)]
    #[when(ctx.initial_data["mode"] == "guard_panic" && ctx.initial_data["n"].as_i64().expect("n is a number") > 0)]
    async fn guarded_by_a_panic(actions: &mut Actions) {
        actions.transition_to("done");
    }

    // Missing keys of `state_history` index to null, as those of `initial_data` do.
    #[handler(state = "start", start)]
    #[when(ctx.initial_data["mode"] == "null_safe" && ctx.state_history["missing"].is_null())]
    async fn null_safe(ctx: &Context, actions: &mut Actions) {
        let seen = [ctx.state_history["missing"].clone(), ctx.initial_data["missing"].clone()];
        actions.update_context("seen", json!(seen));
        actions.transition_to("done");
    }

    #[handler(state = "start", start)]
    async fn fine(actions: &mut Actions) {
        actions.transition_to("done");
    }

    #[handler(state = "done", end)]
    async fn done() {}
}

/// Recipe 11: a long task that reports progress (`train_model`).
#[avto::blueprint(name = "training_flow", api_version = "v1", api_endpoint = "jobs/training")]
pub mod training_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("train_model")
            .params(ctx.initial_data.clone())
            .transitions([("success", "finished"), ("failure", "failed")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}

/// One dispatch whose options come from the initial data: `skill` (default `work`), `strategy`
/// (`default`, `round_robin`, `least_connections`, `cheapest`, `best_value`), `priority`,
/// `timeout` (execution timeout, seconds), `dispatch_timeout` (the dispatch's own, seconds), `max_cost`, `requirements` (resource requirements),
/// `skill_version`, `skill_type`, `resource_hint`; `start_delay_ms`: the start handler takes that
/// long before it dispatches. The whole initial data is the task's params. `success` -> finished, `failure` -> failed; with
/// `review: true` also the custom status `needs_review` -> review.
#[avto::blueprint(name = "dispatch_options", api_version = "v1", api_endpoint = "jobs/dispatch")]
pub mod dispatch_options {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        let d = &ctx.initial_data;
        if let Some(ms) = d["start_delay_ms"].as_u64() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let skill = d["skill"].as_str().unwrap_or("work");
        let mut task = if d["review"] == true {
            actions.dispatch_task(skill).transitions([
                ("success", "finished"),
                ("failure", "failed"),
                ("needs_review", "review"),
            ])
        } else {
            actions.dispatch_task(skill).transitions([("success", "finished"), ("failure", "failed")])
        };
        task = task.params(d.clone()).priority(d["priority"].as_f64().unwrap_or(0.0));
        if let Ok(strategy) = serde_json::from_value::<DispatchStrategy>(d["strategy"].clone()) {
            task = task.dispatch_strategy(strategy);
        }
        if let Some(secs) = d["timeout"].as_f64() {
            task = task.timeout(Duration::from_secs_f64(secs));
        }
        if let Some(secs) = d["dispatch_timeout"].as_f64() {
            task = task.dispatch_timeout(Duration::from_secs_f64(secs));
        }
        if let Some(max) = d["max_cost"].as_f64() {
            task = task.max_cost(max);
        }
        if !d["requirements"].is_null() {
            task = task.resource_requirements(d["requirements"].clone());
        }
        if let Some(version) = d["skill_version"].as_str() {
            task = task.skill_version(version);
        }
        if let Some(skill_type) = d["skill_type"].as_str() {
            task = task.skill_type(skill_type);
        }
        if let Some(hint) = d["resource_hint"].as_str() {
            task = task.resource_hint(hint);
        }
        let _ = task;
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}

    #[handler(state = "review", end)]
    async fn review() {}
}

/// Recipe 12b's pipeline with its file metadata: `produce` (no params) leaves a file's URI under
/// `image` (its worker's `data_metadata` says which file), then `consume` gets `{"image", "n": 1}`
/// with resource hint `gpu` (replacing the `cpu` its params carried) and requires skill version
/// `2.0` of type `vision`. `success` -> finished.
#[avto::blueprint(name = "files_flow", api_version = "v1", api_endpoint = "jobs/files")]
pub mod files_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.dispatch_task("produce").transitions([("success", "consume")]);
    }

    #[handler(state = "consume")]
    async fn consume(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("consume")
            .params(serde_json::json!({"image": ctx.history("image"), "n": 1, "resource_hint": "cpu"}))
            .resource_hint("gpu")
            .skill_version("2.0")
            .skill_type("vision")
            .transitions([("success", "finished")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

/// Recipe 14 with a worker in the child: the child's task can succeed, fail or be cancelled, and
/// the parent resumes exactly once on each outcome (`after_child`, then an end state).
#[avto::blueprint(name = "nested_parent", api_version = "v1", api_endpoint = "jobs/nested_parent")]
pub mod nested_parent {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions
            .run_blueprint("nested_child")
            .initial_data(ctx.initial_data.clone())
            .transitions([("success", "child_succeeded"), ("failure", "child_failed")]);
    }

    #[handler(state = "child_succeeded")]
    async fn child_succeeded(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(state = "child_failed")]
    async fn child_failed(actions: &mut Actions) {
        actions.transition_to("failed");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}

/// The child of `nested_parent`: one `child_work` task.
#[avto::blueprint(name = "nested_child")]
pub mod nested_child {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("child_work")
            .params(ctx.initial_data.clone())
            .transitions([("success", "finished"), ("failure", "failed")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}

/// Three parallel branches (`part` 0, 1, 2, in that dispatch order) into an aggregator that
/// records the parts it sees, in the order it sees them (`parts`).
#[avto::blueprint(name = "fan_out_three", api_version = "v1", api_endpoint = "jobs/fan_out_three")]
pub mod fan_out_three {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        for part in 0..3 {
            actions
                .dispatch_task("part")
                .params(json!({"part": part}))
                .transitions([("success", "aggregate"), ("failure", "failed")]);
        }
    }

    #[aggregator(state = "aggregate")]
    async fn aggregate(results: &AggregationResults, actions: &mut Actions) {
        let parts: Vec<Value> = results.successes().map(|d| d["part"].clone()).collect();
        actions.update_context("parts", parts);
        actions.transition_to("finished");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}

/// A data store whose `level` starts at 100; every job takes one off and records what it saw.
#[avto::blueprint(name = "level_flow", api_version = "v1", api_endpoint = "jobs/level", data_stores(tank(level = 100)))]
pub mod level_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn drain(stores: &DataStores, actions: &mut Actions) -> Result<(), StorageError> {
        let level = stores.store("tank").incr("level", -1).await?;
        actions.update_context("level", level);
        actions.transition_to("finished");
        Ok(())
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

/// A polling loop: `check` asks the `poll` worker whether the work is ready; `pending` goes
/// round `check -> wait -> check` again, `ready` ends it (the dashboard tests' loop).
#[avto::blueprint(name = "poll_flow", api_version = "v1", api_endpoint = "jobs/poll")]
pub mod poll_flow {
    use super::*;

    // `{"mode": "broken"}`: the handler fails (retried after a backoff, `awaiting_retry`).
    #[handler(state = "check", start)]
    #[when(ctx.initial_data["mode"] == "broken")]
    async fn broken() -> Result<(), String> {
        Err("the poll endpoint is down".into())
    }

    #[handler(state = "check", start)]
    async fn check(ctx: &Context, actions: &mut Actions) {
        actions.dispatch_task("poll").params(ctx.initial_data.clone()).transitions([
            ("pending", "wait"),
            ("ready", "done"),
            ("failure", "failed"),
        ]);
    }

    #[handler(state = "wait")]
    async fn wait(actions: &mut Actions) {
        actions.transition_to("check");
    }

    #[handler(state = "done", end)]
    async fn done() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}
