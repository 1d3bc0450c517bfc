//! One scoring pass: read each eligible endpoint once, normalise every
//! scorer over the eligible set, weigh, choose; and the saturation check
//! before it.

use tokio::time::Instant;
use tower::load::Load;

use super::config::Objective;
use super::*;
use crate::endpoint::report::clock_ms;
use crate::endpoint::{ClientLoad, Endpoint};
use crate::error::Saturated;
use crate::util::LocalRng;

/// A scorer's range over the eligible endpoints: `(min, max)`.
#[derive(Clone, Copy)]
struct Range {
    min: f32,
    max: f32,
}

impl Range {
    const EMPTY: Self = Self {
        min: f32::INFINITY,
        max: f32::NEG_INFINITY,
    };

    #[inline]
    fn widen(&mut self, v: f32) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// `(max, 1 ÷ (max − min))`, so that scoring multiplies: low is good,
    /// `(max − v) ÷ (max − min)`, and 1 for all when the range is empty.
    #[inline]
    fn scale(self) -> (f32, f32) {
        let span = self.max - self.min;
        if span > f32::EPSILON {
            (self.max, 1.0 / span)
        } else {
            (0.0, 0.0)
        }
    }
}

#[inline]
fn low_is_good(v: f32, (max, inverse): (f32, f32)) -> f32 {
    if inverse == 0.0 {
        1.0
    } else {
        (max - v) * inverse
    }
}

/// What the pick reads of one eligible endpoint, once.
#[derive(Clone, Copy, Debug)]
pub(super) struct Raw {
    pub(super) index: u32,
    /// The reported queue, or the client's requests in flight when stale.
    pub(super) queue: f32,
    /// The reported KV use; negative when the report is stale (or absent).
    kv: f32,
    pub(super) in_flight: f32,
    /// Latency in nanoseconds; negative when not measured (or not wanted).
    latency: f32,
    adapter_loaded: bool,
    /// The predicted time to first token, in nanoseconds (TTFT objective).
    pub(super) cost: f64,
}

