//! Recipes 12a and 12b: files. 12a reads and writes the job's files (`jobs/{job_id}/` in the
//! object store) from handlers with `TaskFiles`; 12b passes an `s3://` URI to a worker, whose
//! SDK downloads it and uploads the files it returns.
//!
//! 12a over HTTP: the job id (and so the folder `jobs/{job_id}/`) exists only once the job is
//! created, so the flow starts by waiting for the client's upload:
//!
//! ```text
//! POST /api/v1/jobs/s3_ops                               -> {"job_id": ID}
//! PUT  /api/v1/jobs/ID/files/content/config.json          (or a PUT to the URL of GET .../files/upload?filename=config.json)
//! POST /api/v1/jobs/ID/approval {"decision": "uploaded"}  -> check_config reads config.json
//! ```
use avto::prelude::*;

#[avto::blueprint(name = "s3_ops_flow", api_version = "v1", api_endpoint = "jobs/s3_ops")]
pub mod s3_ops {
    use super::*;

    /// Waits until the client has uploaded `config.json` and says so.
    #[handler(state = "awaiting_upload", start)]
    async fn awaiting_upload(ctx: &Context, actions: &mut Actions) {
        actions
            .await_human_approval()
            .message(format!("upload config.json to job {}, then post {{\"decision\": \"uploaded\"}}", ctx.job_id))
            .transitions([("uploaded", "check_config")]);
    }

    #[handler(state = "check_config")]
    async fn check_config(files: Option<&TaskFiles>, actions: &mut Actions) {
        let Some(files) = files else {
            actions.transition_to("failed").error_message("file storage is not configured");
            return;
        };
        match files.read_json::<serde_json::Value>("config.json").await {
            Ok(config) if config["mode"] == "fast" => actions.transition_to("fast_processing"),
            Ok(_) => actions.transition_to("deep_processing"),
            Err(_) => actions.transition_to("config_missing"),
        };
    }

    #[handler(state = "fast_processing")]
    async fn fast(files: &TaskFiles, actions: &mut Actions) -> Result<(), avto::files::FileError> {
        files.write_text("result.txt", "Done fast.").await?;
        actions.transition_to("finished");
        Ok(())
    }

    /// The worker gets the file's URI (`s3://{bucket}/jobs/{job_id}/config.json`); its SDK downloads it.
    #[handler(state = "deep_processing")]
    async fn deep(files: &TaskFiles, actions: &mut Actions) -> Result<(), avto::files::FileError> {
        actions
            .dispatch_task("deep_analysis")
            .params(json!({"config": files.uri("config.json")?}))
            .transitions([("success", "finished"), ("failure", "failed")]);
        Ok(())
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "config_missing", end = "failed")]
    async fn config_missing() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}

/// Recipe 12b: the blueprint only passes the URI along.
#[avto::blueprint(name = "s3_video_flow", api_version = "v1", api_endpoint = "jobs/s3_video")]
pub mod s3_video {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("process_video_from_s3")
            .params(json!({"video_path": ctx.initial_data["s3_uri"]}))
            .transitions([("success", "finished"), ("failure", "failed")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}
