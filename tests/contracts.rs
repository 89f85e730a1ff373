//! Input contracts (issue #15 item 1): a blueprint whose handlers take `InitialData<T>` with
//! `T: schemars::JsonSchema` publishes T's schema, and the orchestrator refuses initial data
//! that breaks it (400, every violation with its JSON pointer) before a job exists.

use std::time::Duration;

use avto::prelude::*;
use avto::InitialData;
use avto_tests::Server;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct Order {
    pub name: String,
    pub qty: u32,
    #[serde(default)]
    pub note: Option<String>,
}

/// Read by a second handler as another typed view: both contracts hold at once (`allOf`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct Priced {
    #[serde(default)]
    pub price: Option<f64>,
}

/// No `JsonSchema`: a handler may take it without giving the blueprint a contract.
#[derive(Debug, Deserialize)]
pub struct Untyped {
    #[allow(dead_code)]
    pub anything: Option<Value>,
}

#[avto::blueprint(name = "typed_order", api_version = "v1", api_endpoint = "jobs/typed_order")]
pub mod typed_order {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(InitialData(order): InitialData<Order>, actions: &mut Actions) {
        assert!(!order.name.is_empty() && order.qty > 0, "the contract let only good orders in: {order:?}");
        actions.transition_to("priced");
    }

