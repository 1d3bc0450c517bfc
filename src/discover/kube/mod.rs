//! The endpoints of a Kubernetes Service, from its EndpointSlices.
//!
//! [`KubeDiscover`] watches the EndpointSlices of one Service (those
//! labelled `kubernetes.io/service-name=SERVICE`) through kube-rs's runtime
//! watcher and yields the addresses of one of the Service's ports:
//!
//! | EndpointSlice conditions | in the balancer |
//! |---|---|
//! | `ready` (or unset) | an endpoint, weight 1 |
//! | `serving` and `terminating` | drains: weight 0, the same service, so requests in flight finish and no new one comes; removed when the slice drops it |
//! | otherwise (not ready, or terminating and not serving) | removed (or never inserted) |
//!
//! Each endpoint carries its `zone` and `nodeName` as
//! [`Endpoint::zone`](crate::endpoint::Endpoint::zone) and
//! [`Weighted::node`](crate::endpoint::Weighted::node), for
//! [`ZonePreference`](crate::pick::ZonePreference).
//!
//! # RBAC
//!
//! The client's service account needs `list` and `watch` on
//! `endpointslices` of the `discovery.k8s.io` group in the namespace:
//!
//! ```yaml
//! apiVersion: rbac.authorization.k8s.io/v1
//! kind: Role
//! metadata: { name: tower-lb-discovery, namespace: NAMESPACE }
//! rules:
//!   - apiGroups: ["discovery.k8s.io"]
//!     resources: ["endpointslices"]
//!     verbs: ["list", "watch"]
//! ---
//! apiVersion: rbac.authorization.k8s.io/v1
//! kind: RoleBinding
//! metadata: { name: tower-lb-discovery, namespace: NAMESPACE }
//! subjects: [{ kind: ServiceAccount, name: SERVICE_ACCOUNT, namespace: NAMESPACE }]
//! roleRef: { kind: Role, name: tower-lb-discovery, apiGroup: rbac.authorization.k8s.io }
//! ```
//!
//! # TLS
//!
//! The feature enables kube's client without TLS, to keep builds short: a
//! plain-HTTP API server (`kubectl proxy`, a sidecar) works as is. For an
//! in-cluster HTTPS API server, enable a TLS feature of `kube` in your own
//! `Cargo.toml` (`kube = { version = "5", features = ["rustls-tls"] }`):
//! cargo merges the features and [`KubeDiscover`] takes the same
//! [`kube::Client`].

mod slices;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Client};
use tokio::time::Sleep;
use tower::discover::Change;

pub use self::slices::ServicePort;
use self::slices::{merge, read_slice, SliceEndpoint};
use super::located::Tracked;
use crate::endpoint::Weighted;

/// The label EndpointSlices carry with the name of their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The longest pause after consecutive watch errors unless told otherwise.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);

type Events = Pin<Box<dyn Stream<Item = Result<Event<EndpointSlice>, watcher::Error>> + Send>>;

/// A `Discover` over the EndpointSlices of one Kubernetes Service: the
/// addresses of one of its ports, kept current by a list and watch.
///
/// # Behaviour
///
/// * The first poll lists the Service's slices (in pages), then watches
///   them from the list's `resourceVersion`, with bookmarks. Slices are
///   merged by name; an address listed by several slices (while endpoints
///   move between them) takes its best state.
/// * Each address is keyed by address and port (`SocketAddr`); a new one
///   gets a service from `make(addr)`, kept for as long as the address is
///   known: draining and a changed zone re-insert *the same* service.
/// * A watch that ends is resumed from the last `resourceVersion` seen.
///   A watch that answers 410 Gone (the version was compacted) makes the
///   watcher list again; the new list replaces the old set, and only the
///   differences are yielded.
/// * While the API server is unreachable or fails, the stream yields a
///   [`KubeError`] and pauses before retrying (100 ms, doubling, at most
///   [`DEFAULT_MAX_BACKOFF`]); the balancer logs the error and keeps the
///   endpoints it has.
///
/// # Cost
///
/// Every slice event merges all slices of the Service: O(n) in its
/// endpoints, on the discovery worker. Memory: the parsed slices and one
/// service an address.
///
/// # Weights
///
/// Ready endpoints have weight 1, draining ones 0. EndpointSlices carry no
/// weights.
///
/// # No endpoints
///
/// A Service without ready endpoints (or without the port) yields an empty
/// set: that is what the API server says, unlike a failure, which keeps
/// the last set.
///
/// # Bad input
///
/// Addresses that are not IP addresses are skipped with a `warn` log; FQDN
/// slices, slices without the port, and ports out of range list nothing;
/// an object the client cannot decode is reported as an error and the
/// watch goes on. Nothing panics.
///
/// # Example
///
/// ```no_run
/// use std::net::SocketAddr;
/// use tower_lb::{discover::kube::KubeDiscover, pick::RoundRobin, Balance};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = kube::Client::try_default().await?;
/// let make = |addr: SocketAddr| {
///     tower::service_fn(move |_: ()| async move { Ok::<_, std::convert::Infallible>(addr) })
/// };
/// let discover = KubeDiscover::new(client, "shop", "checkout", "http", make);
/// let balance = Balance::new(discover, RoundRobin::new());
/// # Ok(()) }
/// ```
pub struct KubeDiscover<S, F> {
    target: String,
    port: ServicePort,
    make: F,
    events: Events,
    slices: HashMap<String, Vec<SliceEndpoint>>,
    /// The slices of a list in progress (after the watcher's `Init`).
    relisting: Option<HashMap<String, Vec<SliceEndpoint>>>,
    tracked: Tracked<S>,
    pause: Option<Pin<Box<Sleep>>>,
    errors: u32,
    max_backoff: Duration,
}

