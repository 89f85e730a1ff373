//! `avto::client::Client` against a real orchestrator (`avto::testing::TestServer`): every
//! method, the error answers (404, 401, 400, 409), a bounded wait, transport errors.

use std::time::{Duration, Instant};

use avto::client::{Client, ClientError, NewJob, Page, StatusCode};
use avto::testing::TestServer;
use avto::worker::{TaskHandle, TaskOutcome};
use avto::JobStatus;
use avto_tests::blueprints::{approval_flow, echo_flow, review_flow};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

async fn server() -> TestServer {
    TestServer::builder()
        .blueprints([echo_flow::blueprint(), approval_flow::blueprint(), review_flow::blueprint()])
        .config(|c| c.history_database_uri = Some("memory:".into()))
        .worker("echo", |params: Value, _task: TaskHandle| async move { TaskOutcome::success(json!({"echo": params})) })
        .start()
        .await
        .expect("the test server starts")
}

#[tokio::test]
async fn create_get_wait_list_and_history() {
    let s = server().await;
    let c = s.client();

    // create by endpoint, by blueprint, with options
    let a = c.create("jobs/echo", json!({"n": 1})).await.unwrap();
    let job = c.wait(&a, T).await.unwrap();
    assert_eq!(
        (job.status, job.blueprint.as_str(), job.current_state.as_str()),
        (JobStatus::Finished, "echo_flow", "finished")
    );
    assert_eq!(job.result, Some(json!({"n": 1})), "{:?}", job.raw);
    assert_eq!(job.raw["initial_data"], json!({"n": 1}), "detailed document");
    let b = c.create(echo_flow::blueprint(), json!({"n": 2})).await.unwrap();
    let opts = NewJob::new(json!({"n": 3}))
        .metadata(json!({"order": 7}))
        .dispatch_timeout(Duration::from_secs(30))
        .traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    let d = c.create_job("/api/v1/jobs/echo", &opts).await.unwrap();
    assert_eq!(c.wait(&b, T).await.unwrap().result, Some(json!({"n": 2})));
    let job = c.wait(&d, T).await.unwrap();
    assert_eq!(job.raw["metadata"], json!({"order": 7}));
    assert_ne!(a, b);

    // list: newest first, paged
    let all = c.list(Page::new(10, 0)).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [d.as_str(), b.as_str(), a.as_str()]);
    let second = c.list(Page::new(1, 1)).await.unwrap();
    assert_eq!(second.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [b.as_str()]);
    assert!(c.list(Page::new(5, 3)).await.unwrap().is_empty());
    let detailed = c.list(Page::new(1, 0).detailed(true)).await.unwrap();
    assert_eq!(detailed[0].raw["metadata"], json!({"order": 7}));
    assert!(all[0].raw.get("metadata").is_none(), "compact documents by default");

    // history (the orchestrator keeps it in memory here)
    let rows = c.history(&a).await.unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.raw["job_id"] == a.as_str()));
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    assert!(types.contains(&"task_finished") || types.iter().any(|t| t.starts_with("task")), "{types:?}");
    assert!(rows.iter().any(|r| r.worker_id.as_deref() == Some("echo-worker")), "{rows:?}");

    // raw: any route, any status
    let (status, body) = c.raw(reqwest::Method::GET, "/_public/status", None).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");

    // the same calls through a reqwest client given to it
    let r = c.clone().with_http(reqwest::Client::new());
    let e = r.create_job("jobs/echo", &opts).await.unwrap();
    assert_eq!(r.wait(&e, T).await.unwrap().raw["metadata"], json!({"order": 7}));
    assert_eq!(r.list(Page::new(1, 0)).await.unwrap()[0].id.as_str(), e.as_str());
    assert!(!r.history(&e).await.unwrap().is_empty());
    let unknown = "00000000-0000-4000-8000-000000000000";
    assert_eq!(r.get(unknown).await.unwrap_err().status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(c.get(unknown).await.unwrap_err().status(), Some(StatusCode::NOT_FOUND));
}

#[tokio::test]
async fn approve_and_cancel() {
    let s = server().await;
    let c = s.client();
    let waiting = |j: &avto::client::JobView| j.status == JobStatus::WaitingForHuman;

    let yes = c.create("jobs/approval", json!({})).await.unwrap();
    c.wait_until(&yes, T, "the approval", waiting).await.unwrap();
    c.approve(&yes, "approved").await.unwrap();
    let job = c.wait(&yes, T).await.unwrap();
    assert_eq!((job.status, job.current_state.as_str()), (JobStatus::Finished, "approved"));

    // approving a job that waits for nothing: 409 with the server's reason
    let e = c.approve(&yes, "approved").await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::CONFLICT), "{e}");
    assert!(
        matches!(&e, ClientError::Api { message, .. } if message.contains("cannot be approved") || message.contains("not in a state")),
        "{e}"
    );

    let no = c.create("jobs/approval", json!({})).await.unwrap();
    c.wait_until(&no, T, "the approval", waiting).await.unwrap();
    c.cancel(&no).await.unwrap();
    assert_eq!(c.wait(&no, T).await.unwrap().status, JobStatus::Cancelled);
}

