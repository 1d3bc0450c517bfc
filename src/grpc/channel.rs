//! A tonic channel that takes the retry layer's replayable bodies.

use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::Channel;
use tower::Service;

/// A tonic [`Channel`] that serves requests of any body of bytes, such as
/// the retry layer's `ReplayBody<tonic::body::Body>`: each request's body is
/// handed to the channel as a tonic body. The endpoint service of the gRPC
/// preset; use it to compose a retried gRPC stack by hand.
///
/// ```
/// use tower_lb::grpc::ReplayChannel;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_lb::BoxError> {
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
/// let endpoint = ReplayChannel::new(channel);
/// # let _ = endpoint;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ReplayChannel {
    inner: Channel,
}

impl ReplayChannel {
    /// Wraps `channel`.
    pub fn new(channel: Channel) -> Self {
        Self { inner: channel }
    }

    /// The wrapped channel.
    pub fn get_ref(&self) -> &Channel {
        &self.inner
    }
}

impl<B> Service<http::Request<B>> for ReplayChannel
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::BoxError>,
{
    type Response = <Channel as Service<http::Request<Body>>>::Response;
    type Error = <Channel as Service<http::Request<Body>>>::Error;
    type Future = <Channel as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.inner.call(request.map(Body::new))
    }
}
