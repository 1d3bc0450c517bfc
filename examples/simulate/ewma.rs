//! Endpoints measured by the crate's own `Latency`, on virtual time.
//!
//! Each endpoint is a `Latency<SimService, HoldUntilDone>`: the real
//! wrapper, with its lock-free estimate, reading tokio's clock, which the
//! simulation keeps paused and moves to each event's virtual time. The
//! wrapped service answers at once; when the answer *ends* is the
//! simulation's to say, so the completion strategy keeps each request's
//! handle inside the response (a ticket), and the simulation drops the
//! ticket when the request's last byte comes back in virtual time. That
//! ends the round trip Latency measures and its count of the request.
//!
//! `HoldUntilDone` is also a template for a completion strategy of your own:
//! implement tower's `TrackCompletion<H, V>` for every handle `H`, so one
//! strategy serves both `InFlight` (whose handle is a `Handle`) and
//! `Latency` (an `LatencyHandle`), and put the handle wherever the end of the
//! request can drop it.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};
use std::time::Duration;

use tower::load::TrackCompletion;
use tower::{Service, ServiceExt};
use tower_lb::load::{Latency, LatencyHandle};

use crate::fleet::Meter;
use crate::scenario::Job;

/// A simulated endpoint's service: it accepts a request and answers at
/// once; the simulation then decides how long the answer takes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SimService;

impl Service<Job> for SimService {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _job: Job) -> Self::Future {
        ready(Ok(()))
    }
}

/// A completion strategy that keeps each request's handle inside its
/// response: the request counts as in flight, and its round trip runs,
/// until the caller finishes with the response.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HoldUntilDone;

/// A response and the handle of its request.
#[derive(Debug)]
pub(crate) struct Held<V, H> {
    response: V,
    handle: H,
}

impl<V, H> Held<V, H> {
    /// Ends the request, letting go of its handle, and gives the response.
    pub(crate) fn finish(self) -> V {
        drop(self.handle);
        self.response
    }
}

impl<H, V> TrackCompletion<H, V> for HoldUntilDone {
    type Output = Held<V, H>;

    fn track_completion(&self, handle: H, response: V) -> Held<V, H> {
        Held { response, handle }
    }
}

/// An endpoint with Peak-EWMA load.
pub(crate) type Ewma = Latency<SimService, HoldUntilDone>;

/// A fresh endpoint: its estimate starts at `default_rtt` and forgets with
/// time constant `decay`. Make it on the paused runtime, at virtual time 0.
pub(crate) fn endpoint(default_rtt: Duration, decay: Duration) -> Ewma {
    Latency::with_completion(SimService, default_rtt, decay, HoldUntilDone)
}

impl Meter for Ewma {
    type Ticket = Held<(), LatencyHandle>;

    const TIMED: bool = true;

    async fn send(&mut self, job: &Job) -> Self::Ticket {
        // As the balancer would: wait for readiness, then call.
        let answer = match self.ready().await {
            Ok(service) => service.call(*job).await,
            Err(never) => match never {},
        };
        match answer {
            Ok(ticket) => ticket,
            Err(never) => match never {},
        }
    }

    fn done(&self, ticket: Self::Ticket) {
        ticket.finish();
    }
}
