//! The proxy's `GET /metrics` on the admin listener: Prometheus text
//! through prometheus-client, read from the balancer at each scrape.
//! Per backend: requests sent, requests in flight, failed attempts,
//! ejections, health and, with `--algorithm scored`, its reported load and
//! the report's age. For the proxy as a whole: answers to clients by status
//! (its own refusals and errors included) and histograms of the time to
//! each answer's head and to its end.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tower_lb::endpoint::Endpoint;
use tower_lb::pick::Prepare;

use crate::gateway::server::Lb;
use crate::gateway::traffic::Traffic;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Backend {
    backend: String,
}

/// One figure of every backend at a scrape.
struct Figures {
    requests: Vec<(Backend, u64)>,
    failures: Vec<(Backend, u64)>,
    ejections: Vec<(Backend, u64)>,
    in_flight: Vec<(Backend, f64)>,
    healthy: Vec<(Backend, f64)>,
    queue: Vec<(Backend, f64)>,
    running: Vec<(Backend, f64)>,
    kv: Vec<(Backend, f64)>,
    age: Vec<(Backend, f64)>,
}

struct Scrape<P: Prepare>(Lb<P>);

impl<P: Prepare> fmt::Debug for Scrape<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

fn gauges(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: &[(Backend, f64)],
) -> fmt::Result {
    let mut metric =
        encoder.encode_descriptor(name, help, None, ConstGauge::new(0.0).metric_type())?;
    for (labels, value) in values {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn counters(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: &[(Backend, u64)],
) -> fmt::Result {
    let mut metric =
        encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (labels, value) in values {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl<P: Prepare> Scrape<P> {
    fn figures(&self) -> Figures {
        self.0.read_endpoints(|addrs, endpoints| {
            let mut f = Figures {
                requests: Vec::new(),
                failures: Vec::new(),
                ejections: Vec::new(),
                in_flight: Vec::new(),
                healthy: Vec::new(),
                queue: Vec::new(),
                running: Vec::new(),
                kv: Vec::new(),
                age: Vec::new(),
            };
            for (addr, endpoint) in addrs.iter().zip(endpoints) {
                let label = Backend {
                    backend: addr.to_string(),
                };
                let counted = endpoint.get_ref().get_ref();
                f.requests.push((label.clone(), counted.requests()));
                f.failures
                    .push((label.clone(), counted.get_ref().failures()));
                f.ejections
                    .push((label.clone(), u64::from(endpoint.health(()).ejections())));
                f.in_flight
                    .push((label.clone(), counted.in_flight() as f64));
                f.healthy
                    .push((label.clone(), f64::from(u8::from(endpoint.is_healthy()))));
                let report = endpoint.report().and_then(|c| c.last_at(Instant::now()));
                if let Some(r) = report {
                    f.queue.push((label.clone(), f64::from(r.queue)));
                    f.running.push((label.clone(), f64::from(r.running)));
                    f.kv.push((label.clone(), f64::from(r.kv_cache_use)));
                    f.age.push((label, r.age.as_secs_f64()));
                }
            }
            f
        })
    }
}

impl<P: Prepare> Collector for Scrape<P> {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let f = self.figures();
        let e = &mut encoder;
        counters(
            e,
            "proxy_backend_requests",
            "Requests sent to each backend",
            &f.requests,
        )?;
        counters(
            e,
            "proxy_backend_failures",
            "Attempts that got no answer or a 5xx one, per backend",
            &f.failures,
        )?;
        counters(
            e,
            "proxy_backend_ejections",
            "Outlier ejections per backend",
            &f.ejections,
        )?;
        gauges(
            e,
            "proxy_backend_in_flight",
            "Requests in flight per backend",
            &f.in_flight,
        )?;
        gauges(
            e,
            "proxy_backend_healthy",
            "1 while health lets requests go there",
            &f.healthy,
        )?;
        gauges(
            e,
            "proxy_backend_queue",
            "Each backend's reported waiting requests",
            &f.queue,
        )?;
        gauges(
            e,
            "proxy_backend_running",
            "Each backend's reported running requests",
            &f.running,
        )?;
        gauges(
            e,
            "proxy_backend_kv_cache_use",
            "Each backend's reported KV-cache use",
            &f.kv,
        )?;
        gauges(
            e,
            "proxy_backend_report_age_seconds",
            "Age of each backend's last report",
            &f.age,
        )?;
        Ok(())
    }
}

/// The `/metrics` page of `lb` (and of the answers `traffic` counts),
/// rendered at each call.
pub(crate) fn page<P: Prepare>(
    lb: Lb<P>,
    traffic: Option<Traffic>,
) -> impl Fn() -> String + Clone + Send + Sync + 'static {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(lb)));
    if let Some(traffic) = traffic {
        traffic.register(&mut registry, "proxy");
    }
    let registry = std::sync::Arc::new(registry);
    move || {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}
