//! Endpoints from DNS: A/AAAA records with a port, or SRV records,
//! re-resolved as their TTLs run out.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::diff::Diff;

mod error;
mod poll;
mod resolve;

pub use self::error::ResolveError;
use self::poll::State;

/// The shortest time between two resolutions unless told otherwise.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);

/// The longest time between two resolutions unless told otherwise.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);

/// No setting re-resolves more often than this, so records with TTL 0
/// cannot make a query loop.
const FLOOR: Duration = Duration::from_millis(10);

/// What a [`DnsDiscover`] does when the servers answer that the name has no
/// records: `NXDOMAIN`, no record of the type asked, or SRV records whose
/// targets have no address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnEmpty {
    /// Remove every endpoint (the default). An answer that the name has no
    /// address is information, not a failure: in Kubernetes, a headless
    /// service scaled to zero or with no ready pod answers so, and its old
    /// pod addresses may already belong to other pods.
    #[default]
    Clear,
    /// Keep the last endpoints, as on a failure. For zones where an empty
    /// answer is more likely a mistake than the truth (a hand-kept zone in
    /// the middle of an edit).
    KeepLast,
}

/// A `Discover` over DNS: the addresses of a name, kept current by
/// resolving it again when its records' TTL runs out.
///
/// * [`DnsDiscover::a_aaaa`]: each A and AAAA address of a name, with a
///   fixed port, weight 1 each.
/// * [`DnsDiscover::srv`]: the targets and ports of a name's SRV records.
///   Only the group with the lowest priority number is used (RFC 2782:
///   higher numbers are fallbacks, used when that group is gone from DNS);
///   the SRV weight becomes the endpoint weight, weight 0 counting as 1
///   (RFC 2782 gives it a small chance, not none). A target with several
///   addresses gives each the record's weight; an address reached by two
///   records gets the sum. A target of `.` is left out.
///
/// Each endpoint's service is made by `make(addr)` when it first appears (or
/// its weight changes, which replaces it); addresses that stay in the
/// answer yield nothing, so their services keep their state.
///
/// # Timing
///
/// The name is resolved when the stream is first polled, then again after
/// the smallest TTL of the records used, clamped to
/// [`min_ttl`](DnsDiscover::min_ttl) (1 s) and
/// [`max_ttl`](DnsDiscover::max_ttl) (5 min). The resolver's cache is
/// bypassed, so the ceiling holds even for long TTLs.
///
/// # Failures and empty answers
///
/// On a failure (timeout, `SERVFAIL`, no reachable server, or a failed
/// lookup of any SRV target) the last good set stays, the stream yields a
/// [`ResolveError`] (the balancer logs it at `warn`) and the name is
/// resolved again after `min_ttl`. Each distinct error is yielded once until
/// the servers answer again, so a long outage is not logged every second.
///
/// An empty answer is not a failure: by default ([`OnEmpty::Clear`]) it
/// removes every endpoint, see [`OnEmpty`]. The next resolution is after the
/// zone's negative TTL, clamped the same way.
///
/// A setup that cannot work (an invalid or empty name, an empty list of
/// name servers, an unreadable system configuration) yields one error and
/// ends the stream; the balancer keeps its (empty) set.
///
/// The stream must be polled inside a tokio runtime (the balancer's worker
/// is, when spawned by [`Balance::new`](crate::Balance::new)).
///
/// # Name servers
///
/// By default the system configuration (`/etc/resolv.conf`, with its search
/// domains) is used; [`name_servers`](DnsDiscover::name_servers) asks only
/// the given servers, over UDP and over TCP when an answer is truncated,
/// without reading the hosts file. Give a fully qualified name (ending in
/// `.`) to skip search domains: in a Kubernetes pod (`ndots:5`) that saves
/// several queries a resolution.
///
/// # Example
///
/// ```no_run
/// use std::net::SocketAddr;
/// use std::time::Duration;
/// use tower_lb::{discover::DnsDiscover, Balance};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let make = |addr: SocketAddr| {
///     tower::service_fn(move |_req: ()| async move { Ok::<_, std::convert::Infallible>(addr) })
/// };
/// // A Kubernetes headless service: one A record for each ready pod.
/// let pods = DnsDiscover::a_aaaa("api.default.svc.cluster.local.", 8080, make)
///     .max_ttl(Duration::from_secs(30));
/// let balance = Balance::new(pods, tower_lb::pick::RoundRobin::new());
///
/// // SRV records from a given name server, weights included.
/// let consul = DnsDiscover::srv("api.service.consul.", make)
///     .name_servers(["127.0.0.1:8600".parse().unwrap()]);
/// let weighted = Balance::new(consul, tower_lb::pick::WeightedRoundRobin::new());
/// # let _ = (balance, weighted);
/// # }
/// ```
pub struct DnsDiscover<F> {
    name: String,
    port: Option<u16>,
    make: F,
    servers: Option<Vec<SocketAddr>>,
    timeout: Option<Duration>,
    min_ttl: Duration,
    max_ttl: Duration,
    on_empty: OnEmpty,
    state: State,
    diff: Diff,
    error: Option<ResolveError>,
    /// The errors yielded since the last answer, as text: each is yielded
    /// once, however the resolver alternates between them.
    reported: Vec<String>,
    empty: bool,
}

