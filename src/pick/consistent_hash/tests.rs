use super::ring::MAX_POINTS;
use super::*;
use crate::pick::key::hash_value;
use crate::pick::testing::{
    addr_metas as metas, assert_heavy_exclusion_falls_back, assert_order_free,
    assert_stale_table_is_safe, key_hashes, owners, picks_per_endpoint, random_keys, ById, BY_ID,
};

fn by_id() -> ConsistentHash<ById> {
    ConsistentHash::new(BY_ID)
}

fn keys(count: usize) -> Vec<u64> {
    random_keys(99, count)
}

#[test]
fn removing_an_endpoint_moves_only_its_keys_and_adding_it_back_restores_them() {
    let picker = by_id();
    let all = metas(&[1; 10]);
    let keys = keys(10_000);
    let before = owners(&picker, &all, &keys);
    let gone = all[3].key_hash();
    let mut without = all.clone();
    without.remove(3);
    let after = owners(&picker, &without, &keys);

    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if b == a {
            continue;
        }
        assert_eq!(*b, gone, "a key moved that was not on the removed endpoint");
        moved += 1;
    }
    assert!(moved > 0 && moved <= 1200, "{moved} keys moved");
    assert_eq!(owners(&picker, &all, &keys), before);
}

#[test]
fn inserting_an_endpoint_moves_keys_only_to_it() {
    let picker = by_id();
    let old = metas(&[1; 10]);
    let keys = keys(10_000);
    let before = owners(&picker, &old, &keys);
    let mut new = old.clone();
    let newcomer = EndpointInfo::new(hash_value("10.0.1.1:8080"), 1);
    // In the middle, so that the indices after it shift.
    new.insert(4, newcomer);
    let after = owners(&picker, &new, &keys);
    let mut gained = 0;
    for (b, a) in before.iter().zip(&after) {
        if b != a {
            assert_eq!(*a, newcomer.key_hash());
            gained += 1;
        }
    }
    assert!((500..=1400).contains(&gained), "{gained} keys moved");
}

#[test]
fn the_ring_ignores_the_order_endpoints_were_learnt_in() {
    assert_order_free(&by_id(), &[1, 2, 3, 1, 1], &keys(2000));
}

#[test]
fn shares_follow_weights() {
    let picker = by_id();
    let metas = metas(&[1, 3]);
    let light = metas[0].key_hash();
    let owners = owners(&picker, &metas, &keys(10_000));
    let on_light = owners.iter().filter(|&&k| k == light).count() as f64;
    let ratio = (10_000.0 - on_light) / on_light;
    assert!((2.5..=3.5).contains(&ratio), "ratio {ratio}");
}

#[test]
fn weak_keys_spread() {
    let c = picks_per_endpoint(&by_id(), &metas(&[1; 4]), 0..4000);
    assert!(c.iter().all(|&k| (700..=1300).contains(&k)), "{c:?}");
}

#[test]
fn zero_weight_is_never_picked() {
    let picker = by_id();
    let metas = metas(&[1, 0, 2, 0]);
    let ring = picker.prepare(&metas);
    assert_eq!(ring.len(), 3 * 160);
    let services = [(); 4];
    let excluded = key_hashes(&metas, &[0]);
    for endpoints in [
        Candidates::new(&metas, &services),
        Candidates::new(&metas, &services).excluding(&excluded),
    ] {
        for key in keys(1000) {
            let i = picker.pick(&ring, &endpoints, &key).unwrap();
            assert!(i == 0 || i == 2);
            assert!(endpoints.is_allowed(i));
        }
    }
}

