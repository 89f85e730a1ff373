// Cookbook recipe 5: conditional routing with `#[when]`, tried in source order, with a fallback.
#![deny(warnings)]
use avto::prelude::*;

#[avto::blueprint(name = "multilingual_flow", api_version = "v1", api_endpoint = "jobs/multilingual_flow")]
mod multilingual {
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
    #[avto::when(ctx.initial_data["language"] == "de" && !ctx.initial_data["text"].is_null())]
    async fn german(ctx: &Context, actions: &mut Actions) {
        actions.dispatch_task("process_de").params(ctx.initial_data.clone()).transitions([("success", "finished")]);
    }

    #[handler(state = "process_text")]
    async fn unsupported(actions: &mut Actions) {
        actions.transition_to("failed").error_message("unsupported language");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}

fn main() {
    let spec = multilingual::blueprint().spec();
    let conds: Vec<_> = spec.handlers.iter().map(|h| h.condition.as_ref().map(|c| c.source)).collect();
    assert_eq!(
        conds,
        [
            None,
            Some(r#"ctx.initial_data["language"] == "en""#),
            Some(r#"ctx.initial_data["language"] == "de" && !ctx.initial_data["text"].is_null()"#),
            None,
            None,
            None
        ]
    );
    assert!(multilingual::DOT.contains(
        r#""process_text" -> "finished" [label="when ctx.initial_data[\"language\"] == \"en\": success"];"#
    ));
}
