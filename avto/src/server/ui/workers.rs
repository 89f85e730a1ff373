//! The workers page (operator only): `GET /ui/api/workers` and `POST /ui/api/workers/{id}/drain`.
//!
//! Reputation trends are samples this process took while the dashboard looked (each listing and
//! each second of an operator's stream, at most one sample per worker per [`SAMPLE_EVERY_MS`]
//! unless the value moved): the last [`TREND_LEN`] per worker, for at most [`TREND_WORKERS`]
//! workers (the least recently sampled is forgotten first).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::session::UiUser;
use crate::server::api::{ApiError, JsonObject, Path};
use crate::server::core::Core;
use crate::storage::WorkerLoad;

/// Samples kept per worker.
pub(crate) const TREND_LEN: usize = 20;
/// Workers whose samples are kept.
pub(crate) const TREND_WORKERS: usize = 10_000;
/// A worker's reputation is sampled at most this often when it does not change.
const SAMPLE_EVERY_MS: u64 = 30_000;
/// ... and at most this often when it does.
const SAMPLE_MIN_MS: u64 = 1_000;
/// Workers listed at most.
const LIST_MAX: usize = 1_000;
/// A drain reason is cut to this many bytes.
const REASON_MAX: usize = 500;

/// The reputation samples of the workers: `(taken at ms, reputation)`, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Trends {
    by_worker: HashMap<String, VecDeque<(u64, f64)>>,
}

impl Trends {
    /// Takes a sample of each worker's reputation (see the module docs).
    pub(crate) fn sample(&mut self, workers: &[WorkerLoad], now: u64) {
        for w in workers {
            let id = &w.info.worker_id;
            let rep = w.info.reputation;
            if !self.by_worker.contains_key(id) && self.by_worker.len() >= TREND_WORKERS {
                // Forget the worker sampled longest ago.
                let oldest =
                    self.by_worker.iter().min_by_key(|(_, s)| s.back().map_or(0, |x| x.0)).map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.by_worker.remove(&k);
                }
            }
            let samples = self.by_worker.entry(id.clone()).or_default();
            let due = match samples.back() {
                None => true,
                Some(&(at, last)) => {
                    let age = now.saturating_sub(at);
                    age >= SAMPLE_EVERY_MS || ((last - rep).abs() > 1e-9 && age >= SAMPLE_MIN_MS)
                }
            };
            if due {
                if samples.len() >= TREND_LEN {
                    samples.pop_front();
                }
                samples.push_back((now, rep));
            }
        }
    }

    pub(crate) fn of(&self, worker_id: &str) -> Vec<f64> {
        self.by_worker.get(worker_id).map(|s| s.iter().map(|x| x.1).collect()).unwrap_or_default()
    }
}

/// `GET /ui/api/workers`: the live workers (at most 1,000, by id) and how many there are.
pub(super) async fn list(State(core): State<Arc<Core>>, user: UiUser) -> Result<Json<Value>, ApiError> {
    user.operator_only()?;
    let live = core.live_workers().await;
    let now = crate::job::now_ms();
    super::state(&core).trends.lock().sample(&live, now);
    let interval = core.config().worker_health_check_interval.as_millis() as u64;
    let trends = super::state(&core).trends.lock();
    let workers: Vec<Value> = live
        .iter()
        .take(LIST_MAX)
        .map(|w| {
            let i = &w.info;
            let age = core.worker_last_seen(&i.worker_id).map(|at| now.saturating_sub(at));
            let drain = i.operator_drain();
            let status = if drain.is_some() { "draining" } else { i.status.as_str() };
            json!({
                "worker_id": i.worker_id,
                "worker_type": i.worker_type,
                "status": status,
                "reported_status": i.status,
                "skills": i.skills.iter().map(|s| json!({"name": s.name, "version": s.version, "type": s.skill_type})).collect::<Vec<_>>(),
                "hot_skills": i.hot_skills,
                "resources": i.record.get("resources"),
                "cost": i.cost_per_skill,
                "load": {"queued": w.queued, "running": w.running},
                "max_concurrent_tasks": i.record.get("max_concurrent_tasks"),
                "heartbeat_age_ms": age,
                // Missed a heartbeat (still live: its registration has not lapsed).
                "stale": age.is_some_and(|a| a > interval),
                "reputation": i.reputation,
                "reputation_trend": trends.of(&i.worker_id),
                "draining_reason": drain,
                "websockets": i.websockets,
            })
        })
        .collect();
    Ok(Json(json!({"workers": workers, "total": live.len(), "heartbeat_interval_ms": interval})))
}

/// `POST /ui/api/workers/{id}/drain {"reason": ..}`: the worker takes no new tasks (see
/// [`Core::drain_worker`]); 404 for a worker that is not live.
pub(super) async fn drain(
    State(core): State<Arc<Core>>,
    user: UiUser,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    user.operator_only()?;
    if !crate::server::auth::valid_worker_id(&id) {
        return Err(ApiError::bad("invalid worker id: expected 1-128 characters of [A-Za-z0-9_-]"));
    }
    let reason = match body.get("reason") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(ApiError::bad("`reason` must be a string")),
    };
    let mut end = reason.len().min(REASON_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason[..end];
    if !core.drain_worker(&id, reason).await? {
        return Err(ApiError::NotFound(format!("no live worker `{id}`")));
    }
    Ok(Json(json!({"status": "draining", "worker_id": id, "reason": reason})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::WorkerInfo;

    fn load(id: &str, reputation: f64) -> WorkerLoad {
        let mut info = WorkerInfo::from_registration(&json!({"worker_id": id}));
        info.reputation = reputation;
        WorkerLoad { info: Arc::new(info), queued: 0, running: 0 }
    }

    #[test]
    fn trends_keep_the_last_samples_of_a_bounded_number_of_workers() {
        let mut t = Trends::default();
        t.sample(&[load("a", 1.0)], 0);
        // Unchanged and recent: no sample.
        t.sample(&[load("a", 1.0)], 10);
        assert_eq!(t.of("a"), [1.0]);
        for i in 0..(TREND_LEN as u64 + 5) {
            t.sample(&[load("a", 0.5 + i as f64 / 100.0)], 1_000 * (i + 1));
        }
        let a = t.of("a");
        assert_eq!(a.len(), TREND_LEN, "only the last {TREND_LEN}");
        assert_eq!(a.last().copied(), Some(0.5 + (TREND_LEN as f64 + 4.0) / 100.0));
        let many: Vec<WorkerLoad> = (0..TREND_WORKERS + 10).map(|i| load(&format!("w{i}"), 1.0)).collect();
        t.sample(&many, 100_000);
        assert!(t.by_worker.len() <= TREND_WORKERS);
        assert!(t.of("unknown").is_empty());
    }
}