impl<S, F> KubeDiscover<S, F>
where
    F: FnMut(SocketAddr) -> S,
    S: Clone,
{
    /// Watches the EndpointSlices of `service` in `namespace` through
    /// `client`, yielding the addresses of `port` (a port name such as
    /// `"http"`, or a number), each with a service from `make`.
    pub fn new(
        client: Client,
        namespace: &str,
        service: &str,
        port: impl Into<ServicePort>,
        make: F,
    ) -> Self {
        let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
        let config = watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={service}"));
        let port = port.into();
        Self {
            target: format!("{namespace}/{service}:{port}"),
            port,
            make,
            events: Box::pin(watcher(api, config)),
            slices: HashMap::new(),
            relisting: None,
            tracked: Tracked::default(),
            pause: None,
            errors: 0,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }

    /// The longest pause between retries while the API server fails
    /// ([`DEFAULT_MAX_BACKOFF`] unless set; at least 1 ms).
    #[must_use]
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max.max(Duration::from_millis(1));
        self
    }

    fn apply(&mut self, event: Event<EndpointSlice>) {
        match event {
            Event::Init => {
                self.relisting = Some(HashMap::new());
                return;
            }
            Event::InitApply(slice) => {
                let (name, endpoints) = self.read(&slice);
                match &mut self.relisting {
                    Some(relisting) => {
                        relisting.insert(name, endpoints);
                        return;
                    }
                    None => {
                        self.slices.insert(name, endpoints);
                    }
                }
            }
            Event::InitDone => {
                let listed = self.relisting.take().unwrap_or_default();
                tracing::debug!(target = %self.target, slices = listed.len(), "EndpointSlices listed");
                self.slices = listed;
            }
            Event::Apply(slice) => {
                let (name, endpoints) = self.read(&slice);
                self.slices.insert(name, endpoints);
            }
            Event::Delete(slice) => {
                let name = slice.metadata.name.unwrap_or_default();
                self.slices.remove(&name);
            }
        }
        self.tracked
            .update(merge(self.slices.values()), &mut self.make);
    }

    fn read(&self, slice: &EndpointSlice) -> (String, Vec<SliceEndpoint>) {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let (endpoints, skipped) = read_slice(slice, &self.port);
        if skipped > 0 {
            tracing::warn!(
                target = %self.target,
                slice = %name,
                skipped,
                "EndpointSlice addresses that are not IP addresses skipped"
            );
        }
        (name, endpoints)
    }

    fn backoff(&self) -> Duration {
        let exponent = self.errors.saturating_sub(1).min(16);
        Duration::from_millis(100u64 << exponent).min(self.max_backoff)
    }
}

impl<S, F> Stream for KubeDiscover<S, F>
where
    F: FnMut(SocketAddr) -> S + Unpin,
    S: Clone + Unpin,
{
    type Item = Result<Change<SocketAddr, Weighted<S>>, KubeError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.tracked.next_change() {
                return Poll::Ready(Some(Ok(change)));
            }
            if let Some(pause) = &mut this.pause {
                ready!(pause.as_mut().poll(cx));
                this.pause = None;
            }
            match ready!(this.events.as_mut().poll_next(cx)) {
                Some(Ok(event)) => {
                    this.errors = 0;
                    this.apply(event);
                }
                Some(Err(source)) => {
                    this.errors = this.errors.saturating_add(1);
                    this.pause = Some(Box::pin(tokio::time::sleep(this.backoff())));
                    return Poll::Ready(Some(Err(KubeError {
                        target: this.target.clone(),
                        source,
                    })));
                }
                None => return Poll::Ready(None),
            }
        }
    }
}

impl<S, F> fmt::Debug for KubeDiscover<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeDiscover")
            .field("target", &self.target)
            .field("slices", &self.slices.len())
            .field("endpoints", &self.tracked.len())
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

/// Listing or watching the EndpointSlices failed; the last set is kept.
#[derive(Debug)]
pub struct KubeError {
    target: String,
    source: watcher::Error,
}

impl KubeError {
    /// The watcher's error.
    pub fn watcher_error(&self) -> &watcher::Error {
        &self.source
    }

    /// Whether the API server answered 410 Gone (the watch's version was
    /// compacted): the watcher lists again, nothing is lost.
    pub fn is_gone(&self) -> bool {
        matches!(&self.source, watcher::Error::WatchError(status) if status.code == 410)
    }
}

impl fmt::Display for KubeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointSlices of {}: {}", self.target, self.source)
    }
}

impl std::error::Error for KubeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
