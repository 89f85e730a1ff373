// Cookbook recipe 2: human in the loop.
#![deny(warnings)]
use avto::prelude::*;

#[avto::blueprint(name = "moderation_flow", api_version = "v1", api_endpoint = "jobs/moderation_flow")]
mod moderation {
    use super::*;

    #[handler(state = "generate_data", start)]
    async fn generate(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("data_generation")
            .params(ctx.initial_data.clone())
            .transitions([("success", "awaiting_approval"), ("failure", "failed")]);
    }

    #[handler(state = "awaiting_approval")]
    async fn await_approval(ctx: &Context, actions: &mut Actions) {
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

    #[handler(state = "rejected_by_moderator", end = "cancelled")]
    async fn rejected(ctx: &Context) {
        let _ = &ctx.job_id;
    }

    #[handler(state = "failed", end)]
    async fn failed(error: Option<&TaskError>) {
        let _ = error;
    }
}

fn main() {
    let bp = moderation::blueprint();
    assert_eq!(bp.end_status("rejected_by_moderator"), Some(JobStatus::Cancelled));
    let approvals: Vec<_> =
        bp.edges().iter().filter(|e| e.kind == avto::blueprint::EdgeKind::Approval).map(|e| (e.label, e.to)).collect();
    assert_eq!(approvals, [("approved", "process_approved_data"), ("rejected", "rejected_by_moderator")]);
}
