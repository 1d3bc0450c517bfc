use super::*;

#[test]
fn seeded_sequences_repeat() {
    let a = Rng::from_seed(7);
    let b = Rng::from_seed(7);
    for _ in 0..100 {
        assert_eq!(a.next_u64(), b.next_u64());
    }
}

#[test]
fn local_generators_repeat_and_differ() {
    let (a, b) = (Rng::from_seed(3), Rng::from_seed(3));
    let (mut x, mut y) = (a.local(), b.local());
    for _ in 0..10 {
        assert_eq!(x.next_u64(), y.next_u64());
    }
    let mut z = a.local();
    assert_ne!(x.next_u64(), z.next_u64());
    assert!((0..1000).all(|_| z.below(7) < 7));
}

#[test]
fn below_stays_in_range() {
    let rng = Rng::from_seed(1);
    let mut seen = [0usize; 5];
    for _ in 0..5000 {
        seen[rng.below(5)] += 1;
    }
    assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    assert_eq!(reduce(u64::MAX, 3), 2);
    assert_eq!(reduce(0, 3), 0);
}
