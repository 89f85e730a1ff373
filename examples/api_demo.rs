//! `cargo run --example api_demo`: an orchestrator serving the demo blueprints of
//! `examples/demo/api_demo.rs` (an input contract, approvals, an untyped one), configured from the
//! environment (API_HOST, API_PORT, CLIENT_TOKEN, ADMIN_TOKEN, ...). Its API document is at
//! `/_public/openapi.json`, rendered at `/_public/docs`; `.ci/schemathesis.sh` fuzzes it.

#[tokio::main]
async fn main() -> avto::Result<()> {
    avto::server::Orchestrator::builder().blueprints(avto_examples::api_demo::all()).from_env()?.build()?.serve().await
}
