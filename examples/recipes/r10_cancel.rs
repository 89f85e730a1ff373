//! Recipe 10: a cancellable long task. `POST /api/v1/jobs/{id}/cancel` ends the job
//! `cancelled` at once and tells the worker (WebSocket push, heartbeat `cancel_task_ids`, and
//! `task.is_cancelled()` for Rust workers). A worker that stops on its own returns status
//! `cancelled`, which follows the `cancelled` transition.
use avto::prelude::*;

#[avto::blueprint(name = "cancellable_flow", api_version = "v1", api_endpoint = "jobs/cancellable")]
pub mod cancellable {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions.dispatch_task("long_video_processing").params(ctx.initial_data.clone()).transitions([
            ("success", "finished_successfully"),
            ("failure", "task_failed"),
            ("cancelled", "task_cancelled"),
        ]);
    }

    #[handler(state = "finished_successfully", end)]
    async fn success() {}

    #[handler(state = "task_failed", end)]
    async fn failure() {}

    #[handler(state = "task_cancelled", end)]
    async fn cancelled(ctx: &Context) {
        tracing::info!(job_id = %ctx.job_id, "cancelled by the worker");
    }
}
