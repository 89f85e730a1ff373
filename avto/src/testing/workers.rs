//! [`TestWorker`]: an in-process Rust SDK worker ([`crate::worker`]) that a test stops
//! gracefully or kills abruptly.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::worker::{ShutdownHandle, Worker, WorkerBuilder, WorkerError};

/// A [`Worker`] running in this process on a runtime of its own (one thread), so that it can be
/// killed like a process: [`TestWorker::kill`] drops the runtime with every task of the worker
/// (no `offline` heartbeat, no more heartbeats, polls or results), while [`TestWorker::stop`]
/// is the graceful shutdown of SIGTERM (stop polling, `offline` heartbeat, running tasks drained
/// and their results delivered). Dropping it asks for the graceful shutdown without waiting.
#[derive(Debug)]
pub struct TestWorker {
    id: String,
    shutdown: ShutdownHandle,
    kill: Mutex<Option<oneshot::Sender<()>>>,
    done: Mutex<Option<oneshot::Receiver<Result<(), WorkerError>>>>,
    /// How long a graceful stop may take (shutdown timeout + cancel grace + request timeout + 5 s).
    stop_bound: Duration,
}

impl TestWorker {
    /// A worker builder with fast timings for tests: the test worker token and secret
    /// ([`super::WORKER_TOKEN`], [`super::SECRET`]), heartbeats every 300 ms, short polls,
    /// backoffs and shutdown timeout (2 s), no WebSocket. Add the orchestrator URL and tasks
    /// (or use [`TestServer::worker_builder`](super::TestServer::worker_builder), which sets the URL
    /// and the server's tokens).
    pub fn builder(worker_id: &str) -> WorkerBuilder {
        Worker::builder()
            .worker_id(worker_id)
            .token(super::WORKER_TOKEN)
            .secret_key(super::SECRET)
            .heartbeat_interval(Duration::from_millis(300))
            .shutdown_timeout(Duration::from_secs(2))
            .configure(|c| {
                c.idle_poll_delay = Duration::from_millis(50);
                c.task_poll_timeout = Duration::from_secs(2);
                c.heartbeat_cooldown = Duration::from_millis(100);
                c.result_retry_initial_delay = Duration::from_millis(100);
                c.registration_retry_initial_delay = Duration::from_millis(100);
                c.registration_retry_max_delay = Duration::from_secs(1);
                c.poll_backoff_initial = Duration::from_millis(100);
                c.poll_backoff_max = Duration::from_secs(1);
                c.cancel_grace = Duration::from_millis(500);
                c.request_timeout = Duration::from_secs(5);
            })
    }

    /// Builds the worker and runs it in the background (on its own thread and runtime); returns
    /// once it is built (not once it is registered: see
    /// [`TestServer::wait_workers`](super::TestServer::wait_workers)).
    pub fn spawn(builder: WorkerBuilder) -> Result<TestWorker, WorkerError> {
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel();
        let thread = std::thread::Builder::new().name("avto-test-worker".into());
        let spawned = thread.spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(WorkerError::Config(format!("cannot start a runtime: {e}"))));
                    return;
                }
            };
            let worker = match rt.block_on(async { builder.build() }) {
                Ok(w) => w,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let cfg = worker.config();
            let bound = cfg.shutdown_timeout + cfg.cancel_grace + cfg.request_timeout + Duration::from_secs(5);
            let _ = ready_tx.send(Ok((cfg.worker_id.clone(), worker.shutdown_handle(), bound)));
            let ran = rt.block_on(async move {
                tokio::select! {
                    ran = worker.run_until(std::future::pending()) => Some(ran),
                    Ok(()) = kill_rx => None,
                }
            });
            // Killed or stopped: every task the worker spawned (heartbeats, polls, handlers,
            // result deliveries) ends here, at its next await.
            rt.shutdown_background();
            let _ = done_tx.send(ran.unwrap_or(Ok(())));
        });
        if let Err(e) = spawned {
            return Err(WorkerError::Config(format!("cannot start a thread: {e}")));
        }
        let (id, shutdown, stop_bound) = ready_rx
            .recv()
            .map_err(|_| WorkerError::Config("the worker thread ended before the worker was built".into()))??;
        Ok(TestWorker { id, shutdown, kill: Mutex::new(Some(kill_tx)), done: Mutex::new(Some(done_rx)), stop_bound })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the worker still runs (not stopped, not killed).
    pub fn is_running(&self) -> bool {
        self.kill.lock().as_ref().is_some_and(|k| !k.is_closed())
    }

    /// Graceful shutdown (what SIGTERM does); returns once the worker has stopped, with what its
    /// run returned. An error also when it does not stop within its shutdown bound (then it is
    /// killed) or was already stopped.
    pub async fn stop(&self) -> Result<(), WorkerError> {
        self.shutdown.shutdown();
        let Some(done) = self.done.lock().take() else {
            return Err(WorkerError::Config(format!("worker {} was already stopped or killed", self.id)));
        };
        match tokio::time::timeout(self.stop_bound, done).await {
            Ok(Ok(ran)) => {
                self.kill.lock().take();
                ran
            }
            Ok(Err(_)) => Err(WorkerError::Config(format!("worker {}: its thread ended abruptly", self.id))),
            Err(_) => {
                self.kill_now();
                Err(WorkerError::Config(format!("worker {} did not stop in {:?}: killed", self.id, self.stop_bound)))
            }
        }
    }

    /// Abrupt end, like `kill -9`: the worker's runtime is dropped with all its tasks, so no
    /// goodbye (`offline` heartbeat), no more heartbeats, and its running tasks never report.
    /// The orchestrator notices through the missing heartbeats
    /// (`WORKER_HEALTH_CHECK_INTERVAL_SECONDS`). Returns once the worker is gone.
    pub async fn kill(&self) {
        self.kill_now();
        let done = self.done.lock().take();
        if let Some(done) = done {
            let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
        }
    }

    fn kill_now(&self) {
        if let Some(k) = self.kill.lock().take() {
            let _ = k.send(());
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.shutdown.shutdown();
    }
}
