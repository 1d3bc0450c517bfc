//! Time limits on one client connection, enforced where its bytes flow.
//!
//! hyper's own header-read timer also runs while a keep-alive connection
//! waits for its next request, so it cannot tell a slow request head from
//! an idle connection. [`Guarded`] wraps the socket and knows both, from
//! what [`Watched`] tells it about the requests in progress:
//!
//! * waiting for a request head (from the accept, or from the first byte
//!   after an idle spell): the head must be complete within the header
//!   timeout;
//! * idle between requests, or in an upgraded tunnel: closed after the idle
//!   timeout without a byte either way;
//! * a write that the client does not take (it stopped reading) fails after
//!   the idle timeout.
//!
//! While a request's body is being read, a read may wait for the idle
//! timeout, and the whole body must arrive within the body timeout when
//! one is set: a client that stalls or trickles its upload is cut off (its
//! request fails by its own fault, which no backend is blamed for). Once the body is in,
//! reads have no deadline: the proxy may be waiting for a backend, and the
//! attempt timeout bounds that.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use http::{Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tower_lb::load::TrackedBody;

/// The time limits of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From the first byte of a request head (or the accept) to its end.
    pub header: Duration,
    /// Without a byte between requests; and for a write the client does
    /// not take.
    pub idle: Duration,
    /// From a request's start to the end of its body, when set: a byte
    /// every few seconds keeps a connection from idling out, not from this.
    pub body: Option<Duration>,
}

/// What the connection's service and its socket share.
#[derive(Debug)]
pub struct ConnState {
    epoch: Instant,
    /// Requests whose response has not ended.
    requests: AtomicUsize,
    /// A request body is still being read from the client.
    body_open: AtomicBool,
    /// When the request whose body is open started, in ms since `epoch`.
    body_since: AtomicU64,
    /// The connection became a tunnel (101 Switching Protocols).
    upgraded: AtomicBool,
    /// When the current request head began, in ms since `epoch`, plus one;
    /// zero when no head is being read.
    head_since: AtomicU64,
    /// The last byte read or written, in ms since `epoch`.
    last: AtomicU64,
    /// The task waiting to read: woken when a request ends, so that the
    /// read it is waiting on takes up the idle deadline.
    reader: AtomicWaker,
}

impl ConnState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            requests: AtomicUsize::new(0),
            body_open: AtomicBool::new(false),
            body_since: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            // A new connection owes its first request head.
            head_since: AtomicU64::new(1),
            last: AtomicU64::new(0),
            reader: AtomicWaker::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    fn on_bytes_read(&self) {
        let now = self.now_ms();
        self.last.store(now, Ordering::Relaxed);
        if self.requests.load(Ordering::Relaxed) == 0
            && !self.upgraded.load(Ordering::Relaxed)
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            self.head_since.store(now + 1, Ordering::Relaxed);
        }
    }

    fn on_bytes_written(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
    }

    fn request_ended(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        self.requests.fetch_sub(1, Ordering::Relaxed);
        self.reader.wake();
    }

    /// Between requests (none open, no tunnel): the connection may be
    /// closed without cutting anything; and since when, in ms since its
    /// epoch, it has been silent.
    pub fn idle_since(&self) -> Option<u64> {
        (self.requests.load(Ordering::Relaxed) == 0 && !self.upgraded.load(Ordering::Relaxed))
            .then(|| self.last.load(Ordering::Relaxed))
    }

    /// When the connection opened.
    pub fn opened(&self) -> Instant {
        self.epoch
    }

    /// When a read that waits now must give up, if ever.
    fn read_deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        let last = self.at(self.last.load(Ordering::Relaxed)) + timeouts.idle;
        if self.upgraded.load(Ordering::Relaxed) {
            return Some(last);
        }
        if self.requests.load(Ordering::Relaxed) > 0 {
            if !self.body_open.load(Ordering::Relaxed) {
                return None;
            }
            let whole = timeouts
                .body
                .map(|body| self.at(self.body_since.load(Ordering::Relaxed)) + body);
            return Some(whole.map_or(last, |whole| whole.min(last)));
        }
        match self.head_since.load(Ordering::Relaxed) {
            0 => Some(last),
            since => Some(self.at(since - 1) + timeouts.header),
        }
    }
}

pin_project! {
    /// A client socket with the connection's time limits.
    pub struct Guarded {
        #[pin]
        stream: TcpStream,
        state: Arc<ConnState>,
        timeouts: Timeouts,
        read_timer: Option<Pin<Box<Sleep>>>,
        write_timer: Option<Pin<Box<Sleep>>>,
    }
}

