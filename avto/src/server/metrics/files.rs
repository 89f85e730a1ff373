//! The counters of the operations on jobs' files (S3): `avto_s3_operations_total{operation,status}`
//! and `avto_s3_operation_duration_seconds{operation}` (spec §9.1 / §10.2). The labels take their
//! values from [`FileOp`] and `success` / `error` only.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::files::{FileObserver, FileOp, FileOperation};

/// Upper bounds (seconds) of the file operation duration buckets.
pub const FILE_OPERATION_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new(FILE_OPERATION_BUCKETS.iter().copied())
}

/// The file operation counters; a [`FileObserver`] (every clone counts into the same series).
#[derive(Debug, Clone)]
pub struct FileCounters {
    operations: Family<OperationLabels, Counter>,
    durations: Family<OperationLabel, Histogram>,
}

impl Default for FileCounters {
    fn default() -> Self {
        FileCounters { operations: Family::default(), durations: Family::new_with_constructor(duration_histogram) }
    }
}

impl FileCounters {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "avto_s3_operations",
            "Operations on jobs' files (handlers, client uploads and downloads, the cleanup), by operation and status",
            self.operations.clone(),
        );
        r.register(
            "avto_s3_operation_duration_seconds",
            "Duration of the operations on jobs' files, by operation",
            self.durations.clone(),
        );
    }

    /// Operations of `op` that ended with `status` (`success` / `error`) so far.
    pub fn count(&self, op: FileOp, status: &'static str) -> u64 {
        self.operations.get(&OperationLabels { operation: op.as_str(), status }).map_or(0, |c| c.get())
    }
}

impl FileObserver for FileCounters {
    fn observe(&self, op: &FileOperation) {
        let operation = op.operation.as_str();
        let status = if op.error.is_none() { "success" } else { "error" };
        self.operations.get_or_create(&OperationLabels { operation, status }).inc();
        self.durations.get_or_create(&OperationLabel { operation }).observe(op.duration.as_secs_f64());
    }
}
