//! Redis storage (feature `redis`): every server capability in one Redis, so several orchestrator
//! instances can serve the same clients and workers.
//!
//! Selected by `REDIS_URL` (or Avtomatika's `REDIS_HOST` / `REDIS_PORT` / `REDIS_DB`), or
//! [`OrchestratorBuilder::redis`](crate::server::OrchestratorBuilder::redis). A bad URL fails the build,
//! an unreachable Redis fails the start-up (a `PING` before anything is served).
//!
//! # Layout
//!
//! Every key starts with `REDIS_KEY_PREFIX` (`{p}`, default `avto:`), so deployments and test
//! runs can share one Redis ([`delete_prefix`] removes one prefix with `SCAN` + `DEL`). Values are
//! JSON.
//!
//! | key | type | content |
//! |---|---|---|
//! | `{p}job:{id}` | string | the job document (a terminal job expires `JOB_RETENTION_SECONDS` after it ended) |
//! | `{p}lock:job:{id}` | string, PX lease | random token of the lock holder |
//! | `{p}jobs:client:{name}` | zset | job id → creation time (list, newest first) |
//! | `{p}jobs:quarantined:{name}` | zset | job id → when it was quarantined (the quarantine list) |
//! | `{p}jobs:all`, `{p}jobs:st:{status}`, `{p}jobs:cst:{status}:{name}`, `{p}jobs:bp:{blueprint}`, `{p}jobs:cbp:{len}:{name}:{blueprint}`, `{p}jobs:ids` | zset | the job query indexes: job id → creation time (every job; per status, per blueprint, overall and per client); job id → 0 (ids in lexical order) |
//! | `{p}jobstatus` | hash | job id → status (the status filters of queries; the sweep's index entries) |
//! | `{p}stale` | zset | unsettled job id → last save or recovery claim (crash recovery) |
//! | `{p}jobs:expiry`, `{p}jobs:expiry:client` | zset, hash | terminal job id → when retention removes it; → `["client","created_at_ms","blueprint"]` (the watcher's sweep removes the job's entries above) |
//! | `{p}webhooks:due` | zset | the webhook outbox: ended job id whose job-end webhook is not delivered yet → its sender's last claim |
//! | `{p}w:info:{id}` | string | worker record ([`WorkerInfo`](crate::storage::WorkerInfo)); sealed with `REDIS_ENCRYPTION_KEY` when set |
//! | `{p}w:rep` | hash | worker id → reputation |
//! | `{p}w:all` | zset | worker id → expiry (liveness) |
//! | `{p}w:q:{id}` | zset | the worker's queue: `-priority` → `{seq:020}:{task_id}` |
//! | `{p}w:qt:{id}` | hash | task type → number queued (work-stealing victim search) |
//! | `{p}w:r:{id}` | set | task ids the worker runs |
//! | `{p}w:c:{id}` | zset | task id → until when the worker is told to cancel it |
//! | `{p}t:{task_id}` | hash | one queued, running or parked task: job, type, data, loc, worker, ... |
//! | `{p}parked` | zset | task id → parked time (tasks no worker can take yet) |
//! | `{p}due:q` | zset | queued / parked task id → dispatch deadline |
//! | `{p}due:run`, `{p}due:rund` | zset | running task id → deadline; → pick-up time (default timeout) |
//! | `{p}seq` | int | FIFO sequence of queued tasks (stamped by the enqueue script) |
//! | `{p}quota_used:{sha256(token)}:{YYYY-MM}`, `{p}quota_limit:{sha256(token)}` | int, PX 62 days; int | job creations of a calendar month (UTC), kept 62 days from the month's first; the client's `monthly_attempts` |
//! | `{p}rl:{key}` | int, PX window | fixed-window rate limit counter |
//! | `{p}nonce:{n}` | PX ttl | replay protection |
//! | `{p}sts:{kind}:{sha256}` | string, PX ttl | STS token owner; sealed with `REDIS_ENCRYPTION_KEY` when set |
//! | `{p}dsk:{blueprint}:{store}:{key}` | string (JSON), expiry | one blueprint data-store key (`DATA_STORE_TTL_SECONDS` after its last write unless declared) |
//! | `{p}ds:{blueprint}:{store}` | hash | a data store as earlier versions wrote it: each key moves to its own string on first use |
//! | `{p}round_robin` | integer | the round-robin turn all instances share |
//! | `{p}sched:{key}` | string, PX ttl | scheduler fire-time claims; `sched:reputation:{interval_ms}:{period}`: the reputation recalculation of a period (kept 2 intervals) |
//! | `{p}rid:{uuid}` | string, 60 s | the answer of a claiming script, for a retry after a lost reply (a pop or steal keeps only the task's queue member, not its JSON) |
//! | `{p}bus` | pub/sub channel | wake-ups and WebSocket commands between instances |
//!
//! The counts per status (overall and per client) are the sizes of the status indexes
//! (`finished`, which has none, is what the others leave of `jobs:all` / `jobs:client:{name}`;
//! see `query.rs`), so a status change moves two index entries and nothing else.
//!
//! Upgrading: a dataset written since the query indexes (issue #18) reads the same. The version
//! before this one also kept `{p}counts` and `{p}counts:client:{name}` (status → number of
//! jobs); they are no longer read or written and can be deleted. During a rolling upgrade, an
//! instance of that version reads those hashes, which the new instances no longer move. Jobs
//! stored before the query indexes are in no status index: they were missing from queries
//! already and are now missing from the overall counts too (a client's counts show them as
//! `finished`).
//!
//! # Atomicity
//!
//! Everything two instances could race on is one Lua script: insert, lock, save, commit (save
//! and release), release and renewal of a job; enqueue, pop, steal, cancel, park, claim, overdue
//! and expiry of tasks and workers; quotas, rate limits, nonces and schedule claims. Scripts compute keys from the prefix they
//! are given, which is fine for a standalone Redis (or a primary with replicas), not for
//! Redis Cluster.
//!
//! On Redis 7 each script is a function library of its own, `avto_{sha1 of its text}`, loaded
//! by the first call that finds it missing (and again after a restart without persistence or a
//! `FUNCTION FLUSH`): its helpers are made once, at load, instead of on every call. A Redis
//! before 7.0, or a user whose ACL denies `FCALL` or `FUNCTION`, gets the same scripts with
//! `EVALSHA` (logged once at `info`). See `lua.rs`.
//!
//! # Job locks
//!
//! [`JobStore::lock`](crate::storage::JobStore::lock) is `SET {p}lock:job:{id} <token> NX PX
//! <lease>` (in a script that also reads the job), retried with a short backoff while another
//! holder works. The lease (`JOB_LOCK_LEASE_SECONDS`, 30 s) is renewed every third of it while
//! the guard lives, so a handler may run for as long as it needs; it only bounds how long a
//! crashed instance keeps a job locked. One task per store renews every lock held that long, in
//! one script call per 256 locks (`jobs/renew.rs`); a lock released sooner, as most are, costs
//! an entry in a map and nothing in Redis. `save` writes only while the token still holds the lock
//! (a holder that lost its lease, e.g. after a long stall, cannot overwrite the new holder's
//! work: its save fails with `Conflict`); `commit` checks and releases it with one `GETDEL`
//! (another holder's token, taken off by it, is put back with a full lease). Dropping the guard
//! releases the lock (compare and delete, spawned because `Drop` cannot wait).
//!
//! # Redis calls per job
//!
//! Redis's own CPU per job goes mostly into the calls the scripts make (and the Lua work around
//! them), not into the requests: a write moves the status index entries from the status the
//! holder found under its lock (no read of the stored status), the counts are the index sizes,
//! a lock is one `SET NX PX` when the job is free, and a terminal document's retention expiry is
//! set by the `SET` that writes it (`PXAT`, kept by later writes with `KEEPTTL`).
//!
//! # Round trips per job
//!
//! Each step of a job is as few scripts as its guarantees allow: a new job whose first handlers
//! can run at once runs them before it is stored, and one script inserts it as they left it with
//! the tasks they dispatched ([`JobStore::unsaved`](crate::storage::JobStore::unsaved); first
//! handlers that take longer than the create request's budget of 5 ms, or that park a task, get
//! the job inserted as created and locked
//! ([`JobStore::insert_locked`](crate::storage::JobStore::insert_locked)) first); every read-modify-write
//! ends with one commit script that saves and releases
//! ([`JobStore::commit`](crate::storage::JobStore::commit)); placing a task is one enqueue script
//! that also stamps its FIFO sequence and publishes the wake-up on the bus (only while another
//! instance listens: the queueing instance wakes its own long-polls directly), choosing the worker
//! from a list of live workers at most 200 ms old
//! ([`WorkerStore::dispatch_view`](crate::storage::WorkerStore::dispatch_view); the script still
//! refuses a worker that is gone); a poll takes its batch of tasks off the queue and locks their
//! jobs in one script ([`JobStore::pop_locked`](crate::storage::JobStore::pop_locked)), and
//! commits the pick-ups recorded in those jobs in another
//! ([`JobStore::commit_all`](crate::storage::JobStore::commit_all)); a result
//! locks its job and forgets its running task in one
//! ([`JobStore::lock_finishing`](crate::storage::JobStore::lock_finishing)); the dispatcher sends
//! reputation rewards in batches, and delivered webhooks leave the outbox in batches. Every
//! request is counted (`orchestrator_redis_round_trips_total` on `/metrics`); BENCHMARKS.md
//! ("Redis") lists what a job of the bench costs.
//!
//! # Reconnects
//!
//! Commands go through a [`ConnectionManager`], which reconnects after a connection loss (e.g.
//! `CLIENT KILL`); a command that failed on a dropped connection is sent again with backoff for
//! up to [`RETRY_FOR`]. A claiming script (pop, steal, overdue, expiry, parked and stale claims,
//! quota, nonce and schedule claims) whose reply was lost would hand its items to nobody, so
//! these scripts take a request id and keep a non-empty answer for 60 s: the retry gets the same
//! answer; only a retry looks for a kept answer (the request id carries the attempt). The bus
//! subscriber has its own RESP3 connection that resubscribes after reconnects (wake-ups
//! published meanwhile are lost; long-polls also look at their queue every second when a bus
//! is in use), and says hello on the bus whenever it has (re)subscribed, so that the others
//! publish their wake-ups again at once.
//!
//! # Several instances and crash recovery
//!
//! Background loops run on every instance; each item they handle (an overdue task, a dead
//! worker, a stale job, a parked task, a schedule's fire time) is claimed by one script, so one
//! instance handles it. A job whose instance died while holding it stays unsettled with an
//! expired lock: the watcher claims jobs not saved for `JOB_RECOVERY_SECONDS` (`{p}stale`) and
//! re-drives them ([`Core::recover`](crate::server::Core::recover)); results are applied under the
//! job lock with task-id checks, so each is applied once, and a task that a worker took but never
//! answered comes back through its execution timeout.
//!
//! What a crash can still lose or repeat: side effects outside Redis that an instance carried out
//! for a change it had not saved yet are repeated when the job is re-driven (a handler runs again,
//! a job-end webhook may be sent twice), and history events still buffered in the dead process are
//! lost.
//!
//! Deadlines and worker liveness are wall-clock epoch milliseconds computed by whichever instance
//! writes them, so instances need synchronised clocks (NTP); skew shifts timeouts by as much.

