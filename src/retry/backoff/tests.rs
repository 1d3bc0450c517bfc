use super::*;

const MS: Duration = Duration::from_millis(1);

#[test]
fn ceilings_double_up_to_the_cap() {
    let backoff = Backoff {
        base: 10 * MS,
        cap: 100 * MS,
    };
    let ceilings: Vec<_> = (1..=6).map(|n| backoff.ceiling(n)).collect();
    assert_eq!(
        ceilings,
        [10 * MS, 20 * MS, 40 * MS, 80 * MS, 100 * MS, 100 * MS]
    );
    assert_eq!(backoff.ceiling(u32::MAX), 100 * MS);
    let huge = Backoff {
        base: Duration::MAX,
        cap: Duration::MAX,
    };
    assert_eq!(huge.ceiling(40), Duration::MAX);
    let rng = Rng::from_seed(3);
    assert!(huge.delay(40, RetryReason::Error, &rng) <= Duration::MAX);
}

#[test]
fn delays_are_jittered_over_the_whole_window() {
    let backoff = Backoff {
        base: 10 * MS,
        cap: 1000 * MS,
    };
    let rng = Rng::from_seed(11);
    let delays: Vec<_> = (0..1000)
        .map(|_| backoff.delay(3, RetryReason::Error, &rng))
        .collect();
    assert!(delays.iter().all(|d| *d <= 40 * MS));
    let low = delays.iter().filter(|d| **d < 20 * MS).count();
    assert!((400..600).contains(&low), "{low} of 1000 in the lower half");
}

#[test]
fn refused_connections_retry_at_once_the_first_time() {
    let backoff = Backoff {
        base: 10 * MS,
        cap: 1000 * MS,
    };
    let rng = Rng::from_seed(5);
    assert_eq!(
        backoff.delay(1, RetryReason::ConnectionRefused, &rng),
        Duration::ZERO
    );
    let second: Vec<_> = (0..50)
        .map(|_| backoff.delay(2, RetryReason::ConnectionRefused, &rng))
        .collect();
    assert!(second.iter().any(|d| !d.is_zero()));
}

#[tokio::test(start_paused = true)]
async fn delay_sleeps_on_tokio_time() {
    let start = tokio::time::Instant::now();
    Delay::new(Duration::ZERO).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    Delay::new(30 * MS).await;
    assert_eq!(start.elapsed(), 30 * MS);
}
