//! The WebSocket command channel (`GET /_worker/ws/{worker_id}`): commands in (`cancel_task` and
//! custom ones, see [`handle_command`]), events out. One connection per orchestrator session,
//! kept open by [`ws_loop`].

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use super::backoff::Backoff;
use super::session::OrchestratorSession;
use super::shutdown::until_set;
use super::state::WorkerState;
use crate::protocol::{self, WorkerCommand};

/// Keep one command connection to `session` open (reconnect with backoff 1 s → ×2 → 60 s).
pub(crate) async fn ws_loop(
    state: Arc<WorkerState>,
    session: Arc<OrchestratorSession>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !session.is_registered() {
            tokio::select! {
                _ = session.wait_registered() => {}
                _ = until_set(&mut shutdown) => return,
            }
        }
        let url = session.client.ws_url();
        let mut request = match url.as_str().into_client_request() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%url, "invalid WebSocket URL: {e}");
                return;
            }
        };
        for (k, v) in session.client.headers() {
            if let Ok(v) = HeaderValue::from_str(&v) {
                request.headers_mut().insert(k, v);
            }
        }
        let connected = tokio::select! {
            r = tokio_tungstenite::connect_async(request) => r,
            _ = until_set(&mut shutdown) => return,
        };
        let delay = match connected {
            Ok((stream, _)) => {
                tracing::info!(%url, "command channel connected");
                backoff.reset();
                let (mut write, mut read) = stream.split();
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                *session.ws_out.lock().unwrap() = Some(tx);
                session.heartbeat_wakeup.notify_one();
                loop {
                    tokio::select! {
                        _ = until_set(&mut shutdown) => {
                            let _ = write.send(Message::Close(None)).await;
                            *session.ws_out.lock().unwrap() = None;
                            return;
                        }
                        msg = read.next() => match msg {
                            Some(Ok(Message::Text(text))) => handle_command(&state, &session, text.as_str()),
                            Some(Ok(Message::Close(frame))) => {
                                tracing::info!(%url, ?frame, "command channel closed by the orchestrator");
                                break;
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(%url, "command channel error: {e}");
                                break;
                            }
                            None => break,
                        },
                        out = rx.recv() => {
                            let Some(frame) = out else { break };
                            if let Err(e) = write.send(Message::Text(frame.into())).await {
                                tracing::warn!(%url, "command channel send failed: {e}");
                                break;
                            }
                        }
                    }
                }
                *session.ws_out.lock().unwrap() = None;
                session.heartbeat_wakeup.notify_one();
                backoff.step()
            }
            Err(e) => {
                let delay = backoff.step();
                tracing::warn!(%url, "command channel connection failed: {e}; retrying in {delay:?}");
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = until_set(&mut shutdown) => return,
        }
    }
}

/// One command from `session`'s channel: `cancel_task` cancels a task of that session, a custom
/// command runs its handler in the background.
fn handle_command(state: &WorkerState, session: &OrchestratorSession, text: &str) {
    let cmd: WorkerCommand = match serde_json::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("failed to parse WebSocket command: {e}");
            return;
        }
    };
    if cmd.command == protocol::COMMAND_CANCEL_TASK {
        if state.cancel_task(session.idx, cmd.task_id.as_deref(), cmd.job_id.as_deref()) {
            tracing::info!(task_id = ?cmd.task_id, "task cancelled by command");
        } else {
            tracing::debug!(task_id = ?cmd.task_id, "cancel_task for a task not running here");
        }
    } else if let Some(handler) = state.command(&cmd.command) {
        let fut = handler(cmd);
        tokio::spawn(async move {
            if let Err(e) = tokio::spawn(fut).await {
                tracing::error!("command handler failed: {e}");
            }
        });
    } else {
        tracing::warn!(command = %cmd.command, "received unknown command");
    }
}
