//! An HTTP client as a balancer endpoint.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use tower::Service;
use tower_lb::http::SetAuthority;
use tower_lb::BoxError;

/// The body type the tests send.
pub type ReqBody = Full<Bytes>;

/// A hyper client bound to one backend: every request's URI is rewritten to
/// `http://{addr}{path}` by the crate's [`SetAuthority`], whatever it said,
/// so the balancer's endpoints are real HTTP clients. Cheap to clone; clones
/// share the connection pool.
#[derive(Clone, Debug)]
pub struct Endpoint<B = ReqBody> {
    inner: SetAuthority<Client<HttpConnector, B>>,
}

impl<B> Endpoint<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A client of its own for the backend at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_client(Client::builder(TokioExecutor::new()).build_http(), addr)
    }

    /// An endpoint for `addr` that shares `client`'s pool.
    pub fn with_client(client: Client<HttpConnector, B>, addr: SocketAddr) -> Self {
        assert!(addr.ip().is_loopback(), "tests only talk to loopback");
        Self {
            inner: SetAuthority::from_addr(client, addr),
        }
    }

    /// The backend's address, as `host:port`.
    pub fn authority(&self) -> &Authority {
        self.inner.authority()
    }
}

impl<B> Service<Request<B>> for Endpoint<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = tower_lb::http::ResponseFuture<ResponseFuture>;

    /// The legacy client queues internally; it is always ready.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.inner.call(req)
    }
}
