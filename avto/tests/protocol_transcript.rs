//! Test vectors from the captured Python traffic (`wire-transcript.md`): avtomatika 1.0b30 +
//! avtomatika-worker 1.0b20, worker token `demo-worker-token`, ORCHESTRATOR_SECRET_KEY `demo-secret`.

use avto::protocol::{self, canonical, sign, wire::*, MessageKind, TaskSigCheck, ZeroTrustError};
use serde_json::{json, Value};

const TOKEN: &str = "demo-worker-token";
const SECRET: &str = "demo-secret";

/// Signed worker HTTP bodies (register, heartbeats, results) captured from avtomatika-worker 1.0b20.
pub const SIGNED_HTTP_BODIES: &[&str] = &[
    r#"{"available_skills":["echo"],"capabilities":{"cost_per_skill":{},"extra":{"websockets":true},"hostname":"vm","ip_address":"127.0.0.1"},"installed_artifacts":[],"installed_software":{"python":"3.11"},"resources":{"properties":{"cpu_cores":4,"ram_gb":0}},"security":{"signature":"b023bd69ff4ea64f5bffbd669a833d88c96f97e87579eaca2b2a2411f03aa498","signer_id":"echo-worker-1"},"skills_hash":"d72dedf5d6eec5fd44de4e97c3b708e2f8b50ed33e43144cbfd7f2608c86d008","supported_skills":[{"description":"Echo the task params back.","input_schema":{"type":"object"},"name":"echo","type":"echo"}],"timestamp":1795689991,"worker_id":"echo-worker-1","worker_type":"echo-worker"}"#,
    r#"{"available_skills":["echo"],"current_tasks":[],"security":{"signature":"6f227786c6dc7e287bc1efba56766779ecb9764725c9e936c9a633f21e42d4cc","signer_id":"echo-worker-1"},"skills_hash":"d72dedf5d6eec5fd44de4e97c3b708e2f8b50ed33e43144cbfd7f2608c86d008","status":"idle","timestamp":1795689991,"usage":{"cpu_load_percent":0,"ram_used_gb":0},"worker_id":"echo-worker-1"}"#,
    r#"{"available_skills":["echo"],"current_tasks":[],"security":{"signature":"e5ebef94be2eac78a82538eb05a53d5acc7721eccafda9e790201fd3765f5c81","signer_id":"echo-worker-1"},"skills_hash":"d72dedf5d6eec5fd44de4e97c3b708e2f8b50ed33e43144cbfd7f2608c86d008","status":"idle","timestamp":1795689996,"worker_id":"echo-worker-1"}"#,
    r#"{"costs":{"execution_time_seconds":0.0012},"data":{"echo":{"msg":"hello","n":1,"progress":true}},"job_id":"30e34be3-b0d7-450a-bf09-02fbddf52b6e","origin_worker_id":"echo-worker-1","security":{"signature":"8d5a55e024f6bf671b7e8f2b7339db623b0808be37c1d8f30c8f1e6e87b00edb","signer_id":"echo-worker-1"},"task_id":"task-92e0533b-51b1-4b93-894c-a2957a4b0382","timestamp":1795689998,"worker_id":"echo-worker-1"}"#,
    r#"{"available_skills":["echo"],"current_tasks":[],"security":{"signature":"863240633179de99543445d4d6100f208d664310c5321178e466447b4dab9315","signer_id":"echo-worker-1"},"skills_hash":"d72dedf5d6eec5fd44de4e97c3b708e2f8b50ed33e43144cbfd7f2608c86d008","status":"idle","timestamp":1795689998,"worker_id":"echo-worker-1"}"#,
    r#"{"costs":{"execution_time_seconds":0.0003},"data":{},"error":{"code":"INVALID_INPUT_ERROR","message":"failure requested"},"job_id":"b61fa213-b05e-4d14-be4f-84fbe6e43fb9","origin_worker_id":"echo-worker-1","security":{"signature":"08409f97694b8c0d444eb2a99a912805446379b0a6c29194c161f6725580a0d7","signer_id":"echo-worker-1"},"status":"failure","task_id":"task-e8b692bb-d4b5-4ea0-888a-932cac3447f8","timestamp":1795690012,"worker_id":"echo-worker-1"}"#,
    r#"{"costs":{"execution_time_seconds":0.0003},"data":{},"error":{"code":"PERMANENT_ERROR","message":"failure requested"},"job_id":"6a663a68-656e-4d6e-a9d0-e2e00af0dc6f","origin_worker_id":"echo-worker-1","security":{"signature":"b931bf865590fdfdf14ca6b65b8f14245309aafc85532ea71c0fbad1b42702ff","signer_id":"echo-worker-1"},"status":"failure","task_id":"task-8413680c-fe6e-4bf2-99c7-5f2ba1fa6e41","timestamp":1795690013,"worker_id":"echo-worker-1"}"#,
    r#"{"costs":{"execution_time_seconds":8.0018},"data":{"echo":{"sleep":8}},"job_id":"30ac587d-64b3-4577-98b0-09c65657396e","origin_worker_id":"echo-worker-1","security":{"signature":"9cc6342c527a294bce0232fa69451733925fb67cf2539367f62b26ea8a79e448","signer_id":"echo-worker-1"},"task_id":"task-130236bf-87ab-4744-8379-59151c1add8f","timestamp":1795690022,"worker_id":"echo-worker-1"}"#,
    r#"{"current_tasks":[],"security":{"signature":"b9bb1775cd77b5fa6fcb13ebcdd99b89d355dff905239afd143cfc241b3b81ea","signer_id":"echo-worker-1"},"skills_hash":"d72dedf5d6eec5fd44de4e97c3b708e2f8b50ed33e43144cbfd7f2608c86d008","status":"offline","supported_skills":[],"timestamp":1795690037,"usage":{"cpu_load_percent":0,"ram_used_gb":0},"worker_id":"echo-worker-1"}"#,
];
/// Progress event sent by the SDK over the WebSocket (Python json.dumps spacing).
pub const WS_EVENT_FRAMES: &[&str] = &[
    r#"{"bubbling_chain": [], "event_id": "4f95a48c-ed7c-42a5-b379-d7ce01d03a71", "event_type": "progress", "origin_task_id": "task-92e0533b-51b1-4b93-894c-a2957a4b0382", "origin_worker_id": "echo-worker-1", "payload": {"message": "halfway", "progress": 0.5}, "priority": 0, "security": {"signature": "e6c9df37698b5b5f862d21a76311ede3fc7afd808edae485031d0f8b5ec92f22", "signer_id": "echo-worker-1"}, "target_job_id": "30e34be3-b0d7-450a-bf09-02fbddf52b6e", "target_task_id": "task-92e0533b-51b1-4b93-894c-a2957a4b0382", "timestamp": 1795689998, "trace_context": {}, "worker_id": "echo-worker-1"}"#,
];
/// Task payloads (poll answers) signed by avtomatika 1.0b30 with ORCHESTRATOR_SECRET_KEY=demo-secret.
pub const SIGNED_TASKS: &[&str] = &[
    r#"{"job_id":"30e34be3-b0d7-450a-bf09-02fbddf52b6e","params":{"msg":"hello","n":1,"progress":true},"priority":0,"sig":"f92434ae539ed4f7f309d5cf0e7aaa69d6a85f9c6f5cd99c3d0ebae841ffe34b","step":1,"task_id":"task-92e0533b-51b1-4b93-894c-a2957a4b0382","timestamp":1795689998,"tracing_context":{},"type":"echo"}"#,
    r#"{"job_id":"b61fa213-b05e-4d14-be4f-84fbe6e43fb9","params":{"fail":true},"priority":0,"sig":"e610ced395ea4b020a0bbd5d04557cb359e7b0ba798b63672720c9a57cdbf88c","step":1,"task_id":"task-e8b692bb-d4b5-4ea0-888a-932cac3447f8","timestamp":1795690012,"tracing_context":{},"type":"echo"}"#,
    r#"{"job_id":"30ac587d-64b3-4577-98b0-09c65657396e","params":{"sleep":8},"priority":0,"sig":"e733b0b7376637faa444e89e30d5c015eef58c013d49e079710662cb62296b9c","step":1,"task_id":"task-130236bf-87ab-4744-8379-59151c1add8f","timestamp":1795690014,"tracing_context":{},"type":"echo"}"#,
    r#"{"job_id":"a9ae8732-089f-42ff-b931-a473941fb435","params":{"big":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"priority":0,"sig":"c3034c2443b3177ad2b6bfb64b8736abc6a999d1b0372dee4901996b37b0615f","step":1,"task_id":"task-85e4707a-cee8-4ce0-939a-9d4cc0ffc582","timestamp":1795690106,"tracing_context":{},"type":"echo"}"#,
    r#"{"job_id":"019cf37f-a9a3-4e8d-98ac-ca6a9851c00d","params":{"x":1},"priority":0,"sig":"ac81cfdbc1806b21705dc083937b5222406b2edf5d5a1f29188cf3a8d738eddb","step":1,"task_id":"task-247f5bad-c149-4fed-91b8-63ecbe8f9090","timestamp":1795690062,"tracing_context":{},"type":"echo"}"#,
    r#"{"job_id":"f01533ec-f77d-480d-97bd-902a594a2a71","params":{"x":2},"priority":0,"sig":"f526fd9d68ee3b772d7284f08e1c1ada20be190a4b9b00670eacc56896fa11f4","step":1,"task_id":"task-2960b4fc-f613-4c85-a9d6-5744d8684a38","timestamp":1795690062,"tracing_context":{},"type":"echo"}"#,
    r#"{"job_id":"109b3168-812d-464c-a315-bd7f21155b4b","params":{"x":3},"priority":0,"sig":"5a23141ef557b307cf50e74f209bce437ef0e14960f314698eeb72d950c556b1","step":1,"task_id":"task-4866ac61-6062-4e27-a0e7-5008b355761e","timestamp":1795690063,"tracing_context":{},"type":"echo"}"#,
    r#"{"job_id":"109b3168-812d-464c-a315-bd7f21155b4b","params":{"x":3},"priority":0,"sig":"1024e0cbb36e24638db982911330244f0697a7b88126e3d5f9a04b6cb0a77423","step":1,"task_id":"task-ac89b3db-fd00-4068-bb3c-ec737ac4c48d","timestamp":1795690063,"tracing_context":{},"type":"echo"}"#,
    r#"{"job_id":"109b3168-812d-464c-a315-bd7f21155b4b","params":{"x":3},"priority":0,"sig":"83885fab0ba2764ce1480a03dd4d03f17908f3abaf625538b3ca0c0a9710b966","step":1,"task_id":"task-ebc65ba6-7a6a-4708-a0af-1f03de78f2a7","timestamp":1795690063,"tracing_context":{},"type":"echo"}"#,
    r#"{"job_id":"109b3168-812d-464c-a315-bd7f21155b4b","params":{"x":3},"priority":0,"sig":"2925b7345567c058b03700d8a40f6c64e5bab41f152ef1b205648dcc12b123e8","step":1,"task_id":"task-7357cac3-0c55-400f-bdea-b3c7504e11d4","timestamp":1795690063,"tracing_context":{},"type":"echo"}"#,
    r#"{"job_id":"d05dfb93-44f5-4bfc-b94c-e2c837572420","params":{"x":4},"priority":0,"sig":"69d919cbfd7c97a71954a96c679355b71f07d9de477b737b4c866e390703920b","step":1,"task_id":"task-70495e97-7df4-4a99-b709-e25c4803a6c6","timestamp":1795690064,"tracing_context":{},"type":"echo"}"#,
];

