//! The simulated fleet: endpoints with a few slots and a FIFO queue, driven
//! by an event heap in virtual time.
//!
//! Each endpoint serves up to `slots` requests at once, each at the
//! endpoint's full speed; the rest wait in arrival order. A request's service
//! time is fixed when it starts, at the endpoint's speed at that moment.
//! Time is in integer nanoseconds and simultaneous events run in the order
//! they were scheduled, so a run depends on nothing but its inputs.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::rc::Rc;

use tower::load::Load;
use tower_lb::pick::{Endpoints, Meta};

use crate::pickers::Policy;
use crate::scenario::Job;

/// Slots an endpoint may have (a bound for the ideal picker's scratch space).
pub(crate) const MAX_SLOTS: usize = 16;

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

/// One endpoint's state. The simulation changes it between picks; pickers
/// read it through a [`Probe`].
#[derive(Debug)]
struct Station {
    in_flight: Cell<u32>,
    awaiting_first_byte: Cell<u32>,
    /// Per slot, when its request finishes; `None` when idle.
    slots: RefCell<Vec<Option<u64>>>,
    queue: RefCell<VecDeque<u32>>,
    speed: f64,
    /// From this time on, this speed instead.
    slowdown: Option<(u64, f64)>,
}

impl Station {
    fn speed_at(&self, t: u64) -> f64 {
        match self.slowdown {
            Some((at, speed)) if t >= at => speed,
            _ => self.speed,
        }
    }
}

/// How long `work` takes at `speed`.
fn duration(work: u64, speed: f64) -> u64 {
    (work as f64 / speed).ceil() as u64
}

/// The service the pickers see for an endpoint: a `tower::load::Load` over
/// the simulation's counters.
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    station: Rc<Station>,
    jobs: Rc<[Job]>,
    counting: Counting,
}

impl Load for Probe {
    type Metric = u32;

    fn load(&self) -> u32 {
        match self.counting {
            Counting::ToLastByte => self.station.in_flight.get(),
            Counting::ToFirstByte => self.station.awaiting_first_byte.get(),
        }
    }
}

impl Probe {
    /// When `job` would finish if it were sent here now, knowing the exact
    /// cost of every request already here and of `job` itself, and the
    /// endpoint's current speed. Only the ideal reference may know this.
    pub(crate) fn finish_if_sent(&self, job: &Job) -> u64 {
        let now = job.arrival;
        let station = &*self.station;
        let speed = station.speed_at(now);
        let slots = station.slots.borrow();
        let mut free = [0u64; MAX_SLOTS];
        let free = &mut free[..slots.len()];
        for (free, busy) in free.iter_mut().zip(slots.iter()) {
            *free = busy.map_or(now, |until| until.max(now));
        }
        // The queue drains in order into whichever slot frees first.
        for &queued in station.queue.borrow().iter() {
            let first = earliest(free);
            free[first] += duration(self.jobs[queued as usize].work, speed);
        }
        free[earliest(free)] + duration(job.work, speed)
    }
}

fn earliest(free: &[u64]) -> usize {
    (0..free.len()).min_by_key(|&i| free[i]).unwrap_or(0)
}

/// A fleet to run: its endpoints' speeds and slots.
#[derive(Clone, Debug)]
pub(crate) struct Fleet {
    pub(crate) speeds: Vec<f64>,
    pub(crate) slots: usize,
    /// Endpoint, time and new speed of a slowdown.
    pub(crate) slowdown: Option<(usize, u64, f64)>,
}

/// What one run measured.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// Per request, from arrival to its last byte.
    pub(crate) latency: Vec<u64>,
    /// Per request, from arrival to its first byte.
    pub(crate) first_byte: Vec<u64>,
    /// Requests sent to each endpoint.
    pub(crate) sent: Vec<u64>,
    /// From the first arrival to the last completion.
    pub(crate) span: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    FirstByte { station: u32, job: u32 },
    Done { station: u32, slot: u32, job: u32 },
}