thread_local! {
    /// Each thread's scratch list of eligible endpoints: grown to the
    /// largest set this thread has picked from, then reused, so a pick
    /// reads every endpoint once and allocates nothing after the first.
    static SCRATCH: std::cell::RefCell<Vec<Raw>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl<Req, S> Scored<Req, S>
where
    Req: ScoredRequest + 'static,
    S: Endpoint + Load + 'static,
    S::Metric: ClientLoad,
{
    /// The endpoint's measures if it is eligible for the request.
    #[inline(always)]
    fn gather(
        &self,
        endpoints: &Candidates<'_, S>,
        i: usize,
        request: &Req,
        facts: &RequestInfoRef<'_>,
        now_ms: u64,
    ) -> Option<Raw> {
        if !endpoints.is_allowed(i) {
            return None;
        }
        let service = &endpoints.services()[i];
        let metrics = service.report();
        let mut adapter_loaded = true;
        if facts.model.is_some() || facts.adapter.is_some() {
            if let Some(metrics) = metrics {
                let extra = metrics.details();
                if facts.model.is_some_and(|m| !extra.serves(m)) {
                    return None;
                }
                if let Some(adapter) = facts.adapter {
                    adapter_loaded = extra.has_adapter(adapter);
                    if !adapter_loaded && !extra.has_adapter_slot() {
                        return None;
                    }
                }
            }
        }
        if let Some(filter) = &self.filter {
            if !filter(request, service) {
                return None;
            }
        }
        let load = service.load();
        // Through u32: an unsigned 64-bit conversion to float costs branches.
        let in_flight = load.in_flight().min(u32::MAX as usize) as u32 as f32;
        let latency = if self.weights.latency > 0.0 {
            load.latency().map_or(-1.0, |d| d.as_nanos() as f32)
        } else {
            -1.0
        };
        let (queue, kv) = match metrics.and_then(|m| Some((m, m.fresh_load(now_ms)?))) {
            Some((m, (queue, running, kv)))
                if !m.contradicted(queue, running, in_flight as u64) =>
            {
                (queue as f32, kv)
            }
            Some((_, (_, _, kv))) => (in_flight, kv),
            None => (in_flight, -1.0),
        };
        Some(Raw {
            index: i as u32,
            queue,
            kv,
            in_flight,
            latency,
            adapter_loaded,
            cost: 0.0,
        })
    }

    /// Saturated: a fresh report over a limit (unless it contradicts what
    /// the client sees: `ReportCell::contradicted`), or, when stale, more
    /// requests in flight than the queue limit.
    #[inline]
    fn saturated(&self, raw: &Raw) -> bool {
        let limit = &self.saturation;
        raw.queue > limit.max_queue as f32 || raw.kv > limit.max_kv_cache
    }
}

impl<Req, S> Pick<Req, S> for Scored<Req, S>
where
    Req: ScoredRequest + 'static,
    S: Endpoint + Load + 'static,
    S::Metric: ClientLoad,
{
    fn pick(&self, table: &(), endpoints: &Candidates<'_, S>, req: &Req) -> Option<usize> {
        // Without admission: a request that would be shed is scored instead.
        self.choose(table, endpoints, req, false).ok().flatten()
    }

    fn pick_or_shed(
        &self,
        table: &(),
        endpoints: &Candidates<'_, S>,
        req: &Req,
    ) -> Result<Option<usize>, Saturated> {
        self.choose(table, endpoints, req, true)
    }
}

impl<Req, S> Scored<Req, S>
where
    Req: ScoredRequest + 'static,
    S: Endpoint + Load + 'static,
    S::Metric: ClientLoad,
{
    fn choose(
        &self,
        _table: &(),
        endpoints: &Candidates<'_, S>,
        request: &Req,
        admit: bool,
    ) -> Result<Option<usize>, Saturated> {
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                scratch.clear();
                self.choose_in(endpoints, request, admit, &mut scratch)
            }
            // A scorer or filter that picks from inside a pick: a list of
            // its own (this allocates).
            Err(_) => self.choose_in(endpoints, request, admit, &mut Vec::new()),
        })
    }

    fn choose_in(
        &self,
        endpoints: &Candidates<'_, S>,
        request: &Req,
        admit: bool,
        eligible: &mut Vec<Raw>,
    ) -> Result<Option<usize>, Saturated> {
        let facts = request.info();
        let now = Instant::now();
        let now_ms = clock_ms(now);
        let (mut queue, mut in_flight, mut latency) = (Range::EMPTY, Range::EMPTY, Range::EMPTY);
        let mut saturated = 0usize;

        // Pass 1, over the endpoints: eligibility, saturation, ranges.
        for i in 0..endpoints.len() {
            let Some(raw) = self.gather(endpoints, i, request, &facts, now_ms) else {
                continue;
            };
            saturated += usize::from(self.saturated(&raw));
            in_flight.widen(raw.in_flight);
            queue.widen(raw.queue);
            if raw.latency >= 0.0 {
                latency.widen(raw.latency);
            }
            eligible.push(raw);
        }
        if eligible.is_empty() {
            return Ok(None);
        }
        if admit && saturated == eligible.len() && facts.priority < self.saturation.shed_below {
            return Err(Saturated::new(
                eligible.len(),
                facts.priority,
                self.saturation.retry_after,
            ));
        }

        if let Objective::Ttft { relative, absolute } = self.objective {
            let picked =
                self.choose_least_ttft(endpoints, request, eligible, now, relative, absolute);
            return Ok(Some(self.before_send(endpoints, request, picked)));
        }
        // Pass 2, over the eligible: scores and the choice.
        let w = &self.weights;
        let (wq, wkv, wf, wl, wa) = (
            w.queue as f32,
            w.kv_cache as f32,
            w.in_flight as f32,
            w.latency as f32,
            w.adapter as f32,
        );
        let fleet_in_flight = (in_flight.min as usize, in_flight.max as usize);
        let (queue, in_flight, latency) = (queue.scale(), in_flight.scale(), latency.scale());
        let wants_adapter = facts.adapter.is_some();
        let mut rng: Option<LocalRng> = None;
        let mut best = (f32::NEG_INFINITY, usize::MAX);
        let mut ties = 0u64;
        let mut total = 0.0f64;
        for raw in eligible.iter() {
            let flight_score = low_is_good(raw.in_flight, in_flight);
            let kv_score = if raw.kv >= 0.0 {
                1.0 - raw.kv
            } else {
                flight_score
            };
            let mut score = wq * low_is_good(raw.queue, queue) + wkv * kv_score + wf * flight_score;
            if wl > 0.0 {
                let l = if raw.latency >= 0.0 {
                    low_is_good(raw.latency, latency)
                } else {
                    1.0
                };
                score += wl * l;
            }
            if wants_adapter && raw.adapter_loaded {
                score += wa;
            }
            let i = raw.index as usize;
            if !self.scorers.is_empty() {
                score += self.user_scores(endpoints, i, request, raw, now, fleet_in_flight);
            }
            match self.choice {
                Choice::Best => {
                    if score > best.0 {
                        best = (score, i);
                        ties = 1;
                    } else if score == best.0 {
                        // Reservoir sampling: each tied endpoint ends up
                        // chosen with probability 1 / ties.
                        ties += 1;
                        let rng = rng.get_or_insert_with(|| self.rng.local());
                        if rng.below(ties as usize) == 0 {
                            best.1 = i;
                        }
                    }
                }
                Choice::Weighted => {
                    // Weighted reservoir: replace with probability s / Σs.
                    // A tiny floor keeps all-zero scores a uniform choice.
                    let s = f64::from(score).max(1e-9);
                    total += s;
                    let rng = rng.get_or_insert_with(|| self.rng.local());
                    let draw = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    if draw * total < s {
                        best = (score, i);
                    }
                }
            }
        }
        let picked = best.1;
        if picked == usize::MAX {
            return Ok(None);
        }
        Ok(Some(self.before_send(endpoints, request, picked)))
    }

    /// Tells the hooks where the request goes; returns `picked`.
    fn before_send(&self, endpoints: &Candidates<'_, S>, request: &Req, picked: usize) -> usize {
        if !self.hooks.is_empty() {
            let meta = endpoints.metas()[picked];
            for hook in &self.hooks {
                hook.before_send(request, meta);
            }
        }
        picked
    }

    /// The weighted sum of the user scorers for one endpoint.
    fn user_scores(
        &self,
        endpoints: &Candidates<'_, S>,
        i: usize,
        request: &Req,
        raw: &Raw,
        now: Instant,
        fleet_in_flight: (usize, usize),
    ) -> f32 {
        let service = &endpoints.services()[i];
        let candidate = Candidate {
            index: i,
            meta: endpoints.metas()[i],
            service,
            report: service.report().and_then(|m| m.current_at(now)),
            in_flight: raw.in_flight as usize,
            fleet_in_flight,
            adapter_loaded: raw.adapter_loaded,
        };
        let mut sum = 0.0;
        for (weight, scorer) in &self.scorers {
            let s = scorer.score(request, &candidate);
            let s = if s.is_nan() { 0.0 } else { s.clamp(0.0, 1.0) };
            sum += weight * s;
        }
        sum as f32
    }
}
