//! The proxy itself: the balancing stack, the front service that each
//! client connection runs, and how failures become status codes.

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
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

use crate::cli::{Args, Backends};
use crate::forward::{self, Forward, UpstreamBody};

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

/// How long one attempt may wait for a backend's response head; the body
/// may then take as long as it takes.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long start-up waits for a backends file's entries to reach the
/// balancer before serving anyway.
const STARTUP_WAIT: Duration = Duration::from_secs(2);

/// Builds the balancer over the backends the command line names.
pub(crate) fn balance<P>(args: &Args, picker: P) -> Result<Lb<P>, BoxError>
where
    P: Pick<Request<UpstreamBody>, Endpoint>,
{
    let client = forward::client();
    let make = move |addr| Forward::new(client.clone(), addr);
    let health = health_config(args);
    Ok(match &args.backends {
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

/// Passive outlier detection always; active HTTP probes with `--health-path`.
fn health_config(args: &Args) -> HealthConfig<SocketAddr> {
    let config = HealthConfig::new().passive(OutlierDetection::new());
    match &args.health_path {
        Some(path) => config.active(
            ActiveChecks::new(HttpProbe::get(path.clone()))
                .interval(args.health_interval)
                .timeout(args.health_interval.min(Duration::from_secs(2))),
        ),
        None => config,
    }
}

/// Waits until the balancer holds the backends known at start, so the
/// first requests find them.
pub(crate) async fn wait_for_backends<P: Prepare>(args: &Args, lb: &Lb<P>) {
    let expected = match &args.backends {
        Backends::Static(backends) => backends.len(),
        Backends::File { initial, .. } => initial.len(),
    };
    let ready = lb.wait_for(|keys| keys.len() >= expected);
    if tokio::time::timeout(STARTUP_WAIT, ready).await.is_err() {
        tracing::warn!(expected, found = lb.len(), "not every backend is in yet");
    }
}

/// Accepts client connections until the process is stopped.
pub(crate) async fn serve<P>(
    listener: TcpListener,
    lb: Lb<P>,
    retries: u32,
    client_ip: Option<ClientIp>,
) -> Result<(), BoxError>
where
    P: Pick<Request<UpstreamBody>, Endpoint>,
{
    let stack = tower::ServiceBuilder::new()
        .layer(RetryLayer::new(
            RetryPolicy::new().max_attempts(retries.saturating_add(1)),
        ))
        .timeout(ATTEMPT_TIMEOUT)
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
            client_ip,
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
            // Read before this proxy appends its peer to X-Forwarded-For:
            // `--trusted-hops` counts the proxies in front of this one. The
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
