//! `cargo run --release --example echo_server`: the same blueprint as the Python reference's
//! `echo_orchestrator.py` (start -> dispatch `echo` -> finished | failed), configured from the
//! environment like Avtomatika (API_HOST, API_PORT, CLIENT_TOKEN, GLOBAL_WORKER_TOKEN,
//! ORCHESTRATOR_SECRET_KEY, RATE_LIMITING_ENABLED, ...; `REDIS_URL` or `REDIS_HOST` puts every store in
//! Redis, so several of these processes can serve together). Used by the benchmarks, which also use its
//! `approval_flow` (jobs that wait for a human) to measure memory per waiting job.

use avto::prelude::*;

#[avto::blueprint(name = "echo_flow", api_version = "v1", api_endpoint = "jobs/echo")]
mod echo_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("echo")
            .params(ctx.initial_data.clone())
            .transitions([("success", "finished"), ("failure", "failed")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}

/// Parks every job in `waiting_for_human` (the benchmark's memory-per-waiting-job measurement).
#[avto::blueprint(name = "approval_flow", api_version = "v1", api_endpoint = "jobs/approval")]
mod approval_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.await_human_approval().transitions([("approved", "finished"), ("rejected", "rejected")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "rejected", end = "failed")]
    async fn rejected() {}
}

/// A faster allocator than the system one for a busy multi-threaded server (optional; build with
/// `--features system-alloc` for the system allocator).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> avto::Result<()> {
    avto::serve().await
}
