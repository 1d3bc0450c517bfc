//! The learnt model of one server's time to first token: a linear model in
//! four inputs, fitted online by recursive least squares from a prior.

use std::time::Duration;

/// Inputs of the model, in this order: 1, this request's uncached prompt
/// tokens, prefill tokens already queued there, the estimated wait for a
/// batch slot (ns).
pub(crate) const INPUTS: usize = 4;

/// A server's predicted time to first token, as a sum of four terms:
///
/// `ttft = base + per_uncached_token × u + per_queued_token × P + slot_wait × W`
///
/// where `u` is the request's prompt tokens that the server does not hold
/// in its cache, `P` the uncached tokens of the requests sent there that
/// have not had their first token yet, and `W` the estimated wait for a
/// batch slot: 0 while the server has a free slot, else the requests beyond
/// its slots, plus one, times an answer's mean duration ÷ its slots (see
/// [`PrefillState::slot_wait`](super::PrefillState::slot_wait)).
///
/// [`PrefillState`](super::PrefillState) starts from a prior (this type's
/// `Default`: 10 ms, 100 µs, 20 µs and 1) and learns each server's own
/// coefficients from every streamed answer's first token. Coefficients are
/// never negative and never above 10 s (base), 10 ms (per token) or 10
/// (slot wait).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TtftModel {
    /// Time to first token of a request with nothing to prefill on an idle
    /// server: the network, the router, one decode step.
    pub base: Duration,
    /// Prefill time of one uncached prompt token.
    pub per_uncached_token: Duration,
    /// Delay that one token of prefill queued ahead adds.
    pub per_queued_token: Duration,
    /// How much of the estimated slot wait shows in the time to first
    /// token (1: all of it).
    pub slot_wait: f64,
}

impl Default for TtftModel {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(10),
            per_uncached_token: Duration::from_micros(100),
            per_queued_token: Duration::from_micros(20),
            slot_wait: 1.0,
        }
    }
}

/// Upper bounds of the coefficients, in nanoseconds.
const BOUNDS: [f64; INPUTS] = [10e9, 10e6, 10e6, 10.0];

impl TtftModel {
    /// The coefficients (nanoseconds, and the slot-wait factor), clamped
    /// to their bounds.
    pub(crate) fn to_ns(self) -> [f64; INPUTS] {
        let [base, uncached, queued] = [self.base, self.per_uncached_token, self.per_queued_token]
            .map(|d| d.as_nanos() as f64);
        clamp([base, uncached, queued, self.slot_wait])
    }

    pub(crate) fn from_ns(ns: [f64; INPUTS]) -> Self {
        let d = |v: f64| Duration::from_nanos(v.max(0.0) as u64);
        Self {
            base: d(ns[0]),
            per_uncached_token: d(ns[1]),
            per_queued_token: d(ns[2]),
            slot_wait: ns[3].max(0.0),
        }
    }
}

fn clamp(mut theta: [f64; INPUTS]) -> [f64; INPUTS] {
    for (t, bound) in theta.iter_mut().zip(BOUNDS) {
        *t = if t.is_finite() {
            t.clamp(0.0, bound)
        } else {
            0.0
        };
    }
    theta
}

/// Recursive least squares with a forgetting factor, started from a prior
/// whose uncertainty also caps the covariance, so that an input that stops
/// varying (no queue for an hour) cannot wind the covariance up.
#[derive(Clone, Debug)]
pub(crate) struct Fit {
    theta: [f64; INPUTS],
    cov: [[f64; INPUTS]; INPUTS],
    /// The prior's variances: the cap of the covariance's diagonal.
    cap: [f64; INPUTS],
}

/// Weight of old observations against new ones: about the last thousand
/// answers count.
const FORGET: f64 = 0.999;

/// Variance of one observation around the model, in ns²: (5 ms)².
const NOISE: f64 = 25e12;

impl Fit {
    pub(crate) fn new(prior: TtftModel) -> Self {
        let theta = prior.to_ns();
        // A prior as uncertain as its own size (at least 1 ms, 10 µs, 10 µs,
        // 1 ms): a few answers move it.
        let floor = [1e6, 1e4, 1e4, 1.0];
        let cap: [f64; INPUTS] = std::array::from_fn(|i| theta[i].max(floor[i]).powi(2));
        let mut cov = [[0.0; INPUTS]; INPUTS];
        for i in 0..INPUTS {
            cov[i][i] = cap[i];
        }
        Self { theta, cov, cap }
    }

