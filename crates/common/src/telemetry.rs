//! Logs, traces and metrics for every binary.
//!
//! - Logs: `tracing`, filtered by `RUST_LOG` (default `info`), human-readable on a terminal
//!   and JSON lines otherwise (or as `log_format` says).
//! - Traces: spans carry OpenTelemetry context, so W3C `traceparent` headers received by a
//!   server continue the caller's trace and outgoing calls carry it on. Spans are exported
//!   over OTLP/gRPC only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! - Metrics: the `metrics` facade with a Prometheus recorder, rendered at `/metrics`.
//!
//! Resource attributes name the component (`service.name`: `gateway`, `user`, ... or
//! `duovarsity` for the all-in-one process), `service.namespace`, `service.version`,
//! `service.instance.id`, and the pod (`k8s.pod.name`, `k8s.namespace.name` from the
//! `POD_NAME` and `POD_NAMESPACE` variables the chart sets); `OTEL_RESOURCE_ATTRIBUTES`
//! adds more. Span names and attributes follow the semantic conventions ([`spans`]).
//!
//! Initialisation is idempotent: the first call in a process wins, later calls (tests that
//! start several platforms) reuse it.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub mod spans;

/// Keeps the trace exporter alive; dropping it flushes pending spans.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Installs logging, tracing and the metrics recorder for `service_name`.
pub fn init(service_name: &'static str, format: LogFormat) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let _ = metrics_handle();

    let mut builder = SdkTracerProvider::builder().with_resource(resource(service_name));
    let exporting = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    if exporting {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(error) => eprintln!("OTLP exporter disabled: {error}"),
        }
    }
    let provider = builder.build();
    let tracer = provider.tracer(service_name);

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn,hyper=warn,opentelemetry=warn")
    });
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .compact()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()
        .is_ok();
    if installed {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    TelemetryGuard {
        provider: installed.then_some(provider),
    }
}

/// What every span of this process says about where it comes from.
fn resource(service_name: &'static str) -> opentelemetry_sdk::Resource {
    use opentelemetry::KeyValue;
    let mut attributes = vec![
        KeyValue::new("service.namespace", "duovarsity"),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", uuid::Uuid::now_v7().to_string()),
    ];
    for (variable, key) in [
        ("POD_NAME", "k8s.pod.name"),
        ("POD_NAMESPACE", "k8s.namespace.name"),
        ("NODE_NAME", "k8s.node.name"),
    ] {
        if let Ok(value) = std::env::var(variable)
            && !value.is_empty()
        {
            attributes.push(KeyValue::new(key, value));
        }
    }
    opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name)
        .with_attributes(attributes)
        .build()
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder is installed; then ours just renders nothing.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Renders `/metrics` in the Prometheus text format.
pub fn render_metrics() -> String {
    metrics_handle().render()
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes `span` a child of the trace named by the `traceparent` header, if any.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(parent);
}

/// Writes the current span's trace context as a `traceparent` header.
pub fn inject_trace(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let context = span.context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}
