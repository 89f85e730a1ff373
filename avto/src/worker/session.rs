//! One orchestrator as the worker sees it ([`OrchestratorSession`]): its HTTP client, whether it
//! accepted the registration, the poll backoff, the STS access token, the WebSocket's outgoing
//! channel and the result batcher. The loop that registers and sends heartbeats is in
//! `heartbeat.rs`; this module only holds the session and the calls that need nothing else
//! (results, STS).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify};

use super::backoff::Backoff;
use super::client::OrchestratorClient;
use super::result_batch;
use super::{OrchestratorConfig, WorkerConfig, WorkerError};
use crate::protocol::{RegisterResponse, ResourcesUsage, ResultResponse};
use crate::transport::Transport;

/// The worker's session with one orchestrator.
pub(crate) struct OrchestratorSession {
    /// Position in the configured orchestrator list; a running task remembers the session that
    /// sent it by this.
    pub(crate) idx: usize,
    pub(crate) cfg: OrchestratorConfig,
    pub(crate) client: Arc<OrchestratorClient>,
    /// The result batcher, started by the first result sent after the orchestrator answered a
    /// batch poll (see `worker::result_batch`).
    results: OnceLock<mpsc::UnboundedSender<result_batch::Pending>>,
    registered: AtomicBool,
    /// The orchestrator lost the session (a poll said so): register again.
    reregister: AtomicBool,
    poll_backoff: Mutex<PollBackoff>,
    /// The `skills_hash` the orchestrator has our skills for; `None` sends the full list again.
    pub(crate) synced_hash: Mutex<Option<String>>,
    /// Asks for an early (debounced) heartbeat: task start or finish, hot skills, the command
    /// channel (dis)connecting.
    pub(crate) heartbeat_wakeup: Notify,
    registered_notify: Notify,
    pub(crate) last_heartbeat: Mutex<Option<Instant>>,
    /// Frames for the WebSocket command channel while it is connected.
    pub(crate) ws_out: Mutex<Option<mpsc::UnboundedSender<String>>>,
    /// The usage last reported in a heartbeat, and when.
    pub(crate) usage_sent: Mutex<Option<(ResourcesUsage, Instant)>>,
    sts: Mutex<Option<StsState>>,
}

/// Polling this orchestrator pauses until `until` after a network error or a `429`.
#[derive(Debug)]
struct PollBackoff {
    backoff: Backoff,
    until: Option<Instant>,
}

/// An STS access token's refresh token and lifetime.
struct StsState {
    refresh_token: Option<String>,
    issued: Instant,
    lifetime: Duration,
}

impl OrchestratorSession {
    /// The session with `orchestrator`, the `idx`th of the worker's list (not registered yet).
    pub(crate) fn new(
        idx: usize,
        orchestrator: &OrchestratorConfig,
        worker: &WorkerConfig,
        transport: Transport,
    ) -> Self {
        let token = orchestrator.token.clone().unwrap_or_else(|| worker.token.clone());
        let client =
            OrchestratorClient::new(transport, &orchestrator.url, &worker.worker_id, &token, worker.request_timeout);
        let poll_backoff = Backoff::new(worker.poll_backoff_initial, worker.poll_backoff_max)
            .rate_limit_floor(worker.rate_limit_backoff_floor);
        OrchestratorSession {
            idx,
            cfg: orchestrator.clone(),
            client: Arc::new(client),
            results: OnceLock::new(),
            registered: AtomicBool::new(false),
            reregister: AtomicBool::new(false),
            poll_backoff: Mutex::new(PollBackoff { backoff: poll_backoff, until: None }),
            synced_hash: Mutex::new(None),
            heartbeat_wakeup: Notify::new(),
            registered_notify: Notify::new(),
            last_heartbeat: Mutex::new(None),
            ws_out: Mutex::new(None),
            usage_sent: Mutex::new(None),
            sts: Mutex::new(None),
        }
    }

    /// Sends one result: batched with others when the orchestrator takes batches, else alone.
    pub(crate) async fn send_result(&self, body: &Value) -> Result<ResultResponse, WorkerError> {
        if !self.client.batches() {
            return self.client.send_result(body).await;
        }
        let queue = self.results.get_or_init(|| result_batch::start(self.client.clone()));
        let (tx, rx) = oneshot::channel();
        if queue.send((crate::protocol::canonical::to_canonical_string(body), tx)).is_err() {
            return self.client.send_result(body).await;
        }
        rx.await
            .unwrap_or_else(|_| Err(WorkerError::Network { message: "result batch was dropped".into(), source: None }))
    }

    pub(crate) fn is_registered(&self) -> bool {
        self.registered.load(Ordering::SeqCst)
    }

    /// Registered, and not pausing its polls after an error.
    pub(crate) fn pollable(&self, now: Instant) -> bool {
        self.is_registered() && self.poll_backoff.lock().unwrap().until.is_none_or(|until| until <= now)
    }

