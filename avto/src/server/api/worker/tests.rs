//! Unit tests of the worker API: task payloads as workers read them, nonces kept while their
//! timestamps are accepted.

use super::*;
use crate::protocol::sign::attach_security;
use crate::storage::{NonceStore, StorageError, Stores};
use futures::future::BoxFuture;
use std::time::Duration;

/// Remembers the lifetime every nonce was stored with.
#[derive(Default)]
struct RecordingNonces(std::sync::Mutex<Vec<Duration>>);

impl NonceStore for RecordingNonces {
    fn first_use<'a>(&'a self, _nonce: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StorageError>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(ttl);
        Box::pin(async { Ok(true) })
    }
}

fn core_with(nonces: Arc<RecordingNonces>) -> Core {
    let stores = Stores { nonces, ..Stores::memory() };
    let data = stores.data.clone();
    let env = crate::engine::EngineEnv::new(Default::default(), std::iter::empty(), data, None).unwrap();
    Core::new(crate::server::Config::default(), env, stores)
}

/// The answer bytes of [`task_payload`], read back.
fn task_value(core: &Core, task: QueuedTask, job: TaskContext) -> Value {
    let bytes = task_payload(core, task, job);
    let value: Value = serde_json::from_slice(&bytes).expect("a task payload is JSON");
    assert_eq!(crate::protocol::canonical::to_canonical_vec(&value), bytes, "written in canonical form");
    value
}

/// The task payload a worker is handed (issue #13 item 4 keeps it byte-compatible): its field
/// set, with and without the optional fields, reads as the wire `TaskPayload`, and its `sig`
/// verifies.
#[tokio::test]
async fn task_payloads_keep_their_fields_and_read_as_wire_task_payloads() {
    use crate::protocol::{canonical::to_canonical_string, sign::verify_task, TaskPayload, TaskSigCheck};
    let core = core_with(Arc::new(RecordingNonces::default()));
    let queued = |params: Value, deadline_ms: Option<u64>| QueuedTask {
        job_id: "j-1".into(),
        task_id: "t-1".into(),
        spec: crate::actions::TaskSpec { params, ..crate::actions::TaskSpec::new("echo") },
        priority: 2.0,
        deadline_ms,
        enqueued_ms: 0,
        seq: 0,
    };
    // Everything but the timestamp and the signature over it.
    let fixed = |mut payload: Value| {
        assert_eq!(verify_task(&payload, &core.config().secret_key), TaskSigCheck::Valid, "{payload}");
        let ts = payload["timestamp"].as_i64().expect("an integer timestamp");
        assert!(ts.abs_diff(unix_now()) <= 5, "{payload}");
        let map = payload.as_object_mut().unwrap();
        map.remove("timestamp");
        assert!(map.remove("sig").is_some_and(|s| s.as_str().is_some_and(|s| s.len() == 64)));
        to_canonical_string(&payload)
    };

    let bare = task_value(&core, queued(json!({"x": 1}), None), TaskContext { step: 1, ..Default::default() });
    let typed: TaskPayload = serde_json::from_value(bare.clone()).expect("reads as the wire TaskPayload");
    assert_eq!((typed.task_type.as_str(), typed.step, typed.priority), ("echo", 1, 2.0));
    assert_eq!(
        fixed(bare),
        r#"{"job_id":"j-1","params":{"x":1},"priority":2,"step":1,"task_id":"t-1","tracing_context":{},"type":"echo"}"#
    );

    let mut tracing_context = Map::new();
    tracing_context.insert("traceparent".into(), json!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    let file = json!({"uri": "s3://b/j-1/x.bin"});
    let job = TaskContext {
        security: Some(json!({"signer_id": "client-1", "identity_chain": ["a"], "custom": {"k": 1}})),
        metadata: Some(json!({"tenant": "t", "n": 1.5})),
        tracing_context,
        step: 7,
        params_metadata: [("x".to_owned(), serde_json::from_value(file).unwrap())].into(),
    };
    let mut versioned = queued(json!({"x": 1}), Some(1_795_690_000_999));
    (versioned.spec.skill_version, versioned.spec.skill_type) = (Some("2.1.0".into()), Some("gpu".into()));
    let full = task_value(&core, versioned, job);
    let typed: TaskPayload = serde_json::from_value(full.clone()).expect("reads as the wire TaskPayload");
    assert_eq!((typed.deadline, typed.step, typed.skill_type.as_deref()), (Some(1_795_690_000.0), 7, Some("gpu")));
    // `sig` covers `params_metadata` (rxon's TaskPayload has it), not the skill fields added after.
    let mut unversioned = full.clone();
    unversioned.as_object_mut().unwrap().retain(|k, _| !k.starts_with("skill_"));
    let sig = full["sig"].as_str().unwrap();
    let ignored = &sign::TASK_SIG_IGNORED_FIELDS;
    assert!(sign::verify_payload(&unversioned, sig, &core.config().secret_key, ignored), "{full}");
    assert_eq!(
        fixed(full),
        concat!(
            r#"{"deadline":1795690000,"job_id":"j-1","metadata":{"n":1.5,"tenant":"t"},"params":{"x":1},"#,
            r#""params_metadata":{"x":{"uri":"s3://b/j-1/x.bin"}},"priority":2,"#,
            r#""security":{"custom":{"k":1},"identity_chain":["a"],"signer_id":"client-1"},"#,
            r#""skill_type":"gpu","skill_version":"2.1.0","step":7,"task_id":"t-1","#,
            r#""tracing_context":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},"type":"echo"}"#
        )
    );

    // Parameters that are not an object (a blueprint may dispatch any value) go out as given,
    // and null ones not at all.
    let odd = task_value(&core, queued(json!([1, 2]), None), TaskContext { step: 1, ..Default::default() });
    assert_eq!(
        fixed(odd),
        r#"{"job_id":"j-1","params":[1,2],"priority":2,"step":1,"task_id":"t-1","tracing_context":{},"type":"echo"}"#
    );
    let none = task_value(&core, queued(Value::Null, None), TaskContext { step: 1, ..Default::default() });
    assert_eq!(
        fixed(none),
        r#"{"job_id":"j-1","priority":2,"step":1,"task_id":"t-1","tracing_context":{},"type":"echo"}"#
    );
}

/// Issue #12 item 7: a message stamped now+55 s, refused when replayed at once, was accepted
/// again 67 s later (its nonce was kept 65 s, its timestamp passes until now+115 s).
#[tokio::test]
async fn a_nonce_is_kept_while_its_timestamp_is_accepted() {
    let nonces = Arc::new(RecordingNonces::default());
    let core = core_with(nonces.clone());
    let sender = Sender { worker_id: "w-1".into(), key: core.config().global_worker_token.clone() };
    let mut body = json!({"worker_id": "w-1", "status": "idle", "nonce": "n-1", "timestamp": unix_now() + 55});
    attach_security(&mut body, &sender.key, &sender.worker_id, MessageKind::Heartbeat);
    verify(&core, &sender, &body, MessageKind::Heartbeat).await.unwrap();
    let ttl = nonces.0.lock().unwrap()[0];
    assert!(ttl >= Duration::from_secs(116), "nonce kept {ttl:?}, its timestamp passes for 115 s more");
}
