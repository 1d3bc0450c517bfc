use super::*;

#[test]
fn availability_rules_endpoints_out() {
    let metas = [
        EndpointInfo::new(1, 1),
        EndpointInfo::new(2, 1),
        EndpointInfo::new(3, 0),
    ];
    let services = [true, false, true];
    let plain = Candidates::new(&metas, &services);
    assert!(!plain.has_exclusions());
    assert!(plain.is_allowed(0) && plain.is_allowed(1));
    assert!(!plain.is_allowed(2), "weight 0 is never allowed");
    assert!(!plain.is_allowed(3), "out of range is never allowed");

    let gated = plain.with_availability(|up: &bool| *up);
    assert!(gated.has_exclusions());
    assert!(gated.is_allowed(0));
    assert!(!gated.is_allowed(1));
    // Exclusions name key hashes, not indices.
    assert!(!gated.excluding(&[1]).is_allowed(0));
    assert!(gated.excluding(&[0]).is_allowed(0));
}

#[test]
fn every_picker_skips_unavailable_endpoints() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Clone)]
    struct Up(bool, Arc<AtomicUsize>);
    impl tower::load::Load for Up {
        type Metric = u32;
        fn load(&self) -> u32 {
            self.1.load(Ordering::Relaxed) as u32
        }
    }
    let metas: Vec<EndpointInfo> = (0..5)
        .map(|i| EndpointInfo::new(i * 7919, 1 + i as u32))
        .collect();
    let services: Vec<Up> = (0..5)
        .map(|i| Up(i % 2 == 0, Arc::new(AtomicUsize::new(0))))
        .collect();
    let endpoints = Candidates::new(&metas, &services).with_availability(|s: &Up| s.0);

    fn check<P: Pick<u64, Up>>(picker: P, endpoints: &Candidates<'_, Up>, metas: &[EndpointInfo]) {
        let table = picker.prepare(metas);
        for key in 0..200u64 {
            let i = picker
                .pick(&table, endpoints, &key)
                .expect("an endpoint is up");
            assert!(i % 2 == 0, "picked unavailable endpoint {i}");
        }
    }
    check(RoundRobin::new(), &endpoints, &metas);
    check(WeightedRoundRobin::new(), &endpoints, &metas);
    check(LeastConnections::with_seed(1), &endpoints, &metas);
    check(P2c::with_seed(1), &endpoints, &metas);
    check(IpHash::with_key(|k: &u64| Some(*k)), &endpoints, &metas);
}
