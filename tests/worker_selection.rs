//! Issue #16 item 3: which worker gets a task (spec 4.1, 4.2; checklist items 56, 69, 72).
//!
//! Every strategy with several workers, hot-skill preference (with fallback to the others), and
//! the statuses that take no new tasks (`busy`, `full`, `draining`): the task waits and goes to
//! the first worker that is `idle` again, by heartbeat or by polling. Raw signed RXON workers
//! that never poll unless told, so each task stays on the queue it was put on and the test reads
//! where dispatch put it (`current_task.worker_id`). Each test runs on the in-memory storage and
//! on Redis (`AVTO_TEST_REDIS_URL`; a missing Redis fails the Redis half).

use std::collections::BTreeMap;
use std::time::Duration;

use avto::protocol::sign::MessageKind;
use avto_tests::blueprints::dispatch_options;
use avto_tests::{test_config, test_config_with, ApiClient, RawWorker, RedisPrefix, Server};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// An orchestrator serving `dispatch_options` on memory or (with a prefix) on Redis.
async fn server(redis: Option<&RedisPrefix>, vars: &[(&str, &str)]) -> Server {
    let config = if vars.is_empty() { test_config() } else { test_config_with(vars) };
    match redis {
        None => Server::with_config([dispatch_options::blueprint()], config).await,
        Some(p) => Server::with_redis([dispatch_options::blueprint()], &p.url, &p.prefix, config).await,
    }
}

/// Registers a raw worker offering `work` at `cost` (none: no `cost_per_skill` entry), with `hot` skills.
async fn worker(s: &Server, id: &str, cost: Option<f64>, hot: &[&str]) -> RawWorker {
    let w = RawWorker::new(&s.base, id, &["work"]);
    let mut costs = serde_json::Map::new();
    if let Some(cost) = cost {
        costs.insert("work".into(), json!(cost));
    }
    let body = json!({
        "worker_id": id,
        "worker_type": "raw",
        "supported_skills": [{"name": "work", "type": "work"}],
        "hot_skills": hot,
        "capabilities": {"cost_per_skill": costs, "extra": {}},
        "resources": {"properties": {"cpu_cores": 1}},
    });
    let body = w.signed(body, MessageKind::Registration);
    let (status, answer) = w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&body)).await;
    assert_eq!(status, 200, "register {id}: {answer}");
    w
}

/// A heartbeat reporting `status` and `hot` skills (left out when empty, as the SDKs do).
async fn report(w: &RawWorker, status: &str, hot: &[&str]) {
    let mut body = json!({"worker_id": w.id, "status": status, "current_tasks": []});
    if !hot.is_empty() {
        body["hot_skills"] = json!(hot);
    }
    let body = w.signed(body, MessageKind::Heartbeat);
    let (code, answer) = w.send(reqwest::Method::PATCH, &format!("/_worker/workers/{}", w.id), Some(&body)).await;
    assert_eq!(code, 200, "heartbeat of {}: {answer}", w.id);
}

/// Creates a `dispatch_options` job; returns its id and the worker its task was queued on.
async fn place(c: &ApiClient, data: Value) -> (String, String) {
    let id = c.create("/api/v1/jobs/dispatch", data).await;
    let job =
        c.wait_until(&id, T, "the task is queued on a worker", |j| j["current_task"]["worker_id"].is_string()).await;
    (id, job["current_task"]["worker_id"].as_str().unwrap().to_owned())
}

/// `n` jobs one after the other; the workers their tasks went to, in order.
async fn place_n(c: &ApiClient, n: usize, data: Value) -> Vec<String> {
    let mut placed = Vec::new();
    for _ in 0..n {
        placed.push(place(c, data.clone()).await.1);
    }
    placed
}

fn counts(placed: &[String]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for w in placed {
        *counts.entry(w.as_str()).or_default() += 1;
    }
    counts
}

/// Creates a job whose task no worker takes now; returns its id once it waits, and the reason.
async fn park(c: &ApiClient, data: Value) -> (String, String) {
    let id = c.create("/api/v1/jobs/dispatch", data).await;
    let job = c.wait_until(&id, T, "the task waits for a worker", |j| j["waiting_reason"].is_string()).await;
    assert_eq!(job["status"], "waiting_for_worker", "{job}");
    assert!(job["current_task"]["worker_id"].is_null(), "not queued anywhere: {job}");
    (id, job["waiting_reason"].as_str().unwrap().to_owned())
}

