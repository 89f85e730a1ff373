//! Rust SDK task handlers of the worker interop tests (`worker_interop_avto.rs`,
//! `worker_interop_python.rs`): the echo task that can fail, report progress, sleep until
//! cancelled or panic on request, and a classifier with a custom result status.

use std::time::Duration;

use avto::worker::{TaskHandle, TaskOutcome};
use serde::Deserialize;
use serde_json::{json, Value};

/// The echo task's params: what to do, and the rest to echo back.
#[derive(Debug, Deserialize)]
pub struct EchoParams {
    #[serde(default)]
    pub fail: bool,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub progress: bool,
    #[serde(default)]
    pub sleep: Option<f64>,
    #[serde(default)]
    pub panic: bool,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

/// Jobs whose echo task observed a cancellation.
static CANCELLED_JOBS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Whether the echo task of `job_id` saw its cancellation (in this test binary).
pub fn saw_cancellation(job_id: &str) -> bool {
    CANCELLED_JOBS.lock().unwrap().iter().any(|j| j == job_id)
}

/// `{"echo": params + {"worker": id}}`; `progress` reports 0.5 "halfway" first, `sleep` waits
/// (ending early, as cancelled, when the task is cancelled), `panic` panics, `fail` fails with
/// `error_code` (default `INVALID_INPUT_ERROR`).
pub async fn echo(p: EchoParams, task: TaskHandle) -> TaskOutcome {
    if p.progress {
        task.progress(0.5, "halfway").await;
    }
    if let Some(s) = p.sleep {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(s)) => {}
            _ = task.cancelled() => {
                CANCELLED_JOBS.lock().unwrap().push(task.job_id().to_owned());
                return TaskOutcome::cancelled();
            }
        }
    }
    if p.panic {
        panic!("boom requested");
    }
    if p.fail {
        return TaskOutcome::failure(p.error_code.unwrap_or_else(|| "INVALID_INPUT_ERROR".into()), "failure requested");
    }
    let mut echoed = p.rest;
    echoed.insert("worker".into(), json!(task.worker_id()));
    TaskOutcome::success(json!({ "echo": echoed }))
}

/// The classifier's params: a score below 0.5 asks for a review.
#[derive(Debug, Deserialize)]
pub struct ClassifyParams {
    pub score: f64,
}
