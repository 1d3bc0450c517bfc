//! The hash ring: sorted points, each owned by an endpoint, with a bucket
//! index over the top bits of the hash for an O(1) expected lookup.

use std::fmt;

use crate::pick::fallback::{walk_allowed, WeightedIndices, MAX_INDEXED};
use crate::pick::{Candidates, EndpointInfo};
use crate::util::mix64;

/// The ring never holds more points than this, plus one per endpoint (every
/// endpoint of non-zero weight keeps at least one point).
pub(crate) const MAX_POINTS: u64 = 1 << 20;

/// Points a pick walks past before it falls back to a scan of the
/// endpoints; keeps a pick bounded when excluded endpoints own long runs.
pub(crate) const WALK: usize = 256;

/// Separates the ring's point hashes from other uses of the same key hash.
const RING_SALT: u64 = 0x7269_6e67_7069_636b;

/// The SplitMix64 increment: an endpoint's points are the SplitMix64 stream
/// seeded by its key hash, so they are the same in every process.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The table of [`ConsistentHash`](crate::pick::ConsistentHash) and
/// [`BoundedConsistentHash`](crate::pick::BoundedConsistentHash): points on a
/// 64-bit ring, sorted, each owned by an endpoint.
///
/// About 6.3 bytes a point (1 000 bytes an endpoint at 160 points): 32 bits
/// of its hash, its owner in 16 bits (32 beyond 65 535 endpoints) and a
/// bucket index of one `u32` for every 16 to 32 points. The bucket a point
/// is in gives the top bits of its hash; the 32 bits kept are the ones just
/// below. A key whose hash agrees with a point's in all of those bits (the
/// bucket's and the 32 kept, at least 33 in all) counts as reaching that
/// point even if its lower bits fall just short of it: with 16 to 32
/// points a bucket, one key in hundreds of millions, and every process
/// makes the same choice for it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HashRing {
    /// Per point, sorted: the 32 bits of its hash below the bucket bits.
    fractions: Box<[u32]>,
    owners: Owners,
    /// `buckets[b]` is the position of the first point whose top bits are
    /// at least `b`; one extra entry holds the ring's length.
    buckets: Box<[u32]>,
    /// The number of bits the buckets index (1 to 32).
    bits: u32,
    members: WeightedIndices,
}

/// Point owners, as narrow as the endpoint count allows.
#[derive(Clone, PartialEq, Eq)]
enum Owners {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Default for Owners {
    fn default() -> Self {
        Self::Narrow(Box::default())
    }
}

impl Owners {
    fn get(&self, pos: usize) -> usize {
        match self {
            Self::Narrow(owners) => usize::from(owners[pos]),
            Self::Wide(owners) => owners[pos] as usize,
        }
    }
}

/// Every point of the ring, sorted: (hash, owner's key hash, owner).
fn points(metas: &[EndpointInfo], per_weight: u32) -> Vec<(u64, u64, u32)> {
    let counts = point_counts(metas, per_weight);
    let total: u64 = counts.iter().map(|&(_, c)| c).sum();
    let mut points: Vec<(u64, u64, u32)> = Vec::with_capacity(total as usize);
    for &(i, count) in &counts {
        let key_hash = metas[i as usize].key_hash();
        let seed = mix64(key_hash ^ RING_SALT);
        for r in 1..=count {
            let hash = mix64(seed.wrapping_add(r.wrapping_mul(GAMMA)));
            points.push((hash, key_hash, i));
        }
    }
    // Ties (two points on one hash) go by key hash, not index: indices
    // depend on insertion order, and the ring must not.
    points.sort_unstable();
    points
}

/// The 32 bits of `hash` below its top `bits`.
fn fraction(hash: u64, bits: u32) -> u32 {
    ((hash << bits) >> 32) as u32
}

impl HashRing {
    /// Builds the ring: `per_weight × weight` points an endpoint, scaled
    /// down proportionally when the total would exceed [`MAX_POINTS`].
    pub(crate) fn build(metas: &[EndpointInfo], per_weight: u32) -> Self {
        let members = WeightedIndices::new(metas);
        let points = points(metas, per_weight);
        let hashes: Vec<u64> = points.iter().map(|&(h, _, _)| h).collect();
        let (buckets, bits) = bucket_index(&hashes);
        let fractions = hashes.iter().map(|&h| fraction(h, bits)).collect();
        let narrow = metas.len() <= usize::from(u16::MAX) + 1;
        let owners = if narrow {
            Owners::Narrow(points.iter().map(|&(_, _, i)| i as u16).collect())
        } else {
            Owners::Wide(points.iter().map(|&(_, _, i)| i).collect())
        };
        Self {
            fractions,
            owners,
            buckets,
            bits,
            members,
        }
    }

