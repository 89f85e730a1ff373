//! Running handlers and applying their one action.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::{Map, Value};

use super::{backoff, Effect, EngineEvent, Step};
use crate::actions::{Action, Actions, TaskSpec};
use crate::blueprint::{Blueprint, StateKind};
use crate::context::{Context, StateHistory};
use crate::contracts::{describe, Contracts};
use crate::files::{FileObserver, FileOperation, ObjectStore, TaskFiles};
use crate::handler::{HandlerError, Invocation};
use crate::job::{now_ms, ApprovalRecord, Job, JobStatus, SubJobRecord, TaskRecord};
use crate::protocol::wire::task_status;
use crate::state::AppState;
use crate::storage::{DataStoreBackend, DataStores, InitialValues};

/// Engine limits (from the environment in the server: `MAX_TRANSITIONS_PER_JOB`, `JOB_MAX_RETRIES`, ...).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Handler runs per job before the loop guard fails it.
    pub max_transitions: u32,
    /// Retries of a failing handler, and of a task failing with a transient error.
    pub max_retries: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Data-store keys without a declared initial value expire this long after their last
    /// write (`DATA_STORE_TTL_SECONDS`; `None` = kept until deleted).
    pub data_ttl: Option<Duration>,
    /// `STRICT_EVENT_VALIDATION`: a ghost event of a type its blueprint does not declare fails
    /// the handler even when the blueprint declares no events at all.
    pub strict_events: bool,
    /// Most entries kept in `state_history.progress_updates` (`MAX_PROGRESS_UPDATES_PER_JOB`).
    pub progress_updates_max: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_transitions: 100,
            max_retries: 3,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            data_ttl: None,
            strict_events: false,
            progress_updates_max: 100,
        }
    }
}

/// What the engine needs from its surroundings.
#[derive(Clone)]
pub struct EngineEnv {
    pub config: EngineConfig,
    blueprints: Arc<BTreeMap<&'static str, Blueprint>>,
    data_backend: Arc<dyn DataStoreBackend>,
    data_initialized: Arc<InitialValues>,
    object_store: Option<Arc<dyn ObjectStore>>,
    /// `TASK_FILES_DIR`: the root of the jobs' local directories ([`TaskFiles::path`]).
    task_files_dir: Option<std::path::PathBuf>,
    /// Sees every file operation of a handler as it ends (the orchestrator counts them).
    file_observer: Option<Arc<dyn FileObserver>>,
    /// The blueprints' input and output contracts, compiled once.
    contracts: Arc<Contracts>,
    /// What `State<T>` handler arguments read.
    app_state: Arc<AppState>,
}

/// The file operations of one handler run: each is passed on to the environment's observer as
/// it ends and kept to become an [`EngineEvent::FileOperation`] of the run's step. What a clone
/// of the run's [`TaskFiles`] does after the run (from a task the handler spawned) is only
/// passed on.
struct RunFiles {
    next: Option<Arc<dyn FileObserver>>,
    /// `None` once the run ended.
    ops: parking_lot::Mutex<Option<Vec<FileOperation>>>,
}

impl FileObserver for RunFiles {
    fn observe(&self, op: &FileOperation) {
        if let Some(next) = &self.next {
            next.observe(op);
        }
        if let Some(ops) = self.ops.lock().as_mut() {
            // Bounded: a run that moves thousands of files keeps the first ones in its step
            // (and so in the history); all are passed on (counted).
            if ops.len() < MAX_FILE_EVENTS_PER_RUN {
                ops.push(op.clone());
            }
        }
    }
}

/// The most `s3_operation` history rows one handler run writes.
const MAX_FILE_EVENTS_PER_RUN: usize = 1000;

