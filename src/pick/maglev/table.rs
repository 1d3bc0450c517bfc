//! Building the Maglev lookup table: weighted shares, then the rounds of
//! claims along each endpoint's permutation.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;

use super::size;
use crate::pick::fallback::{walk_allowed, WeightedIndices};
use crate::pick::{Candidates, EndpointInfo};
use crate::util::{mix64, reduce};

/// Slots a pick walks past excluded endpoints before it falls back to a
/// scan of the endpoints.
const WALK: usize = 64;

/// The two ways an endpoint's key hash is mixed: into its permutation's
/// offset and into its skip.
const OFFSET_SALT: u64 = 0x6f66_6673_6574_0001;
const SKIP_SALT: u64 = 0x736b_6970_0000_0002;

/// The table of [`Maglev`](crate::pick::Maglev): a prime number of slots,
/// each holding an endpoint index.
///
/// Entries are 2 bytes while every endpoint index fits (up to 65 536
/// endpoints), else 4: the default table of 65 537 slots takes 128 KiB.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MaglevTable {
    entries: Entries,
    members: WeightedIndices,
}

#[derive(Clone, PartialEq, Eq)]
enum Entries {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Default for Entries {
    fn default() -> Self {
        Self::Narrow(Box::default())
    }
}

impl MaglevTable {
    pub(crate) fn build(metas: &[EndpointInfo], configured: usize) -> Self {
        let members = WeightedIndices::new(metas);
        if members.is_empty() {
            return Self::default();
        }
        let size = size::effective(configured, members.len());
        let keys: Vec<u64> = members.iter().map(|i| metas[i].key_hash()).collect();
        let weights: Vec<u64> = members.iter().map(|i| metas[i].weight().into()).collect();
        let targets = apportion(&weights, &keys, size as u64);
        let slots = fill(&keys, &targets, size);
        let indices: Vec<u32> = members.iter().map(|i| i as u32).collect();
        let entries = if metas.len() <= 1 << 16 {
            Entries::Narrow(slots.iter().map(|&j| indices[j as usize] as u16).collect())
        } else {
            Entries::Wide(slots.iter().map(|&j| indices[j as usize]).collect())
        };
        Self { entries, members }
    }

    /// How many slots the table has.
    pub fn len(&self) -> usize {
        match &self.entries {
            Entries::Narrow(e) => e.len(),
            Entries::Wide(e) => e.len(),
        }
    }

    /// Whether the table is empty: no endpoint of non-zero weight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index of the endpoint holding `slot`, or `None` when `slot` is not
    /// below [`len`](MaglevTable::len).
    ///
    /// For inspecting the table (each endpoint's share of it, on a status
    /// page or in a test); picks read the table without it.
    ///
    /// ```
    /// use tower_lb::pick::{Maglev, EndpointInfo, Prepare, key::Path};
    ///
    /// let metas = [EndpointInfo::new(11, 1), EndpointInfo::new(22, 3)];
    /// let table = Maglev::new(Path).prepare(&metas);
    /// let mut shares = [0usize; 2];
    /// for slot in 0..table.len() {
    ///     shares[table.owner(slot).unwrap()] += 1;
    /// }
    /// // 65 537 slots split 1 : 3, to the slot.
    /// assert_eq!(shares, [16_384, 49_153]);
    /// assert_eq!(table.owner(table.len()), None);
    /// ```
    pub fn owner(&self, slot: usize) -> Option<usize> {
        match &self.entries {
            Entries::Narrow(e) => e.get(slot).map(|&i| i.into()),
            Entries::Wide(e) => e.get(slot).map(|&i| i as usize),
        }
    }

    pub(crate) fn members(&self) -> &WeightedIndices {
        &self.members
    }

    /// The endpoint in `slot`, which must be below `len()`.
    pub(crate) fn entry(&self, slot: usize) -> usize {
        match &self.entries {
            Entries::Narrow(e) => e[slot].into(),
            Entries::Wide(e) => e[slot] as usize,
        }
    }

    /// The endpoint in `slot` if it is allowed, else the next allowed one
    /// along the table (at most [`WALK`] slots), else the first allowed
    /// endpoint after it in index order.
    pub(crate) fn first_allowed<S>(
        &self,
        slot: usize,
        endpoints: &Candidates<'_, S>,
    ) -> Option<usize> {
        walk_allowed(self.len(), slot, WALK, |at| self.entry(at), endpoints).or_else(|| {
            self.members
                .first_allowed_after(self.entry(slot), endpoints)
        })
    }
}

impl fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaglevTable")
            .field("slots", &self.len())
            .field("endpoints", &self.members.len())
            .finish()
    }
}

/// Each endpoint's count of slots: its exact share `size × w / W` rounded
/// down, plus one for the largest remainders, so within one slot of exact.
/// An endpoint whose share is under one slot still gets one (when the table
/// has a slot for everyone), taken from the largest counts.
fn apportion(weights: &[u64], keys: &[u64], size: u64) -> Vec<u64> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let scaled = |j: usize| u128::from(weights[j]) * u128::from(size);
    let mut targets: Vec<u64> = (0..weights.len())
        .map(|j| (scaled(j) / total) as u64)
        .collect();
    let rest = size - targets.iter().sum::<u64>();
    // Ties go by key hash, so that the table does not depend on the order
    // endpoints were learnt in.
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_unstable_by_key(|&j| (Reverse(scaled(j) % total), keys[j]));
    for &j in order.iter().take(rest as usize) {
        targets[j] += 1;
    }
    if size < weights.len() as u64 {
        return targets;
    }
    let mut excess = 0;
    for t in targets.iter_mut().filter(|t| **t == 0) {
        *t = 1;
        excess += 1;
    }
    order.sort_unstable_by_key(|&j| (Reverse(targets[j]), keys[j]));
    while excess > 0 {
        let before = excess;
        for &j in &order {
            if excess > 0 && targets[j] > 1 {
                targets[j] -= 1;
                excess -= 1;
            }
        }
        if excess == before {
            break;
        }
    }
    targets
}

