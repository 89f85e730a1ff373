//! Job webhooks: `POST webhook_url` when a job ends, retried with backoff.
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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::job::{Job, JobStatus};

/// Webhooks waiting for delivery (queued, in flight or between attempts); beyond this new webhooks are
/// dropped with an error log.
pub(super) const QUEUE_CAPACITY: usize = 10_000;
const ATTEMPTS: u32 = 3;
/// How long the check at job creation waits for the target's name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Not sent: too many webhooks were waiting.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
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

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    settings: WebhookSettings,
    pending: Arc<Semaphore>,
    global: Semaphore,
    per_client: KeyedLimits,
    per_host: KeyedLimits,
    counts: Counters,
    runtime: tokio::runtime::Handle,
}

/// The webhook sender.
#[derive(Debug, Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

impl Webhooks {
    /// A sender on the current runtime.
    pub fn start(settings: WebhookSettings) -> Self {
        // A redirect is not followed: the receiver was named by the client, and a webhook
        // must not be bounced to an address nobody configured (or checked). No proxy either:
        // the addresses checked are the ones connected to.
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver { allow_private: settings.allow_private }))
            .build()
            .unwrap_or_default();
        let inner = Inner {
            client,
            pending: Arc::new(Semaphore::new(QUEUE_CAPACITY)),
            global: Semaphore::new(settings.max_concurrency.max(1)),
            per_client: KeyedLimits::new(settings.max_per_client),
            per_host: KeyedLimits::new(settings.max_per_host),
            counts: Counters::default(),
            runtime: tokio::runtime::Handle::current(),
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
        let body = json!({
            "event": event,
            "job_id": job.id,
            "blueprint": job.blueprint,
            "status": job.status,
            "state": job.current_state,
            "result": job.result,
            "error": job.error_message,
            "error_message": job.error_message,
            "metadata": job.metadata,
            "timestamp": job.updated_at_ms as f64 / 1000.0,
        });
        self.send(&job.client.id, url, body);
    }

    /// Queues the `worker_event:{type}` webhook of an event a worker sent about `job` (the
    /// event's payload is the `result`).
    pub fn worker_event(&self, url: String, job: &Job, event_type: &str, payload: &Value) {
        let body = json!({
            "event": format!("worker_event:{event_type}"),
            "job_id": job.id,
            "blueprint": job.blueprint,
            "status": job.status,
            "result": payload,
            "error": Value::Null,
            "metadata": job.metadata,
            "timestamp": crate::job::now_ms() as f64 / 1000.0,
        });
        self.send(&job.client.id, url, body);
    }

    /// Queues any webhook body; `client` (the client identity, `ClientConfig::id`) names whose slots
    /// it uses (`WEBHOOK_MAX_PER_CLIENT`).
    pub fn send(&self, client: &str, url: String, body: Value) {
        let Ok(pending) = self.inner.pending.clone().try_acquire_owned() else {
            self.inner.counts.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(client, "webhook queue full ({QUEUE_CAPACITY} waiting); webhook dropped");
            return;
        };
        let (inner, client) = (self.inner.clone(), client.to_owned());
        self.inner.runtime.spawn(async move {
            let _pending = pending;
            deliver(&inner, &client, &url, &body).await;
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
        }
    }
}

/// How one attempt ended.
enum Attempt {
    Delivered,
    /// A 4xx other than 429: the receiver does not want it; not retried.
    Rejected(reqwest::StatusCode),
    /// The target resolved to a non-public address; not retried.
    Refused(String),
    /// Worth another attempt.
    Failed(String),
}

