//! `cargo run --example cookbook`: an orchestrator serving every cookbook recipe blueprint
//! (configuration from the environment; workers connect over RXON, e.g. the Python SDK or
//! `cargo run --example echo_worker`).

/// A faster allocator than the system one for a busy multi-threaded server (optional).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> avto::Result<()> {
    avto::Orchestrator::builder().blueprints(avto_examples::all()).from_env()?.build()?.serve().await
}