    /// How many points the ring holds.
    pub fn len(&self) -> usize {
        self.fractions.len()
    }

    /// Whether the ring has no points: no endpoint of non-zero weight.
    pub fn is_empty(&self) -> bool {
        self.fractions.is_empty()
    }

    pub(crate) fn members(&self) -> &WeightedIndices {
        &self.members
    }

    /// The position of the first point at or after `hash`, clockwise.
    /// The ring must not be empty.
    pub(crate) fn successor(&self, hash: u64) -> usize {
        let bucket = (hash >> (64 - self.bits)) as usize;
        let lo = self.buckets[bucket] as usize;
        let hi = self.buckets[bucket + 1] as usize;
        let key = fraction(hash, self.bits);
        let pos = lo + self.fractions[lo..hi].partition_point(|&f| f < key);
        if pos == self.fractions.len() {
            0
        } else {
            pos
        }
    }

    /// The endpoint owning the point at `pos`.
    pub(crate) fn owner(&self, pos: usize) -> usize {
        self.owners.get(pos)
    }

    /// The position after `pos`, clockwise.
    pub(crate) fn next(&self, pos: usize) -> usize {
        if pos + 1 == self.fractions.len() {
            0
        } else {
            pos + 1
        }
    }

    /// The first allowed owner clockwise from `pos` (at most [`WALK`]
    /// points), else the first allowed endpoint after that point's owner in
    /// index order.
    pub(crate) fn first_allowed<S>(
        &self,
        pos: usize,
        endpoints: &Candidates<'_, S>,
    ) -> Option<usize> {
        walk_allowed(self.len(), pos, WALK, |at| self.owner(at), endpoints)
            .or_else(|| self.members.first_allowed_after(self.owner(pos), endpoints))
    }
}

impl fmt::Debug for HashRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashRing")
            .field("points", &self.len())
            .field("endpoints", &self.members.len())
            .finish()
    }
}

/// How many points each endpoint of non-zero weight gets.
fn point_counts(metas: &[EndpointInfo], per_weight: u32) -> Vec<(u32, u64)> {
    let per_weight = u128::from(per_weight.max(1));
    let wanted: Vec<(u32, u128)> = metas
        .iter()
        .take(MAX_INDEXED)
        .enumerate()
        .filter(|(_, meta)| meta.weight() > 0)
        .map(|(i, meta)| (i as u32, per_weight * u128::from(meta.weight())))
        .collect();
    let total: u128 = wanted.iter().map(|&(_, w)| w).sum();
    let cap = u128::from(MAX_POINTS);
    wanted
        .into_iter()
        .map(|(i, w)| {
            // Rounding down keeps the sum within the cap, and keeping the
            // first points of each stream moves as few keys as possible.
            let count = if total > cap {
                (w * cap / total).max(1)
            } else {
                w
            };
            (i, count as u64)
        })
        .collect()
}

