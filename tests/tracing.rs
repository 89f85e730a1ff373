//! End-to-end tracing (recipe 20): a client's W3C `traceparent` → the orchestrator's job and dispatch spans →
//! the task payload's `tracing_context` → the Rust worker's task span (and its events' `trace_context`).
//! Orchestrator and worker run in-process and share one in-memory span exporter.

use std::time::Duration;

use avto::trace::TraceParent;
use avto::worker::{Skill, TaskHandle, TaskOutcome, Worker};
use avto_tests::blueprints::echo_flow;
use avto_tests::{serve_http, Server, CLIENT_TOKEN, SECRET, WORKER_TOKEN};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::{json, Value};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn span_named<'a>(spans: &'a [SpanData], name: &str) -> Option<&'a SpanData> {
    spans.iter().find(|s| s.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_task_span_is_a_child_of_the_dispatch_span_of_the_client_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("avto-tests")))
        .try_init()
        .expect("the test's subscriber is the first");

    let server = Server::start([echo_flow::blueprint()]).await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None::<Option<TraceParent>>));
    let seen2 = seen.clone();
    let worker = Worker::builder()
        .worker_id("trace-worker")
        .token(WORKER_TOKEN)
        .secret_key(SECRET)
        .orchestrator_url(&server.base)
        .configure(|c| {
            c.idle_poll_delay = Duration::from_millis(50);
            c.task_poll_timeout = Duration::from_secs(2);
        })
        .task(Skill::new("echo"), move |p: Value, t: TaskHandle| {
            let seen = seen2.clone();
            async move {
                *seen.lock().unwrap() = Some(t.traceparent());
                t.progress(0.5, "halfway").await;
                TaskOutcome::success(p)
            }
        })
        .build()
        .unwrap();
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run_until(std::future::pending()));
    server.client().wait_workers(&["trace-worker"]).await;

    let r = reqwest::Client::new()
        .post(server.url("/api/v1/jobs/echo"))
        .header("X-Client-Token", CLIENT_TOKEN)
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({"initial_data": {"x": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
    let job = server.client().wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "finished", "{job}");
    stop.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;

    let spans = exporter.get_finished_spans().unwrap();
    let names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
    let client_trace = TraceId::from_hex(CLIENT_TRACE).unwrap();
    let job_span = span_named(&spans, "job").unwrap_or_else(|| panic!("no job span in {names:?}"));
    assert_eq!(job_span.span_context.trace_id(), client_trace);
    assert_eq!(job_span.parent_span_id, SpanId::from_hex(CLIENT_SPAN).unwrap());
    let handler = span_named(&spans, "handler start").unwrap_or_else(|| panic!("no handler span in {names:?}"));
    assert_eq!(handler.span_context.trace_id(), client_trace);
    assert_eq!(handler.parent_span_id, job_span.span_context.span_id());
    let dispatch = span_named(&spans, "dispatch echo").unwrap_or_else(|| panic!("no dispatch span in {names:?}"));
    assert_eq!(dispatch.span_context.trace_id(), client_trace);
    assert_eq!(dispatch.parent_span_id, handler.span_context.span_id());
    let task = span_named(&spans, "task").unwrap_or_else(|| panic!("no worker task span in {names:?}"));
    // The result's handler ("finished") follows the dispatch in the same trace.
    let finished =
        span_named(&spans, "handler finished").unwrap_or_else(|| panic!("no second handler span in {names:?}"));
    assert_eq!(finished.span_context.trace_id(), client_trace);
    assert_eq!(finished.parent_span_id, dispatch.span_context.span_id());
    assert_eq!(task.span_context.trace_id(), client_trace, "the worker span is in the client's trace");
    assert_eq!(task.parent_span_id, dispatch.span_context.span_id(), "the worker span's parent is the dispatch span");

    // The handler saw its own span's context (what its events carry as `trace_context`).
    let tp = seen.lock().unwrap().take().expect("handler ran").expect("task has a traceparent");
    assert_eq!(tp.trace_id_hex(), CLIENT_TRACE);
    assert_eq!(tp.span_id_hex(), task.span_context.span_id().to_string());
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT` unset: no exporter; set: spans are POSTed as OTLP/HTTP protobuf to
/// `<endpoint>/v1/traces`, under `OTEL_SERVICE_NAME`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_exporter_follows_the_standard_variables() {
    use opentelemetry::trace::Tracer as _;
    std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT");
    std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    assert!(avto::trace::otel::otlp_provider("avto-orchestrator").is_none(), "no endpoint, no exporter");

    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String, Vec<u8>)>::new()));
    let got2 = got.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let got = got2.clone();
        async move {
            let path = req.uri().path().to_owned();
            let ct = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap().to_vec();
            got.lock().unwrap().push((path, ct, body));
            ""
        }
    });
    let endpoint = format!("http://{}", serve_http(app).await);
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    std::env::set_var("OTEL_SERVICE_NAME", "avto-otlp-test-service");
    let provider = avto::trace::otel::otlp_provider("avto-orchestrator").expect("exporter installed");
    std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT");
    provider.tracer("avto-tests").in_span("exported-span", |_| {});
    tokio::task::spawn_blocking(move || provider.force_flush()).await.unwrap().unwrap();

    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one export request");
    let (path, ct, body) = &got[0];
    assert_eq!(path, "/v1/traces");
    assert_eq!(ct, "application/x-protobuf");
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"exported-span") && has(b"avto-otlp-test-service"), "span and service name in the protobuf");
}
