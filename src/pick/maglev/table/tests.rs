use super::*;

#[test]
fn apportionment_is_exact_to_one_slot() {
    let keys: Vec<u64> = (0..6).collect();
    let weights = [5, 1, 1, 3, 2, 7];
    let targets = apportion(&weights, &keys, 65_537);
    assert_eq!(targets.iter().sum::<u64>(), 65_537);
    for (t, w) in targets.iter().zip(weights) {
        let exact = 65_537.0 * w as f64 / 19.0;
        assert!((*t as f64 - exact).abs() < 1.0);
    }
}

#[test]
fn tiny_shares_still_get_a_slot() {
    let keys: Vec<u64> = (0..5).collect();
    let weights = [u64::from(u32::MAX), 1, 1, 1, u64::from(u32::MAX)];
    let targets = apportion(&weights, &keys, 97);
    assert_eq!(targets.iter().sum::<u64>(), 97);
    assert_eq!(&targets[1..4], [1, 1, 1]);
    assert!(targets[0].abs_diff(targets[4]) <= 1);
    // No room for everyone: shares are plain, and the sum still fits.
    let weights = [1; 5];
    let targets = apportion(&weights, &keys, 3);
    assert_eq!(targets.iter().sum::<u64>(), 3);
}

#[test]
fn fill_uses_every_slot_and_meets_every_target() {
    let keys: Vec<u64> = (0..4).map(|i| mix64(i + 77)).collect();
    let targets = [40, 30, 20, 11];
    let slots = fill(&keys, &targets, 101);
    for (j, &t) in targets.iter().enumerate() {
        assert_eq!(slots.iter().filter(|&&s| s == j as u32).count() as u64, t);
    }
}

#[test]
fn wide_entries_match_narrow_ones() {
    let metas: Vec<EndpointInfo> = (0..5).map(|i| EndpointInfo::new(mix64(i), 1)).collect();
    let narrow = MaglevTable::build(&metas, 97);
    let Entries::Narrow(entries) = &narrow.entries else {
        panic!("five endpoints fit two bytes");
    };
    let wide = MaglevTable {
        entries: Entries::Wide(entries.iter().map(|&e| u32::from(e)).collect()),
        members: narrow.members.clone(),
    };
    let endpoints = Candidates::new(&metas, &[(); 5]);
    for slot in 0..narrow.len() {
        assert_eq!(narrow.entry(slot), wide.entry(slot));
        assert_eq!(narrow.owner(slot), Some(narrow.entry(slot)));
        assert_eq!(wide.owner(slot), Some(wide.entry(slot)));
        assert_eq!(
            narrow.first_allowed(slot, &endpoints),
            wide.first_allowed(slot, &endpoints)
        );
    }
    assert_eq!((narrow.owner(503), wide.owner(503)), (None, None));
    assert_eq!(
        format!("{wide:?}"),
        "MaglevTable { slots: 503, endpoints: 5 }"
    );
}
