use std::sync::atomic::Ordering;

use super::*;
use crate::pick::testing::{idle, metas, Counted};

#[test]
fn chooses_the_less_loaded_of_two() {
    let p2c = P2c::with_seed(1);
    let metas = metas(&[1, 1]);
    let services = [Counted::new(4), Counted::new(3)];
    let table = p2c.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    for _ in 0..100 {
        assert_eq!(p2c.pick(&table, &endpoints, &()), Some(1));
    }
}

#[test]
fn never_picks_the_most_loaded_of_many() {
    let p2c = P2c::with_seed(2);
    let metas = metas(&[1; 8]);
    let services: Vec<Counted> = (0..8).map(Counted::new).collect();
    let table = p2c.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    let mut c = [0; 8];
    for _ in 0..8000 {
        c[p2c.pick(&table, &endpoints, &()).unwrap()] += 1;
    }
    assert_eq!(c[7], 0);
    // Once sampled, endpoint 0 is remembered and wins every pick after.
    assert!(c[0] > 7900, "{c:?}");
}

#[test]
fn the_remembered_winner_competes_with_the_samples() {
    // Requests that never finish: the memory carries the least loaded
    // endpoint forward, so loads stay as even as least connections
    // keeps them, where plain sampling lets them drift apart.
    let p2c = P2c::with_seed(9);
    let metas = metas(&[1; 16]);
    let services = idle(16);
    let table = p2c.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    for _ in 0..1600 {
        let i = p2c.pick(&table, &endpoints, &()).unwrap();
        services[i].0.fetch_add(1, Ordering::Relaxed);
    }
    let loads: Vec<u32> = services.iter().map(Counted::get).collect();
    let (low, high) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
    assert!(high - low <= 2, "{loads:?}");
}

#[test]
fn a_remembered_winner_that_may_not_be_used_is_passed_over() {
    let p2c = P2c::with_seed(10);
    let metas = metas(&[1, 1, 1, 1]);
    let services = [
        Counted::new(0),
        Counted::new(5),
        Counted::new(5),
        Counted::new(5),
    ];
    let table = p2c.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    while p2c.pick(&table, &endpoints, &()) != Some(0) {}
    // Endpoint 0 is remembered; excluded, unavailable or drained, it
    // must not come back through the memory.
    let excluded = [metas[0].key_hash()];
    let retry = Candidates::new(&metas, &services).excluding(&excluded);
    let gated = Candidates::new(&metas, &services).with_availability(|s: &Counted| s.get() > 0);
    let drained = super::super::testing::metas(&[0, 1, 1, 1]);
    let drained_table = p2c.prepare(&drained);
    let drained = Candidates::new(&drained, &services);
    for _ in 0..200 {
        assert_ne!(p2c.pick(&table, &retry, &()), Some(0));
        assert_ne!(p2c.pick(&table, &gated, &()), Some(0));
        assert_ne!(p2c.pick(&drained_table, &drained, &()), Some(0));
    }
    // A memory from a larger set names no endpoint of a smaller one.
    let small = super::super::testing::metas(&[1]);
    let small_table = p2c.prepare(&small);
    let one = [Counted::new(9)];
    p2c.memory[0].store(3, Ordering::Relaxed);
    assert_eq!(
        p2c.pick(&small_table, &Candidates::new(&small, &one), &()),
        Some(0)
    );
}

#[test]
fn samples_in_proportion_to_weight() {
    let p2c = P2c::with_seed(3);
    let weights = [1, 2, 3, 4];
    let metas = metas(&weights);
    let table = p2c.prepare(&metas);
    let mut c = [0usize; 4];
    let mut rng = p2c.rng.local();
    for _ in 0..100_000 {
        c[table.eligible[table.sample(&mut rng)]] += 1;
    }
    for (i, &w) in weights.iter().enumerate() {
        let expected = 10_000.0 * f64::from(w);
        assert!((c[i] as f64 - expected).abs() < 0.05 * expected, "{c:?}");
    }
}

