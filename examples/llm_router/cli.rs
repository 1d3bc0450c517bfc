//! The router's command line, read with clap's derive API.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tower_lb::pick::llm::{PrefixConfig, Weights};

/// An OpenAI-compatible LLM router: prefix-cache affinity, load from the
/// servers' own reports, saturation shedding.
#[derive(Debug, Parser)]
#[command(name = "llm_router")]
pub(crate) struct Cli {
    /// Address to serve clients on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// A model server, `http://IP:PORT`, optionally `#MODEL` for the one
    /// model it serves (repeatable).
    #[arg(long = "backend", required = true, value_parser = backend)]
    pub(crate) backends: Vec<Backend>,
    /// Choose by weighted scorers instead of the least predicted time to
    /// first token (the default): `prefix`, `queue`, `kv`, `inflight`,
    /// `session` (unnamed ones are 0), say `prefix=3,queue=2,kv=2`.
    #[arg(long, value_parser = scorers)]
    pub(crate) scorer: Option<Scorers>,
    /// Poll each server's Prometheus page at this path (vLLM, SGLang or TGI
    /// names) besides reading the load reports in its answers.
    #[arg(long)]
    pub(crate) metrics_path: Option<String>,
    /// How often to poll `--metrics-path`.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub(crate) metrics_interval: Duration,
    /// With `--scorer`: the imbalance gate's absolute threshold: requests in flight between
    /// the busiest and the idlest server.
    #[arg(long, default_value_t = PrefixConfig::default().balance_abs)]
    pub(crate) balance_abs: usize,
    /// The imbalance gate's relative threshold: busiest ÷ idlest.
    #[arg(long, default_value_t = PrefixConfig::default().balance_rel)]
    pub(crate) balance_rel: f64,
    /// The header that names a chat session, for the `session` scorer.
    #[arg(long, default_value = "x-session-id")]
    pub(crate) session_header: String,
    /// Serve `GET /status` (JSON: each server's load, prefix index and hit
    /// rate) on this address.
    #[arg(long)]
    pub(crate) admin: Option<SocketAddr>,
    /// Retries on another server after a failed attempt (within a budget).
    #[arg(long, default_value_t = 1)]
    pub(crate) retries: u32,
    /// Active health checks: `GET PATH` on every server.
    #[arg(long, default_value = "/health")]
    pub(crate) health_path: String,
    /// Request bodies larger than this many bytes get 413.
    #[arg(long, default_value_t = tower_lb::http::DEFAULT_MAX_BODY)]
    pub(crate) max_body: usize,
    /// Requests that may wait in the router's queue while every server is
    /// busy (0: no queue; a saturated fleet sheds low priorities at once).
    #[arg(long, default_value_t = 1024)]
    pub(crate) max_waiting: usize,
    /// How long a request without `x-deadline-ms` may wait in the queue.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) deadline: Duration,
    /// The most requests sent to one server at once (default: its batch
    /// slots as it reports them, plus one).
    #[arg(long)]
    pub(crate) server_limit: Option<u32>,
    /// On SIGTERM or SIGINT, how long answers in flight may take to finish.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) drain_timeout: Duration,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub(crate) workers: usize,
}

/// One `--backend`.
#[derive(Clone, Debug)]
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    pub(crate) model: Option<String>,
}

fn backend(text: &str) -> Result<Backend, String> {
    let (url, model) = match text.split_once('#') {
        Some((url, model)) if !model.is_empty() => (url, Some(model.to_owned())),
        Some(_) => return Err("an empty model after `#`".into()),
        None => (text, None),
    };
    let host = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/');
    let addr = host
        .parse()
        .map_err(|_| format!("{url:?} is not http://IP:PORT"))?;
    Ok(Backend { addr, model })
}

/// The `--scorer` weights.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scorers {
    pub(crate) prefix: f64,
    pub(crate) session: f64,
    pub(crate) weights: Weights,
}

fn scorers(text: &str) -> Result<Scorers, String> {
    let mut parsed = Scorers {
        prefix: 0.0,
        session: 0.0,
        weights: Weights {
            queue: 0.0,
            kv_cache: 0.0,
            in_flight: 0.0,
            latency: 0.0,
            adapter: Weights::default().adapter,
        },
    };
    for item in text.split(',').filter(|s| !s.trim().is_empty()) {
        let (name, value) = item
            .split_once('=')
            .ok_or(format!("{item:?} is not NAME=WEIGHT"))?;
        let value: f64 = value
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or(format!("the weight of {name:?} must be a number ≥ 0"))?;
        match name.trim() {
            "prefix" => parsed.prefix = value,
            "session" => parsed.session = value,
            "queue" => parsed.weights.queue = value,
            "kv" => parsed.weights.kv_cache = value,
            "inflight" => parsed.weights.in_flight = value,
            other => {
                return Err(format!(
                    "unknown scorer {other:?} (prefix, session, queue, kv, inflight)"
                ))
            }
        }
    }
    Ok(parsed)
}
