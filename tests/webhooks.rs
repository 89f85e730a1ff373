//! Job webhooks: retried with backoff (`WEBHOOK_RETRY_BASE_SECONDS`, here 0.1 s) up to 3 attempts; a 4xx other
//! than 429 is not retried; a failing receiver never affects the job.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avto::prelude::*;
use avto_tests::{test_config_with, Server};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

#[avto::blueprint(name = "quick_flow", api_version = "v1", api_endpoint = "jobs/quick")]
mod quick_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("done");
    }

    #[handler(state = "done", end)]
    async fn done() {}
}

/// A receiver answering `statuses[i]` to the i-th call (the last one afterwards); records bodies and times.
#[derive(Clone, Default)]
struct Receiver {
    calls: Arc<Mutex<Vec<(Instant, Value)>>>,
    statuses: Arc<Vec<u16>>,
}

async fn receive(State(r): State<Receiver>, Json(body): Json<Value>) -> StatusCode {
    let mut calls = r.calls.lock().unwrap();
    calls.push((Instant::now(), body));
    let i = (calls.len() - 1).min(r.statuses.len() - 1);
    StatusCode::from_u16(r.statuses[i]).unwrap()
}

async fn receiver(statuses: &[u16]) -> (String, Receiver) {
    let r = Receiver { calls: Default::default(), statuses: Arc::new(statuses.to_vec()) };
    let app = Router::new().route("/hook", post(receive)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, r)
}

async fn server() -> Server {
    Server::with_config([quick_flow::blueprint()], test_config_with(&[("WEBHOOK_RETRY_BASE_SECONDS", "0.1")])).await
}

async fn run_job(s: &Server, url: &str) -> String {
    let (status, body) =
        s.client().post("/api/v1/jobs/quick", &json!({"initial_data": {"n": 1}, "webhook_url": url})).await;
    assert_eq!(status, 202, "{body}");
    let id = body["job_id"].as_str().unwrap().to_owned();
    let job = s.client().wait_terminal(&id, Duration::from_secs(10)).await;
    assert_eq!(job["status"], "finished", "the webhook never affects the job: {job}");
    id
}

async fn calls_after(r: &Receiver, wait: Duration) -> Vec<(Instant, Value)> {
    tokio::time::sleep(wait).await;
    r.calls.lock().unwrap().clone()
}

#[tokio::test]
async fn retried_until_delivered() {
    let s = server().await;
    let (url, r) = receiver(&[500, 500, 200]).await;
    let id = run_job(&s, &url).await;
    let calls = calls_after(&r, Duration::from_millis(1500)).await;
    assert_eq!(calls.len(), 3, "500, 500, then 200: three deliveries");
    for (_, body) in &calls {
        assert_eq!(body["event"], "job_finished");
        assert_eq!(body["job_id"], id.as_str());
        assert_eq!(body["status"], "finished");
    }
    // Backoff: 0.1 s, then 0.2 s.
    assert!(calls[1].0 - calls[0].0 >= Duration::from_millis(90), "first retry after the base delay");
    assert!(calls[2].0 - calls[1].0 >= Duration::from_millis(190), "second retry after twice the base delay");
    assert_eq!(s.client().job(&id).await["status"], "finished");
}

#[tokio::test]
async fn always_failing_receiver_gets_three_attempts() {
    let s = server().await;
    let (url, r) = receiver(&[503]).await;
    run_job(&s, &url).await;
    let calls = calls_after(&r, Duration::from_millis(2000)).await;
    assert_eq!(calls.len(), 3, "exactly 3 attempts");
}

#[tokio::test]
async fn too_many_requests_is_retried_other_client_errors_are_not() {
    let s = server().await;
    let (url, r) = receiver(&[404]).await;
    run_job(&s, &url).await;
    let calls = calls_after(&r, Duration::from_millis(1000)).await;
    assert_eq!(calls.len(), 1, "a 4xx is not retried");

    let (url, r) = receiver(&[429, 200]).await;
    run_job(&s, &url).await;
    let calls = calls_after(&r, Duration::from_millis(1000)).await;
    assert_eq!(calls.len(), 2, "429 is retried");
}

#[tokio::test]
async fn unreachable_receiver_does_not_affect_the_job() {
    let s = server().await;
    // A port with nothing listening: connection refused on every attempt.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    drop(l);
    run_job(&s, &url).await;
    let id = run_job(&s, &url).await;
    assert_eq!(s.client().job(&id).await["status"], "finished");
}
