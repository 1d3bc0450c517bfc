//! The learnt model of one server's time to first token: a linear model in
//! two inputs, fitted online by recursive least squares from a prior.

use std::time::Duration;

/// Inputs of the learnt part of the model, in this order: 1, and the
/// prefill tokens the request waits for (the uncached tokens queued there
/// before it, and its own).
pub(crate) const INPUTS: usize = 2;

/// A server's predicted time to first token:
///
/// `ttft = base + per_token × (P + u) + W`
///
/// where `u` is the request's prompt tokens that the server does not hold
/// in its cache, `P` the uncached tokens of the requests sent there that
/// have not had their first token yet, and `W` the estimated wait for a
/// batch slot ([`PrefillState::slot_wait`](super::PrefillState::slot_wait),
/// computed from what the server reports, not learnt).
///
/// [`PrefillState`](super::PrefillState) starts from a prior (this type's
/// `Default`: 10 ms and 100 µs a token) and learns each server's own `base`
/// and `per_token` from every streamed answer's first token, by recursive
/// least squares against `P + u` at dispatch. A server not heard from for a
/// while drifts back (half of the way in 5 s) toward the best current model
/// of the servers it is compared with, or the prior when none is current,
/// so that one bad spell does not keep it out of rotation for good. Coefficients are never
/// negative and never above 10 s (base) or 10 ms (a token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtftModel {
    /// Time to first token of a request with nothing to prefill on an idle
    /// server: the network, the router, one decode step.
    pub base: Duration,
    /// Prefill time of one token.
    pub per_token: Duration,
}

impl Default for TtftModel {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(10),
            per_token: Duration::from_micros(100),
        }
    }
}

/// Upper bounds of the coefficients, in nanoseconds.
const BOUNDS: [f64; INPUTS] = [10e9, 10e6];

impl TtftModel {
    /// The coefficients in nanoseconds, clamped to their bounds.
    pub(crate) fn to_ns(self) -> [f64; INPUTS] {
        clamp([self.base, self.per_token].map(|d| d.as_nanos() as f64))
    }

    pub(crate) fn from_ns(ns: [f64; INPUTS]) -> Self {
        let d = |v: f64| Duration::from_nanos(v.max(0.0) as u64);
        Self {
            base: d(ns[0]),
            per_token: d(ns[1]),
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
        let floor = [1e6, 1e4];
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
        // 3 ms base, 250 µs a token.
        3e6 * x[0] + 250e3 * x[1]
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
            let x = [1.0, next(3000) as f64];
            fit.observe(x, truth(x));
        }
        let theta = fit.theta();
        assert!((theta[0] - 3e6).abs() < 2e5, "{theta:?}");
        assert!((theta[1] - 250e3).abs() < 2e3, "{theta:?}");
    }

    #[test]
    fn an_input_that_never_varies_does_not_wind_up() {
        let mut fit = Fit::new(TtftModel::default());
        for _ in 0..100_000u64 {
            let x = [1.0, 0.0];
            fit.observe(x, truth(x));
        }
        let theta = fit.theta();
        assert!(theta.iter().all(|t| t.is_finite() && *t >= 0.0));
        assert!(fit.cov[1][1] <= fit.cap[1] * 1.000_001);
        assert!((theta[0] - 3e6).abs() < 1e5, "{theta:?}");
    }

    #[test]
    fn garbage_observations_change_nothing_and_bounds_hold() {
        let mut fit = Fit::new(TtftModel::default());
        let before = fit.theta();
        fit.observe([1.0, f64::NAN], 1e6);
        fit.observe([1.0, 1.0], f64::INFINITY);
        assert_eq!(fit.theta(), before);
        for _ in 0..1000 {
            fit.observe([1.0, 1.0], 1e15);
        }
        assert!(fit.theta().iter().zip(BOUNDS).all(|(t, b)| *t <= b));
        for _ in 0..1000 {
            fit.observe([1.0, 100.0], -1e12);
        }
        assert!(fit.theta().iter().all(|t| *t >= 0.0));
    }
}
