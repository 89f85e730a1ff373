//! The polling loop ([`poll_loop`]): one long-poll at a time over all orchestrators, in the order
//! [`MultiOrchestratorMode`](super::MultiOrchestratorMode) gives, while the worker has a free
//! slot; polled tasks go to [`execute`](super::execute).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::client::Polled;
use super::execute::{accept_task, reject_unreadable};
use super::select::PollPlanner;
use super::shutdown::{sleep_or_shutdown, until_set};
use super::state::WorkerState;
use super::WorkerError;
use crate::protocol::worker_status;

/// The single polling loop over all orchestrators (one long-poll at a time, like the SDK).
pub(crate) async fn poll_loop(state: Arc<WorkerState>, mut shutdown: watch::Receiver<bool>) {
    let cfg = &state.cfg;
    // start once any orchestrator accepted the registration
    loop {
        if *shutdown.borrow() {
            return;
        }
        let notified = state.registered_any.notified();
        if state.sessions.iter().any(|session| session.is_registered()) {
            break;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = until_set(&mut shutdown) => return,
        }
    }
    let mut planner = PollPlanner::new(
        cfg.multi_orchestrator_mode,
        state.sessions.iter().map(|session| session.cfg.weight).collect(),
    );
    loop {
        if *shutdown.borrow() {
            return;
        }
        let (status, _, _) = state.status();
        if status != worker_status::IDLE {
            let changed = state.state_changed.notified();
            tokio::select! {
                _ = tokio::time::sleep(cfg.idle_poll_delay) => {}
                _ = changed => {}
                _ = until_set(&mut shutdown) => return,
            }
            continue;
        }
        let now = Instant::now();
        let healthy: Vec<bool> = state.sessions.iter().map(|session| session.pollable(now)).collect();
        let mut found = false;
        for idx in planner.plan(&healthy) {
            if *shutdown.borrow() {
                return;
            }
            let (status, available, hot) = state.status();
            if status != worker_status::IDLE {
                break;
            }
            let session = &state.sessions[idx];
            if !session.pollable(Instant::now()) {
                continue;
            }
            let max = state.batch_size();
            let res = tokio::select! {
                r = session.client.poll(cfg.task_poll_timeout, &available, &hot, max) => r,
                _ = until_set(&mut shutdown) => return,
            };
            match res {
                Ok(tasks) if !tasks.is_empty() => {
                    session.reset_poll_backoff();
                    for polled in tasks {
                        match polled {
                            Polled::Task(raw) => accept_task(&state, session, raw),
                            Polled::Unreadable { job_id, task_id, task_type, error } => {
                                reject_unreadable(&state, session, job_id, task_id, task_type, error)
                            }
                        }
                    }
                    found = true;
                    break;
                }
                Ok(_) => session.reset_poll_backoff(),
                Err(e @ (WorkerError::Network { .. } | WorkerError::RateLimited { .. })) => {
                    let delay = session.poll_failed(&e);
                    tracing::warn!(orchestrator = %session.cfg.url, "polling failed: {e}; backing off {delay:?}");
                }
                Err(e) => {
                    tracing::error!(orchestrator = %session.cfg.url, "polling failed: {e}");
                    if e.means_session_lost() {
                        session.request_reregister();
                    }
                }
            }
        }
        if !found && !sleep_or_shutdown(cfg.idle_poll_delay, &mut shutdown).await {
            return;
        }
    }
}
