//! In-process history (`HISTORY_DATABASE_URI=memory:`): the reference behaviour of the SQL backends.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};

use futures::future::BoxFuture;

use super::{HistoryBackend, HistoryError, HistoryRecord, TaskOutcomes, WorkerHistoryRecord};

/// Rows in a vector, in insertion order.
#[derive(Debug, Default)]
pub struct MemoryHistory {
    rows: Mutex<Vec<HistoryRecord>>,
    workers: Mutex<Vec<WorkerHistoryRecord>>,
}

impl MemoryHistory {
    pub fn new() -> Self {
        Self::default()
    }

    fn latest(&self, client: Option<&str>) -> Vec<HistoryRecord> {
        let rows = self.rows.lock();
        let mut latest: HashMap<&str, (usize, &HistoryRecord)> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            if client.is_some() && r.client.as_deref() != client {
                continue;
            }
            let e = latest.entry(&r.job_id).or_insert((i, r));
            if (r.timestamp_us, i) >= (e.1.timestamp_us, e.0) {
                *e = (i, r);
            }
        }
        let mut v: Vec<(usize, &HistoryRecord)> = latest.into_values().collect();
        v.sort_by_key(|(i, r)| std::cmp::Reverse((r.timestamp_us, *i)));
        v.into_iter().map(|(_, r)| r.clone()).collect()
    }
}

impl HistoryBackend for MemoryHistory {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn insert<'a>(&'a self, rows: &'a [HistoryRecord]) -> BoxFuture<'a, Result<(), HistoryError>> {
        self.rows.lock().extend_from_slice(rows);
        Box::pin(async { Ok(()) })
    }

    fn job_history<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<Vec<HistoryRecord>, HistoryError>> {
        let mut v: Vec<HistoryRecord> = self.rows.lock().iter().filter(|r| r.job_id == job_id).cloned().collect();
        v.sort_by_key(|r| r.timestamp_us);
        Box::pin(async move { Ok(v) })
    }

    fn jobs<'a>(
        &'a self,
        client: Option<&'a str>,
        limit: usize,
        offset: usize,
    ) -> BoxFuture<'a, Result<Vec<HistoryRecord>, HistoryError>> {
        let v: Vec<HistoryRecord> = self.latest(client).into_iter().skip(offset).take(limit).collect();
        Box::pin(async move { Ok(v) })
    }

    fn status_counts<'a>(
        &'a self,
        client: Option<&'a str>,
    ) -> BoxFuture<'a, Result<BTreeMap<String, u64>, HistoryError>> {
        let mut counts = BTreeMap::new();
        for r in self.latest(client) {
            *counts.entry(r.status.unwrap_or_default()).or_insert(0) += 1;
        }
        Box::pin(async move { Ok(counts) })
    }

    fn schema_version(&self) -> BoxFuture<'_, Result<i64, HistoryError>> {
        Box::pin(async { Ok(super::SCHEMA_VERSION) })
    }

    fn insert_workers<'a>(&'a self, rows: &'a [WorkerHistoryRecord]) -> BoxFuture<'a, Result<(), HistoryError>> {
        self.workers.lock().extend_from_slice(rows);
        Box::pin(async { Ok(()) })
    }

    fn worker_history<'a>(
        &'a self,
        worker_id: &'a str,
        since_us: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<WorkerHistoryRecord>, HistoryError>> {
        let mut v: Vec<WorkerHistoryRecord> = self
            .workers
            .lock()
            .iter()
            .filter(|r| r.worker_id == worker_id && r.timestamp_us >= since_us)
            .cloned()
            .collect();
        v.sort_by_key(|r| r.timestamp_us);
        let v = v.split_off(v.len().saturating_sub(limit));
        Box::pin(async move { Ok(v) })
    }

    fn task_outcomes<'a>(
        &'a self,
        worker_ids: &'a [String],
        since_us: i64,
    ) -> BoxFuture<'a, Result<HashMap<String, TaskOutcomes>, HistoryError>> {
        let ids: HashSet<&str> = worker_ids.iter().map(String::as_str).collect();
        let mut out: HashMap<String, TaskOutcomes> = HashMap::new();
        for r in self.rows.lock().iter() {
            let Some(w) = r.worker_id.as_deref() else { continue };
            if r.event_type == "task_finished" && r.timestamp_us >= since_us && ids.contains(w) {
                let status = r.details.as_ref().and_then(|d| d["result_status"].as_str());
                out.entry(w.to_owned()).or_default().count(status);
            }
        }
        Box::pin(async move { Ok(out) })
    }
}
