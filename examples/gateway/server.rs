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
use http::header::{ALLOW, CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::net::TcpListener;
use tower::discover::{Change, Discover};
use tower::timeout::error::Elapsed;
use tower::util::Oneshot;
use tower::ServiceExt;
use tower_lb::classify::is_request_fault;
use tower_lb::discover::{FileDiscover, StaticList};
use tower_lb::endpoint::{ReportCell, Weighted};
use tower_lb::health::{
    ActiveChecks, HealthConfig, HealthDiscover, Healthy, HttpProbe, NoHealthyEndpoints,
    OutlierDetection,
};
use tower_lb::load::{Handle, InFlight, InFlightDiscover, TrackedBody};
use tower_lb::pick::{
    key::{ClientAddr, ClientIp},
    Pick, Prepare,
};
use tower_lb::retry::{Retry, RetryLayer, RetryPolicy};
use tower_lb::{Balance, BoxError, NoEndpoints};

use super::drain::Drain;
use super::forward::{self, Forward, UpstreamBody};
use super::guard::ClientBody;
use super::listener::{self, Connections, Limits};
use super::rules::{self, Refusal};
use super::traffic::{Timed, Traffic};

/// One backend as the balancer holds it: health on the outside (so
/// `Balance::health` reads it), requests in flight counted until the
/// response body ends, the weight from the command line or the file.
pub type Endpoint = Healthy<Weighted<InFlight<Forward>>>;

/// The balancer for a picker `P`.
pub type Lb<P> = Balance<SocketAddr, Endpoint, P>;

/// What a client connection calls: retries around the balancer (each
/// backend's `Forward` times its own attempts, under the health wrapper).
type Stack<P> = Retry<Lb<P>>;

/// The body of every answer: the backend's, streamed, or our own error text.
type ProxyBody = Either<TrackedBody<Incoming, Handle>, Full<Bytes>>;

/// How long active health probes may take at most.
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long start-up waits for a backends file's entries to reach the
/// balancer before serving anyway.
const STARTUP_WAIT: Duration = Duration::from_secs(2);

/// Where the backends come from.
#[derive(Debug)]
pub enum Backends {
    /// A fixed list of addresses and weights, in this order.
    Static(Vec<(SocketAddr, u32)>),
    /// A file of `ADDR[@WEIGHT]` lines, watched for edits, with the entries
    /// it held at start; an edit that lists none empties the set only with
    /// `allow_empty` (otherwise the last good set stays).
    File {
        path: PathBuf,
        initial: Vec<(SocketAddr, u32)>,
        allow_empty: bool,
    },
}

impl Backends {
    /// How many backends there are at start.
    pub fn initial_len(&self) -> usize {
        match self {
            Backends::Static(backends) => backends.len(),
            Backends::File { initial, .. } => initial.len(),
        }
    }
}

/// How the server handles each client request.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Retries on another backend after a failed attempt, within the retry
    /// budget.
    pub retries: u32,
    /// How to find the client's address when the picker hashes it (it reads
    /// the `ClientAddr` extension); `None` for other pickers, which skip it.
    pub client_ip: Option<ClientIp>,
    /// Where answers are counted by status and timed, if anywhere (one
    /// clock read a request more when set).
    pub traffic: Option<Traffic>,
    /// Requests whose headers are larger are answered 431 (see
    /// [`rules::refusal`]).
    pub max_header_bytes: Option<usize>,
}

/// Binds a listener; the error names the address, and `flag` when given
/// (`cannot listen on 127.0.0.1:80 (--admin): ...`).
pub async fn bind(addr: SocketAddr, flag: Option<&str>) -> Result<TcpListener, BoxError> {
    TcpListener::bind(addr).await.map_err(|e| {
        match flag {
            Some(flag) => format!("cannot listen on {addr} ({flag}): {e}"),
            None => format!("cannot listen on {addr}: {e}"),
        }
        .into()
    })
}

