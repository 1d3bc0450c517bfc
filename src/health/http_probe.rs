//! The HTTP probe: one HTTP/1.1 request on a fresh connection.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::ops::RangeInclusive;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use http::header::{CONNECTION, HOST, USER_AGENT};
use http::uri::PathAndQuery;
use http::{Method, Request};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::error::{InvalidHealthConfig, UnexpectedStatus};
use super::probe::{Probe, ProbeFuture, ProbeTarget};
use crate::error::BoxError;

/// Healthy when an HTTP request to the endpoint answers with a status in the
/// expected range (200 to 299 by default).
///
/// Each probe opens its own TCP connection to the key's address (see
/// [`ProbeTarget`]), sends `METHOD path HTTP/1.1` with `Host` set to that
/// address and `Connection: close`, reads the status line and headers, and
/// closes the connection without reading the body. Connecting, sending and
/// the response head together must fit in the check's timeout.
///
/// ```
/// use tower_lb::health::{ActiveChecks, HttpProbe};
///
/// let probe = HttpProbe::get("/healthz").expect_status(200..=399);
/// let checks = ActiveChecks::<std::net::SocketAddr>::new(probe);
/// # let _ = checks;
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct HttpProbe {
    method: Method,
    path: String,
    expect: RangeInclusive<u16>,
}

impl HttpProbe {
    /// A `GET` of `path` (with its query, if any), e.g. `"/healthz"`.
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    /// A request with `method` to `path`. The path is checked when the health
    /// layer is built: it must start with `/`.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            expect: 200..=299,
        }
    }

    /// The statuses that mean healthy, e.g. `200..=399`. An empty range, or
    /// one outside 100 to 999, is rejected when the health layer is built.
    pub fn expect_status(mut self, statuses: RangeInclusive<u16>) -> Self {
        self.expect = statuses;
        self
    }

    fn path(&self) -> Result<PathAndQuery, InvalidHealthConfig> {
        if !self.path.starts_with('/') {
            return Err(InvalidHealthConfig::Probe(format!(
                "HTTP probe path {:?} must start with '/'",
                self.path
            )));
        }
        PathAndQuery::try_from(self.path.as_str()).map_err(|error| {
            InvalidHealthConfig::Probe(format!("HTTP probe path {:?}: {error}", self.path))
        })
    }
}

impl<K: ProbeTarget> Probe<K> for HttpProbe {
    fn probe(&self, key: &K) -> ProbeFuture {
        let target = key.probe_target();
        let method = self.method.clone();
        let path = self.path();
        let expect = self.expect.clone();
        Box::pin(async move {
            let request = Request::builder()
                .method(method)
                .uri(path?)
                .header(HOST, target.as_str())
                .header(CONNECTION, "close")
                .header(USER_AGENT, concat!("tower-lb/", env!("CARGO_PKG_VERSION")))
                .body(NoBody)?;
            let stream = tokio::net::TcpStream::connect(target.as_str()).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let mut connection = pin!(connection);
            let mut response = pin!(sender.send_request(request));
            // The connection must be driven for the response to arrive; it
            // is dropped (closed) as soon as the head is in.
            let response = poll_fn(|cx| {
                if let Poll::Ready(response) = response.as_mut().poll(cx) {
                    return Poll::Ready(response.map_err(BoxError::from));
                }
                match connection.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    // The response may have been handed over as the
                    // connection finished: look once more before giving up.
                    Poll::Ready(done) => Poll::Ready(match response.as_mut().poll(cx) {
                        Poll::Ready(response) => response.map_err(BoxError::from),
                        Poll::Pending => Err(match done {
                            Ok(()) => "connection closed before the probe's response".into(),
                            Err(error) => error.into(),
                        }),
                    }),
                }
            })
            .await?;
            let status = response.status();
            if expect.contains(&status.as_u16()) {
                Ok(())
            } else {
                Err(UnexpectedStatus { status }.into())
            }
        })
    }

    fn validate(&self) -> Result<(), InvalidHealthConfig> {
        self.path()?;
        let (low, high) = (*self.expect.start(), *self.expect.end());
        if low > high || low < 100 || high > 999 {
            return Err(InvalidHealthConfig::Probe(format!(
                "HTTP probe status range {low}..={high} must be a non-empty range within 100..=999"
            )));
        }
        Ok(())
    }
}

/// The probe's empty request body.
struct NoBody;

impl Body for NoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        true
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(0)
    }
}
