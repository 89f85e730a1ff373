//! W3C Trace Context (`traceparent`) carried client → job → task payload → worker → events.
//!
//! The parsing and formatting here work without any OpenTelemetry dependency: without the `otel` feature the
//! trace id still travels end to end (each hop gets a fresh span id), only no spans are exported. With `otel`
//! (and a `tracing-opentelemetry` layer installed, see [`otel`]) the span ids are those of real exported spans.

use serde_json::{Map, Value};

/// A parsed `traceparent`: `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub flags: u8,
}

impl TraceParent {
    /// Parses a W3C `traceparent` header value (version `00`; later versions are read by their first four
    /// fields, as the spec asks). All-zero trace or span ids are invalid.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let mut parts = s.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version == "ff" || !is_lower_hex(version) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        if !is_lower_hex(trace) || !is_lower_hex(span) || !is_lower_hex(flags) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceParent { trace_id, span_id, flags })
    }

    /// A new sampled root context (random trace and span ids).
    pub fn new_root() -> Self {
        TraceParent { trace_id: nonzero128(), span_id: nonzero64(), flags: 1 }
    }

    /// The same trace with a fresh span id (a child hop when no real span exists).
    pub fn child(&self) -> Self {
        TraceParent { span_id: nonzero64(), ..*self }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// Reads `traceparent` from a trace-context map (`{"traceparent": "00-…"}`).
    pub fn from_map(m: &Map<String, Value>) -> Option<Self> {
        m.get("traceparent").and_then(Value::as_str).and_then(Self::parse)
    }

    /// `{"traceparent": "00-…"}`.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("traceparent".into(), Value::String(self.to_string()));
        m
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.flags)
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn nonzero128() -> u128 {
    loop {
        let v: u128 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

fn nonzero64() -> u64 {
    loop {
        let v: u64 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

/// Opens a `tracing` span `name` whose OpenTelemetry parent is `parent`, and returns it with the trace context
/// its children should carry. With `otel` and a `tracing-opentelemetry` layer installed that is the span's own
/// context; otherwise the parent's trace with a fresh span id (`None` when there is no parent: nothing to carry).
pub fn span_with_parent(span: tracing::Span, parent: Option<TraceParent>) -> (tracing::Span, Option<TraceParent>) {
    #[cfg(feature = "otel")]
    {
        if let Some(tp) = otel::attach(&span, parent) {
            return (span, Some(tp));
        }
    }
    (span, parent.map(|p| p.child()))
}

/// The W3C context of the current `tracing` span when OpenTelemetry records it (feature `otel`), else a child hop
/// of `parent` (or `None` without a parent).
pub fn current_context(parent: Option<TraceParent>) -> Option<TraceParent> {
    #[cfg(feature = "otel")]
    {
        if let Some(tp) = otel::current_of(&tracing::Span::current()) {
            return Some(tp);
        }
    }
    parent.map(|p| p.child())
}

/// OpenTelemetry glue (feature `otel`): the OTLP exporter layer and the span ↔ W3C context conversion.
#[cfg(feature = "otel")]
pub mod otel {
    use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _};
    use opentelemetry::{Context, SpanId};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceParent;

    /// The OpenTelemetry context of a remote parent.
    pub fn remote_context(tp: TraceParent) -> Context {
        let sc = SpanContext::new(
            TraceId::from(tp.trace_id),
            SpanId::from(tp.span_id),
            TraceFlags::new(tp.flags),
            true,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(sc)
    }

    /// Sets the span's parent and returns its own context, when a `tracing-opentelemetry` layer records it.
    pub fn attach(span: &tracing::Span, parent: Option<TraceParent>) -> Option<TraceParent> {
        if let Some(p) = parent {
            let _ = span.set_parent(remote_context(p));
        }
        current_of(span)
    }

    /// The span's own W3C context, when it is recorded by OpenTelemetry.
    pub fn current_of(span: &tracing::Span) -> Option<TraceParent> {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if !sc.is_valid() {
            return None;
        }
        Some(TraceParent {
            trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
            flags: sc.trace_flags().to_u8(),
        })
    }

    /// Whether the standard variables ask for an OTLP trace exporter.
    pub fn otlp_configured() -> bool {
        ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
            .iter()
            .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
            && !std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// An OTLP/HTTP (protobuf) tracer provider when `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (the exporter reads the other `OTEL_*` variables itself);
    /// `OTEL_SERVICE_NAME` names the service, else `default_service`. `None` when unset or on error (logged).
    pub fn otlp_provider(default_service: &str) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
        if !otlp_configured() {
            return None;
        }
        let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("OTLP span exporter not installed: {e}");
                return None;
            }
        };
        let service = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| default_service.to_owned());
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        let _ = PROVIDER.set(provider.clone());
        Some(provider)
    }

    static PROVIDER: std::sync::OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = std::sync::OnceLock::new();

    /// Flushes and stops the OTLP exporter installed by [`otlp_provider`] (no-op when none). Blocking.
    pub fn shutdown() {
        if let Some(p) = PROVIDER.get() {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }

    /// The `tracing` layer exporting spans through the provider.
    pub fn layer<S>(
        provider: &opentelemetry_sdk::trace::SdkTracerProvider,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("avto"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(s).unwrap();
        assert_eq!(tp.to_string(), s);
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01").is_none());
        assert!(TraceParent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none());
        assert!(TraceParent::parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none());
        assert!(TraceParent::parse("garbage").is_none());
        let c = tp.child();
        assert_eq!(c.trace_id, tp.trace_id);
        assert_ne!(c.span_id, tp.span_id);
        assert_eq!(TraceParent::from_map(&tp.to_map()), Some(tp));
    }
}