impl std::fmt::Debug for EngineEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineEnv")
            .field("config", &self.config)
            .field("blueprints", &self.blueprints.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl EngineEnv {
    /// An environment over `blueprints`. Names must be unique.
    pub fn new(
        config: EngineConfig,
        blueprints: impl IntoIterator<Item = Blueprint>,
        data_backend: Arc<dyn DataStoreBackend>,
        object_store: Option<Arc<dyn ObjectStore>>,
    ) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for bp in blueprints {
            if let Some(prev) = map.insert(bp.name(), bp) {
                if prev != bp {
                    return Err(format!(
                        "two different blueprints are named `{}`; blueprint names must be unique in one orchestrator",
                        bp.name()
                    ));
                }
            }
        }
        let contracts = Arc::new(Contracts::compile(map.values().copied()));
        let env = EngineEnv {
            config,
            contracts,
            blueprints: Arc::new(map),
            data_backend,
            data_initialized: Arc::default(),
            object_store,
            app_state: Arc::default(),
            task_files_dir: None,
            file_observer: None,
        };
        env.check_children()?;
        Ok(env)
    }

    /// `run_blueprint` targets that the macro saw as literals must exist (checked at start-up,
    /// since blueprints can live in other crates).
    fn check_children(&self) -> Result<(), String> {
        for bp in self.blueprints.values() {
            for edge in bp.edges() {
                let _ = edge; // child names are not edges; checked when dispatched (see run_blueprint)
            }
        }
        Ok(())
    }

    /// The blueprints' contracts, compiled.
    /// The application state handlers read through `State<T>`: every type a handler takes must
    /// be in it (else an error naming each handler and type).
    pub fn with_app_state(mut self, state: AppState) -> Result<Self, String> {
        let missing = state.missing(self.blueprints());
        if !missing.is_empty() {
            return Err(missing.join("; "));
        }
        self.app_state = Arc::new(state);
        Ok(self)
    }

    pub(crate) fn contracts(&self) -> &Contracts {
        &self.contracts
    }

    pub fn blueprint(&self, name: &str) -> Option<Blueprint> {
        self.blueprints.get(name).copied()
    }

    pub fn blueprints(&self) -> impl Iterator<Item = Blueprint> + '_ {
        self.blueprints.values().copied()
    }

    pub fn data_stores(&self, bp: Blueprint) -> DataStores {
        DataStores::new(bp.name(), bp.spec().data_stores, self.data_backend.clone(), self.data_initialized.clone())
            .with_ttl(self.config.data_ttl)
    }

    /// Writes the initial values of every blueprint's data stores (keys that are absent only),
    /// so they are in place before the first job runs (the orchestrator does this at start-up).
    pub async fn initialize_data_stores(&self) -> Result<(), crate::storage::StorageError> {
        for bp in self.blueprints() {
            let stores = self.data_stores(bp);
            for name in stores.names() {
                stores.store(name).initialize().await?;
            }
        }
        Ok(())
    }

    pub fn object_store(&self) -> Option<Arc<dyn ObjectStore>> {
        self.object_store.clone()
    }

    /// Local job directories under `dir` (`TASK_FILES_DIR`; default
    /// [`crate::files::default_task_files_dir`]).
    pub fn with_task_files_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.task_files_dir = Some(dir.into());
        self
    }

    /// Every file operation of a handler is reported to `observer` as it ends (besides
    /// becoming an [`EngineEvent::FileOperation`] of the run).
    pub fn with_file_observer(mut self, observer: Arc<dyn FileObserver>) -> Self {
        self.file_observer = Some(observer);
        self
    }

    /// The files of `job` (`None` without an object store), reporting to `observer`.
    pub fn task_files(&self, job_id: &str, observer: Option<Arc<dyn FileObserver>>) -> Option<TaskFiles> {
        let mut files = TaskFiles::new(job_id, self.object_store.clone()?);
        if let Some(dir) = &self.task_files_dir {
            files = files.with_local_root(dir);
        }
        if let Some(o) = observer {
            files = files.with_observer(o);
        }
        Some(files)
    }

    /// The context of a handler run on `job`. Its input, history, branch results and path are
    /// moved out of the job, not copied ([`Lent`] puts them back).
    fn context(&self, bp: Blueprint, job: &mut Job, files: Option<Arc<dyn FileObserver>>) -> Context {
        Context {
            job_id: job.id.clone(),
            blueprint: job.blueprint.clone(),
            current_state: job.current_state.clone(),
            initial_data: std::mem::take(&mut job.initial_data),
            state_history: StateHistory(std::mem::take(&mut job.state_history)),
            aggregation_results: std::mem::take(&mut job.aggregation_results),
            client: job.client.clone(),
            last_error: job.last_error.as_deref().cloned(),
            webhook_url: job.webhook_url.clone(),
            parent_job_id: job.parent_job_id.clone(),
            path: std::mem::take(&mut job.path),
            data_stores: self.data_stores(bp),
            task_files: self.task_files(&job.id, files),
            app_state: self.app_state.clone(),
        }
    }
}

