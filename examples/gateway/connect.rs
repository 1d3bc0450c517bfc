//! The connector: hyper-util's `HttpConnector`, minus the connection details
//! it would copy into every response.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;
use tower_lb::BoxError;

/// Connects as `HttpConnector` does (its timeouts and `TCP_NODELAY`), but
/// reports no connection details: hyper-util would otherwise insert them
/// into the extensions of every response, three allocations a request that
/// nothing here reads.
#[derive(Clone, Debug)]
pub struct Connector(pub HttpConnector);

/// A connection to a backend.
#[derive(Debug)]
pub struct Plain(TokioIo<TcpStream>);

type Connecting = Pin<Box<dyn Future<Output = Result<Plain, BoxError>> + Send>>;

impl Service<Uri> for Connector {
    type Response = Plain;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let connecting = self.0.call(uri);
        // The connector's error is kept whole: the retry layer reads
        // `ConnectionRefused` from its source chain.
        Box::pin(async move { connecting.await.map(Plain).map_err(Into::into) })
    }
}

impl Connection for Plain {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for Plain {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Write for Plain {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}
