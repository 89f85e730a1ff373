// Cookbook recipe 14: nested blueprints.
#![deny(warnings)]
use avto::prelude::*;

#[avto::blueprint(name = "text_processor")]
pub mod text_processing {
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
    async fn text_processing_finished() {}

    #[handler(state = "failed", end)]
    async fn text_processing_failed() {}
}

#[avto::blueprint(name = "main_flow", api_version = "v1", api_endpoint = "jobs/main_flow")]
mod main_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn parent_start(actions: &mut Actions) {
        actions.transition_to("process_user_text");
    }

    #[handler(state = "process_user_text")]
    async fn main_handler(ctx: &Context, actions: &mut Actions) {
        let user_text = ctx.initial_data["raw_text"].clone();
        actions
            .run_blueprint("text_processor")
            .initial_data(json!({ "text": user_text }))
            .transitions([("success", "final_step"), ("failure", "sub_job_failed")]);
    }

    #[handler(state = "final_step")]
    async fn final_step(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(state = "sub_job_failed")]
    async fn sub_job_failed(actions: &mut Actions) {
        actions.transition_to("failed");
    }

    #[handler(state = "finished", end)]
    async fn main_finished() {}

    #[handler(state = "failed", end)]
    async fn main_failed() {}
}

fn main() {
    let bp = main_flow::blueprint();
    let sub: Vec<_> = bp
        .edges()
        .iter()
        .filter(|e| e.kind == avto::blueprint::EdgeKind::SubBlueprint)
        .map(|e| (e.from, e.label, e.to, e.handler))
        .collect();
    assert_eq!(
        sub,
        [
            ("process_user_text", "success", "final_step", "main_handler"),
            ("process_user_text", "failure", "sub_job_failed", "main_handler")
        ]
    );
    assert_eq!(text_processing::blueprint().name(), "text_processor");
}