/// A handler run holding what [`EngineEnv::context`] moved out of its job; dropping it (after the
/// run, on an early return, or when the run is cancelled) moves them back. Handlers only see
/// `&Context`, so what comes back is what went out.
struct Lent<'a> {
    job: &'a mut Job,
    inv: Invocation,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let (job, ctx) = (&mut *self.job, &mut self.inv.context);
        job.initial_data = std::mem::take(&mut ctx.initial_data);
        job.state_history = std::mem::take(&mut ctx.state_history.0);
        job.aggregation_results = std::mem::take(&mut ctx.aggregation_results);
        job.path = std::mem::take(&mut ctx.path);
    }
}

/// Runs handlers of `job` until it waits (for a worker, a human, a child, a retry) or ends.
///
/// Call it for a job whose status is `pending`, `running` or `awaiting_retry`; other statuses
/// are left alone.
pub async fn advance(env: &EngineEnv, job: &mut Job) -> Step {
    let mut out = Step::default();
    let Some(bp) = env.blueprint(&job.blueprint) else {
        let msg = format!("blueprint `{}` is not registered in this orchestrator", job.blueprint);
        terminal(job, JobStatus::Failed, Some(msg), &mut out);
        return out;
    };
    loop {
        if !matches!(job.status, JobStatus::Pending | JobStatus::Running | JobStatus::AwaitingRetry) {
            return out;
        }
        job.transition_count += 1;
        if job.transition_count > env.config.max_transitions {
            let msg = format!(
                "job exceeded the maximum of {} handler runs (MAX_TRANSITIONS_PER_JOB); suspected infinite loop",
                env.config.max_transitions
            );
            terminal(job, JobStatus::Failed, Some(msg), &mut out);
            return out;
        }
        job.status = JobStatus::Running;
        job.next_retry_at_ms = None;
        job.updated_at_ms = now_ms();
        let state = job.current_state.clone();
        out.event(EngineEvent::StateStarted { state: state.clone(), attempt: job.retry_count });
        let started = Instant::now();
        let files = env.object_store.as_ref().map(|_| {
            Arc::new(RunFiles { next: env.file_observer.clone(), ops: parking_lot::Mutex::new(Some(Vec::new())) })
        });
        let result = run_handler(env, bp, &mut *job, files.clone().map(|f| f as Arc<dyn FileObserver>)).await;
        let elapsed = started.elapsed().as_millis() as u64;
        for op in files.and_then(|f| f.ops.lock().take()).unwrap_or_default() {
            out.event(EngineEvent::FileOperation(Box::new(op)));
        }
        let after = result.and_then(|actions| apply_actions(env, bp, job, actions, &mut out));
        if after.is_ok() {
            job.retry_count = 0;
        }
        match after {
            Ok(AfterHandler::Continue) => {
                out.event(EngineEvent::StateFinished {
                    state,
                    next_state: Some(job.current_state.clone()),
                    duration_ms: elapsed,
                });
            }
            Ok(AfterHandler::Wait) | Ok(AfterHandler::Done) => {
                out.event(EngineEvent::StateFinished { state, next_state: None, duration_ms: elapsed });
                return out;
            }
            Err(HandlerError::InvalidInput(msg)) => {
                out.event(EngineEvent::StateFailed { state, error: msg.clone(), attempt: job.retry_count });
                terminal(job, JobStatus::Failed, Some(msg), &mut out);
                return out;
            }
            Err(HandlerError::Failed(msg)) => {
                out.event(EngineEvent::StateFailed {
                    state: state.clone(),
                    error: msg.clone(),
                    attempt: job.retry_count,
                });
                handler_failed(env, job, &state, msg, &mut out);
                return out;
            }
        }
    }
}

