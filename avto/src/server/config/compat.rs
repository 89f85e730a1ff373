//! Avtomatika's variables (spec §7.1) that avto does not read, and what setting one does:
//! start-up fails for one whose intent avto cannot honour, and a warning is logged at start-up
//! for one that changes nothing here, so none is ever ignored silently. An empty value counts as
//! unset (Avtomatika's defaults are empty strings).

/// What setting a variable avto does not read does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRead {
    /// Start-up fails: the operator expects something avto cannot do, and would otherwise find
    /// out from failing requests.
    Refused,
    /// A warning at start-up: nothing avto does depends on it.
    Ignored,
}

/// Each variable, what setting it does, and why avto does not need it.
pub const NOT_READ: &[(&str, NotRead, &str)] = &[
    (
        "BLUEPRINTS_DIR",
        NotRead::Refused,
        "avto does not load blueprints from a directory: they are compiled into the binary \
         (#[avto::blueprint]; avto::serve() serves every blueprint of the binary, \
         Orchestrator::builder().blueprint(..) names them), which is how their graphs are checked by the compiler. \
         Build the blueprints of that directory into the program and unset BLUEPRINTS_DIR",
    ),
    (
        "REDIS_STREAM_BLOCK_MS",
        NotRead::Ignored,
        "avto has no job stream to block on: a job is driven when it changes, and instances wake \
         each other over Redis pub/sub",
    ),
    (
        "POSTGRES_DSN",
        NotRead::Ignored,
        "Avtomatika does not use it either; the history database is HISTORY_DATABASE_URI",
    ),
    (
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        NotRead::Ignored,
        "avto does not push metrics: Prometheus scrapes GET /metrics (with ADMIN_TOKEN); \
         OpenTelemetry carries traces only (OTEL_EXPORTER_OTLP_ENDPOINT, feature `otel`)",
    ),
];

/// The set variables of [`NOT_READ`]: `Err` with the first refused one, else the warnings to log.
pub(super) fn check(get: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    for (name, what, why) in NOT_READ {
        if get(name).is_none_or(|v| v.trim().is_empty()) {
            continue;
        }
        match what {
            NotRead::Refused => return Err(format!("{name} is set, but {why}")),
            NotRead::Ignored => warnings.push(format!("{name} is set but not read by avto: {why}")),
        }
    }
    Ok(warnings)
}