    pub(crate) fn reset_poll_backoff(&self) {
        let mut poll = self.poll_backoff.lock().unwrap();
        poll.backoff.reset();
        poll.until = None;
    }

    /// Pauses polling after `err` (a network error or a `429`); returns the pause.
    pub(crate) fn poll_failed(&self, err: &WorkerError) -> Duration {
        let mut poll = self.poll_backoff.lock().unwrap();
        let delay = poll.backoff.after_error(err);
        let now = Instant::now();
        // Any delay (a huge Retry-After or backoff setting) gives an instant the clock can hold.
        poll.until = Some(now.checked_add(delay).unwrap_or_else(|| now + Duration::from_secs(365 * 86_400)));
        delay
    }

    /// Resolves when this orchestrator accepted a registration (immediately if it did).
    pub(crate) async fn wait_registered(&self) {
        loop {
            let notified = self.registered_notify.notified();
            if self.is_registered() {
                return;
            }
            notified.await;
        }
    }

    /// A registration attempt begins: not registered until it succeeds.
    pub(crate) fn registration_started(&self) {
        self.registered.store(false, Ordering::SeqCst);
    }

    /// The orchestrator accepted the registration (with an STS token in `resp` when it hands
    /// one out) and has the skills of `skills_hash`.
    pub(crate) fn registered(&self, resp: &RegisterResponse, skills_hash: &str) {
        if let Some(token) = resp.access_token.clone() {
            self.client.set_access_token(Some(token));
            *self.sts.lock().unwrap() = Some(StsState {
                refresh_token: resp.refresh_token.clone(),
                issued: Instant::now(),
                lifetime: Duration::from_secs(resp.expires_in.unwrap_or(3600).max(60) as u64),
            });
        }
        *self.synced_hash.lock().unwrap() = Some(skills_hash.to_owned());
        self.reregister.store(false, Ordering::SeqCst);
        self.reset_poll_backoff();
        self.registered.store(true, Ordering::SeqCst);
        self.registered_notify.notify_waiters();
    }

    /// The orchestrator no longer knows the session: forget what it had (skills, STS token).
    pub(crate) fn session_lost(&self) {
        *self.synced_hash.lock().unwrap() = None;
        if self.client.uses_access_token() {
            self.client.set_access_token(None);
            *self.sts.lock().unwrap() = None;
        }
    }

    /// Ask the session's loop to register again (the orchestrator lost the session).
    pub(crate) fn request_reregister(&self) {
        self.reregister.store(true, Ordering::SeqCst);
        self.heartbeat_wakeup.notify_one();
    }

    /// Whether a re-registration was asked for.
    pub(crate) fn reregister_requested(&self) -> bool {
        self.reregister.load(Ordering::SeqCst)
    }

    /// Whether a re-registration was asked for, clearing the request.
    pub(crate) fn take_reregister(&self) -> bool {
        self.reregister.swap(false, Ordering::SeqCst)
    }

    /// Trades the static token for an STS access token (`use_sts`); keeps the static one if
    /// that fails.
    pub(crate) async fn acquire_sts(&self) {
        match self.client.sts_token().await {
            Ok(token) => {
                self.client.set_access_token(Some(token.access_token));
                *self.sts.lock().unwrap() = Some(StsState {
                    refresh_token: token.refresh_token,
                    issued: Instant::now(),
                    lifetime: Duration::from_secs(token.expires_in.max(60) as u64),
                });
                tracing::info!(
                    orchestrator = %self.cfg.url,
                    "STS access token obtained (expires in {}s)",
                    token.expires_in
                );
            }
            Err(e) => {
                tracing::warn!(orchestrator = %self.cfg.url, "STS token request failed: {e}; using the static token")
            }
        }
    }

    /// Refreshes the STS access token once 80 % of its lifetime has passed (a new one when the
    /// refresh fails).
    pub(crate) async fn refresh_sts_if_due(&self) {
        let due = {
            let sts = self.sts.lock().unwrap();
            match &*sts {
                Some(s) => s.issued.elapsed() >= s.lifetime.mul_f64(0.8),
                None => false,
            }
        };
        if !due {
            return;
        }
        let refresh = self.sts.lock().unwrap().as_ref().and_then(|s| s.refresh_token.clone());
        let res = match refresh {
            Some(refresh_token) => self.client.sts_refresh(&refresh_token).await,
            None => Err(WorkerError::protocol("no refresh token")),
        };
        match res {
            Ok(token) => {
                self.client.set_access_token(Some(token.access_token));
                *self.sts.lock().unwrap() = Some(StsState {
                    refresh_token: token.refresh_token,
                    issued: Instant::now(),
                    lifetime: Duration::from_secs(token.expires_in.max(60) as u64),
                });
                tracing::info!(orchestrator = %self.cfg.url, "STS access token refreshed");
            }
            Err(e) => {
                tracing::warn!(orchestrator = %self.cfg.url, "STS refresh failed: {e}; requesting a new token");
                self.acquire_sts().await;
            }
        }
    }
}
