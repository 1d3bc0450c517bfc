//! Per-endpoint load, as tower's [`Load`] trait reports it.
//!
//! Pickers such as [`P2c`](crate::pick::P2c) and
//! [`LeastConnections`](crate::pick::LeastConnections) compare endpoints by
//! their load. This module wraps an endpoint service so that it reports one:
//!
//! * [`InFlight`]: requests in flight (a [`Count`]). Cheap and robust; the
//!   right metric when request costs vary widely, as inference requests do.
//! * [`Latency`]: recent latency, peak-sensitive and decaying with time,
//!   times the requests in flight plus one (a [`LatencyCost`]). It favours endpoints
//!   that answer fast, not just those that are idle.
//!
//! # When a request ends
//!
//! A wrapper takes a [`Handle`] for each request at `call` and gives it, with
//! the response, to a completion strategy: tower's [`TrackCompletion`] hook.
//! The request counts (and its latency runs) until the strategy drops the
//! handle.
//!
//! * [`CompleteOnBodyEnd`] (the default) wraps an `http::Response`'s body in
//!   a [`TrackedBody`] and ends the request when the body is finished: at its
//!   last frame, on a body error, or when the body is dropped unread. A
//!   streamed answer keeps its endpoint busy until its last token, where
//!   tower's own default would release it when the headers arrive.
//! * [`CompleteOnResponse`] ends it when the response arrives: for services
//!   whose response is not an HTTP body. (Tower's strategy of the same name
//!   works too; ours can be written as a plain value.)
//! * Your own: implement [`TrackCompletion<Handle, Response>`](TrackCompletion)
//!   (and `TrackCompletion<LatencyHandle, Response>` for [`Latency`]).
//!
//! A failed call ends its request at once.
//!
//! # Where to wrap
//!
//! Wrap each endpoint yourself ([`InFlight::new`]), wrap everything a
//! discovery source inserts ([`InFlightDiscover`], [`LatencyDiscover`]), or
//! put a layer in an endpoint stack ([`InFlightLayer`], [`LatencyLayer`]).
//! The wrappers keep the inner service's [`Endpoint`](crate::endpoint::Endpoint)
//! and availability, and their clones share one count, so the copies the
//! balancer makes of an endpoint add up. A [`Counter`] reads an endpoint's
//! requests in flight and requests started from anywhere, for a status page.
//!
//! # Cost
//!
//! Nothing is allocated or boxed and no lock is taken. An [`InFlight`] call
//! adds two relaxed atomic increments and a reference-count increment, and
//! its load is one atomic load. A [`Latency`] call adds a clock read and a
//! second reference count, its completion a compare-and-swap, and its load
//! two atomic loads, a clock read and an `exp`.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, Service, ServiceExt};
//! use tower_lb::load::{InFlight, Load};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_lb::BoxError> {
//! let endpoint = service_fn(|_request: http::Request<()>| async {
//!     Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("a long answer"))))
//! });
//! let mut endpoint = InFlight::new(endpoint);
//! let counter = endpoint.counter();
//!
//! let response = endpoint.ready().await?.call(http::Request::new(())).await?;
//! // The headers have arrived, the body is unread: still in flight.
//! assert_eq!(counter.in_flight(), 1);
//! assert_eq!(endpoint.load().get(), 1);
//!
//! let body = response.into_body().collect().await?.to_bytes();
//! assert_eq!(body, "a long answer");
//! assert_eq!(counter.in_flight(), 0);
//! assert_eq!(counter.requests(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! With a balancer, wrap the discovery source:
//!
//! ```
//! use std::convert::Infallible;
//!
//! use tower_lb::{discover::StaticList, load::LatencyDiscover, pick::P2c, Balance};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let endpoint = || {
//!     tower::service_fn(|_: http::Request<()>| async {
//!         Ok::<_, Infallible>(http::Response::new(String::from("hi")))
//!     })
//! };
//! let discover = LatencyDiscover::new(
//!     StaticList::new([("a", endpoint()), ("b", endpoint())]),
//!     tower_lb::load::DEFAULT_RTT,
//!     tower_lb::load::DEFAULT_DECAY,
//! );
//! let balance = Balance::new(discover, P2c::new());
//! balance.wait_for(|keys| keys.len() == 2).await;
//! # }
//! ```

mod clock;
mod completion;
mod counter;
mod discover;
mod estimate;
mod future;
mod in_flight;
mod layer;
mod peak_ewma;
mod prefill;
#[cfg(test)]
pub(crate) mod test_body;
mod wrapper;

pub use self::completion::{AnswerHandle, CompleteOnBodyEnd, TrackedBody};
pub use self::counter::{Counter, Handle};
pub use self::discover::{InFlightDiscover, LatencyDiscover};
pub use self::estimate::DEFAULT_FAILURE_PENALTY;
pub use self::future::ResponseFuture;
pub use self::in_flight::{Count, InFlight};
pub use self::layer::{InFlightLayer, LatencyLayer};
pub use self::peak_ewma::{Latency, LatencyCost, LatencyHandle, DEFAULT_DECAY, DEFAULT_RTT};
pub use self::prefill::{Prefill, PrefillBody, PrefillFuture};
pub use tower::load::{CompleteOnResponse, Load, TrackCompletion};