impl Guarded {
    pub fn new(stream: TcpStream, state: Arc<ConnState>, timeouts: Timeouts) -> Self {
        Self {
            stream,
            state,
            timeouts,
            read_timer: None,
            write_timer: None,
        }
    }
}

/// Polls `timer` set to `deadline` (made or moved as needed): an error once
/// it has passed.
fn expired(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    cx: &mut Context<'_>,
    what: &str,
) -> Poll<io::Result<()>> {
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if sleep.deadline() != deadline {
        sleep.as_mut().reset(deadline);
    }
    match sleep.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what))),
        Poll::Pending => Poll::Pending,
    }
}

/// A write that waits: it may wait for the idle timeout from the moment it
/// first had to.
fn write_waits(
    timer: &mut Option<Pin<Box<Sleep>>>,
    idle: Duration,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
    match sleep.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading",
        ))),
        Poll::Pending => Poll::Pending,
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        match this.stream.poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.state.on_bytes_read();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                this.state.reader.register(cx.waker());
                match this.state.read_deadline(*this.timeouts) {
                    Some(deadline) => {
                        expired(this.read_timer, deadline, cx, "the client was too slow")
                    }
                    None => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        match this.stream.poll_write(cx, buf) {
            Poll::Ready(result) => {
                *this.write_timer = None;
                this.state.on_bytes_written();
                Poll::Ready(result)
            }
            Poll::Pending => write_waits(this.write_timer, this.timeouts.idle, cx).map_ok(|()| 0),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        match this.stream.poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                *this.write_timer = None;
                this.state.on_bytes_written();
                Poll::Ready(result)
            }
            Poll::Pending => write_waits(this.write_timer, this.timeouts.idle, cx).map_ok(|()| 0),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        match this.stream.poll_flush(cx) {
            Poll::Ready(result) => {
                *this.write_timer = None;
                Poll::Ready(result)
            }
            Poll::Pending => write_waits(this.write_timer, this.timeouts.idle, cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        match this.stream.poll_shutdown(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => write_waits(this.write_timer, this.timeouts.idle, cx),
        }
    }
}

/// A connection's service, telling [`ConnState`] when each request starts
/// and when its response ends.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, state: Arc<ConnState>) -> Self {
        Self { inner, state }
    }
}

impl<S, B, In> hyper::service::Service<Request<In>> for Watched<S>
where
    S: hyper::service::Service<Request<RequestBody<In>>, Response = Response<B>>,
    In: Body,
    B: Body,
{
    type Response = Response<WatchedBody<B>>;
    type Error = S::Error;
    type Future = WatchedFuture<S::Future>;

    fn call(&self, request: Request<In>) -> Self::Future {
        self.state.request_started();
        let (parts, body) = request.into_parts();
        let open = (!body.is_end_stream()).then(|| {
            self.state
                .body_since
                .store(self.state.now_ms(), Ordering::Relaxed);
            self.state.body_open.store(true, Ordering::Relaxed);
            BodyOpen(Arc::clone(&self.state))
        });
        let request = Request::from_parts(parts, TrackedBody::new(body, open));
        WatchedFuture {
            inner: self.inner.call(request),
            end: Some(RequestEnd(Arc::clone(&self.state))),
        }
    }
}

/// Ends the request in [`ConnState`] when dropped.
#[derive(Debug)]
pub struct RequestEnd(Arc<ConnState>);

impl Drop for RequestEnd {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

pin_project! {
    /// The response future of [`Watched`].
    pub struct WatchedFuture<F> {
        #[pin]
        inner: F,
        end: Option<RequestEnd>,
    }
}

impl<F, B, E> Future for WatchedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<WatchedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let end = this.end.take();
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(end) = &end {
                end.0.upgraded.store(true, Ordering::Relaxed);
            }
        }
        let (parts, body) = response.into_parts();
        Poll::Ready(Ok(Response::from_parts(parts, TrackedBody::new(body, end))))
    }
}

/// A response body whose end (or drop) ends its request: the library's
/// rule for when a body is finished.
pub type WatchedBody<B> = TrackedBody<B, Option<RequestEnd>>;

/// Marks the request body read (or given up) when dropped.
#[derive(Debug)]
pub struct BodyOpen(Arc<ConnState>);

impl Drop for BodyOpen {
    fn drop(&mut self) {
        self.0.body_open.store(false, Ordering::Relaxed);
    }
}

/// A client's request body as a gateway reads it.
pub type ClientBody = RequestBody<hyper::body::Incoming>;

/// A request body whose end (or drop) lifts the read deadline of an
/// upload: the library's rule for when a body is finished.
pub type RequestBody<B> = TrackedBody<B, Option<BodyOpen>>;
