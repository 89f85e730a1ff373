//! Result batching against avto: results that finish while earlier ones are on the wire go
//! together in one `POST /_worker/tasks/results`.
//!
//! Used only once the orchestrator answered a poll with a batch (so it is avto); against the
//! Python orchestrator every result is its own `POST /_worker/tasks/result`, as in RXON. A result
//! is never held back to wait for company: with fewer than [`IN_FLIGHT`] requests outstanding
//! it leaves at once, so batching adds no latency when the worker is not busy.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::client::OrchestratorClient;
use super::WorkerError;
use crate::protocol::ResultResponse;

/// Batched result requests outstanding at once.
const IN_FLIGHT: usize = 4;
/// Most results in one request: what avto's server takes in one batch.
const MAX_BATCH: usize = crate::protocol::MAX_RESULTS_PER_BATCH;
/// Most canonical-JSON bytes in one request (avto's default body limit is 1 MiB).
const MAX_BATCH_BYTES: usize = 512 * 1024;

/// One signed result body (canonical JSON) and who waits for its answer.
pub(crate) type Pending = (String, oneshot::Sender<Result<ResultResponse, WorkerError>>);

/// Starts the sender for one orchestrator; it ends when the returned sender is dropped.
pub(crate) fn start(client: Arc<OrchestratorClient>) -> mpsc::UnboundedSender<Pending> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(send_loop(client, rx));
    tx
}

async fn send_loop(client: Arc<OrchestratorClient>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a free slot is what lets later results pile up into one batch.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut bytes = first.0.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(next) => {
                    bytes += next.0.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let client = client.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (bodies, waiters): (Vec<String>, Vec<_>) = batch.into_iter().unzip();
            match client.send_results(&bodies).await {
                Ok(answers) => {
                    for (waiter, answer) in waiters.into_iter().zip(answers) {
                        let _ = waiter.send(answer);
                    }
                }
                Err(e) => {
                    if matches!(e.status(), Some(404 | 405)) {
                        // Not avto after all (or an older one): back to one request per result.
                        client.stop_batching();
                    }
                    for waiter in waiters {
                        let _ = waiter.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
