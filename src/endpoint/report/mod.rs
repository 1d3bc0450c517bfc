//! The load an endpoint reports of itself: facts with a time.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

mod facts;

pub use self::facts::{Report, ReportDetails, ReportSnapshot};

/// How long a report counts by default: 200 ms.
pub const DEFAULT_STALENESS: Duration = Duration::from_millis(200);

/// One endpoint's self-reported load, shared by the source that fills it
/// and the pickers that read it.
///
/// Cloning is a reference-count increment; every clone reads and writes the
/// same record.
///
/// An [`ReportCell`] is one endpoint's shared record of what the server
/// says about its own load: its waiting queue, its running requests, its
/// KV-cache use, its ORCA utilisation and request rate, named metrics, the
/// models it serves and the adapters it has loaded, and when it last said so.
/// Sources above the contract fill it (the `metrics` module, feature
/// `metrics`: ORCA load reports in answers, a Prometheus poller, or your own
/// code); pickers read it through
/// [`Endpoint::report`](super::Endpoint::report).
///
/// # Reading is an atomic load
///
/// The numbers live in four `AtomicU64` words, written as a whole by
/// [`ReportCell::record`] and read by [`ReportCell::current`] without
/// a lock. A reader racing a writer can see the queue of one report with the
/// KV use of the next: each number is always one a server reported. The
/// rarely changing parts (named metrics, models, adapters) sit behind an
/// `ArcSwap`, whose load takes no lock either.
///
/// # Staleness
///
/// A fact older than the record's staleness bound (200 ms by default, see
/// [`ReportCell::with_staleness`]) is not returned: [`load`] answers
/// `None`, as it does before the first report, and pickers fall back to the
/// client's own count of requests in flight.
///
/// [`load`]: ReportCell::current
///
/// ```
/// use std::time::Duration;
/// use tower_lb::endpoint::{ReportCell, Report};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let metrics = ReportCell::new();
/// assert!(metrics.current().is_none(), "nothing measured yet");
///
/// metrics.record(&Report {
///     queue: Some(3),
///     kv_cache_use: Some(0.42),
///     ..Report::default()
/// });
/// let facts = metrics.current().expect("fresh");
/// assert_eq!((facts.queue, facts.kv_cache_use), (3, 0.42));
///
/// tokio::time::advance(Duration::from_millis(201)).await;
/// assert!(metrics.current().is_none(), "stale after 200 ms");
/// # }
/// ```
#[derive(Clone)]
pub struct ReportCell {
    shared: Arc<Shared>,
}

/// The record. The four words a pick reads come first and the struct is
/// aligned to a cache line, so a pick touches one line per endpoint.
#[repr(C, align(64))]
struct Shared {
    staleness_ms: u64,
    /// [`clock_ms`] of the last report; 0: never.
    measured_at: AtomicU64,
    /// Waiting queue (high half) and running requests (low half).
    requests: AtomicU64,
    /// KV-cache use (high half, `f32` bits) and utilisation (low half).
    usage: AtomicU64,
    /// Queries per second (high half, `f32` bits) and errors per second.
    rates: AtomicU64,
    /// [`clock_ms`] of the first report after a gap longer than the
    /// staleness bound; 0: never.
    reporting_since: AtomicU64,
    /// [`clock_ms`] of the last bad report logged.
    garbage_logged: AtomicU64,
    /// Whether reports carry a running count (without one, 0 running says
    /// nothing).
    running_known: AtomicBool,
    /// A request sent while the server reported waiting requests (and this
    /// client had none there) got its first token well within the wait
    /// that queue implied: its reported queue is not believed while this
    /// client has nothing there, until a request does wait.
    queue_disproved: AtomicBool,
    extra: ArcSwap<ReportDetails>,
}

impl Default for ReportCell {
    fn default() -> Self {
        Self::new()
    }
}

impl ReportCell {
    /// An empty record whose reports count for [`DEFAULT_STALENESS`].
    pub fn new() -> Self {
        Self::with_staleness(DEFAULT_STALENESS)
    }

