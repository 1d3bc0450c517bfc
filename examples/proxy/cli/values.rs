//! Parsers for the values of command-line flags; each error is one line.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tower_lb::discover::{parse_backends, MAX_FILE_LEN};

use super::{error, CliError};

pub(super) fn address(name: &str, value: &str) -> Result<SocketAddr, CliError> {
    value.parse().map_err(|_| {
        error(format!(
            "--{name}: `{}` is not a socket address (expected IP:PORT or [IPv6]:PORT)",
            value.escape_debug()
        ))
    })
}

pub(super) fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, CliError> {
    value.parse().map_err(|_| {
        error(format!(
            "--{name}: `{}` is not a whole number",
            value.escape_debug()
        ))
    })
}

/// `1s`, `500ms`, `2m`: a whole number and a unit; zero is refused.
pub(super) fn duration(name: &str, value: &str) -> Result<Duration, CliError> {
    let bad = || {
        error(format!(
            "--{name}: `{}` is not a duration (e.g. 1s, 500ms, 2m)",
            value.escape_debug()
        ))
    };
    let split = value.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.checked_mul(60).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    if duration.is_zero() {
        return Err(error(format!("--{name} must be more than zero")));
    }
    Ok(duration)
}

/// Reads and checks the backends file at start, so that a wrong path or a
/// bad line stops the proxy with status 2 instead of running empty.
pub(super) fn read_backends_file(path: &Path) -> Result<Vec<(SocketAddr, u32)>, CliError> {
    let fail = |reason: String| error(format!("--backends-file {}: {reason}", path.display()));
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_LEN as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| fail("not valid UTF-8".into()))?;
    parse_backends(&text).map_err(|e| fail(e.to_string()))
}
