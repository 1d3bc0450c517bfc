//! One backend as a tower service: a shared hyper-util client pinned to the
//! backend's address, and the header rules of a reverse proxy.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::header::{CONNECTION, UPGRADE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{self, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pin_project_lite::pin_project;
use tower::Service;
use tower_lb::endpoint::ReportCell;
use tower_lb::retry::ReplayBody;
use tower_lb::BoxError;

use tower_lb::classify::is_request_fault;
use tower_lb::http::{ResponseTimeout, ResponseTimeoutFuture, SentBody};

use super::connect::Connector;
use super::guard::ClientBody;

/// The request body as the retry layer hands it to a backend.
pub type UpstreamBody = ReplayBody<ClientBody>;

/// The one client every backend shares: its pool keeps connections to each
/// backend alive. `B` is the request body as the retry layer hands it on (a
/// gateway that reads bodies before the retry layer has another type).
pub type HttpClient<B = UpstreamBody> = Client<Connector, SentBody<B>>;

/// How long connecting to a backend may take before the attempt fails (and
/// is retried elsewhere).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle connections kept for each backend (nginx's `keepalive 32`): after a
/// burst of N requests at once, N - 32 connections and their buffers are
/// closed at once instead of lingering for the idle timeout. With 256 kept,
/// five floods of 5,000 client connections left RSS 15 % above its level
/// after the first; with 32, 3 %.
const MAX_IDLE_PER_BACKEND: usize = 32;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub fn client<B>() -> HttpClient<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut connector = HttpConnector::new();
    // Small requests and answers must not wait for delayed acknowledgements.
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(MAX_IDLE_PER_BACKEND)
        .build(Connector(connector))
}

/// Sends requests to one backend: fills in the scheme and authority (the
/// path and query stay the client's), bounds the wait for the response
/// head (from the end of the request body) and counts failed attempts.
///
/// It is the innermost service, under the health wrapper: a timed-out
/// attempt is an error that outlier detection counts against this backend.
#[derive(Debug)]
pub struct Forward<B = UpstreamBody> {
    client: ResponseTimeout<HttpClient<B>>,
    authority: Authority,
    failures: Arc<AtomicU64>,
    reports: Option<Reports>,
}

/// Where a backend's load reports go (`--algorithm scored`): ORCA headers
/// of its answers (asked for with `--load-reports`) and its Prometheus page
/// (`--metrics-path`, polled while the endpoint lives).
#[derive(Clone, Debug)]
pub struct Reports {
    pub cell: ReportCell,
    pub ask: bool,
    pub _poller: Option<Arc<tower_lb::report::PollerHandle>>,
}

const LOAD_METRICS: HeaderName = HeaderName::from_static("endpoint-load-metrics");
const LOAD_METRICS_FORMAT: HeaderName = HeaderName::from_static("endpoint-load-metrics-format");

// By hand: a derive would ask for `B: Clone`, which no body is.
impl<B> Clone for Forward<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            authority: self.authority.clone(),
            failures: Arc::clone(&self.failures),
            reports: self.reports.clone(),
        }
    }
}

impl<B> Forward<B> {
    pub fn new(client: HttpClient<B>, addr: SocketAddr, attempt_timeout: Duration) -> Self {
        let authority =
            Authority::try_from(addr.to_string()).expect("a socket address is a valid authority");
        Self {
            client: ResponseTimeout::new(client, attempt_timeout),
            authority,
            failures: Arc::default(),
            reports: None,
        }
    }

    /// The same backend, recording its load reports into `reports.cell`.
    pub fn with_reports(mut self, reports: Reports) -> Self {
        self.reports = Some(reports);
        self
    }

    /// Where its load reports go, if anywhere.
    pub fn report_cell(&self) -> Option<&ReportCell> {
        self.reports.as_ref().map(|r| &r.cell)
    }

    /// Attempts that failed for the backend's sake: no response, or a 5xx
    /// one (a request that failed by its own fault is not counted).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

impl<B> Service<Request<B>> for Forward<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The legacy client is always ready; its pool waits inside the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> ForwardFuture {
        let mut uri = std::mem::take(request.uri_mut()).into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        if self.reports.as_ref().is_some_and(|r| r.ask) {
            request
                .headers_mut()
                .insert(LOAD_METRICS_FORMAT, HeaderValue::from_static("TEXT"));
        }
        let (inner, error) = match Uri::from_parts(uri) {
            Ok(uri) => {
                *request.uri_mut() = uri;
                (Some(self.client.call(request)), None)
            }
            Err(error) => (None, Some(error.into())),
        };
        ForwardFuture {
            inner,
            error,
            failures: Arc::clone(&self.failures),
            report: self.reports.as_ref().map(|r| r.cell.clone()),
        }
    }
}

pin_project! {
    /// The client's response future (timed from the end of the request
    /// body), counting what fails.
    pub struct ForwardFuture {
        #[pin]
        inner: Option<ResponseTimeoutFuture<legacy::ResponseFuture>>,
        // Why there is no request to send, when there is none.
        error: Option<BoxError>,
        failures: Arc<AtomicU64>,
        report: Option<ReportCell>,
    }
}

impl Future for ForwardFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.as_pin_mut() {
            Some(future) => ready!(future.poll(cx)),
            None => Err(this
                .error
                .take()
                .unwrap_or_else(|| "polled after completion".into())),
        };
        let failed = match &result {
            Ok(response) => response.status().is_server_error(),
            Err(error) => !is_request_fault(&**error),
        };
        if failed {
            this.failures.fetch_add(1, Ordering::Relaxed);
        }
        let mut result = result;
        if let (Some(cell), Ok(response)) = (this.report.take(), &mut result) {
            // The backend's report is for the proxy, not its clients.
            if let Some(value) = response.headers_mut().remove(LOAD_METRICS) {
                record(&cell, value.as_bytes());
            }
        }
        Poll::Ready(result)
    }
}

/// Records an ORCA report header; one that does not parse is ignored (the
/// header is kept from clients either way).
fn record(cell: &ReportCell, value: &[u8]) {
    if let Ok(report) = tower_lb::report::parse_header(value) {
        cell.record(&report);
    }
}

/// Whether `headers` ask to switch protocols (`Connection: upgrade` with an
/// `Upgrade` header).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// The client's address as it goes into `X-Forwarded-For`: made once per
/// connection, then cloned (a reference count) for each request.
pub fn forwarded_for(peer: SocketAddr) -> HeaderValue {
    // An IPv4 client of a dual-stack listener shows as IPv4.
    let ip: IpAddr = peer.ip().to_canonical();
    HeaderValue::try_from(ip.to_string()).expect("an IP address is a valid header value")
}

/// Appends the client to `X-Forwarded-For`, joining earlier lines into one
/// as RFC 9110 allows.
pub fn append_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) {
    let mut earlier = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    if earlier.peek().is_none() {
        headers.insert(X_FORWARDED_FOR, client.clone());
        return;
    }
    let mut joined = BytesMut::new();
    for value in earlier {
        joined.extend_from_slice(value.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(client.as_bytes());
    // Made of valid header values and ", ": valid too.
    if let Ok(value) = HeaderValue::from_maybe_shared(joined.freeze()) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}