/// Builds the balancer over `backends`, with `health` (see [`health`]);
/// each attempt may wait `attempt_timeout` for a response head once the
/// request body has been sent.
pub fn balance<P>(
    backends: &Backends,
    health: HealthConfig<SocketAddr>,
    picker: P,
    attempt_timeout: Duration,
    reports: &ReportSettings,
) -> Result<Lb<P>, BoxError>
where
    P: Pick<Request<UpstreamBody>, Endpoint>,
{
    let client = forward::client();
    let settings = reports.clone();
    let make = move |addr| {
        let forward = Forward::new(client.clone(), addr, attempt_timeout);
        if !settings.enabled {
            return forward;
        }
        let cell = ReportCell::new();
        let poller = settings.metrics_path.as_ref().and_then(|path| {
            let base = format!("http://{addr}").parse().ok()?;
            let poller = tower_lb::report::PrometheusPoller::new().path(path.clone());
            Some(std::sync::Arc::new(poller.spawn(base, cell.clone())))
        });
        forward.with_reports(forward::Reports {
            cell,
            ask: settings.load_reports,
            _poller: poller,
        })
    };
    Ok(match backends {
        Backends::Static(backends) => {
            let list = StaticList::weighted(backends.iter().map(|&(a, w)| (a, make(a), w)));
            Balance::new(
                HealthDiscover::new(with_reports(InFlightDiscover::new(list)), health)?,
                picker,
            )
        }
        Backends::File {
            path, allow_empty, ..
        } => {
            let file = FileDiscover::new(path, make).allow_empty(*allow_empty);
            Balance::new(
                HealthDiscover::new(with_reports(InFlightDiscover::new(file)), health)?,
                picker,
            )
        }
    })
}

/// `--algorithm scored`: where each backend's load reports come from.
#[derive(Clone, Debug, Default)]
pub struct ReportSettings {
    /// Keep a report per backend (the scored picker reads it).
    pub enabled: bool,
    /// `--load-reports`: ask for ORCA reports in every answer.
    pub load_reports: bool,
    /// `--metrics-path`: poll each backend's Prometheus page.
    pub metrics_path: Option<String>,
}

/// Hands each backend's report cell (kept by its `Forward`) to the
/// balancer through its `Weighted` wrapper.
fn with_reports<D>(
    discover: D,
) -> impl futures_util::Stream<
    Item = Result<Change<SocketAddr, Weighted<InFlight<Forward>>>, BoxError>,
> + Send
       + 'static
where
    D: Discover<Key = SocketAddr, Service = Weighted<InFlight<Forward>>> + Send + 'static,
    D::Error: Into<BoxError>,
{
    let mut discover = Box::pin(discover);
    futures_util::stream::poll_fn(move |cx| {
        discover.as_mut().poll_discover(cx).map(|change| {
            change.map(|change| match change {
                Ok(Change::Insert(addr, endpoint)) => {
                    let cell = endpoint.get_ref().get_ref().report_cell().cloned();
                    Ok(Change::Insert(
                        addr,
                        match cell {
                            Some(cell) => endpoint.with_report(cell),
                            None => endpoint,
                        },
                    ))
                }
                Ok(Change::Remove(addr)) => Ok(Change::Remove(addr)),
                Err(error) => Err(error.into()),
            })
        })
    })
}

