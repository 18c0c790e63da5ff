//! One REST call traced end to end across processes, as a collector receives it: the
//! gateway, the user service, the user service's outbox and its publish to Kafka, and the
//! notification service consuming the event, each exporting over OTLP/gRPC to a real
//! `TraceService` receiver (the collector's protocol, served by this test with tonic).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use super::serve;

/// One exported span with its resource's attributes.
#[derive(Clone, Debug)]
struct Exported {
    resource: HashMap<String, String>,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_id: String,
    attributes: HashMap<String, String>,
}

impl Exported {
    fn service(&self) -> &str {
        self.resource.get("service.name").map_or("", String::as_str)
    }

    fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

fn attributes(values: &[KeyValue]) -> HashMap<String, String> {
    values
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A collector's trace endpoint that keeps what it receives.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Exported>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = attributes(
                &resource_spans
                    .resource
                    .map(|r| r.attributes)
                    .unwrap_or_default(),
            );
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    kept.push(Exported {
                        resource: resource.clone(),
                        name: span.name,
                        kind: span.kind,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_id: hex(&span.parent_span_id),
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The spans of `trace` as an indented tree, roots first (for the failure message and
/// the operator's eye).
fn tree(spans: &[Exported]) -> String {
    fn walk(spans: &[Exported], parent: &str, depth: usize, out: &mut String) {
        for span in spans.iter().filter(|s| s.parent_id == parent) {
            out.push_str(&format!(
                "{}{} [{}] {}\n",
                "  ".repeat(depth),
                span.name,
                span.service(),
                kind_name(span.kind)
            ));
            walk(spans, &span.span_id, depth + 1, out);
        }
    }
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut out = String::new();
    for root in spans.iter().filter(|s| !ids.contains(s.parent_id.as_str())) {
        out.push_str(&format!(
            "{} [{}] {}\n",
            root.name,
            root.service(),
            kind_name(root.kind)
        ));
        walk(spans, &root.span_id, 1, &mut out);
    }
    out
}

fn kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        _ => "internal",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_is_one_trace_from_the_gateway_through_kafka_to_every_consumer() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    let collector_task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let data = tempfile::tempdir().unwrap();
    let prefix = format!("trace{}.", uuid_like());
    let shared = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.clone()),
        (
            "DUOVARSITY_KAFKA_BROKERS",
            duovarsity_testkit::kafka_brokers(),
        ),
        ("DUOVARSITY_KAFKA_TOPIC_PREFIX", prefix),
    ];
    let user = serve("user", "user", data.path(), &shared);
    let user_url = user.grpc.clone().expect("the user service announces gRPC");
    let mut with_user = shared.clone();
    with_user.push(("DUOVARSITY_USER_SERVICE_URL", user_url.clone()));
    let notification = serve("notification", "notification", data.path(), &with_user);
    let mut gateway_env = with_user.clone();
    gateway_env.push((
        "DUOVARSITY_NOTIFICATION_SERVICE_URL",
        notification.grpc.clone().unwrap(),
    ));
    let gateway = serve("gateway", "gateway", data.path(), &gateway_env);
    let base = gateway.http.clone().expect("the gateway announces REST");

    let request_id = "trace-test-request-1";
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/auth/register"))
        .header("x-request-id", request_id)
        .json(&serde_json::json!({
            "email": "traced@example.com",
            "password": duovarsity_testkit::TEST_PASSWORD,
            "displayName": "Traced",
        }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert!(status.is_success(), "{}", response.text().await.unwrap());

    // The trace is complete once the notification service's processing span arrived.
    let deadline = Instant::now() + Duration::from_secs(30);
    let trace = loop {
        let spans = receiver.spans.lock().unwrap().clone();
        let root = spans
            .iter()
            .find(|s| s.service() == "gateway" && s.attribute("request_id") == request_id);
        if let Some(root) = root {
            let trace: Vec<Exported> = spans
                .iter()
                .filter(|s| s.trace_id == root.trace_id)
                .cloned()
                .collect();
            if trace
                .iter()
                .any(|s| s.service() == "notification" && s.kind == SpanKind::Consumer as i32)
            {
                // Let the consumer's children arrive too.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let spans = receiver.spans.lock().unwrap().clone();
                break spans
                    .into_iter()
                    .filter(|s| s.trace_id == root.trace_id)
                    .collect::<Vec<_>>();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no complete trace within 30 s; received:\n{}",
            tree(&spans)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let shown = tree(&trace);
    println!("the sign-up's trace:\n{shown}");

    let find = |service: &str, name: &str, kind: SpanKind| -> Exported {
        trace
            .iter()
            .find(|s| s.service() == service && s.name == name && s.kind == kind as i32)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind:?} span {name} from {service} in:\n{shown}"))
    };
    let method = "duovarsity.user.v1.UserService/Register";
    let http = find("gateway", "POST /v1/auth/register", SpanKind::Server);
    assert_eq!(http.parent_id, "", "the REST call starts the trace");
    assert_eq!(http.attribute("http.route"), "/v1/auth/register");
    assert_eq!(http.attribute("http.request.method"), "POST");
    assert_eq!(
        http.attribute("http.response.status_code"),
        status.as_u16().to_string()
    );
    let client = find("gateway", method, SpanKind::Client);
    assert_eq!(client.parent_id, http.span_id);
    assert_eq!(client.attribute("rpc.system"), "grpc");
    assert_eq!(client.attribute("rpc.grpc.status_code"), "0");
    let server = find("user", method, SpanKind::Server);
    assert_eq!(server.parent_id, client.span_id);
    assert_eq!(
        server.attribute("rpc.service"),
        "duovarsity.user.v1.UserService"
    );
    assert_eq!(server.attribute("rpc.method"), "Register");
    assert_eq!(server.attribute("request_id"), request_id);
    let insert = find("user", "INSERT users", SpanKind::Client);
    assert_eq!(insert.attribute("db.system"), "sqlite");
    assert_eq!(insert.attribute("db.operation.name"), "INSERT");
    let outbox = find("user", "INSERT user_outbox", SpanKind::Client);
    let publish = find("user", "publish user.v1", SpanKind::Producer);
    assert_eq!(publish.attribute("messaging.system"), "kafka");
    assert_eq!(publish.attribute("messaging.destination.name"), "user.v1");
    let process = find("notification", "process user.v1", SpanKind::Consumer);
    assert_eq!(
        process.parent_id, publish.span_id,
        "the consumer continues the producer's span from the Kafka headers"
    );
    assert_eq!(process.attribute("messaging.operation.type"), "process");
    // Every span hangs off another span of the trace, under the gateway's.
    let ids: std::collections::HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    for span in &trace {
        assert!(
            span.parent_id.is_empty() || ids.contains(span.parent_id.as_str()),
            "{} has a parent outside the trace:\n{shown}",
            span.name
        );
    }
    for span in [&insert, &outbox, &publish] {
        assert!(
            descends_from(&trace, span, &server.span_id),
            "{} is not under the user service's call:\n{shown}",
            span.name
        );
    }
    // Resources name the component, its version and its pod.
    for (span, service) in [
        (&http, "gateway"),
        (&server, "user"),
        (&process, "notification"),
    ] {
        assert_eq!(span.resource["service.namespace"], "duovarsity");
        assert_eq!(span.resource["service.version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(span.resource["k8s.pod.name"], format!("{service}-0"));
    }

    // Logs written inside a traced call name the trace.
    let logs = std::fs::read_to_string(&user.log).unwrap();
    assert!(
        logs.lines()
            .any(|line| line.contains("call finished") && line.contains(&http.trace_id)),
        "no log line of the user service names trace {}:\n{logs}",
        http.trace_id
    );

    drop((gateway, notification, user));
    collector_task.abort();
}

fn descends_from(trace: &[Exported], span: &Exported, ancestor: &str) -> bool {
    let mut parent = span.parent_id.clone();
    while !parent.is_empty() {
        if parent == ancestor {
            return true;
        }
        parent = trace
            .iter()
            .find(|s| s.span_id == parent)
            .map_or_else(String::new, |s| s.parent_id.clone());
    }
    false
}

/// A run-unique suffix for topic names (runs share the broker).
fn uuid_like() -> String {
    format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
