//! `cargo run --example echo_worker`: a Rust worker with the `echo` skill of the Python reference's
//! `echo_worker.py` (params `fail`/`error_code`, `progress`, `sleep`, `tag_worker`), configured
//! with the SDK's environment names (ORCHESTRATOR_URL, WORKER_ID, WORKER_TOKEN,
//! ORCHESTRATOR_SECRET_KEY, ...). It works against avto and against the Python orchestrator.

use std::time::Duration;

use avto::worker::{TaskHandle, TaskOutcome};
use serde_json::Value;

/// Echo the task params back.
#[avto::task("echo")]
async fn echo(params: Value, task: TaskHandle) -> TaskOutcome {
    if params["progress"].as_bool() == Some(true) {
        task.progress(0.5, "halfway").await;
    }
    if let Some(secs) = params["sleep"].as_f64() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(secs)) => {}
            _ = task.cancelled() => return TaskOutcome::cancelled(),
        }
    }
    if params["fail"].as_bool() == Some(true) {
        let code = params["error_code"].as_str().unwrap_or("INVALID_INPUT_ERROR");
        return TaskOutcome::failure(code, "failure requested");
    }
    let mut out = params.clone();
    if params["tag_worker"].as_bool() == Some(true) {
        out["_worker"] = Value::String(task.worker_id().to_owned());
    }
    TaskOutcome::success(serde_json::json!({ "echo": out }))
}

#[tokio::main]
async fn main() -> Result<(), avto::worker::WorkerError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    // Every #[avto::task] of the binary, configured from the environment.
    avto::worker::builder_with_declared_tasks()?.worker_type("echo-worker").build()?.run().await
}