    #[handler(state = "priced")]
    async fn priced(InitialData(p): InitialData<Priced>, actions: &mut Actions) {
        let _ = p.price;
        actions.transition_to("finished");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

#[avto::blueprint(name = "untyped_order", api_version = "v1", api_endpoint = "jobs/untyped_order")]
pub mod untyped_order {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(InitialData(_u): InitialData<Untyped>, actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

#[test]
fn a_blueprint_publishes_the_schema_of_its_typed_initial_data() {
    let schema = typed_order::blueprint().input_schema().expect("typed_order has a contract");
    let all = schema["allOf"].as_array().expect("two typed views: allOf");
    assert_eq!(all.len(), 2, "{schema}");
    assert_eq!(all[0]["required"], json!(["name", "qty"]), "{schema}");
    assert!(all[1]["properties"]["price"].is_object(), "{schema}");
    assert_eq!(untyped_order::blueprint().input_schema(), None, "no JsonSchema, no contract");
}

#[tokio::test]
async fn initial_data_breaking_the_contract_is_refused_before_a_job_exists() {
    let s = Server::start([typed_order::blueprint(), untyped_order::blueprint()]).await;
    let c = s.client();
    // Every violation, each with its JSON pointer.
    let (status, body) =
        c.post("/api/v1/jobs/typed_order", &json!({"initial_data": {"name": 5, "qty": -1, "price": "x"}})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("input contract of blueprint `typed_order`"), "{body}");
    let mut pointers: Vec<&str> =
        body["violations"].as_array().unwrap().iter().map(|v| v["pointer"].as_str().unwrap()).collect();
    pointers.sort();
    assert_eq!(pointers, vec!["/name", "/price", "/qty"], "{body}");
    assert!(body["violations"].as_array().unwrap().iter().all(|v| !v["message"].as_str().unwrap().is_empty()));
    // A missing required member: the pointer of the object that lacks it.
    let (status, body) = c.post("/api/v1/jobs/typed_order", &json!({"initial_data": {"qty": 2}})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["violations"][0]["pointer"], "", "{body}");
    assert!(body["violations"][0]["message"].as_str().unwrap().contains("name"), "{body}");
    // No job was created for either.
    let (_, list) = c.get("/api/v1/jobs").await;
    assert_eq!(list["jobs"].as_array().map(Vec::len).unwrap_or(0), 0, "{list}");
    // Data that keeps the contract runs.
    let id = c.create("/api/v1/jobs/typed_order", json!({"name": "Ada", "qty": 3, "price": 9.5})).await;
    let job = c.wait_terminal(&id, Duration::from_secs(10)).await;
    assert_eq!(job["status"], "finished", "{job}");
    // Clients see the contract with the blueprint.
    let (_, blueprints) = c.get("/api/v1/blueprints").await;
    let typed = blueprints.as_array().unwrap().iter().find(|b| b["name"] == "typed_order").unwrap();
    assert_eq!(typed["input_schema"]["allOf"][0]["required"], json!(["name", "qty"]), "{typed}");
    assert_eq!(typed["input_schema"]["allOf"][1]["title"], "Priced", "{typed}");
    // A blueprint without a contract takes any object.
    let id = c.create("/api/v1/jobs/untyped_order", json!({"name": 5, "whatever": [1, 2]})).await;
    assert_eq!(c.wait_terminal(&id, Duration::from_secs(10)).await["status"], "finished");
}

/// The skill catalog (issue #15 item 2, spec 35): for each skill live workers offer, its contract
/// as registered (schemas, statuses, version) with the worker's price, how many workers offer it,
/// their types and their average reputation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_catalog_shows_each_skills_contract() {
    use avto::worker::{Skill, TaskHandle, TaskOutcome};
    let s = Server::start([untyped_order::blueprint()]).await;
    let c = s.client();
    let resize = || {
        Skill::new("resize")
            .version("1.2.0")
            .description("resizes an image")
            .input_schema(json!({"type": "object", "required": ["url"]}))
            .output_schema(json!({"type": "object", "required": ["width"]}))
            .output_statuses(["success", "too_small"])
    };
    let workers: Vec<avto_tests::RustWorker> = ["cat-a", "cat-b"]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            avto_tests::RustWorker::start(&s.base, id, |b| {
                b.worker_type(if i == 0 { "gpu" } else { "cpu" })
                    .cost_per_skill("resize", 0.5 + i as f64)
                    .task(resize(), |_p: Value, _t: TaskHandle| async { TaskOutcome::success(json!({"width": 1})) })
                    .task(Skill::new("ping"), |_p: Value, _t: TaskHandle| async { TaskOutcome::success(json!({})) })
            })
        })
        .collect();
    c.wait_workers(&["cat-a", "cat-b"]).await;
    let (status, cat) = c.get("/api/v1/workers/catalog").await;
    assert_eq!(status, 200, "{cat}");
    let r = &cat["resize"];
    assert_eq!(r["providers_count"], 2, "{cat}");
    assert_eq!(r["worker_types"], json!(["cpu", "gpu"]), "{cat}");
    assert_eq!(r["average_reputation"], 1.0, "{cat}");
    assert_eq!(r["contract"]["version"], "1.2.0", "{cat}");
    assert_eq!(r["contract"]["input_schema"]["required"], json!(["url"]), "{cat}");
    assert_eq!(r["contract"]["output_schema"]["required"], json!(["width"]), "{cat}");
    assert_eq!(r["contract"]["output_statuses"], json!(["success", "too_small"]), "{cat}");
    assert_eq!(r["contract"]["base_price"], 0.5, "the first worker's price (workers by id): {cat}");
    assert_eq!(cat["ping"]["providers_count"], 2, "{cat}");
    // Clients only: a worker token is no client credential.
    let (status, _) = c.with_token("not-a-client").get("/api/v1/workers/catalog").await;
    assert_eq!(status, 401);
    drop(workers);
}

/// A schedule whose `input_data` breaks its blueprint's contract would fail at every fire time:
/// start-up refuses it, naming the file, the schedule and each violation.
#[tokio::test]
async fn a_schedule_breaking_the_input_contract_is_refused_at_start_up() {
    let path = std::env::temp_dir().join(format!("avto-contract-schedules-{}.toml", uuid::Uuid::new_v4()));
    let build = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let mut cfg = avto_tests::test_config();
        cfg.schedules_config_path = Some(path.clone());
        avto::Orchestrator::builder().blueprint(typed_order::blueprint()).config(cfg).build()
    };
    let err =
        build("[nightly]\nblueprint = \"typed_order\"\ninterval_seconds = 60\ninput_data = { name = 5, qty = 1 }\n")
            .unwrap_err()
            .to_string();
    for want in [path.display().to_string().as_str(), "schedule `nightly`", "typed_order", "`/name`"] {
        assert!(err.contains(want), "{want:?} in: {err}");
    }
    let ok = build(
        "[nightly]\nblueprint = \"typed_order\"\ninterval_seconds = 60\ninput_data = { name = \"n\", qty = 1 }\n",
    );
    assert!(ok.is_ok(), "{:?}", ok.err().map(|e| e.to_string()));
    let _ = std::fs::remove_file(&path);
}

/// Building an orchestrator outside a Tokio runtime is an error that says so, not a panic.
#[test]
fn building_outside_a_runtime_is_an_error_not_a_panic() {
    let err = avto::Orchestrator::builder().blueprint(typed_order::blueprint()).build().unwrap_err();
    assert!(err.to_string().contains("needs a Tokio runtime"), "{err}");
}
