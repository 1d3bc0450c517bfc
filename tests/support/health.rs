//! For the health tests: an endpoint service that counts the requests
//! routed to it and opens a connection for each, and a frozen clock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::StatusCode;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceExt};
use tower_lb::http::SetAuthority;
use tower_lb::BoxError;

pub type Request = http::Request<Empty<Bytes>>;
pub type Response = http::Response<Incoming>;

/// An endpoint as the balancer sees it: a hyper client bound to one
/// backend address, counting the requests routed to it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    inner: SetAuthority<Client<HttpConnector, Empty<Bytes>>>,
    calls: Arc<AtomicUsize>,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Self {
        // No pooling: every request opens its own connection, so a killed
        // backend fails the very next request.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
        Self {
            inner: SetAuthority::from_addr(client, addr),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Requests the balancer has routed here.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Request> for Endpoint {
    type Response = Response;
    type Error = BoxError;
    type Future = tower_lb::http::ResponseFuture<hyper_util::client::legacy::ResponseFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.call(request)
    }
}

pub fn get_root() -> Request {
    http::Request::get("/").body(Empty::new()).unwrap()
}

/// Sends one `GET /` through `service` and reads the whole answer.
pub async fn send<S>(service: &mut S) -> Result<StatusCode, BoxError>
where
    S: Service<Request, Response = Response, Error = BoxError>,
{
    let response = service.ready().await?.call(get_root()).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

/// Keeps tokio's paused clock from advancing by itself while real I/O is
/// awaited: a blocking task inhibits auto-advance for as long as it runs
/// (documented under `tokio::time::pause`). Time then moves only with
/// `tokio::time::advance`. Drop to release.
pub struct FrozenClock {
    _release: std::sync::mpsc::Sender<()>,
}

pub fn freeze_clock() -> FrozenClock {
    let (release, released) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let _ = released.recv();
    });
    FrozenClock { _release: release }
}
