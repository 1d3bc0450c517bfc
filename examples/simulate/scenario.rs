//! The fleets and the traffic they get: five scenarios, each a list of
//! endpoint speeds, a request cost distribution and, for one, a slowdown.

use std::time::Duration;

use crate::rng::{mix, Rng};

/// Endpoints in every fleet.
pub(crate) const ENDPOINTS: usize = 8;

/// Requests an endpoint serves at once (worker threads, or the batch an
/// inference server decodes together); more wait in its FIFO queue.
pub(crate) const SLOTS: usize = 4;

/// Offered load as a share of the fleet's capacity at the start of a run.
pub(crate) const LOAD: f64 = 0.75;

/// Distinct clients; a request's hash key is its client's.
const CLIENTS: u64 = 1000;

const MS: f64 = 1e6;

/// How long a Peak-EWMA estimate takes to forget: the crate's default, 10 s
/// (as in Finagle and Linkerd), the setting users run with. It is a thousand
/// mean requests in the exponential scenarios and about four in (c).
pub(crate) const PEAK_EWMA_DECAY: Duration = tower_lb::load::DEFAULT_DECAY;

/// What one request costs, in virtual nanoseconds at speed 1.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cost {
    /// Exponential service time, one answer at the end.
    Exponential { mean_ms: f64 },
    /// A language-model request: a prompt that is read first (prefill), then
    /// an answer streamed token by token. Both lengths are lognormal, so a
    /// few requests cost a hundred times the median.
    Tokens {
        prompt_median: f64,
        answer_median: f64,
        /// σ of the logarithm of both lengths.
        sigma: f64,
        max_answer: f64,
        prefill_ms_per_token: f64,
        decode_ms_per_token: f64,
    },
}

impl Cost {
    /// A request's (time to its first byte, total time) at speed 1, in ns.
    fn sample(&self, rng: &mut Rng) -> (u64, u64) {
        match *self {
            Self::Exponential { mean_ms } => {
                let work = (rng.exponential(mean_ms * MS) as u64).max(1);
                (work, work)
            }
            Self::Tokens {
                prompt_median,
                answer_median,
                sigma,
                max_answer,
                prefill_ms_per_token,
                decode_ms_per_token,
            } => {
                let prompt = rng.lognormal(prompt_median, sigma).ceil();
                let answer = rng.lognormal(answer_median, sigma).ceil().min(max_answer);
                let prefill = (prompt * prefill_ms_per_token * MS) as u64;
                let decode = (answer * decode_ms_per_token * MS) as u64;
                (prefill.max(1), prefill.max(1) + decode.max(1))
            }
        }
    }

    /// The mean time of a request at speed 1, in ms (the answer's cap
    /// aside).
    fn mean_ms(&self) -> f64 {
        match *self {
            Self::Exponential { mean_ms } => mean_ms,
            Self::Tokens {
                prompt_median,
                answer_median,
                sigma,
                prefill_ms_per_token,
                decode_ms_per_token,
                ..
            } => {
                // A lognormal's mean is its median × e^(σ²/2).
                let medians =
                    prompt_median * prefill_ms_per_token + answer_median * decode_ms_per_token;
                medians * (sigma * sigma / 2.0).exp()
            }
        }
    }

    fn describe(&self) -> String {
        match *self {
            Self::Exponential { mean_ms } => {
                format!("exponential service time, mean {mean_ms} ms at speed 1")
            }
            Self::Tokens {
                prompt_median,
                answer_median,
                sigma,
                max_answer,
                prefill_ms_per_token,
                decode_ms_per_token,
            } => format!(
                "lognormal prompt (median {prompt_median} tokens, {prefill_ms_per_token} ms each) \
                 and streamed answer (median {answer_median} tokens, at most {max_answer}, \
                 {decode_ms_per_token} ms each), σ = {sigma}; latency until the last token"
            ),
        }
    }
}

/// One fleet and its traffic.
#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    /// A letter for charts and tables.
    pub(crate) id: char,
    pub(crate) title: &'static str,
    /// Work per nanosecond of each endpoint's slots.
    pub(crate) speeds: [f64; ENDPOINTS],
    pub(crate) cost: Cost,
    /// An endpoint whose speed is divided by a factor once half the requests
    /// have arrived.
    pub(crate) slowdown: Option<(usize, f64)>,
}

impl Scenario {
    /// Whether answers stream, so the first byte comes before the end.
    pub(crate) fn streams(&self) -> bool {
        matches!(self.cost, Cost::Tokens { .. })
    }

    /// Whether servers report their load (the scoring picker's scenario).
    pub(crate) fn reports_load(&self) -> bool {
        self.id == 'e'
    }

    /// Whether endpoints differ in speed from the start, so that weights
    /// could tell them apart.
    pub(crate) fn speeds_differ(&self) -> bool {
        self.speeds.windows(2).any(|pair| pair[0] != pair[1])
    }

    /// The Peak-EWMA settings: the mean request time at speed 1 as the
    /// default RTT (the latency an operator would expect; it matters only
    /// until the first answers), and [`PEAK_EWMA_DECAY`].
    pub(crate) fn peak_ewma(&self) -> (Duration, Duration) {
        let rtt = Duration::from_millis(self.cost.mean_ms().round() as u64);
        (rtt, PEAK_EWMA_DECAY)
    }

