//! Weighted round robin from load reports (gRPC's gRFC A58).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

use super::{Candidates, EndpointInfo, Pick, Prepare};
use crate::endpoint::Endpoint;
use crate::util::Rng;

/// The settings of [`ReportWeighted`], with gRFC A58's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReportWeights {
    /// How long an endpoint must report before its weight is used: 10 s.
    /// Until then it gets the mean weight.
    pub blackout_period: Duration,
    /// A weight whose last report is older than this is dropped, and the
    /// blackout starts again with the next report: 3 min.
    pub expiration_period: Duration,
    /// How often weights are recomputed: 1 s.
    pub update_period: Duration,
    /// How much errors count against an endpoint: 1.0 (see
    /// [`ReportWeighted`] for the formula).
    pub error_utilization_penalty: f64,
}

impl Default for ReportWeights {
    fn default() -> Self {
        Self {
            blackout_period: Duration::from_secs(10),
            expiration_period: Duration::from_secs(180),
            update_period: Duration::from_secs(1),
            error_utilization_penalty: 1.0,
        }
    }
}

/// Weighted round robin with weights from the endpoints' own load reports,
/// as gRPC's `weighted_round_robin` policy (gRFC A58) computes them.
///
/// Each endpoint's weight is `qps ÷ (utilization + (eps ÷ qps) × penalty)`,
/// from its [`ReportCell`](crate::endpoint::ReportCell) (ORCA's
/// `rps_fractional`, `eps`, and `application_utilization` or else
/// `cpu_utilization`; the `metrics` module's `OrcaLayer` fills them
/// from ORCA reports). A report with no queries or
/// no utilisation gives no weight. Weights are recomputed at most every
/// [`update_period`](ReportWeights::update_period), by the first pick after
/// it is due; an endpoint's weight is used only once it has reported for the
/// [`blackout_period`](ReportWeights::blackout_period), and dropped once its
/// last report is older than the
/// [`expiration_period`](ReportWeights::expiration_period). Candidates
/// without a usable weight get the mean of the others'. With fewer than two
/// endpoints with a weight, picks go round robin.
///
/// The weights are turned into an earliest-deadline-first schedule (each
/// endpoint's next deadline advances by `1 ÷ weight` when it is served) of
/// 32 slots per endpoint, which picks walk with one atomic counter.
///
/// # Cost
///
/// * **pick**: O(1) expected: one atomic increment and one `ArcSwap` load;
///   an endpoint that is not allowed passes its slot to the next one
///   (O(n) when most are not). Once per update period, one pick recomputes
///   the weights and the schedule: O(n log n), and it allocates.
/// * **prepare**: O(n): a fresh round-robin table.
///
/// # Weights
///
/// The configured weights are not used, except that weight 0 is never
/// picked.
///
/// # No endpoints, missing reports
///
/// With no allowed endpoint, `pick` returns `None`. Endpoints that report
/// nothing, or only stale reports, get the mean weight; with fewer than two
/// weighted endpoints the picker is a plain round robin.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_lb::pick::{ReportWeighted, ReportWeights};
///
/// let picker = ReportWeighted::new(ReportWeights {
///     blackout_period: Duration::from_secs(5),
///     ..ReportWeights::default()
/// });
/// # let _ = picker;
/// ```
pub struct ReportWeighted {
    settings: ReportWeights,
    rng: Rng,
    /// First report with a weight, per endpoint key hash (A58's
    /// `non_empty_since`). Only the pick that recomputes the weights takes
    /// it, with `try_lock`: no pick waits on it.
    since: Mutex<HashMap<u64, Instant>>,
}

/// The table of [`ReportWeighted`]: the current schedule of one endpoint
/// set.
pub struct ReportTable {
    len: usize,
    next: AtomicUsize,
    /// Milliseconds since `epoch` when the weights are next due.
    due_ms: AtomicU64,
    epoch: Instant,
    schedule: ArcSwapOption<Vec<u32>>,
}