mod bus;
mod combined;
mod data;
mod jobs;
mod limits;
mod lua;
mod query;
mod schedule;
mod sts;
mod workers;

pub(crate) use self::lua::{lua, LuaScript};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisError, RetryMethod};

/// The `redis` client crate, for tools and tests that talk to the same Redis.
pub use ::redis as client;

pub use self::bus::RedisBus;
pub use self::data::RedisDataStores;
pub use self::jobs::RedisJobs;
pub use self::limits::{RedisNonces, RedisQuotas, RedisRateLimits};
pub use self::schedule::RedisScheduleLocks;
pub use self::sts::RedisSts;
pub use self::workers::RedisWorkers;
use crate::storage::{StorageError, Stores};

/// How long a command is retried while the connection is down.
pub const RETRY_FOR: Duration = Duration::from_secs(30);

/// One Redis connection (multiplexed, reconnecting) and the key prefix.
#[derive(Clone)]
pub struct RedisConn {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    manager: ConnectionManager,
    prefix: String,
    /// The URL without a password, for messages.
    shown: String,
    /// The bus subscriber's connection, once subscribed.
    bus: parking_lot::Mutex<Option<bus::BusConn>>,
    /// Requests sent to Redis on this connection and its bus connection (a command, a script
    /// call or a pipeline each count one, retries included): `orchestrator_redis_round_trips_total`.
    round_trips: Arc<AtomicU64>,
    /// Scripts run as Redis functions (else as `EVALSHA` scripts): see [`lua`](self::lua).
    functions: AtomicBool,
    /// Whether another instance may listen on the bus (see [`RedisConn::wake_message`]).
    peers: bus::Peers,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn").field("url", &self.inner.shown).field("prefix", &self.inner.prefix).finish()
    }
}

