//! Zone preference: keep requests in the caller's zone, by Envoy's rule.

use std::fmt;
use std::sync::Arc;

use super::key::zone_hash;
use super::{Candidates, EndpointInfo, Pick, Prepare};
use crate::util::Rng;

/// A wrapper around any picker that keeps requests in the caller's zone
/// while that zone has the capacity for them.
///
/// Endpoints say their zone through
/// [`Endpoint::zone`](crate::endpoint::Endpoint::zone) (the Kubernetes and
/// etcd sources and the backends file's `zone=` field set it). The rule is
/// Envoy's zone-aware routing:
///
/// * Let *u* be the local zone's share of the upstream's capacity (the
///   weight of its endpoints over the weight of all endpoints) and *c* the
///   local zone's share of the callers ([`caller_share`](Self::caller_share)).
/// * If *u* ≥ *c*, every request stays in the local zone: the local
///   endpoints can take what the local callers send.
/// * Otherwise a request stays local with probability *u* ÷ *c* and the rest
///   spills to the endpoints of the other zones, so that every endpoint
///   gets its fair part of the traffic of all callers together.
/// * When no local endpoint may take the request (all drained, unhealthy,
///   or tried by a retry), it spills whole; when no other endpoint may, it
///   stays local. Endpoints without a zone count as other zones.
///
/// Without a caller share the wrapper takes *c* = 0: every request stays
/// local while a local endpoint may take it (a strict preference).
///
/// The inner picker chooses within the chosen zone group, so its own rule
/// (least connections, consistent hashing, …) applies among the local
/// endpoints, and separately among the others.
///
/// # Cost
///
/// The inner picker's [`prepare`](Prepare::prepare) runs three times (all
/// endpoints, local ones, other ones) and the table holds two extra copies of
/// the endpoints' [`EndpointInfo`]. A pick costs one inner pick (two when the chosen
/// group has no allowed endpoint) and one random draw; when endpoints can be
/// ruled out per request (health checks, retry exclusions) it also sums the
/// allowed weight of each group, O(n), so that the shares follow the healthy
/// capacity rather than the configured one.
///
/// # Weights
///
/// Shares are shares of weight: a zone with endpoints of weight 3 and 1
/// holds four units of capacity. Weight 0 (draining) counts for nothing.
///
/// # No endpoints
///
/// With no allowed endpoint in any zone the pick returns `None`, like the
/// inner picker. With no local endpoint at all the wrapper is the inner
/// picker.
///
/// # Example
///
/// ```
/// use tower_lb::pick::{Candidates, EndpointInfo, Pick, Prepare, RoundRobin, ZonePreference};
///
/// let picker = ZonePreference::new(RoundRobin::new(), "zone-a").with_seed(7);
/// let metas = [
///     EndpointInfo::new(1, 1).with_zone("zone-a"),
///     EndpointInfo::new(2, 1).with_zone("zone-b"),
/// ];
/// let table = picker.prepare(&metas);
/// let services = [(), ()];
/// let endpoints = Candidates::new(&metas, &services);
/// // No caller share: everything stays in zone-a.
/// for _ in 0..10 {
///     assert_eq!(picker.pick(&table, &endpoints, &()), Some(0));
/// }
/// ```
pub struct ZonePreference<P> {
    inner: P,
    local: u64,
    local_name: Arc<str>,
    caller_share: f64,
    rng: Rng,
}

impl<P> ZonePreference<P> {
    /// Prefers the endpoints of `local_zone` (this process's zone), choosing
    /// among them with `inner`.
    pub fn new(inner: P, local_zone: impl Into<Arc<str>>) -> Self {
        let local_name = local_zone.into();
        Self {
            inner,
            local: zone_hash(&local_name),
            local_name,
            caller_share: 0.0,
            rng: Rng::from_entropy(),
        }
    }

    /// The local zone's share of the upstream's callers, from 0 to 1 (a
    /// value out of range or not finite is clamped; NaN counts as 0). With
    /// 10 callers of which 4 run in the local zone, the share is 0.4.
    #[must_use]
    pub fn caller_share(mut self, share: f64) -> Self {
        self.caller_share = if share.is_nan() {
            0.0
        } else {
            share.clamp(0.0, 1.0)
        };
        self
    }

