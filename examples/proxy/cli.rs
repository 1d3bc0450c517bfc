//! The command line: a hand-rolled parser, so the example needs no
//! argument-parsing crate. Every mistake is one line of text; `main` prints
//! it and exits with status 2.

mod values;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use tower_lb::discover::parse_backend;

use self::values::{address, duration, number, read_backends_file};

/// `--help`.
pub(crate) const USAGE: &str = include_str!("usage.txt");

/// The default time between active health probes.
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Command {
    Run(Box<Args>),
    Help,
}

/// A valid configuration.
#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) listen: SocketAddr,
    pub(crate) backends: Backends,
    pub(crate) algorithm: Algorithm,
    pub(crate) hash_header: Option<HeaderName>,
    pub(crate) trusted_hops: usize,
    pub(crate) health_path: Option<String>,
    pub(crate) health_interval: Duration,
    pub(crate) retries: u32,
    pub(crate) admin: Option<SocketAddr>,
    pub(crate) workers: usize,
}

/// Where the backends come from.
#[derive(Debug)]
pub(crate) enum Backends {
    /// `--backend`, in the order given.
    Static(Vec<(SocketAddr, u32)>),
    /// `--backends-file`, with the entries it held at start.
    File {
        path: PathBuf,
        initial: Vec<(SocketAddr, u32)>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    IpHash,
    ConsistentHash,
    P2c,
}

impl Algorithm {
    const NAMES: [(&'static str, Algorithm); 6] = [
        ("round-robin", Algorithm::RoundRobin),
        ("weighted-round-robin", Algorithm::WeightedRoundRobin),
        ("least-connections", Algorithm::LeastConnections),
        ("ip-hash", Algorithm::IpHash),
        ("consistent-hash", Algorithm::ConsistentHash),
        ("p2c", Algorithm::P2c),
    ];

    fn parse(text: &str) -> Result<Self, CliError> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|&(_, algorithm)| algorithm)
            .ok_or_else(|| {
                CliError(format!(
                    "unknown algorithm `{}` (expected round-robin, weighted-round-robin, \
                     least-connections, ip-hash, consistent-hash or p2c)",
                    text.escape_debug()
                ))
            })
    }

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

/// Everything given, before the checks that span several flags.
#[derive(Default)]
struct Given {
    listen: Option<SocketAddr>,
    backends: Vec<(SocketAddr, u32)>,
    backends_file: Option<PathBuf>,
    algorithm: Option<Algorithm>,
    hash_header: Option<HeaderName>,
    trusted_hops: Option<usize>,
    health_path: Option<String>,
    health_interval: Option<Duration>,
    retries: Option<u32>,
    admin: Option<SocketAddr>,
    workers: Option<usize>,
}

/// Parses the arguments after the program name.
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, CliError> {
    let mut args = args.into_iter();
    let mut given = Given::default();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|arg| error(format!("argument {arg:?} is not valid UTF-8")))?;
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(error(format!(
                "unexpected argument `{}` (options start with --)",
                arg.escape_debug()
            )));
        };
        // `--flag=value` and `--flag value` are both accepted.
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (flag, None),
        };
        if !FLAGS.contains(&name) {
            return Err(error(format!("unknown option `--{}`", name.escape_debug())));
        }
        let value = match inline {
            Some(value) => value,
            None => next_value(&mut args, name)?,
        };
        given.set(name, &value)?;
    }
    given.check().map(|args| Command::Run(Box::new(args)))
}

const FLAGS: [&str; 11] = [
    "listen",
    "backend",
    "backends-file",
    "algorithm",
    "hash-header",
    "trusted-hops",
    "health-path",
    "health-interval",
    "retries",
    "admin",
    "workers",
];

fn next_value(args: &mut impl Iterator<Item = OsString>, name: &str) -> Result<String, CliError> {
    let missing = || error(format!("--{name} needs a value"));
    let value = args.next().ok_or_else(missing)?;
    let value = value
        .into_string()
        .map_err(|value| error(format!("--{name}: {value:?} is not valid UTF-8")))?;
    // `--listen --backend x` forgot the value: say so rather than report
    // `--backend` as a bad address.
    if value.starts_with("--") {
        return Err(missing());
    }
    Ok(value)
}

/// Sets a flag that may be given once.
fn once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), CliError> {
    if slot.is_some() {
        return Err(error(format!("--{name} is given more than once")));
    }
    *slot = Some(value);
    Ok(())
}

impl Given {
    fn set(&mut self, name: &str, value: &str) -> Result<(), CliError> {
        match name {
            "listen" => once(&mut self.listen, name, address(name, value)?),
            "admin" => once(&mut self.admin, name, address(name, value)?),
            "backend" => {
                let (addr, weight) =
                    parse_backend(value).map_err(|e| error(format!("--backend {value}: {e}")))?;
                if self.backends.iter().any(|&(known, _)| known == addr) {
                    return Err(error(format!("--backend {addr} is given more than once")));
                }
                self.backends.push((addr, weight));
                Ok(())
            }
            "backends-file" => once(&mut self.backends_file, name, PathBuf::from(value)),
            "algorithm" => once(&mut self.algorithm, name, Algorithm::parse(value)?),
            "hash-header" => {
                let header = HeaderName::try_from(value).map_err(|_| {
                    error(format!(
                        "--hash-header: `{}` is not a header name",
                        value.escape_debug()
                    ))
                })?;
                once(&mut self.hash_header, name, header)
            }
            "trusted-hops" => once(&mut self.trusted_hops, name, number(name, value)?),
            "health-path" => {
                if !value.starts_with('/') || http::uri::PathAndQuery::try_from(value).is_err() {
                    return Err(error(format!(
                        "--health-path: `{}` is not a path (it starts with /)",
                        value.escape_debug()
                    )));
                }
                once(&mut self.health_path, name, value.to_owned())
            }
            "health-interval" => once(&mut self.health_interval, name, duration(name, value)?),
            "retries" => once(&mut self.retries, name, number(name, value)?),
            "workers" => {
                let workers: usize = number(name, value)?;
                if workers == 0 || workers > 1024 {
                    return Err(error("--workers must be from 1 to 1024"));
                }
                once(&mut self.workers, name, workers)
            }
            _ => unreachable!("every name in FLAGS has a case"),
        }
    }

    fn check(self) -> Result<Args, CliError> {
        let listen = self.listen.ok_or_else(|| error("missing --listen ADDR"))?;
        let backends = match (self.backends.is_empty(), self.backends_file) {
            (true, None) => return Err(error(
                "no backends: give --backend ADDR[@WEIGHT] (repeatable) or --backends-file FILE",
            )),
            (false, Some(_)) => return Err(error(
                "--backend and --backends-file cannot be combined: list every backend in the file",
            )),
            (false, None) => Backends::Static(self.backends),
            (true, Some(path)) => {
                let initial = read_backends_file(&path)?;
                Backends::File { path, initial }
            }
        };
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
        if self.health_interval.is_some() && self.health_path.is_none() {
            return Err(error("--health-interval needs --health-path"));
        }
        if self.admin.is_some() && self.admin == Some(listen) && listen.port() != 0 {
            return Err(error("--admin and --listen must differ"));
        }
        Ok(Args {
            listen,
            backends,
            algorithm,
            hash_header: self.hash_header,
            trusted_hops: self.trusted_hops.unwrap_or(0),
            health_path: self.health_path,
            health_interval: self.health_interval.unwrap_or(DEFAULT_HEALTH_INTERVAL),
            retries: self.retries.unwrap_or(2),
            admin: self.admin,
            workers: self.workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            }),
        })
    }
}
