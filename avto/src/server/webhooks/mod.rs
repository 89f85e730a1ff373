//! Job webhooks: `POST webhook_url` when a job ends, retried with backoff.
//!
//! Durability (at least once): the job store writes a job-end webhook into its outbox in the same
//! write that stores the job's terminal state ([`JobStore::claim_webhooks`]). The instance that
//! wrote it sends it at once and removes the entry when it is delivered (or given up: rejected,
//! refused, or failed every attempt); while it works on it, it keeps its claim fresh. An entry
//! whose claim is older than [`WebhookSettings::claim`] (its sender died, was killed, or its
//! queue was full) is claimed by the next watcher pass of any instance and sent again, with the
//! same `X-Avto-Event-Id`. On Redis the outbox survives a crash, a restart and `kill -9`; in
//! memory it lives as long as the jobs do. Graceful shutdown waits for the webhooks in progress
//! ([`Webhooks::drain`]); what is left stays in the outbox.
//!
//! Safety of the target (SSRF): unless `WEBHOOK_ALLOW_PRIVATE`, a target that is or resolves to
//! a loopback, private, link-local, multicast, unspecified or otherwise non-public address is
//! refused when the job is created ([`check_target`], 400) and again at every delivery: the
//! sender's DNS resolver refuses such addresses and the connection goes to exactly the addresses it
//! checked, so a name that resolves differently later (DNS rebinding) cannot reach them.
//! Redirects are not followed and no proxy is used.
//!
//! Fairness: every attempt holds a slot of its client (`WEBHOOK_MAX_PER_CLIENT`), of its target
//! host (`WEBHOOK_MAX_PER_HOST`) and of the sender (`WEBHOOK_MAX_CONCURRENCY`) only while it runs,
//! never while it waits to retry, and is bounded by `WEBHOOK_CONNECT_TIMEOUT_SECONDS` and
//! `WEBHOOK_TIMEOUT_SECONDS`: one client's unresponsive receiver cannot hold up another's.
//!
//! Logs never show a webhook URL's credentials: user and password, and query values, are masked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

use crate::job::{Job, JobStatus};
use crate::storage::JobStore;

mod http;
mod target;

use self::http::{HttpClient, Sent};
pub(super) use self::target::check_target;
use self::target::{check_literal, masked, parse};

/// Webhooks waiting for delivery (queued, in flight or between attempts); beyond this new webhooks are
/// dropped with an error log.
pub(super) const QUEUE_CAPACITY: usize = 10_000;
const ATTEMPTS: u32 = 3;

/// The webhook settings of [`super::config::Config`].
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `WEBHOOK_RETRY_BASE_SECONDS`: first retry delay (the second is twice as long).
    pub retry_base: Duration,
    /// `WEBHOOK_ALLOW_PRIVATE`: non-public targets are allowed.
    pub allow_private: bool,
    /// `WEBHOOK_CONNECT_TIMEOUT_SECONDS`: connect timeout of one attempt.
    pub connect_timeout: Duration,
    /// `WEBHOOK_TIMEOUT_SECONDS`: whole-attempt timeout (connect, send, response head).
    pub timeout: Duration,
    /// `WEBHOOK_MAX_CONCURRENCY`: attempts in flight at once, in all.
    pub max_concurrency: usize,
    /// `WEBHOOK_MAX_PER_CLIENT`: attempts in flight at once for one client's jobs.
    pub max_per_client: usize,
    /// `WEBHOOK_MAX_PER_HOST`: attempts in flight at once to one host and port.
    pub max_per_host: usize,
    /// `WEBHOOK_SECRET`: the key of the `X-Avto-Signature` header (none without it).
    pub secret: Option<String>,
}

impl WebhookSettings {
    /// How long a sender's claim on an outbox entry lasts without news: two whole attempts and
    /// the longest wait between attempts, plus 5 s. Another instance sends a webhook again only
    /// after its sender was silent this long.
    pub fn claim(&self) -> Duration {
        (self.connect_timeout + self.timeout) * 2 + self.retry_base * (1 << (ATTEMPTS - 1)) + Duration::from_secs(5)
    }

    /// The settings of `cfg`.
    pub fn of(cfg: &super::config::Config) -> Self {
        WebhookSettings {
            retry_base: cfg.webhook_retry_base,
            allow_private: cfg.webhook_allow_private,
            connect_timeout: cfg.webhook_connect_timeout,
            timeout: cfg.webhook_timeout,
            max_concurrency: cfg.webhook_max_concurrency,
            max_per_client: cfg.webhook_max_per_client,
            max_per_host: cfg.webhook_max_per_host,
            secret: cfg.webhook_secret.clone(),
        }
    }
}