    /// The caller share computed from how many callers run in each zone;
    /// zones not named hold none. An empty or all-zero list gives share 0.
    #[must_use]
    pub fn callers<'a>(self, per_zone: impl IntoIterator<Item = (&'a str, u64)>) -> Self {
        let mut local = 0u128;
        let mut total = 0u128;
        for (zone, count) in per_zone {
            total += u128::from(count);
            if zone_hash(zone) == self.local {
                local += u128::from(count);
            }
        }
        let share = if total == 0 {
            0.0
        } else {
            local as f64 / total as f64
        };
        self.caller_share(share)
    }

    /// The same picker with a seeded random source for the spill draw, so
    /// tests repeat.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = Rng::from_seed(seed);
        self
    }

    /// The wrapped picker.
    pub fn get_ref(&self) -> &P {
        &self.inner
    }
}

impl<P: fmt::Debug> fmt::Debug for ZonePreference<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZonePreference")
            .field("inner", &self.inner)
            .field("local_zone", &self.local_name)
            .field("caller_share", &self.caller_share)
            .finish()
    }
}

/// The probability that a request stays in the local zone, by Envoy's rule:
/// 1 when the local zone's share of the upstream's capacity
/// (`local_weight / total_weight`) is at least the local zone's share of
/// the callers, else the ratio of the two shares.
pub(crate) fn keep_local(local_weight: u64, total_weight: u64, caller_share: f64) -> f64 {
    if total_weight == 0 || local_weight == 0 {
        return 0.0;
    }
    let upstream_share = local_weight as f64 / total_weight as f64;
    if upstream_share >= caller_share {
        1.0
    } else {
        upstream_share / caller_share
    }
}

/// A [`ZonePreference`]'s table: the inner picker's tables over all
/// endpoints, over the local ones and over the others.
#[derive(Debug)]
pub struct ZoneTable<T> {
    all: T,
    local: T,
    other: T,
    /// The endpoints with the weights of other zones set to 0.
    local_metas: Vec<EndpointInfo>,
    /// The endpoints with the local zone's weights set to 0.
    other_metas: Vec<EndpointInfo>,
    local_weight: u64,
    total_weight: u64,
}

impl<P: Prepare> Prepare for ZonePreference<P> {
    type Table = ZoneTable<P::Table>;

    fn prepare(&self, endpoints: &[EndpointInfo]) -> Self::Table {
        let is_local = |meta: &EndpointInfo| meta.zone == self.local;
        let zeroed = |keep: &dyn Fn(&EndpointInfo) -> bool| -> Vec<EndpointInfo> {
            endpoints
                .iter()
                .map(|meta| {
                    let mut meta = *meta;
                    if !keep(&meta) {
                        meta.weight = 0;
                    }
                    meta
                })
                .collect()
        };
        let local_metas = zeroed(&is_local);
        let other_metas = zeroed(&|meta| !is_local(meta));
        let local_weight = local_metas.iter().map(|m| u64::from(m.weight)).sum();
        let total_weight = endpoints.iter().map(|m| u64::from(m.weight)).sum();
        ZoneTable {
            all: self.inner.prepare(endpoints),
            local: self.inner.prepare(&local_metas),
            other: self.inner.prepare(&other_metas),
            local_metas,
            other_metas,
            local_weight,
            total_weight,
        }
    }
}

impl<P> ZonePreference<P> {
    /// The zone rule around `pick`, the inner picker's `pick` or
    /// `pick_or_shed`.
    fn choose<T, S, E>(
        &self,
        table: &ZoneTable<T>,
        endpoints: &Candidates<'_, S>,
        pick: impl Fn(&T, &Candidates<'_, S>) -> Result<Option<usize>, E>,
    ) -> Result<Option<usize>, E> {
        if table.local_weight == 0
            || table.local_weight == table.total_weight
            || table.local_metas.len() != endpoints.len()
        {
            // One group only, or a table from another set than the
            // endpoints (a picker used by hand): nothing to prefer.
            return pick(&table.all, endpoints);
        }
        let (local_weight, total_weight) = if endpoints.has_exclusions() {
            allowed_weights(endpoints, &table.local_metas)
        } else {
            (table.local_weight, table.total_weight)
        };
        let keep = keep_local(local_weight, total_weight, self.caller_share);
        let stay = keep >= 1.0 || (keep > 0.0 && draw(&self.rng) < keep);
        let view = |metas| Candidates {
            metas,
            ..*endpoints
        };
        let (first, first_metas, second, second_metas) = if stay {
            (
                &table.local,
                &table.local_metas,
                &table.other,
                &table.other_metas,
            )
        } else {
            (
                &table.other,
                &table.other_metas,
                &table.local,
                &table.local_metas,
            )
        };
        match pick(first, &view(first_metas))? {
            Some(i) => Ok(Some(i)),
            None => pick(second, &view(second_metas)),
        }
    }
}

impl<Req, S, P: Pick<Req, S>> Pick<Req, S> for ZonePreference<P> {
    fn pick(&self, table: &Self::Table, endpoints: &Candidates<'_, S>, req: &Req) -> Option<usize> {
        let pick = |table: &P::Table, endpoints: &Candidates<'_, S>| {
            Ok::<_, std::convert::Infallible>(self.inner.pick(table, endpoints, req))
        };
        match self.choose(table, endpoints, pick) {
            Ok(picked) => picked,
            Err(never) => match never {},
        }
    }

