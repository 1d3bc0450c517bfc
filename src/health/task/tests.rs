use super::*;

#[test]
fn first_probes_are_spread_over_the_interval() {
    let interval = Duration::from_secs(10);
    let active = Active::<()> {
        probe: Arc::new(super::super::probe_fn(|_: &()| async {
            Ok::<(), BoxError>(())
        })),
        interval,
        timeout: Duration::from_secs(1),
        jitter: Duration::ZERO,
    };
    let core = Core::new(None, None, Default::default(), (1, 1), Some(3));
    for n in [2usize, 5, 16, 50] {
        let mut phases: Vec<Duration> = (0..n as u64)
            .map(|seq| active.first_delay(&core, seq))
            .collect();
        phases.sort();
        assert!(phases.iter().all(|&phase| phase < interval));
        // The largest gap between neighbours (around the circle) stays
        // within a small multiple of the even gap: no burst.
        let mut widest = interval - phases[n - 1] + phases[0];
        for pair in phases.windows(2) {
            widest = widest.max(pair[1] - pair[0]);
        }
        assert!(
            widest <= interval * 3 / n as u32,
            "{n}: widest gap {widest:?}"
        );
    }
}

#[test]
fn gaps_stay_within_the_jitter() {
    let active = Active::<()> {
        probe: Arc::new(super::super::probe_fn(|_: &()| async {
            Ok::<(), BoxError>(())
        })),
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(1),
        jitter: Duration::from_secs(1),
    };
    let core = Core::new(None, None, Default::default(), (1, 1), Some(9));
    let gaps: Vec<Duration> = (0..500).map(|_| active.gap(&core)).collect();
    assert!(gaps
        .iter()
        .all(|gap| *gap >= Duration::from_secs(9) && *gap <= Duration::from_secs(11)));
    assert!(gaps.iter().any(|gap| *gap < Duration::from_millis(9500)));
    assert!(gaps.iter().any(|gap| *gap > Duration::from_millis(10500)));
}
