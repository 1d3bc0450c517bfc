use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::*;
use crate::pick::testing::{addr_metas as metas, idle, key_hashes, Counted, Fixed};
use crate::util::Rng;

fn plain() -> ConsistentHash<impl Fn(&u64) -> Option<u64>> {
    ConsistentHash::new(|key: &u64| Some(*key))
}

fn bounded(factor: f64) -> BoundedConsistentHash<impl Fn(&u64) -> Option<u64>> {
    plain().bounded_load(factor).unwrap()
}

/// 80 % of requests on one key, the rest spread over a thousand.
fn skewed(rng: &Rng) -> u64 {
    if rng.below(10) < 8 {
        7
    } else {
        1000 + rng.below(1000) as u64
    }
}

fn capacity(factor: f64, total: u32, weight: u32, total_weight: u32) -> u32 {
    (factor * f64::from(total) * f64::from(weight) / f64::from(total_weight)).ceil() as u32
}

#[test]
fn no_endpoint_exceeds_the_bound_while_load_builds_up() {
    let factor = 1.25;
    let picker = bounded(factor);
    let metas = metas(&[1; 10]);
    let services = idle(10);
    let ring = picker.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    let rng = Rng::from_seed(21);
    let hot = plain().pick(&ring, &endpoints, &7).unwrap();
    for total in 1..=2000u32 {
        let i = picker.pick(&ring, &endpoints, &skewed(&rng)).unwrap();
        services[i].0.fetch_add(1, Ordering::Relaxed);
        let cap = capacity(factor, total, 1, 10);
        for service in &services {
            assert!(service.get() <= cap, "{} > {cap} at {total}", service.get());
        }
    }
    // The bound was what held the hot key's endpoint back.
    assert_eq!(services[hot].get(), capacity(factor, 2000, 1, 10));
}