    /// An empty record whose reports count for `staleness` (at least a
    /// millisecond, the record's resolution; `Duration::MAX` never goes
    /// stale).
    pub fn with_staleness(staleness: Duration) -> Self {
        let staleness_ms = u64::try_from(staleness.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            shared: Arc::new(Shared {
                staleness_ms,
                requests: AtomicU64::new(0),
                usage: AtomicU64::new(0),
                rates: AtomicU64::new(0),
                measured_at: AtomicU64::new(0),
                reporting_since: AtomicU64::new(0),
                running_known: AtomicBool::new(false),
                queue_disproved: AtomicBool::new(false),
                extra: ArcSwap::from_pointee(ReportDetails::default()),
                garbage_logged: AtomicU64::new(0),
            }),
        }
    }

    /// How long a report counts.
    pub fn staleness(&self) -> Duration {
        Duration::from_millis(self.shared.staleness_ms)
    }

    /// Records `report`, stamped now. Absent fields keep their values; an
    /// empty report still refreshes the time (the server answered and had
    /// nothing new to say).
    pub fn record(&self, report: &Report) {
        let s = &*self.shared;
        if report.queue.is_some() || report.running.is_some() {
            let old = s.requests.load(Ordering::Relaxed);
            let queue = report.queue.unwrap_or((old >> 32) as u32);
            let running = report.running.unwrap_or(old as u32);
            s.requests
                .store(pack_u32(queue, running), Ordering::Relaxed);
            if report.running.is_some() && !s.running_known.load(Ordering::Relaxed) {
                s.running_known.store(true, Ordering::Relaxed);
            }
        }
        if report.kv_cache_use.is_some() || report.utilization.is_some() {
            let (kv, util) = unpack_f32(s.usage.load(Ordering::Relaxed));
            let kv = report
                .kv_cache_use
                .filter(|v| !v.is_nan())
                .map_or(kv, |v| v.clamp(0.0, 1.0));
            let util = rate(report.utilization).unwrap_or(util);
            s.usage.store(pack_f32(kv, util), Ordering::Relaxed);
        }
        if report.qps.is_some() || report.eps.is_some() {
            let (qps, eps) = unpack_f32(s.rates.load(Ordering::Relaxed));
            let qps = rate(report.qps).unwrap_or(qps);
            let eps = rate(report.eps).unwrap_or(eps);
            s.rates.store(pack_f32(qps, eps), Ordering::Relaxed);
        }
        if report.named.is_some()
            || report.adapters.is_some()
            || report.models.is_some()
            || report.max_adapters.is_some()
        {
            let current = s.extra.load();
            let next = ReportDetails {
                named: report
                    .named
                    .clone()
                    .unwrap_or_else(|| current.named.clone()),
                models: report
                    .models
                    .clone()
                    .unwrap_or_else(|| current.models.clone()),
                adapters: report
                    .adapters
                    .clone()
                    .unwrap_or_else(|| current.adapters.clone()),
                max_adapters: report.max_adapters.or(current.max_adapters),
            };
            if next != **current {
                s.extra.store(Arc::new(next));
            }
        }
        let now = self.now_ms();
        let last = s.measured_at.swap(now, Ordering::Release);
        if last == 0 || now.saturating_sub(last) > s.staleness_ms {
            s.reporting_since.store(now, Ordering::Relaxed);
        }
    }

    /// Marks the record as just refreshed without changing a value.
    pub fn touch(&self) {
        self.record(&Report::default());
    }

    /// The last report, if one arrived within the staleness bound.
    #[inline]
    pub fn current(&self) -> Option<ReportSnapshot> {
        self.current_at(Instant::now())
    }

    /// [`load`](Self::current) as of `now`, so a picker reads the clock once
    /// for all endpoints.
    #[inline]
    pub fn current_at(&self, now: Instant) -> Option<ReportSnapshot> {
        self.last_at(now)
            .filter(|facts| facts.age.as_millis() <= u128::from(self.shared.staleness_ms))
    }

    /// The last report as of `now` whatever its age (see
    /// [`ReportSnapshot::age`]); `None` before the first. For pickers that apply
    /// their own expiry, such as weighted round robin from load reports.
    #[inline]
    pub fn last_at(&self, now: Instant) -> Option<ReportSnapshot> {
        let s = &*self.shared;
        let at = s.measured_at.load(Ordering::Acquire);
        if at == 0 {
            return None;
        }
        let age = self.ms_at(now).saturating_sub(at);
        let requests = s.requests.load(Ordering::Relaxed);
        let (kv_cache_use, utilization) = unpack_f32(s.usage.load(Ordering::Relaxed));
        let (qps, eps) = unpack_f32(s.rates.load(Ordering::Relaxed));
        Some(ReportSnapshot {
            queue: (requests >> 32) as u32,
            running: requests as u32,
            kv_cache_use,
            utilization,
            qps,
            eps,
            age: Duration::from_millis(age),
        })
    }