fn hide_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

impl RedisConn {
    /// A lazy connection to `url` (nothing is sent until the first command; see [`RedisConn::ping`]).
    /// Must be called inside a Tokio runtime.
    pub fn open(url: &str, prefix: &str) -> Result<Self, StorageError> {
        let shown = hide_password(url);
        let client = redis::Client::open(url)
            .map_err(|e| StorageError::Unavailable(format!("invalid Redis URL {shown}: {e}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(1));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| StorageError::Unavailable(format!("Redis {shown}: {e}")))?;
        Ok(RedisConn {
            inner: Arc::new(Inner {
                client,
                manager,
                prefix: prefix.to_owned(),
                shown,
                bus: Default::default(),
                round_trips: Arc::default(),
                functions: AtomicBool::new(true),
                peers: bus::Peers::default(),
            }),
        })
    }

    /// Requests sent to Redis so far (see [`RedisConn::round_trips_counter`]).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// The counter of requests sent to Redis on this connection and its bus connection: every
    /// command, script call or pipeline counts one (each retry too).
    pub fn round_trips_counter(&self) -> Arc<AtomicU64> {
        self.inner.round_trips.clone()
    }

    /// The bus message that wakes `worker_id`'s long-polls on the other instances, as the
    /// queueing scripts publish it; empty (nothing published) while this instance's bus
    /// subscriber sees no other subscriber (see [`bus::Peers`]).
    pub(super) fn wake_message(&self, worker_id: &str) -> String {
        if self.inner.peers.any() {
            to_json(&crate::storage::BusMessage::Wake(worker_id.to_owned()))
        } else {
            String::new()
        }
    }

    /// Counts one request to Redis.
    pub(super) fn sent(&self) {
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// `{prefix}{rest}`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.inner.prefix)
    }

    /// Fails fast (no retries) with a clear message when Redis cannot be reached.
    pub async fn ping(&self) -> Result<(), StorageError> {
        let mut con = self.inner.manager.clone();
        self.sent();
        let pong: Result<Result<String, RedisError>, _> =
            tokio::time::timeout(Duration::from_secs(10), redis::cmd("PING").query_async(&mut con)).await;
        match pong {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StorageError::Unavailable(format!("cannot reach Redis at {}: {e}", self.inner.shown))),
            Err(_) => Err(StorageError::Unavailable(format!("cannot reach Redis at {}: timed out", self.inner.shown))),
        }
    }

    /// The server-side ids (`CLIENT ID`) of the data connection and, once subscribed, of the bus
    /// connection: what a connection-loss test kills with `CLIENT KILL ID`.
    pub async fn client_ids(&self) -> Result<Vec<i64>, StorageError> {
        let mut ids = vec![self.query(redis::cmd("CLIENT").arg("ID")).await?];
        let bus = self.inner.bus.lock().clone();
        if let Some(bus::BusConn(mut m)) = bus {
            self.sent();
            let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut m).await.map_err(storage_error)?;
            ids.push(id);
        }
        Ok(ids)
    }

    fn bus_conn(&self) -> &parking_lot::Mutex<Option<bus::BusConn>> {
        &self.inner.bus
    }

    /// Runs a command, retrying on connection errors for up to [`RETRY_FOR`].
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StorageError> {
        let mut delay = Duration::from_millis(20);
        let started = tokio::time::Instant::now();
        loop {
            let mut con = self.inner.manager.clone();
            self.sent();
            match cmd.query_async::<T>(&mut con).await {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) && started.elapsed() < RETRY_FOR => {
                    tracing::debug!(error = %e, "Redis command failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(storage_error(e)),
            }
        }
    }

    /// Runs a Lua script with `args` (no keys: scripts build them from the prefix, passed as the
    /// second argument after a request id). With `once`, a request id makes a retry after a lost
    /// reply get the first answer instead of running the script again.
    ///
    /// The script runs as a Redis function while Redis has them, else as an `EVALSHA` script
    /// (see [`lua`](self::lua)); one Redis is told to lack the script at most 3 times per call.
    pub(crate) async fn script<T: redis::FromRedisValue>(
        &self,
        script: &LuaScript,
        once: bool,
        args: &[&dyn ArgRef],
    ) -> Result<T, StorageError> {
        // The request id (`once`) after its mark: `1` on the first attempt, `0` once an attempt
        // may have run (see `lua::ARGS`).
        let mut marked = match once {
            true => {
                let mut id = uuid::Uuid::encode_buffer();
                let id = uuid::Uuid::new_v4().simple().encode_lower(&mut id);
                ["1", self.prefix(), "rid:", id].concat()
            }
            false => String::new(),
        };
        let mut delay = Duration::from_millis(20);
        let started = tokio::time::Instant::now();
        let mut loads = 0;
        loop {
            let functions = self.inner.functions.load(Ordering::Relaxed);
            let mut cmd = script.call_with(functions, 2 + args.len());
            cmd.arg(&marked).arg(self.prefix());
            for a in args {
                a.push_arg(&mut cmd);
            }
            let mut con = self.inner.manager.clone();
            self.sent();
            let e = match cmd.query_async::<T>(&mut con).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !marked.is_empty() {
                marked.replace_range(..1, "0");
            }
            match lua::failed(&e, functions) {
                lua::Failed::NotLoaded if loads < 3 => {
                    loads += 1;
                    self.sent();
                    if let Err(e) = script.load(functions).query_async::<()>(&mut con).await {
                        match lua::failed(&e, functions) {
                            lua::Failed::NoFunctions => self.without_functions(&e),
                            // Retried with the call (which says what is wrong, if it still is).
                            _ if retryable(&e) => {}
                            _ => return Err(storage_error(e)),
                        }
                    }
                }
                lua::Failed::NoFunctions => self.without_functions(&e),
                _ if retryable(&e) && started.elapsed() < RETRY_FOR => {
                    tracing::debug!(error = %e, "Redis script failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                _ => return Err(storage_error(e)),
            }
        }
    }

    /// Runs the scripts as `EVALSHA` scripts from now on (on every clone of this connection):
    /// what a Redis without functions (before 7.0, or an ACL that denies `FCALL` or
    /// `FUNCTION LOAD`) gets by itself on the first call.
    pub fn use_eval_scripts(&self) {
        self.inner.functions.store(false, Ordering::Relaxed);
    }

    pub(super) fn without_functions(&self, e: &RedisError) {
        if self.inner.functions.swap(false, Ordering::Relaxed) {
            tracing::info!(
                redis = %self.inner.shown,
                reason = %e,
                "Redis runs no functions for this user; the stores' scripts are sent with EVALSHA"
            );
        }
    }
}

/// An argument of a script (a `&dyn` list of mixed types).
pub(crate) trait ArgRef: Sync {
    fn push_arg(&self, cmd: &mut redis::Cmd);
}

impl<T: redis::ToRedisArgs + Sync> ArgRef for T {
    fn push_arg(&self, cmd: &mut redis::Cmd) {
        cmd.arg(self);
    }
}

fn retryable(e: &RedisError) -> bool {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        return true;
    }
    match e.kind() {
        ErrorKind::Io | ErrorKind::Parse => true,
        ErrorKind::Server(_) => {
            matches!(
                e.retry_method(),
                RetryMethod::Reconnect | RetryMethod::RetryImmediately | RetryMethod::WaitAndRetry
            )
        }
        _ => false,
    }
}

fn storage_error(e: RedisError) -> StorageError {
    StorageError::Redis(Arc::new(e))
}

/// `SET key value NX PX ttl` (1 = set by this call). The value carries the request id, so a
/// retry after a lost reply recognises its own write and answers 1 again.
pub(crate) static SET_ONCE: LazyLock<LuaScript> = LazyLock::new(|| {
    lua(
        &[],
        r#"
local v = ARGV[4] .. '|' .. RID
if redis.call('SET', ARGV[3], v, 'NX', 'PX', ARGV[5]) then return 1 end
if redis.call('GET', ARGV[3]) == v then return 1 end
return 0
"#,
    )
});
inventory::submit! { crate::storage::redis::lua::Registered(&SET_ONCE) }

/// A TTL as the milliseconds of a `PX` argument (at least 1: Redis refuses `PX 0`).
pub(crate) fn px_millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

/// Every server capability in one Redis: what [`OrchestratorBuilder::redis`](crate::server::OrchestratorBuilder::redis) uses.
#[derive(Debug, Clone)]
pub struct RedisStores {
    conn: RedisConn,
    lease: Duration,
    cipher: Option<Arc<crate::storage::encryption::RecordCipher>>,
    /// How long terminal jobs are kept (`None` = forever).
    job_retention: Option<Duration>,
}

impl RedisStores {
    /// Stores at `url` under `prefix`; job locks last `lease` (renewed while held).
    /// Lazy: see [`RedisStores::check`].
    pub fn new(url: &str, prefix: &str, lease: Duration) -> Result<Self, StorageError> {
        Ok(RedisStores { conn: RedisConn::open(url, prefix)?, lease, cipher: None, job_retention: None })
    }

    /// Encrypts the worker credentials kept in Redis (worker records, STS token bindings) with
    /// `keys` (`REDIS_ENCRYPTION_KEY`; see [`crate::storage::encryption`]).
    pub fn with_encryption(mut self, keys: Option<&crate::storage::encryption::EncryptionKeys>) -> Self {
        self.cipher = keys.map(|k| Arc::new(crate::storage::encryption::RecordCipher::new(k)));
        self
    }

    /// Terminal jobs expire `retention` after they ended (`JOB_RETENTION_SECONDS`; `None` =
    /// kept forever): see [`RedisJobs::with_retention`].
    pub fn with_job_retention(mut self, retention: Option<Duration>) -> Self {
        self.job_retention = retention;
        self
    }

    /// The connection (e.g. for tests).
    pub fn conn(&self) -> &RedisConn {
        &self.conn
    }

    /// Checks that Redis answers and readies the scripts (start-up): this build's function
    /// libraries loaded, other builds' deleted, or `EVALSHA` where Redis has no functions (see
    /// `lua.rs`).
    pub async fn check(&self) -> Result<(), StorageError> {
        self.conn.ping().await?;
        lua::prepare(&self.conn).await
    }

    /// One store per capability, all on this connection.
    pub fn stores(&self) -> Stores {
        let workers = RedisWorkers::new(self.conn.clone()).with_cipher(self.cipher.clone());
        let mut jobs = RedisJobs::new(self.conn.clone(), self.lease).with_retention(self.job_retention);
        jobs.view = Some(workers.view());
        Stores {
            jobs: Arc::new(jobs),
            quotas: Arc::new(RedisQuotas::new(self.conn.clone())),
            rate: Arc::new(RedisRateLimits::new(self.conn.clone())),
            nonces: Arc::new(RedisNonces::new(self.conn.clone())),
            sts: Arc::new(RedisSts::new(self.conn.clone()).with_cipher(self.cipher.clone())),
            workers: Arc::new(workers),
            data: Arc::new(RedisDataStores::new(self.conn.clone())),
            schedule_locks: Arc::new(RedisScheduleLocks::new(self.conn.clone())),
            bus: Some(Arc::new(RedisBus::new(self.conn.clone()))),
            round_trips: Some(self.conn.round_trips_counter()),
        }
    }

    /// Subscribes to the bus (waits for the first subscription) and calls `on_message` for
    /// every message, resubscribing after reconnects, until the returned task is aborted.
    pub async fn subscribe(
        &self,
        on_message: impl Fn(crate::storage::BusMessage) + Send + Sync + 'static,
    ) -> Result<tokio::task::JoinHandle<()>, StorageError> {
        bus::subscribe(&self.conn, on_message).await
    }
}

/// Deletes every key under `prefix` (`SCAN` + `DEL`); returns how many. For tests and tooling:
/// never `FLUSHDB` a shared Redis.
pub async fn delete_prefix(url: &str, prefix: &str) -> Result<u64, StorageError> {
    if prefix.is_empty() {
        return Err(StorageError::Conflict("refusing to delete every key (empty prefix)".into()));
    }
    let conn = RedisConn::open(url, prefix)?;
    let pattern = format!("{}*", prefix.replace('*', "\\*").replace('?', "\\?").replace('[', "\\["));
    let mut cursor: u64 = 0;
    let mut deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) =
            conn.query(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000)).await?;
        if !keys.is_empty() {
            deleted += conn.query::<u64>(redis::cmd("UNLINK").arg(&keys)).await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// A value stored by this backend, from its JSON (a job's client through the per-thread cache:
/// [`with_client_cache`](crate::job::shared_client::with_client_cache)).
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, StorageError> {
    crate::job::shared_client::with_client_cache(|| serde_json::from_str(s))
        .map_err(|e| StorageError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Room for a job document from the start: `to_string` grows from nothing, a copy per step.
    let mut out = Vec::with_capacity(1024);
    crate::job::shared_client::with_client_cache(|| serde_json::to_writer(&mut out, v))
        .expect("storage values serialise");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Reads Lua replies (arrays of bulk strings and integers).
pub(crate) mod reply {
    use redis::Value;

    use crate::storage::StorageError;

    pub(crate) fn array(v: Value) -> Result<Vec<Value>, StorageError> {
        match v {
            Value::Array(a) | Value::Set(a) => Ok(a),
            Value::Nil => Ok(Vec::new()),
            other => Err(StorageError::Corrupt(format!("unexpected Redis reply {other:?}"))),
        }
    }

    pub(crate) fn string(v: &Value) -> Option<String> {
        match v {
            // `from_utf8` first: it checks ASCII a word at a time, where `from_utf8_lossy` walks
            // every byte (4.4k instructions for each job document or task a lock or pop read back,
            // 15k per job on Redis; BENCHMARKS.md).
            Value::BulkString(b) => Some(match std::str::from_utf8(b) {
                Ok(s) => s.to_owned(),
                Err(_) => String::from_utf8_lossy(b).into_owned(),
            }),
            Value::SimpleString(s) => Some(s.clone()),
            Value::Int(n) => Some(n.to_string()),
            Value::VerbatimString { text, .. } => Some(text.clone()),
            _ => None,
        }
    }

    pub(crate) fn int(v: &Value) -> Option<i64> {
        match v {
            Value::Int(n) => Some(*n),
            other => string(other).and_then(|s| s.parse().ok()),
        }
    }

    pub(crate) fn strings(v: Value) -> Result<Vec<String>, StorageError> {
        Ok(array(v)?.iter().filter_map(string).collect())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn bulk_strings_read_as_text_and_invalid_utf8_is_replaced() {
            let bulk = |b: &[u8]| string(&Value::BulkString(b.to_vec()));
            let doc = "{\"a\":\"\\u00e9 café\"}";
            assert_eq!(bulk(doc.as_bytes()).as_deref(), Some(doc));
            assert_eq!(bulk(b"ok \xff!").as_deref(), Some("ok \u{fffd}!"));
            assert_eq!(string(&Value::Int(-3)).as_deref(), Some("-3"));
            assert_eq!(int(&Value::BulkString(b"42".to_vec())), Some(42));
            assert_eq!(string(&Value::Nil), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #13 item 6: a failed Redis command keeps the Redis client's error as the source of
    /// the StorageError, which reads as before ("storage backend unavailable: redis: ...").
    /// Needs the Redis of the tests (`REDIS_URL`, default 127.0.0.1:6379), like every Redis test.
    #[tokio::test]
    async fn a_failed_command_keeps_the_redis_error_as_source() {
        use std::error::Error as _;
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
        let conn = RedisConn::open(&url, "avto-test:source:").unwrap();
        let err = conn.query::<String>(&redis::cmd("AVTO_NO_SUCH_COMMAND")).await.unwrap_err();
        assert!(err.to_string().starts_with("storage backend unavailable: redis: "), "{err}");
        let source = err.source().expect("the Redis error is kept");
        assert!(source.to_string().to_lowercase().contains("unknown command"), "{source}");
        assert_eq!(err, err.clone(), "errors still compare (by kind and text)");
    }
}
