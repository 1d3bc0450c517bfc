//! The pickers compared, all driven through the crate's `Prepare`/`Pick`
//! traits, and the ideal reference they are measured against.

use std::rc::Rc;

use tower_lb::pick::{
    llm::Scored, Candidates, ConsistentHash, EndpointInfo, IpHash, LeastConnections, Maglev, P2c,
    Pick, Prepare, RoundRobin, WeightedRoundRobin,
};

use crate::ewma::{self, Ewma};
use crate::fleet::{self, Fleet, Outcome};
use crate::probe::{Counting, Probe};
use crate::reports::Reporting;
use crate::scenario::{Job, Scenario};

/// The name of the reference every picker is compared with.
pub(crate) const IDEAL: &str = "ideal (earliest finish)";

pub(crate) const RR: &str = "round robin";
pub(crate) const LC: &str = "least connections";
pub(crate) const LC_WEIGHTED: &str = "least conn. (speed weights)";
pub(crate) const P2C: &str = "p2c (in flight)";
pub(crate) const P2C_WEIGHTED: &str = "p2c (speed weights)";
pub(crate) const LC_EWMA: &str = "least conn. (peak-ewma)";
pub(crate) const P2C_EWMA: &str = "p2c (peak-ewma)";
pub(crate) const SCORED: &str = "scored (reports 1 poll late)";
pub(crate) const P2C_HEDGED: &str = "p2c + hedge at p95";
pub(crate) const P2C_EWMA_HEDGED: &str = "p2c (peak-ewma) + hedge at p95";
pub(crate) const TTFT: &str = "least predicted TTFT (LLM default)";

/// A picker with its table over endpoint services `S`, behind one object
/// type so that pickers with different tables share a list.
pub(crate) trait Policy<S> {
    /// Builds the table for these endpoints, as the balancer's discovery
    /// worker would.
    fn prepare(&mut self, metas: &[EndpointInfo]);

    /// Picks an endpoint for `job`.
    fn pick(&self, endpoints: &Candidates<'_, S>, job: &Job) -> Option<usize>;
}

struct Prepared<P: Prepare> {
    picker: P,
    table: Option<P::Table>,
}

impl<S, P: Pick<Job, S>> Policy<S> for Prepared<P> {
    fn prepare(&mut self, metas: &[EndpointInfo]) {
        self.table = Some(self.picker.prepare(metas));
    }

    fn pick(&self, endpoints: &Candidates<'_, S>, job: &Job) -> Option<usize> {
        let table = self.table.as_ref()?;
        self.picker.pick(table, endpoints, job)
    }
}

fn policy<S, P: Pick<Job, S>>(picker: P) -> Box<dyn Policy<S>> {
    Box::new(Prepared {
        picker,
        table: None,
    })
}

/// The hash key of the hashing pickers: the request's client.
fn client_key(job: &Job) -> Option<u64> {
    Some(job.client)
}

/// How endpoint weights are set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Weights {
    /// All 1: the picker knows nothing of the endpoints in advance.
    Equal,
    /// In proportion to each endpoint's speed at the start of the run:
    /// knowledge an operator must configure.
    BySpeed,
}

/// What a picker reads as each endpoint's load, and how it is built.
#[derive(Clone, Copy, Debug)]
enum Build {
    /// Requests in flight, counted by the simulation.
    Counts {
        counting: Counting,
        build: fn(u64) -> Box<dyn Policy<Probe>>,
    },
    /// The crate's `Latency`, on virtual time.
    Latency(fn(u64) -> Box<dyn Policy<Ewma>>),
    /// In-flight counts and the servers' own reports, one poll late.
    Reports(fn(u64) -> Box<dyn Policy<Reporting>>),
}

/// One picker of the comparison.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) name: &'static str,
    pub(crate) weights: Weights,
    /// The scenarios it runs in: a variant that would equal another entry
    /// elsewhere runs only where it differs.
    pub(crate) applies: fn(&Scenario) -> bool,
    /// What it reads as load, and how a fresh picker is built from a seed
    /// for its tie-breaking and sampling.
    build: Build,
    /// Hedging at the p95 latency of the named entry's run (the same picker
    /// without hedging) in the same scenario.
    pub(crate) hedge_at_p95_of: Option<&'static str>,
}

impl Entry {
    /// A picker reading requests in flight, counted to the last byte.
    fn new(name: &'static str, build: fn(u64) -> Box<dyn Policy<Probe>>) -> Self {
        Self::with(
            name,
            Build::Counts {
                counting: Counting::ToLastByte,
                build,
            },
        )
    }

    /// A picker reading Peak-EWMA costs.
    fn peak_ewma(name: &'static str, build: fn(u64) -> Box<dyn Policy<Ewma>>) -> Self {
        Self::with(name, Build::Latency(build))
    }

    fn with(name: &'static str, build: Build) -> Self {
        Self {
            name,
            weights: Weights::Equal,
            applies: |_| true,
            build,
            hedge_at_p95_of: None,
        }
    }

    fn hedged_at_p95_of(mut self, name: &'static str) -> Self {
        self.hedge_at_p95_of = Some(name);
        self
    }

    fn weighted_by_speed(mut self) -> Self {
        self.weights = Weights::BySpeed;
        self
    }

    fn counting_to_first_byte(mut self) -> Self {
        if let Build::Counts { counting, .. } = &mut self.build {
            *counting = Counting::ToFirstByte;
        }
        self
    }

