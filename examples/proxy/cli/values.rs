//! Parsers for the values of command-line flags.
//!
//! Each takes the flag as written (`--listen`) and the value, and returns
//! the value or one line of text that names both; [`Checked`] runs them
//! inside clap.

use std::ffi::OsStr;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;
use tower_lb::pick::llm::Weights;

use clap::builder::TypedValueParser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use http::HeaderName;
use tower_lb::discover::{parse_backend, parse_backends, MAX_FILE_LEN};

use super::Algorithm;

/// The most worker threads `--workers` accepts.
const MAX_WORKERS: usize = 1024;

/// A clap value parser made of a function of the flag and the value.
///
/// Clap's own parsers for functions see only `&str` and report a value that
/// is not UTF-8 without naming its flag; this one names it. An error keeps
/// its whole line in the `Custom` context of a `ValueValidation` error,
/// where `cli::one_line` finds it.
#[derive(Clone, Copy)]
pub(super) struct Checked<T>(pub(super) fn(&str, &str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Checked<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let long = arg.and_then(clap::Arg::get_long);
        let flag = long.map(|long| format!("--{long}")).unwrap_or_default();
        let parsed = match value.to_str() {
            Some(text) => (self.0)(&flag, text),
            None if long.is_some() => Err(format!("{flag}: {value:?} is not valid UTF-8")),
            None => Err(format!("argument {value:?} is not valid UTF-8")),
        };
        parsed.map_err(|message| {
            let mut error = clap::Error::new(ErrorKind::ValueValidation).with_cmd(cmd);
            error.insert(ContextKind::InvalidArg, ContextValue::String(flag));
            error.insert(
                ContextKind::InvalidValue,
                ContextValue::String(value.to_string_lossy().into_owned()),
            );
            error.insert(ContextKind::Custom, ContextValue::String(message));
            error
        })
    }
}

/// `IP:PORT` or `[IPv6]:PORT`; no names, which would need a resolver.
pub(super) fn address(flag: &str, value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        format!(
            "{flag}: `{}` is not a socket address (expected IP:PORT or [IPv6]:PORT)",
            value.escape_debug()
        )
    })
}

/// `ADDR[@WEIGHT]`, as in a backends file.
pub(super) fn backend(flag: &str, value: &str) -> Result<(SocketAddr, u32), String> {
    parse_backend(value).map_err(|e| format!("{flag} {value}: {e}"))
}

/// One of [`Algorithm::NAMES`].
pub(super) fn algorithm(flag: &str, value: &str) -> Result<Algorithm, String> {
    Algorithm::from_name(value).ok_or_else(|| {
        format!(
            "{flag}: unknown algorithm `{}` (expected round-robin, weighted-round-robin, \
             least-connections, ip-hash, consistent-hash, p2c or scored)",
            value.escape_debug()
        )
    })
}

/// `--scorer`: `NAME=WEIGHT` pairs for `queue`, `kv` and `inflight`
/// (unnamed ones are 0).
pub(super) fn scorer(flag: &str, text: &str) -> Result<Weights, String> {
    let mut weights = Weights {
        queue: 0.0,
        kv_cache: 0.0,
        in_flight: 0.0,
        latency: 0.0,
        adapter: 0.0,
    };
    for item in text.split(',').filter(|s| !s.trim().is_empty()) {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| format!("{flag}: `{}` is not NAME=WEIGHT", item.escape_debug()))?;
        let value: f64 = value
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| {
                format!(
                    "{flag}: the weight of `{}` must be a number ≥ 0",
                    name.escape_debug()
                )
            })?;
        match name.trim() {
            "queue" => weights.queue = value,
            "kv" => weights.kv_cache = value,
            "inflight" => weights.in_flight = value,
            other => {
                return Err(format!(
                    "{flag}: unknown scorer `{}` (queue, kv or inflight)",
                    other.escape_debug()
                ))
            }
        }
    }
    Ok(weights)
}

/// A valid HTTP header name (any case; stored lower-case).
pub(super) fn header_name(flag: &str, value: &str) -> Result<HeaderName, String> {
    HeaderName::try_from(value)
        .map_err(|_| format!("{flag}: `{}` is not a header name", value.escape_debug()))
}

