//! The proxy's `/status` document, served by the gateway's admin listener
//! (`--admin`).

use std::fmt::Write;

use tokio::time::Instant;

use tower_lb::endpoint::Endpoint;
use tower_lb::pick::Prepare;

use crate::gateway::server::Lb;

/// One object per backend, in the balancer's order:
///
/// ```json
/// [
///   {"address": "127.0.0.1:9001", "weight": 1, "healthy": true, "state": "healthy",
///    "in_flight": 0, "requests": 12, "failures": 0, "ejections": 0}
/// ]
/// ```
///
/// `failures` counts attempts that got no response or a 5xx one; `state` is
/// `healthy`, `slow-start`, `unhealthy` (failed active checks) or `ejected`
/// (outlier detection).
pub(crate) fn status_json<P: Prepare>(lb: &Lb<P>) -> String {
    lb.read_endpoints(|addrs, endpoints| {
        let mut json = String::from("[");
        for (i, (addr, endpoint)) in addrs.iter().zip(endpoints).enumerate() {
            let counted = endpoint.get_ref().get_ref();
            let forward = counted.get_ref();
            let health = endpoint.health(());
            let state = match health.state() {
                tower_lb::health::HealthState::Healthy => "healthy",
                tower_lb::health::HealthState::SlowStart => "slow-start",
                tower_lb::health::HealthState::Unhealthy => "unhealthy",
                tower_lb::health::HealthState::Ejected => "ejected",
            };
            // `--algorithm scored`: the backend's last report and its age.
            let report = match endpoint.report().and_then(|cell| cell.last_at(Instant::now())) {
                Some(r) => format!(
                    ", \"report\": {{\"queue\": {}, \"running\": {}, \"kv_cache_use\": {}, \"age_ms\": {:.1}}}",
                    r.queue,
                    r.running,
                    r.kv_cache_use,
                    r.age.as_secs_f64() * 1e3
                ),
                None if endpoint.report().is_some() => ", \"report\": null".to_owned(),
                None => String::new(),
            };
            // A socket address prints as digits, dots, colons, brackets and
            // hex: nothing that JSON needs escaped.
            let _ = write!(
                json,
                "{}\n  {{\"address\": \"{addr}\", \"weight\": {}, \"healthy\": {}, \"state\": \"{state}\", \
                 \"in_flight\": {}, \"requests\": {}, \"failures\": {}, \"ejections\": {}{report}}}",
                if i == 0 { "" } else { "," },
                endpoint.weight(),
                endpoint.is_healthy(),
                counted.in_flight(),
                counted.requests(),
                forward.failures(),
                health.ejections(),
            );
        }
        json.push_str("\n]\n");
        json
    })
}
