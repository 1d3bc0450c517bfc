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
    #[arg(long = "backend", required_unless_present_any = ["prefill", "decode"], value_parser = backend)]
    pub(crate) backends: Vec<Backend>,
    /// A prefill server for disaggregated serving, `http://IP:PORT`,
    /// optionally `#BOOTSTRAP_PORT` (SGLang's; without it, the one the
    /// server announces in `/get_server_info`) (repeatable).
    #[arg(long, value_parser = crate::pd::prefill)]
    pub(crate) prefill: Vec<crate::pd::Prefill>,
    /// A decode server for disaggregated serving, `http://IP:PORT`
    /// (repeatable). A server given as both `--prefill` and `--decode`
    /// takes either leg.
    #[arg(long, value_parser = crate::pd::address)]
    pub(crate) decode: Vec<SocketAddr>,
    /// The hand-over protocol of disaggregated serving: `sglang` (bootstrap
    /// host, port and room in both legs) or `vllm` (`kv_transfer_params`).
    #[arg(long, default_value = "sglang", value_parser = crate::pd::protocol)]
    pub(crate) pd_protocol: tower_lb::llm::PdProtocol,
    /// Disaggregated serving's decider: a prompt with fewer uncached
    /// tokens than this on some decode server goes whole to it (0: never).
    #[arg(long, default_value_t = 0)]
    pub(crate) pd_direct_below: u32,
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
    /// Times one answer may be continued on another server when its
    /// server's stream is cut before its end (0: off; a cut stream then
    /// ends with an error event). A request lowers it with `x-failover:
    /// off` or `x-failover: N`.
    #[arg(long, default_value_t = 1)]
    pub(crate) failovers: u32,
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

    // ===== limits that nothing a client or a server does may break =====
    /// How long an attempt may wait for a server's first byte (a streamed
    /// answer's head), from the end of the request body.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) attempt_timeout: Duration,
    /// A non-streamed answer arrives whole: its attempt may take its
    /// `max_tokens` times this (no limit without `max_tokens`), and a
    /// timeout beyond `--attempt-timeout` is not counted against the server.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub(crate) time_per_token: Duration,
    /// A streamed answer without a new frame (an SSE event) for this long
    /// ends with an error event, and counts as the server's failure.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) stream_idle_timeout: Duration,
    /// A request body must arrive whole within this from the request's
    /// start.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) body_timeout: Duration,
    /// Request heads larger than this many bytes get 431 (at least 8 KiB).
    #[arg(long, default_value_t = 64 * 1024)]
    pub(crate) max_header_bytes: usize,
    /// A path served besides the OpenAI routes (`/v1/chat/completions`,
    /// `/v1/completions`, `/v1/embeddings`, `/v1/models`) and `/health`
    /// (repeatable); any other path is 404.
    #[arg(long = "allow-route")]
    pub(crate) allow_routes: Vec<String>,
    /// Clients, `IP` or `IP/BITS`, whose `x-priority` and `x-tenant`
    /// headers are believed (repeatable); others' are removed, so they get
    /// the defaults.
    #[arg(long = "trusted-source", value_parser = crate::limits::network)]
    pub(crate) trusted_sources: Vec<(std::net::IpAddr, u8)>,
    /// How long a server's first ejection by outlier detection lasts
    /// (later ones longer; it comes back on probation).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) ejection: Duration,
    /// A file holding the token that admin requests must carry as
    /// `Authorization: Bearer TOKEN`.
    #[arg(long)]
    pub(crate) admin_token_file: Option<std::path::PathBuf>,
    /// Connections the admin listener holds at once.
    #[arg(long, default_value_t = crate::gateway::admin::MAX_CONNECTIONS)]
    pub(crate) admin_max_connections: usize,
    /// An admin connection idle this long is closed.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) admin_idle_timeout: Duration,
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
