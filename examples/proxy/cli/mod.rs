//! The command line, on clap's derive API.
//!
//! Clap reads the flags and their values ([`Flags`]); [`Flags::check`] then
//! applies the rules that span several flags. Every mistake is one line of
//! text ([`CliError`]): `main` prints it and exits with status 2.

mod values;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, Parser};
use http::HeaderName;

use crate::gateway::server::{Backends, ReportSettings};
use tower_lb::pick::llm::Weights;

use crate::registry::Discovery;

use self::values::{
    address, algorithm, backend, connections, discovery, duration, header_bytes, header_name,
    number, path, read_backends_file, scorer, unexpected, workers, zone, Checked,
};

/// The default time between active health probes.
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The default number of retries on another backend.
const DEFAULT_RETRIES: u32 = 2;

/// The default time an attempt may wait for a response head once the
/// request body has been sent.
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time requests in flight get to finish after SIGTERM or SIGINT.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time a client may take to send a request head.
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time a keep-alive connection may stay idle.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The default number of client connections held at once.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// The most connections `--max-connections` accepts.
const MAX_CONNECTIONS: usize = 1_000_000;

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Command {
    /// Run the proxy.
    Run(Box<Args>),
    /// `-h` or `--help`: print this text on stdout and exit 0.
    Help(String),
}

/// A valid configuration.
#[derive(Debug)]
pub(crate) struct Args {
    /// `--listen`.
    pub(crate) listen: SocketAddr,
    /// `--backend` or `--backends-file`.
    pub(crate) backends: Backends,
    /// `--algorithm`, `p2c` by default.
    pub(crate) algorithm: Algorithm,
    /// `--hash-header`: only with `consistent-hash`.
    pub(crate) hash_header: Option<HeaderName>,
    /// `--trusted-hops`, 0 by default.
    pub(crate) trusted_hops: usize,
    /// `--health-path`: active probes when given.
    pub(crate) health_path: Option<String>,
    /// `--health-interval`, 1 s by default.
    pub(crate) health_interval: Duration,
    /// `--retries`, 2 by default.
    pub(crate) retries: u32,
    /// `--admin`.
    pub(crate) admin: Option<SocketAddr>,
    /// `--workers`, the number of cores by default.
    pub(crate) workers: usize,
    /// `--attempt-timeout`, 30 s by default.
    pub(crate) attempt_timeout: Duration,
    /// `--drain-timeout`, 30 s by default.
    pub(crate) drain_timeout: Duration,
    /// `--header-timeout`, 10 s by default.
    pub(crate) header_timeout: Duration,
    /// `--idle-timeout`, 60 s by default.
    pub(crate) idle_timeout: Duration,
    /// `--max-connections`, 10,000 by default.
    pub(crate) max_connections: usize,
    /// `--max-header-bytes`, 64 KiB by default.
    pub(crate) max_header_bytes: usize,
    /// `--discovery`: backends from a registry instead of `--backend` or
    /// `--backends-file` (then `backends` is an empty static list).
    pub(crate) discovery: Option<Discovery>,
    /// `--subset`: a stable subset of this many registry backends.
    pub(crate) subset: Option<usize>,
    /// `--zone`: the zone whose backends are preferred.
    pub(crate) zone: Option<String>,
    /// `--scorer`: the scored picker's weights.
    pub(crate) scorer: Weights,
    /// `--load-reports`, `--metrics-path`: where the scored picker's
    /// reports come from.
    pub(crate) reports: ReportSettings,
}

/// `--algorithm`: which picker chooses the backend of each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    IpHash,
    ConsistentHash,
    P2c,
    /// The scoring picker over the backends' own load reports.
    Scored,
}

impl Algorithm {
    /// Every algorithm by the name the command line gives it.
    const NAMES: [(&'static str, Algorithm); 7] = [
        ("round-robin", Algorithm::RoundRobin),
        ("weighted-round-robin", Algorithm::WeightedRoundRobin),
        ("least-connections", Algorithm::LeastConnections),
        ("ip-hash", Algorithm::IpHash),
        ("consistent-hash", Algorithm::ConsistentHash),
        ("p2c", Algorithm::P2c),
        ("scored", Algorithm::Scored),
    ];

    /// The algorithm called `name`, if any.
    fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|&(_, algorithm)| algorithm)
    }

    /// The name the command line gives this algorithm.
    pub(crate) fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, algorithm)| *algorithm == self)
            .map_or("?", |(name, _)| name)
    }
}

