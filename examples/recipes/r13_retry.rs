//! Recipe 13: error codes decide retries. TRANSIENT_ERROR is retried with exponential backoff
//! (a new task id each time, up to JOB_MAX_RETRIES); PERMANENT_ERROR and INVALID_INPUT_ERROR are
//! not. After that the `failure` transition runs, and the handler sees the error code.
use avto::prelude::*;

#[avto::blueprint(name = "error_handling_flow", api_version = "v1", api_endpoint = "jobs/error_handling")]
pub mod error_handling {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("fetch_external_data")
            .params(ctx.initial_data.clone())
            .transitions([("success", "finished_successfully"), ("failure", "handle_failure")]);
    }

    #[handler(state = "handle_failure")]
    async fn handle_failure(error: Option<&TaskError>, actions: &mut Actions) {
        let code = error.map(|e| e.code.as_str()).unwrap_or("UNKNOWN");
        actions.update_context("failure_code", code);
        match code {
            "PERMANENT_ERROR" => actions.transition_to("quarantined"),
            _ => actions.transition_to("failed"),
        };
    }

    #[handler(state = "finished_successfully", end)]
    async fn finished() {}

    /// Kept for manual analysis.
    #[handler(state = "quarantined", end = "quarantined")]
    async fn quarantined() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}
