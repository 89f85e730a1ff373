//! Job webhooks: `POST webhook_url` when a job ends, retried with backoff from a bounded queue.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::job::{Job, JobStatus};

/// Capacity of the webhook queue; when it is full new webhooks are dropped with an error log.
pub const QUEUE_CAPACITY: usize = 10_000;
const ATTEMPTS: u32 = 3;
/// Parsed webhook URLs kept (most jobs of a deployment share a few); the cache is emptied when full.
const URL_CACHE: usize = 256;

/// The webhook sender (one background task).
#[derive(Debug, Clone)]
pub struct Webhooks {
    tx: mpsc::Sender<(String, Value)>,
}

impl Webhooks {
    /// Starts the sender task on the current runtime; failed deliveries are retried after `retry_base`, then
    /// twice that (3 attempts in all).
    pub fn start(retry_base: Duration) -> Self {
        let (tx, mut rx) = mpsc::channel::<(String, Value)>(QUEUE_CAPACITY);
        tokio::spawn(async move {
            // A redirect is not followed: the receiver was named by the client, and a webhook
            // must not be bounced to an address nobody configured.
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default();
            let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
            let mut parsed: HashMap<String, reqwest::Url> = HashMap::new();
            while let Some((url, body)) = rx.recv().await {
                let target = match parsed.get(&url) {
                    Some(u) => u.clone(),
                    None => match reqwest::Url::parse(&url) {
                        Ok(u) => {
                            if parsed.len() >= URL_CACHE {
                                parsed.clear();
                            }
                            parsed.insert(url, u.clone());
                            u
                        }
                        Err(e) => {
                            tracing::error!(%url, error = %e, "webhook URL does not parse; webhook dropped");
                            continue;
                        }
                    },
                };
                let body = match serde_json::to_vec(&body) {
                    Ok(b) => axum::body::Bytes::from(b),
                    Err(e) => {
                        tracing::error!(%target, error = %e, "webhook body does not serialise; webhook dropped");
                        continue;
                    }
                };
                let client = client.clone();
                let permit = limit.clone().acquire_owned().await;
                tokio::spawn(async move {
                    let _permit = permit;
                    deliver(&client, target, body, retry_base).await;
                });
            }
        });
        Webhooks { tx }
    }

    /// Queues the webhook for a job that just ended.
    pub fn job_ended(&self, url: String, job: &Job) {
        let event = match job.status {
            JobStatus::Finished => "job_finished",
            JobStatus::Cancelled => "job_cancelled",
            JobStatus::Quarantined => "job_quarantined",
            _ => "job_failed",
        };
        let body = json!({
            "event": event,
            "job_id": job.id,
            "blueprint": job.blueprint,
            "status": job.status,
            "state": job.current_state,
            "result": job.result,
            "error_message": job.error_message,
        });
        self.send(url, body);
    }

    /// Queues any webhook body.
    pub fn send(&self, url: String, body: Value) {
        if let Err(e) = self.tx.try_send((url, body)) {
            tracing::error!(error = %e, "webhook queue full; webhook dropped");
        }
    }
}

async fn deliver(client: &reqwest::Client, url: reqwest::Url, body: axum::body::Bytes, retry_base: Duration) {
    for attempt in 0..ATTEMPTS {
        let request = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(reqwest::Body::from(body.clone()));
        match request.send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                tracing::warn!(%url, status = %r.status(), "webhook rejected; not retried");
                return;
            }
            Ok(r) => tracing::warn!(%url, status = %r.status(), attempt, "webhook failed"),
            Err(e) => tracing::warn!(%url, error = %e, attempt, "webhook failed"),
        }
        if attempt + 1 < ATTEMPTS {
            tokio::time::sleep(retry_base * (1u32 << attempt)).await;
        }
    }
    tracing::error!(%url, "webhook gave up after {ATTEMPTS} attempts");
}