/// A bad command line, as one line of text.
#[derive(Debug)]
pub(crate) struct CliError(String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

fn error(message: impl Into<String>) -> CliError {
    CliError(message.into())
}

/// How the proxy forwards, answers and starts: the end of `--help`.
const AFTER_HELP: &str = "\
Every value may also be given as --flag=VALUE.

Forwarding: request and response bodies stream both ways (request bodies up to
64 KiB with a known length are held so that they can be retried); hop-by-hop
headers are dropped; X-Forwarded-For gets the client's address appended; the
client's Host header is passed on unchanged. Connections to backends are kept
alive and reused. Failures answer 502 (no backend could be reached), 503 (no
backend to send to) or 504 (no response head within --attempt-timeout of the
end of the request body, for each attempt); a request body that is malformed
or cut short by the client answers 400 and counts against no backend. GET,
HEAD, PUT, DELETE, OPTIONS and TRACE are retried on another backend after an
error or a 502, 503 or 504; other methods only when the request was surely not
sent. Upgrades (WebSocket) are proxied: after 101, bytes flow both ways.
CONNECT is answered 405 and never forwarded; an HTTP/1.1 request without a
Host header, or with more than one, is answered 400.

Limits, on the main and the admin listener alike: a request head must arrive
within --header-timeout; a keep-alive connection idle for --idle-timeout is
closed, and so is one whose client stops reading an answer, or stalls its
upload, for that long. The
main listener holds at most --max-connections connections, the admin listener
64; further clients wait in the listen queue. Each connection takes a file
descriptor: raise `ulimit -n` above --max-connections plus the backend
connections.

On SIGTERM or SIGINT the proxy stops accepting, lets requests in flight finish
for up to --drain-timeout, then exits 0; a second signal exits at once with
status 1. Upgraded (WebSocket) connections are not waited for: they close
when the proxy exits.

On start the proxy prints `listening on ADDR` (and `admin on ADDR`) on stdout;
port 0 picks a free port. Logs go to stderr (RUST_LOG sets the level, default
info). Bad arguments exit with status 2.";

/// The `--help` heading of the two sources of backends.
const BACKENDS: &str = "Backends (one source only)";

/// The `--help` heading of every other flag.
const OPTIONS: &str = "Options";

/// The flags as clap reads them, each value parsed and checked alone.
///
/// The doc comment of each field is its `--help` text, kept line by line.
#[derive(Debug, Parser)]
#[command(
    name = "proxy",
    about = "A small HTTP/1.1 reverse proxy over tower-lb.",
    long_about = None,
    override_usage = "proxy --listen ADDR (--backend ADDR[@WEIGHT]... | --backends-file FILE | --discovery SPEC) [OPTIONS]",
    after_help = AFTER_HELP,
    // `-h` prints the whole help too, from the `help` field below.
    disable_help_flag = true,
    // `--retries -1` is a bad number, not an unknown flag `-1`.
    allow_negative_numbers = true,
)]
struct Flags {
    /// a backend, e.g. 127.0.0.1:9001 or 127.0.0.1:9002@3;
    /// repeatable; weights are whole numbers from 1 (default 1)
    #[arg(
        long,
        value_name = "ADDR[@WEIGHT]",
        value_parser = Checked(backend),
        verbatim_doc_comment,
        help_heading = BACKENDS,
    )]
    backend: Vec<(SocketAddr, u32)>,

    /// one ADDR[@WEIGHT] per line, '#' starts a comment;
    /// re-read every 500 ms, so edits take effect within 1 s;
    /// an edit that is invalid, lists no backend (see
    /// --allow-empty-backends) or is not a regular file (a FIFO,
    /// a device) keeps the last good set
    #[arg(long, value_name = "FILE", verbatim_doc_comment, help_heading = BACKENDS)]
    backends_file: Option<PathBuf>,

    /// follow a registry: kube:NAMESPACE/SERVICE:PORT (EndpointSlices,
    /// API server from the kubeconfig, plain HTTP such as kubectl proxy
    /// unless kube's TLS is built in; feature kube) or etcd:URL/PREFIX
    /// (keys under PREFIX valued ADDR[@WEIGHT] [zone=Z] or JSON;
    /// feature etcd)
    #[arg(
        long,
        value_name = "SPEC",
        value_parser = Checked(discovery),
        verbatim_doc_comment,
        help_heading = BACKENDS,
    )]
    discovery: Option<Discovery>,

    /// --discovery: use a stable subset of N backends
    /// (rendezvous hashing with a random salt, gRFC A68)
    #[arg(
        long,
        value_name = "N",
        value_parser = Checked(number::<usize>),
        verbatim_doc_comment,
        help_heading = BACKENDS,
    )]
    subset: Option<usize>,

    /// where the proxy accepts connections, e.g. 127.0.0.1:8080
    #[arg(long, value_name = "ADDR", value_parser = Checked(address), help_heading = OPTIONS)]
    listen: SocketAddr,

    /// round-robin | weighted-round-robin | least-connections |
    /// ip-hash | consistent-hash | p2c | scored   (default p2c)
    #[arg(
        long,
        value_name = "NAME",
        value_parser = Checked(algorithm),
        verbatim_doc_comment,
        help_heading = OPTIONS,
    )]
    algorithm: Option<Algorithm>,

    /// consistent-hash: key requests by this header
    /// (default: the client's IP address)
    #[arg(
        long,
        value_name = "NAME",
        value_parser = Checked(header_name),
        verbatim_doc_comment,
        help_heading = OPTIONS,
    )]
    hash_header: Option<HeaderName>,

    /// ip-hash, consistent-hash by IP: proxies of yours in front of
    /// this one whose X-Forwarded-For entries are trusted (default 0)
    #[arg(
        long,
        value_name = "N",
        value_parser = Checked(number::<usize>),
        verbatim_doc_comment,
        help_heading = OPTIONS,
    )]
    trusted_hops: Option<usize>,

    /// probe GET PATH on every backend (2xx is healthy);
    /// passive outlier detection is always on
    #[arg(
        long,
        value_name = "PATH",
        value_parser = Checked(path),
        verbatim_doc_comment,
        help_heading = OPTIONS,
    )]
    health_path: Option<String>,

    /// time between probes, e.g. 1s, 500ms, 1m 30s (default 1s)
    #[arg(long, value_name = "DURATION", value_parser = Checked(duration), help_heading = OPTIONS)]
    health_interval: Option<Duration>,

    /// retries on another backend, within a budget (default 2)
    #[arg(long, value_name = "N", value_parser = Checked(number::<u32>), help_heading = OPTIONS)]
    retries: Option<u32>,

    /// serve GET /status: a JSON array, one object per backend:
    /// address, weight, healthy, state (healthy, slow-start,
    /// unhealthy, ejected), in_flight, requests, failures
    /// (attempts with no answer or a 5xx one), ejections
    #[arg(
        long,
        value_name = "ADDR",
        value_parser = Checked(address),
        verbatim_doc_comment,
        help_heading = OPTIONS,
    )]
    admin: Option<SocketAddr>,

    /// worker threads (default: the number of cores)
    #[arg(long, value_name = "N", value_parser = Checked(workers), help_heading = OPTIONS)]
    workers: Option<usize>,

    /// how long each attempt may wait for a backend's response head,
    /// counted from the end of the request body (default 30s);
    /// a timed-out attempt is a failure of that backend
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = Checked(duration),
        verbatim_doc_comment,
        help_heading = OPTIONS,
    )]
    attempt_timeout: Option<Duration>,

    /// on SIGTERM or SIGINT, how long requests in flight may
    /// take to finish before the proxy exits (default 30s)
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = Checked(duration),
        verbatim_doc_comment,
        help_heading = OPTIONS,
    )]
    drain_timeout: Option<Duration>,

    /// how long a client may take to send a request head,
    /// on both listeners (default 10s)
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = Checked(duration),
        verbatim_doc_comment,
        help_heading = OPTIONS,
    )]
    header_timeout: Option<Duration>,

    /// close keep-alive connections idle this long, and those whose
    /// client stops reading or stalls an upload this long (default 60s)
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = Checked(duration),
        verbatim_doc_comment,
        help_heading = OPTIONS,
    )]
    idle_timeout: Option<Duration>,

    /// client connections held at once on --listen; more wait
    /// in the listen queue (default 10000; --admin: 64)
    #[arg(
        long,
        value_name = "N",
        value_parser = Checked(connections),
        verbatim_doc_comment,
        help_heading = OPTIONS,
    )]
    max_connections: Option<usize>,

    /// requests whose headers are larger get 431 from the proxy
    /// instead of reaching a backend (default 65536, at least 8192)
    #[arg(
        long,
        value_name = "BYTES",
        value_parser = Checked(header_bytes),
        verbatim_doc_comment,
        help_heading = OPTIONS,
    )]
    max_header_bytes: Option<usize>,

    /// let an edit of --backends-file that lists no backend empty
    /// the set (by default it keeps the last good set)
    #[arg(long, verbatim_doc_comment, help_heading = OPTIONS)]
    allow_empty_backends: bool,

    /// prefer backends in zone Z (Envoy's zone-aware rule with every
    /// caller in Z: all traffic stays while the zone has a healthy backend)
    #[arg(
        long,
        value_name = "Z",
        value_parser = Checked(zone),
        verbatim_doc_comment,
        help_heading = OPTIONS,
    )]
    zone: Option<String>,

    /// scored: the weights of its scorers, e.g. queue=2,kv=2,inflight=1
    /// (the default), from each backend's reports (queue, KV cache)
    /// and the proxy's requests in flight
    #[arg(
        long,
        value_name = "SPEC",
        value_parser = Checked(scorer),
        verbatim_doc_comment,
        help_heading = OPTIONS,
    )]
    scorer: Option<Weights>,

    /// scored: poll each backend's Prometheus page at PATH
    /// (vLLM, SGLang or TGI names) every 100ms
    #[arg(
        long,
        value_name = "PATH",
        value_parser = Checked(path),
        verbatim_doc_comment,
        help_heading = OPTIONS,
    )]
    metrics_path: Option<String>,

    /// scored: ask each backend for an ORCA load report in every
    /// answer (endpoint-load-metrics, kept from clients)
    #[arg(long, verbatim_doc_comment, help_heading = OPTIONS)]
    load_reports: bool,

    /// print this help
    #[arg(short, long, action = ArgAction::HelpLong, help_heading = OPTIONS)]
    help: Option<bool>,

    /// Anything that is not an option, refused by its parser with a clear
    /// message (clap's own error would not show bytes that are not UTF-8).
    #[arg(hide = true, value_parser = Checked(unexpected))]
    unexpected: Vec<String>,
}