/// What a handler run left the job to do next.
enum AfterHandler {
    /// The job moved to another state; run its handler now.
    Continue,
    /// The job waits for something outside.
    Wait,
    /// The job ended.
    Done,
}

fn handler_failed(env: &EngineEnv, job: &mut Job, state: &str, msg: String, out: &mut Step) {
    let msg = format!("handler of state `{state}` failed: {msg}");
    if job.retry_count < env.config.max_retries {
        let delay = backoff(env.config.retry_base, env.config.retry_max, job.retry_count);
        job.retry_count += 1;
        job.status = JobStatus::AwaitingRetry;
        job.next_retry_at_ms = Some(now_ms().saturating_add(delay.as_millis() as u64));
        job.error_message = Some(msg);
        out.effect(Effect::RetryHandler { delay });
    } else {
        let msg = format!("{msg} (after {} retries)", job.retry_count);
        terminal(job, JobStatus::Quarantined, Some(msg), out);
    }
}

async fn run_handler(
    env: &EngineEnv,
    bp: Blueprint,
    job: &mut Job,
    files: Option<Arc<dyn FileObserver>>,
) -> Result<Actions, HandlerError> {
    let ctx = env.context(bp, job, files);
    let mut run = Lent { job, inv: Invocation::new(ctx) };
    let ctx = &run.inv.context;
    let Some(spec) = bp.state(&ctx.current_state) else {
        return Err(HandlerError::Failed(format!(
            "state `{}` is not in blueprint `{}` (a transition target outside the compiled table)",
            ctx.current_state,
            bp.name()
        )));
    };
    let state = spec.name;
    let mut candidates = bp.handlers_for(state);
    let handler = if spec.kind == StateKind::Aggregator {
        candidates.next()
    } else {
        let all: Vec<_> = candidates.collect();
        let mut matched = None;
        for h in &all {
            let Some(c) = &h.condition else { continue };
            // A guard is user code like a handler: its panic fails this run (retried, then
            // quarantined) instead of unwinding through the engine.
            match std::panic::catch_unwind(AssertUnwindSafe(|| (c.eval)(ctx))) {
                Ok(true) => {
                    matched = Some(*h);
                    break;
                }
                Ok(false) => {}
                Err(panic) => {
                    return Err(HandlerError::Failed(format!(
                        "#[when({})] of handler `{}` panicked: {}",
                        c.source,
                        h.name,
                        panic_message(&*panic)
                    )))
                }
            }
        }
        matched.or_else(|| all.iter().find(|h| h.condition.is_none()).copied())
    };
    let Some(handler) = handler else {
        let conds: Vec<&str> = bp.handlers_for(state).filter_map(|h| h.condition.as_ref().map(|c| c.source)).collect();
        return Err(HandlerError::Failed(format!(
            "no handler of state `{state}` matched: no #[when] condition was true ({}) and there is no unconditional handler",
            conds.join("; ")
        )));
    };
    let result = {
        let fut = (handler.call)(&mut run.inv);
        AssertUnwindSafe(fut).catch_unwind().await
    };
    match result {
        Ok(Ok(output)) => {
            run.inv.set_output(output);
            Ok(std::mem::take(&mut run.inv.actions))
        }
        Ok(Err(e)) => Err(e),
        Err(panic) => {
            Err(HandlerError::Failed(format!("handler `{}` panicked: {}", handler.name, panic_message(&*panic))))
        }
    }
}

/// The message of a caught panic (`panic!("...")` payloads are `&str` or `String`).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into())
}

fn check_target(bp: Blueprint, target: &str, what: &str) -> Result<(), HandlerError> {
    if bp.state(target).is_some() {
        Ok(())
    } else {
        let known: Vec<&str> = bp.states().iter().map(|s| s.name).collect();
        Err(HandlerError::Failed(format!(
            "{what} target `{target}` is not a state of blueprint `{}` (states: {})",
            bp.name(),
            known.join(", ")
        )))
    }
}

