//! `cargo run --example quickstart`: an orchestrator on 127.0.0.1:8080 (in-memory storage, no
//! external services) with an embedded demo worker. Every setting can be overridden by its
//! environment variable (README, "Running an orchestrator").

use avto::prelude::*;
use avto::server::config::Config;
use avto::worker::{TaskHandle, TaskOutcome, Worker};

/// start -> greet (a worker task) -> finished | failed
#[avto::blueprint(name = "hello_flow", api_version = "v1", api_endpoint = "jobs/hello")]
mod hello {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("greet")
            .params(ctx.initial_data.clone())
            .transitions([("success", "finished"), ("failure", "failed")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}

/// The demo worker's one skill.
async fn greet(params: serde_json::Value, task: TaskHandle) -> TaskOutcome {
    task.progress(0.5, "composing a greeting").await;
    TaskOutcome::success(json!({ "greeting": format!("Hello, {}!", params["name"].as_str().unwrap_or("world")) }))
}

#[tokio::main]
async fn main() -> avto::Result<()> {
    let config = Config::builder()
        .api_host("127.0.0.1")
        .api_port(8080)
        .client_token("quickstart-token")
        .log_format("text")
        .history_database_uri("sqlite:avto-quickstart-history.db")
        .from_env()
        .build()?;
    let base = format!("http://{}:{}", config.host, config.port);
    println!("avto quickstart on {base}: try\n  curl -s -X POST {base}/api/v1/jobs/hello -H 'X-Client-Token: {}' -d '{{\"initial_data\": {{\"name\": \"Ada\"}}}}'", config.clients[0].token);
    println!("  then GET {base}/api/v1/jobs/<job_id> and /history with the same header; Ctrl-C stops.");
    // The dashboard (feature `dashboard`), signed in as the demo client: the link carries the
    // token once, the page then keeps an HttpOnly session cookie and drops it from the URL.
    println!("dashboard: {base}/ui/login?token={}", config.clients[0].token);
    avto::Orchestrator::builder()
        .blueprint(hello::blueprint())
        .config(config)
        .worker(Worker::builder().worker_id("demo-worker").task("greet", greet))
        .build()?
        .serve()
        .await
}
