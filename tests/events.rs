//! Worker events (orchestrator.md section 3.9, issue #15 item 5): an event about no job is
//! accepted and recorded in the sender's worker history; the orchestrator appends the
//! authenticated sender to `bubbling_chain` (once, never for the origin), bounds the chain, and
//! shows it in the event's history row and `worker_event:{type}` webhook; every accepted event
//! about a job is a `worker_event:{type}` row of the job's history.

use std::time::Duration;

use avto::history::WorkerHistoryRecord;
use avto::protocol::sign::MessageKind;
use avto::protocol::MAX_BUBBLING_CHAIN;
use avto_tests::blueprints::echo_flow;
use avto_tests::{hook_receiver, test_config, RawWorker, Server};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// start (sends two ghost events, one a bad type when `initial_data.bad`) -> done (sends one).
#[avto::blueprint(name = "ghosts", api_version = "v1", api_endpoint = "jobs/ghosts")]
pub mod ghosts {
    use avto::prelude::*;
    use serde_json::json;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions.send_event("warmed", json!({"n": 1})).send_event("progress", json!({"progress": 0.5}));
        if ctx.initial_data["bad"] == true {
            actions.send_event("not an identifier", json!({}));
        }
        actions.transition_to("done");
    }

    #[handler(state = "done", end)]
    async fn done(actions: &mut Actions) {
        actions.send_event("closing", json!({"n": 2}));
    }
}

async fn server() -> Server {
    let mut cfg = test_config();
    cfg.history_database_uri = Some("memory:".into());
    Server::with_config([echo_flow::blueprint(), ghosts::blueprint()], cfg).await
}

/// A signed event of `w` (the sender); `fields` are merged into it (`target_job_id`,
/// `origin_worker_id`, `bubbling_chain`, ...).
fn event(w: &RawWorker, event_type: &str, payload: Value, fields: Value) -> Value {
    let mut body = json!({"event_id": uuid::Uuid::new_v4().to_string(), "worker_id": w.id,
                          "origin_worker_id": w.id, "event_type": event_type, "payload": payload});
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    w.signed(body, MessageKind::Event)
}

async fn post(w: &RawWorker, body: &Value) -> (u16, Value) {
    w.send(reqwest::Method::POST, "/_worker/events", Some(body)).await
}

fn types(rows: &[WorkerHistoryRecord]) -> Vec<&str> {
    rows.iter().map(|r| r.event_type.as_str()).collect()
}

#[tokio::test]
async fn an_event_about_no_job_is_accepted_and_recorded() {
    let s = server().await;
    let c = s.client();
    let id = format!("ev-nojob-{}", uuid::Uuid::new_v4().simple());
    let w = RawWorker::new(&s.base, &id, &["echo"]);
    assert_eq!(w.register().await.0, 200);
    // A job whose task the worker holds: a job-less event leaves it alone.
    let job = c.create("/api/v1/jobs/echo", json!({})).await;
    let (status, task) = w.poll().await;
    assert_eq!(status, 200, "{task}");
    let before = s.core.job(&job).await.unwrap().expect("job stored");

    let first = event(&w, "progress", json!({"progress": 0.7}), json!({"origin_worker_id": "edge-7"}));
    assert_eq!(post(&w, &first).await, (200, json!({"status": "event_accepted"})));
    // A null job id is no job too, and so is a null chain.
    let body = event(&w, "idle", json!({}), json!({"target_job_id": null, "bubbling_chain": null}));
    assert_eq!(post(&w, &body).await, (200, json!({"status": "event_accepted"})));

    let h = s.core.history().expect("history enabled");
    let rows = h.worker_history(&id, 0, 100).await.unwrap();
    assert_eq!(types(&rows), ["registered", "worker_event:progress", "worker_event:idle"]);
    let snap = rows[1].snapshot().unwrap();
    assert_eq!(snap["event_type"], "progress");
    assert_eq!(snap["event_id"], first["event_id"]);
    assert_eq!(snap["payload"], json!({"progress": 0.7}));
    assert_eq!(snap["sender_id"], id.as_str());
    assert_eq!(snap["origin_worker_id"], "edge-7");
    assert_eq!(snap["bubbling_chain"], json!([id]), "the sender is appended: it is not the origin");
    let snap = rows[2].snapshot().unwrap();
    assert_eq!(snap["bubbling_chain"], json!([]), "the sender is the origin: not appended");

    let after = s.core.job(&job).await.unwrap().expect("job stored");
    assert_eq!((after.progress, &after.state_history), (before.progress, &before.state_history));
    let job_rows = h.job_history(&job).await.unwrap();
    assert!(job_rows.iter().all(|r| !r.event_type.starts_with("worker_event:")), "{job_rows:?}");
}

