//! A balancer over one in-flight-counted endpoint per started backend, as
//! the fleets of the gRPC and tower-http tests set it up.
//!
//! Used by [`grpc::Fleet`](super::grpc::Fleet) and
//! [`tower_http::Fleet`](super::tower_http::Fleet).

use std::future::Future;
use std::net::SocketAddr;

use tower_lb::discover::{self, EndpointSender};
use tower_lb::endpoint::Weighted;
use tower_lb::load::{Counter, InFlight};
use tower_lb::pick::Prepare;
use tower_lb::Balance;

/// What [`start_fleet`] started.
pub struct Started<B, S, P: Prepare> {
    /// The running backends, in the order of their modes.
    pub backends: Vec<B>,
    /// Each endpoint's in-flight counter, index for index with `backends`.
    pub counters: Vec<Counter>,
    /// The sender that changes the balancer's set; keeps discovery open.
    pub endpoints: EndpointSender<SocketAddr, InFlight<S>>,
    /// The balancer, knowing every backend.
    pub balance: Balance<SocketAddr, Weighted<InFlight<S>>, P>,
}

/// Starts a backend per entry of `modes` with `start`, inserts the endpoint
/// `endpoint` makes for it (keyed by its address) into a balancer with
/// `picker`, and returns once the balancer knows them all.
pub async fn start_fleet<M, B, S, P, Fut>(
    modes: &[M],
    picker: P,
    mut start: impl FnMut(&M) -> Fut,
    endpoint: impl Fn(&B) -> (SocketAddr, S),
) -> Started<B, S, P>
where
    Fut: Future<Output = B>,
    S: Clone + Send + Sync + 'static,
    P: Prepare,
{
    let (endpoints, discover) = discover::channel();
    let balance = Balance::new(discover, picker);
    let (mut backends, mut counters) = (Vec::new(), Vec::new());
    for mode in modes {
        let backend = start(mode).await;
        let (addr, service) = endpoint(&backend);
        let service = InFlight::new(service);
        counters.push(service.counter());
        endpoints
            .insert(addr, service)
            .expect("the balancer is alive");
        backends.push(backend);
    }
    balance.wait_for(|keys| keys.len() == modes.len()).await;
    Started {
        backends,
        counters,
        endpoints,
        balance,
    }
}
