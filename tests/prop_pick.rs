//! Property tests of every picker, driven directly through `Prepare` and
//! `Pick` over random endpoint sets: weights of 0, 1 and `u32::MAX`
//! among others, endpoints down (the availability check health checks
//! install), exclusions by key hash (what a retry passes), and random
//! request keys, missing ones included.

mod support;

use proptest::prelude::*;
use tower_lb::pick::{
    Candidates, ConsistentHash, EndpointInfo, IpHash, LeastConnections, Maglev, P2c, Pick, Prepare,
    RoundRobin, WeightedRoundRobin,
};

use support::prop::*;

/// The request key: `None` is a request without one.
type Key = Option<u64>;

fn key(req: &Key) -> Option<u64> {
    *req
}

type KeyFn = fn(&Key) -> Option<u64>;

/// The view the balancer would hand the picker.
fn view<'a>(
    metas: &'a [EndpointInfo],
    services: &'a [Svc],
    excluded: &'a [u64],
    gated: bool,
) -> Candidates<'a, Svc> {
    let endpoints = Candidates::new(metas, services).excluding(excluded);
    if gated {
        endpoints.with_availability(is_up)
    } else {
        endpoints
    }
}

/// Every pick is an endpoint that exists and is allowed (weight above 0,
/// up, not excluded), and `None` comes only when there is none. Each pick
/// adds one request in flight to the endpoint picked, and `done` of them
/// finish in between, so the load pickers see loads move.
fn picks_are_allowed<P: Pick<Key, Svc>>(
    picker: &P,
    set: &[Drawn],
    excluded: &[u64],
    gated: bool,
    keys: &[(Key, usize)],
) -> Result<(), TestCaseError> {
    let (metas, mut services) = split(set);
    let table = picker.prepare(&metas);
    for &(key, done) in keys {
        let picked = {
            let endpoints = view(&metas, &services, excluded, gated);
            let picked = picker.pick(&table, &endpoints, &key);
            match picked {
                Some(i) => prop_assert!(
                    endpoints.is_allowed(i),
                    "picked {i}, which is not allowed, for key {key:?}"
                ),
                None => prop_assert!(
                    !any_allowed(&endpoints),
                    "found no endpoint for key {key:?}, but one is allowed"
                ),
            }
            picked
        };
        if let Some(i) = picked {
            services[i].load += 1;
        }
        if !services.is_empty() {
            let j = done % services.len();
            services[j].load = services[j].load.saturating_sub(1);
        }
    }
    Ok(())
}

/// The same set with weights above 64 brought down to 64.
fn light(set: &[Drawn]) -> Vec<Drawn> {
    let mut light = set.to_vec();
    for d in &mut light {
        d.meta = EndpointInfo::new(d.meta.key_hash(), d.meta.weight().min(64));
    }
    light
}

fn rings_pick_only_allowed(
    set: &[Drawn],
    excluded: &[u64],
    gated: bool,
    keys: &[(Key, usize)],
    virtual_nodes: u32,
) -> Result<(), TestCaseError> {
    let ring = ConsistentHash::new(key as KeyFn).virtual_nodes(virtual_nodes);
    picks_are_allowed(&ring, set, excluded, gated, keys)
        .map_err(|e| TestCaseError::fail(format!("consistent hash: {e}")))?;
    let bounded = ConsistentHash::new(key as KeyFn)
        .virtual_nodes(virtual_nodes)
        .bounded_load(1.25)
        .expect("a valid bound");
    picks_are_allowed(&bounded, set, excluded, gated, keys)
        .map_err(|e| TestCaseError::fail(format!("bounded consistent hash: {e}")))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn every_picker_picks_only_allowed_endpoints(
        set in endpoint_set(12, weight()),
        mask in prop::collection::vec(prop::bool::weighted(0.25), 1..12),
        strangers in prop::collection::vec(any::<u64>(), 0..3),
        gated in any::<bool>(),
        keys in prop::collection::vec((any::<Option<u64>>(), any::<usize>()), 1..40),
        seed in any::<u64>(),
        virtual_nodes in 1..200u32,
    ) {
        let (metas, _) = split(&set);
        let excluded = exclusions(&metas, &mask, &strangers);
        let run = |name, result: Result<(), TestCaseError>| {
            result.map_err(|e| TestCaseError::fail(format!("{name}: {e}")))
        };
        let (set, x, keys) = (&set, &excluded, &keys);
        run("round robin", picks_are_allowed(&RoundRobin::new(), set, x, gated, keys))?;
        run("weighted round robin", picks_are_allowed(&WeightedRoundRobin::new(), set, x, gated, keys))?;
        run("least connections", picks_are_allowed(&LeastConnections::with_seed(seed), set, x, gated, keys))?;
        run("p2c", picks_are_allowed(&P2c::with_seed(seed), set, x, gated, keys))?;
        run("ip hash", picks_are_allowed(&IpHash::with_key(key as KeyFn), set, x, gated, keys))?;
        let maglev = Maglev::new(key as KeyFn).with_table_size(97).expect("a prime");
        run("maglev", picks_are_allowed(&maglev, set, x, gated, keys))?;
        // Rings of huge weights hold a million points, slow to build in a
        // debug build: they have a test of their own below.
        let light = light(set);
        rings_pick_only_allowed(&light, x, gated, keys, virtual_nodes)?;
    }
}

