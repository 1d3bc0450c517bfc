//! Turning "the set is now this" into the changes from the set before.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use tower::discover::Change;

use crate::endpoint::Weighted;

/// The endpoints a polling source last announced, and the changes it still
/// has to yield.
#[derive(Debug, Default)]
pub(crate) struct Diff {
    current: HashMap<SocketAddr, u32>,
    pending: VecDeque<Change<SocketAddr, u32>>,
}

impl Diff {
    /// Queues the changes that turn the announced set into `next`: a remove
    /// for each address gone, an insert for each new address and for each
    /// address whose weight changed (the balancer replaces it). Addresses
    /// whose weight is the same yield nothing, so their services keep their
    /// state. Removes come first, then inserts, each in address order.
    pub(crate) fn update(&mut self, next: impl IntoIterator<Item = (SocketAddr, u32)>) {
        let next: HashMap<SocketAddr, u32> = next.into_iter().collect();
        let mut removed: Vec<SocketAddr> = self
            .current
            .keys()
            .filter(|addr| !next.contains_key(addr))
            .copied()
            .collect();
        removed.sort_unstable();
        let mut inserted: Vec<(SocketAddr, u32)> = next
            .iter()
            .filter(|(addr, weight)| self.current.get(addr) != Some(weight))
            .map(|(&addr, &weight)| (addr, weight))
            .collect();
        inserted.sort_unstable();
        self.pending.extend(removed.into_iter().map(Change::Remove));
        self.pending.extend(
            inserted
                .into_iter()
                .map(|(addr, weight)| Change::Insert(addr, weight)),
        );
        self.current = next;
    }

    /// The next queued change, with the service for an insert made by `make`.
    pub(crate) fn next_change<S>(
        &mut self,
        make: impl FnOnce(SocketAddr) -> S,
    ) -> Option<Change<SocketAddr, Weighted<S>>> {
        Some(match self.pending.pop_front()? {
            Change::Insert(addr, weight) => Change::Insert(addr, Weighted::new(make(addr), weight)),
            Change::Remove(addr) => Change::Remove(addr),
        })
    }

    /// What a polling source yields next, if anything is waiting: `error`,
    /// taken, before any queued change.
    pub(crate) fn next_item<S, E>(
        &mut self,
        error: &mut Option<E>,
        make: impl FnOnce(SocketAddr) -> S,
    ) -> Option<Result<Change<SocketAddr, Weighted<S>>, E>> {
        match error.take() {
            Some(error) => Some(Err(error)),
            None => self.next_change(make).map(Ok),
        }
    }

    /// How many endpoints are announced (queued changes included).
    pub(crate) fn len(&self) -> usize {
        self.current.len()
    }
}

#[cfg(test)]
mod tests;
