//! Observability: Prometheus metrics at `GET /metrics`, and the hooks through which [`Core`]
//! reports job events to the metrics and to the history writer.
//!
//! `/metrics` needs the operator credential (`ADMIN_TOKEN`, sent by Prometheus as
//! `authorization: {credentials: <token>}`, i.e. `Authorization: Bearer <token>`); without an
//! `ADMIN_TOKEN` it is off (403). Every number comes from counters kept as jobs change (the job
//! store's per-status counts, the dispatcher's queues), never from a walk over the jobs, so a
//! scrape costs the same at 100 or 100,000 jobs.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `avto_jobs{status}` | gauge | jobs in the job store per status |
//! | `avto_queue_depth` | gauge | tasks waiting on worker queues or for a worker |
//! | `avto_workers_live` | gauge | registered workers whose heartbeat has not expired |
//! | `avto_jobs_created_total{blueprint}` | counter | jobs created (API, scheduler, child jobs) |
//! | `avto_jobs_ended_total{blueprint,status}` | counter | jobs that reached a terminal status |
//! | `avto_dispatch_latency_seconds` | histogram | task dispatch -> picked up by a worker |
//! | `avto_job_duration_seconds{blueprint}` | histogram | job created -> terminal status |
//! | `avto_scheduler_jobs_triggered_total{schedule}` | counter | jobs created by schedules.toml |
//! | `avto_worker_poll_answers_total`, `avto_worker_tasks_handed_out_total` | counter | polls answered with tasks, and the tasks in them (more tasks than answers: workers take batches) |
//! | `avto_worker_result_requests_total`, `avto_worker_results_total` | counter | result requests, and the results in them |
//! | `avto_history_events_{written,dropped,failed}_total`, `avto_history_queue_depth` | | history writer (when enabled) |
//!
//! The text is written by hand (Prometheus exposition format 0.0.4); no metrics crate needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;

use super::core::Core;
use crate::job::JobStatus;

/// Upper bounds (seconds) of the dispatch latency buckets.
pub const DISPATCH_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Upper bounds (seconds) of the job duration buckets.
pub const DURATION_BUCKETS: &[f64] =
    &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0];

/// A histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, n) in self.bounds.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// In-process counters and histograms (per orchestrator instance).
#[derive(Debug)]
pub struct Metrics {
    created: Mutex<BTreeMap<String, u64>>,
    ended: Mutex<BTreeMap<(String, JobStatus), u64>>,
    scheduled: Mutex<BTreeMap<String, u64>>,
    pub dispatch_latency: Histogram,
    durations: Mutex<BTreeMap<String, Arc<Histogram>>>,
    /// Poll answers that carried tasks, and the tasks they carried.
    pub poll_answers: AtomicU64,
    pub tasks_handed_out: AtomicU64,
    /// Result requests (single or batched), and the results they carried.
    pub result_requests: AtomicU64,
    pub results: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            created: Default::default(),
            ended: Default::default(),
            scheduled: Default::default(),
            dispatch_latency: Histogram::new(DISPATCH_BUCKETS),
            durations: Default::default(),
            poll_answers: AtomicU64::new(0),
            tasks_handed_out: AtomicU64::new(0),
            result_requests: AtomicU64::new(0),
            results: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn job_created(&self, blueprint: &str) {
        *self.created.lock().entry(blueprint.to_owned()).or_insert(0) += 1;
    }

    pub fn job_ended(&self, blueprint: &str, status: JobStatus, seconds: f64) {
        *self.ended.lock().entry((blueprint.to_owned(), status)).or_insert(0) += 1;
        let h = self
            .durations
            .lock()
            .entry(blueprint.to_owned())
            .or_insert_with(|| Arc::new(Histogram::new(DURATION_BUCKETS)))
            .clone();
        h.observe(seconds);
    }

    /// A poll answered with `tasks` tasks.
    pub fn poll_answered(&self, tasks: usize) {
        self.poll_answers.fetch_add(1, Ordering::Relaxed);
        self.tasks_handed_out.fetch_add(tasks as u64, Ordering::Relaxed);
    }

    /// A result request carrying `results` results.
    pub fn results_received(&self, results: usize) {
        self.result_requests.fetch_add(1, Ordering::Relaxed);
        self.results.fetch_add(results as u64, Ordering::Relaxed);
    }

    pub fn schedule_fired(&self, schedule: &str) {
        *self.scheduled.lock().entry(schedule.to_owned()).or_insert(0) += 1;
    }

    /// Jobs created so far per blueprint.
    pub fn created(&self) -> BTreeMap<String, u64> {
        self.created.lock().clone()
    }
}