proptest! {
    // Each ring here is scaled down to the cap of about a million points.
    #![proptest_config(config(6))]

    #[test]
    fn rings_of_huge_weights_pick_only_allowed_endpoints(
        set in endpoint_set(6, prop_oneof![Just(u32::MAX), any::<u32>(), Just(0u32), Just(1u32)]),
        gated in any::<bool>(),
        keys in prop::collection::vec((any::<Option<u64>>(), any::<usize>()), 1..40),
    ) {
        rings_pick_only_allowed(&set, &[], gated, &keys, 160)?;
    }
}

// ===== weighted round robin =====

/// One full cycle of picks, starting wherever the cursor is.
fn cycle(wrr: &WeightedRoundRobin, metas: &[EndpointInfo], skip: usize) -> Vec<usize> {
    let table = wrr.prepare(metas);
    let services = vec![(); metas.len()];
    let endpoints = Candidates::new(metas, &services);
    let pick = || Pick::<(), ()>::pick(wrr, &table, &endpoints, &()).expect("a weight above 0");
    for _ in 0..skip {
        pick();
    }
    (0..table.len()).map(|_| pick()).collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The largest amount, in picks, by which any endpoint runs ahead of or
/// behind its exact share `t × w / total` after the first `t` picks of the
/// (repeating) cycle. O(cycle): an endpoint is furthest ahead just after
/// one of its picks and furthest behind just before one.
fn max_lag(cycle: &[usize], shares: &[(usize, u64)]) -> f64 {
    let total = cycle.len() as f64;
    let mut seen = vec![0u64; cycle.iter().max().map_or(0, |&m| m + 1)];
    let mut worst = 0f64;
    let share = |i: usize| shares.iter().find(|&&(j, _)| j == i).map_or(0, |&(_, w)| w) as f64;
    for (t, &i) in cycle.iter().enumerate() {
        let ideal_before = t as f64 * share(i) / total;
        worst = worst.max(ideal_before - seen[i] as f64);
        seen[i] += 1;
        let ideal_after = (t + 1) as f64 * share(i) / total;
        worst = worst.max(seen[i] as f64 - ideal_after);
    }
    worst
}

/// The most picks any endpoint gets in any window of the repeating cycle,
/// above `⌈its fair share of the window⌉`. O(Σ wᵢ²).
fn max_window_excess(cycle: &[usize], shares: &[(usize, u64)]) -> i64 {
    let total = cycle.len() as u64;
    let mut worst = i64::MIN;
    for &(i, w) in shares {
        let at: Vec<u64> = (0..2 * cycle.len())
            .filter(|&t| cycle[t % cycle.len()] == i)
            .map(|t| t as u64)
            .collect();
        let picks = w as usize;
        // Windows from the a-th pick to the b-th: the shortest holding
        // that many picks.
        for a in 0..picks {
            for b in a..a + picks {
                let count = (b - a + 1) as u64;
                let len = at[b] - at[a] + 1;
                let fair = (len * w).div_ceil(total);
                worst = worst.max(count as i64 - fair as i64);
            }
        }
    }
    worst
}

proptest! {
    #![proptest_config(config(192))]

    /// Over any full cycle each endpoint gets exactly its weight (reduced
    /// by the weights' greatest common divisor) and is never a whole pick
    /// ahead of or behind its share; in any window it gets at most one
    /// pick above its fair share rounded up.
    #[test]
    fn weighted_round_robin_is_exact_and_smooth(
        weights in prop::collection::vec(prop_oneof![3 => Just(0u32), 10 => 1..=24u32], 1..9),
        skip in 0..1000usize,
    ) {
        prop_assume!(weights.iter().any(|&w| w > 0));
        let metas: Vec<EndpointInfo> = weights.iter().enumerate().map(|(i, &w)| EndpointInfo::new(i as u64 * 31 + 7, w)).collect();
        let g = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w)));
        let shares: Vec<(usize, u64)> = weights.iter().enumerate()
            .filter(|(_, &w)| w > 0)
            .map(|(i, &w)| (i, u64::from(w) / g))
            .collect();
        // Any full cycle: the cursor may be anywhere when it starts.
        let picks = cycle(&WeightedRoundRobin::new(), &metas, skip);
        prop_assert_eq!(picks.len() as u64, shares.iter().map(|&(_, w)| w).sum::<u64>());
        for (i, &w) in weights.iter().enumerate() {
            let count = picks.iter().filter(|&&p| p == i).count() as u64;
            prop_assert_eq!(count, u64::from(w) / g, "endpoint {} of {:?}", i, weights);
        }
        // Lags are measured from the cycle's start; windows anywhere.
        let picks = cycle(&WeightedRoundRobin::new(), &metas, 0);
        let lag = max_lag(&picks, &shares);
        prop_assert!(lag < 1.0, "lag {} for {:?}: {:?}", lag, weights, picks);
        prop_assert!(max_window_excess(&picks, &shares) <= 1, "{:?}: {:?}", weights, picks);
    }

}