async fn deliver(inner: &Inner, client: &str, raw: &str, body: &Value) {
    let job_id = body.get("job_id").and_then(Value::as_str).unwrap_or("");
    let url = match reqwest::Url::parse(raw) {
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
    let body = match serde_json::to_vec(body) {
        Ok(b) => axum::body::Bytes::from(b),
        Err(e) => {
            tracing::error!(job_id, url = %shown, error = %e, "webhook body does not serialise; webhook dropped");
            return;
        }
    };
    // One id per webhook, the same on every attempt: receivers deduplicate retries by it.
    let event_id = uuid::Uuid::new_v4().to_string();
    let host = format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0));
    let (client_slots, host_slots) = (inner.per_client.take(client), inner.per_host.take(&host));
    for attempt in 0..ATTEMPTS {
        // Slots in a fixed order (client, host, all), held for this attempt only.
        let outcome = {
            let (Ok(_c), Ok(_h)) = (client_slots.acquire().await, host_slots.acquire().await) else { break };
            let Ok(_g) = inner.global.acquire().await else { break };
            let signed = Signed::new(&event_id, &body, inner.settings.secret.as_deref());
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

async fn attempt_once(
    client: &reqwest::Client,
    url: &reqwest::Url,
    body: &axum::body::Bytes,
    signed: &Signed,
) -> Attempt {
    let mut request = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("x-avto-event-id", &signed.event_id)
        .header("x-avto-timestamp", &signed.timestamp)
        .body(reqwest::Body::from(body.clone()));
    if let Some(signature) = &signed.signature {
        request = request.header("x-avto-signature", signature);
    }
    match request.send().await {
        Ok(r) if r.status().is_success() => Attempt::Delivered,
        Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => Attempt::Rejected(r.status()),
        Ok(r) => Attempt::Failed(format!("status {}", r.status())),
        Err(e) => match refusal(&e) {
            Some(why) => Attempt::Refused(why),
            None => Attempt::Failed(error_chain(e)),
        },
    }
}

/// The error and its causes (`error sending request: tcp connect error: Connection refused`),
/// without the URL that reqwest's own text would show, credentials and all.
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The refusal of [`CheckedResolver`] behind a request error, if that is what failed it.
fn refusal(e: &reqwest::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<NonPublicTarget>() {
            return Some(r.0.clone());
        }
        source = s.source();
    }
    None
}

/// A target the webhook may not reach.
#[derive(Debug)]
struct NonPublicTarget(String);

impl std::fmt::Display for NonPublicTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NonPublicTarget {}

/// The sender's DNS resolver: the system's (getaddrinfo), refusing names with a non-public
/// address unless `allow_private`. reqwest connects to exactly the addresses it returns.
#[derive(Debug)]
struct CheckedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private {
                if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                    let why = format!("`{host}` resolves to {}, {NOT_PUBLIC}", bad.ip());
                    return Err(Box::new(NonPublicTarget(why)) as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

const NOT_PUBLIC: &str =
    "a loopback, private, link-local, multicast or otherwise non-public address (allowed only with WEBHOOK_ALLOW_PRIVATE=true)";

/// The IP address a URL's host names literally (`None` for a domain name).
fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Refuses a URL whose host is a non-public IP address (odd IPv4 forms such as `2130706433`,
/// `0x7f.1` or `0177.0.0.1` are normalised by the URL parser first).
fn check_literal(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    match literal_ip(url) {
        Some(ip) if !allow_private && !is_public(ip) => Err(format!("{ip} is {NOT_PUBLIC}")),
        _ => Ok(()),
    }
}

/// Checks a `webhook_url` when a job is created: an absolute `http://` or `https://` URL with a
/// host; unless `allow_private`, the host must not be, nor resolve to, a non-public address.
/// The error says what is wrong (without the URL's credentials).
pub(super) async fn check_target(raw: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()).map(str::to_owned) else {
        return Err("the URL has no host".into());
    };
    check_literal(&url, allow_private)?;
    if allow_private || literal_ip(&url).is_some() {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host.as_str(), port))).await;
    let addrs: Vec<SocketAddr> = match resolved {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(_)) | Err(_) => return Err(format!("the host `{host}` does not resolve")),
    };
    if addrs.is_empty() {
        return Err(format!("the host `{host}` does not resolve"));
    }
    if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(format!("`{host}` resolves to {}, {NOT_PUBLIC}", bad.ip()));
    }
    Ok(url)
}

/// The URL as logs may show it: user and password replaced by `***`, every query value by `***`,
/// no fragment.
pub(super) fn masked(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_password(None);
        let _ = u.set_username("***");
    }
    if u.query().is_some() {
        let keys: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
        u.set_query(None);
        if !keys.is_empty() {
            u.query_pairs_mut().extend_pairs(keys.iter().map(|k| (k.as_str(), "***")));
        }
    }
    u.set_fragment(None);
    u.to_string()
}

/// Whether a webhook may reach `ip` without `WEBHOOK_ALLOW_PRIVATE`: not loopback, private,
/// shared (CGNAT), link-local, multicast, broadcast, unspecified, reserved or documentation
/// space, including IPv4 addresses inside IPv6 ones (mapped, compatible, NAT64, 6to4).
pub(super) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    if s[..6] == [0; 6] {
        // ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d
        return !ip.is_unspecified() && !ip.is_loopback() && is_public_v4(embedded_v4(s[6], s[7]));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return is_public_v4(embedded_v4(s[6], s[7])); // NAT64 64:ff9b::/96
    }
    if s[0] == 0x2002 {
        return is_public_v4(embedded_v4(s[1], s[2])); // 6to4
    }
    !((s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0; 3])) // discard-only 100::/64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must be refused");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[tokio::test]
    async fn odd_ipv4_forms_are_normalised_then_refused() {
        for raw in [
            "http://127.0.0.1/",
            "http://[::1]:8080/",
            "http://0.0.0.0/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://192.168.0.10/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[fe80::1]/",
            "http://[fc00::1]/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "https://user:pw@127.0.0.1/",
        ] {
            let e = check_target(raw, false).await.expect_err(raw);
            assert!(e.contains("WEBHOOK_ALLOW_PRIVATE"), "{raw}: {e}");
            assert!(!e.contains("pw"), "{raw}: {e}");
            assert!(check_target(raw, true).await.is_ok(), "{raw} is allowed with WEBHOOK_ALLOW_PRIVATE");
        }
        // A public literal needs no resolution and is accepted.
        assert!(check_target("https://93.184.216.34/hook", false).await.is_ok());
        for raw in ["ftp://example.com/", "http://", "not a url", "file:///etc/passwd"] {
            assert!(check_target(raw, false).await.is_err(), "{raw}");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        let e = check_target("http://localhost:9/hook", false).await.unwrap_err();
        assert!(e.contains("localhost") && e.contains("WEBHOOK_ALLOW_PRIVATE"), "{e}");
        assert!(check_target("http://localhost:9/hook", true).await.is_ok());
    }

    #[test]
    fn masked_urls_hide_credentials_and_query_values() {
        let u = reqwest::Url::parse("https://alice:s3cret@hooks.example.com:8443/in/x?token=abc&v=2#frag").unwrap();
        assert_eq!(masked(&u), "https://***@hooks.example.com:8443/in/x?token=***&v=***");
        let u = reqwest::Url::parse("http://only-user@h.example/p").unwrap();
        assert_eq!(masked(&u), "http://***@h.example/p");
        let u = reqwest::Url::parse("http://h.example/p").unwrap();
        assert_eq!(masked(&u), "http://h.example/p");
    }

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
