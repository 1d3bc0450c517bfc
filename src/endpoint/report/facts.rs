//! The facts an endpoint reports of its load, as values: one report, the
//! fresh facts a picker reads, and the rarely changing extras.

use std::time::Duration;

#[cfg(doc)]
use super::ReportCell;

/// The rarely changing part of an endpoint's metrics: read through
/// [`ReportCell::details`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportDetails {
    /// Metrics by name, as the server reported them (ORCA `named_metrics`,
    /// or the Prometheus names a mapping keeps).
    pub named: Vec<(Box<str>, f64)>,
    /// The models the endpoint serves; empty means any model.
    pub models: Vec<Box<str>>,
    /// The adapters (LoRA) the endpoint has loaded, running or waiting.
    pub adapters: Vec<Box<str>>,
    /// How many adapters the endpoint can hold at once, if it says.
    pub max_adapters: Option<u32>,
}

impl ReportDetails {
    /// Whether the endpoint serves `model` (it names no models, or names it).
    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| &**m == model)
    }

    /// Whether `adapter` is loaded.
    pub fn has_adapter(&self, adapter: &str) -> bool {
        self.adapters.iter().any(|a| &**a == adapter)
    }

    /// Whether another adapter can be loaded: the endpoint gives a limit and
    /// holds fewer adapters than that. Without a limit, `true`.
    pub fn has_adapter_slot(&self) -> bool {
        self.max_adapters
            .is_none_or(|max| self.adapters.len() < max as usize)
    }

    /// The named metric `name`, if reported.
    pub fn named(&self, name: &str) -> Option<f64> {
        self.named
            .iter()
            .find_map(|(n, v)| (&**n == name).then_some(*v))
    }
}

/// One report of an endpoint's load: each field present replaces the
/// recorded one, each absent field keeps it.
///
/// Values are checked by [`ReportCell::record`]: a KV use outside
/// `[0, 1]` is clamped to it, a non-finite or negative rate or utilisation
/// is ignored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Requests waiting in the server's queue.
    pub queue: Option<u32>,
    /// Requests the server is running.
    pub running: Option<u32>,
    /// Share of the KV cache in use, in `[0, 1]`.
    pub kv_cache_use: Option<f32>,
    /// ORCA utilisation: `application_utilization` when the server sets it,
    /// else `cpu_utilization`.
    pub utilization: Option<f32>,
    /// ORCA queries per second (`rps_fractional`).
    pub qps: Option<f32>,
    /// ORCA errors per second (`eps`).
    pub eps: Option<f32>,
    /// Named metrics; `None` keeps the recorded ones.
    pub named: Option<Vec<(Box<str>, f64)>>,
    /// Loaded adapters; `None` keeps the recorded ones.
    pub adapters: Option<Vec<Box<str>>>,
    /// The adapter limit; `None` keeps the recorded one.
    pub max_adapters: Option<u32>,
    /// The models served; `None` keeps the recorded ones.
    pub models: Option<Vec<Box<str>>>,
}

impl Report {
    /// Whether the report carries no fact at all.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What [`ReportCell::current`] returns: the endpoint's last report, while
/// it is fresh.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReportSnapshot {
    /// Requests waiting in the server's queue (0 if never reported).
    pub queue: u32,
    /// Requests the server is running (0 if never reported).
    pub running: u32,
    /// Share of the KV cache in use, in `[0, 1]` (0 if never reported).
    pub kv_cache_use: f32,
    /// ORCA utilisation (0 if never reported).
    pub utilization: f32,
    /// ORCA queries per second (0 if never reported).
    pub qps: f32,
    /// ORCA errors per second (0 if never reported).
    pub eps: f32,
    /// How long ago the last report arrived.
    pub age: Duration,
}
