//! Worker events and progress (HTTP and WebSocket): only the worker holding a running task of a job
//! reports on it, nothing is written into a job that ended, progress is bounded, and WebSocket
//! frames obey the body limit and the rate limit of `POST /_worker/events`.

use std::time::Duration;

use avto::protocol::sign::MessageKind;
use avto_tests::blueprints::{approval_flow, dispatch_options, echo_flow};
use avto_tests::{test_config_with, RawWorker, Server, WORKER_TOKEN};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(10);

/// A signed event of `w` for `job_id` (and `task_id` when given).
fn event(w: &RawWorker, job_id: &str, task_id: Option<&str>, event_type: &str, payload: Value) -> Value {
    let mut body = json!({"event_id": uuid::Uuid::new_v4().to_string(), "worker_id": w.id, "origin_worker_id": w.id,
                          "event_type": event_type, "payload": payload, "target_job_id": job_id,
                          "bubbling_chain": []});
    if let Some(t) = task_id {
        body["origin_task_id"] = json!(t);
        body["target_task_id"] = json!(t);
    }
    w.signed(body, MessageKind::Event)
}

async fn post_event(w: &RawWorker, body: &Value) -> (u16, Value) {
    w.send(reqwest::Method::POST, "/_worker/events", Some(body)).await
}

async fn stored(s: &Server, id: &str) -> avto::Job {
    s.core.jobs().get(id).await.unwrap().expect("job stored")
}