/// Waits until the job's task is queued on (or run by) `worker`.
async fn wait_placed_on(c: &ApiClient, id: &str, worker: &str) {
    c.wait_until(id, T, &format!("the task is placed on {worker}"), |j| j["current_task"]["worker_id"] == worker).await;
}

/// Polls once: the task handed out (panics on 204).
async fn take(w: &RawWorker) -> Value {
    let (status, task) = w.poll().await;
    assert_eq!(status, 200, "{} polls: {task}", w.id);
    task
}

// ---------------------------------------------------------------------------------------------
// strategies

/// `default`: the cheapest workers, equally good ones in turn; dearer ones only when the cheap
/// ones take nothing new.
async fn default_takes_the_cheapest_in_turn(redis: Option<&RedisPrefix>) {
    let s = server(redis, &[]).await;
    let c = s.client();
    let _dear = worker(&s, "dear", Some(2.0), &[]).await;
    let cheap_1 = worker(&s, "cheap-1", Some(1.0), &[]).await;
    let cheap_2 = worker(&s, "cheap-2", Some(1.0), &[]).await;
    let _free = worker(&s, "no-cost", None, &[]).await;
    let placed = place_n(&c, 4, json!({})).await;
    assert_eq!(counts(&placed), BTreeMap::from([("cheap-1", 2), ("cheap-2", 2)]), "{placed:?}");
    assert_ne!(placed[0], placed[1], "equally good workers take turns: {placed:?}");
    report(&cheap_1, "full", &[]).await;
    report(&cheap_2, "busy", &[]).await;
    assert_eq!(place_n(&c, 2, json!({})).await, ["dear", "dear"], "a worker without a cost is the dearest");
}

/// `round_robin`: each worker in turn, whatever its cost.
async fn round_robin_takes_each_worker_in_turn(redis: Option<&RedisPrefix>) {
    let s = server(redis, &[]).await;
    let c = s.client();
    for (id, cost) in [("rr-a", Some(3.0)), ("rr-b", Some(1.0)), ("rr-c", None)] {
        worker(&s, id, cost, &[]).await;
    }
    let placed = place_n(&c, 6, json!({"strategy": "round_robin"})).await;
    assert_eq!(counts(&placed), BTreeMap::from([("rr-a", 2), ("rr-b", 2), ("rr-c", 2)]), "{placed:?}");
    for i in 0..3 {
        assert_eq!(placed[i], placed[i + 3], "the same rotation twice: {placed:?}");
    }
}

/// `least_connections`: the least loaded (queued plus running), whatever the cost.
async fn least_connections_fills_the_least_loaded(redis: Option<&RedisPrefix>) {
    let s = server(redis, &[]).await;
    let c = s.client();
    let loaded = worker(&s, "lc-loaded", Some(1.0), &[]).await;
    worker(&s, "lc-b", Some(5.0), &[]).await;
    worker(&s, "lc-c", None, &[]).await;
    // Three tasks on the cheapest; it runs one of them.
    assert_eq!(place_n(&c, 3, json!({"strategy": "cheapest"})).await, ["lc-loaded"; 3]);
    take(&loaded).await;
    let placed = place_n(&c, 6, json!({"strategy": "least_connections"})).await;
    assert_eq!(counts(&placed), BTreeMap::from([("lc-b", 3), ("lc-c", 3)]), "{placed:?}");
    // All at 3 now: in turn again.
    let placed = place_n(&c, 3, json!({"strategy": "least_connections"})).await;
    assert_eq!(counts(&placed), BTreeMap::from([("lc-b", 1), ("lc-c", 1), ("lc-loaded", 1)]), "{placed:?}");
}

/// `cheapest`: the lowest cost, however loaded; `max_cost` leaves the dearer ones out, and the
/// task waits when only they are left.
async fn cheapest_takes_the_lowest_cost(redis: Option<&RedisPrefix>) {
    let s = server(redis, &[]).await;
    let c = s.client();
    worker(&s, "ch-none", None, &[]).await;
    worker(&s, "ch-3", Some(3.0), &[]).await;
    let cheap = worker(&s, "ch-1", Some(1.0), &[]).await;
    assert_eq!(place_n(&c, 4, json!({"strategy": "cheapest"})).await, ["ch-1"; 4]);
    report(&cheap, "full", &[]).await;
    assert_eq!(place_n(&c, 1, json!({"strategy": "cheapest"})).await, ["ch-3"]);
    let (id, why) = park(&c, json!({"strategy": "cheapest", "max_cost": 2.0})).await;
    assert!(why.contains("waiting for one"), "{why}");
    report(&cheap, "idle", &[]).await;
    wait_placed_on(&c, &id, "ch-1").await;
}

