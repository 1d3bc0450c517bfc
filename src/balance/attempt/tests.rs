use super::*;

#[test]
fn remembers_up_to_capacity_then_only_counts() {
    let tried = TriedEndpoints::new();
    assert!(tried.is_empty());
    assert_eq!(tried.last(), None);
    for h in 0..20u64 {
        tried.record(h * 3);
    }
    assert_eq!(tried.len(), CAPACITY);
    assert_eq!(tried.picks(), 20);
    assert_eq!(tried.last(), Some(57));
    let mut out = [u64::MAX; 16];
    let n = tried.fill(&mut out);
    assert_eq!(&out[..n], &[0, 3, 6, 9, 12, 15, 18, 21]);
    assert!(!tried.contains(57), "past capacity: counted, not stored");
}

#[test]
fn fill_never_writes_past_out() {
    let tried = TriedEndpoints::new();
    (1..=5).for_each(|h| tried.record(h));
    let mut out = [0; 2];
    assert_eq!(tried.fill(&mut out), 2);
    assert_eq!(out, [1, 2]);
    assert_eq!(tried.fill(&mut []), 0);
}

#[test]
fn clones_share_one_set_across_threads() {
    let tried = TriedEndpoints::new();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let tried = tried.clone();
            s.spawn(move || (0..2).for_each(|k| tried.record(t * 10 + k)));
        }
    });
    assert_eq!(tried.len(), 8);
    assert_eq!(tried.picks(), 8);
}

#[test]
fn scopes_nest_and_restore() {
    let outer = TriedEndpoints::new();
    let inner = TriedEndpoints::new();
    outer.scope(|| {
        TriedEndpoints::with_current(|set| set.unwrap().record(1));
        inner.scope(|| TriedEndpoints::with_current(|set| set.unwrap().record(2)));
        TriedEndpoints::with_current(|set| set.unwrap().record(3));
    });
    assert!(TriedEndpoints::current().is_none());
    assert_eq!((outer.picks(), outer.last()), (2, Some(3)));
    assert_eq!((inner.picks(), inner.last()), (1, Some(2)));
}

#[test]
fn a_panicking_call_restores_the_outer_set() {
    let set = TriedEndpoints::new();
    let caught = std::panic::catch_unwind(|| set.scope(|| panic!("inside")));
    assert!(caught.is_err());
    assert!(TriedEndpoints::current().is_none());
}
