//! Recipe 5: conditional routing. Several handlers for `process_text`, each guarded by a Rust
//! boolean expression over `ctx`, tried in source order; the unconditional one is the fallback.
use avto::prelude::*;

#[avto::blueprint(name = "multilingual_flow", api_version = "v1", api_endpoint = "jobs/multilingual_flow")]
pub mod multilingual {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("process_text");
    }

    #[handler(state = "process_text")]
    #[when(ctx.initial_data["language"] == "en")]
    async fn english(ctx: &Context, actions: &mut Actions) {
        actions.dispatch_task("process_en").params(ctx.initial_data.clone()).transitions([("success", "finished")]);
    }

    #[handler(state = "process_text")]
    #[when(ctx.initial_data["language"] == "de")]
    async fn german(ctx: &Context, actions: &mut Actions) {
        actions.dispatch_task("process_de").params(ctx.initial_data.clone()).transitions([("success", "finished")]);
    }

    #[handler(state = "process_text")]
    async fn unsupported(actions: &mut Actions) {
        actions.transition_to("unsupported_language").error_message("language not supported");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "unsupported_language", end = "failed")]
    async fn unsupported_language() {}
}