/// `best_value`: the lowest cost per reputation; a worker without a cost ranks last.
async fn best_value_takes_the_lowest_cost_per_reputation(redis: Option<&RedisPrefix>) {
    let s = server(redis, &[]).await;
    let c = s.client();
    worker(&s, "bv-none", None, &[]).await;
    let good = worker(&s, "bv-2", Some(2.0), &[]).await;
    let dear = worker(&s, "bv-4", Some(4.0), &[]).await;
    assert_eq!(place_n(&c, 3, json!({"strategy": "best_value"})).await, ["bv-2"; 3]);
    report(&good, "full", &[]).await;
    assert_eq!(place_n(&c, 2, json!({"strategy": "best_value"})).await, ["bv-4"; 2]);
    report(&dear, "full", &[]).await;
    assert_eq!(place_n(&c, 1, json!({"strategy": "best_value"})).await, ["bv-none"]);
}

/// `overflow`: the cheapest worker until DISPATCHER_SOFT_LIMIT (3) tasks wait on its queue, then
/// the next dearest; when every queue is at the limit, the shortest queue (then the cheapest).
/// Running tasks do not count: the queue does. (Worker ids sort against their costs.)
async fn overflow_fills_the_cheapest_up_to_the_soft_limit(redis: Option<&RedisPrefix>) {
    let s = server(redis, &[]).await;
    let c = s.client();
    let cheap = worker(&s, "of-z", Some(1.0), &[]).await;
    worker(&s, "of-x", None, &[]).await;
    worker(&s, "of-y", Some(2.0), &[]).await;
    let placed = place_n(&c, 9, json!({"strategy": "overflow"})).await;
    let expected: Vec<&str> = ["of-z"; 3].into_iter().chain(["of-y"; 3]).chain(["of-x"; 3]).collect();
    assert_eq!(placed, expected);
    assert_eq!(place_n(&c, 1, json!({"strategy": "overflow"})).await, ["of-z"], "all at 3: the cheapest");
    // The cheapest runs 3 of its 4: one waits on its queue, so it is below the limit again.
    for _ in 0..3 {
        take(&cheap).await;
    }
    assert_eq!(place_n(&c, 2, json!({"strategy": "overflow"})).await, ["of-z", "of-z"]);
    // Every queue at the limit again (3 queued): the shortest, the cheapest of them first.
    assert_eq!(place_n(&c, 1, json!({"strategy": "overflow"})).await, ["of-z"], "all at 3: the cheapest");
    // max_cost leaves the dearer ones out: the cheap one even above the limit.
    assert_eq!(place_n(&c, 1, json!({"strategy": "overflow", "max_cost": 1.5})).await, ["of-z"]);

    // DISPATCHER_SOFT_LIMIT=1: one each, then the shortest queue.
    let s = server(None, &[("DISPATCHER_SOFT_LIMIT", "1")]).await;
    let c = s.client();
    worker(&s, "of-z", Some(1.0), &[]).await;
    worker(&s, "of-y", Some(2.0), &[]).await;
    worker(&s, "of-x", Some(3.0), &[]).await;
    let placed = place_n(&c, 4, json!({"strategy": "overflow"})).await;
    assert_eq!(placed, ["of-z", "of-y", "of-x", "of-z"]);
}

// ---------------------------------------------------------------------------------------------
// hot skills, statuses

/// Workers that reported the skill hot are chosen first, under any strategy; the others take the
/// task when no hot one can (status, max_cost). A heartbeat without `hot_skills` cools them.
async fn hot_workers_are_preferred_and_the_others_take_over(redis: Option<&RedisPrefix>) {
    let s = server(redis, &[]).await;
    let c = s.client();
    worker(&s, "cold", Some(1.0), &[]).await;
    let hot_1 = worker(&s, "hot-1", Some(5.0), &["work"]).await;
    let hot_2 = worker(&s, "hot-2", Some(9.0), &["other", "work"]).await;
    assert_eq!(place_n(&c, 2, json!({})).await, ["hot-1", "hot-1"], "hot before cheaper");
    let placed = place_n(&c, 4, json!({"strategy": "round_robin"})).await;
    assert_eq!(counts(&placed), BTreeMap::from([("hot-1", 2), ("hot-2", 2)]), "{placed:?}");
    assert_eq!(place_n(&c, 1, json!({"max_cost": 2.0})).await, ["cold"], "the hot ones cost too much");
    report(&hot_1, "full", &["work"]).await;
    assert_eq!(place_n(&c, 1, json!({})).await, ["hot-2"]);
    report(&hot_2, "busy", &["work"]).await;
    assert_eq!(place_n(&c, 1, json!({})).await, ["cold"], "no hot worker takes new tasks");
    // hot-1 is idle again, its skill cold (the heartbeat lists none): the cheapest wins again.
    report(&hot_1, "idle", &[]).await;
    assert_eq!(place_n(&c, 1, json!({"strategy": "cheapest"})).await, ["cold"]);
    report(&hot_1, "idle", &["work"]).await;
    assert_eq!(place_n(&c, 1, json!({"strategy": "cheapest"})).await, ["hot-1"]);
}