fn check_pairs(bp: Blueprint, pairs: &[(String, String)], what: &str) -> Result<(), HandlerError> {
    for (_, target) in pairs {
        check_target(bp, target, what)?;
    }
    Ok(())
}

fn apply_actions(
    env: &EngineEnv,
    bp: Blueprint,
    job: &mut Job,
    actions: Actions,
    out: &mut Step,
) -> Result<AfterHandler, HandlerError> {
    if let Some(v) = actions.violations.first() {
        return Err(HandlerError::Failed(v.clone()));
    }
    let state = job.current_state.clone();
    let end_status = bp.end_status(&state);
    if end_status.is_some() && actions.action.is_some() {
        return Err(HandlerError::Failed(format!("end state `{state}` must not take an action")));
    }
    // Validate before changing anything, so a rejected action leaves the job as it was.
    match &actions.action {
        Some(Action::Transition { target, .. }) => check_target(bp, target, "transition_to")?,
        Some(Action::Dispatch(tasks)) => {
            for t in tasks {
                check_pairs(bp, &t.transitions, "dispatch_task")?;
                check_pairs(bp, &t.event_transitions, "dispatch_task event")?;
                if t.resource_hint.is_some() && !matches!(t.params, Value::Object(_) | Value::Null) {
                    return Err(HandlerError::Failed(format!(
                        "dispatch_task `{}`: a resource_hint goes into the params, which must then be an object",
                        t.task_type
                    )));
                }
            }
            parallel_target(bp, tasks)?;
        }
        Some(Action::Approval(a)) => {
            if a.transitions.is_empty() {
                return Err(HandlerError::Failed("await_human_approval needs at least one transition".into()));
            }
            check_pairs(bp, &a.transitions, "await_human_approval")?
        }
        Some(Action::RunBlueprint(s)) => {
            check_pairs(bp, &s.transitions, "run_blueprint")?;
            if env.blueprint(&s.blueprint).is_none() {
                return Err(HandlerError::Failed(format!(
                    "run_blueprint: no blueprint named `{}` is registered",
                    s.blueprint
                )));
            }
        }
        None => {}
    }
    for (event_type, payload) in &actions.events {
        env.contracts
            .check_event(bp.name(), event_type, payload, env.config.strict_events)
            .map_err(HandlerError::Failed)?;
    }
    for (k, v) in actions.context_updates {
        job.state_history.insert(k, v);
    }
    for (event_type, payload) in actions.events {
        if event_type == crate::protocol::EVENT_TYPE_PROGRESS {
            // A ghost progress event moves the job's progress like a worker's does.
            super::results::record_progress(job, None, &payload, env.config.progress_updates_max);
        }
        out.event(EngineEvent::GhostEvent { event_id: uuid::Uuid::new_v4().to_string(), event_type, payload });
    }
    if job.retry_count > 0 {
        // The handler ran after failing before: its old error no longer applies
        // (`retry_count` is reset in `advance` once the action was applied).
        job.error_message = None;
    }
    job.updated_at_ms = now_ms();
    match actions.action {
        None => match end_status {
            Some(status) => {
                if let Some(output) = actions.output {
                    job.state_history.insert(state.clone(), output);
                }
                match (status, output_violation(env, bp, job, &state)) {
                    (JobStatus::Finished, Some(why)) => terminal(job, JobStatus::Failed, Some(why), out),
                    _ => terminal(job, status, None, out),
                }
                Ok(AfterHandler::Done)
            }
            None => Err(HandlerError::Failed(format!(
                "the handler of non-end state `{state}` took no action (call transition_to, dispatch_task, await_human_approval or run_blueprint)"
            ))),
        },
        Some(Action::Transition { target, error_message }) => {
            if error_message.is_some() {
                job.error_message = error_message;
            }
            enter(job, &target);
            Ok(AfterHandler::Continue)
        }
        Some(Action::Dispatch(tasks)) => {
            let now = now_ms();
            let aggregator = parallel_target(bp, &tasks)?;
            let records: Vec<TaskRecord> = tasks
                .into_iter()
                .map(|spec| new_task(with_resource_hint(with_job_timeouts(spec, job)), aggregator.is_some(), 0, now))
                .collect();
            for r in &records {
                out.event(EngineEvent::TaskDispatched {
                    task_id: r.task_id.clone(),
                    task_type: r.spec.task_type.clone(),
                    attempt: 0,
                });
            }
            job.last_error = None;
            match aggregator {
                Some(agg) => {
                    job.status = JobStatus::WaitingForParallelTasks;
                    job.aggregation_target = Some(agg);
                    job.aggregation_results = Default::default();
                    job.branch_order = records.iter().map(|r| r.task_id.clone()).collect();
                    job.branches = records.clone();
                }
                None => {
                    job.status = JobStatus::WaitingForWorker;
                    job.current_task = records.first().cloned().map(Box::new);
                }
            }
            out.effect(Effect::Dispatch { tasks: records, delay: Duration::ZERO });
            Ok(AfterHandler::Wait)
        }
        Some(Action::Approval(a)) => {
            out.event(EngineEvent::ApprovalRequested { integration: a.integration.clone(), message: a.message.clone() });
            job.status = JobStatus::WaitingForHuman;
            job.approval =
                Some(Box::new(ApprovalRecord {
                transitions: a.transitions,
                integration: a.integration,
                message: a.message,
                since_ms: Some(now_ms()),
            }));
            Ok(AfterHandler::Wait)
        }
        Some(Action::RunBlueprint(s)) => {
            let child_bp = env.blueprint(&s.blueprint).expect("checked above");
            let child_id = uuid::Uuid::new_v4().to_string();
            let mut child = Job::new(child_id.clone(), child_bp.name(), child_bp.start_state(), s.initial_data);
            child.parent_job_id = Some(job.id.clone());
            child.client = job.client.clone();
            child.tracing_context = job.tracing_context.clone();
            child.security = job.security.clone();
            child.metadata = job.metadata.clone();
            child.data_metadata = job.data_metadata.clone();
            out.event(EngineEvent::SubJobStarted { child_job_id: child_id.clone(), blueprint: s.blueprint.clone() });
            job.status = JobStatus::WaitingForSubJob;
            job.sub_job =
                Some(Box::new(SubJobRecord { child_job_id: child_id, blueprint: s.blueprint, transitions: s.transitions }));
            out.effect(Effect::StartChild(Box::new(child)));
            Ok(AfterHandler::Wait)
        }
    }
}

