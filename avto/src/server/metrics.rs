//! Observability: the Prometheus series counted as jobs change, and the `/metrics` page
//! rendered from them and a [`Snapshot`] of the stores. This module only counts and renders:
//! the core calls the counting methods (`core/observe.rs`), the API serves the page
//! (`api/metrics.rs`).
//!
//! `/metrics` needs the operator credential (`ADMIN_TOKEN`, sent by Prometheus as
//! `authorization: {credentials: <token>}`, i.e. `Authorization: Bearer <token>`); without an
//! `ADMIN_TOKEN` it is off (403). Every number comes from counters kept as jobs change (the job
//! store's per-status counts, the dispatcher's queues), never from a walk over the jobs, so a
//! scrape costs the same at 100 or 100,000 jobs.
//!
//! The series are listed on [`Metrics`].
//!
//! The series, the registry and the text (Prometheus exposition format 0.0.4) are
//! `prometheus-client`'s. Counters are registered without their `_total` suffix: the encoder
//! adds it to the samples and to `# HELP` / `# TYPE`, and a help text gets its final period
//! from the registry. A labelled family without samples yet is left off the page.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::job::JobStatus;

mod files;
mod refusals;

pub use files::{FileCounters, FILE_OPERATION_BUCKETS};
pub use refusals::SecurityCounters;
pub(crate) use refusals::{reason, role};

/// Upper bounds (seconds) of the dispatch latency buckets.
pub const DISPATCH_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Upper bounds (seconds) of the job duration buckets.
pub const DURATION_BUCKETS: &[f64] =
    &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0];

/// The label of the per-blueprint series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BlueprintLabel {
    blueprint: String,
}

/// The labels of `avto_jobs_ended_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndedLabels {
    blueprint: String,
    status: &'static str,
}

/// The label of `avto_scheduler_jobs_triggered_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ScheduleLabel {
    schedule: String,
}

/// The label of `avto_jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// One blueprint's job duration histogram (the constructor of its family).
fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS.iter().copied())
}

