//! What a [`Scored`](super::Scored) picker is told: how it chooses, how
//! its scorers weigh, when the fleet is saturated.

use std::time::Duration;

#[cfg(doc)]
use super::Scored;
#[cfg(doc)]
use crate::error::Saturated;

/// How [`Scored`] chooses among the scored endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Choice {
    /// The highest score; ties broken at random (the default).
    #[default]
    Best,
    /// At random, with probability proportional to the score (an endpoint
    /// scoring 0 is chosen only when every endpoint does, then uniformly).
    Weighted,
}

/// The weights of the built-in scorers; 0 turns one off. Negative and
/// non-finite weights count as 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    /// Waiting queue: `(max − q) ÷ (max − min)` over the eligible
    /// endpoints, 1 when all are equal. Stale endpoints count their
    /// requests in flight as their queue.
    pub queue: f64,
    /// KV-cache use: `1 − use`. A stale endpoint scores its in-flight score
    /// here.
    pub kv_cache: f64,
    /// The client's requests in flight, normalised like the queue.
    pub in_flight: f64,
    /// The client's latency estimate (Peak-EWMA), normalised like the
    /// queue; endpoints without one score 1.
    pub latency: f64,
    /// 1 when the request's adapter is loaded (or it needs none), else 0.
    pub adapter: f64,
}

impl Default for Weights {
    /// The inference extension's defaults for what this picker knows:
    /// queue 2, KV cache 2; in flight 1; latency 0; adapter affinity 1.
    fn default() -> Self {
        Self {
            queue: 2.0,
            kv_cache: 2.0,
            in_flight: 1.0,
            latency: 0.0,
            adapter: 1.0,
        }
    }
}

/// When an endpoint is saturated, and what happens when all are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Saturation {
    /// Saturated above this many waiting requests (default 5). An endpoint
    /// whose report is stale is saturated above this many requests in
    /// flight from this client.
    pub max_queue: u32,
    /// Saturated above this KV-cache use (default 0.8).
    pub max_kv_cache: f32,
    /// Requests of lower priority are shed when every eligible endpoint is
    /// saturated (default 0: negative priorities are shed).
    pub shed_below: i32,
    /// The wait [`Saturated::retry_after`] suggests (default 1 s).
    pub retry_after: Duration,
}

impl Default for Saturation {
    fn default() -> Self {
        Self {
            max_queue: 5,
            max_kv_cache: 0.8,
            shed_below: 0,
            retry_after: Duration::from_secs(1),
        }
    }
}

/// What [`Scored`] chooses by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Objective {
    /// The weighted sum of normalised scores ([`Weights`], user scorers).
    Scores,
    /// The least predicted time to first token; costs within `relative` ×
    /// the least plus `absolute` count as ties.
    Ttft { relative: f64, absolute: Duration },
}

impl Objective {
    pub(crate) const TTFT: Self = Self::Ttft {
        relative: 0.05,
        absolute: Duration::from_millis(1),
    };
}