#[tokio::test]
async fn only_the_worker_holding_a_running_task_reports_on_a_job() {
    let s = Server::start([echo_flow::blueprint(), approval_flow::blueprint(), dispatch_options::blueprint()]).await;
    let c = s.client();
    let holder = RawWorker::new(&s.base, "ev-holder", &["echo"]);
    let other = RawWorker::new(&s.base, "ev-other", &["echo"]);
    assert_eq!(holder.register().await.0, 200);
    assert_eq!(other.register().await.0, 200);
    let progress = json!({"progress": 0.9, "message": "not yours"});

    // A job waiting for a human decision: no task, nobody holds it.
    let waiting = c.create("/api/v1/jobs/approval", json!({})).await;
    c.wait_for(&waiting, &["waiting_for_human"], T).await;
    let (status, body) = post_event(&other, &event(&other, &waiting, None, "progress", progress.clone())).await;
    assert_eq!(status, 403, "{body}");
    // A parked job: its task waits for a skill no worker offers.
    let parked = c.create("/api/v1/jobs/dispatch", json!({"skill": "nobody_has_it"})).await;
    c.wait_for(&parked, &["waiting_for_worker"], T).await;
    let (status, body) = post_event(&other, &event(&other, &parked, None, "progress", progress.clone())).await;
    assert_eq!(status, 403, "{body}");
    for id in [&waiting, &parked] {
        let job = stored(&s, id).await;
        assert_eq!((job.progress, job.state_history.get("progress_updates")), (None, None), "{id}");
    }

    // A running task: its holder may report (on it), anyone else may not.
    let running = c.create("/api/v1/jobs/echo", json!({})).await;
    let (status, task) = holder.poll().await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["job_id"], running.as_str());
    let task_id = task["task_id"].as_str().unwrap();
    let (status, body) =
        post_event(&other, &event(&other, &running, Some(task_id), "progress", progress.clone())).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) =
        post_event(&holder, &event(&holder, &running, Some("task-not-mine"), "progress", progress.clone())).await;
    assert_eq!(status, 403, "another task id: {body}");
    let mine = json!({"progress": 0.5, "message": "halfway"});
    let (status, body) = post_event(&holder, &event(&holder, &running, Some(task_id), "progress", mine)).await;
    assert_eq!((status, body), (200, json!({"status": "event_accepted"})));
    assert_eq!(stored(&s, &running).await.progress_message.as_deref(), Some("halfway"));

    // A finished job takes nothing, not even from the worker that ran its task.
    assert_eq!(holder.succeed(&task, json!({})).await.0, 200);
    let job = c.wait_terminal(&running, T).await;
    assert_eq!(job["status"], "finished", "{job}");
    for (w, tid) in [(&holder, Some(task_id)), (&holder, None), (&other, None)] {
        let (status, body) = post_event(w, &event(w, &running, tid, "progress", progress.clone())).await;
        assert_eq!(status, 409, "{body}");
    }
    let job = stored(&s, &running).await;
    assert_eq!(job.progress_message.as_deref(), Some("halfway"), "the finished job is unchanged");
    assert_eq!(job.state_history["progress_updates"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn progress_is_bounded_in_count_and_size() {
    let cfg = test_config_with(&[("MAX_PROGRESS_UPDATES_PER_JOB", "3"), ("MAX_PROGRESS_MESSAGE_BYTES", "64")]);
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let w = RawWorker::new(&s.base, "ev-bounded", &["echo"]);
    assert_eq!(w.register().await.0, 200);
    let id = s.client().create("/api/v1/jobs/echo", json!({})).await;
    let (_, task) = w.poll().await;
    let task_id = task["task_id"].as_str().unwrap();
    for i in 1..=5 {
        let body = event(
            &w,
            &id,
            Some(task_id),
            "progress",
            json!({"progress": i as f64 / 5.0, "message": format!("step {i}")}),
        );
        assert_eq!(post_event(&w, &body).await.0, 200);
    }
    let job = stored(&s, &id).await;
    let kept: Vec<&str> = job.state_history["progress_updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["message"].as_str().unwrap())
        .collect();
    assert_eq!(kept, ["step 3", "step 4", "step 5"], "the latest 3 are kept");

    let long = event(&w, &id, Some(task_id), "progress", json!({"progress": 1.0, "message": "x".repeat(65)}));
    let (status, body) = post_event(&w, &long).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("payload.message"), "{body}");
    assert_eq!(stored(&s, &id).await.progress_message.as_deref(), Some("step 5"));
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_ws(s: &Server, w: &RawWorker) -> Ws {
    let url = format!("{}/_worker/ws/{}", s.base.replacen("http", "ws", 1), w.id);
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("X-Worker-Token", WORKER_TOKEN.parse().unwrap());
    request.headers_mut().insert("X-Worker-ID", w.id.parse().unwrap());
    let (ws, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(request)).await.unwrap().unwrap();
    ws
}

/// Closes the socket and waits for the server's answer: the server handles a connection's frames
/// in order, so every frame sent before was processed by then.
async fn close_and_drain(mut ws: Ws) {
    ws.send(Message::Close(None)).await.unwrap();
    tokio::time::timeout(T, async { while let Some(Ok(_)) = ws.next().await {} })
        .await
        .expect("the server answers the close");
}

#[tokio::test]
async fn websocket_events_share_the_event_rate_limit() {
    let cfg = test_config_with(&[("RATE_LIMITING_ENABLED", "true"), ("RATE_LIMIT_LIMIT", "5")]);
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let w = RawWorker::new(&s.base, "ev-ws-rate", &["echo"]);
    assert_eq!(w.register().await.0, 200);
    let id = s.client().create("/api/v1/jobs/echo", json!({})).await;
    let (_, task) = w.poll().await;
    let task_id = task["task_id"].as_str().unwrap();
    let mut ws = connect_ws(&s, &w).await;
    for i in 0..20 {
        let body = event(&w, &id, Some(task_id), "progress", json!({"progress": i as f64 / 20.0, "message": "tick"}));
        ws.send(Message::Text(body.to_string().into())).await.unwrap();
    }
    close_and_drain(ws).await;
    let job = stored(&s, &id).await;
    let updates = job.state_history["progress_updates"].as_array().unwrap();
    assert_eq!(updates.len(), 5, "RATE_LIMIT_LIMIT events per period, the rest dropped");
    // The socket and HTTP share one budget.
    let (status, body) = post_event(&w, &event(&w, &id, Some(task_id), "progress", json!({"progress": 1.0}))).await;
    assert_eq!(status, 429, "{body}");
}

#[tokio::test]
async fn websocket_frames_obey_the_body_limit() {
    let cfg = test_config_with(&[("MAX_REQUEST_BODY_BYTES", "4096"), ("MAX_PROGRESS_MESSAGE_BYTES", "100000")]);
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let w = RawWorker::new(&s.base, "ev-ws-size", &["echo"]);
    assert_eq!(w.register().await.0, 200);
    let id = s.client().create("/api/v1/jobs/echo", json!({})).await;
    let (_, task) = w.poll().await;
    let task_id = task["task_id"].as_str().unwrap();

    // Within the limit: processed.
    let mut ws = connect_ws(&s, &w).await;
    let small = event(&w, &id, Some(task_id), "progress", json!({"progress": 0.1, "message": "small"}));
    ws.send(Message::Text(small.to_string().into())).await.unwrap();
    close_and_drain(ws).await;
    assert_eq!(stored(&s, &id).await.progress_message.as_deref(), Some("small"));

    // Beyond it: refused, and the server closes the connection.
    let mut ws = connect_ws(&s, &w).await;
    let big = event(&w, &id, Some(task_id), "progress", json!({"progress": 0.2, "message": "x".repeat(8192)}));
    ws.send(Message::Text(big.to_string().into())).await.unwrap();
    let ended = tokio::time::timeout(T, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server closes a connection whose frame is larger than MAX_REQUEST_BODY_BYTES");
    assert_eq!(stored(&s, &id).await.progress_message.as_deref(), Some("small"), "the large frame was not applied");
}

/// A worker WebSocket is pinged, and one that sends nothing back (not even the pong a WebSocket
/// client answers on its own) for `HTTP_IDLE_TIMEOUT_SECONDS` is closed, so a vanished peer does
/// not hold its connection forever; one that answers stays open. Before, a silent socket stayed
/// open for as long as the TCP connection did.
#[tokio::test]
async fn silent_websockets_are_closed_answering_ones_are_not() {
    let cfg = test_config_with(&[("HTTP_IDLE_TIMEOUT_SECONDS", "1")]);
    let s = Server::with_config([echo_flow::blueprint()], cfg).await;
    let silent_worker = RawWorker::new(&s.base, "ws-silent", &["echo"]);
    let answering_worker = RawWorker::new(&s.base, "ws-answering", &["echo"]);
    assert_eq!(silent_worker.register().await.0, 200);
    assert_eq!(answering_worker.register().await.0, 200);
    let mut silent = connect_ws(&s, &silent_worker).await;
    let mut answering = connect_ws(&s, &answering_worker).await;

    // The answering socket reads (tungstenite answers each ping with a pong while it reads) for
    // three idle timeouts: pinged, never closed.
    let (mut pings, mut closed) = (0, false);
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(msg) = answering.next().await {
            match msg {
                Ok(Message::Ping(_)) => pings += 1,
                Ok(Message::Close(_)) | Err(_) => {
                    closed = true;
                    return;
                }
                Ok(_) => {}
            }
        }
        closed = true;
    })
    .await;
    assert!(!closed, "a socket that answers pings stays open");
    assert!(pings >= 2, "pinged every half idle timeout ({pings} pings in 3 s)");
    close_and_drain(answering).await;

    // The silent socket read nothing meanwhile: the server has closed it.
    let ended = tokio::time::timeout(T, async {
        loop {
            match silent.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server closes a socket that sent nothing for HTTP_IDLE_TIMEOUT_SECONDS");
}