/// Parses the arguments after the program name.
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, CliError> {
    let program = std::iter::once(OsString::from("proxy"));
    match Flags::try_parse_from(program.chain(args)) {
        Ok(flags) => flags.check().map(|args| Command::Run(Box::new(args))),
        Err(error) if error.kind() == ErrorKind::DisplayHelp => {
            Ok(Command::Help(error.render().to_string()))
        }
        Err(error) => Err(one_line(&error)),
    }
}

/// A clap error as one line: the flag or argument, and what is wrong.
fn one_line(clap_error: &clap::Error) -> CliError {
    let text = |kind| match clap_error.get(kind) {
        Some(ContextValue::String(text)) => Some(text.as_str()),
        _ => None,
    };
    // `--listen <ADDR>` as clap names an argument: the flag alone.
    let flag = text(ContextKind::InvalidArg)
        .map(|arg| arg.split([' ', '=']).next().unwrap_or(arg))
        .unwrap_or("an option");
    // Our parsers' own messages (see `values::Checked`).
    if let Some(message) = text(ContextKind::Custom) {
        return error(message);
    }
    match clap_error.kind() {
        ErrorKind::UnknownArgument if flag.starts_with("--") => {
            error(format!("unknown option `{}`", flag.escape_debug()))
        }
        ErrorKind::UnknownArgument => error(format!(
            "unexpected argument `{}` (options start with --)",
            flag.escape_debug()
        )),
        // `--retries` last, `--listen --backend ...`, `--backends-file=`.
        ErrorKind::InvalidValue if text(ContextKind::InvalidValue).is_none_or(str::is_empty) => {
            error(format!("{flag} needs a value"))
        }
        ErrorKind::ArgumentConflict
            if text(ContextKind::PriorArg) == text(ContextKind::InvalidArg) =>
        {
            error(format!("{flag} is given more than once"))
        }
        ErrorKind::MissingRequiredArgument => {
            let missing = match clap_error.get(ContextKind::InvalidArg) {
                Some(ContextValue::Strings(args)) => args.join(" and "),
                _ => String::from("an option"),
            };
            error(format!("missing {}", missing.replace(['<', '>'], "")))
        }
        // Anything else clap may refuse: its kind, and the flag if known.
        kind => match text(ContextKind::InvalidArg) {
            Some(_) => error(format!("{flag}: {kind}")),
            None => error(kind.to_string()),
        },
    }
}