/// Runs `jobs` through `fleet`, each sent where `policy` picks, and waits
/// for every one to finish.
pub(crate) fn run(
    fleet: &Fleet,
    jobs: &Rc<[Job]>,
    policy: &dyn Policy,
    metas: &[Meta],
    counting: Counting,
) -> Outcome {
    let probes: Vec<Probe> = (0..fleet.speeds.len())
        .map(|i| Probe {
            station: Rc::new(Station {
                in_flight: Cell::new(0),
                awaiting_first_byte: Cell::new(0),
                slots: RefCell::new(vec![None; fleet.slots.min(MAX_SLOTS)]),
                queue: RefCell::new(VecDeque::new()),
                speed: fleet.speeds[i],
                slowdown: fleet
                    .slowdown
                    .filter(|&(endpoint, _, _)| endpoint == i)
                    .map(|(_, at, speed)| (at, speed)),
            }),
            jobs: Rc::clone(jobs),
            counting,
        })
        .collect();
    let mut sim = Sim {
        jobs,
        probes: &probes,
        heap: BinaryHeap::new(),
        seq: 0,
    };
    let mut outcome = Outcome {
        latency: vec![0; jobs.len()],
        first_byte: vec![0; jobs.len()],
        sent: vec![0; probes.len()],
        span: 0,
    };
    let mut next = 0;
    loop {
        let arrival = jobs.get(next).map(|job| job.arrival);
        let event = sim.heap.peek().map(|Reverse((t, _, _))| *t);
        match (arrival, event) {
            // Completions due at an arrival's time come first: they free
            // slots the arrival may use.
            (Some(a), Some(e)) if e <= a => sim.handle(&mut outcome),
            (None, Some(_)) => sim.handle(&mut outcome),
            (Some(_), _) => {
                let job = &jobs[next];
                next += 1;
                let endpoints = Endpoints::new(metas, &probes);
                let i = policy
                    .pick(&endpoints, job)
                    .expect("every endpoint has a non-zero weight");
                outcome.sent[i] += 1;
                sim.arrive(i, job);
            }
            (None, None) => break,
        }
    }
    let first = jobs.first().map_or(0, |job| job.arrival);
    let last = jobs
        .iter()
        .zip(&outcome.latency)
        .map(|(job, latency)| job.arrival + latency)
        .max()
        .unwrap_or(first);
    outcome.span = last - first;
    outcome
}

struct Sim<'a> {
    jobs: &'a [Job],
    probes: &'a [Probe],
    /// Pending events by (time, order scheduled).
    heap: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
}

impl Sim<'_> {
    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, event)));
    }

    fn arrive(&mut self, i: usize, job: &Job) {
        let station = &*self.probes[i].station;
        station.in_flight.set(station.in_flight.get() + 1);
        let waiting = station.awaiting_first_byte.get();
        station.awaiting_first_byte.set(waiting + 1);
        let idle = station.slots.borrow().iter().position(Option::is_none);
        match idle {
            Some(slot) => self.start(i, slot, job.id, job.arrival),
            None => station.queue.borrow_mut().push_back(job.id),
        }
    }

    fn start(&mut self, i: usize, slot: usize, id: u32, now: u64) {
        let job = self.jobs[id as usize];
        let station = &*self.probes[i].station;
        let speed = station.speed_at(now);
        let done = now + duration(job.work, speed);
        station.slots.borrow_mut()[slot] = Some(done);
        let station_id = i as u32;
        if job.prefill < job.work {
            let first_byte = (now + duration(job.prefill, speed)).min(done);
            self.schedule(
                first_byte,
                Event::FirstByte {
                    station: station_id,
                    job: id,
                },
            );
        }
        let slot = slot as u32;
        self.schedule(
            done,
            Event::Done {
                station: station_id,
                slot,
                job: id,
            },
        );
    }

    fn handle(&mut self, outcome: &mut Outcome) {
        let Some(Reverse((now, _, event))) = self.heap.pop() else {
            return;
        };
        match event {
            Event::FirstByte { station, job } => {
                self.first_byte(station as usize, job, now, outcome);
            }
            Event::Done { station, slot, job } => {
                let i = station as usize;
                let arrival = self.jobs[job as usize].arrival;
                outcome.latency[job as usize] = now - arrival;
                let done = &*self.probes[i].station;
                done.in_flight.set(done.in_flight.get() - 1);
                let job = &self.jobs[job as usize];
                if job.prefill >= job.work {
                    self.first_byte(i, job.id, now, outcome);
                }
                let slot = slot as usize;
                self.probes[i].station.slots.borrow_mut()[slot] = None;
                let queued = self.probes[i].station.queue.borrow_mut().pop_front();
                if let Some(next) = queued {
                    self.start(i, slot, next, now);
                }
            }
        }
    }

    fn first_byte(&mut self, i: usize, job: u32, now: u64, outcome: &mut Outcome) {
        let station = &*self.probes[i].station;
        let waiting = station.awaiting_first_byte.get();
        station.awaiting_first_byte.set(waiting - 1);
        outcome.first_byte[job as usize] = now - self.jobs[job as usize].arrival;
    }
}