/// In-process counters and histograms (per orchestrator instance), counted as jobs change, and
/// the `/metrics` page ([`Metrics::render`]) with what the stores count at a scrape:
///
/// | metric | type | meaning |
/// |---|---|---|
/// | `avto_jobs{status}` | gauge | jobs in the job store per status |
/// | `avto_queue_depth` | gauge | tasks waiting on worker queues or for a worker |
/// | `avto_workers_live` | gauge | registered workers whose heartbeat has not expired |
/// | `avto_jobs_created_total{blueprint}` | counter | jobs created (API, scheduler, child jobs) |
/// | `avto_jobs_ended_total{blueprint,status}` | counter | jobs that reached a terminal status |
/// | `avto_dispatch_latency_seconds` | histogram | task dispatch -> picked up by a worker |
/// | `avto_job_duration_seconds{blueprint}` | histogram | job created -> terminal status |
/// | `avto_scheduler_jobs_triggered_total{schedule}` | counter | jobs created by schedules.toml |
/// | `avto_worker_poll_answers_total`, `avto_worker_tasks_handed_out_total` | counter | polls answered with tasks, and the tasks in them (more tasks than answers: workers take batches) |
/// | `avto_worker_result_requests_total`, `avto_worker_results_total` | counter | result requests, and the results in them |
/// | `avto_reputation_recalculations_total` | counter | reputation recalculations this instance ran (one per `REPUTATION_RECALC_INTERVAL_SECONDS` across the instances) |
/// | `avto_runtime_scheduling_delay_seconds` | gauge | how late the runtime woke a task that slept 1 s (last sample, every second) |
/// | `avto_history_events_{written,dropped,failed}_total`, `avto_history_queue_depth` | | history writer (when enabled) |
/// | `avto_webhooks_total{outcome}` | counter | webhooks by outcome: `delivered`, `rejected` (4xx), `failed` (every attempt), `refused` (non-public target), `dropped` (queue full, not kept), `deferred` (queue full, left in the outbox), `redelivered` (taken from the outbox again) |
/// | `avto_security_auth_failures_total{role,reason}` | counter | requests refused for their credential or signature: `role` `client`, `worker`, `operator`; `reason` `missing_credentials`, `invalid_token`, `worker_id_mismatch`, `certificate_mismatch`, `invalid_certificate`, `mtls_required`, `disabled` (no `ADMIN_TOKEN`), `missing_signature`, `signer_mismatch`, `invalid_signature` |
/// | `avto_security_replay_detected_total{reason}` | counter | worker messages refused as replays: `duplicate` (nonce seen before), `expired` (timestamp outside the 60 s window), `missing_timestamp` |
/// | `avto_ratelimit_blocked_total{scope,path}` | counter | 429s of the rate limits: `scope` `client`, `worker` or `ip` (requests without a valid credential); `path` the route template, `rxon:{kind}` for workers (`register`, `heartbeat`, `poll`, `result`, `event`, `sts`, `websocket`, `auth` for failed worker authentications) |
/// | `avto_jobs_timeouts_total{blueprint,type}` | counter | tasks that timed out: `dispatch` (not picked up before the dispatch deadline), `execution` (no result in time) |
/// | `avto_tasks_ignored_total{blueprint,reason}` | counter | worker results ignored: `job_not_found` (blueprint empty), `worker_mismatch`, `stale_task`, `deadline_exceeded`, `job_cancelled`, `job_already_terminated` |
/// | `orchestrator_redis_round_trips_total` | counter | requests this instance sent to Redis (a command, a script call or a pipeline each count one, retries too); only with Redis |
/// | `avto_s3_operations_total{operation,status}`, `avto_s3_operation_duration_seconds{operation}` | counter, histogram | operations on jobs' files: `upload`, `upload_dir`, `download`, `download_dir`, `presign`, `delete`, `cleanup`; `success` / `error` |
///
/// No label carries a worker id, a token, a job id or a request path: each takes its values from
/// a fixed set, the routes of the router or the blueprints of the binary.
#[derive(Debug)]
pub struct Metrics {
    /// Every series below, registered in the order of the page.
    registry: Registry,
    created: Family<BlueprintLabel, Counter>,
    ended: Family<EndedLabels, Counter>,
    /// Task dispatch -> pick-up by a worker, in seconds.
    pub(crate) dispatch_latency: Histogram,
    durations: Family<BlueprintLabel, Histogram>,
    scheduled: Family<ScheduleLabel, Counter>,
    /// Poll answers that carried tasks, and the tasks they carried.
    poll_answers: Counter,
    tasks_handed_out: Counter,
    /// Result requests (single or batched), and the results they carried.
    result_requests: Counter,
    results: Counter,
    /// How late the runtime woke a task that slept 1 s, at the last sample (seconds).
    scheduling_delay: Gauge<f64, AtomicU64>,
    /// Reputation recalculations this instance ran.
    reputation_recalculations: Counter,
    /// Security rejections, rate-limit refusals, timeouts, ignored results.
    refusals: refusals::Refusals,
    /// Operations on jobs' files.
    files: FileCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            created: Family::default(),
            ended: Family::default(),
            dispatch_latency: Histogram::new(DISPATCH_BUCKETS.iter().copied()),
            durations: Family::new_with_constructor(duration_histogram),
            scheduled: Family::default(),
            poll_answers: Counter::default(),
            tasks_handed_out: Counter::default(),
            result_requests: Counter::default(),
            results: Counter::default(),
            scheduling_delay: Gauge::default(),
            reputation_recalculations: Counter::default(),
            refusals: Default::default(),
            files: FileCounters::default(),
        };
        // The registry holds handles to the same series (each metric is an `Arc` inside).
        let r = &mut m.registry;
        r.register("avto_jobs_created", "Jobs created, per blueprint", m.created.clone());
        r.register("avto_jobs_ended", "Jobs that reached a terminal status, per blueprint", m.ended.clone());
        r.register(
            "avto_dispatch_latency_seconds",
            "Time from a task's dispatch to its pick-up by a worker",
            m.dispatch_latency.clone(),
        );
        r.register("avto_job_duration_seconds", "Time from job creation to its terminal status", m.durations.clone());
        r.register("avto_scheduler_jobs_triggered", "Jobs created by schedules.toml", m.scheduled.clone());
        r.register("avto_worker_poll_answers", "Polls answered with tasks", m.poll_answers.clone());
        r.register("avto_worker_tasks_handed_out", "Tasks handed to workers by polls", m.tasks_handed_out.clone());
        r.register("avto_worker_result_requests", "Result requests (single or batched)", m.result_requests.clone());
        r.register("avto_worker_results", "Task results received", m.results.clone());
        r.register(
            "avto_runtime_scheduling_delay_seconds",
            "How late the async runtime woke a task that slept one second, at the last sample (a busy or starved runtime)",
            m.scheduling_delay.clone(),
        );
        r.register(
            "avto_reputation_recalculations",
            "Reputation recalculations this instance ran",
            m.reputation_recalculations.clone(),
        );
        m.refusals.register(r);
        m.files.register(r);
        m
    }
}

