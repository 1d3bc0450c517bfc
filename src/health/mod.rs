//! Health checks: dead endpoints leave rotation and come back.
//!
//! [`HealthDiscover`] (or [`HealthLayer`] in a `ServiceBuilder`) wraps
//! every endpoint of a `Discover` in [`Healthy`]. A `Healthy` endpoint is
//! *gated*: the balancer asks it on every pick whether it may take a request
//! (one atomic load), so **every picker** skips an unhealthy endpoint without
//! a table rebuild. Two sources decide, and either can be used alone:
//!
//! * **Active checks** ([`ActiveChecks`]): a probe per endpoint on an
//!   interval, with a timeout and seeded jitter: `HttpProbe` (feature
//!   `http`: method, path, expected statuses), [`TcpProbe`] (connect), or your own closure
//!   ([`probe_fn`]). `fall` failures in a row take an endpoint out, `rise`
//!   successes bring it back, as in HAProxy. New endpoints start healthy.
//!   First probes are spread over the interval (the k-th endpoint at k·φ mod
//!   1 of it), so N endpoints are never probed in one burst.
//! * **Passive outlier detection** ([`OutlierDetection`]): each response is
//!   judged as it completes, by a [`Classify`](crate::classify::Classify)er
//!   ([`ServerErrors`](crate::classify::ServerErrors) by default; with the
//!   `http` feature any tower-http classifier, `GrpcErrorsAsFailures` for
//!   gRPC; an error from the endpoint always counts). After N failures in a row the
//!   endpoint is ejected for a time that grows with each ejection, while a
//!   cap on the share of ejected endpoints (50 % by default) keeps a bad day
//!   from emptying the set.
//!
//! **Which wins.** An endpoint is in rotation when neither source holds it
//! out, and each source ends only what it started:
//!
//! * Passing probes end a `fall` that probes caused, never an ejection. A
//!   server can answer its health path and fail every real request; only
//!   real requests can show that it stopped.
//! * The end of an ejection does not bring back an endpoint that active
//!   checks hold down.
//!
//! # Probation
//!
//! An endpoint whose ejection is over comes back **on probation**: it
//! admits one request at a time, then, after k successes, 2^k at once; four
//! successes end the probation (then [slow start](#slow-start), if set).
//! One failure on probation ejects it again at once, and for longer (the
//! ejection count has had no time to decay). So a server that fails every
//! request costs one request per ejection, and its ejections grow to
//! `max_ejection`. An endpoint that is the only healthy one admits every
//! request. [`HealthState::SlowStart`] reports an endpoint on probation.
//!
//! # Slow start
//!
//! With [`HealthConfig::slow_start`], a new or returning endpoint admits a
//! rising share of the picks that reach it: 10 % at first, then
//! `elapsed / window`, raised in 20 steps by its task, until the window ends.
//! It is done at admission, not by rewriting weights (picker tables are
//! built only when the set changes): whichever picker is in use, a share of
//! the picks that would have chosen it are refused and go to the next
//! candidate. While no endpoint is past its slow start (a set starting up),
//! ramping endpoints admit every pick.
//!
//! # When every endpoint is unhealthy
//!
//! [`AllUnhealthy::FailFast`] (the default) answers each request at once
//! with [`NoHealthyEndpoints`]; [`AllUnhealthy::Panic`] routes to every
//! endpoint as if all were healthy, as Envoy's panic mode does. Either way
//! the state is logged once, at warn level, when the last healthy endpoint
//! leaves.
//!
//! # Reading health
//!
//! [`HealthRegistry::snapshot`] (the registry of the [`HealthDiscover`])
//! and [`Healthy::health`] give each endpoint's [`EndpointHealth`]: its
//! [`HealthState`], consecutive failures, ejection count, probes run. Every
//! transition is a `tracing` event at info level naming the endpoint by its
//! key, as the balancer's and the retry layer's events do.
//!
//! # Tasks
//!
//! Each endpoint has one tokio task for its probes and timers (none when only
//! [`AllUnhealthy`] is set). It stops when the endpoint is removed, or when
//! the adapter is dropped (the balancer's worker ends with its last handle);
//! [`HealthRegistry::tasks`] counts the live ones. Outside a tokio runtime
//! no task runs: probes do not happen and ejections do not end (logged).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceExt};
//! use tower_lb::classify::ErrorsOnly;
//! use tower_lb::health::{probe_fn, ActiveChecks, HealthConfig, HealthDiscover, OutlierDetection};
//! use tower_lb::{discover, pick::RoundRobin, Balance};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_lb::BoxError> {
//! let backend = |name: &'static str| {
//!     service_fn(move |_: ()| async move { Ok::<_, std::convert::Infallible>(name) })
//! };
//! let (endpoints, discover) = discover::channel();
//! endpoints.insert("a", backend("a"))?;
//! endpoints.insert("b", backend("b"))?;
//!
//! let config = HealthConfig::new()
//!     .active(
//!         ActiveChecks::new(probe_fn(|_key: &&str| async { Ok::<_, std::io::Error>(()) }))
//!             .interval(Duration::from_secs(2))
//!             .timeout(Duration::from_millis(500))
//!             .rise(2)
//!             .fall(3),
//!     )
//!     .passive(OutlierDetection::new().consecutive_failures(5))
//!     .classify(ErrorsOnly);
//! let discover = HealthDiscover::new(discover, config)?;
//! let registry = discover.registry();
//! let mut balance = Balance::new(discover, RoundRobin::new());
//! balance.wait_for(|keys| keys.len() == 2).await;
//!
//! let answer = balance.ready().await?.call(()).await?;
//! assert!(answer == "a" || answer == "b");
//! assert_eq!(registry.healthy(), 2);
//! assert!(registry.snapshot().iter().all(|e| e.state().in_rotation()));
//! # Ok(())
//! # }
//! ```

mod checks;
mod config;
mod core;
mod discover;
mod error;
mod future;
#[cfg(feature = "http")]
mod http_probe;
mod probe;
mod registry;
mod report;
mod service;
mod state;
mod task;

#[cfg(test)]
mod tests;

pub use self::checks::{ActiveChecks, OutlierDetection};

pub use self::config::{AllUnhealthy, HealthConfig, DEFAULT_MAX_PUSHBACK};
pub use self::discover::{HealthDiscover, HealthLayer};
pub use self::error::{InvalidHealthConfig, NoHealthyEndpoints, UnexpectedStatus};
pub use self::future::ResponseFuture;
#[cfg(feature = "http")]
pub use self::http_probe::HttpProbe;
pub use self::probe::{probe_fn, Probe, ProbeFn, ProbeFuture, ProbeTarget, TcpProbe};
pub use self::registry::HealthRegistry;
pub use self::report::{EndpointHealth, HealthState};
pub use self::service::Healthy;
