//! The balancer: one `Service` in front of a changing set of endpoints.
//!
//! [`Balance`] is `Clone + Send + Sync`; clones share one endpoint set, so it
//! needs no `Buffer` in front of it. Behind it, a [`Worker`] reads a
//! `Discover` stream, applies each insert and remove, builds the picker's
//! table and publishes the new set in one atomic swap.
//!
//! # The contract
//!
//! * **Always ready.** `poll_ready` returns `Ready(Ok(()))`: the balancer can
//!   always accept a request. The request picks its endpoint in `call`, on the
//!   caller's task, from the current set, without a lock or an allocation.
//! * **Endpoint readiness is driven in the response future**, on a clone of
//!   the picked endpoint (endpoint services must be `Clone`, as hyper clients
//!   and tonic channels are). Backpressure therefore comes from the endpoint
//!   itself, or from a concurrency-limit layer around each endpoint or around
//!   the balancer; the balancer adds none of its own.
//! * **Never pends forever.** When no endpoint can be picked (the set is
//!   empty, every weight is 0, the picker finds none allowed) the request
//!   waits for the set to change, up to [`BalanceLayer::wait`] (one second by
//!   default), then fails with [`NoEndpoints`](crate::NoEndpoints).
//! * **Removal drains.** A removed endpoint gets no new request from the next
//!   publish on; requests already on it hold their own clone and finish.
//!   Inserting a key that is already present replaces that endpoint. Each
//!   handle caches the last set it picked from (checking that it is still
//!   current costs one atomic load per request), so a removed endpoint's
//!   service is freed once every handle has made a request since, or has
//!   been dropped; it is never picked again in the meantime.
//! * **Retries go elsewhere.** A request called inside
//!   [`TriedEndpoints::scope`] (the retry layer does so for each attempt) is
//!   picked with the endpoints its attempt set already holds ruled out, and
//!   the endpoint picked is recorded in it; when every allowed endpoint was
//!   tried, the pick ignores the set. Any request type works: the set
//!   travels beside the request.
//! * **Discovery failures keep the set.** A discovery error is logged and the
//!   current set stays; a stream that ends leaves the set as it last was.
//! * The worker stops when the last handle is dropped.
//! * **Events.** Each change of the set is one `INFO` event, "endpoint set
//!   changed", with the counts inserted, replaced and removed; each
//!   endpoint's own change is a `DEBUG` event naming it (`endpoint` = its
//!   key), so a file of ten thousand backends logs one line an edit.
//!
//! # Draining
//!
//! To take a balancer out of service without cutting requests off: stop
//! its discovery source (end the stream, or remove every endpoint), stop
//! sending it new requests, then wait until the endpoints' requests in
//! flight reach zero (read them with [`Balance::read_endpoints`] and the
//! load wrappers' `in_flight()`, or let the response futures complete).
//! Removed endpoints already drain on their own: their clones finish the
//! requests they carry. A server that owns the balancer drains the same
//! way: stop accepting, let in-flight requests finish up to a deadline,
//! then drop the balancer (its worker stops with the last handle).
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use tower::{service_fn, Service, ServiceExt};
//! use tower_lb::{discover, pick::RoundRobin, Balance};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_lb::BoxError> {
//! let backend = |name: &'static str| service_fn(move |_req: ()| async move { Ok::<_, Infallible>(name) });
//! let (endpoints, discover) = discover::channel();
//! endpoints.insert("a", backend("a"))?;
//! endpoints.insert("b", backend("b"))?;
//!
//! let mut balance = Balance::new(discover, RoundRobin::new());
//! balance.wait_for(|keys| keys.len() == 2).await;
//! let first = balance.ready().await?.call(()).await?;
//! let second = balance.ready().await?.call(()).await?;
//! assert_ne!(first, second);
//! # Ok(())
//! # }
//! ```

mod attempt;
mod exclude;
mod future;
mod layer;
mod service;
mod snapshot;
mod worker;

pub(crate) use self::attempt::EndpointName;
pub use self::attempt::TriedEndpoints;
pub use self::future::ResponseFuture;
pub use self::layer::BalanceLayer;
pub use self::service::Balance;
pub use self::worker::Worker;
