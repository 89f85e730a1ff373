//! Recipes 6, 7 and 8: dispatch strategy, priority, cost limits.
use avto::prelude::*;

/// Recipe 6: the least loaded worker takes the task.
#[avto::blueprint(name = "critical_flow", api_version = "v1", api_endpoint = "jobs/critical_flow")]
pub mod critical {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("critical_computation")
            .params(ctx.initial_data.clone())
            .dispatch_strategy(DispatchStrategy::LeastConnections)
            .transitions([("success", "finished")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

/// Recipe 7: urgent tasks first; FIFO among equal priorities.
#[avto::blueprint(name = "priority_flow", api_version = "v1", api_endpoint = "jobs/priority_flow")]
pub mod priority {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        let urgent = ctx.initial_data["is_urgent"].as_bool().unwrap_or(false);
        actions
            .dispatch_task("computation")
            .params(ctx.initial_data.clone())
            .priority(if urgent { 10.0 } else { 0.0 })
            .transitions([("success", "finished")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

/// Recipe 8: the cheapest worker, but only within budget. No worker within budget is a failure
/// that follows the `failure` transition (after the dispatch timeout).
#[avto::blueprint(name = "cost_optimized_flow", api_version = "v1", api_endpoint = "jobs/cost_optimized_flow")]
pub mod cost_optimized {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("image_compression")
            .params(ctx.initial_data.clone())
            .dispatch_strategy(DispatchStrategy::Cheapest)
            .max_cost(0.05)
            .dispatch_timeout(Duration::from_secs(30))
            .transitions([("success", "finished"), ("failure", "too_expensive")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "too_expensive", end = "failed")]
    async fn too_expensive(error: Option<&TaskError>) {
        tracing::warn!(?error, "no worker met the cost criteria");
    }
}