/// One claim of a slot: the `k`-th of `target` for member `j`, due at
/// `(k − ½) / target` so that every endpoint's claims spread evenly over the
/// build, as the plain Maglev rounds do for equal weights.
#[derive(Clone, Copy)]
struct Turn {
    k: u64,
    target: u64,
    key: u64,
    j: usize,
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        let due = |t: &Turn, o: &Turn| u128::from(2 * t.k - 1) * u128::from(o.target);
        due(self, other)
            .cmp(&due(other, self))
            .then(self.key.cmp(&other.key))
            .then(self.j.cmp(&other.j))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Turn {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Turn {}

/// Fills `size` slots (a prime) with member positions: at each turn the
/// member claims the next empty slot of its permutation
/// `(offset + i × skip) mod size`. Each member walks its permutation once at
/// most, so the build ends, in about `size × ln(size)` steps.
fn fill(keys: &[u64], targets: &[u64], size: usize) -> Vec<u32> {
    const EMPTY: u32 = u32::MAX;
    let mut slots = vec![EMPTY; size];
    let mut next: Vec<usize> = keys
        .iter()
        .map(|&key| reduce(mix64(key ^ OFFSET_SALT), size))
        .collect();
    let skips: Vec<usize> = keys
        .iter()
        .map(|&key| 1 + reduce(mix64(key ^ SKIP_SALT), size - 1))
        .collect();
    let mut turns: BinaryHeap<Reverse<Turn>> = (0..keys.len())
        .filter(|&j| targets[j] > 0)
        .map(|j| {
            Reverse(Turn {
                k: 1,
                target: targets[j],
                key: keys[j],
                j,
            })
        })
        .collect();
    while let Some(Reverse(turn)) = turns.pop() {
        let j = turn.j;
        loop {
            let slot = next[j];
            next[j] += skips[j];
            if next[j] >= size {
                next[j] -= size;
            }
            if slots[slot] == EMPTY {
                slots[slot] = j as u32;
                break;
            }
        }
        if turn.k < turn.target {
            turns.push(Reverse(Turn {
                k: turn.k + 1,
                ..turn
            }));
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportionment_is_exact_to_one_slot() {
        let keys: Vec<u64> = (0..6).collect();
        let weights = [5, 1, 1, 3, 2, 7];
        let targets = apportion(&weights, &keys, 65_537);
        assert_eq!(targets.iter().sum::<u64>(), 65_537);
        for (t, w) in targets.iter().zip(weights) {
            let exact = 65_537.0 * w as f64 / 19.0;
            assert!((*t as f64 - exact).abs() < 1.0);
        }
    }

    #[test]
    fn tiny_shares_still_get_a_slot() {
        let keys: Vec<u64> = (0..5).collect();
        let weights = [u64::from(u32::MAX), 1, 1, 1, u64::from(u32::MAX)];
        let targets = apportion(&weights, &keys, 97);
        assert_eq!(targets.iter().sum::<u64>(), 97);
        assert_eq!(&targets[1..4], [1, 1, 1]);
        assert!(targets[0].abs_diff(targets[4]) <= 1);
        // No room for everyone: shares are plain, and the sum still fits.
        let weights = [1; 5];
        let targets = apportion(&weights, &keys, 3);
        assert_eq!(targets.iter().sum::<u64>(), 3);
    }

    #[test]
    fn fill_uses_every_slot_and_meets_every_target() {
        let keys: Vec<u64> = (0..4).map(|i| mix64(i + 77)).collect();
        let targets = [40, 30, 20, 11];
        let slots = fill(&keys, &targets, 101);
        for (j, &t) in targets.iter().enumerate() {
            assert_eq!(slots.iter().filter(|&&s| s == j as u32).count() as u64, t);
        }
    }

    #[test]
    fn wide_entries_match_narrow_ones() {
        let metas: Vec<EndpointInfo> = (0..5).map(|i| EndpointInfo::new(mix64(i), 1)).collect();
        let narrow = MaglevTable::build(&metas, 97);
        let Entries::Narrow(entries) = &narrow.entries else {
            panic!("five endpoints fit two bytes");
        };
        let wide = MaglevTable {
            entries: Entries::Wide(entries.iter().map(|&e| u32::from(e)).collect()),
            members: narrow.members.clone(),
        };
        let endpoints = Candidates::new(&metas, &[(); 5]);
        for slot in 0..narrow.len() {
            assert_eq!(narrow.entry(slot), wide.entry(slot));
            assert_eq!(narrow.owner(slot), Some(narrow.entry(slot)));
            assert_eq!(wide.owner(slot), Some(wide.entry(slot)));
            assert_eq!(
                narrow.first_allowed(slot, &endpoints),
                wide.first_allowed(slot, &endpoints)
            );
        }
        assert_eq!((narrow.owner(503), wide.owner(503)), (None, None));
        assert_eq!(
            format!("{wide:?}"),
            "MaglevTable { slots: 503, endpoints: 5 }"
        );
    }
}
