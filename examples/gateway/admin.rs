//! The admin listener: `GET /status` answers a JSON document that the
//! binary renders (the proxy's lists every backend), and `GET /metrics`
//! the binary's Prometheus page.
//!
//! It runs under the same limits as the main listener (header and idle
//! timeouts) with its own small connection cap, so slow clients of the
//! admin port cannot take the file descriptors the main port needs.

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::drain::Drain;
use super::listener::{self, Connections, Limits};

/// Connections the admin listener holds at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// Serves `GET /status` on `listener` until the drain starts, and the
/// routes of `extra` (`GET /metrics`); each `/status` request calls
/// `status` for the JSON text of the answer.
pub(crate) async fn serve<F>(
    listener: TcpListener,
    limits: Limits,
    drain: Drain,
    status: F,
    extra: Router,
) where
    F: Fn() -> String + Send + Sync + 'static,
{
    let status = Arc::new(status);
    let app =
        Router::new()
            .route(
                "/status",
                get(move || async move {
                    ([(CONTENT_TYPE, "application/json")], status()).into_response()
                }),
            )
            .merge(extra);
    let limits = Limits {
        max_connections: MAX_CONNECTIONS,
        ..limits
    };
    let connections = Connections::new(limits.max_connections);
    listener::serve(listener, limits, connections, drain, move |_peer| {
        TowerToHyperService::new(app.clone())
    })
    .await;
}
