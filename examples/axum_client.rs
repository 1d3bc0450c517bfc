//! An axum handler that calls a pool of HTTP backends through the crate's
//! HTTP preset: the whole balanced, health-checked, retried client is one
//! type, `tower_lb::http::Balancer`, kept in axum state.
//!
//! ```sh
//! cargo run --example axum_client
//! ```
//!
//! It starts three backends on 127.0.0.1 (one of them answers 503), an axum
//! app whose `/greet` handler asks the pool, sends the app a few requests,
//! prints what came back, and exits.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_lb::http::{Balancer, Builder};
use tower_lb::pick::RoundRobin;
use tower_lb::BoxError;

/// The handler: one call to the pool; a failed backend was already retried
/// on another by the time an error reaches here.
async fn greet(State(pool): State<Balancer>) -> (StatusCode, String) {
    let request = match http::Request::get("/").body(Full::new(Bytes::new())) {
        Ok(request) => request,
        Err(error) => return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    };
    let response = match pool.oneshot(request).await {
        Ok(response) => response,
        Err(error) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("no backend answered: {error}"),
            )
        }
    };
    let status = response.status();
    match response.into_body().collect().await {
        Ok(body) => (
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ),
        Err(error) => (
            StatusCode::BAD_GATEWAY,
            format!("the answer broke off: {error}"),
        ),
    }
}

/// A backend that answers `status` with its name.
async fn backend(name: &'static str, status: StatusCode) -> Result<SocketAddr, BoxError> {
    let app = Router::new().route(
        "/",
        get(move || async move { (status, format!("hello from {name}")) }),
    );
    serve(app).await
}

/// Serves `app` on an ephemeral port of 127.0.0.1 in the background.
async fn serve(app: Router) -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let backends = [
        backend("one", StatusCode::OK).await?,
        backend("two", StatusCode::OK).await?,
        backend("broken", StatusCode::SERVICE_UNAVAILABLE).await?,
    ];
    let pool: Balancer = Builder::new()
        .backends(backends)
        .picker(RoundRobin::new())
        .build()?;
    pool.get_ref()
        .wait_for(|keys| keys.len() == backends.len())
        .await;

    let app = Router::new().route("/greet", get(greet)).with_state(pool);
    let front = serve(app).await?;
    println!("app on {front}, pool of {}", backends.len());

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    for i in 1..=6 {
        let uri: http::Uri = format!("http://{front}/greet").parse()?;
        let response = client.get(uri).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!("request {i}: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}
