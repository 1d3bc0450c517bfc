//! The pickers compared, all driven through the crate's `Prepare`/`Pick`
//! traits, and the ideal reference they are measured against.

use tower_lb::pick::{
    Endpoints, IpHash, LeastConnections, Meta, P2c, Pick, Prepare, RoundRobin, WeightedRoundRobin,
};
// Once the hashing pickers land:
// use tower_lb::pick::{BoundedConsistentHash, ConsistentHash, Maglev};

use crate::fleet::{Counting, Probe};
use crate::scenario::{Job, Scenario};

/// The name of the reference every picker is compared with.
pub(crate) const IDEAL: &str = "ideal (earliest finish)";

pub(crate) const RR: &str = "round robin";
pub(crate) const LC: &str = "least connections";
pub(crate) const LC_WEIGHTED: &str = "least conn. (speed weights)";
pub(crate) const P2C: &str = "p2c (in flight)";
pub(crate) const P2C_WEIGHTED: &str = "p2c (speed weights)";

/// A picker with its table, behind one object type so that pickers with
/// different tables share a list.
pub(crate) trait Policy {
    /// Builds the table for these endpoints, as the balancer's discovery
    /// worker would.
    fn prepare(&mut self, metas: &[Meta]);

    /// Picks an endpoint for `job`.
    fn pick(&self, endpoints: &Endpoints<'_, Probe>, job: &Job) -> Option<usize>;
}

struct Prepared<P: Prepare> {
    picker: P,
    table: Option<P::Table>,
}

impl<P: Pick<Job, Probe>> Policy for Prepared<P> {
    fn prepare(&mut self, metas: &[Meta]) {
        self.table = Some(self.picker.prepare(metas));
    }

    fn pick(&self, endpoints: &Endpoints<'_, Probe>, job: &Job) -> Option<usize> {
        let table = self.table.as_ref()?;
        self.picker.pick(table, endpoints, job)
    }
}

fn policy<P: Pick<Job, Probe>>(picker: P) -> Box<dyn Policy> {
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

/// One picker of the comparison.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) name: &'static str,
    pub(crate) weights: Weights,
    pub(crate) counting: Counting,
    /// The scenarios it runs in: a variant that would equal another entry
    /// elsewhere runs only where it differs.
    pub(crate) applies: fn(&Scenario) -> bool,
    /// Builds a fresh picker from a seed for its tie-breaking and sampling.
    build: fn(u64) -> Box<dyn Policy>,
}

impl Entry {
    fn new(name: &'static str, build: fn(u64) -> Box<dyn Policy>) -> Self {
        Self {
            name,
            weights: Weights::Equal,
            counting: Counting::ToLastByte,
            applies: |_| true,
            build,
        }
    }

    fn weighted_by_speed(mut self) -> Self {
        self.weights = Weights::BySpeed;
        self
    }

    fn counting_to_first_byte(mut self) -> Self {
        self.counting = Counting::ToFirstByte;
        self
    }

    fn only_where(mut self, applies: fn(&Scenario) -> bool) -> Self {
        self.applies = applies;
        self
    }

    /// A fresh picker, its table built for `metas`.
    pub(crate) fn build(&self, seed: u64, metas: &[Meta]) -> Box<dyn Policy> {
        let mut policy = (self.build)(seed);
        policy.prepare(metas);
        policy
    }
}

/// Every picker compared, the ideal reference first. Adding a picker is one
/// line.
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
        Entry::new("ip hash", |_| policy(IpHash::with_key(client_key))),
        // The hashing pickers are still being written; uncomment each (and
        // the `use` above) once it lands.
        // Entry::new("consistent hash", |_| policy(ConsistentHash::new(client_key))),
        // Entry::new("bounded hash (c = 1.25)", |_| {
        //     policy(BoundedConsistentHash::new(client_key, 1.25).expect("1.25 is a valid bound"))
        // }),
        // Entry::new("maglev", |_| policy(Maglev::new(client_key))),
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

    fn prepare(&self, _endpoints: &[Meta]) {}
}

impl Pick<Job, Probe> for Ideal {
    fn pick(&self, _table: &(), endpoints: &Endpoints<'_, Probe>, job: &Job) -> Option<usize> {
        let n = endpoints.len();
        // Ties (an idle fleet) rotate instead of all going to endpoint 0.
        let start = job.id as usize % n.max(1);
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| endpoints.is_allowed(i))
            .min_by_key(|&i| endpoints.services()[i].finish_if_sent(job))
    }
}