/// The aggregator state a dispatch fans into, if it is a parallel dispatch.
fn parallel_target(bp: Blueprint, tasks: &[TaskSpec]) -> Result<Option<String>, HandlerError> {
    let success = |t: &TaskSpec| t.target_for(task_status::SUCCESS).map(str::to_owned);
    let first = tasks.first().and_then(success);
    let into_aggregator = first.as_deref().is_some_and(|s| bp.is_aggregator(s));
    if tasks.len() == 1 && !into_aggregator {
        return Ok(None);
    }
    let Some(agg) = first.filter(|_| into_aggregator) else {
        return Err(HandlerError::Failed(
            "several dispatch_task calls in one handler must all have a `success` transition into the same #[aggregator] state".into(),
        ));
    };
    if let Some(other) = tasks.iter().find(|t| success(t).as_deref() != Some(agg.as_str())) {
        return Err(HandlerError::Failed(format!(
            "parallel dispatch of `{}` does not fan into aggregator `{agg}` (its success transition goes to {:?})",
            other.task_type,
            other.target_for(task_status::SUCCESS)
        )));
    }
    Ok(Some(agg))
}

/// `params["resource_hint"]` from the dispatch's `resource_hint` (params checked to be an object
/// or none before anything changed).
fn with_resource_hint(mut spec: TaskSpec) -> TaskSpec {
    if let Some(hint) = &spec.resource_hint {
        if spec.params.is_null() {
            spec.params = Value::Object(Map::new());
        }
        if let Value::Object(params) = &mut spec.params {
            params.insert("resource_hint".into(), Value::String(hint.clone()));
        }
    }
    spec
}