/// A label value escaped for the exposition format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole `/metrics` page.
pub async fn render(core: &Core) -> String {
    let m = core.metrics();
    let mut out = String::with_capacity(4096);
    header(&mut out, "avto_jobs", "gauge", "Jobs in the job store by status.");
    let counts = core.job_counts(None).await.unwrap_or_default();
    for status in JobStatus::ALL {
        let _ = writeln!(out, "avto_jobs{{status=\"{status}\"}} {}", counts.get(&status).copied().unwrap_or(0));
    }
    header(&mut out, "avto_queue_depth", "gauge", "Tasks waiting on worker queues or for a worker.");
    let _ = writeln!(out, "avto_queue_depth {}", core.queue_depth().await);
    header(&mut out, "avto_workers_live", "gauge", "Registered workers with an unexpired heartbeat.");
    let _ = writeln!(out, "avto_workers_live {}", core.live_worker_count().await);

    header(&mut out, "avto_jobs_created_total", "counter", "Jobs created, per blueprint.");
    for bp in core.env().blueprints() {
        let n = m.created.lock().get(bp.name()).copied().unwrap_or(0);
        let _ = writeln!(out, "avto_jobs_created_total{{blueprint=\"{}\"}} {n}", label(bp.name()));
    }
    header(&mut out, "avto_jobs_ended_total", "counter", "Jobs that reached a terminal status, per blueprint.");
    for ((bp, status), n) in m.ended.lock().iter() {
        let _ = writeln!(out, "avto_jobs_ended_total{{blueprint=\"{}\",status=\"{status}\"}} {n}", label(bp));
    }

    header(
        &mut out,
        "avto_dispatch_latency_seconds",
        "histogram",
        "Time from a task's dispatch to its pick-up by a worker.",
    );
    m.dispatch_latency.render("avto_dispatch_latency_seconds", "", &mut out);
    header(&mut out, "avto_job_duration_seconds", "histogram", "Time from job creation to its terminal status.");
    let durations: Vec<(String, Arc<Histogram>)> =
        m.durations.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (bp, h) in durations {
        h.render("avto_job_duration_seconds", &format!("blueprint=\"{}\"", label(&bp)), &mut out);
    }

    header(&mut out, "avto_scheduler_jobs_triggered_total", "counter", "Jobs created by schedules.toml.");
    for (name, n) in m.scheduled.lock().iter() {
        let _ = writeln!(out, "avto_scheduler_jobs_triggered_total{{schedule=\"{}\"}} {n}", label(name));
    }

    let counters = [
        ("avto_worker_poll_answers_total", "Polls answered with tasks.", &m.poll_answers),
        ("avto_worker_tasks_handed_out_total", "Tasks handed to workers by polls.", &m.tasks_handed_out),
        ("avto_worker_result_requests_total", "Result requests (single or batched).", &m.result_requests),
        ("avto_worker_results_total", "Task results received.", &m.results),
    ];
    for (name, help, n) in counters {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", n.load(Ordering::Relaxed));
    }

    if let Some(h) = core.history() {
        let s = h.stats();
        header(&mut out, "avto_history_events_written_total", "counter", "History rows written.");
        let _ = writeln!(out, "avto_history_events_written_total {}", s.written.load(Ordering::Relaxed));
        header(&mut out, "avto_history_events_dropped_total", "counter", "History events dropped (queue full).");
        let _ = writeln!(out, "avto_history_events_dropped_total {}", s.dropped.load(Ordering::Relaxed));
        header(&mut out, "avto_history_events_failed_total", "counter", "History rows the database refused.");
        let _ = writeln!(out, "avto_history_events_failed_total {}", s.failed.load(Ordering::Relaxed));
        header(&mut out, "avto_history_queue_depth", "gauge", "History events waiting for the writer.");
        let _ = writeln!(out, "avto_history_queue_depth {}", h.queued());
    }
    out
}

/// `GET /metrics`.
pub fn routes() -> Router<Arc<Core>> {
    Router::new().route("/metrics", get(metrics_page))
}

async fn metrics_page(State(core): State<Arc<Core>>, _operator: super::api::Operator) -> Response {
    let body = render(&core).await;
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], body)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_text() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(7.0);
        let mut out = String::new();
        h.render("x", "a=\"b\"", &mut out);
        assert_eq!(
            out,
            "x_bucket{a=\"b\",le=\"0.1\"} 1\nx_bucket{a=\"b\",le=\"1\"} 2\nx_bucket{a=\"b\",le=\"+Inf\"} 3\n\
             x_sum{a=\"b\"} 7.55\nx_count{a=\"b\"} 3\n"
        );
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