#[test]
fn a_retry_walks_to_the_next_distinct_endpoint_on_the_ring() {
    let picker = by_id();
    let metas = metas(&[1; 6]);
    let ring = picker.prepare(&metas);
    let services = [(); 6];
    let plain = Candidates::new(&metas, &services);
    for key in keys(500) {
        let first = picker.pick(&ring, &plain, &key).unwrap();
        // The owners clockwise from the key, in order, without repeats.
        let mut order = Vec::new();
        let mut at = ring.successor(mix64(key));
        while order.len() < 3 {
            let i = ring.owner(at);
            if !order.contains(&i) {
                order.push(i);
            }
            at = ring.next(at);
        }
        assert_eq!(first, order[0]);
        let tried = key_hashes(&metas, &[first]);
        let retry = Candidates::new(&metas, &services).excluding(&tried);
        let second = picker.pick(&ring, &retry, &key).unwrap();
        assert_eq!(second, order[1]);
        assert_eq!(picker.pick(&ring, &retry, &key), Some(second));
        let tried = key_hashes(&metas, &[first, second]);
        let again = Candidates::new(&metas, &services).excluding(&tried);
        assert_eq!(picker.pick(&ring, &again, &key), Some(order[2]));
    }
    let all = key_hashes(&metas, &[0, 1, 2, 3, 4, 5]);
    let none = Candidates::new(&metas, &services).excluding(&all);
    assert_eq!(picker.pick(&ring, &none, &7), None);
}

#[test]
fn long_excluded_runs_fall_back_to_a_scan() {
    let picker = by_id();
    // The heavy endpoint owns all but one point of a capped ring.
    let ring = picker.prepare(&metas(&[u32::MAX, 1]));
    assert!(ring.len() as u64 <= MAX_POINTS + 2);
    assert_heavy_exclusion_falls_back(&picker, &keys(200));
}

#[test]
fn a_missing_key_goes_round_robin() {
    let picker = ConsistentHash::new(|key: &Option<u64>| *key);
    let metas = metas(&[1, 0, 5, 1]);
    let ring = picker.prepare(&metas);
    let services = [(); 4];
    let endpoints = Candidates::new(&metas, &services);
    let picks: Vec<_> = (0..6)
        .map(|_| picker.pick(&ring, &endpoints, &None).unwrap())
        .collect();
    assert_eq!(picks, [0, 2, 3, 0, 2, 3]);
    let excluded = key_hashes(&metas, &[2]);
    let retry = Candidates::new(&metas, &services).excluding(&excluded);
    for _ in 0..6 {
        let i = picker.pick(&ring, &retry, &None).unwrap();
        assert!(i == 0 || i == 3);
    }
}

#[test]
fn no_endpoints_give_none() {
    let picker = by_id();
    let ring = picker.prepare(&[]);
    assert_eq!(
        picker.pick(&ring, &Candidates::<()>::new(&[], &[]), &1),
        None
    );
    let metas = metas(&[0, 0]);
    let ring = picker.prepare(&metas);
    let endpoints = Candidates::new(&metas, &[(); 2]);
    assert_eq!(picker.pick(&ring, &endpoints, &1), None);
    let keyless = ConsistentHash::new(|_: &u64| None);
    assert_eq!(keyless.pick(&ring, &endpoints, &1), None);
}

#[test]
fn huge_weights_do_not_blow_up_the_ring() {
    let picker = by_id().virtual_nodes(u32::MAX);
    let metas = metas(&[u32::MAX; 8]);
    let ring = picker.prepare(&metas);
    assert!(ring.len() as u64 <= MAX_POINTS + 8, "{} points", ring.len());
    let endpoints = Candidates::new(&metas, &[(); 8]);
    let mut c = [0; 8];
    for key in keys(8000) {
        c[picker.pick(&ring, &endpoints, &key).unwrap()] += 1;
    }
    assert!(c.iter().all(|&k| (800..=1200).contains(&k)), "{c:?}");
}

#[test]
fn virtual_nodes_set_the_ring_size() {
    let metas = metas(&[1, 2, 0]);
    assert_eq!(by_id().virtual_nodes(10).prepare(&metas).len(), 30);
    // 0 is taken as 1 rather than leaving every endpoint out.
    let one = by_id().virtual_nodes(0);
    assert_eq!(one.points_per_weight(), 1);
    assert_eq!(one.prepare(&metas).len(), 3);
}

#[test]
fn stale_tables_never_return_a_missing_endpoint() {
    assert_stale_table_is_safe(&by_id(), &keys(100));
}
