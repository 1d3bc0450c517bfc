use super::*;
use crate::pick::{RoundRobin, WeightedRoundRobin};

#[test]
fn boxed_pickers_pick_as_the_unboxed_ones() {
    let metas: Vec<EndpointInfo> = (0..4).map(|i| EndpointInfo::new(i, 1 + i as u32)).collect();
    let services = [(); 4];
    let endpoints = Candidates::new(&metas, &services);
    let plain = WeightedRoundRobin::new();
    let boxed: BoxPick<(), ()> = BoxPick::new(WeightedRoundRobin::new());
    let (plain_table, boxed_table) = (plain.prepare(&metas), boxed.prepare(&metas));
    for _ in 0..40 {
        assert_eq!(
            plain.pick(&plain_table, &endpoints, &()),
            boxed.pick(&boxed_table, &endpoints, &())
        );
    }
}

#[test]
fn a_foreign_table_is_no_pick_not_a_panic() {
    let metas = [EndpointInfo::new(1, 1)];
    let endpoints = Candidates::new(&metas, &[()]);
    let boxed: BoxPick<(), ()> = BoxPick::new(RoundRobin::new());
    let wrong: AnyTable = Box::new(17u8);
    assert_eq!(boxed.pick(&wrong, &endpoints, &()), None);
}
