use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::*;
use crate::endpoint::Weighted;

/// The keys of the subset, as a set.
fn subset(mode: SubsetMode, k: usize, keys: &[u64]) -> BTreeSet<u64> {
    choose(mode, k, keys).into_iter().map(|i| keys[i]).collect()
}

/// How many entries differ between two subsets: one swapped endpoint is one
/// entry.
fn moved(before: &BTreeSet<u64>, after: &BTreeSet<u64>) -> usize {
    before
        .difference(after)
        .count()
        .max(after.difference(before).count())
}

fn server_keys(n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| hash_value(&format!("10.0.{}.{}:8080", i / 250, i % 250)))
        .collect()
}

/// A runner with a fixed seed, so that failures repeat.
fn runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        Config {
            cases,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    )
}

#[test]
fn subsets_have_k_distinct_entries() {
    let keys = server_keys(100);
    for mode in [
        SubsetMode::Rendezvous { salt: 1 },
        SubsetMode::Deterministic { client: 12 },
    ] {
        assert_eq!(subset(mode, 10, &keys).len(), 10);
        assert_eq!(subset(mode, 100, &keys).len(), 100);
        assert_eq!(subset(mode, 500, &keys).len(), 100);
        assert!(subset(mode, 10, &[]).is_empty());
    }
}

/// One endpoint added or removed moves at most one entry of a rendezvous
/// subset, whatever the set, the salt and `k`.
#[test]
fn rendezvous_one_change_moves_one_entry() {
    runner(512)
        .run(
            &(
                prop::collection::hash_set(any::<u64>(), 1..300),
                1usize..40,
                any::<u64>(),
                any::<u64>(),
                any::<prop::sample::Index>(),
            ),
            |(keys, k, salt, added, removed)| {
                let keys: Vec<u64> = keys.into_iter().collect();
                let mode = SubsetMode::Rendezvous { salt };
                let before = subset(mode, k, &keys);
                if !keys.contains(&added) {
                    let mut more = keys.clone();
                    more.push(added);
                    prop_assert!(moved(&before, &subset(mode, k, &more)) <= 1);
                }
                let mut fewer = keys.clone();
                fewer.swap_remove(removed.index(keys.len()));
                prop_assert!(moved(&before, &subset(mode, k, &fewer)) <= 1);
                Ok(())
            },
        )
        .unwrap();
}

/// The deterministic variant moves at most one entry while `n / k` stays
/// the same; at a multiple of `k` the rounds change.
#[test]
fn deterministic_one_change_moves_one_entry_within_a_round_size() {
    runner(512)
        .run(
            &(
                prop::collection::hash_set(any::<u64>(), 2..300),
                1usize..40,
                0u64..1000,
                any::<u64>(),
                any::<prop::sample::Index>(),
            ),
            |(keys, k, client, added, removed)| {
                let keys: Vec<u64> = keys.into_iter().collect();
                let n = keys.len();
                let mode = SubsetMode::Deterministic { client };
                let before = subset(mode, k, &keys);
                if !keys.contains(&added) && (n + 1) / k == n / k {
                    let mut more = keys.clone();
                    more.push(added);
                    prop_assert!(moved(&before, &subset(mode, k, &more)) <= 1);
                }
                if (n - 1) / k == n / k {
                    let mut fewer = keys.clone();
                    fewer.swap_remove(removed.index(n));
                    prop_assert!(moved(&before, &subset(mode, k, &fewer)) <= 1);
                }
                Ok(())
            },
        )
        .unwrap();
}

/// Clients per server over `clients` clients, as (max ÷ mean, min ÷ mean).
fn spread(clients: u64, servers: usize, k: usize, mode: impl Fn(u64) -> SubsetMode) -> (f64, f64) {
    let keys = server_keys(servers);
    let mut load = vec![0u32; servers];
    for client in 0..clients {
        for i in choose(mode(client), k, &keys) {
            load[i] += 1;
        }
    }
    let mean = (clients as f64 * k as f64) / servers as f64;
    let max = *load.iter().max().unwrap() as f64;
    let min = *load.iter().min().unwrap() as f64;
    (max / mean, min / mean)
}

