//! A built [`Worker`] and its run: the loops it starts (one session and one command channel per
//! orchestrator, one poll loop), the shutdown it waits for (SIGINT/SIGTERM or a
//! [`ShutdownHandle`]) and the drain after it.

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

use super::heartbeat::{registration_body, run_session, send_offline_heartbeats};
use super::poll::poll_loop;
use super::shutdown::until_set;
use super::state::WorkerState;
use super::ws::ws_loop;
use super::{WorkerConfig, WorkerError};

/// A Rust worker speaking RXON. Build it with [`Worker::builder`] or [`Worker::from_env`], then
/// [`Worker::run`].
///
/// ```no_run
/// use avto::worker::{TaskHandle, TaskOutcome, Worker};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct EchoParams { msg: String }
///
/// # async fn main_() -> Result<(), avto::worker::WorkerError> {
/// Worker::builder()
///     .worker_id("echo-worker-1")
///     .orchestrator_url("http://127.0.0.1:8080")
///     .token("secure-worker-token")
///     .task("echo", |p: EchoParams, task: TaskHandle| async move {
///         task.progress(0.5, "halfway").await;
///         TaskOutcome::success(serde_json::json!({"echo": p.msg}))
///     })
///     .build()?
///     .run()
///     .await
/// # }
/// ```
pub struct Worker {
    state: Arc<WorkerState>,
    stop: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.state.cfg.worker_id)
            .field("skills", &self.state.skills.order)
            .finish_non_exhaustive()
    }
}

/// Triggers a graceful shutdown of a running [`Worker`] (what SIGTERM does).
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    stop: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

impl Worker {
    /// The worker of a built state (see [`WorkerBuilder::build`](super::WorkerBuilder::build)).
    pub(crate) fn new(state: Arc<WorkerState>) -> Self {
        let (stop, _) = watch::channel(false);
        Worker { state, stop: Arc::new(stop) }
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.state.cfg
    }

    /// The `skills_hash` this worker reports.
    pub fn skills_hash(&self) -> &str {
        &self.state.skills.hash
    }

    /// The registration body this worker sends (signed, with a current timestamp).
    pub fn registration_payload(&self) -> Value {
        registration_body(&self.state)
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { stop: self.stop.clone() }
    }

    /// Run until SIGINT/SIGTERM (or a [`ShutdownHandle`]), then shut down gracefully.
    pub async fn run(self) -> Result<(), WorkerError> {
        self.run_until(shutdown_signal()).await
    }

    /// Run until `signal` resolves (or a [`ShutdownHandle`] fires), then shut down gracefully:
    /// stop polling, send the `offline` heartbeat, wait for running tasks (up to
    /// `shutdown_timeout`, then cancel them) and deliver their results.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), WorkerError> {
        let state = self.state.clone();
        let cfg = &state.cfg;
        tracing::info!(
            worker_id = %cfg.worker_id,
            skills = ?state.skills.order,
            orchestrators = ?cfg.orchestrators.iter().map(|o| o.url.as_str()).collect::<Vec<_>>(),
            mode = ?cfg.multi_orchestrator_mode,
            "worker starting"
        );
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut background = Vec::new();
        for session in &state.sessions {
            background.push(tokio::spawn(run_session(state.clone(), session.clone(), shutdown_rx.clone())));
            if cfg.enable_websockets {
                background.push(tokio::spawn(ws_loop(state.clone(), session.clone(), shutdown_rx.clone())));
            }
        }
        let poller = tokio::spawn(poll_loop(state.clone(), shutdown_rx.clone()));

        let mut stop_rx = self.stop.subscribe();
        tokio::select! {
            _ = signal => {}
            _ = until_set(&mut stop_rx) => {}
        }
        tracing::info!("shutdown requested: draining");
        state.stop_accepting();
        let _ = shutdown_tx.send(true);
        let _ = poller.await;

        // stop new dispatches first
        send_offline_heartbeats(&state).await;

        // wait for running tasks (and their results)
        if !state.wait_idle(cfg.shutdown_timeout).await {
            let cancelled = state.cancel_all();
            tracing::warn!("shutdown timeout reached: cancelled {cancelled} running task(s)");
            state.wait_idle(cfg.cancel_grace + cfg.request_timeout).await;
        }
        for task in background {
            task.abort();
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// SIGINT or SIGTERM (SIGINT only where there is no SIGTERM).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
