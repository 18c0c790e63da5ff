//! The gateway's listener: HTTP/1.1 (with WebSocket upgrades) and HTTP/2 on one port,
//! with the connection hygiene an edge needs against slow or greedy clients:
//!
//! - a client must send a request's headers within `header_read_timeout`, or the
//!   connection is closed (Slowloris: many connections that trickle a header never end);
//!   the same timer closes a keep-alive connection that stays idle that long; both are
//!   counted in `http_read_timeouts_total{phase="headers"}` (a body that trickles is the
//!   request handler's to time out: `phase="body"`);
//! - at most `max_connections` are open at once; past it a new connection is closed at
//!   once and counted in `http_connections_refused_total` (file descriptors are finite,
//!   and the ones in use keep being served);
//! - HTTP/2 connections carry at most `http2_max_streams` concurrent streams and are
//!   pinged, so a dead peer's connection does not linger;
//! - on shutdown, listening stops, every connection finishes its in-flight requests
//!   (HTTP/2 with GOAWAY) and is closed, for at most the grace period.
//!
//! `http_connections_open` gauges the connections in use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// Limits of the listener (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub http2_max_streams: u32,
}

/// Counts a connection in `http_connections_open` while it lives.
struct Open;

impl Open {
    fn new() -> Self {
        metrics::gauge!("http_connections_open").increment(1.0);
        Self
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!("http_connections_open").decrement(1.0);
    }
}

/// Serves `router` on `listener` until `shutdown`, then drains for at most `grace`.
pub async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
    limits: EdgeLimits,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(100);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: the listener itself is fine.
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("http_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            router.clone().oneshot(request)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _open = Open::new();
            let _permit = permit;
            // Errors here are the client's (a reset, a timeout we imposed): not ours.
            if let Err(error) = connection.await {
                let timed_out = error
                    .downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_timeout);
                if timed_out {
                    metrics::counter!("http_read_timeouts_total", "phase" => "headers")
                        .increment(1);
                }
                tracing::debug!(%error, %peer, "connection ended");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "HTTP requests still running after the grace period; stopping");
        }
    }
    Ok(())
}