#[tokio::test]
async fn errors_are_typed() {
    let s = server().await;
    let c = s.client();

    // 404: an unknown job, the server's JSON error body kept; 400: not a job id at all
    let unknown = uuid::Uuid::new_v4().to_string();
    let e = c.get("no-such-job").await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "{e}");
    assert!(e.to_string().contains("expected a UUID"), "{e}");
    let e = c.get(&unknown).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let message = e.body().unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.starts_with("Job not found"), "{message}");
    assert!(matches!(&e, ClientError::Api { message: m, .. } if *m == message));
    assert!(c.cancel(&unknown).await.unwrap_err().is_not_found());
    assert!(c.history(&unknown).await.unwrap_err().is_not_found());
    // 404: an endpoint no blueprint has
    assert!(c.create("jobs/nothing", json!({})).await.unwrap_err().is_not_found());

    // 401: a token the orchestrator does not know; another client's job is a 404
    let id = c.create("jobs/echo", json!({})).await.unwrap();
    let stranger = c.with_token("not-a-client-token");
    let e = stranger.get(&id).await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::UNAUTHORIZED), "{e}");
    assert!(e.body().unwrap()["error"].is_string());
    assert_eq!(stranger.create("jobs/echo", json!({})).await.unwrap_err().status(), Some(StatusCode::UNAUTHORIZED));

    // 400: bad input, with the server's message
    let e = c.create_job("jobs/echo", &NewJob::new(json!({})).dispatch_timeout(Duration::ZERO)).await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "{e}");
    assert!(e.to_string().contains("dispatch_timeout"), "{e}");
    let e = c.create_job("jobs/echo", &NewJob::new(json!({})).webhook_url("ftp://x")).await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "{e}");
    let waiting = c.create("jobs/approval", json!({})).await.unwrap();
    let e = c.approve(&waiting, "").await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "{e}");

    // refused before any request
    assert!(matches!(c.create("jobs/echo", json!([1])).await, Err(ClientError::Invalid(_))));
    assert!(matches!(c.get("").await, Err(ClientError::Invalid(_))));

    // files without a file store: 501
    let e = c.upload(&id, "a.txt", "x").await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::NOT_IMPLEMENTED), "{e}");
    assert_eq!(e.body().unwrap()["error"], "S3 support is not enabled");
    assert_eq!(c.upload_url(&id, "a.txt", None).await.unwrap_err().status(), Some(StatusCode::NOT_IMPLEMENTED));
    assert_eq!(c.download_url(&id, "a.txt").await.unwrap_err().status(), Some(StatusCode::NOT_IMPLEMENTED));
}

/// A wait has an end: a job no worker can take times out after the given time, with the job as
/// last seen.
#[tokio::test]
async fn waits_are_bounded() {
    let s = server().await;
    let c = s.client();
    let id = c.create("jobs/review", json!({})).await.unwrap(); // `classify`: no worker has it
    let started = Instant::now();
    let e = c.wait(&id, Duration::from_millis(400)).await.unwrap_err();
    let took = started.elapsed();
    assert!(e.is_timeout(), "{e}");
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(3), "{took:?}");
    match e {
        ClientError::Timeout { job_id, last: Some(last), .. } => {
            assert_eq!(job_id, id);
            assert_eq!(last.status, JobStatus::WaitingForWorker);
        }
        other => panic!("{other}"),
    }
}

/// A request that gets no answer is a transport error, within the request timeout, through the
/// client's own transport for `http://` and through a `reqwest::Client` given to it.
#[tokio::test]
async fn transport_errors() {
    use std::error::Error as _;
    let port = avto_tests::free_port();
    let c = Client::new(format!("http://127.0.0.1:{port}"), "t").request_timeout(Duration::from_secs(2));
    let e = c.get("job").await.unwrap_err();
    match &e {
        ClientError::Transport { source, .. } => assert!(source.is_connect() && !source.is_timeout(), "{source:?}"),
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("refused"), "says what failed: {e}");
    let via_reqwest = c.clone().with_http(reqwest::Client::new());
    let e = via_reqwest.get("job").await.unwrap_err();
    let cause = e.source().and_then(|s| s.source()).and_then(|s| s.downcast_ref::<reqwest::Error>());
    assert!(cause.is_some_and(reqwest::Error::is_connect), "reqwest's error under it: {e:?}");
    // a wait retries a refused connection until its own end
    let started = Instant::now();
    let e = c.wait("job", Duration::from_millis(300)).await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300), "retried until the deadline");
    assert!(matches!(e, ClientError::Transport { .. } | ClientError::Timeout { .. }), "{e}");

    // a server that accepts and never answers: the request timeout ends the call
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = Client::new(format!("http://{}", listener.local_addr().unwrap()), "t")
        .request_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let e = silent.get("job").await.unwrap_err();
    assert!(matches!(&e, ClientError::Transport { source, .. } if source.is_timeout()), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let started = Instant::now();
    let e = silent.clone().with_http(reqwest::Client::new()).get("job").await.unwrap_err();
    assert!(matches!(&e, ClientError::Transport { source, .. } if source.is_timeout()), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(listener);
}