/// How many distinct errors one spell of failures yields at most.
const MAX_REPORTED: usize = 8;

impl<F> fmt::Debug for DnsDiscover<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsDiscover")
            .field("name", &self.name)
            .field("record", &self.record())
            .field("port", &self.port)
            .field("name_servers", &self.servers)
            .field("min_ttl", &self.min_ttl)
            .field("max_ttl", &self.max_ttl)
            .field("on_empty", &self.on_empty)
            .field("endpoints", &self.diff.len())
            .field("failing", &!self.reported.is_empty())
            .finish()
    }
}

impl<F> DnsDiscover<F> {
    /// Follows the A and AAAA records of `name`: one endpoint at `port` for
    /// each address, weight 1. Nothing is resolved until the stream is polled.
    ///
    /// `name` is a host name; an IP address is looked up as a name too (and
    /// is not found): fixed addresses belong in a
    /// [`StaticList`](crate::discover::StaticList).
    pub fn a_aaaa(name: impl Into<String>, port: u16, make: F) -> Self {
        Self::new(name.into(), Some(port), make)
    }

    /// Follows the SRV records of `name` (such as
    /// `_http._tcp.api.default.svc.cluster.local.`): one endpoint for each
    /// address of each target in the lowest-priority group, at the record's
    /// port, with the record's weight.
    pub fn srv(name: impl Into<String>, make: F) -> Self {
        Self::new(name.into(), None, make)
    }

    fn new(name: String, port: Option<u16>, make: F) -> Self {
        Self {
            name,
            port,
            make,
            servers: None,
            timeout: None,
            min_ttl: DEFAULT_MIN_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            on_empty: OnEmpty::default(),
            state: State::Start,
            diff: Diff::default(),
            error: None,
            reported: Vec::new(),
            empty: false,
        }
    }

    /// Asks only these name servers (UDP, and TCP for truncated answers),
    /// instead of the system configuration.
    #[must_use]
    pub fn name_servers(mut self, servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.servers = Some(servers.into_iter().collect());
        self
    }

    /// The shortest time between resolutions, whatever the TTL, and the
    /// wait before retrying after a failure; 1 s by default. Values below
    /// 10 ms are raised to 10 ms.
    #[must_use]
    pub fn min_ttl(mut self, min: Duration) -> Self {
        self.min_ttl = min;
        self
    }

    /// The longest time between resolutions, whatever the TTL; 5 min by
    /// default. A value below [`min_ttl`](Self::min_ttl) is raised to it.
    #[must_use]
    pub fn max_ttl(mut self, max: Duration) -> Self {
        self.max_ttl = max;
        self
    }

    /// How long to wait for a name server's answer before trying again or
    /// giving up; the resolver's own default (5 s, or the system
    /// configuration's) unless set.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// What an answer with no records does; [`OnEmpty::Clear`] by default.
    #[must_use]
    pub fn on_empty(mut self, on_empty: OnEmpty) -> Self {
        self.on_empty = on_empty;
        self
    }

    /// The name followed.
    pub fn name(&self) -> &str {
        &self.name
    }
}
