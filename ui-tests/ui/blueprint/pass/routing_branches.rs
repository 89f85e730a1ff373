// Cookbook recipes 17 and 18: dispatches in exclusive branches (not a parallel fan-out),
// early returns, `match`, closures and loops.
#![deny(warnings)]
use avto::prelude::*;

#[avto::blueprint(name = "premium_flow", api_version = "v1", api_endpoint = "jobs/premium_flow")]
mod premium {
    use super::*;

    #[handler(state = "validate_input", start)]
    async fn validate(ctx: &Context, actions: &mut Actions) {
        let user_id = &ctx.initial_data["user_id"];
        if user_id.is_null() {
            actions.transition_to("invalid_input_failed");
            return;
        }
        match ctx.initial_data["document_type"].as_str() {
            Some("invoice") => {
                actions.transition_to("route");
            }
            Some(_) | None => {
                actions.transition_to("invalid_input_failed").error_message("unsupported document");
            }
        }
    }

    #[handler]
    async fn route(client: &ClientConfig, actions: &mut Actions) {
        if client.get("plan") == "premium" {
            actions
                .dispatch_task("high_quality_generation")
                .transitions([("success", "finished"), ("failure", "premium_failed")]);
        } else if client.get("languages").as_array().is_some_and(|l| l.iter().any(|v| v == "en")) {
            actions.dispatch_task("standard_quality_generation").transitions([("success", "finished")]);
        } else {
            let fail = |a: &mut Actions| {
                a.transition_to("premium_failed").error_message("Language not supported for your plan");
            };
            fail(actions);
        }
    }

    #[handler(state = "finished", end)]
    async fn premium_finished() {}

    #[handler(state = "premium_failed", end)]
    async fn premium_failed() {}

    #[handler(state = "invalid_input_failed", end)]
    async fn invalid_input() {}
}

fn main() {
    assert_eq!(premium::blueprint().end_status("invalid_input_failed"), Some(JobStatus::Failed));
    assert_eq!(premium::blueprint().end_status("premium_failed"), Some(JobStatus::Failed));
}