/// `busy`, `full` and `draining` workers get no new tasks; with nothing else, the task waits
/// (never failed) and goes to the first worker that reports `idle`.
async fn busy_full_and_draining_workers_get_no_new_tasks(redis: Option<&RedisPrefix>) {
    let s = server(redis, &[]).await;
    let c = s.client();
    let busy = worker(&s, "st-busy", Some(1.0), &[]).await;
    let full = worker(&s, "st-full", Some(1.0), &[]).await;
    let draining = worker(&s, "st-draining", Some(1.0), &[]).await;
    let idle = worker(&s, "st-idle", Some(5.0), &[]).await;
    report(&busy, "busy", &[]).await;
    report(&full, "full", &[]).await;
    report(&draining, "draining", &[]).await;
    for strategy in ["default", "round_robin", "least_connections", "cheapest", "best_value", "overflow"] {
        assert_eq!(place_n(&c, 1, json!({"strategy": strategy})).await, ["st-idle"], "{strategy}");
    }
    report(&idle, "full", &[]).await;
    let (id, why) = park(&c, json!({"strategy": "cheapest"})).await;
    assert!(why.contains("takes no new tasks"), "{why}");
    // It waits, bounded by its dispatch timeout (a day by default), not failed.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let job = c.job(&id).await;
    assert_eq!(job["status"], "waiting_for_worker", "{job}");
    assert!(job["dispatch_deadline_ms"].as_u64().unwrap() > avto::job::now_ms() + 3_600_000, "{job}");
    report(&busy, "idle", &[]).await;
    wait_placed_on(&c, &id, "st-busy").await;
    let task = take(&busy).await;
    assert_eq!(task["job_id"], id);
    assert_eq!(busy.succeed(&task, json!({})).await.0, 200);
    assert_eq!(c.wait_terminal(&id, T).await["status"], "finished");
}

/// A `full` worker that polls has a free slot (the SDKs poll only then): it is `idle` again at
/// once, and the waiting task comes to that very poll, without waiting for a heartbeat.
async fn a_full_worker_that_polls_gets_the_waiting_task(redis: Option<&RedisPrefix>) {
    let s = server(redis, &[]).await;
    let c = s.client();
    let w = worker(&s, "pf", None, &[]).await;
    report(&w, "full", &[]).await;
    let (id, _) = park(&c, json!({})).await;
    let task = take(&w).await;
    assert_eq!(task["job_id"], id, "the poll took the waiting task");
    assert_eq!(c.worker("pf").await.unwrap()["status"], "idle");
    assert_eq!(w.succeed(&task, json!({})).await.0, 200);
    assert_eq!(c.wait_terminal(&id, T).await["status"], "finished");
    // Busy likewise; a draining worker's poll changes nothing.
    report(&w, "busy", &[]).await;
    let (id, _) = park(&c, json!({})).await;
    assert_eq!(take(&w).await["job_id"], id);
    report(&w, "draining", &[]).await;
    park(&c, json!({})).await;
    assert_eq!(w.poll().await.0, 204);
    assert_eq!(c.worker("pf").await.unwrap()["status"], "draining");
}

