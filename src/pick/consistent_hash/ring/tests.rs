use super::*;
use crate::pick::testing::keyed_metas;
use crate::util::Rng;

fn metas(weights: &[u32]) -> Vec<EndpointInfo> {
    keyed_metas(weights, |i| 1000 + i as u64)
}

#[test]
fn successor_matches_a_binary_search() {
    let rng = Rng::from_seed(4);
    for weights in [&[1][..], &[1, 2], &[3, 0, 5, 1], &[1; 40]] {
        for per_weight in [1, 7, 160] {
            let ring = HashRing::build(&metas(weights), per_weight);
            let expected_len: u32 = weights.iter().sum::<u32>() * per_weight;
            assert_eq!(ring.len(), expected_len as usize);
            let hashes: Vec<u64> = points(&metas(weights), per_weight)
                .iter()
                .map(|&(h, _, _)| h)
                .collect();
            let mut probes: Vec<u64> = (0..2000).map(|_| rng.next_u64()).collect();
            probes.extend([0, u64::MAX, hashes[0], hashes[ring.len() - 1]]);
            for h in probes {
                let naive = hashes.partition_point(|&x| x < h) % ring.len();
                assert_eq!(ring.successor(h), naive);
            }
        }
    }
}

#[test]
fn points_depend_on_keys_not_indices() {
    let a = [EndpointInfo::new(7, 1), EndpointInfo::new(9, 2)];
    let b = [EndpointInfo::new(9, 2), EndpointInfo::new(7, 1)];
    let (ra, rb) = (HashRing::build(&a, 50), HashRing::build(&b, 50));
    assert_eq!(ra.fractions, rb.fractions);
    let swapped: Vec<usize> = (0..rb.len()).map(|p| 1 - rb.owner(p)).collect();
    let owners: Vec<usize> = (0..ra.len()).map(|p| ra.owner(p)).collect();
    assert_eq!(owners, swapped);
}

#[test]
fn huge_weights_are_capped() {
    let ring = HashRing::build(&metas(&[u32::MAX, u32::MAX, 1]), u32::MAX);
    assert!(ring.len() as u64 <= MAX_POINTS + 3);
    let owners: Vec<usize> = (0..ring.len()).map(|p| ring.owner(p)).collect();
    let light = owners.iter().filter(|&&i| i == 2).count();
    assert_eq!(light, 1, "every endpoint keeps a point");
    let heavy = owners.iter().filter(|&&i| i == 0).count();
    assert!(heavy as u64 >= MAX_POINTS / 2 - 1);

    let many = metas(&vec![u32::MAX; 5000]);
    assert!(HashRing::build(&many, 160).len() as u64 <= MAX_POINTS + 5000);

    // Past 65 536 endpoints owners take 32 bits.
    let wide = metas(&vec![1; 70_000]);
    let ring = HashRing::build(&wide, 1);
    assert!(matches!(ring.owners, Owners::Wide(_)));
    let seen: std::collections::HashSet<usize> = (0..ring.len()).map(|p| ring.owner(p)).collect();
    assert_eq!(seen.len(), 70_000);
}

#[test]
fn empty_and_zero_weight_sets_have_no_points() {
    assert!(HashRing::build(&[], 160).is_empty());
    let ring = HashRing::build(&metas(&[0, 0]), 160);
    assert!(ring.is_empty());
    assert!(ring.members().is_empty());
    // A single point still gets a valid bucket index.
    let one = HashRing::build(&metas(&[1]), 1);
    assert_eq!(one.successor(0), 0);
    assert_eq!(one.successor(u64::MAX), 0);
}