impl Metrics {
    pub fn job_created(&self, blueprint: &str) {
        self.created.get_or_create(&BlueprintLabel { blueprint: blueprint.to_owned() }).inc();
    }

    pub fn job_ended(&self, blueprint: &str, status: JobStatus, seconds: f64) {
        let blueprint = blueprint.to_owned();
        self.ended.get_or_create(&EndedLabels { blueprint: blueprint.clone(), status: status.as_str() }).inc();
        self.durations.get_or_create(&BlueprintLabel { blueprint }).observe(seconds.max(0.0));
    }

    /// A poll answered with `tasks` tasks.
    pub fn poll_answered(&self, tasks: usize) {
        self.poll_answers.inc();
        self.tasks_handed_out.inc_by(tasks as u64);
    }

    /// A result request carrying `results` results.
    pub fn results_received(&self, results: usize) {
        self.result_requests.inc();
        self.results.inc_by(results as u64);
    }

    /// A sample of the runtime's scheduling delay.
    pub fn scheduling_delay(&self, seconds: f64) {
        self.scheduling_delay.set(seconds.max(0.0));
    }

    /// This instance recalculated the reputations.
    pub fn reputation_recalculated(&self) {
        self.reputation_recalculations.inc();
    }

    /// Reputation recalculations this instance ran.
    pub fn reputation_recalculations(&self) -> u64 {
        self.reputation_recalculations.get()
    }

    pub fn schedule_fired(&self, schedule: &str) {
        self.scheduled.get_or_create(&ScheduleLabel { schedule: schedule.to_owned() }).inc();
    }

    /// The security counters (shared with the credential checks).
    pub fn security(&self) -> &SecurityCounters {
        &self.refusals.security
    }

    /// The file operation counters (the observer of every job's files).
    pub fn files(&self) -> &FileCounters {
        &self.files
    }

    /// A request refused by a rate limit: `scope` `client`, `worker` or `ip`; `path` a route
    /// template or `rxon:{kind}` (never a request path).
    pub fn rate_limited(&self, scope: &'static str, path: &str) {
        self.refusals.rate_limited(scope, path);
    }

    /// A task of a `blueprint` job timed out (`kind`: `dispatch` or `execution`).
    pub fn task_timed_out(&self, blueprint: &str, kind: &'static str) {
        self.refusals.timeout(blueprint, kind);
    }

    /// A worker result ignored (`blueprint` empty when the job is unknown).
    pub fn result_ignored(&self, blueprint: &str, reason: &'static str) {
        self.refusals.ignored(blueprint, reason);
    }
}

/// What the stores count at the moment of a scrape (gathered by the API's `GET /metrics`).
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Jobs in the job store per status.
    pub job_counts: BTreeMap<JobStatus, u64>,
    /// Tasks waiting on worker queues or for a worker.
    pub queue_depth: usize,
    /// Registered workers whose heartbeat has not expired.
    pub live_workers: usize,
    /// Every registered blueprint (each is on the page, at 0 until its first job).
    pub blueprints: Vec<String>,
    /// The history writer's numbers, when the history is enabled.
    pub history: Option<HistoryNumbers>,
    /// What became of the webhooks so far.
    pub webhooks: super::webhooks::WebhookCounts,
    /// Requests this instance sent to Redis (`None` without Redis).
    pub redis_round_trips: Option<u64>,
}