/// An absolute path, with an optional query, as a request target.
pub(super) fn path(flag: &str, value: &str) -> Result<String, String> {
    if !value.starts_with('/') || http::uri::PathAndQuery::try_from(value).is_err() {
        return Err(format!(
            "{flag}: `{}` is not a path (it starts with /)",
            value.escape_debug()
        ));
    }
    Ok(value.to_owned())
}

/// A whole number that fits `T`.
pub(super) fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: `{}` is not a whole number", value.escape_debug()))
}

/// A number of worker threads, from 1 to [`MAX_WORKERS`].
pub(super) fn workers(flag: &str, value: &str) -> Result<usize, String> {
    let workers: usize = number(flag, value)?;
    if workers == 0 || workers > MAX_WORKERS {
        return Err(format!("{flag} must be from 1 to {MAX_WORKERS}"));
    }
    Ok(workers)
}

/// A number of connections, from 1 to [`super::MAX_CONNECTIONS`].
pub(super) fn connections(flag: &str, value: &str) -> Result<usize, String> {
    let connections: usize = number(flag, value)?;
    if connections == 0 || connections > super::MAX_CONNECTIONS {
        return Err(format!(
            "{flag} must be from 1 to {}",
            super::MAX_CONNECTIONS
        ));
    }
    Ok(connections)
}

/// A limit on request header bytes: at least 8 KiB (hyper's smallest read
/// buffer), at most 16 MiB.
pub(super) fn header_bytes(flag: &str, value: &str) -> Result<usize, String> {
    let bytes: usize = number(flag, value)?;
    if !(8 * 1024..=16 << 20).contains(&bytes) {
        return Err(format!("{flag} must be from 8192 to 16777216"));
    }
    Ok(bytes)
}

/// A duration as `humantime` reads it (`1s`, `500ms`, `2m`, `1m 30s`);
/// zero is refused.
pub(super) fn duration(flag: &str, value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value).map_err(|_| {
        format!(
            "{flag}: `{}` is not a duration (e.g. 1s, 500ms, 2m)",
            value.escape_debug()
        )
    })?;
    if duration.is_zero() {
        return Err(format!("{flag} must be more than zero"));
    }
    Ok(duration)
}

/// Refuses anything that is not an option (clap hands such arguments to a
/// hidden positional), naming it as given.
pub(super) fn unexpected(_flag: &str, value: &str) -> Result<String, String> {
    Err(format!(
        "unexpected argument `{}` (options start with --)",
        value.escape_debug()
    ))
}

/// Reads and checks the backends file at start, so that a wrong path or a
/// bad line stops the proxy with status 2 instead of running empty.
///
/// Only a regular file is read: a FIFO or a device is refused before it is
/// opened, and it is opened non-blocking, so that one swapped in between the
/// check and the open cannot make the start wait for a writer either.
pub(super) fn read_backends_file(path: &Path) -> Result<Vec<(SocketAddr, u32)>, String> {
    let fail = |reason: String| format!("--backends-file {}: {reason}", path.display());
    let regular = |metadata: std::fs::Metadata| {
        if metadata.is_file() {
            Ok(())
        } else {
            Err(fail("not a regular file".into()))
        }
    };
    regular(std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    regular(
        file.metadata()
            .map_err(|e| fail(format!("cannot read: {e}")))?,
    )?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| fail("not valid UTF-8".into()))?;
    parse_backends(&text).map_err(|e| fail(e.to_string()))
}

/// `--discovery`: a registry spec.
pub(super) fn discovery(flag: &str, text: &str) -> Result<crate::registry::Discovery, String> {
    crate::registry::parse(text).map_err(|e| format!("{flag} {text}: {e}"))
}

/// `--zone`: a zone name, as a backends file's `zone=` field takes it.
pub(super) fn zone(flag: &str, text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= tower_lb::discover::MAX_ZONE_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{flag} {text}: not a zone name (letters, digits, `.`, `-`, `_`, `/`)"
        ))
    }
}
