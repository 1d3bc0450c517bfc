//! Porting a program from `tower::balance::p2c` to tower-lb.
//!
//! ```sh
//! cargo run --example from_tower
//! ```
//!
//! With tower, a shared power-of-two-choices balancer over a list of
//! services looks like this:
//!
//! ```ignore
//! let discover = PendingRequestsDiscover::new(ServiceList::new(services), CompleteOnResponse::default());
//! let shared = Buffer::new(tower::balance::p2c::Balance::new(discover), 1024);
//! ```
//!
//! The port, line for line: tower's `ServiceList` stays, wrapped in
//! `DefaultWeight` (or becomes a `StaticList` with keys that name each
//! endpoint, which health probes can reach); `PendingRequestsDiscover`
//! becomes `InFlightDiscover`, which counts until a response *body* ends;
//! the `Buffer` goes, because `Balance` is `Clone` and picks on the caller's
//! task. For HTTP backends the preset does all of it, plus health checks
//! and retries, under one type name.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;
use tower::discover::ServiceList;
use tower::{service_fn, Service, ServiceExt};
use tower_lb::discover::DefaultWeight;
use tower_lb::load::{CompleteOnResponse, InFlightDiscover};
use tower_lb::pick::P2c;
use tower_lb::{http, Balance, BoxError};

/// A program's state: it names the balanced HTTP client by the preset's
/// alias, and no wrapper type besides.
#[derive(Clone)]
struct App {
    backends: http::Balancer,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Any services, as tower's balancer took them.
    let services: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| service_fn(move |_: ()| async move { Ok::<_, Infallible>(name) }))
        .collect();
    let discover = InFlightDiscover::with_completion(
        DefaultWeight::new(ServiceList::new(services)),
        CompleteOnResponse::default(),
    );
    let balance = Balance::new(discover, P2c::new());
    balance.wait_for(|keys| keys.len() == 3).await;
    let mut handle = balance.clone(); // no Buffer: clones share the set
    let answer = handle.ready().await?.call(()).await?;
    println!("generic services: answered by {answer}");

    // HTTP backends: the preset, one named type.
    let addrs = [backend("one").await?, backend("two").await?];
    let app = App {
        backends: http::Builder::new().backends(addrs).build()?,
    };
    app.backends
        .get_ref()
        .wait_for(|keys| keys.len() == 2)
        .await;
    for _ in 0..4 {
        let request = ::http::Request::get("/").body(Full::new(Bytes::new()))?;
        let response = app.backends.clone().oneshot(request).await?;
        let body = response.into_body().collect().await?.to_bytes();
        println!("http preset: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

/// A backend on an ephemeral port of 127.0.0.1 that answers its name.
async fn backend(name: &'static str) -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route("/", get(move || async move { name }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}
