//! `cargo run --example quickstart`: an orchestrator on 127.0.0.1:8080 (in-memory storage, no
//! external services) with an embedded demo worker, and a curl command to try it.
//!
//! Everything is configured like a real deployment (environment variables, see the README);
//! the quickstart only fills in development defaults.

use std::time::Duration;

use avto::prelude::*;
use avto::server::config::Config;
use avto::worker::{TaskHandle, TaskOutcome, Worker};
use avto::Orchestrator;
use serde_json::Value;

const CLIENT_TOKEN: &str = "quickstart-token";
const WORKER_TOKEN: &str = "quickstart-worker-token";
const SECRET: &str = "quickstart-secret";

/// start -> greet (a worker task) -> finished | failed
#[avto::blueprint(name = "hello_flow", api_version = "v1", api_endpoint = "jobs/hello")]
mod hello {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("greet")
            .params(ctx.initial_data.clone())
            .timeout(Duration::from_secs(30))
            .transitions([("success", "finished"), ("failure", "failed")]);
    }

    #[handler(state = "finished", end)]
    async fn finished(ctx: &Context) {
        tracing::info!(job_id = %ctx.job_id, greeting = %ctx.history("greeting"), "hello_flow finished");
    }

    #[handler(state = "failed", end)]
    async fn failed(ctx: &Context) {
        tracing::warn!(job_id = %ctx.job_id, error = ?ctx.last_error, "hello_flow failed");
    }
}

/// The demo worker's one skill.
async fn greet(params: Value, task: TaskHandle) -> TaskOutcome {
    let name = params["name"].as_str().unwrap_or("world").to_owned();
    task.progress(0.5, "composing a greeting").await;
    TaskOutcome::success(serde_json::json!({ "greeting": format!("Hello, {name}!") }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let defaults = [
        ("API_HOST", "127.0.0.1"),
        ("API_PORT", "8080"),
        ("CLIENT_TOKEN", CLIENT_TOKEN),
        ("GLOBAL_WORKER_TOKEN", WORKER_TOKEN),
        ("ORCHESTRATOR_SECRET_KEY", SECRET),
        ("LOG_FORMAT", "text"),
        ("LOG_LEVEL", "info"),
        // Execution history in a local SQLite file (GET /api/v1/jobs/{id}/history).
        ("HISTORY_DATABASE_URI", "sqlite:avto-quickstart-history.db"),
    ];
    let config = Config::from_lookup(&|k| {
        std::env::var(k).ok().or_else(|| defaults.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    })?;
    avto::server::init_logging(&config);
    let addr = std::net::SocketAddr::new(config.host, config.port);
    let base = format!("http://{addr}");
    let client_token = config.clients[0].token.clone();

    let orchestrator = Orchestrator::builder().blueprint(hello::blueprint()).config(config).build()?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(orchestrator.listen(listener, async move {
        let _ = server_stop.changed().await;
    }));

    let worker = Worker::builder()
        .worker_id("demo-worker")
        .worker_type("quickstart-demo")
        .orchestrator_url(base.clone())
        .token(WORKER_TOKEN)
        .secret_key(SECRET)
        .enable_websockets(true)
        .heartbeat_interval(Duration::from_secs(5))
        .task("greet", greet)
        .build()?;
    let mut worker_stop = stop_rx.clone();
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = worker_stop.changed().await;
    }));

    println!();
    println!("avto quickstart: orchestrator on {base} with an embedded demo worker (in-memory storage)");
    println!("Create a job and read it back:");
    println!();
    println!(
        "  JOB=$(curl -s -X POST {base}/api/v1/jobs/hello -H 'X-Client-Token: {client_token}' \\\n      -d '{{\"initial_data\": {{\"name\": \"Ada\"}}}}' | sed -E 's/.*\"job_id\":\"([^\"]+)\".*/\\1/') \\\n    && sleep 0.3 && curl -s {base}/api/v1/jobs/$JOB -H 'X-Client-Token: {client_token}'"
    );
    println!();
    println!("Its history (SQLite file avto-quickstart-history.db):");
    println!("  curl -s {base}/api/v1/jobs/$JOB/history -H 'X-Client-Token: {client_token}'");
    println!();
    println!("Also: GET {base}/api/v1/blueprints/hello_flow/graph (DOT), GET {base}/api/v1/workers, GET {base}/metrics (with ADMIN_TOKEN set, `Authorization: Bearer $ADMIN_TOKEN`), Ctrl-C to stop.");
    println!();

    // Ctrl-C or SIGTERM (a process manager, `kill`): the worker and the server drain, then exit.
    avto::server::shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    Ok(())
}
