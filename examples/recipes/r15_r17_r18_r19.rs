//! Recipes 15, 17, 18 and 19: a graph to render, client configuration, start/end handlers,
//! resource requirements.
use avto::prelude::*;
use serde::Deserialize;

/// Recipe 15: render with `cargo avto graph --blueprint conditional_flow --format svg -o flow.svg`.
#[avto::blueprint(name = "conditional_flow")]
pub mod conditional {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("process_data");
    }

    #[handler(state = "process_data")]
    #[when(ctx.initial_data["type"] == "A")]
    async fn process_a(actions: &mut Actions) {
        actions.dispatch_task("task_a").transitions([("success", "finished"), ("failure", "failed")]);
    }

    #[handler(state = "process_data")]
    #[when(ctx.initial_data["type"] == "B")]
    async fn process_b(actions: &mut Actions) {
        actions.dispatch_task("task_b").transitions([("success", "finished"), ("failure", "failed")]);
    }

    #[handler(state = "process_data")]
    async fn process_other(actions: &mut Actions) {
        actions.transition_to("failed").error_message("unknown type");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}

/// Recipe 17: the client's configuration from clients.toml, in a handler and in a condition.
#[avto::blueprint(name = "premium_flow", api_version = "v1", api_endpoint = "jobs/premium_flow")]
pub mod premium {
    use super::*;

    #[handler(state = "start", start)]
    #[when(ctx.client.plan == "premium")]
    async fn premium(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("high_quality_generation")
            .params(ctx.initial_data.clone())
            .transitions([("success", "finished")]);
    }

    #[handler(state = "start")]
    async fn standard(client: &ClientConfig, ctx: &Context, actions: &mut Actions) {
        let languages = client.get("languages").as_array().cloned().unwrap_or_default();
        if languages.iter().any(|l| l == "en") {
            actions
                .dispatch_task("standard_quality_generation")
                .params(ctx.initial_data.clone())
                .transitions([("success", "finished")]);
        } else {
            actions.transition_to("failed").error_message("Language not supported for your plan");
        }
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}

/// The typed input of `validation_example`.
#[derive(Debug, Deserialize)]
pub struct Document {
    pub user_id: String,
    pub document_type: String,
}

/// Recipe 18: validation and routing in the start handler, outcomes in end handlers.
#[avto::blueprint(name = "validation_example", api_version = "v1", api_endpoint = "jobs/validation")]
pub mod validation {
    use super::*;

    #[handler(state = "validate_input", start)]
    async fn validate(ctx: &Context, actions: &mut Actions) {
        match Document::deserialize(&ctx.initial_data) {
            Err(_) => {
                actions.transition_to("invalid_input_failed");
            }
            Ok(doc) => {
                actions.update_context("validated_user", &doc.user_id);
                actions.update_context("doc_type", &doc.document_type);
                if doc.document_type == "invoice" {
                    actions.transition_to("process_invoice");
                } else {
                    actions.transition_to("process_other_document");
                }
            }
        }
    }

    #[handler(state = "process_invoice")]
    async fn invoice(InitialData(doc): InitialData<Document>, actions: &mut Actions) {
        actions.dispatch_task("invoice_ocr").params(json!({"user": doc.user_id})).transitions([
            ("success", "cleanup_and_notify_success"),
            ("rejected", "handle_rejection"),
            ("failure", "handle_rejection"),
        ]);
    }

    #[handler(state = "process_other_document")]
    async fn other(actions: &mut Actions) {
        actions.transition_to("cleanup_and_notify_success");
    }

    #[handler(state = "cleanup_and_notify_success", end)]
    async fn success(ctx: &Context) {
        tracing::info!(job_id = %ctx.job_id, "finished successfully; notification sent");
    }

    #[handler(state = "handle_rejection", end = "failed")]
    async fn rejection(ctx: &Context) {
        tracing::info!(job_id = %ctx.job_id, reason = %ctx.history("rejection_reason"), "rejected");
    }

    #[handler(state = "invalid_input_failed", end)]
    async fn invalid() {}
}

/// Recipe 19: only a worker with an NVIDIA T4 (16 GB VRAM or more) and the model installed.
#[avto::blueprint(name = "gpu_intensive_flow", api_version = "v1", api_endpoint = "jobs/gpu_flow")]
pub mod gpu {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("video_montage")
            .params(ctx.initial_data.clone())
            .resource_requirements(json!({
                "gpu": {"model": "NVIDIA T4", "vram_gb": 16},
                "installed_models": ["stable-diffusion-1.5"]
            }))
            .transitions([("success", "finished"), ("failure", "failed")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}