/// What became of webhooks so far (counters since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookCounts {
    /// Answered 2xx.
    pub delivered: u64,
    /// Answered a 4xx other than 429 (not retried).
    pub rejected: u64,
    /// Failed every attempt (network errors, timeouts, 5xx, 429).
    pub failed: u64,
    /// Not sent: the target is, or resolved to, a non-public address (or its URL is invalid).
    pub refused: u64,
    /// Not sent: too many webhooks were waiting (and no outbox keeps them).
    pub dropped: u64,
    /// Not sent yet: too many webhooks were waiting, so they stay in the outbox for a later
    /// watcher pass.
    pub deferred: u64,
    /// Taken from the outbox again (their first sender stopped or was too busy).
    pub redelivered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    deferred: AtomicU64,
    redelivered: AtomicU64,
}

/// Semaphores per key (client or host), created on first use and removed when unused, so the map
/// holds only keys with a webhook in progress.
#[derive(Debug)]
struct KeyedLimits {
    max: usize,
    map: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl KeyedLimits {
    fn new(max: usize) -> Self {
        KeyedLimits { max: max.max(1), map: Mutex::default() }
    }

    fn take(&self, key: &str) -> Arc<Semaphore> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(self.max))).clone()
    }

    /// Gives back what [`KeyedLimits::take`] returned; the last user removes the entry. Clones
    /// are only made and dropped under the lock, so the count is exact.
    fn give_back(&self, key: &str, sem: Arc<Semaphore>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&sem) == 2 {
            map.remove(key);
        }
        drop(sem);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

struct Inner {
    client: HttpClient,
    settings: WebhookSettings,
    pending: Arc<Semaphore>,
    global: Semaphore,
    per_client: KeyedLimits,
    per_host: KeyedLimits,
    counts: Counters,
    runtime: tokio::runtime::Handle,
    /// The job store whose outbox holds the job-end webhooks (none: they live only here).
    outbox: Option<Arc<dyn JobStore>>,
    /// Outbox entries to remove, sent in batches by one task (see [`remove_done`]).
    done: Option<tokio::sync::mpsc::UnboundedSender<Done>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("settings", &self.settings).field("outbox", &self.outbox.is_some()).finish()
    }
}

/// A message to the task that removes outbox entries.
enum Done {
    Job(String),
    /// Answered once every entry sent before it is removed.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The webhook sender.
#[derive(Debug, Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

impl Webhooks {
    /// A sender on the current runtime, with no outbox: webhooks live only in its memory.
    pub fn start(settings: WebhookSettings) -> Self {
        Self::build(settings, None)
    }

    /// A sender on the current runtime whose job-end webhooks are kept in `jobs`' outbox until
    /// delivered (see the module docs).
    pub fn with_outbox(settings: WebhookSettings, jobs: Arc<dyn JobStore>) -> Self {
        Self::build(settings, Some(jobs))
    }

    fn build(settings: WebhookSettings, outbox: Option<Arc<dyn JobStore>>) -> Self {
        // A redirect is not followed: the receiver was named by the client, and a webhook
        // must not be bounced to an address nobody configured (or checked). No proxy either:
        // the addresses checked are the ones connected to.
        let client = HttpClient::new(settings.connect_timeout, settings.timeout, settings.allow_private);
        let inner = Inner {
            client,
            pending: Arc::new(Semaphore::new(QUEUE_CAPACITY)),
            global: Semaphore::new(settings.max_concurrency.max(1)),
            per_client: KeyedLimits::new(settings.max_per_client),
            per_host: KeyedLimits::new(settings.max_per_host),
            counts: Counters::default(),
            runtime: tokio::runtime::Handle::current(),
            done: outbox.as_ref().map(|jobs| {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(remove_done(jobs.clone(), rx));
                tx
            }),
            outbox,
            settings,
        };
        Webhooks { inner: Arc::new(inner) }
    }

