//! The set a registry announces (addresses with weight, zone and node),
//! turned into changes that keep each address's service.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use tower::discover::Change;

use crate::endpoint::Weighted;

/// What a registry says of one address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Located {
    /// 0 drains the endpoint.
    pub(crate) weight: u32,
    pub(crate) zone: Option<Arc<str>>,
    pub(crate) node: Option<Arc<str>>,
}

impl Located {
    fn wrap<S>(&self, service: S) -> Weighted<S> {
        let mut service = Weighted::new(service, self.weight);
        if let Some(zone) = &self.zone {
            service = service.with_zone(zone.clone());
        }
        if let Some(node) = &self.node {
            service = service.with_node(node.clone());
        }
        service
    }
}

/// The endpoints announced so far, each with the service made for it, and
/// the changes still to yield.
#[derive(Debug)]
pub(crate) struct Tracked<S> {
    current: HashMap<SocketAddr, (Located, S)>,
    pending: VecDeque<Change<SocketAddr, Weighted<S>>>,
}

impl<S> Default for Tracked<S> {
    fn default() -> Self {
        Self {
            current: HashMap::new(),
            pending: VecDeque::new(),
        }
    }
}

impl<S: Clone> Tracked<S> {
    /// Queues the changes from the announced set to `next`:
    ///
    /// * a new address is inserted with a service from `make`, unless it
    ///   comes with weight 0 (an endpoint already draining is never
    ///   announced);
    /// * an address whose weight, zone or node changed is inserted again
    ///   with *the same* service, so that draining (weight 0) keeps its
    ///   connections and its requests in flight;
    /// * an address gone is removed.
    ///
    /// Inserts come first, then removes, each in address order, so a set
    /// that swaps endpoints never passes through empty.
    pub(crate) fn update(
        &mut self,
        mut next: HashMap<SocketAddr, Located>,
        mut make: impl FnMut(SocketAddr) -> S,
    ) {
        let mut removes: Vec<SocketAddr> = self
            .current
            .keys()
            .filter(|addr| !next.contains_key(addr))
            .copied()
            .collect();
        removes.sort_unstable();
        let mut inserts: Vec<(SocketAddr, Located)> = next
            .drain()
            .filter(|(addr, located)| match self.current.get(addr) {
                Some((old, _)) => old != located,
                None => located.weight > 0,
            })
            .collect();
        inserts.sort_unstable_by_key(|(addr, _)| *addr);
        for (addr, located) in inserts {
            let service = match self.current.remove(&addr) {
                Some((_, service)) => service,
                None => make(addr),
            };
            self.pending
                .push_back(Change::Insert(addr, located.wrap(service.clone())));
            self.current.insert(addr, (located, service));
        }
        for addr in removes {
            self.current.remove(&addr);
            self.pending.push_back(Change::Remove(addr));
        }
    }

    /// The next queued change.
    pub(crate) fn next_change(&mut self) -> Option<Change<SocketAddr, Weighted<S>>> {
        self.pending.pop_front()
    }
}

impl<S> Tracked<S> {
    /// How many endpoints are announced (queued changes included).
    pub(crate) fn len(&self) -> usize {
        self.current.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Endpoint;

    fn at(port: u16, weight: u32, zone: Option<&str>) -> (SocketAddr, Located) {
        (
            SocketAddr::from(([127, 0, 0, 1], port)),
            Located {
                weight,
                zone: zone.map(Arc::from),
                node: None,
            },
        )
    }

    fn drain(tracked: &mut Tracked<u16>) -> Vec<String> {
        std::iter::from_fn(|| tracked.next_change())
            .map(|change| match change {
                Change::Insert(addr, svc) => format!(
                    "+{}@{}{}#{}",
                    addr.port(),
                    svc.weight(),
                    svc.zone().map(|z| format!(" {z}")).unwrap_or_default(),
                    svc.get_ref()
                ),
                Change::Remove(addr) => format!("-{}", addr.port()),
            })
            .collect()
    }

    #[test]
    fn drains_keep_the_service_and_removes_come_last() {
        let mut made = 0u16;
        let mut tracked = Tracked::default();
        let mut make = |_| {
            made += 1;
            made
        };
        tracked.update(
            [at(1, 1, Some("a")), at(2, 1, None), at(3, 0, None)].into(),
            &mut make,
        );
        assert_eq!(drain(&mut tracked), ["+1@1 a#1", "+2@1#2"]);
        // Port 1 drains: the same service, weight 0. Port 2 goes; 4 comes.
        tracked.update([at(1, 0, Some("a")), at(4, 1, None)].into(), &mut make);
        assert_eq!(drain(&mut tracked), ["+1@0 a#1", "+4@1#3", "-2"]);
        // Nothing changed: nothing to yield.
        tracked.update([at(1, 0, Some("a")), at(4, 1, None)].into(), &mut make);
        assert!(drain(&mut tracked).is_empty());
        // A changed zone replaces, with the same service.
        tracked.update([at(4, 1, Some("b"))].into(), &mut make);
        assert_eq!(drain(&mut tracked), ["+4@1 b#3", "-1"]);
        assert_eq!(tracked.len(), 1);
    }
}
