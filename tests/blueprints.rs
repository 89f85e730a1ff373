//! Blueprints used by the integration tests.

use avto::prelude::*;

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
