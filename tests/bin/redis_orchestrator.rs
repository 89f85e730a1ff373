//! The orchestrator process of the crash test (`tests/multi_instance.rs`) and of the shutdown
//! test (`tests/overflow.rs`): the tests' echo blueprint, everything else (`REDIS_URL`,
//! `REDIS_KEY_PREFIX`, `API_PORT`, tokens, timeouts) from the environment, like `avto::serve()`.
//! With `AVTO_TEST_PANICKING_HISTORY=1` its history backend panics on every write, so the
//! history writer dies (a subsystem down while the process serves on).

#[tokio::main]
async fn main() {
    let mut builder = avto::Orchestrator::builder().blueprint(avto_tests::blueprints::echo_flow::blueprint());
    if std::env::var("AVTO_TEST_PANICKING_HISTORY").is_ok_and(|v| v == "1") {
        builder = builder.history(avto_tests::PanickingHistory::new(u32::MAX));
    }
    let built = builder.from_env().map_err(avto::server::ServeError::from).and_then(|b| b.build());
    let result = match built {
        Ok(orchestrator) => orchestrator.serve().await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("avto: {e}");
        std::process::exit(1);
    }
}