/// 300 clients × 300 servers, k = 30: the busiest server's clients over the
/// mean. The deterministic variant holds the 1.3× bound; rendezvous
/// subsetting with random salts does not (it is binomial).
#[test]
fn balance_at_300_by_300() {
    let salts = crate::util::Rng::from_seed(2024);
    let salts: Vec<u64> = (0..300).map(|_| salts.next_u64()).collect();
    let (r_max, r_min) = spread(300, 300, 30, |c| SubsetMode::Rendezvous {
        salt: salts[c as usize],
    });
    let (d_max, d_min) = spread(300, 300, 30, |client| SubsetMode::Deterministic { client });
    println!(
        "300 x 300, k = 30: rendezvous max {r_max:.2}x min {r_min:.2}x of the mean; \
         deterministic max {d_max:.2}x min {d_min:.2}x"
    );
    assert!(d_max <= 1.3, "deterministic: {d_max}");
    assert!(d_min >= 0.7, "deterministic: {d_min}");
    // Rendezvous is random: far from 1.3, but no server is left out or
    // loaded twice over.
    assert!(r_max < 2.0 && r_min > 0.2, "rendezvous: {r_max} {r_min}");

    // Off the even numbers (n not a multiple of k, clients not a multiple
    // of n / k) the deterministic variant still holds the bound.
    let (d_max, _) = spread(310, 317, 30, |client| SubsetMode::Deterministic { client });
    println!("310 x 317, k = 30: deterministic max {d_max:.2}x");
    assert!(d_max <= 1.3, "deterministic 310 x 317: {d_max}");
}

// ===== the adapter =====

fn drain<D>(discover: &mut D) -> Vec<String>
where
    D: Discover<Key = u32, Service = Weighted<()>> + Unpin,
    D::Error: fmt::Debug,
{
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut out = Vec::new();
    while let Poll::Ready(Some(change)) = Pin::new(&mut *discover).poll_discover(&mut cx) {
        out.push(match change.unwrap() {
            Change::Insert(key, svc) => format!("+{key}@{}", svc.weight()),
            Change::Remove(key) => format!("-{key}"),
        });
    }
    out
}

#[test]
fn adapter_passes_on_subset_changes_only() {
    let (tx, rx) = crate::discover::channel::<u32, ()>();
    let mut subset = Subset::new(rx, 3, SubsetMode::Rendezvous { salt: 9 });
    for key in 0..10 {
        tx.insert(key, ()).unwrap();
    }
    let first = drain(&mut subset);
    assert_eq!(first.len(), 3, "{first:?}");
    let chosen: Vec<u32> = subset.chosen.iter().copied().collect();

    // An endpoint outside the subset comes and goes: nothing to pass on,
    // unless it outranks a chosen one (then one swap).
    let outside = (0..10).find(|key| !chosen.contains(key)).unwrap();
    tx.remove(outside).unwrap();
    assert!(drain(&mut subset).is_empty());

    // A chosen endpoint leaves: one insert, then its remove.
    let gone = chosen[0];
    tx.remove(gone).unwrap();
    let swap = drain(&mut subset);
    assert_eq!(swap.len(), 2, "{swap:?}");
    assert!(swap[0].starts_with('+') && swap[1] == format!("-{gone}"));

    // A chosen endpoint drains (weight 0): it leaves the subset.
    let draining = chosen[1];
    tx.insert_weighted(draining, (), 0).unwrap();
    let swap = drain(&mut subset);
    assert!(swap.contains(&format!("-{draining}")), "{swap:?}");
    assert_eq!(subset.chosen.len(), 3);

    // A chosen endpoint replaced with a new weight passes through.
    let kept = chosen[2];
    tx.insert_weighted(kept, (), 5).unwrap();
    assert_eq!(drain(&mut subset), [format!("+{kept}@5")]);
}