proptest! {
    // Each cycle here is scaled to the cap of 65 536 picks.
    #![proptest_config(config(48))]

    /// Weights too large for an exact cycle (`u32::MAX` beside small ones)
    /// are scaled to the cap: every endpoint still gets a pick each cycle,
    /// shares stay within about one entry in the cap, and the order is as
    /// smooth as for exact weights.
    #[test]
    fn huge_weights_scale_and_stay_smooth(
        weights in prop::collection::vec(prop_oneof![Just(u32::MAX), Just(1u32), any::<u32>()], 2..6),
    ) {
        prop_assume!(weights.iter().all(|&w| w > 0));
        let metas: Vec<EndpointInfo> = weights.iter().enumerate().map(|(i, &w)| EndpointInfo::new(i as u64, w)).collect();
        let picks = cycle(&WeightedRoundRobin::new(), &metas, 0);
        prop_assert!(picks.len() <= 65_536 + weights.len());
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let mut shares = Vec::new();
        for (i, &w) in weights.iter().enumerate() {
            let count = picks.iter().filter(|&&p| p == i).count();
            prop_assert!(count >= 1, "endpoint {} never picked: {:?}", i, weights);
            let error = count as f64 / picks.len() as f64 - f64::from(w) / total;
            // About one entry of the cap for each endpoint, at most.
            let bound = weights.len() as f64 / 65_536.0;
            prop_assert!(error.abs() <= bound, "{:?}: share off by {}", weights, error);
            shares.push((i, count as u64));
        }
        prop_assert!(max_lag(&picks, &shares) < 1.0);
    }
}

proptest! {
    // Sets of over a thousand endpoints switch the schedule to its
    // earliest-deadline build; each case builds a cycle of about 66 000.
    #![proptest_config(config(3))]

    #[test]
    fn large_sets_keep_exact_counts_and_smoothness(
        weights in prop::collection::vec(50..=70u32, 1100..1130),
    ) {
        let metas: Vec<EndpointInfo> = weights.iter().enumerate().map(|(i, &w)| EndpointInfo::new(i as u64, w)).collect();
        let g = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w)));
        let picks = cycle(&WeightedRoundRobin::new(), &metas, 0);
        let mut counts = vec![0u64; weights.len()];
        for &p in &picks {
            counts[p] += 1;
        }
        let shares: Vec<(usize, u64)> = weights.iter().map(|&w| u64::from(w) / g).enumerate().collect();
        for &(i, w) in &shares {
            prop_assert_eq!(counts[i], w);
        }
        prop_assert!(max_lag(&picks, &shares) < 1.0);
    }
}

/// "Never more than its fair share plus one within any window", taken
/// literally, does not hold for nginx's order: here one endpoint gets 1.59
/// picks above its exact share of a window. What holds (and is tested
/// above) is the prefix bound (never a whole pick ahead or behind), so at
/// most one pick above the fair share rounded up.
#[test]
fn windows_can_exceed_the_exact_share_by_more_than_one() {
    let weights = [13u32, 11, 15, 9, 14, 12];
    let metas: Vec<EndpointInfo> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| EndpointInfo::new(i as u64, w))
        .collect();
    let picks = cycle(&WeightedRoundRobin::new(), &metas, 0);
    let total = picks.len();
    let mut worst = 0f64;
    for (i, &w) in weights.iter().enumerate() {
        for start in 0..total {
            let mut count = 0;
            for len in 1..=total {
                count += usize::from(picks[(start + len - 1) % total] == i);
                worst = worst.max(count as f64 - len as f64 * f64::from(w) / total as f64);
            }
        }
    }
    assert!(worst > 1.5 && worst < 2.0, "worst window excess {worst}");
    let shares: Vec<(usize, u64)> = weights.iter().map(|&w| u64::from(w)).enumerate().collect();
    assert_eq!(max_window_excess(&picks, &shares), 1);
}
