//! The orchestrator process of the crash test (`tests/multi_instance.rs`): the tests' echo
//! blueprint, everything else (`REDIS_URL`, `REDIS_KEY_PREFIX`, `API_PORT`, tokens, timeouts)
//! from the environment, like `avto::serve()`.

#[tokio::main]
async fn main() {
    let built = avto::Orchestrator::builder()
        .blueprint(avto_tests::blueprints::echo_flow::blueprint())
        .from_env()
        .map_err(avto::server::ServeError::from)
        .and_then(|b| b.build());
    let result = match built {
        Ok(orchestrator) => orchestrator.serve().await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("avto: {e}");
        std::process::exit(1);
    }
}
