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
