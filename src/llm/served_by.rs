//! Marks each answer with the server that gave it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::Service;

/// The server an answer came from, in the answer's extensions: read it for
/// logs or metrics (`response.extensions().get::<ServedBy>()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServedBy(pub SocketAddr);

/// Inserts [`ServedBy`] into each answer of one server.
#[derive(Clone, Debug)]
pub struct MarkServer<S> {
    inner: S,
    addr: SocketAddr,
}

impl<S> MarkServer<S> {
    pub(crate) fn new(inner: S, addr: SocketAddr) -> Self {
        Self { inner, addr }
    }
}

impl<S, Req, B> Service<Req> for MarkServer<S>
where
    S: Service<Req, Response = http::Response<B>>,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = MarkFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        MarkFuture {
            inner: self.inner.call(request),
            addr: self.addr,
        }
    }
}

pin_project! {
    /// The response future of [`MarkServer`].
    #[derive(Debug)]
    pub struct MarkFuture<F> {
        #[pin]
        inner: F,
        addr: SocketAddr,
    }
}

impl<F, B, E> Future for MarkFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let Ok(response) = &mut result {
            response.extensions_mut().insert(ServedBy(*this.addr));
        }
        Poll::Ready(result)
    }
}