    /// How long ago the last report arrived, stale or not; `None` before
    /// the first.
    pub fn age(&self) -> Option<Duration> {
        let at = self.shared.measured_at.load(Ordering::Acquire);
        (at != 0).then(|| Duration::from_millis(self.now_ms().saturating_sub(at)))
    }

    /// How long the endpoint has reported without a gap longer than the
    /// staleness bound; `None` when its last report is stale. For status
    /// pages.
    pub fn reporting_for(&self, now: Instant) -> Option<Duration> {
        let s = &*self.shared;
        let at = s.measured_at.load(Ordering::Acquire);
        let now = self.ms_at(now);
        if at == 0 || now.saturating_sub(at) > s.staleness_ms {
            return None;
        }
        let since = s.reporting_since.load(Ordering::Relaxed).max(1);
        Some(Duration::from_millis(now.saturating_sub(since)))
    }

    /// The rarely changing part: named metrics, models, adapters. A lock-free
    /// load; hold the guard briefly.
    pub fn details(&self) -> arc_swap::Guard<Arc<ReportDetails>> {
        self.shared.extra.load()
    }

    /// Whether a bad report seen now should be logged: the first of a burst
    /// is, later ones are not until a report period (the staleness bound)
    /// has passed without one. Sources call it so that garbage is logged
    /// once per burst.
    pub fn should_log_garbage(&self) -> bool {
        let now = self.now_ms();
        let last = self.shared.garbage_logged.swap(now, Ordering::Relaxed);
        last == 0 || now.saturating_sub(last) > self.shared.staleness_ms
    }

    fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    fn ms_at(&self, now: Instant) -> u64 {
        clock_ms(now)
    }

    /// Whether a reported `queue` with `running` requests is not believed
    /// while this client has `in_flight` there: [`contradicts`] says so, or
    /// the server's answers disproved its queue (see
    /// [`disprove_queue`](Self::disprove_queue)).
    #[inline]
    pub(crate) fn contradicted(&self, queue: u32, running: Option<u32>, in_flight: u64) -> bool {
        contradicts(queue, running, in_flight)
            || (queue > 0 && in_flight == 0 && self.shared.queue_disproved.load(Ordering::Relaxed))
    }

    /// What an answer showed of the reported queue: `true` when a request
    /// sent while it was reported came through well within the wait it
    /// implied (the queue is then not believed while this client has
    /// nothing there), `false` when one waited (it is believed again).
    pub(crate) fn disprove_queue(&self, disproved: bool) {
        if self
            .shared
            .queue_disproved
            .swap(disproved, Ordering::Relaxed)
            != disproved
        {
            tracing::debug!(
                disproved,
                "a server's reported queue checked against its answers"
            );
        }
    }

    /// Queue, running requests and KV use of a report no older than the
    /// staleness bound at `now_ms` ([`clock_ms`]): the scoring picker's read,
    /// three atomic loads.
    #[inline]
    pub(crate) fn fresh_load(&self, now_ms: u64) -> Option<(u32, Option<u32>, f32)> {
        let s = &*self.shared;
        let at = s.measured_at.load(Ordering::Acquire);
        if at == 0 || now_ms.saturating_sub(at) > s.staleness_ms {
            return None;
        }
        let requests = s.requests.load(Ordering::Relaxed);
        let (kv, _) = unpack_f32(s.usage.load(Ordering::Relaxed));
        let running = s
            .running_known
            .load(Ordering::Relaxed)
            .then_some(requests as u32);
        Some(((requests >> 32) as u32, running, kv))
    }
}

impl fmt::Debug for ReportCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportCell")
            .field("report", &self.current())
            .field("age", &self.age())
            .field("staleness", &self.staleness())
            .finish()
    }
}

/// Milliseconds on the records' shared clock at `now` (tokio's clock, so a
/// paused test clock moves it), at least 1. The clock starts a day before
/// the first reading, so that an instant taken earlier on another runtime's
/// clock still reads as a distinct time.
pub(crate) fn clock_ms(now: Instant) -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| {
        let now = std::time::Instant::now();
        now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now)
    });
    let ms = now.into_std().saturating_duration_since(epoch).as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
}

