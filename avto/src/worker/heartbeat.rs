//! Keeping a session alive: register with an orchestrator (with backoff), then send heartbeats
//! until shutdown, registering again when the orchestrator lost the session ([`run_session`]);
//! the registration and heartbeat bodies; the `offline` heartbeats of shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::watch;

use super::backoff::Backoff;
use super::session::OrchestratorSession;
use super::shutdown::{sleep_or_shutdown, until_set};
use super::state::WorkerState;
use super::WorkerError;
use crate::protocol::{
    self, unix_now, worker_status, Heartbeat, HeartbeatResponse, MessageKind, Resources, ResourcesUsage,
    WorkerCapabilities, WorkerRegistration,
};

/// Register (with backoff) then heartbeat, forever; re-register when the session is lost.
pub(crate) async fn run_session(
    state: Arc<WorkerState>,
    session: Arc<OrchestratorSession>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cfg = &state.cfg;
    'session: loop {
        // --- registration
        session.registration_started();
        let mut backoff = Backoff::new(cfg.registration_retry_initial_delay, cfg.registration_retry_max_delay)
            .rate_limit_floor(cfg.rate_limit_backoff_floor)
            .primed();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let body = registration_body(&state);
            match session.client.register(&body).await {
                Ok(resp) => {
                    if let Some(warning) = &resp.warning {
                        tracing::warn!(orchestrator = %session.cfg.url, "registration warning: {warning}");
                    }
                    session.registered(&resp, &state.skills.hash);
                    state.registered_any.notify_waiters();
                    tracing::info!(orchestrator = %session.cfg.url, "registered");
                    break;
                }
                Err(e) => {
                    let delay = backoff.after_error(&e);
                    tracing::warn!(orchestrator = %session.cfg.url, "registration failed: {e}; retrying in {delay:?}");
                    if !sleep_or_shutdown(delay, &mut shutdown).await {
                        return;
                    }
                }
            }
        }
        if cfg.use_sts && !session.client.uses_access_token() {
            session.acquire_sts().await;
        }

        // --- heartbeats (the first right away)
        let mut backoff =
            Backoff::new(cfg.heartbeat_interval, cfg.poll_backoff_max).rate_limit_floor(cfg.rate_limit_backoff_floor);
        let mut wait = Duration::ZERO;
        loop {
            // Debounced early heartbeats only while heartbeats succeed.
            let accept_wakeups = backoff.current().is_zero();
            if !wait_for_heartbeat(&state, &session, wait, accept_wakeups, &mut shutdown).await {
                return;
            }
            if session.take_reregister() {
                tracing::warn!(orchestrator = %session.cfg.url, "orchestrator lost our session: registering again");
                continue 'session;
            }
            if cfg.use_sts {
                session.refresh_sts_if_due().await;
            }
            match send_heartbeat(&state, &session).await {
                Ok(jitter) => {
                    backoff.reset();
                    wait = cfg.heartbeat_interval + jitter;
                }
                Err(e) if e.means_session_lost() => {
                    tracing::warn!(orchestrator = %session.cfg.url, "heartbeat: {e}; registering again");
                    session.session_lost();
                    continue 'session;
                }
                Err(e) => {
                    let delay = backoff.after_error(&e);
                    tracing::warn!(orchestrator = %session.cfg.url, "heartbeat failed: {e}; next in {delay:?}");
                    wait = delay;
                }
            }
        }
    }
}

/// Wait `wait`, or less when a debounced heartbeat is requested (task start/finish, hot skills;
/// at most one per `heartbeat_cooldown`). `false` on shutdown.
async fn wait_for_heartbeat(
    state: &WorkerState,
    session: &OrchestratorSession,
    wait: Duration,
    accept_wakeups: bool,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    enum Woken {
        Deadline,
        Wakeup,
        Shutdown,
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if *shutdown.borrow() {
            return false;
        }
        let woken = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => Woken::Deadline,
            _ = session.heartbeat_wakeup.notified() => Woken::Wakeup,
            _ = until_set(shutdown) => Woken::Shutdown,
        };
        match woken {
            Woken::Deadline => return true,
            Woken::Shutdown => return false,
            Woken::Wakeup => {
                if session.reregister_requested() {
                    return true;
                }
                if !accept_wakeups {
                    continue;
                }
                let since = session.last_heartbeat.lock().unwrap().map(|at| at.elapsed()).unwrap_or(Duration::MAX);
                if since < state.cfg.heartbeat_cooldown {
                    let rest = state.cfg.heartbeat_cooldown - since;
                    if tokio::time::Instant::now() + rest >= deadline {
                        continue;
                    }
                    return sleep_or_shutdown(rest, shutdown).await;
                }
                return true;
            }
        }
    }
}