#[test]
fn equal_loads_follow_weights() {
    // With equal loads the first sample wins, so picks follow weight.
    let p2c = P2c::with_seed(4);
    let metas = metas(&[1, 3]);
    let services = idle(2);
    let table = p2c.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    let mut c = [0usize; 2];
    for _ in 0..40_000 {
        c[p2c.pick(&table, &endpoints, &()).unwrap()] += 1;
    }
    assert!((9_000..11_000).contains(&c[0]), "{c:?}");
}

#[test]
fn alias_table_is_exact() {
    // Column probabilities add back up to each weight's share.
    let weights = [1u64, 7, 0xffff_ffff, 3, 3];
    let columns = alias_table(&weights);
    let n = weights.len() as f64;
    let total: f64 = weights.iter().map(|&w| w as f64).sum();
    let mut mass = vec![0f64; weights.len()];
    for (i, c) in columns.iter().enumerate() {
        let keep = c.keep as f64 / 2f64.powi(64);
        mass[i] += keep / n;
        mass[c.alias] += (1.0 - keep) / n;
    }
    for (i, &w) in weights.iter().enumerate() {
        assert!((mass[i] - w as f64 / total).abs() < 1e-12, "{mass:?}");
    }
}

#[test]
fn dominant_weight_is_still_compared() {
    let p2c = P2c::with_seed(5);
    let metas = metas(&[u32::MAX, 1]);
    let services = [Counted::new(10), Counted::new(0)];
    let table = p2c.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    assert_eq!(p2c.pick(&table, &endpoints, &()), Some(1));
    services[1].0.store(10, Ordering::Relaxed);
    assert_eq!(p2c.pick(&table, &endpoints, &()), Some(0));
}

#[test]
fn one_or_no_endpoints() {
    let p2c = P2c::with_seed(6);
    let metas1 = metas(&[0, 5, 0]);
    let services = idle(3);
    let table = p2c.prepare(&metas1);
    let endpoints = Candidates::new(&metas1, &services);
    assert_eq!(p2c.pick(&table, &endpoints, &()), Some(1));
    let excluded = [1];
    let endpoints = Candidates::new(&metas1, &services).excluding(&excluded);
    assert_eq!(p2c.pick(&table, &endpoints, &()), None);
    let metas0 = metas(&[0, 0, 0]);
    let table = p2c.prepare(&metas0);
    assert_eq!(
        p2c.pick(&table, &Candidates::new(&metas0, &services), &()),
        None
    );
}

#[test]
fn exclusions_are_honoured() {
    let p2c = P2c::with_seed(7);
    let metas = metas(&[1, 100, 1, 1, 1000]);
    let services = [
        Counted::new(5),
        Counted::new(0),
        Counted::new(1),
        Counted::new(2),
        Counted::new(0),
    ];
    let table = p2c.prepare(&metas);
    let excluded = [1, 4];
    let endpoints = Candidates::new(&metas, &services).excluding(&excluded);
    let mut c = [0; 5];
    for _ in 0..3000 {
        c[p2c.pick(&table, &endpoints, &()).unwrap()] += 1;
    }
    assert_eq!((c[1], c[4]), (0, 0));
    // The least loaded allowed endpoint, once sampled, is remembered.
    assert!(c[2] > 2900, "{c:?}");
    let only = [0, 1, 2, 4];
    let endpoints = Candidates::new(&metas, &services).excluding(&only);
    for _ in 0..100 {
        assert_eq!(p2c.pick(&table, &endpoints, &()), Some(3));
    }
}

#[test]
fn thousands_of_endpoints() {
    let p2c = P2c::with_seed(8);
    let weights: Vec<u32> = (0..5000u32).map(|i| i % 7).collect();
    let metas = metas(&weights);
    let services = idle(5000);
    let table = p2c.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    for _ in 0..1000 {
        let i = p2c.pick(&table, &endpoints, &()).unwrap();
        assert!(weights[i] > 0);
    }
}
