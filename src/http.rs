//! The operations endpoint: `/metrics` (Prometheus text format), `/healthz` (the process works),
//! `/readyz` (a model is loaded and the pipeline is consuming).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::pipeline::kafka::Health;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    match s.health.unhealthy() {
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        None => (StatusCode::OK, "ok\n".to_string()),
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.ready() { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") }
}

/// Binds `listen` (errors name the `http.listen` key) and returns the server future.
pub async fn bind(
    listen: &str,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<impl std::future::Future<Output = ()> + use<>> {
    let addr: SocketAddr = listen.parse().map_err(|e| Error::config("http.listen", format!("`{listen}`: {e}")))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::config("http.listen", format!("cannot listen on {addr}: {e}")))?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health });
    tracing::info!(%addr, "metrics and health endpoint listening");
    Ok(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "http endpoint stopped");
        }
    })
}
