//! Backends and the balancer over them, as the tower-http tests set them up,
//! and a recorder of the failures tower-http's `Trace` reports.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tower_http::classify::ServerErrorsFailureClass;
use tower_lb::discover::EndpointSender;
use tower_lb::endpoint::Weighted;
use tower_lb::load::{Counter, InFlight};
use tower_lb::pick::Prepare;
use tower_lb::Balance;

use super::fleet_start::{start_fleet, Started};
use super::{client, http_endpoint, start, Backend, HttpEndpoint, Mode};

/// Each endpoint: a hyper client pinned to one backend, counted in flight
/// until its response body ends.
pub type Endpoint = InFlight<HttpEndpoint>;

/// The running backends, their endpoints' counters (index for index) and
/// the sender that feeds the balancer.
pub struct Fleet {
    pub backends: Vec<Backend>,
    pub counters: Vec<Counter>,
    /// Signalled by every `GET /slow` that reaches a backend.
    pub slow: Arc<Notify>,
    /// Keeps the discovery stream open.
    pub endpoints: EndpointSender<SocketAddr, Endpoint>,
}

impl Fleet {
    /// Starts a backend per entry of `modes` and a balancer over them.
    pub async fn start<P: Prepare>(
        modes: &[(&'static str, Mode)],
        picker: P,
    ) -> (Self, Balance<SocketAddr, Weighted<Endpoint>, P>) {
        let slow = Arc::new(Notify::new());
        let client = client();
        let Started {
            backends,
            counters,
            endpoints,
            balance,
        } = start_fleet(
            modes,
            picker,
            |&(id, mode)| start(id, mode, Arc::clone(&slow)),
            |backend| (backend.addr, http_endpoint(&client, backend.addr)),
        )
        .await;
        let fleet = Self {
            backends,
            counters,
            slow,
            endpoints,
        };
        (fleet, balance)
    }

    pub fn in_flight(&self) -> Vec<usize> {
        self.counters.iter().map(Counter::in_flight).collect()
    }

    pub fn calls(&self) -> Vec<usize> {
        self.backends.iter().map(Backend::calls).collect()
    }
}

pub const HEALTHY: [(&str, Mode); 3] = [
    ("a", Mode::Healthy),
    ("b", Mode::Healthy),
    ("c", Mode::Healthy),
];

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
