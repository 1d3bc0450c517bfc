//! The admin listener: `GET /status` answers a JSON document that the
//! binary renders (the proxy's lists every backend), and `GET /metrics`
//! the binary's Prometheus page.
//!
//! It runs apart from the main listener, under its own [`Admin`] settings:
//! its own small connection cap, so slow clients of the admin port cannot
//! take the file descriptors the main port needs; its own idle timeout,
//! short by default; and at the cap the longest-idle connection is closed
//! for a new client, so idle keep-alive connections cannot lock anyone
//! out; and, when a token is set, every request must carry it
//! as `Authorization: Bearer TOKEN` (401 otherwise).

use std::sync::Arc;
use std::time::Duration;

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::drain::Drain;
use super::listener::{self, Connections, Limits};

/// Connections the admin listener holds at once, by default.
pub const MAX_CONNECTIONS: usize = 64;

/// How long an admin connection may sit idle, by default.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The admin listener's own settings.
#[derive(Clone, Debug)]
pub struct Admin {
    /// Requests must carry `Authorization: Bearer` this.
    pub token: Option<Arc<str>>,
    pub max_connections: usize,
    pub idle: Duration,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            token: None,
            max_connections: MAX_CONNECTIONS,
            idle: IDLE_TIMEOUT,
        }
    }
}

/// Serves `GET /status` on `listener` until the drain starts, and the
/// routes of `extra` (`GET /metrics`); each `/status` request calls
/// `status` for the JSON text of the answer. `limits` are the main
/// listener's; `admin` replaces its cap and idle timeout, and its token
/// guards every route.
pub async fn serve<F>(
    listener: TcpListener,
    limits: Limits,
    admin: Admin,
    drain: Drain,
    status: F,
    extra: Router,
) where
    F: Fn() -> String + Send + Sync + 'static,
{
    let status = Arc::new(status);
    let mut app =
        Router::new()
            .route(
                "/status",
                get(move || async move {
                    ([(CONTENT_TYPE, "application/json")], status()).into_response()
                }),
            )
            .merge(extra);
    if let Some(token) = admin.token.clone() {
        app = app.layer(middleware::from_fn(move |request, next| {
            let token = Arc::clone(&token);
            async move { authorize(&token, request, next).await }
        }));
    }
    let limits = Limits {
        max_connections: admin.max_connections,
        evict_idle: true,
        timeouts: super::guard::Timeouts {
            idle: admin.idle,
            ..limits.timeouts
        },
        ..limits
    };
    let connections = Connections::new(limits.max_connections);
    listener::serve(listener, limits, connections, drain, move |_peer| {
        TowerToHyperService::new(app.clone())
    })
    .await;
}

async fn authorize(token: &str, request: Request<axum::body::Body>, next: Next) -> Response {
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    if same(given.as_bytes(), token.as_bytes()) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, "Bearer")],
        "a bearer token is required\n",
    )
        .into_response()
}

/// Compares in time that depends on the lengths only, not on where the
/// first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