/// The history writer's counters at a scrape.
#[derive(Debug, Default, Clone, Copy)]
pub struct HistoryNumbers {
    pub written: u64,
    pub dropped: u64,
    pub failed: u64,
    pub queued: usize,
}

impl Metrics {
    /// The whole `/metrics` page: what the stores count now, then the series counted as jobs
    /// changed, then the history writer's.
    pub fn render(&self, now: &Snapshot) -> String {
        let mut stores = Registry::default();
        let jobs = Family::<StatusLabel, Gauge<u64, AtomicU64>>::default();
        for status in JobStatus::ALL {
            let n = now.job_counts.get(&status).copied().unwrap_or(0);
            jobs.get_or_create(&StatusLabel { status: status.as_str() }).set(n);
        }
        stores.register("avto_jobs", "Jobs in the job store by status", jobs);
        let queued = ConstGauge::new(now.queue_depth);
        stores.register("avto_queue_depth", "Tasks waiting on worker queues or for a worker", queued);
        let live = ConstGauge::new(now.live_workers);
        stores.register("avto_workers_live", "Registered workers with an unexpired heartbeat", live);

        for blueprint in &now.blueprints {
            let _zero = self.created.get_or_create(&BlueprintLabel { blueprint: blueprint.clone() });
        }

        let hooks = Family::<OutcomeLabel, Counter>::default();
        let w = now.webhooks;
        for (outcome, n) in [
            ("delivered", w.delivered),
            ("rejected", w.rejected),
            ("failed", w.failed),
            ("refused", w.refused),
            ("dropped", w.dropped),
            ("deferred", w.deferred),
            ("redelivered", w.redelivered),
        ] {
            hooks.get_or_create(&OutcomeLabel { outcome }).inc_by(n);
        }
        stores.register("avto_webhooks", "Webhooks by outcome", hooks);
        if let Some(n) = now.redis_round_trips {
            let help = "Requests this instance sent to Redis: a command, a script call or a pipeline each count one";
            stores.register("orchestrator_redis_round_trips", help, ConstCounter::new(n));
        }

        let mut writer = Registry::default();
        if let Some(h) = now.history {
            writer.register("avto_history_events_written", "History rows written", ConstCounter::new(h.written));
            writer.register(
                "avto_history_events_dropped",
                "History events dropped (queue full)",
                ConstCounter::new(h.dropped),
            );
            writer.register(
                "avto_history_events_failed",
                "History rows the database refused",
                ConstCounter::new(h.failed),
            );
            writer.register(
                "avto_history_queue_depth",
                "History events waiting for the writer",
                ConstGauge::new(h.queued),
            );
        }

        let mut out = String::with_capacity(4096);
        for registry in [&stores, &self.registry, &writer] {
            // Writing into a String does not fail.
            let _ = prometheus_text::encode(&mut out, registry);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text the page is made of: cumulative buckets, `+Inf`, sum and count, escaped labels.
    #[test]
    fn histogram_text() {
        let h = Family::<Vec<(&'static str, String)>, Histogram>::new_with_constructor(|| Histogram::new([0.1, 1.0]));
        let labels = vec![("a", "b".to_owned())];
        for seconds in [0.05, 0.5, 7.0] {
            h.get_or_create(&labels).observe(seconds);
        }
        let mut registry = Registry::default();
        registry.register("x", "X", h.clone());
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry).unwrap();
        assert_eq!(
            out,
            "# HELP x X.\n# TYPE x histogram\n\
             x_bucket{a=\"b\",le=\"0.1\"} 1\nx_bucket{a=\"b\",le=\"1\"} 2\nx_bucket{a=\"b\",le=\"+Inf\"} 3\n\
             x_sum{a=\"b\"} 7.55\nx_count{a=\"b\"} 3\n"
        );

        let c = Family::<Vec<(&'static str, String)>, Counter>::default();
        c.get_or_create(&vec![("l", "a\"b\\c\nd".to_owned())]).inc();
        let mut registry = Registry::default();
        registry.register("y", "Y", c);
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("y_total{l=\"a\\\"b\\\\c\\nd\"} 1\n"), "{out}");
    }
}
