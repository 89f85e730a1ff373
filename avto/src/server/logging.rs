//! The orchestrator's log lines: JSON or text (`LOG_FORMAT`), filtered by `LOG_LEVEL` (or
//! `RUST_LOG`), each stamped with the time in `TZ` (RFC 3339 with milliseconds and the zone's
//! offset, `Z` for UTC), as Avtomatika stamps its `asctime`.

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

use super::Config;

/// Log timestamps in a time zone: `2024-03-01T14:05:09.123+05:30` (`Z` for UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTime(pub chrono_tz::Tz);

impl FormatTime for LogTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let now = chrono::Utc::now().with_timezone(&self.0);
        w.write_str(&now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }
}

/// The layer that writes the log lines to `writer`: JSON or text (`LOG_FORMAT`), filtered by
/// `RUST_LOG` when set, else `LOG_LEVEL`, stamped in `TZ` ([`LogTime`]).
pub fn log_layer<S, W>(cfg: &Config, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log_level));
    let layer = tracing_subscriber::fmt::layer().with_timer(LogTime(cfg.tz)).with_writer(writer);
    if cfg.log_format == "json" {
        layer.json().with_filter(filter).boxed()
    } else {
        layer.with_filter(filter).boxed()
    }
}

/// Installs the tracing subscriber ([`log_layer`] on stdout, and with the `otel` feature the
/// OTLP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set); does nothing if one is set.
pub fn init_logging(cfg: &Config) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    #[cfg(feature = "otel")]
    if let Some(provider) = crate::trace::otel::otlp_provider("avto-orchestrator") {
        let _ = tracing_subscriber::registry()
            .with(crate::trace::otel::layer(&provider))
            .with(log_layer(cfg, std::io::stdout))
            .try_init();
        return;
    }
    let _ = tracing_subscriber::registry().with(log_layer(cfg, std::io::stdout)).try_init();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(vars: &[(&str, &str)]) -> String {
        let lookup = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        let cfg = Config::from_lookup(&lookup).unwrap();
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::registry().with(log_layer(&cfg, move || out.clone()));
        tracing::subscriber::with_default(subscriber, || tracing::error!(answer = 42, "hello"));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        // Without the colours of a terminal (ESC [ ... m).
        let mut plain = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                chars.by_ref().find(|c| *c == 'm');
            } else {
                plain.push(c);
            }
        }
        plain
    }

    /// Issue #16 item 7 (spec §10.1, item 96): log timestamps are in `TZ`, JSON and text.
    #[test]
    fn log_timestamps_are_in_tz() {
        // Asia/Kolkata has been +05:30 all year since 1945.
        let json = logged(&[("TZ", "Asia/Kolkata"), ("LOG_FORMAT", "json")]);
        let line: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json}"));
        let ts = line["timestamp"].as_str().unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(ts).unwrap();
        assert_eq!(parsed.offset().local_minus_utc(), 5 * 3600 + 1800, "{ts}");
        assert_eq!(ts.len(), "2024-03-01T14:05:09.123+05:30".len(), "milliseconds: {ts}");
        assert!((chrono::Utc::now() - parsed.with_timezone(&chrono::Utc)).num_seconds().abs() < 60, "{ts}");
        assert_eq!(line["fields"]["message"], "hello");

        let text = logged(&[("TZ", "Asia/Kolkata"), ("LOG_FORMAT", "text")]);
        let first = text.split_whitespace().next().unwrap();
        assert!(first.ends_with("+05:30"), "{text}");
        assert!(text.contains("hello"), "{text}");

        let utc = logged(&[("LOG_FORMAT", "text")]);
        assert!(utc.split_whitespace().next().unwrap().ends_with('Z'), "UTC by default: {utc}");
    }
}