    /// One paragraph saying what the fleet and the traffic are.
    pub(crate) fn describe(&self, requests: usize) -> String {
        let speeds: Vec<String> = self.speeds.iter().map(|s| format!("{s}")).collect();
        let mut text = format!(
            "{ENDPOINTS} endpoints × {SLOTS} slots, FIFO queue beyond; speeds {}; {}; \
             Poisson arrivals at {:.0}% of capacity; {requests} requests",
            speeds.join(", "),
            self.cost.describe(),
            LOAD * 100.0,
        );
        if let Some((endpoint, factor)) = self.slowdown {
            text += &format!(
                "; endpoint {endpoint} becomes {factor}× slower once half the requests have arrived"
            );
        }
        let (rtt, decay) = self.peak_ewma();
        text += &format!(
            "; Peak-EWMA default RTT {} ms, decay {} s",
            rtt.as_millis(),
            decay.as_secs_f64()
        );
        text
    }
}

/// The scenarios of the comparison.
pub(crate) fn scenarios() -> Vec<Scenario> {
    let exponential = Cost::Exponential { mean_ms: 10.0 };
    let tokens = Cost::Tokens {
        prompt_median: 500.0,
        answer_median: 150.0,
        sigma: 1.0,
        max_answer: 4096.0,
        prefill_ms_per_token: 0.2,
        decode_ms_per_token: 10.0,
    };
    let mut one_slow = [1.0; ENDPOINTS];
    one_slow[0] = 0.1;
    vec![
        Scenario {
            id: 'a',
            title: "homogeneous",
            speeds: [1.0; ENDPOINTS],
            cost: exponential,
            slowdown: None,
        },
        Scenario {
            id: 'b',
            title: "one endpoint 10× slower",
            speeds: one_slow,
            cost: exponential,
            slowdown: None,
        },
        Scenario {
            id: 'c',
            title: "inference: heavy-tailed cost, streamed answers",
            speeds: [1.0; ENDPOINTS],
            cost: tokens,
            slowdown: None,
        },
        Scenario {
            id: 'd',
            title: "one endpoint degrades 5× mid-run",
            speeds: [1.0; ENDPOINTS],
            cost: exponential,
            slowdown: Some((0, 5.0)),
        },
        Scenario {
            id: 'e',
            title: "inference on mixed GPUs, load reported one poll late",
            speeds: [2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5],
            cost: tokens,
            slowdown: None,
        },
        Scenario {
            id: 'f',
            title: "latencies spanning 1 ms … 1 s",
            speeds: spread(1000.0),
            cost: Cost::Exponential { mean_ms: 1.0 },
            slowdown: None,
        },
    ]
}

/// Speeds falling geometrically from 1 to `1 / ratio`, so that the mean
/// request time spans `ratio` from the fastest endpoint to the slowest.
fn spread(ratio: f64) -> [f64; ENDPOINTS] {
    let step = ratio.powf(-1.0 / (ENDPOINTS - 1) as f64);
    let mut speeds = [1.0; ENDPOINTS];
    for (i, speed) in speeds.iter_mut().enumerate().skip(1) {
        // Rounded to three significant figures, so the description reads.
        let exact = step.powi(i as i32);
        let scale = 10f64.powi(2 - exact.log10().floor() as i32);
        *speed = (exact * scale).round() / scale;
    }
    speeds
}

/// One request, as the simulation and the pickers see it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Job {
    /// Its position in the workload.
    pub(crate) id: u32,
    /// Virtual time of arrival, in ns.
    pub(crate) arrival: u64,
    /// Work before the first byte of the answer, in ns at speed 1; equal to
    /// `work` when the answer is not streamed.
    pub(crate) prefill: u64,
    /// All its work, in ns at speed 1.
    pub(crate) work: u64,
    /// The hash of its client: the key of the hashing pickers.
    pub(crate) client: u64,
}

/// The requests of one scenario, the same for every picker so that pickers
/// are compared on identical traffic.
pub(crate) fn workload(scenario: &Scenario, requests: usize, seed: u64) -> Vec<Job> {
    let stream = |purpose: u64| Rng::stream(seed, (u64::from(scenario.id) << 8) | purpose);
    let (mut costs, mut gaps, mut clients) = (stream(0), stream(1), stream(2));
    let mut jobs: Vec<Job> = (0..requests)
        .map(|id| {
            let (prefill, work) = scenario.cost.sample(&mut costs);
            Job {
                id: id as u32,
                arrival: 0,
                prefill,
                work,
                client: mix(clients.below(CLIENTS)),
            }
        })
        .collect();
    // The arrival rate follows from the costs actually drawn, so the offered
    // load is LOAD exactly, whatever the seed.
    let mean_work = jobs.iter().map(|j| j.work as f64).sum::<f64>() / requests as f64;
    let capacity: f64 = scenario.speeds.iter().sum::<f64>() * SLOTS as f64 / mean_work;
    let mean_gap = 1.0 / (LOAD * capacity);
    let mut now = 0.0;
    for job in &mut jobs {
        now += gaps.exponential(mean_gap);
        job.arrival = now as u64;
    }
    jobs
}