/// A `draining` worker finishes the task it runs (its result counts); the tasks waiting on its
/// queue go to another worker at once; it takes nothing new, stealing included.
async fn a_draining_worker_finishes_its_task_and_hands_back_its_queue(redis: Option<&RedisPrefix>) {
    let s = server(redis, &[]).await;
    let c = s.client();
    let draining = worker(&s, "dr", Some(1.0), &[]).await;
    let other = worker(&s, "dr-other", Some(2.0), &[]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (id, w) = place(&c, json!({"strategy": "cheapest"})).await;
        assert_eq!(w, "dr");
        ids.push(id);
    }
    let running = take(&draining).await;
    assert_eq!(running["job_id"], ids[0], "FIFO");
    report(&draining, "draining", &[]).await;
    for id in &ids[1..] {
        wait_placed_on(&c, id, "dr-other").await;
    }
    assert_eq!(place_n(&c, 1, json!({"strategy": "cheapest"})).await, ["dr-other"]);
    assert_eq!(draining.poll().await.0, 204, "nothing stolen from the 3 queued on dr-other");
    let (status, answer) = draining.succeed(&running, json!({})).await;
    assert_eq!((status, &answer["status"]), (200, &json!("accepted")), "{answer}");
    assert_eq!(c.wait_terminal(&ids[0], T).await["status"], "finished");
    for _ in 0..3 {
        let task = take(&other).await;
        assert_eq!(other.succeed(&task, json!({})).await.0, 200);
    }
    for id in &ids[1..] {
        assert_eq!(c.wait_terminal(id, T).await["status"], "finished");
    }
}

/// A Rust SDK worker that runs 2 tasks at a time, with heartbeats at most every 3 s: running 2
/// it reports `full`, and the tasks that come meanwhile wait for it. They go to it as soon as it
/// asks for work again, not at its next heartbeat (up to 3 s later).
async fn a_worker_at_capacity_gets_work_as_soon_as_it_asks(redis: Option<&RedisPrefix>) {
    let s = server(redis, &[]).await;
    let c = s.client();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let _w = avto_tests::RustWorker::start(&s.base, "cap-2", |b| {
        let gate = gate.clone();
        b.max_concurrent_tasks(2)
            .configure(|c| {
                c.heartbeat_interval = Duration::from_secs(60);
                c.heartbeat_cooldown = Duration::from_secs(3);
            })
            .task("work", move |p: Value, _task: avto::worker::TaskHandle| {
                let gate = gate.clone();
                async move {
                    if p["gated"] == true {
                        let _ = gate.acquire().await;
                    }
                    avto::worker::TaskOutcome::success(json!({}))
                }
            })
    });
    c.wait_workers(&["cap-2"]).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(place(&c, json!({"gated": true})).await.0);
    }
    let deadline = tokio::time::Instant::now() + T;
    while c.worker("cap-2").await.unwrap()["status"] != "full" {
        assert!(tokio::time::Instant::now() < deadline, "the worker never reported full");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..6 {
        ids.push(park(&c, json!({})).await.0);
    }
    // Its next heartbeat is 3 s away.
    let opened = std::time::Instant::now();
    gate.add_permits(2);
    for id in &ids {
        assert_eq!(c.wait_terminal(id, T).await["status"], "finished");
    }
    let took = opened.elapsed();
    assert!(took < Duration::from_secs(2), "the waiting tasks went to the worker when it polled: {took:?}");
}

/// `DISPATCHER_SOFT_LIMIT` is read like the other DISPATCHER_* variables (environment and builder).
#[test]
fn dispatcher_soft_limit_is_read_from_the_environment() {
    assert_eq!(test_config().dispatcher_soft_limit, 3);
    assert_eq!(test_config_with(&[("DISPATCHER_SOFT_LIMIT", "7")]).dispatcher_soft_limit, 7);
    let built = avto::server::config::Config::builder().dispatcher_soft_limit(5).build().unwrap();
    assert_eq!(built.dispatcher_soft_limit, 5);
    let lookup = |k: &str| (k == "DISPATCHER_SOFT_LIMIT").then(|| "many".to_owned());
    let err = avto::server::config::Config::from_lookup(&lookup).unwrap_err();
    assert!(err.to_string().contains("DISPATCHER_SOFT_LIMIT"), "{err}");
}

macro_rules! on_both_storages {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(None).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let prefix = avto_tests::RedisPrefix::new();
                    super::$name(Some(&prefix)).await;
                }
            )*
        }
    };
}

on_both_storages!(
    default_takes_the_cheapest_in_turn,
    round_robin_takes_each_worker_in_turn,
    least_connections_fills_the_least_loaded,
    cheapest_takes_the_lowest_cost,
    best_value_takes_the_lowest_cost_per_reputation,
    overflow_fills_the_cheapest_up_to_the_soft_limit,
    hot_workers_are_preferred_and_the_others_take_over,
    busy_full_and_draining_workers_get_no_new_tasks,
    a_full_worker_that_polls_gets_the_waiting_task,
    a_draining_worker_finishes_its_task_and_hands_back_its_queue,
    a_worker_at_capacity_gets_work_as_soon_as_it_asks,
);
