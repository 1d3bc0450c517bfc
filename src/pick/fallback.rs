//! Where a picker turns when its first choice is not allowed: the next
//! entries of its table, and the endpoints a hashing picker falls back to
//! when the key does not decide (no key at all, or a table walk that found
//! nothing allowed).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Candidates, EndpointInfo};

/// Endpoints beyond this index are left out of hashing tables, so that every
/// index and every table position fits a `u32`.
pub(crate) const MAX_INDEXED: usize = 1 << 31;

/// The indices of the endpoints of non-zero weight, in index order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct WeightedIndices {
    indices: Box<[u32]>,
}

impl WeightedIndices {
    pub(crate) fn new(metas: &[EndpointInfo]) -> Self {
        Self {
            indices: metas
                .iter()
                .take(MAX_INDEXED)
                .enumerate()
                .filter(|(_, meta)| meta.weight() > 0)
                .map(|(i, _)| i as u32)
                .collect(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.indices.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.indices.iter().map(|&i| i as usize)
    }

    /// At most `len` members from position `start` (taken modulo the
    /// member count) on, wrapping around.
    pub(crate) fn window(&self, start: usize, len: usize) -> impl Iterator<Item = usize> + '_ {
        let start = if self.indices.is_empty() {
            0
        } else {
            start % self.indices.len()
        };
        let (head, tail) = self.indices.split_at(start);
        tail.iter().chain(head).take(len).map(|&i| i as usize)
    }

    /// Plain round robin over the members: the one under the cursor if it is
    /// allowed, else the next allowed one after it.
    pub(crate) fn round_robin<S>(
        &self,
        cursor: &AtomicUsize,
        endpoints: &Candidates<'_, S>,
    ) -> Option<usize> {
        if self.indices.is_empty() {
            return None;
        }
        let len = self.indices.len();
        let mut start = cursor.fetch_add(1, Ordering::Relaxed) % len;
        // A member that may not take the request hands its turn to the
        // cursor's next one rather than to its neighbour, so the others share
        // its turns evenly; after a few tries, the scan.
        if endpoints.has_exclusions() {
            for _ in 0..len.min(8) {
                let i = self.indices[start] as usize;
                if endpoints.is_allowed(i) {
                    return Some(i);
                }
                start = cursor.fetch_add(1, Ordering::Relaxed) % len;
            }
        }
        self.first_allowed_from(start, endpoints)
    }

    /// The first allowed member after endpoint `index` in index order,
    /// wrapping around: a deterministic last resort once a table walk gave
    /// up. O(n).
    pub(crate) fn first_allowed_after<S>(
        &self,
        index: usize,
        endpoints: &Candidates<'_, S>,
    ) -> Option<usize> {
        let start = self.indices.partition_point(|&i| i as usize <= index);
        self.first_allowed_from(start, endpoints)
    }

    fn first_allowed_from<S>(&self, start: usize, endpoints: &Candidates<'_, S>) -> Option<usize> {
        let (head, tail) = self.indices.split_at(start.min(self.indices.len()));
        tail.iter()
            .chain(head)
            .map(|&i| i as usize)
            .find(|&i| endpoints.is_allowed(i))
    }
}

/// The first allowed endpoint among at most `steps` consecutive entries of a
/// table of `len` entries, from entry `pos` on and wrapping around;
/// `entry(at)` is the endpoint in entry `at`. The bound keeps a pick cheap
/// when excluded endpoints own long runs of the table.
pub(crate) fn walk_allowed<S>(
    len: usize,
    pos: usize,
    steps: usize,
    entry: impl Fn(usize) -> usize,
    endpoints: &Candidates<'_, S>,
) -> Option<usize> {
    let mut at = pos;
    for _ in 0..len.min(steps) {
        let i = entry(at);
        if endpoints.is_allowed(i) {
            return Some(i);
        }
        at = if at + 1 == len { 0 } else { at + 1 };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_skips_zero_weight_and_exclusions() {
        let metas = [
            EndpointInfo::new(1, 1),
            EndpointInfo::new(2, 0),
            EndpointInfo::new(3, 2),
        ];
        let members = WeightedIndices::new(&metas);
        assert_eq!(members.len(), 2);
        let cursor = AtomicUsize::new(0);
        let services = [(); 3];
        let all = Candidates::new(&metas, &services);
        let picks: Vec<_> = (0..4).map(|_| members.round_robin(&cursor, &all)).collect();
        assert_eq!(picks, [Some(0), Some(2), Some(0), Some(2)]);

        let excluded = [metas[0].key_hash()];
        let retry = Candidates::new(&metas, &services).excluding(&excluded);
        assert_eq!(members.round_robin(&cursor, &retry), Some(2));
        assert_eq!(members.round_robin(&cursor, &retry), Some(2));
        assert_eq!(members.first_allowed_after(2, &retry), Some(2));
        assert_eq!(members.first_allowed_after(0, &all), Some(2));
        assert_eq!(members.first_allowed_after(2, &all), Some(0));

        let none = WeightedIndices::new(&[EndpointInfo::new(1, 0)]);
        assert!(none.is_empty());
        assert_eq!(none.round_robin(&cursor, &all), None);
    }

    #[test]
    fn walks_are_bounded_and_wrap() {
        let metas = [
            EndpointInfo::new(1, 1),
            EndpointInfo::new(2, 1),
            EndpointInfo::new(3, 1),
        ];
        let services = [(); 3];
        let excluded = [metas[0].key_hash(), metas[1].key_hash()];
        let retry = Candidates::new(&metas, &services).excluding(&excluded);
        let table = [0, 1, 0, 1, 2];
        let entry = |at: usize| table[at];
        assert_eq!(walk_allowed(5, 0, 5, entry, &retry), Some(2));
        assert_eq!(walk_allowed(5, 0, 4, entry, &retry), None);
        assert_eq!(walk_allowed(5, 4, 1, entry, &retry), Some(2));
        let wrapping = [2, 0, 1];
        assert_eq!(walk_allowed(3, 1, 3, |at| wrapping[at], &retry), Some(2));
        assert_eq!(walk_allowed(3, 1, 2, |at| wrapping[at], &retry), None);
        let all = Candidates::new(&metas, &services);
        assert_eq!(walk_allowed(0, 0, 64, entry, &all), None);
    }
}
