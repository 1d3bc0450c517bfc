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
mod tests;
