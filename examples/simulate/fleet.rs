//! The simulated fleet: endpoints with a few slots and a FIFO queue, driven
//! by an event heap in virtual time.
//!
//! Each endpoint serves up to `slots` requests at once, each at the
//! endpoint's full speed; the rest wait in arrival order. A request's service
//! time is fixed when it starts, at the endpoint's speed at that moment.
//! Time is in integer nanoseconds and simultaneous events run in the order
//! they were scheduled, so a run depends on nothing but its inputs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;
use tower::load::Load;
use tower_lb::pick::{Candidates, EndpointInfo};

use crate::pickers::Policy;
use crate::scenario::Job;
use crate::station::{duration, Station};

/// An endpoint as the pickers see it: a `Load` that the simulation tells
/// when each request starts and ends, as the balancer's calls would.
pub(crate) trait Meter: Load {
    /// What the simulation holds while a request is in flight.
    type Ticket;

    /// Whether the load reads tokio's clock, which must then follow
    /// virtual time.
    const TIMED: bool;

    /// A request is sent to this endpoint.
    async fn send(&mut self, job: &Job) -> Self::Ticket;

    /// The first byte of a request's answer has come back.
    fn first_byte(&self) {}

    /// A request's last byte has come back.
    fn done(&self, ticket: Self::Ticket);
}

/// A fleet to run: its endpoints' speeds and slots.
#[derive(Clone, Debug)]
pub(crate) struct Fleet {
    pub(crate) speeds: Vec<f64>,
    pub(crate) slots: usize,
    /// Endpoint, time and new speed of a slowdown.
    pub(crate) slowdown: Option<(usize, u64, f64)>,
    /// Hedging: a request still unanswered this many ns after it arrived
    /// sends one copy to another endpoint, as `tower_lb::hedge` does with
    /// two attempts; the first to finish wins and the other is cancelled
    /// (taken out of its queue, or its slot freed).
    pub(crate) hedge_after: Option<u64>,
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
    /// Copies sent by hedging.
    pub(crate) hedges: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    FirstByte { station: u32, job: u32 },
    Done { station: u32, slot: u32, job: u32 },
    Hedge { job: u32 },
}

