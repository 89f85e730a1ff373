//! Recipe 1: a simple linear pipeline, start -> step_A (worker task) -> step_B -> finished.
use avto::prelude::*;

#[avto::blueprint(name = "simple_linear_flow", api_version = "v1", api_endpoint = "jobs/simple_flow")]
pub mod simple_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("step_A");
    }

    #[handler(state = "step_A")]
    async fn step_a(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("simple_task")
            .params(ctx.initial_data.clone())
            .transitions([("success", "step_B"), ("failure", "failed")]);
    }

    #[handler(state = "step_B")]
    async fn step_b(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(state = "finished", end)]
    async fn finished(ctx: &Context) {
        tracing::info!(job_id = %ctx.job_id, "pipeline completed");
    }

    #[handler(state = "failed", end)]
    async fn failed(ctx: &Context) {
        tracing::warn!(job_id = %ctx.job_id, error = ?ctx.last_error, "pipeline failed");
    }
}