fn capabilities(state: &WorkerState) -> WorkerCapabilities {
    let mut extra = Map::new();
    extra.insert("websockets".into(), Value::Bool(state.cfg.enable_websockets));
    for (k, v) in &state.cfg.extra_capabilities {
        extra.insert(k.clone(), v.clone());
    }
    WorkerCapabilities {
        hostname: state.cfg.hostname.clone(),
        ip_address: state.cfg.ip_address.clone(),
        cost_per_skill: Some(state.skills.cost_per_skill.clone()),
        #[cfg(feature = "s3")]
        s3_config_hash: state.s3.as_ref().map(|s| s.config().config_hash()),
        #[cfg(not(feature = "s3"))]
        s3_config_hash: None,
        extra: Some(extra),
    }
}

/// The registration body (signed, with a current timestamp).
pub(crate) fn registration_body(state: &WorkerState) -> Value {
    let cfg = &state.cfg;
    let (_, available, hot) = state.status();
    let mut props = Map::new();
    props.insert("cpu_cores".into(), Value::from(cfg.cpu_cores));
    props.insert("ram_gb".into(), Value::from(cfg.ram_gb));
    for (k, v) in &cfg.resource_properties {
        props.insert(k.clone(), v.clone());
    }
    let mut registration = WorkerRegistration::new(cfg.worker_id.clone());
    registration.worker_type = cfg.worker_type.clone();
    registration.supported_skills = Some(state.skills.infos.clone());
    registration.available_skills = non_empty(available);
    registration.hot_skills = non_empty(hot);
    registration.resources =
        Some(Resources { devices: (!cfg.devices.is_empty()).then(|| cfg.devices.clone()), properties: Some(props) });
    registration.installed_software = Some(cfg.installed_software.clone());
    registration.installed_artifacts = Some(cfg.installed_artifacts.clone());
    registration.capabilities = Some(capabilities(state));
    registration.skills_hash = Some(state.skills.hash.clone());
    registration.timestamp = Some(unix_now());
    state.sign(serde_json::to_value(registration).expect("registration serialises"), MessageKind::Registration)
}

/// The usage to put in this session's next heartbeat: sent at least once a minute, and when it
/// moved past the deadband.
fn usage_for(state: &WorkerState, session: &OrchestratorSession) -> Option<ResourcesUsage> {
    let current = state.usage();
    let mut sent = session.usage_sent.lock().unwrap();
    let now = Instant::now();
    let due = match &*sent {
        None => true,
        Some((last, at)) => now.duration_since(*at) >= Duration::from_secs(60) || usage_changed(last, &current),
    };
    if due {
        *sent = Some((current.clone(), now));
        Some(current)
    } else {
        None
    }
}

fn heartbeat_body(state: &WorkerState, session: &OrchestratorSession) -> Value {
    let (status, available, hot) = state.status();
    let synced = session.synced_hash.lock().unwrap().clone();
    let mut heartbeat = Heartbeat::new(state.cfg.worker_id.clone(), status);
    heartbeat.usage = usage_for(state, session);
    heartbeat.current_tasks = Some(state.task_ids_of(session.idx));
    if synced.as_deref() != Some(state.skills.hash.as_str()) {
        heartbeat.supported_skills = Some(state.skills.infos.clone());
    }
    heartbeat.available_skills = non_empty(available);
    heartbeat.hot_skills = non_empty(hot);
    heartbeat.skills_hash = Some(state.skills.hash.clone());
    heartbeat.timestamp = Some(unix_now());
    let mut body = serde_json::to_value(heartbeat).expect("heartbeat serialises");
    if state.cfg.enable_websockets && state.cfg.ws_cancel_compat {
        // avtomatika 1.0b30 pushes cancel_task only if the stored record has a top-level
        // capabilities.websockets; the heartbeat merge is the only way to store it. It is
        // true only while the command channel is connected (a heartbeat follows every
        // connect and disconnect).
        let connected = session.ws_out.lock().unwrap().is_some();
        let mut caps = serde_json::to_value(capabilities(state)).expect("capabilities serialise");
        caps["websockets"] = Value::Bool(connected);
        body["capabilities"] = caps;
    }
    with_nonce(&mut body);
    state.sign(body, MessageKind::Heartbeat)
}

/// A fresh `nonce` (RXON's replay nonce): without one the orchestrator's replay check keys on
/// the signature, so two heartbeats with the same content in one second (the timestamp has
/// whole seconds) would read as a replay and the second be refused with 403. Orchestrators that
/// do not know the field ignore it (it is signed like the rest).
fn with_nonce(body: &mut Value) {
    body["nonce"] = Value::String(uuid::Uuid::new_v4().to_string());
}