    /// Queues the webhook for a job that just ended. The body has the spec's fields (`event`,
    /// `job_id`, `status`, `result`, `error`, `metadata`, `timestamp`: seconds since the epoch
    /// when the job ended) and avto's (`blueprint`, `state`, `error_message`).
    pub fn job_ended(&self, url: String, job: &Job) {
        let event = match job.status {
            JobStatus::Finished => "job_finished",
            JobStatus::Cancelled => "job_cancelled",
            JobStatus::Quarantined => "job_quarantined",
            _ => "job_failed",
        };
        // Written straight from the job (same members, same order as the JSON object it replaces):
        // no intermediate map, no copies of the result and metadata.
        #[derive(serde::Serialize)]
        struct Ended<'a> {
            event: &'a str,
            job_id: &'a str,
            blueprint: &'a str,
            status: JobStatus,
            state: &'a str,
            result: &'a Option<Value>,
            error: &'a Option<String>,
            error_message: &'a Option<String>,
            metadata: &'a Option<Value>,
            timestamp: f64,
        }
        let body = Ended {
            event,
            job_id: &job.id,
            blueprint: &job.blueprint,
            status: job.status,
            state: &job.current_state,
            result: &job.result,
            error: &job.error_message,
            error_message: &job.error_message,
            metadata: &job.metadata,
            timestamp: job.updated_at_ms as f64 / 1000.0,
        };
        let held = self.inner.outbox.as_ref().map(|_| job.id.clone());
        let event_id = event_id(job, event);
        self.enqueue(&job.client.id, url, &job.id, &body, event_id, held);
    }

