use std::sync::atomic::Ordering;

use super::*;
use crate::pick::testing::{idle, metas, Counted, Fixed};

#[test]
fn prefers_lower_load() {
    let least = LeastConnections::with_seed(1);
    let metas = metas(&[1, 1, 1]);
    let services = [Counted::new(5), Counted::new(2), Counted::new(9)];
    let table = least.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    for _ in 0..50 {
        assert_eq!(least.pick(&table, &endpoints, &()), Some(1));
    }
}

#[test]
fn divides_load_by_weight() {
    let least = LeastConnections::with_seed(2);
    let metas = metas(&[1, 4]);
    // 2 ÷ 1 against 6 ÷ 4: the heavier endpoint is less loaded.
    let services = [Counted::new(2), Counted::new(6)];
    let table = least.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    assert_eq!(least.pick(&table, &endpoints, &()), Some(1));
    services[1].0.store(9, Ordering::Relaxed);
    assert_eq!(least.pick(&table, &endpoints, &()), Some(0));
}

#[test]
fn spreads_ties() {
    let least = LeastConnections::with_seed(3);
    let metas = metas(&[1, 1, 1, 1]);
    let services = idle(4);
    let table = least.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    let mut c = [0; 4];
    for _ in 0..4000 {
        c[least.pick(&table, &endpoints, &()).unwrap()] += 1;
    }
    assert!(c.iter().all(|&k| (800..1200).contains(&k)), "{c:?}");
}

#[test]
fn balances_in_flight_requests() {
    // Requests that never finish: each pick raises that endpoint's load,
    // so in-flight counts end up proportional to weight.
    let least = LeastConnections::with_seed(4);
    let metas = metas(&[1, 2, 3]);
    let services = idle(3);
    let table = least.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    for _ in 0..600 {
        let i = least.pick(&table, &endpoints, &()).unwrap();
        services[i].0.fetch_add(1, Ordering::Relaxed);
    }
    let loads: Vec<u32> = services.iter().map(Counted::get).collect();
    assert_eq!(loads, [100, 200, 300]);
}

#[test]
fn zero_weight_and_exclusions() {
    let least = LeastConnections::with_seed(5);
    let metas = metas(&[0, 1, 1, 1]);
    let services = [
        Counted::new(0),
        Counted::new(0),
        Counted::new(1),
        Counted::new(7),
    ];
    let table = least.prepare(&metas);
    let plain = Candidates::new(&metas, &services);
    for _ in 0..20 {
        assert_eq!(least.pick(&table, &plain, &()), Some(1));
    }
    let excluded = [1];
    let endpoints = Candidates::new(&metas, &services).excluding(&excluded);
    assert_eq!(least.pick(&table, &endpoints, &()), Some(2));
    let all = [1, 2, 3];
    let none = Candidates::new(&metas, &services).excluding(&all);
    assert_eq!(least.pick(&table, &none, &()), None);
}

#[test]
fn none_without_endpoints() {
    let least = LeastConnections::with_seed(6);
    let metas = metas(&[0, 0]);
    let services = [Counted::new(0), Counted::new(0)];
    let table = least.prepare(&metas);
    assert_eq!(
        least.pick(&table, &Candidates::new(&metas, &services), &()),
        None
    );
    let table = least.prepare(&[]);
    let empty: [Counted; 0] = [];
    assert_eq!(least.pick(&table, &Candidates::new(&[], &empty), &()), None);
}

#[test]
fn odd_loads_and_weights_do_not_panic() {
    let least = LeastConnections::with_seed(7);
    let metas = metas(&[u32::MAX, 1, 1, 1]);
    let services = [
        Fixed(f64::NAN),
        Fixed(f64::INFINITY),
        Fixed(-1.0),
        Fixed(f64::MAX),
    ];
    let table = least.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    assert_eq!(least.pick(&table, &endpoints, &()), Some(2));
    let nan = [Fixed(f64::NAN)];
    let metas = metas[..1].to_vec();
    let endpoints = Candidates::new(&metas, &nan);
    assert_eq!(least.pick(&table, &endpoints, &()), Some(0));
}

#[test]
fn a_window_keeps_large_sets_nearly_even() {
    // Requests that never finish, on 256 endpoints of weight 1 and 2:
    // windowed picks keep every endpoint within a request or two of
    // least connections' exact share.
    let least = LeastConnections::with_seed(8);
    let weights: Vec<u32> = (0..256).map(|i| 1 + (i % 2)).collect();
    let metas = metas(&weights);
    let services = idle(256);
    let table = least.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    for _ in 0..256 * 30 {
        let i = least.pick(&table, &endpoints, &()).unwrap();
        services[i].0.fetch_add(1, Ordering::Relaxed);
    }
    for (i, s) in services.iter().enumerate() {
        let exact = 20 * weights[i];
        assert!(
            s.get().abs_diff(exact) <= 2 * weights[i],
            "{i}: {}",
            s.get()
        );
    }
}

#[test]
fn a_window_honours_exclusions_and_weights() {
    let least = LeastConnections::with_seed(9).window(4);
    let weights: Vec<u32> = (0..64).map(|i| u32::from(i % 8 != 0)).collect();
    let metas = metas(&weights);
    let services: Vec<Counted> = (0..64).map(|i| Counted::new(64 - i)).collect();
    let table = least.prepare(&metas);
    let excluded: Vec<u64> = metas[..60].iter().map(|m| m.key_hash()).collect();
    let endpoints = Candidates::new(&metas, &services).excluding(&excluded);
    for _ in 0..100 {
        let i = least.pick(&table, &endpoints, &()).unwrap();
        assert!(i >= 60 && weights[i] > 0, "{i}");
    }
    // Every endpoint excluded: none, after the fallback scan.
    let all: Vec<u64> = metas.iter().map(|m| m.key_hash()).collect();
    let none = Candidates::new(&metas, &services).excluding(&all);
    assert_eq!(least.pick(&table, &none, &()), None);
    // The remembered winner is not brought back once excluded.
    let plain = Candidates::new(&metas, &services);
    let first = least.pick(&table, &plain, &()).unwrap();
    let without = [metas[first].key_hash()];
    let retry = Candidates::new(&metas, &services).excluding(&without);
    for _ in 0..100 {
        assert_ne!(least.pick(&table, &retry, &()), Some(first));
    }
}

#[test]
fn a_pick_reads_a_window_of_loads() {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    struct Read(Arc<AtomicUsize>);
    impl Load for Read {
        type Metric = u32;
        fn load(&self) -> u32 {
            self.0.fetch_add(1, Ordering::Relaxed);
            1
        }
    }
    let reads = Arc::new(AtomicUsize::new(0));
    let services: Vec<Read> = (0..4096).map(|_| Read(Arc::clone(&reads))).collect();
    let metas = metas(&vec![1; 4096]);
    let least = LeastConnections::with_seed(10);
    let table = least.prepare(&metas);
    let endpoints = Candidates::new(&metas, &services);
    for _ in 0..100 {
        reads.store(0, Ordering::Relaxed);
        least.pick(&table, &endpoints, &()).unwrap();
        assert!(reads.load(Ordering::Relaxed) <= 17);
    }
}
