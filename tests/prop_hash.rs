//! Property tests of the hashing pickers: consistent hashing moves as few
//! keys as a change requires, and bounded load never lets an endpoint past
//! its bound.

mod support;

use proptest::prelude::*;
use tower_lb::pick::{Candidates, ConsistentHash, EndpointInfo, Pick, Prepare};

use support::prop::*;

type Key = Option<u64>;
type KeyFn = fn(&Key) -> Option<u64>;

fn key(req: &Key) -> Option<u64> {
    *req
}

fn ring(virtual_nodes: u32) -> ConsistentHash<KeyFn> {
    ConsistentHash::new(key as KeyFn).virtual_nodes(virtual_nodes)
}

/// Where each key goes, named by the endpoint's key hash (indices change
/// from one set to the next; key hashes do not).
fn owners(picker: &ConsistentHash<KeyFn>, metas: &[EndpointInfo], keys: &[u64]) -> Vec<u64> {
    let table = picker.prepare(metas);
    let services = vec![(); metas.len()];
    let endpoints = Candidates::new(metas, &services);
    keys.iter()
        .map(|&k| {
            let i = picker
                .pick(&table, &endpoints, &Some(k))
                .expect("a set with weights above 0");
            metas[i].key_hash()
        })
        .collect()
}

/// A set of 2 to 12 endpoints with weights 1 to 16: rings below the point
/// cap, where an endpoint's points depend on its own key and weight only.
fn ring_set() -> impl Strategy<Value = Vec<EndpointInfo>> {
    endpoint_set(12, small_weight())
        .prop_filter("two endpoints at least", |set| set.len() >= 2)
        .prop_map(|set| split(&set).0)
}

proptest! {
    #![proptest_config(config(128))]

    /// After one endpoint is removed, the only keys that move are the ones
    /// it owned. The balancer's worker removes by swapping the last
    /// endpoint into the gap, so indices change too.
    #[test]
    fn a_remove_moves_only_the_removed_endpoints_keys(
        metas in ring_set(),
        gone in any::<prop::sample::Index>(),
        keys in prop::collection::vec(any::<u64>(), 300),
        virtual_nodes in 1..64u32,
    ) {
        let picker = ring(virtual_nodes);
        let before = owners(&picker, &metas, &keys);
        let mut after_set = metas.clone();
        let removed = after_set.swap_remove(gone.index(metas.len())).key_hash();
        let after = owners(&picker, &after_set, &keys);
        for ((k, was), now) in keys.iter().zip(&before).zip(&after) {
            if *was != removed {
                prop_assert_eq!(was, now, "key {} moved though {:x} was removed", k, removed);
            } else {
                prop_assert_ne!(*now, removed);
            }
        }
    }

    /// After one endpoint is inserted, a key either stays or moves to the
    /// new endpoint.
    #[test]
    fn an_insert_moves_keys_only_to_the_new_endpoint(
        metas in ring_set(),
        new_hash in any::<u64>(),
        new_weight in small_weight(),
        keys in prop::collection::vec(any::<u64>(), 300),
        virtual_nodes in 1..64u32,
    ) {
        prop_assume!(metas.iter().all(|m| m.key_hash() != new_hash));
        let picker = ring(virtual_nodes);
        let before = owners(&picker, &metas, &keys);
        let mut after_set = metas.clone();
        after_set.push(EndpointInfo::new(new_hash, new_weight));
        let after = owners(&picker, &after_set, &keys);
        for ((k, was), now) in keys.iter().zip(&before).zip(&after) {
            prop_assert!(was == now || *now == new_hash, "key {} moved to an old endpoint", k);
        }
    }

    /// The ring depends on the set, not on the order endpoints arrived in:
    /// two clients that learnt the same endpoints in any order agree.
    #[test]
    fn order_does_not_change_the_ring(
        metas in ring_set(),
        keys in prop::collection::vec(any::<u64>(), 100),
        virtual_nodes in 1..64u32,
    ) {
        let picker = ring(virtual_nodes);
        let mut reversed = metas.clone();
        reversed.reverse();
        prop_assert_eq!(owners(&picker, &metas, &keys), owners(&picker, &reversed, &keys));
    }
}