/// Passive outlier detection always; active HTTP probes of `GET path`
/// every `interval` when a path is given, each allowed the interval or 2 s,
/// whichever is shorter.
pub fn health(path: Option<&str>, interval: Duration) -> HealthConfig<SocketAddr> {
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
pub async fn wait_for_backends<P: Prepare>(backends: &Backends, lb: &Lb<P>) {
    let expected = backends.initial_len();
    let ready = lb.wait_for(|keys| keys.len() >= expected);
    if tokio::time::timeout(STARTUP_WAIT, ready).await.is_err() {
        tracing::warn!(expected, found = lb.len(), "not every backend is in yet");
    }
}

/// Accepts client connections within `limits` until the drain starts;
/// `connections` then tells when the last one has finished.
pub async fn serve<P>(
    listener: TcpListener,
    lb: Lb<P>,
    settings: Settings,
    limits: Limits,
    connections: Connections,
    drain: Drain,
) where
    P: Pick<Request<UpstreamBody>, Endpoint>,
{
    let stack = tower::ServiceBuilder::new()
        .layer(RetryLayer::new(
            RetryPolicy::new().max_attempts(settings.retries.saturating_add(1)),
        ))
        .service(lb);
    let make = move |peer| Front {
        stack: stack.clone(),
        peer,
        forwarded_for: forward::forwarded_for(peer),
        client_ip: settings.client_ip,
        traffic: settings.traffic.clone(),
        max_header_bytes: settings.max_header_bytes,
    };
    listener::serve(listener, limits, connections, drain, make).await;
}

/// What one client connection runs for each of its requests.
struct Front<P: Prepare> {
    stack: Stack<P>,
    peer: SocketAddr,
    forwarded_for: HeaderValue,
    /// How to find the client's address, when the picker hashes it
    /// (`ip-hash`, `consistent-hash` by IP); other pickers skip it.
    client_ip: Option<ClientIp>,
    traffic: Option<Traffic>,
    max_header_bytes: Option<usize>,
}

impl<P> hyper::service::Service<Request<ClientBody>> for Front<P>
where
    P: Pick<Request<UpstreamBody>, Endpoint>,
{
    type Response = Response<Timed<ProxyBody>>;
    type Error = Infallible;
    type Future = Counted<ProxyFuture<P>>;

    fn call(&self, request: Request<ClientBody>) -> Self::Future {
        let traffic = self
            .traffic
            .as_ref()
            .map(|traffic| (traffic.clone(), tokio::time::Instant::now()));
        Counted {
            inner: self.proxy(request),
            traffic,
        }
    }
}

impl<P> Front<P>
where
    P: Pick<Request<UpstreamBody>, Endpoint>,
{
    fn proxy(&self, mut request: Request<ClientBody>) -> ProxyFuture<P> {
        if let Some(rule) = &self.client_ip {
            // Read before this gateway appends its peer to X-Forwarded-For:
            // the rule's trusted hops count the proxies in front of this one. The
            // picker then hashes the address found, which it reads from
            // `ClientAddr`.
            let ip = rule.client_ip(&request).unwrap_or(self.peer.ip());
            let client = SocketAddr::new(ip, self.peer.port());
            request.extensions_mut().insert(ClientAddr(client));
        }
        if let Some(refusal) = refusal(&request, self.max_header_bytes) {
            return ProxyFuture::answered(refusal);
        }
        let upgrade =
            forward::wants_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
        tower_lb::http::strip_hop_by_hop(request.headers_mut(), upgrade.is_some());
        forward::append_forwarded_for(request.headers_mut(), &self.forwarded_for);
        // The stack is always ready (the balancer waits inside its future),
        // so `oneshot` costs one poll; a clone is a few reference counts.
        ProxyFuture {
            call: Some(self.stack.clone().oneshot(request)),
            answer: None,
            upgrade,
        }
    }
}

pin_project! {
    /// An answer counted in the server's [`Traffic`] when it has one.
    struct Counted<F> {
        #[pin]
        inner: F,
        traffic: Option<(Traffic, tokio::time::Instant)>,
    }
}

impl<F, B> Future for Counted<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<Timed<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        let status = response.status().as_u16();
        Poll::Ready(Ok(match this.traffic.take() {
            Some((traffic, arrived)) => {
                response.map(|body| traffic.answered(status, arrived, body))
            }
            None => response.map(Timed::untimed),
        }))
    }
}

