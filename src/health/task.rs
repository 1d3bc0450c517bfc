//! The endpoint's task: runs its probes, ends its ejections, raises its
//! slow-start share. One task per endpoint, started on insert and stopped
//! when its cancel sender is dropped (on remove, or with the discovery
//! adapter).

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep, Timeout};

use super::core::Core;
use super::probe::{Probe, ProbeFuture};
use super::state::EndpointState;
use crate::error::BoxError;

/// An endpoint's probe and its schedule.
pub(crate) struct Active<K> {
    pub(crate) probe: Arc<dyn Probe<K>>,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) jitter: Duration,
}

impl<K> Active<K> {
    /// Where in the interval this endpoint's first probe falls: the k-th
    /// endpoint of a set sits at k·φ (mod 1) of the interval, shifted by a
    /// seeded offset, so any number of endpoints are spread evenly instead
    /// of probed in one burst.
    fn first_delay(&self, core: &Core, seq: u64) -> Duration {
        const PHI: u64 = 0x9e37_79b9_7f4a_7c15;
        let point = core.phase_offset().wrapping_add(seq.wrapping_mul(PHI));
        scale(self.interval, point)
    }

    /// The gap to the next probe: the interval plus a seeded draw in
    /// `-jitter..=jitter`.
    fn gap(&self, core: &Core) -> Duration {
        let jitter = self.jitter.as_nanos() as u64;
        if jitter == 0 {
            return self.interval;
        }
        let draw = core.rng.next_u64() % (2 * jitter + 1);
        (self.interval + Duration::from_nanos(draw)).saturating_sub(self.jitter)
    }
}

/// `duration × fraction / 2^64`.
fn scale(duration: Duration, fraction: u64) -> Duration {
    let nanos = (duration.as_nanos() * u128::from(fraction)) >> 64;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Counts the task as alive until its future is dropped, however it ends.
struct Alive(Arc<Core>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.tasks.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

/// Starts the endpoint's task on the current tokio runtime. Outside one, the
/// endpoint gets no probes and ejections do not end: logged, and reported
/// by `false`.
pub(crate) fn spawn<K>(
    state: Arc<EndpointState>,
    key: K,
    active: Option<Active<K>>,
    cancel: oneshot::Receiver<()>,
) -> bool
where
    K: Send + Sync + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(
            endpoint = %state.key,
            "no tokio runtime: the endpoint's health task (probes, ejection timers) does not run"
        );
        return false;
    };
    state.core.tasks.fetch_add(1, Ordering::AcqRel);
    let alive = Alive(Arc::clone(&state.core));
    runtime.spawn(async move {
        let _alive = alive;
        run(state, key, active, cancel).await;
    });
    true
}

enum Event {
    Cancelled,
    Probed(Result<(), BoxError>),
    Again,
}

async fn run<K>(
    state: Arc<EndpointState>,
    key: K,
    active: Option<Active<K>>,
    mut cancel: oneshot::Receiver<()>,
) {
    let core = Arc::clone(&state.core);
    let start = Instant::now();
    let mut next_probe = active
        .as_ref()
        .map(|active| start + active.first_delay(&core, state.seq));
    let mut probing: Option<Pin<Box<Timeout<ProbeFuture>>>> = None;
    let mut next_ramp: Option<u64> = None;
    let mut sleep: Pin<&mut Sleep> = pin!(tokio::time::sleep_until(start));
    loop {
        let now = Instant::now();
        if let (Some(active), Some(at), None) = (&active, next_probe, &probing) {
            if at <= now {
                probing = Some(Box::pin(tokio::time::timeout(
                    active.timeout,
                    active.probe.probe(&key),
                )));
                next_probe = Some(now + active.gap(&core));
            }
        }
        let now_nanos = core.since_epoch(now);
        if state.ejection_ends().is_some_and(|ends| ends <= now_nanos) {
            state.end_ejection();
        }
        if state.is_ramping() {
            if next_ramp.is_none_or(|at| at <= now_nanos) {
                next_ramp = state.ramp_tick(now_nanos);
            }
        } else {
            next_ramp = None;
        }

        let deadline = [
            next_probe.filter(|_| probing.is_none()),
            state.ejection_ends().map(|at| core.instant(at)),
            next_ramp.map(|at| core.instant(at)),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(deadline) = deadline {
            sleep.as_mut().reset(deadline);
        }
        let mut woken = pin!(state.wake.notified());

        let event = poll_fn(|cx| {
            if Pin::new(&mut cancel).poll(cx).is_ready() {
                return Poll::Ready(Event::Cancelled);
            }
            if let Some(probe) = probing.as_mut() {
                if let Poll::Ready(outcome) = probe.as_mut().poll(cx) {
                    probing = None;
                    return Poll::Ready(Event::Probed(outcome.unwrap_or_else(|_| {
                        Err(format!("no answer within {:?}", timeout_of(&active)).into())
                    })));
                }
            }
            if woken.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Again);
            }
            if deadline.is_some() && sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Again);
            }
            Poll::Pending
        })
        .await;

        match event {
            Event::Cancelled => return,
            Event::Probed(Ok(())) => state.record_probe(true),
            Event::Probed(Err(error)) => {
                tracing::debug!(endpoint = %state.key, %error, "health probe failed");
                state.record_probe(false);
            }
            Event::Again => {}
        }
    }
}

fn timeout_of<K>(active: &Option<Active<K>>) -> Duration {
    active
        .as_ref()
        .map_or(Duration::ZERO, |active| active.timeout)
}

#[cfg(test)]
mod tests {
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
}