    pub(crate) fn theta(&self) -> [f64; INPUTS] {
        self.theta
    }

    /// Takes one observation: inputs `x`, time to first token `y` (ns).
    // Matrix algebra: the update reads as its formula with indices.
    #[allow(clippy::needless_range_loop)]
    pub(crate) fn observe(&mut self, x: [f64; INPUTS], y: f64) {
        if !y.is_finite() || x.iter().any(|v| !v.is_finite()) {
            return;
        }
        let p = &mut self.cov;
        let px: [f64; INPUTS] = std::array::from_fn(|i| (0..INPUTS).map(|j| p[i][j] * x[j]).sum());
        let denominator = FORGET * NOISE + (0..INPUTS).map(|i| x[i] * px[i]).sum::<f64>();
        if !(denominator.is_finite() && denominator > 0.0) {
            return;
        }
        let predicted: f64 = (0..INPUTS).map(|i| self.theta[i] * x[i]).sum();
        let error = y - predicted;
        for i in 0..INPUTS {
            self.theta[i] += px[i] / denominator * error;
        }
        for i in 0..INPUTS {
            for j in 0..INPUTS {
                p[i][j] = (p[i][j] - px[i] * px[j] / denominator) / FORGET;
            }
        }
        // Cap each variance at the prior's, scaling its row and column
        // (a congruence, so the matrix stays positive semi-definite).
        for i in 0..INPUTS {
            if p[i][i] > self.cap[i] {
                let s = (self.cap[i] / p[i][i]).sqrt();
                for j in 0..INPUTS {
                    p[i][j] *= s;
                    p[j][i] *= s;
                }
            }
        }
        self.theta = clamp(self.theta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(x: [f64; INPUTS]) -> f64 {
        // 3 ms base, 250 µs a token, nothing per queued token, 0.8 of the
        // estimated slot wait.
        3e6 * x[0] + 250e3 * x[1] + 0.0 * x[2] + 0.8 * x[3]
    }

    #[test]
    fn learns_a_server_unlike_the_prior() {
        let mut fit = Fit::new(TtftModel::default());
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..2000 {
            let x = [
                1.0,
                next(800) as f64,
                next(3000) as f64,
                next(4) as f64 * 20e6,
            ];
            fit.observe(x, truth(x));
        }
        let theta = fit.theta();
        assert!((theta[1] - 250e3).abs() < 5e3, "{theta:?}");
        assert!((theta[3] - 0.8).abs() < 0.02, "{theta:?}");
        let x = [1.0, 500.0, 1000.0, 20e6];
        let predicted: f64 = (0..INPUTS).map(|i| theta[i] * x[i]).sum();
        assert!((predicted - truth(x)).abs() / truth(x) < 0.05);
    }

    #[test]
    fn an_input_that_never_varies_does_not_wind_up() {
        let mut fit = Fit::new(TtftModel::default());
        for i in 0..100_000u64 {
            let x = [1.0, (i % 100) as f64, 0.0, 0.0];
            fit.observe(x, truth(x));
        }
        let theta = fit.theta();
        assert!(theta.iter().all(|t| t.is_finite() && *t >= 0.0));
        assert!(fit.cov[3][3] <= fit.cap[3] * 1.000_001);
        assert!((theta[1] - 250e3).abs() < 5e3, "{theta:?}");
    }

    #[test]
    fn garbage_observations_change_nothing_and_bounds_hold() {
        let mut fit = Fit::new(TtftModel::default());
        let before = fit.theta();
        fit.observe([1.0, f64::NAN, 0.0, 0.0], 1e6);
        fit.observe([1.0, 1.0, 0.0, 0.0], f64::INFINITY);
        assert_eq!(fit.theta(), before);
        for _ in 0..1000 {
            fit.observe([1.0, 1.0, 0.0, 0.0], 1e15);
        }
        assert!(fit.theta().iter().zip(BOUNDS).all(|(t, b)| *t <= b));
        for _ in 0..1000 {
            fit.observe([1.0, 100.0, 0.0, 1e6], -1e12);
        }
        assert!(fit.theta().iter().all(|t| *t >= 0.0));
    }
}
