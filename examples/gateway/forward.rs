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
use http::header::{
    CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{self, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::Service;
use tower_lb::retry::ReplayBody;
use tower_lb::BoxError;

use super::connect::Connector;

/// The request body as the retry layer hands it to a backend.
pub(crate) type UpstreamBody = ReplayBody<Incoming>;

/// The one client every backend shares: its pool keeps connections to each
/// backend alive.
pub(crate) type HttpClient = Client<Connector, UpstreamBody>;

/// How long connecting to a backend may take before the attempt fails (and
/// is retried elsewhere).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub(crate) fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    // Small requests and answers must not wait for delayed acknowledgements.
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .build(Connector(connector))
}

/// Sends requests to one backend: fills in the scheme and authority (the
/// path and query stay the client's) and counts failed attempts.
#[derive(Clone, Debug)]
pub(crate) struct Forward {
    client: HttpClient,
    authority: Authority,
    failures: Arc<AtomicU64>,
}

impl Forward {
    pub(crate) fn new(client: HttpClient, addr: SocketAddr) -> Self {
        let authority =
            Authority::try_from(addr.to_string()).expect("a socket address is a valid authority");
        Self {
            client,
            authority,
            failures: Arc::default(),
        }
    }

    /// Attempts that failed: no response, or a 5xx one.
    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

impl Service<Request<UpstreamBody>> for Forward {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The legacy client is always ready; its pool waits inside the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<UpstreamBody>) -> ForwardFuture {
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        let inner = match Uri::from_parts(parts) {
            Ok(uri) => {
                *request.uri_mut() = uri;
                Ok(self.client.request(request))
            }
            Err(error) => Err(Some(error.into())),
        };
        ForwardFuture {
            inner,
            failures: Arc::clone(&self.failures),
        }
    }
}

/// The client's response future, counting what fails.
pub(crate) struct ForwardFuture {
    inner: Result<legacy::ResponseFuture, Option<BoxError>>,
    failures: Arc<AtomicU64>,
}

impl Future for ForwardFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let result = match &mut this.inner {
            Ok(future) => ready!(Pin::new(future).poll(cx)).map_err(BoxError::from),
            Err(error) => Err(error
                .take()
                .unwrap_or_else(|| "polled after completion".into())),
        };
        let failed = match &result {
            Ok(response) => response.status().is_server_error(),
            Err(_) => true,
        };
        if failed {
            this.failures.fetch_add(1, Ordering::Relaxed);
        }
        Poll::Ready(result)
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &PROXY_AUTHENTICATE,
        &PROXY_AUTHORIZATION,
        &TE,
        &TRAILER,
        &TRANSFER_ENCODING,
        &UPGRADE,
    ]
    .contains(&name)
}

/// Removes the headers that concern one connection only (RFC 9110 §7.6.1):
/// the fixed hop-by-hop set, and any header that `Connection` names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names, no lookups.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::try_from(token.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The client's address as it goes into `X-Forwarded-For`: made once per
/// connection, then cloned (a reference count) for each request.
pub(crate) fn forwarded_for(peer: SocketAddr) -> HeaderValue {
    // An IPv4 client of a dual-stack listener shows as IPv4.
    let ip: IpAddr = peer.ip().to_canonical();
    HeaderValue::try_from(ip.to_string()).expect("an IP address is a valid header value")
}

/// Appends the client to `X-Forwarded-For`, joining earlier lines into one
/// as RFC 9110 allows.
pub(crate) fn append_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) {
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
