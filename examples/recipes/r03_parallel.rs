//! Recipe 3: parallel tasks fanning into an aggregator. Every `dispatch_task` of `start` has its
//! `success` transition into `aggregate_results`, an `#[aggregator]` state: it runs once, after
//! all branches reported, with their results in `ctx.aggregation_results` (dispatch order).
//! If a branch fails for good, the aggregator does not run and the job follows that branch's
//! `failure` transition at once.
use avto::prelude::*;

#[avto::blueprint(name = "parallel_flow_example", api_version = "v1", api_endpoint = "jobs/parallel_example")]
pub mod parallel {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
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
        let processed: Vec<_> = results.successes().cloned().collect();
        actions.update_context("aggregated_data", processed);
        actions.transition_to("end");
    }

    #[handler(state = "end", end)]
    async fn end(ctx: &Context) {
        tracing::info!(job_id = %ctx.job_id, data = %ctx.history("aggregated_data"), "process complete");
    }

    #[handler(state = "failed", end)]
    async fn failed() {}
}
