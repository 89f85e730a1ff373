//! Worker events (orchestrator.md section 3.9): progress and `event_transitions` events about a
//! job, and events about no job at all. Every accepted event writes a `worker_event:{type}`
//! history row; one about a job with a `webhook_url` is also sent on as a webhook.
//!
//! A handler's "ghost" events ([`crate::Actions::send_event`]) are engine events instead: their
//! rows come from [`crate::history::records_for`], their webhooks from the commit of the unit of
//! work that ran the handler.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::{Core, CoreError};
use crate::engine;
use crate::history::{self, WorkerHistoryRecord};
use crate::job::Job;
use crate::protocol::EVENT_TYPE_PROGRESS;
use crate::server::task_contracts::Schema;

/// A worker event as the worker API read and checked it (bounds, signature, sender).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerEvent {
    /// The event's id (also its replay nonce).
    pub event_id: String,
    /// `progress` or a type the sender's skill declares.
    pub event_type: String,
    /// The payload as sent; null when it was missing or null (an event transition then records
    /// no `event_<type>` entry).
    pub payload: Value,
    /// The job the event is about; `None`: no job (only recorded).
    pub job_id: Option<String>,
    /// The task the event is about (`target_task_id`, else `origin_task_id`).
    pub task_id: Option<String>,
    /// The worker the event started from (as the sender says).
    pub origin_worker_id: String,
    /// The workers the event went through, the authenticated sender last (unless it is the origin).
    pub bubbling_chain: Vec<String>,
}

impl WorkerEvent {
    /// The fields that say where the event came from: in its history row and its webhook.
    pub fn route(&self, sender: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("event_id".into(), json!(self.event_id));
        m.insert("sender_id".into(), json!(sender));
        m.insert("origin_worker_id".into(), json!(self.origin_worker_id));
        m.insert("bubbling_chain".into(), json!(self.bubbling_chain));
        m
    }

    /// The event as `on_worker_event` hooks see it, sent by `sender`.
    pub(crate) fn info(&self, sender: &str) -> crate::server::hooks::WorkerEventInfo {
        crate::server::hooks::WorkerEventInfo {
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            payload: self.payload.clone(),
            job_id: self.job_id.clone(),
            task_id: self.task_id.clone(),
            worker_id: sender.to_owned(),
            origin_worker_id: self.origin_worker_id.clone(),
            bubbling_chain: self.bubbling_chain.clone(),
        }
    }

    /// The `details` of its history row: the route, the task and the payload.
    fn details(&self, sender: &str) -> Value {
        let mut m = self.route(sender);
        m.insert("task_id".into(), json!(self.task_id));
        m.insert("payload".into(), self.payload.clone());
        Value::Object(m)
    }
}

impl Core {
    /// Applies a worker event sent by `worker_id` (the authenticated sender). About a job:
    /// progress or an `event_transitions` event, from the worker holding a running task of the
    /// job only. About no job: only recorded, as a `worker_event:{type}` row of the sender's
    /// worker history (the job history needs a job).
    pub async fn worker_event(self: &Arc<Self>, worker_id: &str, event: &WorkerEvent) -> Result<(), CoreError> {
        let event_type = event.event_type.as_str();
        let Some(job_id) = event.job_id.as_deref() else {
            match self.history() {
                Some(h) => {
                    let mut snapshot = event.details(worker_id);
                    snapshot["event_type"] = json!(event_type);
                    h.record_worker(WorkerHistoryRecord::new(
                        worker_id,
                        &format!("worker_event:{event_type}"),
                        &snapshot,
                    ));
                }
                // Without a history database the log is its only trace.
                None => tracing::info!(
                    worker_id,
                    event_type,
                    event_id = %event.event_id,
                    origin_worker_id = %event.origin_worker_id,
                    "worker event about no job"
                ),
            }
            self.hooks.worker_event(&event.info(worker_id));
            return Ok(());
        };
        let task_id = event.task_id.as_deref();
        let Some(mut tx) = self.begin(job_id).await? else { return Err(CoreError::JobNotFound) };
        // Only the worker holding a running task of the job reports on it (and on that task when
        // the event names one): not a job waiting for approval, parked or between tasks, and never
        // a job that ended.
        if tx.status.is_terminal() {
            return Err(CoreError::Conflict(format!("job {job_id} is {}: it takes no more events", tx.status)));
        }
        let held = tx
            .tasks_in_flight()
            .find(|t| t.worker_id.as_deref() == Some(worker_id) && task_id.is_none_or(|id| id == t.task_id))
            .map(|t| t.spec.task_type.clone());
        let Some(skill) = held else {
            return Err(CoreError::Forbidden(match task_id {
                Some(t) => format!("worker {worker_id} holds no running task {t} of job {job_id}"),
                None => format!("worker {worker_id} holds no running task of job {job_id}"),
            }));
        };
        // The payload against the skill's `events_schema[event_type]` (undeclared types pass).
        if let Some(contracts) = self.dispatcher.contracts_of(worker_id).await {
            if self.cfg.strict_event_validation
                && event_type != EVENT_TYPE_PROGRESS
                && !contracts.declares_event(&skill, event_type)
            {
                return Err(CoreError::EventContract(format!(
                    "event type `{event_type}` is not declared in the events_schema of skill `{skill}` (STRICT_EVENT_VALIDATION is on)"
                )));
            }
            if let Err(violations) = contracts.check(&skill, Schema::Event(event_type), &event.payload) {
                return Err(CoreError::EventContract(format!(
                    "the payload of event `{event_type}` breaks the events_schema of skill `{skill}`: {violations}"
                )));
            }
        }
        let step = engine::apply_event(&mut tx, task_id, event_type, &event.payload, self.cfg.progress_updates_max);
        // The event's row comes before the rows of what it caused (a transition, handlers).
        if let Some(h) = self.history() {
            h.record([history::worker_event_record(&tx, worker_id, task_id, event_type, event.details(worker_id))]);
        }
        self.apply(&mut tx, step).await;
        // The `worker_event:{type}` webhook, once the event is saved (like a job's end).
        let hooked = tx.webhook_url.clone().map(|url| (url, Job::clone(&tx)));
        self.commit(tx).await?;
        if let Some((url, job)) = hooked {
            self.webhooks.worker_event(url, &job, event_type, &event.payload, event.route(worker_id));
        }
        self.hooks.worker_event(&event.info(worker_id));
        Ok(())
    }
}