    /// The inner picker's shedding applies within the chosen zone group.
    fn pick_or_shed(
        &self,
        table: &Self::Table,
        endpoints: &Candidates<'_, S>,
        req: &Req,
    ) -> Result<Option<usize>, crate::error::Saturated> {
        self.choose(table, endpoints, |table, endpoints| {
            self.inner.pick_or_shed(table, endpoints, req)
        })
    }
}

/// The allowed weight of the local group and of all endpoints, O(n).
fn allowed_weights<S>(endpoints: &Candidates<'_, S>, local_metas: &[EndpointInfo]) -> (u64, u64) {
    let mut local = 0u64;
    let mut total = 0u64;
    for (i, meta) in endpoints.metas.iter().enumerate() {
        if endpoints.is_allowed(i) {
            let weight = u64::from(meta.weight);
            total += weight;
            if local_metas.get(i).is_some_and(|m| m.weight > 0) {
                local += weight;
            }
        }
    }
    (local, total)
}

/// A uniform draw in [0, 1).
fn draw(rng: &Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::pick::{LeastConnections, P2c, RoundRobin};

    fn metas(zones: &[(&str, u32)]) -> Vec<EndpointInfo> {
        zones
            .iter()
            .enumerate()
            .map(|(i, &(zone, weight))| {
                let meta = EndpointInfo::new(i as u64 + 1, weight);
                if zone.is_empty() {
                    meta
                } else {
                    meta.with_zone(zone)
                }
            })
            .collect()
    }

    /// An endpoint that is up or down, with no load.
    struct Up(bool);

    impl tower::load::Load for Up {
        type Metric = u32;
        fn load(&self) -> u32 {
            0
        }
    }

    /// How many of `n` picks land on each endpoint.
    fn tally<P: Pick<(), Up>>(
        picker: &P,
        metas: &[EndpointInfo],
        up: &[bool],
        n: usize,
    ) -> Vec<usize> {
        let table = picker.prepare(metas);
        let services: Vec<Up> = up.iter().map(|&up| Up(up)).collect();
        let endpoints = Candidates::new(metas, &services).with_availability(|up: &Up| up.0);
        let mut counts = vec![0; metas.len()];
        for _ in 0..n {
            if let Some(i) = picker.pick(&table, &endpoints, &()) {
                counts[i] += 1;
            }
        }
        counts
    }

    #[test]
    fn rule_matches_envoy() {
        // Upstream share at least the caller share: all local.
        assert_eq!(keep_local(5, 10, 0.5), 1.0);
        assert_eq!(keep_local(6, 10, 0.5), 1.0);
        assert_eq!(keep_local(1, 10, 0.0), 1.0);
        // Less: the ratio of the shares stays.
        assert!((keep_local(2, 10, 0.4) - 0.5).abs() < 1e-12);
        // No local capacity: nothing stays.
        assert_eq!(keep_local(0, 10, 0.4), 0.0);
        assert_eq!(keep_local(0, 0, 0.4), 0.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, rng_algorithm: prop::test_runner::RngAlgorithm::ChaCha, ..ProptestConfig::default() })]

        /// Over all callers, the rule sends each zone the traffic its capacity
        /// is worth: the local callers' kept traffic never exceeds the local
        /// zone's share of the whole.
        #[test]
        fn kept_traffic_never_exceeds_capacity(local in 0u64..1000, other in 0u64..1000, caller in 0.0f64..=1.0) {
            let total = local + other;
            let keep = keep_local(local, total, caller);
            prop_assert!((0.0..=1.0).contains(&keep));
            if total > 0 && local > 0 {
                let upstream = local as f64 / total as f64;
                if upstream >= caller {
                    prop_assert_eq!(keep, 1.0);
                } else {
                    // Local callers send `caller` of all traffic and keep
                    // `keep` of it: exactly the local capacity.
                    prop_assert!((caller * keep - upstream).abs() < 1e-9);
                }
            } else {
                prop_assert_eq!(keep, 0.0);
            }
        }
    }

    #[test]
    fn strict_preference_without_caller_share() {
        let metas = metas(&[("a", 1), ("b", 1), ("a", 1), ("", 1)]);
        let picker = ZonePreference::new(RoundRobin::new(), "a").with_seed(1);
        let counts = tally(&picker, &metas, &[true; 4], 1000);
        assert_eq!(counts[1] + counts[3], 0, "{counts:?}");
        assert_eq!(counts[0], 500);
        assert_eq!(counts[2], 500);
    }

    #[test]
    fn proportional_spill_when_local_is_small() {
        // Local zone: 1 of 4 units of capacity; half of the callers are local.
        // Keep 0.25 / 0.5 = half the traffic local.
        let metas = metas(&[("a", 1), ("b", 1), ("b", 1), ("c", 1)]);
        let picker = ZonePreference::new(RoundRobin::new(), "a")
            .caller_share(0.5)
            .with_seed(42);
        let counts = tally(&picker, &metas, &[true; 4], 20_000);
        let local = counts[0] as f64 / 20_000.0;
        assert!((local - 0.5).abs() < 0.02, "{counts:?}");
        // The spilled half spreads over the other zones.
        assert!(counts[1] > 3000 && counts[2] > 3000 && counts[3] > 3000);
    }

    #[test]
    fn callers_by_zone() {
        let picker = ZonePreference::new(RoundRobin::new(), "a").callers([("a", 1), ("b", 3)]);
        assert_eq!(picker.caller_share, 0.25);
        let none = ZonePreference::new(RoundRobin::new(), "a").callers([]);
        assert_eq!(none.caller_share, 0.0);
        assert_eq!(
            ZonePreference::new((), "a")
                .caller_share(f64::NAN)
                .caller_share,
            0.0
        );
        assert_eq!(
            ZonePreference::new((), "a").caller_share(7.0).caller_share,
            1.0
        );
    }

    #[test]
    fn spills_when_local_zone_lacks_healthy_capacity() {
        let metas = metas(&[("a", 1), ("a", 1), ("b", 1), ("b", 1)]);
        let picker = ZonePreference::new(RoundRobin::new(), "a")
            .caller_share(0.5)
            .with_seed(3);
        // Everything healthy: local share 0.5 ≥ 0.5, all local.
        let counts = tally(&picker, &metas, &[true; 4], 1000);
        assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
        // One local endpoint down: healthy local share 1/3 < 0.5, so two thirds
        // stay and a third spills.
        let counts = tally(&picker, &metas, &[true, false, true, true], 30_000);
        assert_eq!(counts[1], 0);
        let local = counts[0] as f64 / 30_000.0;
        assert!((local - 2.0 / 3.0).abs() < 0.02, "{counts:?}");
        // All local endpoints down: everything spills.
        let counts = tally(&picker, &metas, &[false, false, true, true], 1000);
        assert_eq!(counts[0] + counts[1], 0);
        assert_eq!(counts[2] + counts[3], 1000);
        // Drained local endpoints (weight 0) count for nothing either.
        let drained = self::metas(&[("a", 0), ("a", 0), ("b", 1), ("b", 1)]);
        let counts = tally(&picker, &drained, &[true; 4], 100);
        assert_eq!(counts[2] + counts[3], 100);
        // Nothing allowed anywhere: no pick.
        let counts = tally(&picker, &metas, &[false; 4], 10);
        assert_eq!(counts.iter().sum::<usize>(), 0);
    }

    #[test]
    fn stays_local_when_other_zones_are_down() {
        let metas = metas(&[("a", 1), ("b", 3)]);
        let picker = ZonePreference::new(RoundRobin::new(), "a")
            .caller_share(1.0)
            .with_seed(5);
        let counts = tally(&picker, &metas, &[true, false], 1000);
        assert_eq!(counts, [1000, 0]);
    }

    #[test]
    fn wraps_any_picker() {
        let metas = metas(&[("a", 2), ("b", 1), ("a", 1)]);
        let up = [true; 3];
        for counts in [
            tally(
                &ZonePreference::new(P2c::with_seed(1), "a").with_seed(1),
                &metas,
                &up,
                500,
            ),
            tally(
                &ZonePreference::new(LeastConnections::with_seed(1), "a").with_seed(1),
                &metas,
                &up,
                500,
            ),
        ] {
            assert_eq!(counts[1], 0, "{counts:?}");
            assert_eq!(counts[0] + counts[2], 500);
        }
    }
}