/// Three events about a job, through different routes: each is one `worker_event:{type}` row of
/// the job's history and one webhook, both with the chain as the orchestrator completed it.
#[tokio::test]
async fn the_bubbling_chain_is_completed_once_and_shown() {
    let s = server().await;
    let (addr, mut hooks) = hook_receiver().await;
    let c = s.client();
    let id = format!("ev-chain-{}", uuid::Uuid::new_v4().simple());
    let w = RawWorker::new(&s.base, &id, &["echo"]);
    assert_eq!(w.register().await.0, 200);
    let (status, body) =
        c.post("/api/v1/jobs/echo", &json!({"initial_data": {}, "webhook_url": format!("http://{addr}/hook")})).await;
    assert_eq!(status, 202, "{body}");
    let job = body["job_id"].as_str().unwrap().to_owned();
    let (status, task) = w.poll().await;
    assert_eq!(status, 200, "{task}");
    let task_id = task["task_id"].as_str().unwrap();

    // (message, origin, chain as sent, chain as recorded)
    let cases = [
        ("own", id.clone(), json!([]), json!([])),
        ("relayed", "edge-1".to_owned(), json!(["edge-1"]), json!(["edge-1", id])),
        ("already-in", "edge-2".to_owned(), json!(["relay-1", id]), json!(["relay-1", id])),
    ];
    for (message, origin, chain, _) in &cases {
        let body = event(
            &w,
            "progress",
            json!({"progress": 0.5, "message": message}),
            json!({"target_job_id": job, "target_task_id": task_id, "origin_worker_id": origin,
                   "bubbling_chain": chain}),
        );
        assert_eq!(post(&w, &body).await, (200, json!({"status": "event_accepted"})), "{message}");
    }

    let mut got = Vec::new();
    while got.len() < cases.len() {
        let hook = tokio::time::timeout(T, hooks.recv()).await.expect("webhooks within 10 s").unwrap();
        if hook["event"] == "worker_event:progress" {
            got.push(hook);
        }
    }
    let rows = s.core.history().unwrap().job_history(&job).await.unwrap();
    let rows: Vec<_> = rows.iter().filter(|r| r.event_type == "worker_event:progress").collect();
    assert_eq!(rows.len(), cases.len(), "one row per event: {rows:?}");
    for (message, origin, _, want) in &cases {
        let hook = got.iter().find(|h| h["result"]["message"] == *message).expect("a webhook per event");
        assert_eq!(hook["job_id"], job.as_str());
        assert_eq!(hook["bubbling_chain"], *want, "{message}: {hook}");
        assert_eq!(hook["origin_worker_id"], origin.as_str());
        assert_eq!(hook["sender_id"], id.as_str());
        let row = rows
            .iter()
            .find(|r| r.details.as_ref().unwrap()["payload"]["message"] == *message)
            .expect("a history row per event");
        let details = row.details.as_ref().unwrap();
        assert_eq!(details["bubbling_chain"], *want, "{message}: {details}");
        assert_eq!(details["origin_worker_id"], origin.as_str());
        assert_eq!(details["event_id"], hook["event_id"]);
        assert_eq!(row.worker_id.as_deref(), Some(id.as_str()), "the authenticated sender");
        assert_eq!(row.origin_task_id.as_deref(), Some(task_id));
        assert!(row.snapshot().is_some_and(|j| j["id"] == job.as_str()), "the job as the event left it");
    }

    // The client's history API shows the rows too.
    let (status, api_rows) = c.get(&format!("/api/v1/jobs/{job}/history")).await;
    assert_eq!(status, 200, "{api_rows}");
    let n = api_rows.as_array().unwrap().iter().filter(|r| r["event_type"] == "worker_event:progress").count();
    assert_eq!(n, cases.len(), "{api_rows}");
}

