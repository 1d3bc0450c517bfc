//! Endpoints whose load is the requests in flight, counted by the
//! simulation as the crate's `InFlight` would count them.

use std::cell::Cell;
use std::rc::Rc;

use tower::load::Load;

use crate::fleet::Meter;
use crate::scenario::Job;
use crate::station::Station;

/// What the endpoint services report as their load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counting {
    /// Requests sent and not finished: until a streamed answer's last token,
    /// as the crate's in-flight counting does.
    ToLastByte,
    /// Requests sent whose first byte has not come back: what a counter
    /// that stops at the response headers sees.
    ToFirstByte,
}

/// The service the pickers see for an endpoint: a `tower::load::Load` over
/// counters the simulation keeps.
#[derive(Debug)]
pub(crate) struct Probe {
    station: Rc<Station>,
    jobs: Rc<[Job]>,
    counting: Counting,
    in_flight: Cell<u32>,
    awaiting_first_byte: Cell<u32>,
}

impl Probe {
    pub(crate) fn new(station: &Rc<Station>, jobs: &Rc<[Job]>, counting: Counting) -> Self {
        Self {
            station: Rc::clone(station),
            jobs: Rc::clone(jobs),
            counting,
            in_flight: Cell::new(0),
            awaiting_first_byte: Cell::new(0),
        }
    }

    /// When `job` would finish if it were sent here now, knowing the exact
    /// cost of every request already here and of `job` itself, and the
    /// endpoint's current speed. Only the ideal reference may know this.
    pub(crate) fn finish_if_sent(&self, job: &Job) -> u64 {
        self.station.finish_if_sent(job, &self.jobs)
    }
}

impl Load for Probe {
    type Metric = u32;

    fn load(&self) -> u32 {
        match self.counting {
            Counting::ToLastByte => self.in_flight.get(),
            Counting::ToFirstByte => self.awaiting_first_byte.get(),
        }
    }
}

impl Meter for Probe {
    /// The counts are the probe's own: nothing to hold.
    type Ticket = ();

    const TIMED: bool = false;

    async fn send(&mut self, _job: &Job) {
        self.in_flight.set(self.in_flight.get() + 1);
        self.awaiting_first_byte
            .set(self.awaiting_first_byte.get() + 1);
    }

    fn first_byte(&self) {
        self.awaiting_first_byte
            .set(self.awaiting_first_byte.get() - 1);
    }

    fn done(&self, (): ()) {
        self.in_flight.set(self.in_flight.get() - 1);
    }
}
