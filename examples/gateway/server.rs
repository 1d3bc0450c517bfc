//! The gateway's server: the balancing stack over the backends, the accept
//! loop and the front service that each client connection runs, and how
//! failures become status codes.

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::net::TcpListener;
use tower::timeout::error::Elapsed;
use tower::timeout::Timeout;
use tower::util::Oneshot;
use tower::ServiceExt;
use tower_lb::discover::{FileDiscover, StaticList};
use tower_lb::endpoint::Weighted;
use tower_lb::health::{
    ActiveChecks, HealthConfig, HealthDiscover, Healthy, HttpProbe, NoHealthyEndpoints,
    OutlierDetection,
};
use tower_lb::load::{Handle, InFlight, InFlightDiscover, TrackedBody};
use tower_lb::pick::{ClientAddr, ClientIp, Pick, Prepare};
use tower_lb::retry::{Retry, RetryLayer, RetryPolicy};
use tower_lb::{Balance, BoxError, NoEndpoints};

use super::forward::{self, Forward, UpstreamBody};

/// One backend as the balancer holds it: health on the outside (so
/// `Balance::health` reads it), requests in flight counted until the
/// response body ends, the weight from the command line or the file.
pub(crate) type Endpoint = Healthy<Weighted<InFlight<Forward>>>;

/// The balancer for a picker `P`.
pub(crate) type Lb<P> = Balance<SocketAddr, Endpoint, P>;

/// What a client connection calls: retries around a per-attempt timeout
/// around the balancer.
type Stack<P> = Retry<Timeout<Lb<P>>>;

/// The body of every answer: the backend's, streamed, or our own error text.
type ProxyBody = Either<TrackedBody<Incoming, Handle>, Full<Bytes>>;

/// How long one attempt may wait for a backend's response head, unless
/// [`Settings::attempt_timeout`] says otherwise.
pub(crate) const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long active health probes may take at most.
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long start-up waits for a backends file's entries to reach the
/// balancer before serving anyway.
const STARTUP_WAIT: Duration = Duration::from_secs(2);

/// Where the backends come from.
#[derive(Debug)]
pub(crate) enum Backends {
    /// A fixed list of addresses and weights, in this order.
    Static(Vec<(SocketAddr, u32)>),
    /// A file of `ADDR[@WEIGHT]` lines, watched for edits, with the entries
    /// it held at start.
    File {
        path: PathBuf,
        initial: Vec<(SocketAddr, u32)>,
    },
}

impl Backends {
    /// How many backends there are at start.
    pub(crate) fn initial_len(&self) -> usize {
        match self {
            Backends::Static(backends) => backends.len(),
            Backends::File { initial, .. } => initial.len(),
        }
    }
}

/// How the server handles each client request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// Retries on another backend after a failed attempt, within the retry
    /// budget.
    pub(crate) retries: u32,
    /// How long one attempt may wait for a backend's response head; the
    /// body may then take as long as it takes.
    pub(crate) attempt_timeout: Duration,
    /// How to find the client's address when the picker hashes it (it reads
    /// the `ClientAddr` extension); `None` for other pickers, which skip it.
    pub(crate) client_ip: Option<ClientIp>,
}

/// Binds a listener; the error names the address, and `flag` when given
/// (`cannot listen on 127.0.0.1:80 (--admin): ...`).
pub(crate) async fn bind(addr: SocketAddr, flag: Option<&str>) -> Result<TcpListener, BoxError> {
    TcpListener::bind(addr).await.map_err(|e| {
        match flag {
            Some(flag) => format!("cannot listen on {addr} ({flag}): {e}"),
            None => format!("cannot listen on {addr}: {e}"),
        }
        .into()
    })
}

/// Builds the balancer over `backends`, with `health` (see [`health`]).
pub(crate) fn balance<P>(
    backends: &Backends,
    health: HealthConfig<SocketAddr>,
    picker: P,
) -> Result<Lb<P>, BoxError>
where
    P: Pick<Request<UpstreamBody>, Endpoint>,
{
    let client = forward::client();
    let make = move |addr| Forward::new(client.clone(), addr);
    Ok(match backends {
        Backends::Static(backends) => {
            let list = StaticList::weighted(backends.iter().map(|&(a, w)| (a, make(a), w)));
            Balance::new(
                HealthDiscover::new(InFlightDiscover::new(list), health)?,
                picker,
            )
        }
        Backends::File { path, .. } => {
            let file = FileDiscover::new(path, make);
            Balance::new(
                HealthDiscover::new(InFlightDiscover::new(file), health)?,
                picker,
            )
        }
    })
}

