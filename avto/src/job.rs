//! The job document: everything the engine knows about one run of a blueprint.
//!
//! A job is one JSON-serialisable struct, so every storage backend can keep it as one value
//! and the engine can work on a plain `&mut Job`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::actions::TaskSpec;
use crate::context::{AggregationResults, ClientConfig, TaskError};
use crate::protocol::wire::FileMetadata;

/// How many timed-out task ids a job remembers ([`Job::timed_out_tasks`]): enough for every
/// retry of a task and a fan-out's branches timing out together, bounded for any job.
pub const TIMED_OUT_TASKS_KEPT: usize = 32;

/// How many state entry times a job keeps ([`Job::path_ms`]): those of its last states (the
/// history, when enabled, has every one).
pub const PATH_TIMES_KEPT: usize = 32;

/// Where a job is in its life. Terminal statuses never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobStatus {
    /// Created, not yet picked up by the executor.
    Pending,
    /// A handler runs or is about to run.
    Running,
    /// One task is queued for, or running on, a worker.
    WaitingForWorker,
    /// Waiting for an approval decision (`POST /_public/webhooks/approval/{job_id}`).
    WaitingForHuman,
    /// Several tasks fan out into an aggregator state.
    WaitingForParallelTasks,
    /// A child blueprint runs (`run_blueprint`).
    WaitingForSubJob,
    /// A handler failed and will run again after a backoff.
    AwaitingRetry,
    /// An end state whose status is `finished` was reached.
    Finished,
    /// An end state whose status is `failed` was reached, or the job failed (invalid input, timeouts, ...).
    Failed,
    /// Cancelled by the client (or by a worker's `cancelled` result without a `cancelled` transition).
    Cancelled,
    /// Permanent errors or exhausted retries: kept for manual analysis.
    Quarantined,
}

impl JobStatus {
    /// `finished`, `failed`, `cancelled` and `quarantined` are terminal, everywhere in avto.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Finished | Self::Failed | Self::Cancelled | Self::Quarantined)
    }

    /// The wire name (`waiting_for_worker`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::WaitingForWorker => "waiting_for_worker",
            Self::WaitingForHuman => "waiting_for_human",
            Self::WaitingForParallelTasks => "waiting_for_parallel_tasks",
            Self::WaitingForSubJob => "waiting_for_sub_job",
            Self::AwaitingRetry => "awaiting_retry",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Quarantined => "quarantined",
        }
    }

    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 11] = [
        Self::Pending,
        Self::Running,
        Self::WaitingForWorker,
        Self::WaitingForHuman,
        Self::WaitingForParallelTasks,
        Self::WaitingForSubJob,
        Self::AwaitingRetry,
        Self::Finished,
        Self::Failed,
        Self::Cancelled,
        Self::Quarantined,
    ];

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One dispatched task as the job remembers it (single task or one parallel branch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// `task-<uuid>` for single tasks, a bare uuid for parallel branches; new for every attempt.
    pub task_id: String,
    /// What the blueprint asked for.
    pub spec: TaskSpec,
    /// 0 for the first attempt, +1 per transient retry.
    pub attempt: u32,
    /// The worker holding the lease (set on dispatch to a worker queue, replaced on re-queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Epoch milliseconds when the task was enqueued.
    pub dispatched_at_ms: u64,
    /// Epoch milliseconds when a worker picked it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picked_up_at_ms: Option<u64>,
    /// Epoch milliseconds by which a worker must pick it up, else it fails with
    /// `DISPATCH_TIMEOUT_ERROR`: set each time the server places it (on a worker queue or
    /// parked), from its dispatch timeout (or `DEFAULT_DISPATCH_TIMEOUT_SECONDS`) and result deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_deadline_ms: Option<u64>,
}

/// A pending human decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// decision -> next state
    pub transitions: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Epoch milliseconds when the wait for a decision began (absent on approvals stored by
    /// an older avto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
}