impl fmt::Debug for ReportTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportTable")
            .field("len", &self.len)
            .field("weighted", &self.schedule.load().is_some())
            .finish()
    }
}

impl ReportTable {
    /// Whether picks follow report weights now (`false`: round robin).
    pub fn is_weighted(&self) -> bool {
        self.schedule.load().is_some()
    }
}

impl fmt::Debug for ReportWeighted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportWeighted")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Default for ReportWeighted {
    fn default() -> Self {
        Self::new(ReportWeights::default())
    }
}

impl ReportWeighted {
    /// A picker with `settings`; the starting point of the schedule comes
    /// from entropy, so that many clients do not move in step.
    #[must_use]
    pub fn new(settings: ReportWeights) -> Self {
        Self::from_rng(settings, Rng::from_entropy())
    }

    /// Like [`new`](Self::new), starting from `seed`, for reproducible tests.
    #[must_use]
    pub fn with_seed(settings: ReportWeights, seed: u64) -> Self {
        Self::from_rng(settings, Rng::from_seed(seed))
    }

    fn from_rng(settings: ReportWeights, rng: Rng) -> Self {
        let penalty = settings.error_utilization_penalty;
        Self {
            settings: ReportWeights {
                error_utilization_penalty: if penalty.is_finite() && penalty > 0.0 {
                    penalty
                } else {
                    0.0
                },
                ..settings
            },
            rng,
            since: Mutex::new(HashMap::new()),
        }
    }

    /// Recomputes the weights and the schedule if they are due and no other
    /// pick is at it.
    fn refresh<S: Endpoint>(&self, table: &ReportTable, endpoints: &Candidates<'_, S>) {
        let now = Instant::now();
        let now_ms = now.saturating_duration_since(table.epoch).as_millis() as u64;
        let due = table.due_ms.load(Ordering::Relaxed);
        if now_ms < due {
            return;
        }
        let next = now_ms.saturating_add(self.settings.update_period.as_millis().max(1) as u64);
        if table
            .due_ms
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let Ok(mut since) = self.since.try_lock() else {
            return;
        };
        let weights = self.weights(endpoints, now, &mut since);
        table.schedule.store(schedule(&weights).map(Arc::new));
    }

    fn weights<S: Endpoint>(
        &self,
        endpoints: &Candidates<'_, S>,
        now: Instant,
        since: &mut HashMap<u64, Instant>,
    ) -> Vec<f64> {
        let s = &self.settings;
        let mut weights = Vec::with_capacity(endpoints.len());
        for (meta, service) in endpoints.metas().iter().zip(endpoints.services()) {
            let facts = service.report().and_then(|m| m.last_at(now));
            let fresh = facts.filter(|f| f.age < s.expiration_period);
            let weight = fresh.map_or(0.0, |f| {
                let (qps, util, eps) =
                    (f64::from(f.qps), f64::from(f.utilization), f64::from(f.eps));
                if qps > 0.0 && util > 0.0 {
                    qps / (util + eps / qps * s.error_utilization_penalty)
                } else {
                    0.0
                }
            });
            let weight = if weight.is_finite() && weight > 0.0 {
                // First seen at this refresh: the report arrived `age` ago,
                // which dates the start of the blackout to within one
                // update period.
                let reported = fresh.map_or(now, |f| now.checked_sub(f.age).unwrap_or(now));
                let start = *since.entry(meta.key_hash()).or_insert(reported);
                if now.saturating_duration_since(start) < s.blackout_period {
                    0.0
                } else {
                    weight
                }
            } else {
                if fresh.is_none() {
                    // Expired or never reported: the blackout starts again.
                    since.remove(&meta.key_hash());
                }
                0.0
            };
            weights.push(weight);
        }
        // Forget endpoints that left the set.
        if since.len() > endpoints.len() * 2 {
            let keys: std::collections::HashSet<u64> = endpoints
                .metas()
                .iter()
                .map(EndpointInfo::key_hash)
                .collect();
            since.retain(|k, _| keys.contains(k));
        }
        weights
    }
}