fn kind_of(body: &Value) -> MessageKind {
    if body.get("costs").is_some() {
        MessageKind::Result
    } else if body.get("worker_type").is_some() {
        MessageKind::Registration
    } else if body.get("event_type").is_some() {
        MessageKind::Event
    } else {
        MessageKind::Heartbeat
    }
}

fn parse(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn every_signed_http_body_verifies_with_the_worker_token() {
    assert_eq!(SIGNED_HTTP_BODIES.len(), 9);
    for raw in SIGNED_HTTP_BODIES {
        let body = parse(raw);
        let kind = kind_of(&body);
        assert!(sign::verify_message(&body, TOKEN, kind), "does not verify: {raw}");
        assert!(!sign::verify_message(&body, "other-token", kind));
        assert_eq!(sign::verify_security(&body, TOKEN, "echo-worker-1", kind), Ok(()));
        // tampering with any signed field breaks it
        let mut tampered = body.clone();
        tampered["timestamp"] = json!(body["timestamp"].as_i64().unwrap() + 1);
        assert!(!sign::verify_message(&tampered, TOKEN, kind));
    }
}

#[test]
fn sdk_http_bodies_are_already_canonical() {
    for raw in SIGNED_HTTP_BODIES {
        assert_eq!(canonical::to_canonical_string(&parse(raw)), *raw);
    }
}

#[test]
fn attach_security_reproduces_the_sdk_signatures() {
    for raw in SIGNED_HTTP_BODIES {
        let body = parse(raw);
        let mut unsigned = body.clone();
        unsigned.as_object_mut().unwrap().remove("security");
        sign::attach_security(&mut unsigned, TOKEN, "echo-worker-1", kind_of(&body));
        assert_eq!(canonical::to_canonical_string(&unsigned), *raw);
    }
}

#[test]
fn typed_round_trip_gives_byte_identical_bodies() {
    for raw in SIGNED_HTTP_BODIES {
        let body = parse(raw);
        let again = match kind_of(&body) {
            MessageKind::Registration => {
                serde_json::to_value(serde_json::from_value::<WorkerRegistration>(body.clone()).unwrap()).unwrap()
            }
            MessageKind::Heartbeat => {
                serde_json::to_value(serde_json::from_value::<Heartbeat>(body.clone()).unwrap()).unwrap()
            }
            MessageKind::Result => {
                serde_json::to_value(serde_json::from_value::<TaskResult>(body.clone()).unwrap()).unwrap()
            }
            MessageKind::Event => unreachable!(),
            other => unreachable!("no transcript bodies of kind {other:?}"),
        };
        assert_eq!(canonical::to_canonical_string(&again), *raw);
    }
}

#[test]
fn typed_fields_of_the_captured_registration() {
    let reg: WorkerRegistration = serde_json::from_str(SIGNED_HTTP_BODIES[0]).unwrap();
    assert_eq!(reg.worker_id, "echo-worker-1");
    assert_eq!(reg.worker_type, "echo-worker");
    let skills = reg.supported_skills.as_ref().unwrap();
    assert_eq!(skills[0].name, "echo");
    assert_eq!(skills[0].skill_type.as_deref(), Some("echo"));
    assert_eq!(skills[0].schema_dialect, "json-schema");
    let caps = reg.capabilities.as_ref().unwrap();
    assert_eq!(caps.extra.as_ref().unwrap()["websockets"], json!(true));
    assert_eq!(reg.security.as_ref().unwrap().signer_id.as_deref(), Some("echo-worker-1"));
    assert_eq!(reg.timestamp, Some(1795689991));
    // the skills hash is the SDK's contract hash (no costs, no WORKER_EXTRA_*)
    let hash = protocol::skills_hash(skills, &Default::default(), &Default::default());
    assert_eq!(Some(hash), reg.skills_hash);
}

#[test]
fn captured_results_decode() {
    let ok: TaskResult = serde_json::from_str(SIGNED_HTTP_BODIES[3]).unwrap();
    assert_eq!(ok.status, "success", "a missing status means success");
    assert_eq!(ok.costs.as_ref().unwrap()["execution_time_seconds"], json!(0.0012));
    let failed: TaskResult = serde_json::from_str(SIGNED_HTTP_BODIES[5]).unwrap();
    assert_eq!(failed.status, "failure");
    assert_eq!(failed.error.as_ref().unwrap().code, protocol::INVALID_INPUT_ERROR);
    assert_eq!(failed.data, Some(Default::default()));
    let quarantined: TaskResult = serde_json::from_str(SIGNED_HTTP_BODIES[6]).unwrap();
    assert_eq!(quarantined.error.unwrap().code, protocol::PERMANENT_ERROR);
    // success is omitted on the wire
    let v = serde_json::to_value(TaskResult::new("j", "t", "success")).unwrap();
    assert_eq!(canonical::to_canonical_string(&v), r#"{"job_id":"j","task_id":"t"}"#);
    let v = serde_json::to_value(TaskResult::new("j", "t", "cancelled")).unwrap();
    assert_eq!(canonical::to_canonical_string(&v), r#"{"job_id":"j","status":"cancelled","task_id":"t"}"#);
}

#[test]
fn offline_heartbeat_decodes() {
    let hb: Heartbeat = serde_json::from_str(SIGNED_HTTP_BODIES[8]).unwrap();
    assert_eq!(hb.status, worker_status::OFFLINE);
    assert_eq!(hb.supported_skills, Some(vec![]));
    assert_eq!(hb.current_tasks, Some(vec![]));
    assert_eq!(hb.usage, Some(ResourcesUsage::default()));
}

#[test]
fn websocket_progress_event_verifies_without_bubbling_chain() {
    let frame = parse(WS_EVENT_FRAMES[0]);
    assert!(sign::verify_message(&frame, TOKEN, MessageKind::Event));
    assert_eq!(sign::verify_security(&frame, TOKEN, "echo-worker-1", MessageKind::Event), Ok(()));
    // bubbling_chain ([]) is not covered: signing it as a plain message does not verify
    assert!(!sign::verify_message(&frame, TOKEN, MessageKind::Result));
    // and changing it does not break the signature
    let mut chained = frame.clone();
    chained["bubbling_chain"] = json!(["a", "b"]);
    assert!(sign::verify_message(&chained, TOKEN, MessageKind::Event));

    let ev: WorkerEventPayload = serde_json::from_value(frame.clone()).unwrap();
    assert_eq!(ev.event_type, protocol::EVENT_TYPE_PROGRESS);
    assert_eq!(ev.payload["progress"], json!(0.5));
    assert_eq!(ev.payload["message"], json!("halfway"));
    assert_eq!(ev.bubbling_chain, Some(vec![]));
    let again = serde_json::to_value(&ev).unwrap();
    assert_eq!(canonical::to_canonical_string(&again), canonical::to_canonical_string(&frame));
    assert_eq!(protocol::message_nonce(&frame).as_deref(), Some("4f95a48c-ed7c-42a5-b379-d7ce01d03a71"));
}

#[test]
fn every_task_sig_verifies_with_the_orchestrator_secret() {
    assert_eq!(SIGNED_TASKS.len(), 11);
    for raw in SIGNED_TASKS {
        let task = parse(raw);
        let sig = task["sig"].as_str().unwrap();
        assert_eq!(sign::verify_task(&task, SECRET), TaskSigCheck::Valid, "{raw}");
        assert_eq!(sign::sign_task(&task, SECRET), sig);
        assert_eq!(sign::verify_task(&task, "wrong"), TaskSigCheck::Invalid);
        // the orchestrator adds skill_version/skill_type after signing; the SDK ignores them
        let mut extended = task.clone();
        extended["skill_version"] = json!("1.2");
        extended["skill_type"] = json!("echo");
        assert_eq!(sign::verify_task(&extended, SECRET), TaskSigCheck::Valid);
        let mut tampered = task.clone();
        tampered["params"]["injected"] = json!(1);
        assert_eq!(sign::verify_task(&tampered, SECRET), TaskSigCheck::Invalid);
        let mut unsigned = task.clone();
        unsigned.as_object_mut().unwrap().remove("sig");
        assert_eq!(sign::verify_task(&unsigned, SECRET), TaskSigCheck::Missing);

        let typed: TaskPayload = serde_json::from_value(task.clone()).unwrap();
        assert_eq!(typed.task_type, "echo");
        assert_eq!(typed.step, 1);
        let again = serde_json::to_value(&typed).unwrap();
        assert_eq!(canonical::to_canonical_string(&again), *raw);
        assert_eq!(sign::verify_task(&again, SECRET), TaskSigCheck::Valid);
    }
}

#[test]
fn task_payload_tolerates_unknown_keys_and_fractional_deadlines() {
    let t: TaskPayload = serde_json::from_value(json!({
        "job_id": "j", "task_id": "t", "type": "echo", "deadline": 1795690000.25,
        "future_field": {"x": 1}, "policy": {"allowed_skills": ["echo", "other"]}
    }))
    .unwrap();
    assert_eq!(t.deadline, Some(1795690000.25));
    assert_eq!(t.allowed_skills(), Some(vec!["echo", "other"]));
    assert_eq!(t.priority, 0.0);
}

#[test]
fn orchestrator_answers_decode() {
    let r: ResultResponse = serde_json::from_str(r#"{"status":"accepted","transition":"success_transition"}"#).unwrap();
    assert!(!r.is_ignored());
    assert_eq!(r, ResultResponse::accepted("success_transition"));
    let r: ResultResponse = serde_json::from_str(
        r#"{"message":"Job 15336c5e-0c73-4f36-b23d-74aa29f9aeca not found (expired or deleted).","reason":"job_not_found","status":"ignored"}"#,
    )
    .unwrap();
    assert!(r.is_ignored());
    assert_eq!(r.reason.as_deref(), Some(ignored_reason::JOB_NOT_FOUND));

    let hb: HeartbeatResponse =
        serde_json::from_str(r#"{"cancel_task_ids":["f01533ec-f77d-480d-97bd-902a594a2a71"],"status":"ok"}"#).unwrap();
    assert_eq!(hb.cancel_task_ids, vec!["f01533ec-f77d-480d-97bd-902a594a2a71"]);
    assert!(!hb.require_full_sync);
    let hb: Option<HeartbeatResponse> = serde_json::from_str("null").unwrap();
    assert!(hb.is_none());
    assert_eq!(
        serde_json::to_string(&HeartbeatResponse { status: "ok".into(), ..Default::default() }).unwrap(),
        r#"{"status":"ok"}"#
    );

    let reg: RegisterResponse = serde_json::from_str(r#"{"status":"registered","version":"1.0b17"}"#).unwrap();
    assert_eq!(reg, RegisterResponse::registered());
    assert_eq!(serde_json::to_string(&reg).unwrap(), r#"{"status":"registered","version":"1.0b17"}"#);

    let tok: TokenResponse = serde_json::from_str(r#"{"access_token":"GmyNMMfiQ8nDchP04DFP4pKiWVytc5mUaCTTyA6vSJc","expires_in":3600,"refresh_token":"deSCfVq9YU9p4LcZuP9Yje8k-hOhbmiLyxGL_RUNYEs","worker_id":"raw-worker-1"}"#).unwrap();
    assert_eq!(tok.expires_in, 3600);
    assert_eq!(tok.refresh_token.as_deref(), Some("deSCfVq9YU9p4LcZuP9Yje8k-hOhbmiLyxGL_RUNYEs"));

    let err: ErrorBody = serde_json::from_str(r#"{"error":"Unauthorized: No valid token found"}"#).unwrap();
    assert_eq!(err, ErrorBody::new("Unauthorized: No valid token found"));

    let cmd: WorkerCommand = serde_json::from_str(r#"{"command": "cancel_task", "task_id": "task-247f5bad-c149-4fed-91b8-63ecbe8f9090", "job_id": "019cf37f-a9a3-4e8d-98ac-ca6a9851c00d"}"#).unwrap();
    assert_eq!(
        cmd,
        WorkerCommand::cancel_task("task-247f5bad-c149-4fed-91b8-63ecbe8f9090", "019cf37f-a9a3-4e8d-98ac-ca6a9851c00d")
    );

    let ev: EventResponse = serde_json::from_str(r#"{"status":"error","code":"CONTRACT_VIOLATION_ERROR"}"#).unwrap();
    assert_eq!(ev.status, "error");
    assert_eq!(ev.extra["code"], json!("CONTRACT_VIOLATION_ERROR"));
}

#[test]
fn zero_trust_errors_carry_the_orchestrator_texts() {
    let body = parse(SIGNED_HTTP_BODIES[1]);
    let mut unsigned = body.clone();
    unsigned.as_object_mut().unwrap().remove("security");
    let err = sign::verify_security(&unsigned, TOKEN, "echo-worker-1", MessageKind::Heartbeat).unwrap_err();
    assert_eq!(err, ZeroTrustError::MissingSecurity);
    assert_eq!(err.to_string(), "Missing required security context");
    // no secret configured: unsigned passes
    assert_eq!(sign::verify_security(&unsigned, "", "echo-worker-1", MessageKind::Heartbeat), Ok(()));

    let err = sign::verify_security(&body, TOKEN, "other", MessageKind::Heartbeat).unwrap_err();
    assert_eq!(err.to_string(), "Message signer ID 'echo-worker-1' does not match worker ID 'other'");

    let err = sign::verify_security(&body, "bad", "echo-worker-1", MessageKind::Heartbeat).unwrap_err();
    assert_eq!(err.to_string(), "Invalid cryptographic signature");

    let mut no_sig = body.clone();
    no_sig["security"] = json!({"signer_id": "echo-worker-1"});
    assert_eq!(
        sign::verify_security(&no_sig, TOKEN, "echo-worker-1", MessageKind::Heartbeat),
        Err(ZeroTrustError::MissingSignature)
    );
}

#[test]
fn timestamp_window_and_nonces() {
    use protocol::replay::*;
    use std::time::{Duration, Instant};
    let body = parse(SIGNED_HTTP_BODIES[1]);
    let ts = body["timestamp"].as_i64().unwrap();
    assert_eq!(check_timestamp(&body, ts), Ok(()));
    assert_eq!(check_timestamp(&body, ts + 60), Ok(()));
    assert_eq!(check_timestamp(&body, ts - 60), Ok(()));
    assert_eq!(check_timestamp(&body, ts + 61), Err(ZeroTrustError::TimestampExpired));
    assert_eq!(check_timestamp(&body, ts - 61), Err(ZeroTrustError::TimestampExpired));
    assert_eq!(
        check_timestamp(&json!({"timestamp": 0}), 0).unwrap_err().to_string(),
        "Missing required timestamp for replay protection"
    );
    assert_eq!(check_timestamp(&json!({}), ts), Err(ZeroTrustError::MissingTimestamp));
    assert_eq!(check_timestamp(&json!({"timestamp": 100.9}), 160), Ok(()));
    assert_eq!(check_timestamp(&json!({"timestamp": "100"}), 161), Err(ZeroTrustError::TimestampExpired));

    // nonce: signature when there is no event_id/nonce/message_id
    let sig = body["security"]["signature"].as_str().unwrap();
    assert_eq!(message_nonce(&body).as_deref(), Some(sig));
    assert_eq!(message_nonce(&json!({"nonce": "n", "message_id": "m"})).as_deref(), Some("n"));
    assert_eq!(message_nonce(&json!({"event_id": "", "message_id": "m"})).as_deref(), Some("m"));
    assert_eq!(message_nonce(&json!({})), None);

    let mut cache = NonceCache::default();
    let t0 = Instant::now();
    assert_eq!(cache.check_message("w", &body, t0), Ok(()));
    // Kept for NONCE_TTL (122 s): as long as a message stamped at the window's future edge passes.
    assert_eq!(cache.check_message("w", &body, t0 + Duration::from_secs(121)), Err(ZeroTrustError::Duplicate));
    assert_eq!(cache.check_message("other", &body, t0), Ok(()), "nonces are per worker");
    assert_eq!(cache.check_message("w", &body, t0 + Duration::from_secs(123)), Ok(()), "expired after 122 s");
    cache.prune(t0 + Duration::from_secs(300));
    assert!(cache.is_empty());
}

#[test]
fn identifiers() {
    for ok in ["echo", "echo-worker-1", "a_b", "A", &"x".repeat(128)] {
        assert!(protocol::is_valid_identifier(ok), "{ok}");
    }
    for bad in ["", "a b", "a.b", "a/b", "é", "a\n", &"x".repeat(129)] {
        assert!(!protocol::is_valid_identifier(bad), "{bad:?}");
    }
    assert_eq!(
        protocol::validate_identifier("a b", "WORKER_ID").unwrap_err().to_string(),
        "Invalid WORKER_ID: 'a b'. Must be alphanumeric, underscores, or hyphens only (max 128 characters)."
    );
}

#[test]
fn paths_and_constants() {
    assert_eq!(protocol::PROTOCOL_VERSION, "1.0b17");
    assert_eq!(protocol::heartbeat_path("w1"), "/_worker/workers/w1");
    assert_eq!(protocol::task_next_path("w1"), "/_worker/workers/w1/tasks/next");
    assert_eq!(protocol::ws_path("w1"), "/_worker/ws/w1");
    assert_eq!(protocol::s3_config_hash(Some("http://s3"), Some("ak"), None), None);
    assert_eq!(protocol::s3_config_hash(Some("e"), Some("a"), Some("b")).unwrap().len(), 16);
}
