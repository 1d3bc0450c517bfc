//! Client-side load balancing as tower middleware.
//!
//! A program holds one [`Balance`]: a `tower::Service` that is `Clone + Send +
//! Sync` and needs no `Buffer`. Behind it a [`Discover`](tower::discover::Discover)
//! stream keeps a changing set of endpoints (hyper clients, tonic channels,
//! any `Clone` service), and each request goes to the endpoint that a
//! [picker](pick) chooses.
//!
//! * [`discover`]: where endpoints come from (a static list, a runtime
//!   channel, a watched backends file, DNS with the `dns` feature,
//!   Kubernetes EndpointSlices with `kube`, etcd with `etcd`, or your own
//!   stream), each with a weight and optionally a zone; and
//!   [`Subset`](discover::Subset), a stable subset of any of them.
//! * [`load`]: per-endpoint load through `tower::load::Load`: requests in
//!   flight, counted until the response *body* ends, and Peak-EWMA latency.
//! * [`pick`]: round robin, smooth weighted round robin, least connections,
//!   power of two choices, IP hash, consistent hashing (with bounded load) and
//!   Maglev; for model servers, the scoring picker
//!   ([`Scored`](pick::llm::Scored): filters, weighted scorers, saturation
//!   shedding) and weighted round robin from load reports
//!   ([`ReportWeighted`](pick::ReportWeighted));
//!   [`ZonePreference`](pick::ZonePreference) around any of them; or your
//!   own [`Pick`](pick::Pick).
//! * [`balance`]: the [`Balance`] service, its [`BalanceLayer`] and the
//!   discovery [`Worker`](balance::Worker).
//! * [`health`]: active probes and passive outlier detection, so dead
//!   endpoints leave rotation and come back.
//! * [`hedge`]: a layer that sends a copy of a slow request to another
//!   endpoint after a delay and takes the first answer.
//! * `retry` (feature `http`): a layer that retries a failed request on
//!   another endpoint, within a budget, with backoff, idempotency rules and
//!   bounded body replay.
//! * `http` (feature `http`, on by default): the preset HTTP balancer, one
//!   named type from a builder, and `SetAuthority`, which points one shared
//!   HTTP client at one endpoint's address.
//! * `grpc` (feature `grpc`): the same preset over tonic channels.
//! * `llm` (feature `llm`): `llm::Router`, an OpenAI-compatible LLM
//!   gateway as one service (the default picker, health, retries, load
//!   reports, a fair queue when every server is busy), built by
//!   `llm::Builder`.
//! * `report` (feature `reports`): what model servers report of their own
//!   load (ORCA load reports in answers, a Prometheus poller with vLLM,
//!   SGLang and TGI names), written into each endpoint's
//!   [`ReportCell`](endpoint::ReportCell).
//! * [`endpoint`], [`classify`]: the contracts every part shares, what the
//!   balancer reads of an endpoint and what counts as its failure.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use tower::{service_fn, Service, ServiceExt};
//! use tower_lb::{discover, load::InFlightDiscover, pick::P2c, Balance};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_lb::BoxError> {
//! let backend = |name: &'static str| {
//!     service_fn(move |_req: ()| async move { Ok::<_, Infallible>(name) })
//! };
//! let (endpoints, discover) = discover::channel();
//! endpoints.insert("10.0.0.1:8080", backend("one"))?;
//! endpoints.insert_weighted("10.0.0.2:8080", backend("two"), 2)?;
//!
//! // Count requests in flight per endpoint; power of two choices reads them.
//! let balance = Balance::new(
//!     InFlightDiscover::with_completion(discover, tower_lb::load::CompleteOnResponse::default()),
//!     P2c::new(),
//! );
//! balance.wait_for(|keys| keys.len() == 2).await;
//!
//! // Clones share the endpoint set: hand one to every task.
//! let mut handle = balance.clone();
//! let answer = handle.ready().await?.call(()).await?;
//! assert!(answer == "one" || answer == "two");
//! # Ok(())
//! # }
//! ```
//!
//! # Module graph
//!
//! Arrows point from a module to what it uses; nothing points up, and the
//! core (everything but the presets, `retry` and the HTTP parts of
//! `health`) builds with tower, tokio and arc-swap alone
//! (`--no-default-features`).
//!
//! ```text
//!  presets: http::Balancer, grpc::Balancer,
//!           llm::Router                            (features http, grpc, llm)
//!    └─► retry ───────────────────────────────────┐ (feature http)
//!          └─► load, health, report, discover      │ endpoint wrappers, sources
//!                └─► balance (Balance, attempt set: TriedEndpoints)
//!                      └─► pick (Pick, Prepare, the pickers)
//!                            └─► leaves: error, endpoint (the contract),
//!                                classify, util (random, hashing) ◄───┘
//! ```
//!
//! * [`endpoint`] is the contract: weight, availability and, for pickers
//!   that score on it, the endpoint's self-reported load
//!   ([`ReportCell`](endpoint::ReportCell): facts with a time,
//!   read with atomic loads). The balancer reads nothing else of an
//!   endpoint; health implements availability, the `report` sources (feature
//!   `reports`) fill the report record.
//! * The attempt set ([`balance::TriedEndpoints`]) belongs to the balancer:
//!   layers above it (retry, your own) hand it down with
//!   [`TriedEndpoints::scope`](balance::TriedEndpoints::scope), so any
//!   request type works.
//! * [`classify`] says what counts as an endpoint's failure, for health and
//!   retry alike.
//!
//! # Errors
//!
//! The balancer's error type is [`BoxError`]. When no endpoint can be picked
//! it waits for the set to change (one second by default, see
//! [`BalanceLayer::wait`]) and then fails with [`NoEndpoints`]; the endpoint's
//! own errors pass through unchanged inside the box. A picker that sheds
//! load ([`Scored`](pick::llm::Scored) when every eligible endpoint is
//! saturated) fails the request at once with
//! [`Saturated`](error::Saturated).
#![forbid(unsafe_code)]
// On docs.rs (`--cfg docsrs`, a nightly rustdoc) each item shows the
// features it needs; stable builds never see the attribute.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

pub mod balance;
pub mod classify;
pub mod discover;
pub mod endpoint;
pub mod error;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod health;
pub mod hedge;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "llm")]
pub mod llm;
pub mod load;
pub mod pick;
#[cfg(feature = "reports")]
pub mod report;
#[cfg(feature = "http")]
pub mod retry;
mod util;

pub use crate::balance::{Balance, BalanceLayer};
pub use crate::error::{BoxError, NoEndpoints};