// ===== bounded load =====

/// One step of a bounded-load run: a request for a key (or without one),
/// or a request in flight finishing.
#[derive(Clone, Debug)]
enum Step {
    Pick(Key),
    Finish(prop::sample::Index),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => any::<Option<u64>>().prop_map(Step::Pick),
        // A few hot keys: the case the bound is for.
        3 => (0..3u64).prop_map(|k| Step::Pick(Some(k))),
        2 => any::<prop::sample::Index>().prop_map(Step::Finish),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// Every request lands on an endpoint whose load, with the request,
    /// is within `⌈factor × (L + 1) × wᵢ / W⌉` over the allowed endpoints.
    /// With whole-number loads the least loaded endpoint for its weight
    /// always qualifies, so the bound can always be met and must be.
    #[test]
    fn bounded_load_never_exceeds_its_bound(
        set in endpoint_set(8, prop_oneof![8 => small_weight(), 1 => Just(1000u32), 1 => Just(0u32)]),
        factor in prop_oneof![Just(1.000_001f64), 1.01..4.0f64],
        mask in prop::collection::vec(prop::bool::weighted(0.2), 1..8),
        gated in any::<bool>(),
        steps in prop::collection::vec(step(), 1..200),
        virtual_nodes in 1..64u32,
    ) {
        within_bound(&set, factor, &mask, gated, steps, virtual_nodes)?;
    }
}

proptest! {
    // Rings of `u32::MAX` weights are scaled to about a million points.
    #![proptest_config(config(6))]

    #[test]
    fn bounded_load_holds_with_huge_weights(
        set in endpoint_set(5, prop_oneof![Just(u32::MAX), any::<u32>(), Just(1u32)]),
        factor in 1.01..2.0f64,
        steps in prop::collection::vec(step(), 1..300),
    ) {
        within_bound(&set, factor, &[false], false, steps, 160)?;
    }
}

fn within_bound(
    set: &[Drawn],
    factor: f64,
    mask: &[bool],
    gated: bool,
    steps: Vec<Step>,
    virtual_nodes: u32,
) -> Result<(), TestCaseError> {
    let picker = ring(virtual_nodes).bounded_load(factor).expect("above 1");
    let (metas, mut services) = split(set);
    for svc in &mut services {
        svc.load = 0;
    }
    let excluded = exclusions(&metas, mask, &[]);
    let table = picker.prepare(&metas);
    for step in steps {
        let req = match step {
            Step::Pick(req) => req,
            Step::Finish(which) => {
                let busy: Vec<usize> = (0..services.len())
                    .filter(|&i| services[i].load > 0)
                    .collect();
                if !busy.is_empty() {
                    services[busy[which.index(busy.len())]].load -= 1;
                }
                continue;
            }
        };
        let picked = {
            let endpoints = Candidates::new(&metas, &services).excluding(&excluded);
            let endpoints = if gated {
                endpoints.with_availability(is_up)
            } else {
                endpoints
            };
            let allowed: Vec<usize> = (0..metas.len())
                .filter(|&i| endpoints.is_allowed(i))
                .collect();
            let Some(i) = picker.pick(&table, &endpoints, &req) else {
                prop_assert!(
                    allowed.is_empty(),
                    "no pick though {:?} are allowed",
                    allowed
                );
                continue;
            };
            prop_assert!(allowed.contains(&i));
            let load: f64 = allowed.iter().map(|&j| f64::from(services[j].load)).sum();
            let weight: f64 = allowed.iter().map(|&j| f64::from(metas[j].weight())).sum();
            let capacity = (factor * (load + 1.0) * f64::from(metas[i].weight()) / weight).ceil();
            prop_assert!(
                f64::from(services[i].load) + 1.0 <= capacity,
                "endpoint {} at load {} past its capacity {} (L = {}, W = {}, factor {})",
                i,
                services[i].load,
                capacity,
                load,
                weight,
                factor
            );
            i
        };
        services[picked].load += 1;
    }
    Ok(())
}