/// Passive outlier detection always; active HTTP probes of `GET path`
/// every `interval` when a path is given, each allowed the interval or 2 s,
/// whichever is shorter.
pub(crate) fn health(path: Option<&str>, interval: Duration) -> HealthConfig<SocketAddr> {
    let config = HealthConfig::new().passive(OutlierDetection::new());
    match path {
        Some(path) => config.active(
            ActiveChecks::new(HttpProbe::get(path.to_owned()))
                .interval(interval)
                .timeout(interval.min(MAX_PROBE_TIMEOUT)),
        ),
        None => config,
    }
}

/// Waits until the balancer holds the backends known at start, so the
/// first requests find them.
pub(crate) async fn wait_for_backends<P: Prepare>(backends: &Backends, lb: &Lb<P>) {
    let expected = backends.initial_len();
    let ready = lb.wait_for(|keys| keys.len() >= expected);
    if tokio::time::timeout(STARTUP_WAIT, ready).await.is_err() {
        tracing::warn!(expected, found = lb.len(), "not every backend is in yet");
    }
}

/// Accepts client connections until the process is stopped.
pub(crate) async fn serve<P>(
    listener: TcpListener,
    lb: Lb<P>,
    settings: Settings,
) -> Result<(), BoxError>
where
    P: Pick<Request<UpstreamBody>, Endpoint>,
{
    let stack = tower::ServiceBuilder::new()
        .layer(RetryLayer::new(
            RetryPolicy::new().max_attempts(settings.retries.saturating_add(1)),
        ))
        .timeout(settings.attempt_timeout)
        .service(lb);
    let mut http = hyper::server::conn::http1::Builder::new();
    // The timer bounds how long a client may take to send a request head.
    http.timer(TokioTimer::new());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, mostly: give connections time to close.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let front = Front {
            stack: stack.clone(),
            peer,
            forwarded_for: forward::forwarded_for(peer),
            client_ip: settings.client_ip,
        };
        let connection = http.serve_connection(TokioIo::new(stream), front);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "client connection ended with an error");
            }
        });
    }
}

/// What one client connection runs for each of its requests.
struct Front<P: Prepare> {
    stack: Stack<P>,
    peer: SocketAddr,
    forwarded_for: HeaderValue,
    /// How to find the client's address, when the picker hashes it
    /// (`ip-hash`, `consistent-hash` by IP); other pickers skip it.
    client_ip: Option<ClientIp>,
}

impl<P> hyper::service::Service<Request<Incoming>> for Front<P>
where
    P: Pick<Request<UpstreamBody>, Endpoint>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = ProxyFuture<P>;

    fn call(&self, mut request: Request<Incoming>) -> ProxyFuture<P> {
        if let Some(rule) = &self.client_ip {
            // Read before this gateway appends its peer to X-Forwarded-For:
            // the rule's trusted hops count the proxies in front of this one. The
            // picker then hashes the address found, which it reads from
            // `ClientAddr`.
            let ip = rule.client_ip(&request).unwrap_or(self.peer.ip());
            let client = SocketAddr::new(ip, self.peer.port());
            request.extensions_mut().insert(ClientAddr(client));
        }
        forward::strip_hop_by_hop(request.headers_mut());
        forward::append_forwarded_for(request.headers_mut(), &self.forwarded_for);
        // The stack is always ready (the balancer waits inside its future),
        // so `oneshot` costs one poll; a clone is a few reference counts.
        ProxyFuture {
            call: self.stack.clone().oneshot(request),
        }
    }
}

pin_project! {
    /// One request through the stack, its outcome turned into a response.
    struct ProxyFuture<P>
    where
        P: Pick<Request<UpstreamBody>, Endpoint>,
    {
        #[pin]
        call: Oneshot<Stack<P>, Request<Incoming>>,
    }
}

impl<P> Future for ProxyFuture<P>
where
    P: Pick<Request<UpstreamBody>, Endpoint>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(match ready!(self.project().call.poll(cx)) {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                forward::strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Either::Left(body))
            }
            Err(error) => error_response(&*error),
        }))
    }
}

/// 503 when there is no backend to send to, 504 when the backend did not
/// answer in time, 502 for any other failure to get an answer.
fn status_for(error: &(dyn Error + 'static)) -> StatusCode {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<NoEndpoints>() || error.is::<NoHealthyEndpoints>() {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        if error.is::<Elapsed>() {
            return StatusCode::GATEWAY_TIMEOUT;
        }
        next = error.source();
    }
    StatusCode::BAD_GATEWAY
}

fn error_response(error: &(dyn Error + 'static)) -> Response<ProxyBody> {
    let status = status_for(error);
    tracing::warn!(%status, error = %Chain(error), "request failed");
    let text = match status {
        StatusCode::SERVICE_UNAVAILABLE => "no backend available\n",
        StatusCode::GATEWAY_TIMEOUT => "the backend did not answer in time\n",
        _ => "the backend could not be reached\n",
    };
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// An error and its sources, on one line.
struct Chain<'a>(&'a (dyn Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(error) = next {
            write!(f, ": {error}")?;
            next = error.source();
        }
        Ok(())
    }
}
