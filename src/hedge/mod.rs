//! Hedging: after a delay, send a copy of a slow request to *another*
//! endpoint, and take whichever answers first.
//!
//! A hedge trades a little extra load for a shorter tail: most requests
//! answer before the delay and are sent once; the few that are still
//! waiting (an endpoint stalled in a garbage collection, a queue behind a
//! heavy request) get a second chance elsewhere. tower's own `hedge`
//! resends to the same service; here every copy's `call` runs inside the
//! request's [`TriedEndpoints::scope`](crate::balance::TriedEndpoints::scope),
//! so the [`Balance`](crate::Balance) beneath rules out the endpoints the
//! request already went to, as gRPC's hedging policy (gRFC A6) asks.
//!
//! The rules, each checked by the tests:
//!
//! 1. **When.** A copy goes out when the previous one has had [`HedgeDelay`]
//!    without an answer: a fixed [`Duration`](std::time::Duration), or a
//!    percentile of recent answers' latency (p95: one request in twenty is
//!    hedged), learnt by the layer. Until enough answers are known, nothing
//!    is hedged.
//! 2. **Where.** To an endpoint the request has not tried, chosen by the
//!    balancer's own picker. Once every endpoint has been tried, the
//!    balancer picks as for a first attempt (as it does for retries), so
//!    a copy may then share an endpoint with an earlier attempt.
//! 3. **Which wins.** The first successful answer. The other attempts are
//!    dropped at once, which cancels them: their endpoints' in-flight counts
//!    fall when their futures drop. An attempt that fails leaves the others
//!    running; when every attempt sent has failed and no copy is due, the
//!    last error is returned.
//! 4. **How many.** At most [`MAX_ATTEMPTS`] (5) attempts in all, as in
//!    gRFC A6; [`HedgeLayer::max_attempts`] lowers it.
//! 5. **Budget.** Every request deposits in a retry budget (tower's
//!    [`Budget`](tower::retry::budget::Budget); 10 % of requests plus 10 a
//!    second by default) and every copy withdraws; an empty budget sends no
//!    copy, so a slow fleet is not hit by twice its traffic.
//! 6. **Which requests.** Only those the [`CloneRequest`] policy copies.
//!    [`Idempotent`] copies HTTP requests whose method is idempotent (GET,
//!    HEAD, OPTIONS, TRACE, PUT, DELETE) and whose body is `Clone`; a POST is
//!    sent once unless [`Idempotent::non_idempotent`] opts in. A closure
//!    `Fn(&Req) -> Option<Req>` is a policy too.
//!
//! The layer goes above the balancer (and below a retry layer, if any).
//! Nothing is allocated for a request that is never hedged; a hedge boxes
//! its copy's future.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Layer, Service, ServiceExt};
//! use tower_lb::discover::StaticList;
//! use tower_lb::hedge::{HedgeDelay, HedgeLayer};
//! use tower_lb::pick::RoundRobin;
//! use tower_lb::Balance;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let endpoints = StaticList::new((0..3).map(|i| {
//!     (i, service_fn(move |_: u64| async move { Ok::<_, std::convert::Infallible>(i) }))
//! }));
//! let balance = Balance::new(endpoints, RoundRobin::new());
//! balance.wait_for(|keys| keys.len() == 3).await;
//! // Requests are `u64`s, copied as they are.
//! let layer = HedgeLayer::new(|req: &u64| Some(*req))
//!     .delay(HedgeDelay::percentile(95.0));
//! let mut hedged = layer.layer(balance);
//! let answer = hedged.ready().await.unwrap().call(7).await.unwrap();
//! assert!(answer < 3);
//! # }
//! ```

mod delay;
mod future;
mod layer;
mod policy;
mod service;

pub use self::delay::HedgeDelay;
pub use self::future::ResponseFuture;
pub use self::layer::HedgeLayer;
pub use self::policy::{CloneRequest, Idempotent};
pub use self::service::Hedge;

/// The most attempts a request gets, the first included (gRFC A6's cap).
pub const MAX_ATTEMPTS: u32 = 5;
