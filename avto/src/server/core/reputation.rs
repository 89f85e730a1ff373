//! The periodic reputation recalculation (orchestrator.md section 4.9, checklist 79): once per
//! `REPUTATION_RECALC_INTERVAL_SECONDS` (an hour) across every instance, each live worker's
//! `task_finished` history rows of the last 30 days are counted and, if it has any,
//! `new = 0.7 x success_rate + 0.3 x current`, clamped to [0.1, 1.0] and rounded to 4 decimals.
//!
//! Success is explicit: every `task_finished` row carries the result status the worker sent
//! (`details.result_status`); a row counts as a failure when that status is `failure` (the
//! worker's own failures, and the execution timeouts of tasks it had picked up), as a success
//! otherwise. (Avtomatika looks for `status == "success"` in a snapshot field that success results
//! never carry, so there every counted task looks failed; see the spec's warning.)
//!
//! The instances wake at the same wall-clock moments (multiples of the interval) and claim the
//! period's key (`reputation:{interval_ms}:{period}`, the scheduler's claims: Redis `SET NX PX`),
//! so exactly one of them recalculates per period. Without history there is nothing to count:
//! the task does not start (logged once at debug level).

use std::sync::Arc;
use std::time::Duration;

use super::Core;
use crate::history::{HistoryError, TaskOutcomes};
use crate::job::now_ms;

/// How far back the recalculation counts `task_finished` rows.
pub(super) const REPUTATION_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// The recalculated reputation of a worker whose reputation is `current` and whose tasks of the
/// window went as `outcomes`: `0.7 x success_rate + 0.3 x current`, clamped to [0.1, 1.0],
/// rounded to 4 decimals. `None` (unchanged) when it finished no task in the window.
pub(super) fn recalculated_reputation(current: f64, outcomes: TaskOutcomes) -> Option<f64> {
    let rate = outcomes.success_rate()?;
    let current = if current.is_finite() { current } else { 1.0 };
    let new = (0.7 * rate + 0.3 * current).clamp(0.1, 1.0);
    Some((new * 10_000.0).round() / 10_000.0)
}

impl Core {
    /// Starts the recalculation loop (supervised like the watcher), when the history is on and
    /// the interval is not 0.
    pub(super) fn start_reputation(self: &Arc<Self>) {
        let interval = self.cfg.reputation_recalc_interval;
        if interval.is_zero() {
            tracing::debug!("reputation recalculation off (REPUTATION_RECALC_INTERVAL_SECONDS=0)");
            return;
        }
        if self.history().is_none() {
            tracing::debug!("reputation recalculation off: it counts history rows and HISTORY_DATABASE_URI is not set");
            return;
        }
        let core = Arc::downgrade(self);
        let every = (interval.as_millis() as u64).max(1);
        crate::supervise::supervise(&self.health, "reputation", move || {
            let core = core.clone();
            async move {
                loop {
                    // The next multiple of the interval on the wall clock: the same moment on every instance.
                    let now = now_ms();
                    let period = now / every + 1;
                    tokio::time::sleep(Duration::from_millis(period.saturating_mul(every).saturating_sub(now))).await;
                    let Some(core) = core.upgrade() else { return };
                    core.reputation_period(every, period).await;
                }
            }
        });
    }

    /// Recalculates once for `period`, if this instance claims it first.
    async fn reputation_period(&self, every_ms: u64, period: u64) {
        // At shutdown nothing new starts (another instance claims the period).
        if self.is_shutting_down() {
            return;
        }
        let key = format!("reputation:{every_ms}:{period}");
        // Kept two intervals, so an instance whose clock runs late cannot claim the period again.
        let ttl = Duration::from_millis(every_ms.saturating_mul(2));
        match self.schedule_locks.claim(&key, &self.cfg.instance_id, ttl).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim the reputation recalculation; skipped this period");
                return;
            }
        }
        match self.recalculate_reputations().await {
            Ok(n) => tracing::debug!(changed = n, "reputations recalculated"),
            Err(e) => tracing::warn!(error = %e, "reputation recalculation failed; next try in one interval"),
        }
    }

    /// One recalculation over the live workers, now (the loop calls it once per interval;
    /// embedders and tests may call it directly). Returns how many reputations changed.
    ///
    /// A worker's new value is applied as a change to what the store holds, so rewards and
    /// penalties that arrive while this runs are kept, not overwritten.
    pub async fn recalculate_reputations(&self) -> Result<usize, HistoryError> {
        let Some(h) = self.history() else { return Ok(0) };
        let workers = self.dispatcher.live_workers().await;
        let ids: Vec<String> = workers.iter().map(|w| w.info.worker_id.clone()).collect();
        let since_us = (now_ms().saturating_sub(REPUTATION_WINDOW.as_millis() as u64) as i64).saturating_mul(1000);
        let outcomes = if ids.is_empty() { Default::default() } else { h.task_outcomes(&ids, since_us).await? };
        let mut changed = 0;
        for w in &workers {
            let Some(o) = outcomes.get(&w.info.worker_id) else { continue };
            let Some(new) = recalculated_reputation(w.info.reputation, *o) else { continue };
            let delta = new - w.info.reputation;
            if delta.abs() > 1e-12 {
                tracing::debug!(worker_id = %w.info.worker_id, from = w.info.reputation, to = new, finished = o.finished,
                                failed = o.failed, "reputation recalculated");
                self.dispatcher.adjust_reputation(&w.info.worker_id, delta).await;
                changed += 1;
            }
        }
        self.metrics.reputation_recalculated();
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(finished: u64, failed: u64) -> TaskOutcomes {
        TaskOutcomes { finished, failed }
    }

    #[test]
    fn the_formula() {
        assert_eq!(recalculated_reputation(0.8, o(0, 0)), None, "no rows: unchanged");
        // 3 of 4 succeeded: 0.7 x 0.75 + 0.3 x 1.0 = 0.825
        assert_eq!(recalculated_reputation(1.0, o(4, 1)), Some(0.825));
        assert_eq!(recalculated_reputation(0.5, o(10, 0)), Some(0.85));
        // Clamped: all failed and a low reputation would go below 0.1.
        assert_eq!(recalculated_reputation(0.2, o(5, 5)), Some(0.1));
        assert_eq!(recalculated_reputation(0.0, o(1, 1)), Some(0.1));
        assert_eq!(recalculated_reputation(1.0, o(1, 0)), Some(1.0), "never above 1.0");
        // Rounded to 4 decimals: 0.7 x 2/3 + 0.3 x 0.12345 = 0.5037016...
        assert_eq!(recalculated_reputation(0.12345, o(3, 1)), Some(0.5037));
        // 0.7 x 1/3 + 0.3 x 0.9 = 0.503333...
        assert_eq!(recalculated_reputation(0.9, o(3, 2)), Some(0.5033));
        // Repeated, a steady success rate is approached (decay of the old value).
        let mut r = 1.0;
        for _ in 0..20 {
            r = recalculated_reputation(r, o(4, 2)).unwrap();
        }
        assert!((r - 0.5).abs() < 1e-3, "{r}");
    }
}
