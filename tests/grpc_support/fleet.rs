//! Servers and the balancer over them, as the gRPC tests set them up.

use std::net::SocketAddr;

use tonic::transport::Channel;
use tower_lb::discover::EndpointSender;
use tower_lb::endpoint::Weighted;
use tower_lb::load::{Counter, InFlight};
use tower_lb::pick::Prepare;
use tower_lb::Balance;

use super::fleet_start::{start_fleet, Started};
use super::{start, Backend, Mode};

/// Each endpoint: a tonic channel (or a wrapper around one), counted in
/// flight until its response body (trailers included) ends.
pub type Endpoint<C = Channel> = InFlight<C>;

/// The balancer the tests hand to tonic as its transport.
pub type GrpcBalance<P, C = Channel> = Balance<SocketAddr, Weighted<Endpoint<C>>, P>;

/// Three healthy servers.
pub const HEALTHY: [(&str, Mode); 3] = [
    ("a", Mode::Healthy),
    ("b", Mode::Healthy),
    ("c", Mode::Healthy),
];

/// The running servers, their endpoints' counters (index for index) and the
/// sender that changes the balancer's set.
pub struct Fleet<C = Channel> {
    pub backends: Vec<Backend>,
    pub counters: Vec<Counter>,
    pub endpoints: EndpointSender<SocketAddr, Endpoint<C>>,
}

impl Fleet {
    /// Starts one server per entry of `modes` and a balancer with `picker`
    /// over them, each reached through its own channel; returns once the
    /// balancer knows them all.
    pub async fn start<P: Prepare>(
        modes: &[(&'static str, Mode)],
        picker: P,
    ) -> (Self, GrpcBalance<P>) {
        Self::start_with(modes, picker, |channel| channel).await
    }
}

impl<C: Clone + Send + Sync + 'static> Fleet<C> {
    /// As [`Fleet::start`], with each server's channel wrapped by `wrap`.
    pub async fn start_with<P: Prepare>(
        modes: &[(&'static str, Mode)],
        picker: P,
        wrap: impl Fn(Channel) -> C,
    ) -> (Self, GrpcBalance<P, C>) {
        let Started {
            backends,
            counters,
            endpoints,
            balance,
        } = start_fleet(
            modes,
            picker,
            |&(id, mode)| start(id, mode),
            |backend| (backend.addr, wrap(backend.channel())),
        )
        .await;
        let fleet = Self {
            backends,
            counters,
            endpoints,
        };
        (fleet, balance)
    }

    /// The server with this id.
    pub fn backend(&self, id: &str) -> &Backend {
        self.backends
            .iter()
            .find(|b| b.id == id)
            .expect("a known server id")
    }

    /// Each endpoint's calls in flight, in the order of `modes`.
    pub fn in_flight(&self) -> Vec<usize> {
        self.counters.iter().map(Counter::in_flight).collect()
    }
}