/// The proxy's own answer to a request it must not forward (see
/// [`rules::refusal`]).
fn refusal(
    request: &Request<ClientBody>,
    max_header_bytes: Option<usize>,
) -> Option<Response<ProxyBody>> {
    let refusal = rules::refusal(request, max_header_bytes)?;
    let mut response = text_response(refusal.status(), refusal.line());
    let headers = response.headers_mut();
    if refusal == Refusal::Connect {
        headers.insert(ALLOW, HeaderValue::from_static(rules::ALLOWED_METHODS));
    }
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    Some(response)
}

pin_project! {
    /// One request through the stack, its outcome turned into a response;
    /// or the proxy's own answer.
    struct ProxyFuture<P>
    where
        P: Pick<Request<UpstreamBody>, Endpoint>,
    {
        #[pin]
        call: Option<Oneshot<Stack<P>, Request<ClientBody>>>,
        answer: Option<Response<ProxyBody>>,
        // The client's side of a protocol switch it asked for.
        upgrade: Option<OnUpgrade>,
    }
}

impl<P> ProxyFuture<P>
where
    P: Pick<Request<UpstreamBody>, Endpoint>,
{
    fn answered(response: Response<ProxyBody>) -> Self {
        Self {
            call: None,
            answer: Some(response),
            upgrade: None,
        }
    }
}

impl<P> Future for ProxyFuture<P>
where
    P: Pick<Request<UpstreamBody>, Endpoint>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(call) = this.call.as_pin_mut() else {
            let answer = this.answer.take().unwrap_or_else(|| {
                text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "polled after completion\n",
                )
            });
            return Poll::Ready(Ok(answer));
        };
        Poll::Ready(Ok(match ready!(call.poll(cx)) {
            Ok(mut response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                match this.upgrade.take() {
                    Some(client) => {
                        let backend = hyper::upgrade::on(&mut response);
                        tokio::spawn(tunnel(client, backend));
                        let (mut parts, body) = response.into_parts();
                        tower_lb::http::strip_hop_by_hop(&mut parts.headers, true);
                        Response::from_parts(parts, Either::Left(body))
                    }
                    None => {
                        tracing::warn!("a backend switched protocols unasked");
                        text_response(
                            StatusCode::BAD_GATEWAY,
                            "the backend switched protocols unasked\n",
                        )
                    }
                }
            }
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                tower_lb::http::strip_hop_by_hop(&mut parts.headers, false);
                Response::from_parts(parts, Either::Left(body))
            }
            Err(error) => error_response(&*error),
        }))
    }
}

/// Carries bytes both ways between a client and a backend that switched
/// protocols, until either side closes.
async fn tunnel(client: OnUpgrade, backend: OnUpgrade) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(both) => both,
        Err(error) => {
            tracing::debug!(%error, "a protocol switch did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut backend = TokioIo::new(backend);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        tracing::debug!(%error, "an upgraded connection ended with an error");
    }
}

/// 400 when the request itself failed (its body was malformed or cut
/// short), 503 when there is no backend to send to, 504 when the backend
/// did not answer in time, 502 for any other failure to get an answer.
fn status_for(error: &(dyn Error + 'static)) -> StatusCode {
    if is_request_fault(error) {
        return StatusCode::BAD_REQUEST;
    }
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
    let text = match status {
        StatusCode::BAD_REQUEST => {
            tracing::debug!(%status, error = %Chain(error), "the request failed by its own fault");
            "the request body was malformed or incomplete\n"
        }
        StatusCode::SERVICE_UNAVAILABLE => "no backend available\n",
        StatusCode::GATEWAY_TIMEOUT => "the backend did not answer in time\n",
        _ => "the backend could not be reached\n",
    };
    if status != StatusCode::BAD_REQUEST {
        tracing::warn!(%status, error = %Chain(error), "request failed");
    }
    let mut response = text_response(status, text);
    if status == StatusCode::BAD_REQUEST {
        // The rest of a broken body must not be read as the next request.
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn text_response(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
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