#[test]
fn each_placement_respects_the_bound_as_requests_come_and_go() {
    let factor = 1.1;
    let picker = bounded(factor);
    let weights = [1, 2, 1, 3, 1, 1, 2, 1];
    let total_weight: u32 = weights.iter().sum();
    let metas = metas(&weights);
    let services = idle(weights.len());
    let ring = picker.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    let rng = Rng::from_seed(5);
    let mut in_flight = VecDeque::new();
    for _ in 0..5000 {
        let i = picker.pick(&ring, &endpoints, &skewed(&rng)).unwrap();
        services[i].0.fetch_add(1, Ordering::Relaxed);
        in_flight.push_back(i);
        let total = in_flight.len() as u32;
        let cap = capacity(factor, total, weights[i], total_weight);
        assert!(services[i].get() <= cap, "{} > {cap}", services[i].get());
        // Requests finish in a random order, keeping about 200 in flight.
        while in_flight.len() > 150 + rng.below(100) {
            let done = in_flight
                .swap_remove_back(rng.below(in_flight.len()))
                .unwrap();
            services[done].0.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn keys_stay_on_their_endpoint_while_it_has_room() {
    let picker = bounded(1.5);
    let metas = metas(&[1; 5]);
    let services = idle(5);
    let ring = picker.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    for key in 0..500u64 {
        let i = picker.pick(&ring, &endpoints, &key).unwrap();
        assert_eq!(Some(i), plain().pick(&ring, &endpoints, &key));
    }
}

#[test]
fn invalid_factors_are_refused() {
    for factor in [
        1.0,
        0.5,
        0.0,
        -2.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ] {
        let err = ConsistentHash::new(|key: &u64| Some(*key))
            .bounded_load(factor)
            .unwrap_err();
        assert!(err.factor().is_nan() || err.factor() == factor);
        assert!(err.to_string().contains("above 1"), "{err}");
    }
    let ok = ConsistentHash::new(|key: &u64| Some(*key)).bounded_load(1.000_1);
    assert_eq!(ok.unwrap().factor(), 1.000_1);
}

#[test]
fn a_missing_key_goes_round_robin_within_the_bound() {
    let picker = ConsistentHash::new(|key: &Option<u64>| *key)
        .bounded_load(1.5)
        .unwrap();
    let metas = metas(&[1; 3]);
    let services = idle(3);
    let ring = picker.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    let picks: Vec<_> = (0..6)
        .map(|_| picker.pick(&ring, &endpoints, &None).unwrap())
        .collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    // Endpoint 1 is over its bound (⌈1.5 × 11 / 3⌉ = 6): its turn goes to
    // the least loaded.
    services[1].0.store(10, Ordering::Relaxed);
    services[2].0.store(0, Ordering::Relaxed);
    services[0].0.store(0, Ordering::Relaxed);
    let turns: Vec<_> = (0..3)
        .map(|_| picker.pick(&ring, &endpoints, &None).unwrap())
        .collect();
    assert_eq!(turns, [0, 0, 2]);
}

#[test]
fn exclusions_and_empty_sets() {
    let picker = bounded(1.25);
    let metas = metas(&[1, 0, 1]);
    let services = idle(3);
    let ring = picker.prepare(&metas);
    let excluded = key_hashes(&metas, &[0]);
    let retry = Candidates::new(&metas, &services).excluding(&excluded);
    for key in 0..100u64 {
        assert_eq!(picker.pick(&ring, &retry, &key), Some(2));
    }
    let all = key_hashes(&metas, &[0, 2]);
    let none = Candidates::new(&metas, &services).excluding(&all);
    assert_eq!(picker.pick(&ring, &none, &1), None);
    let empty = picker.prepare(&[]);
    assert_eq!(
        picker.pick(&empty, &Candidates::<Counted>::new(&[], &[]), &1),
        None
    );
}

#[test]
fn loads_that_are_not_numbers_count_as_busy() {
    let picker = bounded(1.25);
    let metas = metas(&[1; 3]);
    let ring = picker.prepare(&metas);
    let services = [Fixed(f64::NAN), Fixed(2.0), Fixed(f64::INFINITY)];
    let endpoints = Candidates::new(&metas, &services);
    for key in 0..100u64 {
        assert_eq!(picker.pick(&ring, &endpoints, &key), Some(1));
    }
    // With nothing finite anywhere, some allowed endpoint is still chosen.
    let services = [Fixed(f64::NAN), Fixed(f64::NAN), Fixed(f64::INFINITY)];
    let endpoints = Candidates::new(&metas, &services);
    assert!(picker.pick(&ring, &endpoints, &3).is_some());
    // A negative load counts as idle.
    let services = [Fixed(-5.0), Fixed(1.0), Fixed(1.0)];
    let endpoints = Candidates::new(&metas, &services);
    let mut c = [0; 3];
    for key in 0..300u64 {
        c[picker.pick(&ring, &endpoints, &key).unwrap()] += 1;
    }
    assert!(c.iter().all(|&k| k > 0), "{c:?}");
}

#[test]
fn a_large_set_keeps_near_the_bound_with_a_sampled_mean() {
    // 256 endpoints: the mean load comes from windows, so the bound is
    // approximate; the hot key's endpoint still stays close to it, and
    // the spill-over spreads.
    let factor = 1.25;
    let picker = bounded(factor);
    let metas = metas(&[1; 256]);
    let services = idle(256);
    let ring = picker.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    let rng = Rng::from_seed(22);
    for _ in 0..256 * 20 {
        let i = picker.pick(&ring, &endpoints, &skewed(&rng)).unwrap();
        services[i].0.fetch_add(1, Ordering::Relaxed);
    }
    let bound = capacity(factor, 256 * 20, 1, 256);
    let highest = services.iter().map(Counted::get).max().unwrap();
    assert!(highest <= bound + 3, "{highest} against a bound of {bound}");

    // Every endpoint but one excluded: that one, whatever the window read.
    let others = key_hashes(&metas, &(1..256).collect::<Vec<_>>());
    let retry = Candidates::new(&metas, &services).excluding(&others);
    for key in 0..50 {
        assert_eq!(picker.pick(&ring, &retry, &key), Some(0));
    }
    let all = key_hashes(&metas, &(0..256).collect::<Vec<_>>());
    let none = Candidates::new(&metas, &services).excluding(&all);
    assert_eq!(picker.pick(&ring, &none, &1), None);
}
