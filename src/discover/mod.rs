//! Sources of endpoint changes.
//!
//! A balancer follows a [`tower::discover::Discover`]: a stream of
//! `Change::Insert(key, service)` and `Change::Remove(key)`. This module gives
//! the sources every program needs, and any other stream of changes
//! (Kubernetes, Consul, etcd) plugs in the same way.
//!
//! * [`StaticList`]: a fixed set, weighted or not.
//! * [`channel`]: application code inserts and removes endpoints while
//!   requests flow.
//! * [`FileDiscover`]: the backends listed in a file (`ADDR[@WEIGHT]
//!   [zone=Z]` a line, see [`parse_backends`]), re-read as it is edited.
//! * `DnsDiscover` (feature `dns`): the addresses of a DNS name (A/AAAA
//!   records and a port, or SRV records), re-resolved as their TTLs run out.
//! * `kube::KubeDiscover` (feature `kube`): the EndpointSlices of a
//!   Kubernetes Service, with readiness, draining and zones.
//! * `etcd::EtcdDiscover` (feature `etcd`): the endpoints registered under
//!   an etcd key prefix, and `etcd::Registration` for servers.
//! * [`DefaultWeight`]: gives weight 1 to the services of any other
//!   `Discover`.
//! * [`Subset`]: a stable subset of `k` endpoints of any source, so that
//!   many clients of many servers each keep a few connections.
//!
//! Every endpoint carries a weight ([`Endpoint`](crate::endpoint::Endpoint)); these sources wrap
//! their services in [`Weighted`](crate::endpoint::Weighted), default weight 1.
//!
//! ```
//! use tower_lb::{discover, pick::WeightedRoundRobin, Balance};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = |name: &'static str| {
//!     tower::service_fn(move |_: ()| async move { Ok::<_, std::convert::Infallible>(name) })
//! };
//! let (endpoints, discover) = discover::channel();
//! let balance = Balance::new(discover, WeightedRoundRobin::new());
//! endpoints.insert_weighted("big", svc("big"), 3).unwrap();
//! endpoints.insert("small", svc("small")).unwrap();
//! balance.wait_for(|keys| keys.len() == 2).await;
//! endpoints.remove("small").unwrap();
//! balance.wait_for(|keys| keys.len() == 1).await;
//! # }
//! ```

mod backends;
mod channel;
mod default_weight;
mod diff;
#[cfg(feature = "dns")]
mod dns;
#[cfg(feature = "etcd")]
pub mod etcd;
mod file;
#[cfg(feature = "kube")]
pub mod kube;
mod list;
#[cfg(any(feature = "kube", feature = "etcd"))]
mod located;
mod subset;

pub use self::backends::{
    parse_backend, parse_backend_entry, parse_backends, parse_backends_with_zones, Backend,
    BackendsError, BackendsErrorKind, MAX_ENTRIES, MAX_FILE_LEN, MAX_LINE_LEN, MAX_ZONE_LEN,
};
pub use self::channel::{channel, ChannelDiscover, Closed, EndpointSender};
pub use self::default_weight::DefaultWeight;
#[cfg(feature = "dns")]
pub use self::dns::{DnsDiscover, OnEmpty, ResolveError, DEFAULT_MAX_TTL, DEFAULT_MIN_TTL};
pub use self::file::{FileDiscover, DEFAULT_FILE_INTERVAL, DEFAULT_READ_TIMEOUT};
pub use self::list::StaticList;
pub use self::subset::{Subset, SubsetMode};
