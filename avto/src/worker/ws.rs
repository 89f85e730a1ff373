//! The WebSocket command channel (`GET /_worker/ws/{worker_id}`): commands in, events out.

use super::runtime::{until_set, Orch, Shared};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// Keep one command connection to `orch` open (reconnect with backoff 1 s → ×2 → 60 s).
pub(crate) async fn ws_loop(shared: Arc<Shared>, orch: Arc<Orch>, mut shutdown: watch::Receiver<bool>) {
    let mut delay = Duration::from_secs(1);
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !orch.is_registered() {
            tokio::select! {
                _ = orch.wait_registered() => {}
                _ = until_set(&mut shutdown) => return,
            }
        }
        let url = orch.client.ws_url();
        let mut request = match url.as_str().into_client_request() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%url, "invalid WebSocket URL: {e}");
                return;
            }
        };
        for (k, v) in orch.client.headers() {
            if let Ok(v) = HeaderValue::from_str(&v) {
                request.headers_mut().insert(k, v);
            }
        }
        let connected = tokio::select! {
            r = tokio_tungstenite::connect_async(request) => r,
            _ = until_set(&mut shutdown) => return,
        };
        match connected {
            Ok((stream, _)) => {
                tracing::info!(%url, "command channel connected");
                delay = Duration::from_secs(1);
                let (mut write, mut read) = stream.split();
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                *orch.ws_out.lock().unwrap() = Some(tx);
                orch.hb_wakeup.notify_one();
                loop {
                    tokio::select! {
                        _ = until_set(&mut shutdown) => {
                            let _ = write.send(Message::Close(None)).await;
                            *orch.ws_out.lock().unwrap() = None;
                            return;
                        }
                        msg = read.next() => match msg {
                            Some(Ok(Message::Text(text))) => shared.handle_command(&orch, text.as_str()),
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
                *orch.ws_out.lock().unwrap() = None;
                orch.hb_wakeup.notify_one();
            }
            Err(e) => tracing::warn!(%url, "command channel connection failed: {e}; retrying in {delay:?}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = until_set(&mut shutdown) => return,
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}
