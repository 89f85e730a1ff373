//! Recipe 9: a data store shared by every job of the blueprint (and, on Redis, by every
//! orchestrator instance). `incr` is atomic, so concurrent jobs never lose a count.
use avto::prelude::*;

#[avto::blueprint(
    name = "analytics_flow",
    api_version = "v1",
    api_endpoint = "jobs/analytics",
    data_stores(request_counter(total_requests = 0))
)]
pub mod analytics {
    use super::*;

    #[handler(state = "start", start)]
    async fn count_request(stores: &DataStores, actions: &mut Actions) -> Result<(), StorageError> {
        let n = stores.store("request_counter").incr("total_requests", 1).await?;
        actions.update_context("request_number", n);
        actions.transition_to("finished");
        Ok(())
    }

    #[handler(state = "finished", end)]
    async fn show_result(ctx: &Context) {
        tracing::info!(job_id = %ctx.job_id, number = %ctx.history("request_number"), "request processed");
    }
}