#[tokio::test]
async fn a_bad_or_over_long_chain_is_refused() {
    let s = server().await;
    let id = format!("ev-long-{}", uuid::Uuid::new_v4().simple());
    let w = RawWorker::new(&s.base, &id, &["echo"]);
    assert_eq!(w.register().await.0, 200);
    let others = |n: usize| (0..n).map(|i| format!("relay-{i}")).collect::<Vec<_>>();
    let refused = [
        ("more ids than allowed", json!({"bubbling_chain": others(MAX_BUBBLING_CHAIN + 1)})),
        ("full, and the sender must be added", json!({"bubbling_chain": others(MAX_BUBBLING_CHAIN)})),
        ("an id too long", json!({"bubbling_chain": ["x".repeat(129)]})),
        ("an empty id", json!({"bubbling_chain": [""]})),
        ("not a string", json!({"bubbling_chain": [7]})),
        ("not a list", json!({"bubbling_chain": "relay-1"})),
        ("an origin too long", json!({"origin_worker_id": "o".repeat(129)})),
        ("an event type too long", json!({"event_type": "t".repeat(129)})),
    ];
    for (what, fields) in refused {
        let mut body = event(&w, "hello", json!({}), json!({"origin_worker_id": "edge-1"}));
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        // Re-sign: event_type and origin_worker_id are covered by the signature.
        body.as_object_mut().unwrap().remove("security");
        let body = w.signed(body, MessageKind::Event);
        let (status, answer) = post(&w, &body).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert!(answer["error"].is_string(), "{what}: a JSON error: {answer}");
    }
    // Full, but the sender is already in it (or is the origin): nothing to add, accepted.
    let mut full = others(MAX_BUBBLING_CHAIN - 1);
    full.push(id.clone());
    let body = event(&w, "hello", json!({}), json!({"origin_worker_id": "edge-1", "bubbling_chain": full}));
    assert_eq!(post(&w, &body).await, (200, json!({"status": "event_accepted"})));
    let body = event(&w, "hello", json!({}), json!({"bubbling_chain": others(MAX_BUBBLING_CHAIN)}));
    assert_eq!(post(&w, &body).await, (200, json!({"status": "event_accepted"})));
    let rows = s.core.history().unwrap().worker_history(&id, 0, 100).await.unwrap();
    assert_eq!(
        types(&rows),
        ["registered", "worker_event:hello", "worker_event:hello"],
        "refused events are not recorded"
    );
}

/// `actions.send_event` (spec 1.4): each ghost event of a handler run that succeeds is a
/// `worker_event:{type}` row (worker `ghost`) and a webhook; a run that fails sends none.
#[tokio::test]
async fn handlers_send_ghost_events() {
    let s = server().await;
    let (addr, mut hooks) = hook_receiver().await;
    let c = s.client();
    let hook = format!("http://{addr}/hook");
    let (status, body) = c.post("/api/v1/jobs/ghosts", &json!({"initial_data": {}, "webhook_url": hook})).await;
    assert_eq!(status, 202, "{body}");
    let job = body["job_id"].as_str().unwrap().to_owned();
    c.wait_for(&job, &["finished"], T).await;

    let mut got = Vec::new();
    while got.len() < 4 {
        got.push(tokio::time::timeout(T, hooks.recv()).await.expect("webhooks within 10 s").unwrap());
    }
    let mut events: Vec<_> = got.iter().map(|h| h["event"].as_str().unwrap().to_owned()).collect();
    events.sort();
    assert_eq!(events, ["job_finished", "worker_event:closing", "worker_event:progress", "worker_event:warmed"]);
    let warmed = got.iter().find(|h| h["event"] == "worker_event:warmed").unwrap();
    assert_eq!(warmed["result"], json!({"n": 1}));
    assert_eq!((warmed["sender_id"].as_str(), warmed["origin_worker_id"].as_str()), (Some("ghost"), Some("ghost")));
    assert_eq!(warmed["bubbling_chain"], json!([]));

    let rows = s.core.history().unwrap().job_history(&job).await.unwrap();
    let ghost: Vec<_> = rows.iter().filter(|r| r.event_type.starts_with("worker_event:")).collect();
    let kinds: Vec<_> = ghost.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(kinds, ["worker_event:warmed", "worker_event:progress", "worker_event:closing"], "in call order");
    assert!(ghost.iter().all(|r| r.worker_id.as_deref() == Some("ghost")));
    assert_eq!(ghost[0].details.as_ref().unwrap()["payload"], json!({"n": 1}));
    assert_eq!(ghost[0].details.as_ref().unwrap()["event_id"], warmed["event_id"]);

    // A run whose send_event is refused fails (and is retried, then quarantined): nothing is sent.
    let (status, body) = c.post("/api/v1/jobs/ghosts", &json!({"initial_data": {"bad": true}})).await;
    assert_eq!(status, 202, "{body}");
    let bad = body["job_id"].as_str().unwrap().to_owned();
    c.wait_for(&bad, &["failed", "quarantined"], Duration::from_secs(30)).await;
    let rows = s.core.history().unwrap().job_history(&bad).await.unwrap();
    assert!(rows.iter().all(|r| !r.event_type.starts_with("worker_event:")), "{rows:?}");
    assert!(rows.iter().any(|r| r.event_type == "state_failed"), "{rows:?}");
}