    /// Sends again the job-end webhooks whose sender went silent (see the module docs): claims up
    /// to as many outbox entries as the queue has room for. The watcher calls it every pass.
    pub async fn redeliver(&self) {
        let Some(jobs) = &self.inner.outbox else { return };
        let room = self.inner.pending.available_permits().min(REDELIVERY_BATCH);
        if room == 0 {
            return;
        }
        let now = crate::job::now_ms();
        let cutoff = now.saturating_sub(self.inner.settings.claim().as_millis() as u64);
        match jobs.claim_webhooks(cutoff, now, room).await {
            Ok(claimed) => {
                for job in claimed {
                    match job.webhook_url.clone() {
                        Some(url) => {
                            self.inner.counts.redelivered.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(job_id = %job.id, "job webhook taken from the outbox again");
                            self.job_ended(url, &job);
                        }
                        None => self.done(&job.id),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the webhook outbox"),
        }
    }

    /// Waits until no webhook is queued, in flight or between attempts, and their outbox entries
    /// are removed, or until `deadline`; whether everything finished. (Graceful shutdown: what
    /// is left stays in the outbox.)
    pub async fn drain(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            if self.inner.pending.available_permits() == QUEUE_CAPACITY {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let Some(done) = &self.inner.done else { return true };
        let (tx, rx) = tokio::sync::oneshot::channel();
        if done.send(Done::Flush(tx)).is_err() {
            return false;
        }
        tokio::time::timeout_at(deadline, rx).await.is_ok_and(|r| r.is_ok())
    }

    fn done(&self, job_id: &str) {
        if let Some(done) = &self.inner.done {
            let _ = done.send(Done::Job(job_id.to_owned()));
        }
    }

    /// Queues the `worker_event:{type}` webhook of an event a worker sent about `job` (the
    /// event's payload is the `result`; `route`: where the event came from, `event_id`,
    /// `sender_id`, `origin_worker_id`, `bubbling_chain`, added to the body).
    pub fn worker_event(&self, url: String, job: &Job, event_type: &str, payload: &Value, route: Map<String, Value>) {
        let mut body = json!({
            "event": format!("worker_event:{event_type}"),
            "job_id": job.id,
            "blueprint": job.blueprint,
            "status": job.status,
            "result": payload,
            "error": Value::Null,
            "metadata": job.metadata,
            "timestamp": crate::job::now_ms() as f64 / 1000.0,
        });
        if let Value::Object(m) = &mut body {
            m.extend(route);
        }
        self.send(&job.client.id, url, body);
    }

    /// Queues any webhook body (not kept in the outbox); `client` (the client identity,
    /// `ClientConfig::id`) names whose slots it uses (`WEBHOOK_MAX_PER_CLIENT`).
    pub fn send(&self, client: &str, url: String, body: Value) {
        let job_id = body.get("job_id").and_then(Value::as_str).unwrap_or("");
        self.enqueue(client, url, job_id, &body, uuid::Uuid::new_v4().to_string(), None);
    }

    /// Queues a webhook; `held`: the job whose outbox entry it is (removed once it is delivered or
    /// given up).
    fn enqueue(
        &self,
        client: &str,
        url: String,
        job_id: &str,
        body: &impl serde::Serialize,
        event_id: String,
        held: Option<String>,
    ) {
        let Ok(pending) = self.inner.pending.clone().try_acquire_owned() else {
            if held.is_some() {
                self.inner.counts.deferred.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(client, "webhook queue full ({QUEUE_CAPACITY} waiting); webhook left in the outbox");
            } else {
                self.inner.counts.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(client, "webhook queue full ({QUEUE_CAPACITY} waiting); webhook dropped");
            }
            return;
        };
        // Only once the queue has room: a webhook turned away is never written out.
        let body = match serde_json::to_vec(body) {
            Ok(b) => axum::body::Bytes::from(b),
            Err(e) => {
                tracing::error!(job_id, error = %e, "webhook body does not serialise; webhook dropped");
                return;
            }
        };
        let (this, client, job_id) = (self.clone(), client.to_owned(), job_id.to_owned());
        self.inner.runtime.spawn(async move {
            let _pending = pending;
            let outbox = held.as_deref().and_then(|id| Some((this.inner.outbox.as_ref()?, id)));
            deliver(&this.inner, &client, &url, &job_id, body, &event_id, outbox).await;
            if let Some(id) = &held {
                this.done(id);
            }
        });
    }

    /// What became of the webhooks so far.
    pub fn counts(&self) -> WebhookCounts {
        let c = &self.inner.counts;
        WebhookCounts {
            delivered: c.delivered.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            deferred: c.deferred.load(Ordering::Relaxed),
            redelivered: c.redelivered.load(Ordering::Relaxed),
        }
    }
}

/// How one attempt ended.
enum Attempt {
    Delivered,
    /// A 4xx other than 429: the receiver does not want it; not retried.
    Rejected(hyper::StatusCode),
    /// The target resolved to a non-public address; not retried.
    Refused(String),
    /// Worth another attempt.
    Failed(String),
}

/// Outbox entries claimed at once by [`Webhooks::redeliver`].
const REDELIVERY_BATCH: usize = 256;

/// The id of a job's job-end webhook: the same for every send of it, from any instance (a
/// UUID made from the job id, the event and when the job ended), so receivers deduplicate
/// retries and redeliveries by it.
fn event_id(job: &Job, event: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{}|{event}|{}", job.id, job.updated_at_ms).as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// How long finished webhooks are collected before their outbox entries are removed (unless a
/// flush waits): an entry stays claimable by nobody for its claim period, so removing it up to
/// this much later only makes the batches larger.
const DONE_BATCH: Duration = Duration::from_millis(50);

/// Removes the outbox entries of finished webhooks, up to 512 per write, collected for up to
/// [`DONE_BATCH`], so the outbox costs one store write per batch rather than one per webhook.
async fn remove_done(jobs: Arc<dyn JobStore>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Done>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 512).await > 0 {
        if batch.len() < 512 && !batch.iter().any(|m| matches!(m, Done::Flush(_))) {
            tokio::time::sleep(DONE_BATCH).await;
            while batch.len() < 512 {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
        }
        let mut flushes = Vec::new();
        let mut ids = Vec::with_capacity(batch.len());
        for msg in batch.drain(..) {
            match msg {
                Done::Job(id) => ids.push(id),
                Done::Flush(tx) => flushes.push(tx),
            }
        }
        if !ids.is_empty() {
            if let Err(e) = jobs.webhooks_done(&ids).await {
                tracing::warn!(error = %e, n = ids.len(), "could not remove delivered webhooks from the outbox (they may be sent again)");
            }
        }
        for tx in flushes {
            let _ = tx.send(());
        }
    }
}

async fn deliver(
    inner: &Inner,
    client: &str,
    raw: &str,
    job_id: &str,
    body: axum::body::Bytes,
    event_id: &str,
    outbox: Option<(&Arc<dyn JobStore>, &str)>,
) {
    let url = match parse(raw) {
        Ok(u) => u,
        Err(e) => {
            inner.counts.refused.fetch_add(1, Ordering::Relaxed);
            tracing::error!(job_id, error = %e, "webhook URL does not parse; webhook dropped");
            return;
        }
    };
    let shown = masked(&url);
    if let Err(e) = check_literal(&url, inner.settings.allow_private) {
        inner.counts.refused.fetch_add(1, Ordering::Relaxed);
        tracing::error!(job_id, url = %shown, "webhook refused: {e}");
        return;
    }
    let host = format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0));
    let (client_slots, host_slots) = (inner.per_client.take(client), inner.per_host.take(&host));
    for attempt in 0..ATTEMPTS {
        // Slots in a fixed order (client, host, all), held for this attempt only.
        let outcome = {
            let (Ok(_c), Ok(_h)) = (client_slots.acquire().await, host_slots.acquire().await) else { break };
            let Ok(_g) = inner.global.acquire().await else { break };
            let signed = Signed::new(event_id, &body, inner.settings.secret.as_deref());
            attempt_once(&inner.client, &url, &body, &signed).await
        };
        match outcome {
            Attempt::Delivered => {
                inner.counts.delivered.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Attempt::Rejected(status) => {
                inner.counts.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(job_id, url = %shown, %status, "webhook rejected; not retried");
                break;
            }
            Attempt::Refused(e) => {
                inner.counts.refused.fetch_add(1, Ordering::Relaxed);
                tracing::error!(job_id, url = %shown, "webhook refused: {e}");
                break;
            }
            Attempt::Failed(e) if attempt + 1 < ATTEMPTS => {
                tracing::warn!(job_id, url = %shown, attempt, error = %e, "webhook failed");
                // The claim stays fresh while this sender works on the webhook (the write of the
                // job's end stamped it; one attempt and one wait fit in a claim).
                touch(outbox).await;
                tokio::time::sleep(inner.settings.retry_base * (1u32 << attempt)).await;
            }
            Attempt::Failed(e) => {
                inner.counts.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(job_id, url = %shown, error = %e, "webhook gave up after {ATTEMPTS} attempts");
            }
        }
    }
    inner.per_client.give_back(client, client_slots);
    inner.per_host.give_back(&host, host_slots);
}

/// Keeps a sender's claim on its outbox entry fresh.
async fn touch(outbox: Option<(&Arc<dyn JobStore>, &str)>) {
    if let Some((jobs, id)) = outbox {
        if let Err(e) = jobs.touch_webhook(id, crate::job::now_ms()).await {
            tracing::debug!(job_id = id, error = %e, "could not renew a webhook's claim (it may be sent twice)");
        }
    }
}

/// The headers that identify and sign one attempt: `X-Avto-Event-Id` (the same on every
/// attempt of a webhook), `X-Avto-Timestamp` (Unix seconds of this attempt) and, with
/// `WEBHOOK_SECRET`, `X-Avto-Signature: sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">`.
struct Signed {
    event_id: String,
    timestamp: String,
    signature: Option<String>,
}

impl Signed {
    fn new(event_id: &str, body: &[u8], secret: Option<&str>) -> Signed {
        let timestamp = crate::protocol::unix_now().to_string();
        let signature = secret.map(|key| {
            let mut message = Vec::with_capacity(timestamp.len() + 1 + body.len());
            message.extend_from_slice(timestamp.as_bytes());
            message.push(b'.');
            message.extend_from_slice(body);
            format!("sha256={}", crate::protocol::sign::hmac_sha256_hex(key.as_bytes(), &message))
        });
        Signed { event_id: event_id.to_owned(), timestamp, signature }
    }
}

async fn attempt_once(client: &HttpClient, url: &url::Url, body: &axum::body::Bytes, signed: &Signed) -> Attempt {
    let mut headers =
        vec![("x-avto-event-id", signed.event_id.as_str()), ("x-avto-timestamp", signed.timestamp.as_str())];
    if let Some(signature) = &signed.signature {
        headers.push(("x-avto-signature", signature));
    }
    match client.post_json(url, body.clone(), &headers).await {
        Sent::Answered(s) if s.is_success() => Attempt::Delivered,
        Sent::Answered(s) if s.is_client_error() && s.as_u16() != 429 => Attempt::Rejected(s),
        Sent::Answered(s) => Attempt::Failed(format!("status {s}")),
        Sent::Refused(why) => Attempt::Refused(why),
        Sent::Failed(e) => Attempt::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_limits_forget_unused_keys() {
        let limits = KeyedLimits::new(2);
        let a = limits.take("a");
        let a2 = limits.take("a");
        assert!(Arc::ptr_eq(&a, &a2));
        limits.give_back("a", a);
        assert_eq!(limits.len(), 1, "still used");
        limits.give_back("a", a2);
        assert_eq!(limits.len(), 0, "no entry without a user");
    }
}
