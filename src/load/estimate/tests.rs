use super::*;

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn default_rtt_holds_until_time_passes() {
    let estimate = Estimate::new(100 * MS, Duration::from_secs(1));
    assert_eq!(estimate.rtt_ns(Instant::now()), 100e6);
}

#[tokio::test(start_paused = true)]
async fn decays_towards_zero_with_the_time_constant() {
    let estimate = Estimate::new(100 * MS, Duration::from_secs(1));
    let later = Instant::now() + Duration::from_secs(1);
    let value = estimate.rtt_ns(later);
    assert!((value - 100e6 / std::f64::consts::E).abs() < 1e3, "{value}");
}

#[tokio::test(start_paused = true)]
async fn a_peak_replaces_and_a_low_sample_pulls_down() {
    let estimate = Estimate::new(10 * MS, Duration::from_secs(1));
    let start = Instant::now();
    estimate.sample(start, start + 500 * MS);
    assert_eq!(estimate.rtt_ns(start + 500 * MS), 500e6);

    // A fast sample right after barely moves it; one much later moves it
    // most of the way.
    estimate.sample(start + 500 * MS, start + 501 * MS);
    let soon = estimate.rtt_ns(start + 501 * MS);
    assert!(soon > 400e6 && soon < 500e6, "{soon}");
    let then = start + 5001 * MS;
    estimate.sample(then - MS, then);
    let late = estimate.rtt_ns(then);
    assert!(late < 2e6, "{late}");
}

#[test]
fn zero_and_huge_settings_stay_finite() {
    let now = Instant::now();
    for (rtt, decay) in [
        (Duration::ZERO, Duration::ZERO),
        (Duration::MAX, Duration::ZERO),
        (Duration::MAX, Duration::MAX),
        (Duration::ZERO, Duration::MAX),
    ] {
        let estimate = Estimate::new(rtt, decay);
        estimate.sample(now, now + Duration::from_secs(3600));
        estimate.sample(now + Duration::from_secs(3600), now);
        for at in [now, now + Duration::from_secs(1 << 40)] {
            let value = estimate.rtt_ns(at);
            assert!(
                value.is_finite() && value >= 0.0,
                "{rtt:?} {decay:?}: {value}"
            );
        }
    }
}

#[test]
fn elapsed_is_signed_across_the_wrap() {
    assert_eq!(elapsed(10, 15), 5);
    assert_eq!(elapsed(15, 10), 0);
    assert_eq!(elapsed(u32::MAX - 1, 3), 5);
    assert_eq!(unpack(pack(1.5, 42)), (1.5, 42));
}

#[test]
fn concurrent_samples_keep_the_peak() {
    let estimate = Estimate::new(MS, Duration::from_secs(10));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for i in 0..4u32 {
            let estimate = &estimate;
            scope.spawn(move || {
                for j in 0..1000u32 {
                    estimate.sample(
                        start,
                        start + Duration::from_micros(u64::from(i * 1000 + j)),
                    );
                }
            });
        }
    });
    // The largest sample (3.999 ms) is a peak and replaces the estimate
    // whatever the interleaving; smaller ones can only move it by about a
    // ten-thousandth per millisecond of time since.
    let value = estimate.rtt_ns(start);
    assert!((3.0e6..=3.999e6 + 1.0).contains(&value), "{value}");
}

#[test]
fn decay_factor_follows_exp() {
    for k in 0..20_000 {
        let halvings = f64::from(k) * 0.0537;
        let exact = (-halvings * std::f64::consts::LN_2).exp();
        let fast = decay_factor(halvings);
        assert!(
            (fast - exact).abs() <= exact * 4e-7 + 1e-300,
            "{halvings}: {fast} against {exact}"
        );
    }
    assert_eq!(decay_factor(0.0), 1.0);
    assert_eq!(decay_factor(-3.0), 1.0);
    assert_eq!(decay_factor(5000.0), 0.0);
    assert_eq!(decay_factor(f64::INFINITY), 0.0);
    assert_eq!(decay_factor(f64::NAN), 0.0);
}

#[tokio::test(start_paused = true)]
async fn load_reads_match_the_exact_estimate() {
    let estimate = Estimate::new(100 * MS, Duration::from_secs(1));
    let start = Instant::now();
    estimate.sample(start, start + 300 * MS);
    for ms in [0u64, 1, 7, 250, 1000, 4321, 60_000] {
        let at = start + 300 * MS + Duration::from_millis(ms);
        let elapsed = Duration::from_millis(ms).as_secs_f64();
        let exact = 300e6 * (-elapsed).exp();
        let (fast, read) = (estimate.load_ns(at), estimate.rtt_ns(at));
        assert_eq!(fast, read);
        assert!(
            (fast - exact).abs() <= exact * 4e-7 + 1e-9,
            "{ms}: {fast} {exact}"
        );
    }
}