/// The EDF schedule of `weights`, or `None` (round robin) when fewer than
/// two are positive.
fn schedule(weights: &[f64]) -> Option<Vec<u32>> {
    let positive: Vec<f64> = weights.iter().copied().filter(|w| *w > 0.0).collect();
    if positive.len() < 2 || weights.len() > u32::MAX as usize {
        return None;
    }
    let mean = positive.iter().sum::<f64>() / positive.len() as f64;
    let slots = (weights.len() * 32).min(1 << 16).max(weights.len());
    // Deadlines in fixed point, so that the heap orders integers; ties go
    // to the lower index.
    let mut heap: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::with_capacity(weights.len());
    let period: Vec<f64> = weights
        .iter()
        .map(|&w| 1.0 / if w > 0.0 { w } else { mean })
        .collect();
    let scale = 1e6 / period.iter().copied().fold(f64::INFINITY, f64::min);
    let mut deadline: Vec<f64> = period.clone();
    for (i, d) in deadline.iter().enumerate() {
        heap.push(Reverse(((d * scale) as u64, i as u32)));
    }
    let mut order = Vec::with_capacity(slots);
    while order.len() < slots {
        let Some(Reverse((_, i))) = heap.pop() else {
            break;
        };
        order.push(i);
        let i = i as usize;
        deadline[i] += period[i];
        heap.push(Reverse(((deadline[i] * scale) as u64, i as u32)));
    }
    Some(order)
}

impl Prepare for ReportWeighted {
    type Table = ReportTable;

    fn prepare(&self, endpoints: &[EndpointInfo]) -> ReportTable {
        ReportTable {
            len: endpoints.len(),
            next: AtomicUsize::new(self.rng.next_u64() as usize),
            due_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            schedule: ArcSwapOption::empty(),
        }
    }
}

