// Cookbook recipe 1: a linear pipeline.
use avto::prelude::*;

#[avto::blueprint(name = "simple_linear_flow", api_version = "v1", api_endpoint = "jobs/simple_flow")]
mod simple_flow {
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
        tracing::warn!(job_id = %ctx.job_id, "pipeline failed");
    }
}

fn main() {
    let bp = simple_flow::blueprint();
    assert_eq!(bp.name(), "simple_linear_flow");
    assert_eq!(simple_flow::NAME, "simple_linear_flow");
    assert_eq!(bp.api_version(), Some("v1"));
    assert_eq!(bp.api_endpoint(), Some("jobs/simple_flow"));
    assert_eq!(bp.start_state(), "start");
    assert_eq!(bp.end_status("finished"), Some(JobStatus::Finished));
    assert_eq!(bp.end_status("failed"), Some(JobStatus::Failed));
    assert_eq!(bp.dot(), simple_flow::DOT);
    assert_eq!(bp.edges().len(), 4);
    assert!(avto::Blueprint::registered().iter().any(|b| b.name() == "simple_linear_flow"));
}