/// Runs `jobs` through `fleet`, each sent where `policy` picks among the
/// endpoints `meter` makes, and waits for every one to finish.
///
/// Call it on a current-thread tokio runtime whose clock is paused: when the
/// meters read the clock, it is moved to each event's virtual time before
/// the event runs, so they measure virtual time exactly.
pub(crate) async fn run<M: Meter>(
    fleet: &Fleet,
    jobs: &[Job],
    policy: &dyn Policy<M>,
    metas: &[EndpointInfo],
    meter: impl Fn(&Rc<Station>) -> M,
) -> Outcome {
    // Virtual time 0, taken before the meters are made so that their view
    // of time starts with it.
    let zero = Instant::now();
    let stations: Vec<Rc<Station>> = (0..fleet.speeds.len())
        .map(|i| {
            let slowdown = fleet
                .slowdown
                .filter(|&(endpoint, _, _)| endpoint == i)
                .map(|(_, at, speed)| (at, speed));
            Rc::new(Station::new(fleet.slots, fleet.speeds[i], slowdown))
        })
        .collect();
    let mut sim = Sim {
        jobs,
        meters: stations.iter().map(meter).collect(),
        stations,
        tickets: HashMap::new(),
        running: HashMap::new(),
        cancelled: HashSet::new(),
        finished: vec![false; jobs.len()],
        heap: BinaryHeap::new(),
        seq: 0,
    };
    let mut outcome = Outcome {
        latency: vec![0; jobs.len()],
        first_byte: vec![0; jobs.len()],
        sent: vec![0; sim.stations.len()],
        span: 0,
        hedges: 0,
    };
    let mut next = 0;
    loop {
        let arrival = jobs.get(next).map(|job| job.arrival);
        let event = sim.heap.peek().map(|Reverse((t, _, _))| *t);
        let (now, arrives) = match (arrival, event) {
            // Completions due at an arrival's time come first: they free
            // slots the arrival may use.
            (Some(a), Some(e)) if e <= a => (e, false),
            (None, Some(e)) => (e, false),
            (Some(a), _) => (a, true),
            (None, None) => break,
        };
        if M::TIMED {
            advance_to(zero + Duration::from_nanos(now)).await;
        }
        if !arrives {
            if let Some(job) = sim.handle(&mut outcome) {
                // A hedge is due: a copy to an endpoint this request has not
                // tried, if it is still waiting.
                if !sim.finished[job as usize] {
                    let tried: Vec<u64> = sim
                        .tickets
                        .keys()
                        .filter(|&&(j, _)| j == job)
                        .map(|&(_, i)| metas[i as usize].key_hash())
                        .collect();
                    let endpoints = Candidates::new(metas, &sim.meters).excluding(&tried);
                    let job = &jobs[job as usize];
                    if let Some(i) = policy.pick(&endpoints, job) {
                        outcome.sent[i] += 1;
                        outcome.hedges += 1;
                        sim.arrive(i, job, now).await;
                    }
                }
            }
            continue;
        }
        let job = &jobs[next];
        next += 1;
        let endpoints = Candidates::new(metas, &sim.meters);
        let i = policy
            .pick(&endpoints, job)
            .expect("every endpoint has a non-zero weight");
        outcome.sent[i] += 1;
        sim.arrive(i, job, job.arrival).await;
        if let Some(after) = fleet.hedge_after {
            sim.schedule(job.arrival + after, Event::Hedge { job: job.id });
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

/// Moves tokio's paused clock forward to `target`. With no timers set it
/// only moves the clock (and yields once).
async fn advance_to(target: Instant) {
    let now = Instant::now();
    if target > now {
        tokio::time::advance(target - now).await;
    }
}

struct Sim<'a, M: Meter> {
    jobs: &'a [Job],
    stations: Vec<Rc<Station>>,
    meters: Vec<M>,
    /// What each attempt in flight holds, by job id and endpoint.
    tickets: HashMap<(u32, u32), M::Ticket>,
    /// The slot each running attempt of a hedged request is in.
    running: HashMap<(u32, u32), u32>,
    /// Attempts cancelled while running: their events are stale.
    cancelled: HashSet<(u32, u32)>,
    /// Requests answered, by job id.
    finished: Vec<bool>,
    /// Pending events by (time, order scheduled).
    heap: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
}

impl<M: Meter> Sim<'_, M> {
    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, event)));
    }

    async fn arrive(&mut self, i: usize, job: &Job, now: u64) {
        let ticket = self.meters[i].send(job).await;
        self.tickets.insert((job.id, i as u32), ticket);
        let station = Rc::clone(&self.stations[i]);
        let idle = station.slots.borrow().iter().position(Option::is_none);
        match idle {
            Some(slot) => self.start(i, slot, job.id, now),
            None => station.queue.borrow_mut().push_back(job.id),
        }
    }

    /// Cancels every attempt of `job` but the one on `winner`: its ticket
    /// is let go (the balancer drops the losing future), and it leaves its
    /// queue or frees its slot.
    fn cancel_others(&mut self, job: u32, winner: usize, now: u64) {
        let others: Vec<u32> = self
            .tickets
            .keys()
            .filter(|&&(j, i)| j == job && i as usize != winner)
            .map(|&(_, i)| i)
            .collect();
        for i in others {
            if let Some(ticket) = self.tickets.remove(&(job, i)) {
                self.meters[i as usize].done(ticket);
            }
            let station = Rc::clone(&self.stations[i as usize]);
            let mut queue = station.queue.borrow_mut();
            if let Some(at) = queue.iter().position(|&j| j == job) {
                queue.remove(at);
                continue;
            }
            drop(queue);
            if let Some(slot) = self.running.remove(&(job, i)) {
                self.cancelled.insert((job, i));
                station.slots.borrow_mut()[slot as usize] = None;
                let queued = station.queue.borrow_mut().pop_front();
                if let Some(next) = queued {
                    self.start(i as usize, slot as usize, next, now);
                }
            }
        }
    }

    fn start(&mut self, i: usize, slot: usize, id: u32, now: u64) {
        let job = self.jobs[id as usize];
        self.running.insert((id, i as u32), slot as u32);
        let station = &*self.stations[i];
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

    /// Handles the next event; returns the job whose hedge is due, if that
    /// is what it was.
    fn handle(&mut self, outcome: &mut Outcome) -> Option<u32> {
        let Reverse((now, _, event)) = self.heap.pop()?;
        match event {
            Event::FirstByte { station, job } => {
                if !self.cancelled.contains(&(job, station)) {
                    self.first_byte(station as usize, job, now, outcome);
                }
            }
            Event::Done { station, slot, job } => {
                if self.cancelled.remove(&(job, station)) {
                    return None;
                }
                self.running.remove(&(job, station));
                let i = station as usize;
                if !self.finished[job as usize] {
                    self.finished[job as usize] = true;
                    let arrival = self.jobs[job as usize].arrival;
                    outcome.latency[job as usize] = now - arrival;
                    self.cancel_others(job, i, now);
                }
                if let Some(ticket) = self.tickets.remove(&(job, station)) {
                    self.meters[i].done(ticket);
                }
                let job = &self.jobs[job as usize];
                if job.prefill >= job.work {
                    self.first_byte(i, job.id, now, outcome);
                }
                let slot = slot as usize;
                self.stations[i].slots.borrow_mut()[slot] = None;
                let queued = self.stations[i].queue.borrow_mut().pop_front();
                if let Some(next) = queued {
                    self.start(i, slot, next, now);
                }
            }
            Event::Hedge { job } => return Some(job),
        }
        None
    }

    fn first_byte(&mut self, i: usize, job: u32, now: u64, outcome: &mut Outcome) {
        self.meters[i].first_byte();
        // A hedged request's first byte is its first attempt's to answer.
        let first = &mut outcome.first_byte[job as usize];
        if *first == 0 {
            *first = now - self.jobs[job as usize].arrival;
        }
    }
}