/// Send one heartbeat; returns the jitter the orchestrator asked for.
async fn send_heartbeat(state: &WorkerState, session: &OrchestratorSession) -> Result<Duration, WorkerError> {
    let body = heartbeat_body(state, session);
    *session.last_heartbeat.lock().unwrap() = Some(Instant::now());
    let resp = session.client.heartbeat(&body).await?;
    let Some(resp) = resp else { return Ok(Duration::ZERO) };
    handle_heartbeat_response(state, session, &resp);
    let jitter = resp.next_heartbeat_jitter_ms.filter(|j| j.is_finite() && *j > 0.0).unwrap_or(0.0);
    Ok(Duration::from_secs_f64(jitter / 1000.0))
}

fn handle_heartbeat_response(state: &WorkerState, session: &OrchestratorSession, resp: &HeartbeatResponse) {
    *session.synced_hash.lock().unwrap() = Some(state.skills.hash.clone());
    if resp.require_full_sync {
        tracing::warn!(orchestrator = %session.cfg.url, "orchestrator requested a full sync");
        *session.synced_hash.lock().unwrap() = None;
    }
    if !resp.cancel_task_ids.is_empty() {
        state.cancel_listed(session.idx, &resp.cancel_task_ids);
    }
}

/// The `offline` heartbeat to every orchestrator that has us registered (each within 5 s).
pub(crate) async fn send_offline_heartbeats(state: &WorkerState) {
    let sends = state.sessions.iter().filter(|session| session.is_registered()).map(|session| {
        let (_, _, hot) = state.status();
        let mut heartbeat = Heartbeat::new(state.cfg.worker_id.clone(), worker_status::OFFLINE);
        heartbeat.usage = Some(state.usage());
        heartbeat.current_tasks = Some(state.task_ids_of(session.idx));
        heartbeat.supported_skills = Some(vec![]);
        heartbeat.hot_skills = non_empty(hot);
        heartbeat.skills_hash = Some(session.synced_hash.lock().unwrap().clone().unwrap_or_default());
        heartbeat.timestamp = Some(unix_now());
        let mut body = serde_json::to_value(heartbeat).expect("heartbeat serialises");
        with_nonce(&mut body);
        let body = state.sign(body, MessageKind::Heartbeat);
        async move {
            match tokio::time::timeout(Duration::from_secs(5), session.client.heartbeat(&body)).await {
                Ok(Ok(_)) => tracing::info!(orchestrator = %session.cfg.url, "sent offline heartbeat"),
                Ok(Err(e)) => tracing::warn!(orchestrator = %session.cfg.url, "offline heartbeat failed: {e}"),
                Err(_) => tracing::warn!(orchestrator = %session.cfg.url, "offline heartbeat timed out"),
            }
        }
    });
    futures::future::join_all(sends).await;
}

fn non_empty(v: Vec<String>) -> Option<Vec<String>> {
    (!v.is_empty()).then_some(v)
}

/// The SDK's telemetry deadband: CPU ±5 points, RAM ±5 %, device load/VRAM likewise.
fn usage_changed(last: &ResourcesUsage, cur: &ResourcesUsage) -> bool {
    const DEADBAND: f64 = 5.0;
    if (cur.cpu_load_percent - last.cpu_load_percent).abs() > DEADBAND {
        return true;
    }
    let rel = |last: f64, cur: f64| {
        if last == 0.0 {
            cur > 0.0
        } else {
            ((cur - last) / last).abs() > DEADBAND / 100.0
        }
    };
    if rel(last.ram_used_gb, cur.ram_used_gb) {
        return true;
    }
    let last_devices = last.devices_usage.as_deref().unwrap_or(&[]);
    let cur_devices = cur.devices_usage.as_deref().unwrap_or(&[]);
    if last_devices.len() != cur_devices.len() {
        return true;
    }
    for device in cur_devices {
        let Some(before) = last_devices.iter().find(|d| d.unit_id == device.unit_id) else { return true };
        if (device.load_percent - before.load_percent).abs() > DEADBAND {
            return true;
        }
        let vram = |d: &protocol::DeviceUsage| {
            d.metrics.as_ref().and_then(|m| m.get("memory_used_gb")).and_then(Value::as_f64).unwrap_or(0.0)
        };
        if rel(vram(before), vram(device)) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_deadband() {
        let base = ResourcesUsage { cpu_load_percent: 10.0, ram_used_gb: 2.0, devices_usage: None };
        assert!(!usage_changed(&base, &ResourcesUsage { cpu_load_percent: 14.0, ..base.clone() }));
        assert!(usage_changed(&base, &ResourcesUsage { cpu_load_percent: 16.0, ..base.clone() }));
        assert!(usage_changed(&base, &ResourcesUsage { ram_used_gb: 2.2, ..base.clone() }));
        assert!(!usage_changed(&base, &ResourcesUsage { ram_used_gb: 2.05, ..base.clone() }));
    }
}
