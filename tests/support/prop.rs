//! Strategies and models shared by the property tests: random endpoint
//! sets, stand-in endpoint services with a health flag and a load, and a
//! fixed-seed proptest configuration.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use tower_lb::pick::{Candidates, EndpointInfo};

/// A fixed seed and no failure files: a run is the same on every machine,
/// and a failure prints the shrunk case, which reproduces it.
pub fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x7091_0b1a),
        ..Config::default()
    }
}

/// An endpoint service as the pickers see it: whether health checks let it
/// take requests, and its load (requests in flight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Svc {
    pub up: bool,
    pub load: u32,
}

impl tower::load::Load for Svc {
    type Metric = u32;

    fn load(&self) -> u32 {
        self.load
    }
}

/// The availability check the balancer would pass for health-checked
/// endpoints.
pub fn is_up(svc: &Svc) -> bool {
    svc.up
}

/// Weights with the edges over-represented: 0 (drained), 1, `u32::MAX`.
pub fn weight() -> impl Strategy<Value = u32> + Clone {
    prop_oneof![
        2 => Just(0u32),
        3 => Just(1u32),
        1 => Just(u32::MAX),
        4 => 2..=16u32,
        1 => any::<u32>(),
    ]
}

/// Weights from 1 to 16: tables stay exact (no scaling to a cap).
pub fn small_weight() -> impl Strategy<Value = u32> + Clone {
    1..=16u32
}

/// Distinct key hashes, `len` of them in `range`.
pub fn key_hashes(range: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::btree_set(any::<u64>(), range)
        .prop_map(|set: BTreeSet<u64>| set.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

/// One endpoint of a random set: its key hash, weight, health and load.
#[derive(Clone, Debug)]
pub struct Drawn {
    pub meta: EndpointInfo,
    pub svc: Svc,
}

/// A set of 0 to `max` endpoints with distinct key hashes and weights from
/// `weights`; about one in five is down.
pub fn endpoint_set<W>(max: usize, weights: W) -> impl Strategy<Value = Vec<Drawn>>
where
    W: Strategy<Value = u32> + Clone,
{
    key_hashes(0..max + 1).prop_flat_map(move |hashes| {
        let n = hashes.len();
        (
            Just(hashes),
            prop::collection::vec(weights.clone(), n),
            prop::collection::vec(prop::bool::weighted(0.8), n),
            prop::collection::vec(0..50u32, n),
        )
            .prop_map(|(hashes, weights, ups, loads)| {
                hashes
                    .into_iter()
                    .zip(weights)
                    .zip(ups.into_iter().zip(loads))
                    .map(|((hash, weight), (up, load))| Drawn {
                        meta: EndpointInfo::new(hash, weight),
                        svc: Svc { up, load },
                    })
                    .collect()
            })
    })
}

/// The parts of a drawn set, index for index.
pub fn split(set: &[Drawn]) -> (Vec<EndpointInfo>, Vec<Svc>) {
    set.iter().map(|d| (d.meta, d.svc)).unzip()
}

/// Whether any endpoint may take the request.
pub fn any_allowed<S>(endpoints: &Candidates<'_, S>) -> bool {
    (0..endpoints.len()).any(|i| endpoints.is_allowed(i))
}

/// Key hashes to exclude: some of the set's (chosen by `mask`), plus
/// hashes of no endpoint, which must change nothing.
pub fn exclusions(metas: &[EndpointInfo], mask: &[bool], strangers: &[u64]) -> Vec<u64> {
    metas
        .iter()
        .zip(mask.iter().cycle())
        .filter(|(_, &out)| out)
        .map(|(meta, _)| meta.key_hash())
        .chain(strangers.iter().copied())
        .collect()
}