/// A rate or utilisation: finite and not negative, or ignored.
fn rate(value: Option<f32>) -> Option<f32> {
    value.filter(|v| v.is_finite() && *v >= 0.0)
}

fn pack_u32(high: u32, low: u32) -> u64 {
    (u64::from(high) << 32) | u64::from(low)
}

fn pack_f32(high: f32, low: f32) -> u64 {
    pack_u32(high.to_bits(), low.to_bits())
}

fn unpack_f32(word: u64) -> (f32, f32) {
    (
        f32::from_bits((word >> 32) as u32),
        f32::from_bits(word as u32),
    )
}

/// Whether a reported queue contradicts what the client sees: requests
/// waiting at a server that reports running none, while this client has none in
/// flight there (see also [`ReportCell::contradicted`], which adds what
/// answers showed). A queue forms only behind busy batch slots; a server with
/// idle slots that claims one (a count leaked by cancelled requests, a
/// stuck gauge) would otherwise be shunned, or shed, for nothing. The
/// client's own count stands in for it.
#[inline]
pub(crate) fn contradicts(queue: u32, running: Option<u32>, in_flight: u64) -> bool {
    queue > 0 && running == Some(0) && in_flight == 0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn absent_fields_keep_their_values() {
        let metrics = ReportCell::new();
        metrics.record(&Report {
            queue: Some(4),
            running: Some(7),
            kv_cache_use: Some(0.5),
            ..Report::default()
        });
        metrics.record(&Report {
            queue: Some(1),
            ..Report::default()
        });
        let facts = metrics.current().unwrap();
        assert_eq!(
            (facts.queue, facts.running, facts.kv_cache_use),
            (1, 7, 0.5)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bad_values_are_clamped_or_ignored() {
        let metrics = ReportCell::new();
        metrics.record(&Report {
            kv_cache_use: Some(7.0),
            qps: Some(10.0),
            utilization: Some(0.5),
            ..Report::default()
        });
        metrics.record(&Report {
            kv_cache_use: Some(f32::NAN),
            qps: Some(f32::INFINITY),
            utilization: Some(-1.0),
            eps: Some(f32::NAN),
            ..Report::default()
        });
        let facts = metrics.current().unwrap();
        assert_eq!(facts.kv_cache_use, 1.0);
        assert_eq!((facts.qps, facts.utilization, facts.eps), (10.0, 0.5, 0.0));
    }

    #[tokio::test(start_paused = true)]
    async fn staleness_and_reporting_time() {
        let metrics = ReportCell::with_staleness(Duration::from_millis(100));
        assert_eq!(metrics.age(), None);
        assert_eq!(metrics.reporting_for(Instant::now()), None);
        metrics.touch();
        for _ in 0..5 {
            tokio::time::advance(Duration::from_millis(50)).await;
            metrics.touch();
        }
        assert_eq!(
            metrics.reporting_for(Instant::now()),
            Some(Duration::from_millis(250))
        );
        tokio::time::advance(Duration::from_millis(101)).await;
        assert!(metrics.current().is_none());
        assert_eq!(metrics.age(), Some(Duration::from_millis(101)));
        // A gap longer than the bound starts the reporting time again.
        metrics.touch();
        assert_eq!(metrics.reporting_for(Instant::now()), Some(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn extra_facts_and_adapter_slots() {
        let metrics = ReportCell::new();
        assert!(metrics.details().serves("any"));
        assert!(metrics.details().has_adapter_slot());
        metrics.record(&Report {
            models: Some(vec!["llama".into()]),
            adapters: Some(vec!["a".into(), "b".into()]),
            max_adapters: Some(2),
            named: Some(vec![("x".into(), 1.5)]),
            ..Report::default()
        });
        let extra = metrics.details();
        assert!(extra.serves("llama") && !extra.serves("mistral"));
        assert!(extra.has_adapter("a") && !extra.has_adapter("c"));
        assert!(!extra.has_adapter_slot());
        assert_eq!(extra.named("x"), Some(1.5));
    }

    #[tokio::test(start_paused = true)]
    async fn garbage_is_logged_once_per_burst() {
        let metrics = ReportCell::with_staleness(Duration::from_millis(100));
        assert!(metrics.should_log_garbage());
        for _ in 0..10 {
            tokio::time::advance(Duration::from_millis(10)).await;
            assert!(!metrics.should_log_garbage());
        }
        tokio::time::advance(Duration::from_millis(101)).await;
        assert!(metrics.should_log_garbage());
    }
}
