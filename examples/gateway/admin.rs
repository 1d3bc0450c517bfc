//! The admin listener: `GET /status` answers a JSON document that the
//! binary renders (the proxy's lists every backend).

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

/// Serves `GET /status` on `listener` until the process stops; each request
/// calls `status` for the JSON text of the answer.
pub(crate) async fn serve<F>(listener: TcpListener, status: F) -> std::io::Result<()>
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let status = Arc::new(status);
    let app = Router::new().route(
        "/status",
        get(
            move || async move { ([(CONTENT_TYPE, "application/json")], status()).into_response() },
        ),
    );
    axum::serve(listener, app).await
}
