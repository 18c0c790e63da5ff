//! The admin listener (`DUOVARSITY_ADMIN_ADDR`, `127.0.0.1:9464` by default): the
//! operations surfaces of a process, kept off the public and service ports.
//!
//! `/metrics` names every route, upstream pod and counter of the process and `/status`
//! lists upstream pod addresses: reconnaissance for an attacker, so neither is served on
//! the gateway's public listener (which answers 404 for them) nor on a gRPC port that other
//! pods reach. In a cluster the admin port is the one the probes and the Prometheus
//! scrape use, and the only one the monitoring namespace may reach.
//!
//! Every process serves `/metrics` and `/healthz` here; the gateway adds `/status` and
//! `/readyz` ([`serve`] takes the extra routes).

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::telemetry;

/// The routes every process serves on its admin listener.
pub fn routes() -> Router {
    Router::new()
        .route("/metrics", get(|| async { telemetry::render_metrics() }))
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
}

/// Serves [`routes`] and `extra` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    extra: Option<Router>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut router = routes();
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
