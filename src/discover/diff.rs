//! Turning "the set is now this" into the changes from the set before.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use tower::discover::Change;

use crate::endpoint::Weighted;

/// The endpoints a polling source last announced, and the changes it still
/// has to yield.
#[derive(Debug, Default)]
pub(crate) struct Diff {
    current: HashMap<SocketAddr, Entry>,
    pending: VecDeque<Change<SocketAddr, Entry>>,
}

/// What a source says of one address besides the address.
type Entry = (u32, Option<Arc<str>>);

impl Diff {
    /// Queues the changes that turn the announced set into `next`: a remove
    /// for each address gone, an insert for each new address and for each
    /// address whose weight changed (the balancer replaces it). Addresses
    /// whose weight is the same yield nothing, so their services keep their
    /// state. Removes come first, then inserts, each in address order.
    #[cfg_attr(not(feature = "dns"), allow(dead_code))]
    pub(crate) fn update(&mut self, next: impl IntoIterator<Item = (SocketAddr, u32)>) {
        self.update_zoned(
            next.into_iter()
                .map(|(addr, weight)| (addr, (weight, None))),
        );
    }

    /// [`update`](Self::update) with each address's zone: a changed zone is
    /// a change too.
    pub(crate) fn update_zoned(&mut self, next: impl IntoIterator<Item = (SocketAddr, Entry)>) {
        let next: HashMap<SocketAddr, Entry> = next.into_iter().collect();
        let mut removed: Vec<SocketAddr> = self
            .current
            .keys()
            .filter(|addr| !next.contains_key(addr))
            .copied()
            .collect();
        removed.sort_unstable();
        let mut inserted: Vec<(SocketAddr, Entry)> = next
            .iter()
            .filter(|(addr, entry)| self.current.get(addr) != Some(entry))
            .map(|(&addr, entry)| (addr, entry.clone()))
            .collect();
        inserted.sort_unstable_by_key(|(addr, _)| *addr);
        self.pending.extend(removed.into_iter().map(Change::Remove));
        self.pending.extend(
            inserted
                .into_iter()
                .map(|(addr, entry)| Change::Insert(addr, entry)),
        );
        self.current = next;
    }

    /// The next queued change, with the service for an insert made by `make`.
    pub(crate) fn next_change<S>(
        &mut self,
        make: impl FnOnce(SocketAddr) -> S,
    ) -> Option<Change<SocketAddr, Weighted<S>>> {
        Some(match self.pending.pop_front()? {
            Change::Insert(addr, (weight, zone)) => {
                let service = Weighted::new(make(addr), weight);
                let service = match zone {
                    Some(zone) => service.with_zone(zone),
                    None => service,
                };
                Change::Insert(addr, service)
            }
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
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn drain(diff: &mut Diff) -> Vec<String> {
        std::iter::from_fn(|| diff.next_change(|addr| addr.port()))
            .map(|change| match change {
                Change::Insert(addr, svc) => {
                    use crate::endpoint::Endpoint;
                    format!("+{}@{}", addr.port(), svc.weight())
                }
                Change::Remove(addr) => format!("-{}", addr.port()),
            })
            .collect()
    }

    #[test]
    fn yields_only_differences() {
        let mut diff = Diff::default();
        diff.update([(addr(2), 1), (addr(1), 1)]);
        assert_eq!(drain(&mut diff), ["+1@1", "+2@1"]);

        diff.update([(addr(1), 1), (addr(2), 1)]);
        assert!(drain(&mut diff).is_empty());

        diff.update([(addr(1), 1), (addr(2), 5), (addr(3), 1)]);
        assert_eq!(drain(&mut diff), ["+2@5", "+3@1"]);

        diff.update([(addr(3), 1)]);
        assert_eq!(drain(&mut diff), ["-1", "-2"]);
        assert_eq!(diff.len(), 1);

        diff.update([]);
        assert_eq!(drain(&mut diff), ["-3"]);
    }

    #[test]
    fn an_error_comes_before_the_changes() {
        let mut diff = Diff::default();
        diff.update([(addr(1), 1)]);
        let mut error = Some("failed");
        let mut next = || diff.next_item(&mut error, |addr| addr.port());
        assert!(matches!(next(), Some(Err("failed"))));
        assert!(matches!(next(), Some(Ok(Change::Insert(_, _)))));
        assert!(next().is_none());
    }
}
