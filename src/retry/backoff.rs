//! Exponential backoff with full jitter, and the delay future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::RetryReason;
use crate::util::Rng;

/// Exponential backoff with full jitter: the delay before retry `n` (1 for
/// the first retry) is drawn uniformly from `0..=min(cap, base × 2ⁿ⁻¹)`.
///
/// Full jitter spreads the retries of many clients that failed together
/// over the whole window instead of bunching them at its end. The one
/// exception: the first retry after a refused connection is not delayed,
/// since nothing was sent and the re-pick goes to another endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub(crate) base: Duration,
    pub(crate) cap: Duration,
}

impl Backoff {
    /// The longest delay before retry `retry`.
    pub(crate) fn ceiling(&self, retry: u32) -> Duration {
        // 2^31 × any base of a millisecond or more is past any sane cap.
        let doublings = retry.saturating_sub(1).min(31);
        self.base.saturating_mul(1 << doublings).min(self.cap)
    }

    /// The delay before retry `retry`, after a failure for `reason`.
    pub(crate) fn delay(&self, retry: u32, reason: RetryReason, rng: &Rng) -> Duration {
        if retry <= 1 && reason == RetryReason::ConnectionRefused {
            return Duration::ZERO;
        }
        let ceiling = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX - 1);
        // Uniform over 0..=ceiling by multiply-shift.
        let span = u128::from(ceiling) + 1;
        let nanos = (u128::from(rng.next_u64()) * span) >> 64;
        Duration::from_nanos(nanos as u64)
    }
}

pin_project! {
    /// The wait before a retry: [`RetryPolicy`](super::RetryPolicy)'s
    /// `Policy::Future`. A zero delay completes at once, without a timer;
    /// the timer starts when the future is first polled.
    #[derive(Debug)]
    pub struct Delay {
        delay: Duration,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl Delay {
    pub(crate) fn new(delay: Duration) -> Self {
        Self { delay, sleep: None }
    }
}

impl Future for Delay {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if this.delay.is_zero() {
            return Poll::Ready(());
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep(*this.delay)));
        }
        match this.sleep.as_pin_mut() {
            Some(sleep) => sleep.poll(cx),
            None => Poll::Ready(()),
        }
    }
}

#[cfg(test)]
mod tests {
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
}