/// One bucket for every 16 to 32 points, a power of two of them, at least
/// two; returns the index and how many top bits of a hash it takes.
fn bucket_index(hashes: &[u64]) -> (Box<[u32]>, u32) {
    let len = hashes.len();
    let bits = (usize::BITS - 1 - (len / 16).max(2).leading_zeros()).min(32);
    let shift = 64 - bits;
    let count = 1usize << bits;
    let mut buckets = Vec::with_capacity(count + 1);
    let mut pos = 0;
    for b in 0..count {
        let start = (b as u64) << shift;
        while pos < len && hashes[pos] < start {
            pos += 1;
        }
        buckets.push(pos as u32);
    }
    buckets.push(len as u32);
    (buckets.into_boxed_slice(), bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pick::testing::keyed_metas;
    use crate::util::Rng;

    fn metas(weights: &[u32]) -> Vec<EndpointInfo> {
        keyed_metas(weights, |i| 1000 + i as u64)
    }

    #[test]
    fn successor_matches_a_binary_search() {
        let rng = Rng::from_seed(4);
        for weights in [&[1][..], &[1, 2], &[3, 0, 5, 1], &[1; 40]] {
            for per_weight in [1, 7, 160] {
                let ring = HashRing::build(&metas(weights), per_weight);
                let expected_len: u32 = weights.iter().sum::<u32>() * per_weight;
                assert_eq!(ring.len(), expected_len as usize);
                let hashes: Vec<u64> = points(&metas(weights), per_weight)
                    .iter()
                    .map(|&(h, _, _)| h)
                    .collect();
                let mut probes: Vec<u64> = (0..2000).map(|_| rng.next_u64()).collect();
                probes.extend([0, u64::MAX, hashes[0], hashes[ring.len() - 1]]);
                for h in probes {
                    let naive = hashes.partition_point(|&x| x < h) % ring.len();
                    assert_eq!(ring.successor(h), naive);
                }
            }
        }
    }

    #[test]
    fn points_depend_on_keys_not_indices() {
        let a = [EndpointInfo::new(7, 1), EndpointInfo::new(9, 2)];
        let b = [EndpointInfo::new(9, 2), EndpointInfo::new(7, 1)];
        let (ra, rb) = (HashRing::build(&a, 50), HashRing::build(&b, 50));
        assert_eq!(ra.fractions, rb.fractions);
        let swapped: Vec<usize> = (0..rb.len()).map(|p| 1 - rb.owner(p)).collect();
        let owners: Vec<usize> = (0..ra.len()).map(|p| ra.owner(p)).collect();
        assert_eq!(owners, swapped);
    }

    #[test]
    fn huge_weights_are_capped() {
        let ring = HashRing::build(&metas(&[u32::MAX, u32::MAX, 1]), u32::MAX);
        assert!(ring.len() as u64 <= MAX_POINTS + 3);
        let owners: Vec<usize> = (0..ring.len()).map(|p| ring.owner(p)).collect();
        let light = owners.iter().filter(|&&i| i == 2).count();
        assert_eq!(light, 1, "every endpoint keeps a point");
        let heavy = owners.iter().filter(|&&i| i == 0).count();
        assert!(heavy as u64 >= MAX_POINTS / 2 - 1);

        let many = metas(&vec![u32::MAX; 5000]);
        assert!(HashRing::build(&many, 160).len() as u64 <= MAX_POINTS + 5000);

        // Past 65 536 endpoints owners take 32 bits.
        let wide = metas(&vec![1; 70_000]);
        let ring = HashRing::build(&wide, 1);
        assert!(matches!(ring.owners, Owners::Wide(_)));
        let seen: std::collections::HashSet<usize> =
            (0..ring.len()).map(|p| ring.owner(p)).collect();
        assert_eq!(seen.len(), 70_000);
    }

    #[test]
    fn empty_and_zero_weight_sets_have_no_points() {
        assert!(HashRing::build(&[], 160).is_empty());
        let ring = HashRing::build(&metas(&[0, 0]), 160);
        assert!(ring.is_empty());
        assert!(ring.members().is_empty());
        // A single point still gets a valid bucket index.
        let one = HashRing::build(&metas(&[1]), 1);
        assert_eq!(one.successor(0), 0);
        assert_eq!(one.successor(u64::MAX), 0);
    }
}
