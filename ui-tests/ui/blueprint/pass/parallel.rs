// Cookbook recipe 3: parallel fan-out into an aggregator, and a dynamic fan-out in a loop.
#![deny(warnings)]
use avto::prelude::*;

#[avto::blueprint(name = "parallel_flow_example", api_version = "v1", api_endpoint = "/jobs/parallel_example")]
mod parallel {
    use super::*;

    #[handler(state = "start", start)]
    async fn start_parallel_tasks(actions: &mut Actions) {
        actions
            .dispatch_task("task_A")
            .params(json!({"input": "data_for_A"}))
            .transitions([("success", "aggregate_results"), ("failure", "failed")]);
        actions
            .dispatch_task("task_B")
            .params(json!({"input": "data_for_B"}))
            .transitions([("success", "aggregate_results"), ("failure", "failed")]);
    }

    #[aggregator(state = "aggregate_results")]
    async fn aggregate(results: &AggregationResults, actions: &mut Actions) {
        let data: Vec<_> = results.successes().cloned().collect();
        actions.update_context("aggregated_data", data);
        actions.transition_to("split");
    }

    #[handler]
    async fn split(ctx: &Context, actions: &mut Actions) {
        let parts = ctx.initial_data["parts"].as_array().cloned().unwrap_or_default();
        for part in parts {
            actions.dispatch_task("part").params(part).transitions([("success", "merge"), ("failure", "failed")]);
        }
    }

    #[aggregator]
    async fn merge(actions: &mut Actions) {
        actions.transition_to("end");
    }

    #[handler(state = "end", end)]
    async fn end_flow(ctx: &Context) {
        let _ = ctx.history("aggregated_data");
    }

    #[handler(state = "failed", end)]
    async fn failed_handler() {}
}

fn main() {
    let bp = parallel::blueprint();
    assert!(bp.is_aggregator("aggregate_results"));
    assert!(bp.is_aggregator("merge"));
    assert_eq!(bp.api_endpoint(), Some("/jobs/parallel_example"));
    assert!(parallel::DOT.contains("\"aggregate_results\" [style=\"rounded,dashed\"];"));
}
