//! `cargo run --example cookbook`: an orchestrator serving every cookbook recipe blueprint
//! (configuration from the environment; workers connect over RXON, e.g. the Python SDK or
//! `cargo run --example echo_worker`).

#[tokio::main]
async fn main() -> avto::Result<()> {
    avto::Orchestrator::builder().blueprints(avto_examples::all()).from_env()?.build()?.serve().await
}