impl<Req, S: Endpoint> Pick<Req, S> for ReportWeighted {
    fn pick(
        &self,
        table: &ReportTable,
        endpoints: &Candidates<'_, S>,
        _req: &Req,
    ) -> Option<usize> {
        let n = endpoints.len().min(table.len);
        if n == 0 {
            return None;
        }
        self.refresh(table, endpoints);
        let turn = table.next.fetch_add(1, Ordering::Relaxed);
        let schedule = table.schedule.load();
        match schedule.as_deref() {
            Some(order) if !order.is_empty() => {
                for step in 0..order.len() {
                    let i = order[(turn.wrapping_add(step)) % order.len()] as usize;
                    if endpoints.is_allowed(i) {
                        return Some(i);
                    }
                }
                None
            }
            _ => (0..n)
                .map(|step| turn.wrapping_add(step) % n)
                .find(|&i| endpoints.is_allowed(i)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{Report, ReportCell, Weighted};

    fn report(metrics: &ReportCell, qps: f32, utilization: f32, eps: f32) {
        metrics.record(&Report {
            qps: Some(qps),
            utilization: Some(utilization),
            eps: Some(eps),
            ..Report::default()
        });
    }

    fn shares(
        picker: &ReportWeighted,
        table: &ReportTable,
        endpoints: &Candidates<'_, Weighted<()>>,
        n: usize,
    ) -> Vec<f64> {
        let mut seen = vec![0usize; endpoints.len()];
        for _ in 0..n {
            seen[picker.pick(table, endpoints, &()).unwrap()] += 1;
        }
        seen.iter().map(|&c| c as f64 / n as f64).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn weights_follow_reports_after_the_blackout() {
        let metrics: Vec<ReportCell> = (0..2).map(|_| ReportCell::new()).collect();
        let services: Vec<Weighted<()>> = metrics
            .iter()
            .map(|m| Weighted::new((), 1).with_report(m.clone()))
            .collect();
        let metas = [EndpointInfo::new(1, 1), EndpointInfo::new(2, 1)];
        let endpoints = Candidates::new(&metas, &services);
        let picker = ReportWeighted::with_seed(ReportWeights::default(), 1);
        let table = picker.prepare(&metas);

        let tick = |secs| async move { tokio::time::advance(Duration::from_secs(secs)).await };
        // Same utilisation, three times the queries: three times the capacity.
        for _ in 0..5 {
            report(&metrics[0], 300.0, 0.5, 0.0);
            report(&metrics[1], 100.0, 0.5, 0.0);
            let s = shares(&picker, &table, &endpoints, 1000);
            assert!(
                (s[0] - 0.5).abs() < 0.01,
                "round robin in the blackout: {s:?}"
            );
            tick(2).await;
        }
        report(&metrics[0], 300.0, 0.5, 0.0);
        report(&metrics[1], 100.0, 0.5, 0.0);
        tick(1).await;
        let _ = shares(&picker, &table, &endpoints, 1);
        assert!(table.is_weighted());
        let s = shares(&picker, &table, &endpoints, 3200);
        assert!((s[0] - 0.75).abs() < 0.02, "{s:?}");

        // Reports stop: after the expiry the picker is round robin again.
        tick(181).await;
        let _ = shares(&picker, &table, &endpoints, 1);
        assert!(!table.is_weighted());
    }

    #[tokio::test(start_paused = true)]
    async fn errors_cost_weight_and_silent_endpoints_get_the_mean() {
        let metrics: Vec<ReportCell> = (0..3).map(|_| ReportCell::new()).collect();
        let services: Vec<Weighted<()>> = metrics
            .iter()
            .map(|m| Weighted::new((), 1).with_report(m.clone()))
            .collect();
        let metas = [
            EndpointInfo::new(1, 1),
            EndpointInfo::new(2, 1),
            EndpointInfo::new(3, 1),
        ];
        let endpoints = Candidates::new(&metas, &services);
        let settings = ReportWeights {
            blackout_period: Duration::ZERO,
            ..ReportWeights::default()
        };
        let picker = ReportWeighted::with_seed(settings, 2);
        let table = picker.prepare(&metas);
        // 0: 100 / (0.5 + 50/100) = 100; 1: 100 / 0.5 = 200; 2: no report → mean 150.
        report(&metrics[0], 100.0, 0.5, 50.0);
        report(&metrics[1], 100.0, 0.5, 0.0);
        let s = shares(&picker, &table, &endpoints, 9600);
        let expect = [100.0 / 450.0, 200.0 / 450.0, 150.0 / 450.0];
        for (got, want) in s.iter().zip(expect) {
            assert!((got - want).abs() < 0.02, "{s:?} vs {expect:?}");
        }
    }

    #[test]
    fn fewer_than_two_weights_is_round_robin_and_weight_zero_is_skipped() {
        assert_eq!(schedule(&[0.0, 5.0, 0.0]), None);
        let order = schedule(&[1.0, 3.0]).unwrap();
        assert_eq!(
            order.iter().filter(|&&i| i == 1).count() * 4,
            order.len() * 3
        );
        // Smooth: the heavier endpoint never waits more than two slots.
        assert!(order.windows(3).all(|w| w.contains(&1)));

        let services = [Weighted::new((), 1), Weighted::new((), 1)];
        let metas = [EndpointInfo::new(1, 0), EndpointInfo::new(2, 1)];
        let endpoints = Candidates::new(&metas, &services);
        let picker = ReportWeighted::with_seed(ReportWeights::default(), 3);
        let table = picker.prepare(&metas);
        for _ in 0..10 {
            assert_eq!(picker.pick(&table, &endpoints, &()), Some(1));
        }
        let none: [Weighted<()>; 0] = [];
        assert_eq!(
            picker.pick(&picker.prepare(&[]), &Candidates::new(&[], &none), &()),
            None
        );
    }
}
