//! The time a load read uses: not a clock read, but the time of the last one.
//!
//! Reading tokio's clock costs more than the rest of a Peak-EWMA load read
//! together, and a pick reads several loads. The wrappers read the clock
//! anyway when a request is sent and when it ends; each of those reads is
//! remembered here, per thread, and a load read on the pick path takes the
//! latest. While requests flow, that is the time of the last request sent or
//! finished on this thread: a few microseconds old on a busy balancer. After
//! a lull, the first pick sees the time the lull began, so an estimate has
//! decayed a little less than it should for that one pick; the pick's own
//! request brings the time up to date.
//!
//! Per thread, not per process, so that runtimes with paused clocks on
//! different threads (tests, the simulator) keep their own time.

use std::cell::Cell;

use tokio::time::Instant;

thread_local! {
    static LAST_READ: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Reads the clock and remembers the reading for [`recent`].
pub(crate) fn now() -> Instant {
    let now = Instant::now();
    LAST_READ.with(|last| last.set(Some(now)));
    now
}

/// The last time [`now`] was called on this thread, or the clock if never.
pub(crate) fn recent() -> Instant {
    LAST_READ.with(Cell::get).unwrap_or_else(now)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn recent_is_the_last_reading() {
        let first = now();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(recent(), first);
        let second = now();
        assert_eq!(second - first, Duration::from_secs(1));
        assert_eq!(recent(), second);
    }
}