impl Flags {
    /// The rules that span several flags, and the defaults.
    fn check(self) -> Result<Args, CliError> {
        let mut backends: Vec<(SocketAddr, u32)> = Vec::with_capacity(self.backend.len());
        for (addr, weight) in self.backend {
            if backends.iter().any(|&(known, _)| known == addr) {
                return Err(error(format!("--backend {addr} is given more than once")));
            }
            backends.push((addr, weight));
        }
        if self.discovery.is_some() && (!backends.is_empty() || self.backends_file.is_some()) {
            return Err(error(
                "--discovery cannot be combined with --backend or --backends-file",
            ));
        }
        if self.subset.is_some() && self.discovery.is_none() {
            return Err(error("--subset applies only to --discovery"));
        }
        if self.subset == Some(0) {
            return Err(error("--subset 0: a subset holds at least one backend"));
        }
        let backends = match (backends.is_empty(), self.backends_file) {
            (true, None) if self.discovery.is_some() => Backends::Static(Vec::new()),
            (true, None) => return Err(error(
                "no backends: give --backend ADDR[@WEIGHT] (repeatable) or --backends-file FILE",
            )),
            (false, Some(_)) => return Err(error(
                "--backend and --backends-file cannot be combined: list every backend in the file",
            )),
            (false, None) => Backends::Static(backends),
            (true, Some(path)) => {
                let initial = read_backends_file(&path).map_err(error)?;
                if initial.is_empty() && !self.allow_empty_backends {
                    return Err(error(format!(
                        "--backends-file {}: lists no backend (give --allow-empty-backends to start with none)",
                        path.display()
                    )));
                }
                Backends::File {
                    path,
                    initial,
                    allow_empty: self.allow_empty_backends,
                }
            }
        };
        if self.allow_empty_backends && !matches!(backends, Backends::File { .. }) {
            return Err(error(
                "--allow-empty-backends applies only to --backends-file",
            ));
        }
        let algorithm = self.algorithm.unwrap_or(Algorithm::P2c);
        if self.hash_header.is_some() && algorithm != Algorithm::ConsistentHash {
            return Err(error(
                "--hash-header applies only to --algorithm consistent-hash",
            ));
        }
        let hashes_ip = algorithm == Algorithm::IpHash
            || (algorithm == Algorithm::ConsistentHash && self.hash_header.is_none());
        if self.trusted_hops.is_some() && !hashes_ip {
            return Err(error(
                "--trusted-hops applies only to --algorithm ip-hash, or consistent-hash without --hash-header",
            ));
        }
        let scored = algorithm == Algorithm::Scored;
        if !scored && (self.scorer.is_some() || self.metrics_path.is_some() || self.load_reports) {
            return Err(error(
                "--scorer, --metrics-path and --load-reports apply only to --algorithm scored",
            ));
        }
        if self.health_interval.is_some() && self.health_path.is_none() {
            return Err(error("--health-interval needs --health-path"));
        }
        if self.admin == Some(self.listen) && self.listen.port() != 0 {
            return Err(error("--admin and --listen must differ"));
        }
        Ok(Args {
            listen: self.listen,
            backends,
            algorithm,
            hash_header: self.hash_header,
            trusted_hops: self.trusted_hops.unwrap_or(0),
            health_path: self.health_path,
            health_interval: self.health_interval.unwrap_or(DEFAULT_HEALTH_INTERVAL),
            retries: self.retries.unwrap_or(DEFAULT_RETRIES),
            admin: self.admin,
            workers: self.workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            }),
            attempt_timeout: self.attempt_timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT),
            drain_timeout: self.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT),
            header_timeout: self.header_timeout.unwrap_or(DEFAULT_HEADER_TIMEOUT),
            idle_timeout: self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
            max_connections: self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_header_bytes: self.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES),
            discovery: self.discovery,
            subset: self.subset,
            zone: self.zone,
            scorer: self.scorer.unwrap_or(Weights {
                queue: 2.0,
                kv_cache: 2.0,
                in_flight: 1.0,
                latency: 0.0,
                adapter: 0.0,
            }),
            reports: ReportSettings {
                enabled: scored,
                load_reports: self.load_reports,
                metrics_path: self.metrics_path,
            },
        })
    }
}
