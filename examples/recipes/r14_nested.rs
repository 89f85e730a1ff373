//! Recipe 14: nested blueprints. `main_flow` runs `text_processor` as a child job and resumes
//! exactly once when the child ends, on any outcome (`success` when the child finished,
//! `failure` otherwise). The child's outcome is in `state_history["sub_job_{id}_result"]`.
use avto::prelude::*;

/// A reusable blueprint without an endpoint: only runnable as a child.
#[avto::blueprint(name = "text_processor")]
pub mod text_processor {
    use super::*;

    #[handler(state = "start", start)]
    async fn process(ctx: &Context, actions: &mut Actions) {
        match ctx.initial_data["text"].as_str() {
            Some(text) if !text.is_empty() => {
                actions.update_context("processed_text", text.to_uppercase());
                actions.transition_to("finished");
            }
            _ => {
                actions.transition_to("failed");
            }
        }
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}

#[avto::blueprint(name = "main_flow", api_version = "v1", api_endpoint = "jobs/main_flow")]
pub mod main_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("process_user_text");
    }

    #[handler(state = "process_user_text")]
    async fn run_child(ctx: &Context, actions: &mut Actions) {
        actions
            .run_blueprint("text_processor")
            .initial_data(json!({"text": ctx.initial_data["raw_text"]}))
            .transitions([("success", "final_step"), ("failure", "sub_job_failed")]);
    }

    #[handler(state = "final_step")]
    async fn final_step(ctx: &Context, actions: &mut Actions) {
        let outcome =
            ctx.state_history.iter().find(|(k, _)| k.starts_with("sub_job_")).map(|(_, v)| v["result"].clone());
        actions.update_context("child_result", outcome);
        actions.transition_to("finished");
    }

    #[handler(state = "sub_job_failed")]
    async fn sub_job_failed(actions: &mut Actions) {
        actions.transition_to("failed");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}
