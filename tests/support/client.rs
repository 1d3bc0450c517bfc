//! An HTTP client as a balancer endpoint.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use tower::Service;
use tower_lb::BoxError;

/// The body type the tests send.
pub type ReqBody = Full<Bytes>;

/// A hyper client bound to one backend: every request's URI is rewritten to
/// `http://{addr}{path}`, whatever it said, so the balancer's endpoints are
/// real HTTP clients. Cheap to clone; clones share the connection pool.
#[derive(Clone, Debug)]
pub struct Endpoint<B = ReqBody> {
    client: Client<HttpConnector, B>,
    authority: Authority,
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
        let authority = addr
            .to_string()
            .parse()
            .expect("a socket address is an authority");
        Self { client, authority }
    }

    /// The backend's address, as `host:port`.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

impl<B> Service<Request<B>> for Endpoint<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = ResponseFuture;

    /// The legacy client queues internally; it is always ready.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture {
        let (mut head, body) = req.into_parts();
        let mut uri = std::mem::take(&mut head.uri).into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        head.uri = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
        self.client.request(Request::from_parts(head, body))
    }
}
