use super::*;
use crate::pick::testing::metas;

fn tally(
    rr: &RoundRobin,
    table: &Schedule,
    endpoints: &Candidates<'_, ()>,
    picks: usize,
) -> Vec<usize> {
    let mut c = vec![0; endpoints.len()];
    for _ in 0..picks {
        c[Pick::<(), ()>::pick(rr, table, endpoints, &()).unwrap()] += 1;
    }
    c
}

#[test]
fn splits_exactly() {
    let rr = RoundRobin::new();
    let metas = metas(&[1, 1, 1]);
    let table = rr.prepare(&metas);
    let endpoints = Candidates::new(&metas, &[(); 3]);
    assert_eq!(tally(&rr, &table, &endpoints, 3000), [1000, 1000, 1000]);
}

#[test]
fn ignores_weights_but_skips_zero() {
    let rr = RoundRobin::new();
    let metas = metas(&[u32::MAX, 0, 1, 5]);
    let table = rr.prepare(&metas);
    let endpoints = Candidates::new(&metas, &[(); 4]);
    assert_eq!(tally(&rr, &table, &endpoints, 300), [100, 0, 100, 100]);
}

#[test]
fn none_without_endpoints() {
    let rr = RoundRobin::new();
    for weights in [&[][..], &[0, 0][..]] {
        let metas = metas(weights);
        let services = vec![(); metas.len()];
        let table = rr.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        assert_eq!(Pick::<(), ()>::pick(&rr, &table, &endpoints, &()), None);
    }
}

#[test]
fn exclusions_step_forward() {
    let rr = RoundRobin::new();
    let metas = metas(&[1, 1, 1, 1]);
    let table = rr.prepare(&metas);
    let services = [(); 4];
    let excluded = [1, 2];
    let endpoints = Candidates::new(&metas, &services).excluding(&excluded);
    // The turns of 1 and 2 pass to the cursor's next turns, so 0 and 3
    // share them evenly rather than 3, the next in line, taking them all.
    assert_eq!(tally(&rr, &table, &endpoints, 400), [200, 0, 0, 200]);
    let all = [3, 2, 1, 0];
    let none = Candidates::new(&metas, &services).excluding(&all);
    assert_eq!(Pick::<(), ()>::pick(&rr, &table, &none, &()), None);
}

#[test]
fn thousands_of_endpoints() {
    let rr = RoundRobin::new();
    let metas = metas(&vec![1; 5000]);
    let table = rr.prepare(&metas);
    let services = vec![(); 5000];
    let excluded: Vec<u64> = (0..4999).collect();
    let endpoints = Candidates::new(&metas, &services).excluding(&excluded);
    assert_eq!(
        Pick::<(), ()>::pick(&rr, &table, &endpoints, &()),
        Some(4999)
    );
}

#[test]
fn cursor_wraps_without_panicking() {
    let rr = RoundRobin {
        next: AtomicUsize::new(usize::MAX - 1),
    };
    let metas = metas(&[1, 1, 1]);
    let table = rr.prepare(&metas);
    let endpoints = Candidates::new(&metas, &[(); 3]);
    for _ in 0..5 {
        assert!(Pick::<(), ()>::pick(&rr, &table, &endpoints, &()).is_some());
    }
}
