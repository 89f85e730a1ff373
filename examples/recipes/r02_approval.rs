//! Recipe 2: human in the loop. The job waits in `waiting_for_human` until a moderator posts
//! `{"decision": "approved"}` (or `rejected`) to `POST /api/v1/jobs/{id}/approval`
//! (or Avtomatika's `POST /_public/webhooks/approval/{id}`).
use avto::prelude::*;

#[avto::blueprint(name = "moderation_flow", api_version = "v1", api_endpoint = "jobs/moderation_flow")]
pub mod moderation {
    use super::*;

    #[handler(state = "generate_data", start)]
    async fn generate_data(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("data_generation")
            .params(ctx.initial_data.clone())
            .transitions([("success", "awaiting_approval"), ("failure", "failed")]);
    }

    #[handler(state = "awaiting_approval")]
    async fn awaiting_approval(ctx: &Context, actions: &mut Actions) {
        actions
            .await_human_approval()
            .integration("telegram")
            .message(format!("Approval required for job {}", ctx.job_id))
            .transitions([("approved", "process_approved_data"), ("rejected", "rejected_by_moderator")]);
    }

    #[handler(state = "process_approved_data")]
    async fn process_approved(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    /// A rejection ends the job `failed` (explicit `end = "failed"`), so clients tell it from an approval.
    #[handler(state = "rejected_by_moderator", end = "failed")]
    async fn rejected(ctx: &Context) {
        tracing::info!(job_id = %ctx.job_id, "rejected by moderator");
    }

    #[handler(state = "failed", end)]
    async fn failed() {}
}
