//! The worker SDK without an orchestrator: configuration from the SDK's environment names,
//! builder validation, the registration body, outcomes, and handlers driven by a test handle.

use avto::protocol::{self, canonical, sign, MessageKind, TaskPayload, WorkerRegistration};
use avto::worker::{
    errors, parse_orchestrators, HardwareDevice, InstalledArtifact, IntoTaskOutcome, MultiOrchestratorMode,
    OrchestratorConfig, Skill, TaskHandle, TaskOutcome, Worker, WorkerConfig, WorkerError,
};
use serde_json::{json, Value};
use std::time::Duration;

fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn config_reads_the_sdk_environment_names() {
    let c = WorkerConfig::from_vars(vars(&[
        ("WORKER_ID", "gpu-worker-7"),
        ("WORKER_TYPE", "gpu"),
        ("ORCHESTRATOR_URL", "http://127.0.0.1:9000/"),
        ("WORKER_TOKEN", "global"),
        ("WORKER_INDIVIDUAL_TOKEN", "mine"),
        ("ORCHESTRATOR_SECRET_KEY", "s3cret"),
        ("REQUIRE_TASK_SIGNATURE", "false"),
        ("COST_PER_SKILL", r#"{"render": 0.5}"#),
        ("MAX_CONCURRENT_TASKS", "3"),
        ("CPU_CORES", "16"),
        ("RAM_GB", "64"),
        ("GPU_MODEL", "NVIDIA T4"),
        ("GPU_VRAM_GB", "16"),
        ("WORKER_DEVICES", r#"[{"type": "npu", "model": "X1"}]"#),
        ("INSTALLED_SOFTWARE", r#"{"ffmpeg": "6.0"}"#),
        ("INSTALLED_ARTIFACTS", r#"[{"name": "sd-1.5", "version": "1.5", "type": "model"}]"#),
        ("WORKER_EXTRA_REGION", "eu-west"),
        ("WORKER_EXTRA_LABELS", r#"{"tier": "gold"}"#),
        ("HEARTBEAT_INTERVAL", "5"),
        ("TASK_POLL_TIMEOUT", "2.5"),
        ("WORKER_ENABLE_WEBSOCKETS", "true"),
        ("MULTI_ORCHESTRATOR_MODE", "round_robin"),
        ("RESULT_MAX_RETRIES", "7"),
        ("WORKER_SHUTDOWN_TIMEOUT", "12"),
    ]))
    .unwrap();
    assert_eq!(c.worker_id, "gpu-worker-7");
    assert_eq!(c.worker_type, "gpu");
    assert_eq!(c.orchestrators, vec![OrchestratorConfig::new("http://127.0.0.1:9000").priority(1)]);
    assert_eq!(c.token, "mine", "WORKER_INDIVIDUAL_TOKEN wins over WORKER_TOKEN");
    assert!(c.signs_messages());
    assert_eq!(c.secret_key.as_deref(), Some("s3cret"));
    assert!(!c.require_task_signature);
    assert_eq!(c.cost_per_skill["render"], 0.5);
    assert_eq!(c.max_concurrent_tasks, 3);
    assert_eq!((c.cpu_cores, c.ram_gb), (16, 64.0));
    assert_eq!(c.devices[0], HardwareDevice::gpu("NVIDIA T4", "0", 16));
    assert_eq!(c.devices[1].device_type, "npu");
    assert_eq!(c.installed_software["ffmpeg"], "6.0");
    assert_eq!(c.installed_artifacts[0].artifact_type.as_deref(), Some("model"));
    assert_eq!(c.extra_capabilities["region"], json!("eu-west"));
    assert_eq!(c.extra_capabilities["labels"], json!({"tier": "gold"}));
    assert_eq!(c.heartbeat_interval, Duration::from_secs(5));
    assert_eq!(c.task_poll_timeout, Duration::from_millis(2500));
    assert!(c.enable_websockets);
    assert_eq!(c.multi_orchestrator_mode, MultiOrchestratorMode::RoundRobin);
    assert_eq!(c.result_max_retries, 7);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(12));
}

#[test]
fn config_defaults_are_the_sdks() {
    let c = WorkerConfig::from_vars(Vec::<(String, String)>::new()).unwrap();
    assert!(c.worker_id.starts_with("worker-"));
    assert!(protocol::is_valid_identifier(&c.worker_id));
    assert_eq!(c.orchestrators, vec![OrchestratorConfig::new("http://localhost:8080").priority(1)]);
    assert_eq!(c.multi_orchestrator_mode, MultiOrchestratorMode::Waterfall);
    assert_eq!(c.token, "your-secret-worker-token");
    assert!(!c.signs_messages(), "the placeholder token does not sign");
    assert_eq!(c.max_concurrent_tasks, 10);
    assert_eq!(c.heartbeat_interval, Duration::from_secs(15));
    assert_eq!(c.task_poll_timeout, Duration::from_secs(30));
    assert_eq!(c.idle_poll_delay, Duration::from_millis(500));
    assert_eq!(c.result_max_retries, 5);
    assert!(!c.enable_websockets);
    assert!(c.require_task_signature);
    assert!(c.strict_event_validation);
}

#[test]
fn orchestrators_config_is_sorted_and_falls_back() {
    let list = parse_orchestrators(
        Some(
            r#"[{"url": "http://b:1", "weight": 3}, {"url": "http://a:1", "priority": 1, "token": "t"}, {"url": "http://c:1"}]"#,
        ),
        Some("http://ignored:1"),
    );
    assert_eq!(
        list,
        vec![
            OrchestratorConfig::new("http://a:1").priority(1).token("t"),
            OrchestratorConfig::new("http://b:1").weight(3),
            OrchestratorConfig::new("http://c:1"),
        ]
    );
    // bad JSON: ORCHESTRATOR_URL (priority 1)
    assert_eq!(
        parse_orchestrators(Some("not json"), Some("http://x:1")),
        vec![OrchestratorConfig::new("http://x:1").priority(1)]
    );
    assert_eq!(parse_orchestrators(None, None), vec![OrchestratorConfig::new("http://localhost:8080").priority(1)]);
}

#[test]
fn multi_orchestrator_modes_parse() {
    assert_eq!("FAILOVER".parse::<MultiOrchestratorMode>().unwrap(), MultiOrchestratorMode::Failover);
    assert_eq!("WATERFALL".parse::<MultiOrchestratorMode>().unwrap(), MultiOrchestratorMode::Waterfall);
    assert_eq!("ROUND_ROBIN".parse::<MultiOrchestratorMode>().unwrap(), MultiOrchestratorMode::RoundRobin);
    assert!(matches!("SOMETIMES".parse::<MultiOrchestratorMode>(), Err(WorkerError::Config(_))));
    assert!(WorkerConfig::from_vars(vars(&[("MULTI_ORCHESTRATOR_MODE", "x")])).is_err());
    assert!(WorkerConfig::from_vars(vars(&[("MAX_CONCURRENT_TASKS", "many")])).is_err());
}

fn echo_worker() -> avto::worker::WorkerBuilder {
    Worker::builder()
        .worker_id("echo-worker-1")
        .orchestrator_url("http://127.0.0.1:1")
        .token("demo-worker-token")
        .task(Skill::new("echo").description("Echo the task params back."), |p: Value, _t: TaskHandle| async move {
            TaskOutcome::success(json!({ "echo": p }))
        })
}

#[test]
fn builder_rejects_bad_setups() {
    let err = |b: avto::worker::WorkerBuilder| b.build().unwrap_err().to_string();
    assert!(err(Worker::builder().worker_id("w")).contains("no tasks"));
    assert!(err(echo_worker().worker_id("bad id")).contains("Invalid WORKER_ID"));
    assert!(err(echo_worker().task("echo", |_: Value, _t: TaskHandle| async {})).contains("declared twice"));
    assert!(err(echo_worker().task("bad.name", |_: Value, _t: TaskHandle| async {})).contains("Invalid skill name"));
    assert!(err(echo_worker().orchestrator_url("ftp://x")).contains("http"));
    assert!(err(echo_worker().max_concurrent_tasks(0)).contains("MAX_CONCURRENT_TASKS"));
    assert!(echo_worker().build().is_ok());
}

#[test]
fn registration_body_looks_like_the_sdks_and_is_signed() {
    let worker = echo_worker()
        .worker_type("echo-worker")
        .configure(|c| c.hostname = "vm".into())
        .enable_websockets(true)
        .build()
        .unwrap();
    let body = worker.registration_payload();
    assert!(sign::verify_message(&body, "demo-worker-token", MessageKind::Registration));
    assert_eq!(sign::verify_security(&body, "demo-worker-token", "echo-worker-1", MessageKind::Registration), Ok(()));
    let ts = body["timestamp"].as_i64().unwrap();
    assert!((protocol::unix_now() - ts).abs() <= 1);

    // the captured SDK registration (wire-transcript.md #2) minus security/timestamp, except that
    // a Rust worker does not claim python in installed_software
    let mut expected: Value = serde_json::from_str(r#"{"available_skills":["echo"],"capabilities":{"cost_per_skill":{},"extra":{"websockets":true},"hostname":"vm","ip_address":"127.0.0.1"},"installed_artifacts":[],"installed_software":{"python":"3.11"},"resources":{"properties":{"cpu_cores":4,"ram_gb":0}},"skills_hash":"d72dedf5d6eec5fd44de4e97c3b708e2f8b50ed33e43144cbfd7f2608c86d008","supported_skills":[{"description":"Echo the task params back.","input_schema":{"type":"object"},"name":"echo","type":"echo"}],"worker_id":"echo-worker-1","worker_type":"echo-worker"}"#).unwrap();
    expected["installed_software"] = json!({});
    let mut got = body.clone();
    got.as_object_mut().unwrap().remove("security");
    got.as_object_mut().unwrap().remove("timestamp");
    assert_eq!(canonical::to_canonical_string(&got), canonical::to_canonical_string(&expected));
    assert_eq!(worker.skills_hash(), "d72dedf5d6eec5fd44de4e97c3b708e2f8b50ed33e43144cbfd7f2608c86d008");
    let typed: WorkerRegistration = serde_json::from_value(body).unwrap();
    assert_eq!(typed.worker_id, "echo-worker-1");
}

#[test]
fn registration_carries_capabilities_for_dispatch() {
    let worker = echo_worker()
        .task(
            Skill::new("render")
                .version("2.1")
                .cost(0.25)
                .output_statuses(["needs_review"])
                .event_schema("frame_done", json!({"type": "object"})),
            |_: Value, _t: TaskHandle| async { TaskOutcome::success(json!({})) },
        )
        .device(HardwareDevice::gpu("NVIDIA T4", "0", 16))
        .installed_artifact(InstalledArtifact::new("stable-diffusion-1.5", "1.5"))
        .installed_software("ffmpeg", "6.0")
        .cost_per_skill("echo", 0.01)
        .extra_capability("region", "eu")
        .cpu_cores(8)
        .ram_gb(31.5)
        .build()
        .unwrap();
    let body = worker.registration_payload();
    assert_eq!(body["capabilities"]["cost_per_skill"], json!({"echo": 0.01, "render": 0.25}));
    assert_eq!(body["capabilities"]["extra"], json!({"websockets": false, "region": "eu"}));
    assert_eq!(
        body["resources"],
        json!({"devices": [{"type": "gpu", "model": "NVIDIA T4", "id": "0", "properties": {"memory_gb": 16}}], "properties": {"cpu_cores": 8, "ram_gb": 31.5}})
    );
    assert_eq!(body["installed_artifacts"], json!([{"name": "stable-diffusion-1.5", "version": "1.5"}]));
    assert_eq!(body["installed_software"], json!({"ffmpeg": "6.0"}));
    let render = &body["supported_skills"][1];
    assert_eq!(render["version"], "2.1");
    assert_eq!(render["output_statuses"], json!(["needs_review"]));
    assert_eq!(render["events_schema"], json!({"frame_done": {"type": "object"}}));
    assert_eq!(body["available_skills"], json!(["echo", "render"]));
    // the skills hash covers skills, costs and extras
    let skills: Vec<protocol::SkillInfo> = serde_json::from_value(body["supported_skills"].clone()).unwrap();
    let costs = serde_json::from_value(body["capabilities"]["cost_per_skill"].clone()).unwrap();
    let extra = json!({"region": "eu"});
    assert_eq!(body["skills_hash"], json!(protocol::skills_hash(&skills, &costs, extra.as_object().unwrap())));
}

#[test]
fn unsigned_without_a_real_token() {
    let worker = echo_worker().token("your-secret-worker-token").build().unwrap();
    assert!(worker.registration_payload().get("security").is_none());
}

#[test]
fn outcomes_from_handler_return_types() {
    let ok: Result<Value, avto::TaskError> = Ok(json!({"a": 1}));
    let o = ok.into_outcome();
    assert!(o.is_success());
    assert_eq!(o.data(), &json!({"a": 1}));
    let err: Result<Value, _> = Err(errors::permanent("nope"));
    let o = err.into_outcome();
    assert_eq!(o.status_name(), "failure");
    assert_eq!(o.error_info().unwrap().code, "PERMANENT_ERROR");
    assert_eq!(errors::transient("x").code, "TRANSIENT_ERROR");
    assert_eq!(errors::invalid_input("x").code, "INVALID_INPUT_ERROR");
    assert!(().into_outcome().is_success());
    assert_eq!(TaskOutcome::cancelled().status_name(), "cancelled");
    let custom = TaskOutcome::status("needs_review", json!({"score": 0.1})).with_cost("gpu_seconds", 2.5);
    assert_eq!(custom.status_name(), "needs_review");
    let failed = TaskOutcome::failure("TIMEOUT_ERROR", "slow").with_error_details(json!({"after": 30}));
    assert_eq!(failed.error_info().unwrap().details, Some(json!({"after": 30})));
    let from_error: TaskOutcome = avto::TaskError::new("SECURITY_ERROR", "denied").into();
    assert_eq!(from_error.error_info().unwrap().code, "SECURITY_ERROR");
}

#[tokio::test]
async fn handlers_can_be_unit_tested_with_a_test_handle() {
    async fn train(task: TaskHandle) -> TaskOutcome {
        for epoch in 1..=3 {
            tokio::select! {
                _ = task.cancelled() => return TaskOutcome::cancelled(),
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
            task.progress(epoch as f64 / 3.0, &format!("epoch {epoch}")).await;
        }
        TaskOutcome::success(json!({"epochs": 3, "job": task.job_id()}))
    }
    let mut payload = TaskPayload::new("job-1", "task-1", "train");
    payload.params = Some(json!({"lr": 0.1}).as_object().unwrap().clone());
    let (handle, control) = TaskHandle::for_test(payload.clone());
    assert_eq!(handle.params_raw(), &json!({"lr": 0.1}));
    let out = train(handle).await;
    assert_eq!(out.data(), &json!({"epochs": 3, "job": "job-1"}));
    let events = control.events();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].event_type, "progress");
    assert_eq!(events[2].payload["progress"], json!(1.0));
    assert_eq!(events[2].payload["message"], json!("epoch 3"));

    let (handle, control) = TaskHandle::for_test(payload);
    assert!(!handle.is_cancelled());
    control.cancel();
    assert!(handle.is_cancelled());
    assert_eq!(train(handle).await.status_name(), "cancelled");
}

fn declared_echo(b: avto::worker::WorkerBuilder) -> avto::worker::WorkerBuilder {
    b.task(
        Skill::new("declared_echo"),
        |p: Value, _t: TaskHandle| async move { TaskOutcome::success(json!({ "echo": p })) },
    )
}

inventory::submit! {
    avto::worker::DeclaredTask { name: "declared_echo", register: declared_echo }
}

#[test]
fn declared_tasks_are_collected_for_run() {
    let worker =
        avto::worker::builder_with_declared_tasks().unwrap().worker_id("declared-1").token("t").build().unwrap();
    let body = worker.registration_payload();
    assert_eq!(body["supported_skills"][0]["name"], "declared_echo");
}
