use super::*;

fn discover(min: Duration, max: Duration) -> DnsDiscover<()> {
    DnsDiscover::a_aaaa("x.test.", 80, ())
        .min_ttl(min)
        .max_ttl(max)
}

#[test]
fn the_ttl_is_clamped() {
    let d = discover(Duration::from_secs(1), Duration::from_secs(300));
    assert_eq!(d.delay(0), Duration::from_secs(1));
    assert_eq!(d.delay(30), Duration::from_secs(30));
    assert_eq!(d.delay(u32::MAX), Duration::from_secs(300));
}

#[test]
fn bad_bounds_do_not_panic_or_spin() {
    // A floor above the ceiling wins; zero is raised to the hard floor.
    let d = discover(Duration::from_secs(10), Duration::from_secs(1));
    assert_eq!(d.delay(0), Duration::from_secs(10));
    assert_eq!(d.delay(3600), Duration::from_secs(10));
    let d = discover(Duration::ZERO, Duration::ZERO);
    assert_eq!(d.delay(0), FLOOR);
    assert_eq!(d.delay(u32::MAX), FLOOR);
}