fn with_job_timeouts(mut spec: TaskSpec, job: &Job) -> TaskSpec {
    if spec.dispatch_timeout_seconds.is_none() {
        spec.dispatch_timeout_seconds = job.dispatch_timeout;
    }
    if spec.result_timeout_seconds.is_none() {
        spec.result_timeout_seconds = job.result_timeout;
    }
    spec
}

pub(crate) fn new_task(spec: TaskSpec, branch: bool, attempt: u32, now: u64) -> TaskRecord {
    let uuid = uuid::Uuid::new_v4();
    TaskRecord {
        task_id: if branch { uuid.to_string() } else { format!("task-{uuid}") },
        spec,
        attempt,
        worker_id: None,
        dispatched_at_ms: now,
        picked_up_at_ms: None,
        dispatch_deadline_ms: None,
    }
}

/// Moves the job to `state` (status `running`).
pub(crate) fn enter(job: &mut Job, state: &str) {
    job.current_state = state.to_owned();
    job.status = JobStatus::Running;
    job.current_task = None;
    job.branches.clear();
    job.branch_order.clear();
    job.approval = None;
    job.sub_job = None;
    job.waiting_reason = None;
    let now = now_ms();
    job.push_path(state, now);
    job.updated_at_ms = now;
}

/// Ends the job. Idempotent: a job that is already terminal is left alone.
pub(crate) fn terminal(job: &mut Job, status: JobStatus, error: Option<String>, out: &mut Step) {
    if job.status.is_terminal() {
        return;
    }
    debug_assert!(status.is_terminal());
    job.status = status;
    job.next_retry_at_ms = None;
    if error.is_some() {
        job.error_message = error;
    }
    job.result = extract_result(job);
    let in_flight: Vec<TaskRecord> = job.tasks_in_flight().cloned().collect();
    if !in_flight.is_empty() {
        out.effect(Effect::CancelTasks(in_flight));
    }
    if let Some(sub) = job.sub_job.take() {
        out.effect(Effect::CancelChild(sub.child_job_id));
    }
    job.current_task = None;
    job.branches.clear();
    job.branch_order.clear();
    job.approval = None;
    job.waiting_reason = None;
    job.updated_at_ms = now_ms();
    out.event(EngineEvent::JobFinished { status });
    out.effect(Effect::Terminal(status));
}

/// Why the result a job would finish with in end state `state` breaks that state's output
/// contract (see [`Blueprint::output_schemas`]), if it does.
fn output_violation(env: &EngineEnv, bp: Blueprint, job: &Job, state: &str) -> Option<String> {
    let result = result_of(job, state);
    let (violations, total) = env.contracts.check_output(bp.name(), state, result.unwrap_or(&Value::Null));
    (total > 0).then(|| {
        format!(
            "Blueprint contract violation: the result breaks the output contract of end state `{state}`: {}",
            describe(&violations, total)
        )
    })
}

/// The job's result: `state_history[<final state>]` if present, else the last value merged into
/// `state_history` (Avtomatika's rule, so clients of both see the same result).
fn extract_result(job: &Job) -> Option<Value> {
    result_of(job, &job.current_state).cloned()
}

/// The result a job ending in `state` has (see [`extract_result`]).
fn result_of<'a>(job: &'a Job, state: &str) -> Option<&'a Value> {
    job.state_history.get(state).or_else(|| job.state_history.values().next_back())
}

pub(crate) fn retry_task(env: &EngineEnv, record: &TaskRecord, branch: bool, out: &mut Step) -> TaskRecord {
    let delay = backoff(env.config.retry_base, env.config.retry_max, record.attempt);
    let next = new_task(record.spec.clone(), branch, record.attempt + 1, now_ms() + delay.as_millis() as u64);
    out.event(EngineEvent::TaskRetry {
        task_id: record.task_id.clone(),
        next_task_id: next.task_id.clone(),
        attempt: next.attempt,
        delay_ms: delay.as_millis() as u64,
    });
    out.effect(Effect::Dispatch { tasks: vec![next.clone()], delay });
    next
}