/// A running child blueprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubJobRecord {
    pub child_job_id: String,
    pub blueprint: String,
    /// outcome (`success`, `failure`, `cancelled`) -> next state
    pub transitions: Vec<(String, String)>,
}

/// The whole state of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub blueprint: String,
    pub current_state: String,
    pub status: JobStatus,
    #[serde(default)]
    pub initial_data: Value,
    /// Worker results and handler updates, merged in arrival order.
    #[serde(default)]
    pub state_history: Map<String, Value>,
    #[serde(default)]
    pub aggregation_results: AggregationResults,
    /// The owning client (never its token); shared by all jobs of the client.
    #[serde(default, with = "shared_client")]
    pub client: Arc<ClientConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Job-level default for each dispatch (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_timeout: Option<f64>,
    /// Job-level default for each dispatch (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_timeout: Option<f64>,
    #[serde(default)]
    pub retry_count: u32,
    #[serde(default)]
    pub transition_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The last task error (failure results), readable by handlers as `ctx.last_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Box<TaskError>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The single task in flight (`waiting_for_worker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_task: Option<Box<TaskRecord>>,
    /// Parallel branches still in flight (`waiting_for_parallel_tasks`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<TaskRecord>,
    /// Task ids of the current fan-out's branches in dispatch order (a retried branch's new
    /// task id takes its place): `aggregation_results` are presented in this order, whatever
    /// order the workers answer in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branch_order: Vec<String>,
    /// Aggregator state the branches fan into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Box<ApprovalRecord>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_job: Option<Box<SubJobRecord>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_message: Option<String>,
    /// Why the job waits (e.g. "no live worker offers skill `x`").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_reason: Option<String>,
    /// States entered, in order (the first is the start state).
    #[serde(default)]
    pub path: Vec<String>,
    /// When the last states of [`path`](Self::path) were entered, as milliseconds after
    /// `created_at_ms`: entry `i` belongs to `path[path.len() - path_ms.len() + i]`. The start
    /// state is entered at `created_at_ms` and has no entry; at most [`PATH_TIMES_KEPT`] are
    /// kept (see [`Job::entered_at_ms`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_ms: Vec<u64>,
    /// Epoch milliseconds when a failed handler runs again (`awaiting_retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// S3 file metadata (`{uri, size, etag, metadata}`) of the data the job's results carried,
    /// by data key, merged from each result that moves the job on (a child job starts with its
    /// parent's). A task gets the entries whose keys are keys of its params (`params_metadata`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data_metadata: BTreeMap<String, FileMetadata>,
    /// The `timestamp` (epoch seconds) of the last result that moved the job on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Ids of the job's last tasks that timed out (at most [`TIMED_OUT_TASKS_KEPT`]): a late
    /// result for one of them is ignored as `deadline_exceeded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timed_out_tasks: Vec<String>,
    #[serde(default)]
    pub tracing_context: Map<String, Value>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

impl Job {
    /// A new `pending` job at the blueprint's start state.
    pub fn new(id: impl Into<String>, blueprint: &str, start_state: &str, initial_data: Value) -> Self {
        let now = now_ms();
        Job {
            id: id.into(),
            blueprint: blueprint.to_owned(),
            current_state: start_state.to_owned(),
            status: JobStatus::Pending,
            initial_data,
            state_history: Map::new(),
            aggregation_results: AggregationResults::default(),
            client: Arc::default(),
            webhook_url: None,
            dispatch_timeout: None,
            result_timeout: None,
            retry_count: 0,
            transition_count: 0,
            error_message: None,
            last_error: None,
            result: None,
            current_task: None,
            branches: Vec::new(),
            branch_order: Vec::new(),
            aggregation_target: None,
            approval: None,
            sub_job: None,
            parent_job_id: None,
            progress: None,
            progress_message: None,
            waiting_reason: None,
            path: vec![start_state.to_owned()],
            path_ms: Vec::new(),
            next_retry_at_ms: None,
            security: None,
            metadata: None,
            data_metadata: BTreeMap::new(),
            timestamp: None,
            timed_out_tasks: Vec::new(),
            tracing_context: Map::new(),
            created_at_ms: now,
            updated_at_ms: now,
        }
    }

    /// All tasks currently in flight (the single task or the open branches).
    pub fn tasks_in_flight(&self) -> impl Iterator<Item = &TaskRecord> {
        self.current_task.as_deref().into_iter().chain(self.branches.iter())
    }

    /// The in-flight task `task_id`, if the job has one.
    pub fn task_in_flight(&self, task_id: &str) -> Option<&TaskRecord> {
        self.tasks_in_flight().find(|t| t.task_id == task_id)
    }

    /// The earliest dispatch deadline of the in-flight tasks no worker has picked up yet
    /// (epoch ms); `None` once every task is picked up, or when the job waits for no worker.
    pub fn dispatch_deadline_ms(&self) -> Option<u64> {
        self.tasks_in_flight().filter(|t| t.picked_up_at_ms.is_none()).filter_map(|t| t.dispatch_deadline_ms).min()
    }

    /// Remembers that task `task_id` timed out (the oldest of more than
    /// [`TIMED_OUT_TASKS_KEPT`] is forgotten).
    pub fn record_timeout(&mut self, task_id: &str) {
        if self.timed_out_tasks.iter().any(|t| t == task_id) {
            return;
        }
        if self.timed_out_tasks.len() >= TIMED_OUT_TASKS_KEPT {
            self.timed_out_tasks.remove(0);
        }
        self.timed_out_tasks.push(task_id.to_owned());
    }

    /// Appends `state` to [`path`](Self::path), entered at `at_ms` (the oldest of more than
    /// [`PATH_TIMES_KEPT`] entry times is forgotten).
    pub fn push_path(&mut self, state: &str, at_ms: u64) {
        self.path.push(state.to_owned());
        if self.path_ms.len() >= PATH_TIMES_KEPT {
            self.path_ms.remove(0);
        }
        self.path_ms.push(at_ms.saturating_sub(self.created_at_ms));
    }

    /// When `path[i]` was entered (epoch ms): `created_at_ms` for the start state, `None` for a
    /// state whose time is no longer kept ([`PATH_TIMES_KEPT`]).
    pub fn entered_at_ms(&self, i: usize) -> Option<u64> {
        if i == 0 {
            return Some(self.created_at_ms);
        }
        let first_timed = self.path.len().saturating_sub(self.path_ms.len()).max(1);
        let k = i.checked_sub(first_timed)?;
        self.path_ms.get(k).map(|d| self.created_at_ms.saturating_add(*d))
    }

    /// Finds an in-flight task by id.
    pub fn task_mut(&mut self, task_id: &str) -> Option<&mut TaskRecord> {
        if let Some(t) = self.current_task.as_deref_mut().filter(|t| t.task_id == task_id) {
            return Some(t);
        }
        self.branches.iter_mut().find(|t| t.task_id == task_id)
    }
}

/// Wall-clock epoch milliseconds: the one clock for every deadline in avto.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Wall-clock epoch seconds.
pub fn now_secs() -> i64 {
    (now_ms() / 1000) as i64
}

/// Milliseconds in `secs` seconds, saturating: negative and NaN give 0, more than `u64` holds
/// gives `u64::MAX` (an `f64` to integer `as` cast saturates). Every deadline built from a
/// number of seconds goes through this and [`after_secs`], so no input can overflow the clock.
pub fn secs_to_ms(secs: f64) -> u64 {
    (secs * 1000.0) as u64
}

/// `from_ms` plus `secs` seconds, saturating at `u64::MAX` (a deadline that never comes).
pub fn after_secs(from_ms: u64, secs: f64) -> u64 {
    from_ms.saturating_add(secs_to_ms(secs))
}

/// A job's client, written and read through small per-thread caches inside
/// [`with_client_cache`]: a store that keeps jobs as JSON (Redis) writes and reads the same few
/// clients in every job document, so each thread keeps the JSON of the last clients it wrote (by
/// the shared `Arc`: a job's client is never changed in place) and the clients it read (by their
/// JSON text: reading is a pure function of it). A cached client costs a comparison instead of its
/// fields' serialisation (about 2.3k instructions per write) or parse (3.9k per read;
/// BENCHMARKS.md). The JSON is the same either way. Outside [`with_client_cache`] (any other
/// format a user may write a `Job` in, which the cache's `serde_json` raw values would not suit)
/// the client is (de)serialised as a plain field.
pub(crate) mod shared_client {
    use std::cell::Cell;
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    use crate::context::ClientConfig;
    use crate::mru::Mru;

    /// Clients per thread and cache.
    const CLIENTS: usize = 4;

    /// A client found by its `Arc`'s address (kept alive by the entry, so the address is not
    /// reused while the entry lives).
    #[derive(Clone)]
    struct ByAddress(Arc<ClientConfig>);

    impl PartialEq for ByAddress {
        fn eq(&self, other: &Self) -> bool {
            Arc::ptr_eq(&self.0, &other.0)
        }
    }

    impl From<&ByAddress> for ByAddress {
        fn from(c: &ByAddress) -> Self {
            c.clone()
        }
    }

    thread_local! {
        /// Inside [`with_client_cache`] on this thread.
        static ON: Cell<bool> = const { Cell::new(false) };
        static WRITTEN: std::cell::RefCell<Mru<ByAddress, Box<RawValue>, CLIENTS>> =
            const { std::cell::RefCell::new(Mru::new()) };
        static READ: std::cell::RefCell<Mru<Box<str>, Arc<ClientConfig>, CLIENTS>> =
            const { std::cell::RefCell::new(Mru::new()) };
    }

    /// Runs `f` (a `serde_json` (de)serialisation) with the caches on for the jobs in it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn with_client_cache<R>(f: impl FnOnce() -> R) -> R {
        /// Puts the flag back as it was, also when `f` panics.
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                ON.set(self.0);
            }
        }
        let _restore = Restore(ON.replace(true));
        f()
    }

    pub(super) fn serialize<S: Serializer>(client: &Arc<ClientConfig>, s: S) -> Result<S::Ok, S::Error> {
        if !ON.get() {
            return client.serialize(s);
        }
        WRITTEN.with_borrow_mut(|cache| {
            match cache
                .get_or_try_insert_with(&ByAddress(client.clone()), || serde_json::value::to_raw_value(&**client))
            {
                Ok(json) => json.serialize(s),
                Err(_) => client.serialize(s),
            }
        })
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<ClientConfig>, D::Error> {
        if !ON.get() {
            return ClientConfig::deserialize(d).map(Arc::new);
        }
        let json = Box::<RawValue>::deserialize(d)?;
        READ.with_borrow_mut(|cache| {
            cache
                .get_or_try_insert_with(json.get(), || serde_json::from_str::<ClientConfig>(json.get()).map(Arc::new))
                .cloned()
        })
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_times_are_kept_for_the_last_states_only() {
        let mut job = Job::new("j", "bp", "start", Value::Null);
        let t0 = job.created_at_ms;
        assert_eq!(job.entered_at_ms(0), Some(t0));
        for i in 1..=40u64 {
            job.push_path(&format!("s{i}"), t0 + i * 10);
        }
        assert_eq!(job.path.len(), 41);
        assert_eq!(job.path_ms.len(), PATH_TIMES_KEPT, "bounded");
        // the first 8 states after the start have no time any more; the last 32 have theirs
        assert_eq!(job.entered_at_ms(8), None);
        assert_eq!(job.entered_at_ms(9), Some(t0 + 90));
        assert_eq!(job.entered_at_ms(40), Some(t0 + 400));
        assert_eq!(job.entered_at_ms(41), None);
        // a job stored before the times were kept reads with none but the start's
        let mut old = serde_json::to_value(&job).unwrap();
        old.as_object_mut().unwrap().remove("path_ms");
        let old: Job = serde_json::from_value(old).unwrap();
        assert_eq!((old.entered_at_ms(0), old.entered_at_ms(40)), (Some(t0), None));
    }

    #[test]
    fn a_jobs_client_reads_and_writes_the_same_through_the_caches() {
        use super::shared_client::with_client_cache;
        let client = |plan: &str| {
            let mut config = Map::new();
            config.insert("languages".into(), serde_json::json!(["en", "de \"quoted\""]));
            config.insert("plan".into(), Value::from(plan));
            Arc::new(ClientConfig {
                name: "client_premium".into(),
                id: "toml:client_premium".into(),
                plan: plan.into(),
                params: serde_json::json!({"b": 1, "a": [1.5, null]}),
                config,
            })
        };
        let (premium, free) = (client("premium"), client("free"));
        // The same with the caches (as the Redis store writes and reads jobs) and without.
        for cached in [true, false] {
            let run = |f: &mut dyn FnMut()| if cached { with_client_cache(f) } else { f() };
            let mut job = Job::new("j", "bp", "start", Value::Null);
            // Written twice (the second from the cache), each time as the client serialises alone.
            for c in [&premium, &free, &premium, &premium] {
                job.client = c.clone();
                let (mut doc, mut text) = (Value::Null, String::new());
                run(&mut || (doc, text) = (serde_json::to_value(&job).unwrap(), serde_json::to_string(&job).unwrap()));
                assert_eq!(doc["client"], serde_json::to_value(&**c).unwrap());
                assert!(text.contains(&format!(",\"client\":{},", serde_json::to_string(&**c).unwrap())), "{text}");
            }
            // Read back, from text and from a value: the same client; with the caches, one `Arc`
            // per thread for the same text, another for another text.
            job.client = premium.clone();
            let text = serde_json::to_string(&job).unwrap();
            let mut read = Vec::new();
            run(&mut || {
                read.push(serde_json::from_str::<Job>(&text).unwrap());
                read.push(serde_json::from_str::<Job>(&text).unwrap());
                read.push(serde_json::from_value::<Job>(serde_json::to_value(&job).unwrap()).unwrap());
            });
            assert_eq!(*read[0].client, *premium);
            assert_eq!(Arc::ptr_eq(&read[0].client, &read[1].client), cached, "the second read is the cached client");
            assert_eq!(read[2], read[0]);
            job.client = free.clone();
            let mut d = None;
            run(&mut || d = Some(serde_json::from_str::<Job>(&serde_json::to_string(&job).unwrap()).unwrap()));
            assert_eq!(*d.unwrap().client, *free);
            // No client (documents of earlier versions): the default; a malformed one: an error.
            let mut bare = serde_json::to_value(&job).unwrap();
            bare.as_object_mut().unwrap().remove("client");
            let mut got = None;
            run(&mut || got = Some(serde_json::from_value::<Job>(bare.clone()).unwrap()));
            assert_eq!(*got.unwrap().client, ClientConfig::default());
            bare["client"] = serde_json::json!({"name": 5});
            let mut bad = None;
            run(&mut || bad = Some(serde_json::from_str::<Job>(&bare.to_string()).is_err()));
            assert_eq!(bad, Some(true));
        }
        // Outside again after a panic inside: two reads, two clients.
        let _ = std::panic::catch_unwind(|| with_client_cache(|| panic!("inside")));
        let text = serde_json::to_string(&Job::new("k", "bp", "s", Value::Null)).unwrap();
        let (a, b) = (serde_json::from_str::<Job>(&text).unwrap(), serde_json::from_str::<Job>(&text).unwrap());
        assert!(!Arc::ptr_eq(&a.client, &b.client));
    }
}
