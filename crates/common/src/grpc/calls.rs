//! A span and metrics per call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};

use super::onward::{Deadline, parse_grpc_timeout};
use crate::telemetry;

/// A span and metrics per call: `grpc_server_handled_total{method,code}` and
/// `grpc_server_handling_seconds{method}`.
#[derive(Clone, Copy)]
pub struct CallTelemetryLayer;

impl<S> Layer<S> for CallTelemetryLayer {
    type Service = CallTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallTelemetry { inner }
    }
}

#[derive(Clone)]
pub struct CallTelemetry<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for CallTelemetry<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(left) = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| parse_grpc_timeout(value.as_bytes()))
        {
            request
                .extensions_mut()
                .insert(Deadline(Instant::now() + left));
        }
        let method = request.uri().path().to_string();
        let span = telemetry::spans::grpc_server(&request);
        let started = Instant::now();
        let future = {
            let _entered = span.enter();
            // One admission to the database pools per call (crate::db::admission).
            crate::db::admission::request(self.inner.call(request))
        };
        Box::pin(tracing::Instrument::instrument(
            async move {
                let result = future.await;
                // Unary errors are trailers-only responses, so the status is in the headers.
                let code = match &result {
                    Ok(response) => telemetry::spans::grpc_status_of(response),
                    Err(_) => tonic::Code::Unknown,
                };
                telemetry::spans::record_grpc_status(&tracing::Span::current(), code, true);
                let elapsed = started.elapsed();
                metrics::counter!("grpc_server_handled_total", "method" => method.clone(), "code" => format!("{code:?}")).increment(1);
                metrics::histogram!("grpc_server_handling_seconds", "method" => method)
                    .record(elapsed.as_secs_f64());
                tracing::debug!(
                    ?code,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "call finished"
                );
                result
            },
            span,
        ))
    }
}
