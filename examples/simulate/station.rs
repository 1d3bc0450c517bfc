//! One simulated endpoint: a few slots that each serve a request at the
//! endpoint's speed, and a FIFO queue for the rest.

use std::cell::RefCell;
use std::collections::VecDeque;

use crate::scenario::Job;

/// Slots an endpoint may have (a bound for the ideal picker's scratch space).
pub(crate) const MAX_SLOTS: usize = 16;

/// One endpoint's slots and queue. The simulation changes them between
/// picks; the ideal reference reads them.
#[derive(Debug)]
pub(crate) struct Station {
    /// Per slot, when its request finishes; `None` when idle.
    pub(crate) slots: RefCell<Vec<Option<u64>>>,
    /// Requests waiting for a slot, by job id.
    pub(crate) queue: RefCell<VecDeque<u32>>,
    speed: f64,
    /// From this time on, this speed instead.
    slowdown: Option<(u64, f64)>,
}

impl Station {
    /// An idle endpoint with `slots` slots (at most [`MAX_SLOTS`]) at
    /// `speed`, and a `slowdown` to another speed from some time on.
    pub(crate) fn new(slots: usize, speed: f64, slowdown: Option<(u64, f64)>) -> Self {
        Self {
            slots: RefCell::new(vec![None; slots.min(MAX_SLOTS)]),
            queue: RefCell::new(VecDeque::new()),
            speed,
            slowdown,
        }
    }

    pub(crate) fn speed_at(&self, t: u64) -> f64 {
        match self.slowdown {
            Some((at, speed)) if t >= at => speed,
            _ => self.speed,
        }
    }

    /// When `job` would finish if it were sent here now, knowing the exact
    /// cost of every request already here (`jobs` by id) and of `job`
    /// itself, and the endpoint's current speed. Only the ideal reference may
    /// know this.
    pub(crate) fn finish_if_sent(&self, job: &Job, jobs: &[Job]) -> u64 {
        let now = job.arrival;
        let speed = self.speed_at(now);
        let slots = self.slots.borrow();
        let mut free = [0u64; MAX_SLOTS];
        let free = &mut free[..slots.len()];
        for (free, busy) in free.iter_mut().zip(slots.iter()) {
            *free = busy.map_or(now, |until| until.max(now));
        }
        // The queue drains in order into whichever slot frees first.
        for &queued in self.queue.borrow().iter() {
            let first = earliest(free);
            free[first] += duration(jobs[queued as usize].work, speed);
        }
        free[earliest(free)] + duration(job.work, speed)
    }
}

/// How long `work` takes at `speed`.
pub(crate) fn duration(work: u64, speed: f64) -> u64 {
    (work as f64 / speed).ceil() as u64
}

fn earliest(free: &[u64]) -> usize {
    (0..free.len()).min_by_key(|&i| free[i]).unwrap_or(0)
}
