use proptest::prelude::*;

use super::*;
use crate::pick::{LeastConnections, P2c, RoundRobin};

fn metas(zones: &[(&str, u32)]) -> Vec<EndpointInfo> {
    zones
        .iter()
        .enumerate()
        .map(|(i, &(zone, weight))| {
            let meta = EndpointInfo::new(i as u64 + 1, weight);
            if zone.is_empty() {
                meta
            } else {
                meta.with_zone(zone)
            }
        })
        .collect()
}

/// An endpoint that is up or down, with no load.
struct Up(bool);

impl tower::load::Load for Up {
    type Metric = u32;
    fn load(&self) -> u32 {
        0
    }
}

/// How many of `n` picks land on each endpoint.
fn tally<P: Pick<(), Up>>(picker: &P, metas: &[EndpointInfo], up: &[bool], n: usize) -> Vec<usize> {
    let table = picker.prepare(metas);
    let services: Vec<Up> = up.iter().map(|&up| Up(up)).collect();
    let endpoints = Candidates::new(metas, &services).with_availability(|up: &Up| up.0);
    let mut counts = vec![0; metas.len()];
    for _ in 0..n {
        if let Some(i) = picker.pick(&table, &endpoints, &()) {
            counts[i] += 1;
        }
    }
    counts
}

#[test]
fn rule_matches_envoy() {
    // Upstream share at least the caller share: all local.
    assert_eq!(keep_local(5, 10, 0.5), 1.0);
    assert_eq!(keep_local(6, 10, 0.5), 1.0);
    assert_eq!(keep_local(1, 10, 0.0), 1.0);
    // Less: the ratio of the shares stays.
    assert!((keep_local(2, 10, 0.4) - 0.5).abs() < 1e-12);
    // No local capacity: nothing stays.
    assert_eq!(keep_local(0, 10, 0.4), 0.0);
    assert_eq!(keep_local(0, 0, 0.4), 0.0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, rng_algorithm: prop::test_runner::RngAlgorithm::ChaCha, ..ProptestConfig::default() })]

    /// Over all callers, the rule sends each zone the traffic its capacity
    /// is worth: the local callers' kept traffic never exceeds the local
    /// zone's share of the whole.
    #[test]
    fn kept_traffic_never_exceeds_capacity(local in 0u64..1000, other in 0u64..1000, caller in 0.0f64..=1.0) {
        let total = local + other;
        let keep = keep_local(local, total, caller);
        prop_assert!((0.0..=1.0).contains(&keep));
        if total > 0 && local > 0 {
            let upstream = local as f64 / total as f64;
            if upstream >= caller {
                prop_assert_eq!(keep, 1.0);
            } else {
                // Local callers send `caller` of all traffic and keep
                // `keep` of it: exactly the local capacity.
                prop_assert!((caller * keep - upstream).abs() < 1e-9);
            }
        } else {
            prop_assert_eq!(keep, 0.0);
        }
    }
}

#[test]
fn strict_preference_without_caller_share() {
    let metas = metas(&[("a", 1), ("b", 1), ("a", 1), ("", 1)]);
    let picker = ZonePreference::new(RoundRobin::new(), "a").with_seed(1);
    let counts = tally(&picker, &metas, &[true; 4], 1000);
    assert_eq!(counts[1] + counts[3], 0, "{counts:?}");
    assert_eq!(counts[0], 500);
    assert_eq!(counts[2], 500);
}

#[test]
fn proportional_spill_when_local_is_small() {
    // Local zone: 1 of 4 units of capacity; half of the callers are local.
    // Keep 0.25 / 0.5 = half the traffic local.
    let metas = metas(&[("a", 1), ("b", 1), ("b", 1), ("c", 1)]);
    let picker = ZonePreference::new(RoundRobin::new(), "a")
        .caller_share(0.5)
        .with_seed(42);
    let counts = tally(&picker, &metas, &[true; 4], 20_000);
    let local = counts[0] as f64 / 20_000.0;
    assert!((local - 0.5).abs() < 0.02, "{counts:?}");
    // The spilled half spreads over the other zones.
    assert!(counts[1] > 3000 && counts[2] > 3000 && counts[3] > 3000);
}

#[test]
fn callers_by_zone() {
    let picker = ZonePreference::new(RoundRobin::new(), "a").callers([("a", 1), ("b", 3)]);
    assert_eq!(picker.caller_share, 0.25);
    let none = ZonePreference::new(RoundRobin::new(), "a").callers([]);
    assert_eq!(none.caller_share, 0.0);
    assert_eq!(
        ZonePreference::new((), "a")
            .caller_share(f64::NAN)
            .caller_share,
        0.0
    );
    assert_eq!(
        ZonePreference::new((), "a").caller_share(7.0).caller_share,
        1.0
    );
}

#[test]
fn spills_when_local_zone_lacks_healthy_capacity() {
    let metas = metas(&[("a", 1), ("a", 1), ("b", 1), ("b", 1)]);
    let picker = ZonePreference::new(RoundRobin::new(), "a")
        .caller_share(0.5)
        .with_seed(3);
    // Everything healthy: local share 0.5 ≥ 0.5, all local.
    let counts = tally(&picker, &metas, &[true; 4], 1000);
    assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
    // One local endpoint down: healthy local share 1/3 < 0.5, so two thirds
    // stay and a third spills.
    let counts = tally(&picker, &metas, &[true, false, true, true], 30_000);
    assert_eq!(counts[1], 0);
    let local = counts[0] as f64 / 30_000.0;
    assert!((local - 2.0 / 3.0).abs() < 0.02, "{counts:?}");
    // All local endpoints down: everything spills.
    let counts = tally(&picker, &metas, &[false, false, true, true], 1000);
    assert_eq!(counts[0] + counts[1], 0);
    assert_eq!(counts[2] + counts[3], 1000);
    // Drained local endpoints (weight 0) count for nothing either.
    let drained = self::metas(&[("a", 0), ("a", 0), ("b", 1), ("b", 1)]);
    let counts = tally(&picker, &drained, &[true; 4], 100);
    assert_eq!(counts[2] + counts[3], 100);
    // Nothing allowed anywhere: no pick.
    let counts = tally(&picker, &metas, &[false; 4], 10);
    assert_eq!(counts.iter().sum::<usize>(), 0);
}

#[test]
fn stays_local_when_other_zones_are_down() {
    let metas = metas(&[("a", 1), ("b", 3)]);
    let picker = ZonePreference::new(RoundRobin::new(), "a")
        .caller_share(1.0)
        .with_seed(5);
    let counts = tally(&picker, &metas, &[true, false], 1000);
    assert_eq!(counts, [1000, 0]);
}

#[test]
fn wraps_any_picker() {
    let metas = metas(&[("a", 2), ("b", 1), ("a", 1)]);
    let up = [true; 3];
    for counts in [
        tally(
            &ZonePreference::new(P2c::with_seed(1), "a").with_seed(1),
            &metas,
            &up,
            500,
        ),
        tally(
            &ZonePreference::new(LeastConnections::with_seed(1), "a").with_seed(1),
            &metas,
            &up,
            500,
        ),
    ] {
        assert_eq!(counts[1], 0, "{counts:?}");
        assert_eq!(counts[0] + counts[2], 500);
    }
}
