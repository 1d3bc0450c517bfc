//! Endpoints that report their own load, one poll period late: what the
//! scoring picker reads.
//!
//! A poller on each endpoint reads its queue and KV use every
//! [`POLL`]; the value a poll reads reaches the picker at the next poll, so
//! the picker always sees the state of one to two periods ago. KV-cache use
//! is modelled as the share of the endpoint's slots that are busy (a batch
//! of `SLOTS` sequences fills its cache). Polls are caught up lazily: the
//! station's state only changes at this endpoint's own events (a request
//! sent, a request done), so every poll due since the last event read the
//! state as it still is.
//!
//! Each endpoint's client-side load is the crate's `Latency` on virtual
//! time, as in `ewma.rs`: requests in flight, which the scorers read, and a
//! latency estimate, which the TTFT picker reads for endpoints without a
//! prefill state.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;
use tower::load::Load;
use tower_lb::endpoint::{Endpoint, Report, ReportCell};
use tower_lb::load::{LatencyCost, LatencyHandle};
use tower_lb::pick::llm::{RequestInfoRef, ScoredRequest};

use crate::ewma::{self, Ewma, Held};
use crate::fleet::Meter;
use crate::scenario::Job;
use crate::station::Station;

/// The poll period: the Prometheus poller's default.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// Requests in flight, as the client counts them.
impl ScoredRequest for Job {
    fn info(&self) -> RequestInfoRef<'_> {
        RequestInfoRef::default()
    }
}

/// An endpoint with an in-flight count and a metrics record filled one
/// poll late.
#[derive(Debug)]
pub(crate) struct Reporting {
    station: Rc<Station>,
    metrics: ReportCell,
    /// Requests in flight and the latency estimate, on virtual time.
    load: Ewma,
    zero: Instant,
    /// The next poll's number (poll k happens at `zero + k × POLL`).
    next_poll: Cell<u64>,
    /// What the last poll read, reported at the next one.
    read: Cell<Option<(u32, u32, f32)>>,
}

impl Reporting {
    /// Make it on the paused runtime, at virtual time 0; `rtt` and `decay`
    /// start and drive its latency estimate.
    pub(crate) fn new(station: &Rc<Station>, rtt: Duration, decay: Duration) -> Self {
        Self {
            station: Rc::clone(station),
            // Never stale: the lateness is the poll's, modelled here.
            metrics: ReportCell::with_staleness(Duration::from_secs(3600)),
            load: ewma::endpoint(rtt, decay),
            zero: Instant::now(),
            next_poll: Cell::new(0),
            read: Cell::new(None),
        }
    }

    /// Runs the polls due by now, each reading the station as it is.
    fn catch_up(&self) {
        let elapsed = Instant::now().saturating_duration_since(self.zero);
        let due = (elapsed.as_nanos() / POLL.as_nanos()) as u64 + 1;
        let next = self.next_poll.get();
        if due <= next {
            return;
        }
        let now = self.state();
        // With two or more polls due, the one before the last read `now`
        // too.
        let reported = if due - next >= 2 {
            Some(now)
        } else {
            self.read.get()
        };
        if let Some((queue, running, kv)) = reported {
            self.metrics.record(&Report {
                queue: Some(queue),
                running: Some(running),
                kv_cache_use: Some(kv),
                ..Report::default()
            });
        }
        self.read.set(Some(now));
        self.next_poll.set(due);
    }

    fn state(&self) -> (u32, u32, f32) {
        let slots = self.station.slots.borrow();
        let busy = slots.iter().filter(|s| s.is_some()).count();
        let queue = self.station.queue.borrow().len();
        (
            queue as u32,
            busy as u32,
            busy as f32 / slots.len().max(1) as f32,
        )
    }
}

impl Endpoint for Reporting {
    fn weight(&self) -> u32 {
        1
    }

    fn report(&self) -> Option<&ReportCell> {
        self.catch_up();
        Some(&self.metrics)
    }
}

impl Load for Reporting {
    type Metric = LatencyCost;

    fn load(&self) -> LatencyCost {
        self.load.load()
    }
}

impl Meter for Reporting {
    type Ticket = Held<(), LatencyHandle>;

    const TIMED: bool = true;

    async fn send(&mut self, job: &Job) -> Self::Ticket {
        self.catch_up();
        self.load.send(job).await
    }

    fn done(&self, ticket: Self::Ticket) {
        self.catch_up();
        self.load.done(ticket);
    }
}
