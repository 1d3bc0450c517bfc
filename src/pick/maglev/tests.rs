use super::*;
use crate::pick::testing::{
    addr_metas as metas, assert_heavy_exclusion_falls_back, assert_order_free,
    assert_stale_table_is_safe, key_hashes, owners, picks_per_endpoint, random_keys, ById, BY_ID,
};

fn by_id() -> Maglev<ById> {
    Maglev::new(BY_ID)
}

fn keys(count: usize) -> Vec<u64> {
    random_keys(17, count)
}

fn slot_counts(table: &MaglevTable, n: usize) -> Vec<usize> {
    let mut c = vec![0; n];
    for slot in 0..table.len() {
        c[table.entry(slot)] += 1;
    }
    c
}

#[test]
fn table_shares_are_within_one_percent_of_weight_shares() {
    let one_to_ten: Vec<u32> = (1..=10).collect();
    let mixes: [&[u32]; 5] = [
        &[1; 10],
        &one_to_ten,
        &[50, 1, 1, 1, 1, 1],
        &[7, 0, 3, 0, 1],
        &[1; 600],
    ];
    for weights in mixes {
        let metas = metas(weights);
        let table = by_id().prepare(&metas);
        assert_eq!(table.len(), 65_537);
        let total: u32 = weights.iter().sum();
        for (i, count) in slot_counts(&table, weights.len()).into_iter().enumerate() {
            let want = f64::from(weights[i]) / f64::from(total);
            let got = count as f64 / table.len() as f64;
            if want == 0.0 {
                assert_eq!(count, 0);
            } else {
                let error = (got - want).abs() / want;
                assert!(error <= 0.01, "{weights:?}: endpoint {i} off by {error}");
            }
        }
    }
}

#[test]
fn removing_one_of_ten_moves_few_keys_and_adding_it_back_restores_them() {
    let picker = by_id();
    let all = metas(&[1; 10]);
    let keys = keys(10_000);
    let before = owners(&picker, &all, &keys);
    let gone = all[6].key_hash();
    let mut without = all.clone();
    without.remove(6);
    let after = owners(&picker, &without, &keys);
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(*a, gone);
        if b != a {
            moved += 1;
        }
    }
    let own = before.iter().filter(|&&k| k == gone).count();
    assert!(moved >= own && moved <= 2000, "{moved} moved, {own} had to");
    assert_eq!(owners(&picker, &all, &keys), before);
}

#[test]
fn the_table_ignores_the_order_endpoints_were_learnt_in() {
    assert_order_free(&by_id(), &[1, 2, 3, 1, 1], &keys(2000));
}

#[test]
fn the_table_grows_to_a_hundred_slots_an_endpoint() {
    let picker = by_id().with_table_size(97).unwrap();
    assert_eq!(picker.table_size(), 97);
    assert_eq!(picker.prepare(&metas(&[1])).len(), 101);
    let metas = metas(&[1; 10]);
    let table = picker.prepare(&metas);
    assert_eq!(table.len(), 1009);
    assert!(slot_counts(&table, 10)
        .iter()
        .all(|&c| c == 100 || c == 101));
}

#[test]
fn invalid_table_sizes_are_refused() {
    for bad in [0, 1, 2, 4, 65_536, 65_535, 1 << 24, 16_777_259, usize::MAX] {
        let err = by_id().with_table_size(bad).unwrap_err();
        assert_eq!(err.size(), bad);
    }
}

#[test]
fn huge_weights_keep_every_endpoint_in_the_table() {
    let metas = metas(&[u32::MAX, 1, u32::MAX, 0]);
    let table = by_id().prepare(&metas);
    let c = slot_counts(&table, 4);
    assert_eq!(c[1], 1);
    assert_eq!(c[3], 0);
    assert!(c[0].abs_diff(c[2]) <= 1, "{c:?}");
}

#[test]
fn weak_keys_spread() {
    let c = picks_per_endpoint(&by_id(), &metas(&[1; 4]), 0..4000);
    assert!(c.iter().all(|&k| (850..=1150).contains(&k)), "{c:?}");
}

#[test]
fn a_retry_walks_to_the_next_allowed_slot() {
    let picker = by_id();
    let metas = metas(&[1, 2, 1, 0, 3]);
    let table = picker.prepare(&metas);
    let services = [(); 5];
    let plain = Candidates::new(&metas, &services);
    for key in keys(500) {
        let slot = reduce(mix64(key), table.len());
        let first = picker.pick(&table, &plain, &key).unwrap();
        assert_eq!(first, table.entry(slot));
        let tried = key_hashes(&metas, &[first]);
        let retry = Candidates::new(&metas, &services).excluding(&tried);
        let second = picker.pick(&table, &retry, &key).unwrap();
        assert_ne!(second, first);
        assert_ne!(second, 3);
        let expected = (slot..)
            .map(|s| table.entry(s % table.len()))
            .find(|&i| i != first)
            .unwrap();
        assert_eq!(second, expected);
        assert_eq!(picker.pick(&table, &retry, &key), Some(second));
    }
    let all = key_hashes(&metas, &[0, 1, 2, 4]);
    let none = Candidates::new(&metas, &services).excluding(&all);
    assert_eq!(picker.pick(&table, &none, &1), None);
}

#[test]
fn long_excluded_runs_fall_back_to_a_scan() {
    assert_heavy_exclusion_falls_back(&by_id(), &keys(200));
}

#[test]
fn a_missing_key_goes_round_robin() {
    let picker = Maglev::new(|key: &Option<u64>| *key);
    let metas = metas(&[3, 0, 1, 1]);
    let table = picker.prepare(&metas);
    let endpoints = Candidates::new(&metas, &[(); 4]);
    let picks: Vec<_> = (0..6)
        .map(|_| picker.pick(&table, &endpoints, &None).unwrap())
        .collect();
    assert_eq!(picks, [0, 2, 3, 0, 2, 3]);
}

#[test]
fn no_endpoints_give_none() {
    let picker = by_id();
    let table = picker.prepare(&[]);
    assert!(table.is_empty());
    assert_eq!(
        picker.pick(&table, &Candidates::<()>::new(&[], &[]), &1),
        None
    );
    let metas = metas(&[0, 0]);
    let table = picker.prepare(&metas);
    let endpoints = Candidates::new(&metas, &[(); 2]);
    assert_eq!(picker.pick(&table, &endpoints, &1), None);
}

#[test]
fn stale_tables_never_return_a_missing_endpoint() {
    assert_stale_table_is_safe(&by_id(), &keys(100));
}