    fn only_where(mut self, applies: fn(&Scenario) -> bool) -> Self {
        self.applies = applies;
        self
    }

    /// Runs `jobs` through `fleet` with a fresh picker, its table built for
    /// `metas`; on a paused tokio runtime (see [`fleet::run`]).
    pub(crate) async fn run(
        &self,
        seed: u64,
        scenario: &Scenario,
        fleet: &Fleet,
        jobs: &Rc<[Job]>,
        metas: &[EndpointInfo],
    ) -> Outcome {
        match self.build {
            Build::Counts { counting, build } => {
                let mut policy = build(seed);
                policy.prepare(metas);
                let probe = |station: &_| Probe::new(station, jobs, counting);
                fleet::run(fleet, jobs, policy.as_ref(), metas, probe).await
            }
            Build::Latency(build) => {
                let mut policy = build(seed);
                policy.prepare(metas);
                let (rtt, decay) = scenario.peak_ewma();
                let endpoint = |_: &_| ewma::endpoint(rtt, decay);
                fleet::run(fleet, jobs, policy.as_ref(), metas, endpoint).await
            }
            Build::Reports(build) => {
                let mut policy = build(seed);
                policy.prepare(metas);
                let (rtt, decay) = scenario.peak_ewma();
                let endpoint = |station: &_| Reporting::new(station, rtt, decay);
                fleet::run(fleet, jobs, policy.as_ref(), metas, endpoint).await
            }
        }
    }
}

/// Every picker compared, the ideal reference first. Adding a picker is one
/// line.
///
/// A picker's seed follows from its position here: add a picker after the
/// last one that draws random numbers, so that the rows before it keep
/// their numbers.
pub(crate) fn entries() -> Vec<Entry> {
    vec![
        Entry::new(IDEAL, |_| policy(Ideal)),
        Entry::new(RR, |_| policy(RoundRobin::new())),
        Entry::new(
            "weighted round robin",
            |_| policy(WeightedRoundRobin::new()),
        )
        .weighted_by_speed(),
        Entry::new(LC, |seed| policy(LeastConnections::with_seed(seed))),
        Entry::new("least conn. (to 1st byte)", |seed| {
            policy(LeastConnections::with_seed(seed))
        })
        .counting_to_first_byte()
        .only_where(Scenario::streams),
        Entry::new(LC_WEIGHTED, |seed| {
            policy(LeastConnections::with_seed(seed))
        })
        .weighted_by_speed()
        .only_where(Scenario::speeds_differ),
        Entry::new(P2C, |seed| policy(P2c::with_seed(seed))),
        Entry::new(P2C_WEIGHTED, |seed| policy(P2c::with_seed(seed)))
            .weighted_by_speed()
            .only_where(Scenario::speeds_differ),
        Entry::peak_ewma(LC_EWMA, |seed| policy(LeastConnections::with_seed(seed))),
        Entry::peak_ewma(P2C_EWMA, |seed| policy(P2c::with_seed(seed))),
        Entry::new("ip hash", |_| policy(IpHash::with_key(client_key))),
        Entry::new("consistent hash", |_| {
            policy(ConsistentHash::new(client_key))
        }),
        Entry::new("bounded hash (c = 1.25)", |_| {
            let picker = ConsistentHash::new(client_key).bounded_load(1.25);
            policy(picker.expect("1.25 is a valid bound"))
        }),
        Entry::new("maglev", |_| policy(Maglev::new(client_key))),
        Entry::with(
            SCORED,
            Build::Reports(|seed| policy(Scored::with_seed(seed))),
        )
        .only_where(Scenario::reports_load),
        Entry::new(P2C_HEDGED, |seed| policy(P2c::with_seed(seed)))
            .hedged_at_p95_of(P2C)
            .only_where(|s| s.slowdown.is_some()),
        Entry::peak_ewma(P2C_EWMA_HEDGED, |seed| policy(P2c::with_seed(seed)))
            .hedged_at_p95_of(P2C_EWMA)
            .only_where(|s| s.slowdown.is_some()),
        // Without prompts or prefill states it predicts from the client's
        // latency estimate: the estimate × (requests ahead + 1), requests
        // ahead being the reported queue or the client's requests in
        // flight there, whichever is more.
        Entry::with(
            TTFT,
            Build::Reports(|seed| policy(Scored::with_seed(seed).least_ttft())),
        ),
    ]
}

/// The reference: each request goes where it would finish first, knowing
/// the exact cost of every request in the fleet and every endpoint's current
/// speed. This is join-the-shortest-queue measured in remaining work rather
/// than in requests, the strongest greedy dispatcher; no real picker can
/// know this much. It does not foresee later arrivals or slowdowns.
#[derive(Debug)]
struct Ideal;

impl Prepare for Ideal {
    type Table = ();

    fn prepare(&self, _endpoints: &[EndpointInfo]) {}
}

impl Pick<Job, Probe> for Ideal {
    fn pick(&self, _table: &(), endpoints: &Candidates<'_, Probe>, job: &Job) -> Option<usize> {
        let n = endpoints.len();
        // Ties (an idle fleet) rotate instead of all going to endpoint 0.
        let start = job.id as usize % n.max(1);
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| endpoints.is_allowed(i))
            .min_by_key(|&i| endpoints.services()[i].finish_if_sent(job))
    }
}
