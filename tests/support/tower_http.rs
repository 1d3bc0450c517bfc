//! For the tower-http composition tests: a fleet of backends behind a
//! balancer whose endpoints are hyper clients, a recorder of the failures
//! tower-http's `Trace` reports, and a retry policy decided by a tower-http
//! classifier.

use std::fmt;
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::retry::Policy;
use tower_http::classify::{ClassifiedResponse, ClassifyResponse, ServerErrorsFailureClass};
use tower_lb::discover::EndpointSender;
use tower_lb::endpoint::Weighted;
use tower_lb::http::SetAuthority;
use tower_lb::load::{Counter, InFlight};
use tower_lb::pick::Prepare;
use tower_lb::Balance;

use super::fleet::{start_fleet, Started};
use super::Backend;

/// A hyper client pinned to one backend by the crate's [`SetAuthority`]: it
/// fills in the scheme and authority, so requests through the balancer carry
/// only a path.
pub type HttpEndpoint = SetAuthority<Client<HttpConnector, Full<Bytes>>>;

/// An endpoint for the backend at `addr`, sharing `client`'s pool.
pub fn http_endpoint(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
) -> HttpEndpoint {
    SetAuthority::from_addr(client.clone(), addr)
}

/// One client (one connection pool) for all endpoints.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Each endpoint: a hyper client pinned to one backend, counted in flight
/// until its response body ends.
pub type Endpoint = InFlight<HttpEndpoint>;

/// Three backends answering 200.
pub const HEALTHY: [(&str, StatusCode); 3] = [
    ("a", StatusCode::OK),
    ("b", StatusCode::OK),
    ("c", StatusCode::OK),
];

/// The running backends, their endpoints' counters (index for index) and
/// the sender that feeds the balancer.
pub struct Fleet {
    pub backends: Vec<Backend>,
    pub counters: Vec<Counter>,
    /// Keeps the discovery stream open.
    pub endpoints: EndpointSender<SocketAddr, Endpoint>,
}

impl Fleet {
    /// Starts a backend per entry of `statuses` (its id and the status it
    /// answers `/` with) and a balancer over them.
    pub async fn start<P: Prepare>(
        statuses: &[(&'static str, StatusCode)],
        picker: P,
    ) -> (Self, Balance<SocketAddr, Weighted<Endpoint>, P>) {
        let client = client();
        let Started {
            backends,
            counters,
            endpoints,
            balance,
        } = start_fleet(
            statuses,
            picker,
            |&(id, status)| Backend::builder(id).status(status).start(),
            |backend| (backend.addr(), http_endpoint(&client, backend.addr())),
        )
        .await;
        let fleet = Self {
            backends,
            counters,
            endpoints,
        };
        (fleet, balance)
    }

    pub fn in_flight(&self) -> Vec<usize> {
        self.counters.iter().map(Counter::in_flight).collect()
    }

    /// Requests each backend has received, on any route.
    pub fn calls(&self) -> Vec<usize> {
        self.backends.iter().map(Backend::requests).collect()
    }

    /// Waits until a request is held at some backend's `/slow` gate.
    pub async fn wait_slow(&self) {
        let waits = self.backends.iter().map(|b| Box::pin(b.wait_held(1)));
        futures_util::future::select_all(waits).await;
    }
}

/// The failures tower-http's `Trace` reported, as its default HTTP
/// classifier (`ServerErrorsAsFailures`) saw them.
#[derive(Clone, Default)]
pub struct Failures(Arc<Mutex<Vec<ServerErrorsFailureClass>>>);

impl Failures {
    pub fn record(&self) -> impl Fn(ServerErrorsFailureClass, Duration, &tracing::Span) + Clone {
        let failures = Arc::clone(&self.0);
        move |class, _latency, _span| failures.lock().unwrap().push(class)
    }

    pub fn taken(&self) -> Vec<ServerErrorsFailureClass> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A retry policy whose only notion of failure is a tower-http classifier:
/// a response or error it classifies as a failure is sent again, once.
#[derive(Clone)]
pub struct RetryOnFailure<C> {
    pub classifier: C,
    pub retries_left: usize,
    pub retries: Arc<AtomicUsize>,
}

impl<C, B, E> Policy<Request<Full<Bytes>>, Response<B>, E> for RetryOnFailure<C>
where
    C: ClassifyResponse + Clone,
    E: fmt::Display + 'static,
{
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _request: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<B>, E>,
    ) -> Option<Ready<()>> {
        let failed = match result {
            Ok(response) => match self.classifier.clone().classify_response(response) {
                ClassifiedResponse::Ready(class) => class.is_err(),
                // Known only at the end of the body: too late to retry.
                ClassifiedResponse::RequiresEos(_) => false,
            },
            Err(error) => {
                let _class = self.classifier.clone().classify_error(error);
                true
            }
        };
        if !failed || self.retries_left == 0 {
            return None;
        }
        self.retries_left -= 1;
        self.retries.fetch_add(1, Ordering::SeqCst);
        Some(ready(()))
    }

    fn clone_request(&mut self, request: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut clone = Request::new(request.body().clone());
        *clone.method_mut() = request.method().clone();
        *clone.uri_mut() = request.uri().clone();
        *clone.headers_mut() = request.headers().clone();
        Some(clone)
    }
}
