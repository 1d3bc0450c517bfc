//! The backends format: one `ADDR[@WEIGHT] [zone=ZONE]` a line.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// One backend of a backends file: its address, weight and zone.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backend {
    /// The socket address.
    pub addr: SocketAddr,
    /// The weight, at least 1.
    pub weight: u32,
    /// The zone given by a `zone=` field, if any.
    pub zone: Option<Arc<str>>,
}

/// The longest zone name a `zone=` field may hold, in bytes.
pub const MAX_ZONE_LEN: usize = 128;

/// The longest line [`parse_backends`] accepts, comments included, in bytes.
pub const MAX_LINE_LEN: usize = 1024;

/// The largest backends file [`parse_backends`] accepts, in bytes.
pub const MAX_FILE_LEN: usize = 1024 * 1024;

/// The most backends one file may list.
pub const MAX_ENTRIES: usize = 10_000;

/// Parses one backend: a socket address (`10.0.0.1:8080`, `[::1]:8080`),
/// optionally followed by `@` and a weight of at least 1 (`10.0.0.1:8080@3`).
/// Without a weight the weight is 1.
///
/// Surrounding whitespace is ignored; comments are not allowed here (see
/// [`parse_backends`] for the file format). The error has no line number.
///
/// ```
/// use tower_lb::discover::parse_backend;
///
/// assert_eq!(parse_backend("127.0.0.1:9001@3").unwrap(), ("127.0.0.1:9001".parse().unwrap(), 3));
/// assert_eq!(parse_backend(" [::1]:9001 ").unwrap().1, 1);
/// assert_eq!(
///     parse_backend("127.0.0.1:9001@x").unwrap_err().to_string(),
///     "weight `x` is not a number",
/// );
/// assert!(parse_backend("127.0.0.1:9001@0").is_err());
/// ```
///
/// A `zone=` field (see [`parse_backend_entry`]) is accepted and dropped.
pub fn parse_backend(text: &str) -> Result<(SocketAddr, u32), BackendsError> {
    parse_backend_entry(text).map(|backend| (backend.addr, backend.weight))
}

/// Parses one backend with its fields: `ADDR[@WEIGHT]`, then optionally
/// `zone=ZONE` separated by whitespace. A zone is 1 to [`MAX_ZONE_LEN`]
/// bytes of letters, digits, `.`, `-`, `_` and `/`; any other field is an
/// error.
///
/// ```
/// use tower_lb::discover::parse_backend_entry;
///
/// let backend = parse_backend_entry("127.0.0.1:9001@3 zone=eu-west-1a").unwrap();
/// assert_eq!(backend.weight, 3);
/// assert_eq!(backend.zone.as_deref(), Some("eu-west-1a"));
/// assert!(parse_backend_entry("127.0.0.1:9001 rack=7").is_err());
/// assert!(parse_backend_entry("127.0.0.1:9001 zone=").is_err());
/// ```
pub fn parse_backend_entry(text: &str) -> Result<Backend, BackendsError> {
    parse_entry(text.trim()).map_err(|kind| BackendsError::new(None, kind))
}

/// Parses a backends file: one backend a line in the form of
/// [`parse_backend`] (a `zone=` field is accepted and dropped: see
/// [`parse_backends_with_zones`]); `#` starts a comment that runs to the end of the line;
/// blank lines are ignored; surrounding whitespace is trimmed.
///
/// ```text
/// # the API fleet
/// 10.0.0.1:8080
/// 10.0.0.2:8080@3   # twice as big as the others
/// [2001:db8::7]:8080@2
/// ```
///
/// The first problem found is returned, with its line number (counted from
/// 1): a bad address or weight, weight 0, an address listed twice, a line
/// longer than [`MAX_LINE_LEN`], more than [`MAX_ENTRIES`] backends. Any
/// input gives a list or an error, never a panic.
pub fn parse_backends(text: &str) -> Result<Vec<(SocketAddr, u32)>, BackendsError> {
    parse_backends_with_zones(text).map(|backends| {
        backends
            .into_iter()
            .map(|backend| (backend.addr, backend.weight))
            .collect()
    })
}

/// [`parse_backends`], keeping each backend's zone (the line format of
/// [`parse_backend_entry`]):
///
/// ```text
/// 10.0.0.1:8080 zone=eu-west-1a
/// 10.0.0.2:8080@3 zone=eu-west-1b
/// ```
pub fn parse_backends_with_zones(text: &str) -> Result<Vec<Backend>, BackendsError> {
    if text.len() > MAX_FILE_LEN {
        return Err(BackendsError::new(None, BackendsErrorKind::FileTooLarge));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    let mut backends = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let error = |kind| BackendsError::new(Some(line), kind);
        if raw.len() > MAX_LINE_LEN {
            return Err(error(BackendsErrorKind::LineTooLong));
        }
        let entry = raw.split_once('#').map_or(raw, |(entry, _comment)| entry);
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let backend = parse_entry(entry).map_err(error)?;
        let addr = backend.addr;
        if let Some(&first) = seen.get(&addr) {
            return Err(error(BackendsErrorKind::Duplicate { addr, first }));
        }
        if backends.len() == MAX_ENTRIES {
            return Err(error(BackendsErrorKind::TooManyEntries));
        }
        seen.insert(addr, line);
        backends.push(backend);
    }
    Ok(backends)
}

/// [`parse_backends_with_zones`] over raw bytes, which must be UTF-8.
pub(crate) fn parse_backends_bytes(bytes: &[u8]) -> Result<Vec<Backend>, BackendsError> {
    if bytes.len() > MAX_FILE_LEN {
        return Err(BackendsError::new(None, BackendsErrorKind::FileTooLarge));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_backends_with_zones(text),
        Err(error) => {
            let valid = &bytes[..error.valid_up_to()];
            let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
            Err(BackendsError::new(Some(line), BackendsErrorKind::NotUtf8))
        }
    }
}

fn parse_entry(entry: &str) -> Result<Backend, BackendsErrorKind> {
    // Fields are the words with `=`; the other words are the address and
    // its weight (whitespace around `@` is allowed).
    let mut zone = None;
    let mut rest = String::new();
    for word in entry.split_whitespace() {
        match word.split_once('=') {
            Some(("zone", name)) => {
                let valid = !name.is_empty()
                    && name.len() <= MAX_ZONE_LEN
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
                if !valid {
                    return Err(BackendsErrorKind::BadZone(shorten(name)));
                }
                zone = Some(Arc::from(name));
            }
            Some(_) => return Err(BackendsErrorKind::UnknownField(shorten(word))),
            None => {
                if !rest.is_empty() {
                    rest.push(' ');
                }
                rest.push_str(word);
            }
        }
    }
    let (addr, weight) = parse_addr_weight(&rest)?;
    Ok(Backend { addr, weight, zone })
}

fn parse_addr_weight(entry: &str) -> Result<(SocketAddr, u32), BackendsErrorKind> {
    let (addr, weight) = match entry.split_once('@') {
        Some((addr, weight)) => (addr.trim_end(), Some(weight.trim_start())),
        None => (entry, None),
    };
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| BackendsErrorKind::BadAddress(shorten(addr)))?;
    let weight = match weight {
        None => 1,
        Some(text) => match text.parse::<u32>() {
            Ok(0) => return Err(BackendsErrorKind::ZeroWeight),
            Ok(weight) => weight,
            Err(_) => return Err(BackendsErrorKind::BadWeight(shorten(text))),
        },
    };
    Ok((addr, weight))
}

/// Keeps error messages one short line whatever the input.
fn shorten(text: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = text.chars().take(MAX).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// What is wrong with a backends line or file, and where.
///
/// Its `Display` names the file (when read from one) and the line:
/// `backends.txt: line 3: weight `x` is not a number`.
#[derive(Debug)]
pub struct BackendsError {
    path: Option<PathBuf>,
    line: Option<usize>,
    kind: BackendsErrorKind,
}

/// The kinds of [`BackendsError`].
#[derive(Debug)]
#[non_exhaustive]
pub enum BackendsErrorKind {
    /// Not a socket address (`IP:PORT` or `[IPv6]:PORT`); holds the text
    /// found, shortened to 64 characters.
    BadAddress(String),
    /// The weight is not a number, or does not fit in a `u32`; holds the text
    /// found, shortened to 64 characters.
    BadWeight(String),
    /// Weight 0: a file lists the backends that take traffic, so a backend
    /// to leave out is removed or commented out instead.
    ZeroWeight,
    /// An address listed twice.
    Duplicate {
        /// The address.
        addr: SocketAddr,
        /// The line that first listed it.
        first: usize,
    },
    /// A line longer than [`MAX_LINE_LEN`].
    LineTooLong,
    /// A file larger than [`MAX_FILE_LEN`].
    FileTooLarge,
    /// More than [`MAX_ENTRIES`] backends.
    TooManyEntries,
    /// A file that is not UTF-8; the line is where the first bad byte is.
    NotUtf8,
    /// A `zone=` field whose zone is empty, too long or holds characters
    /// other than letters, digits, `.`, `-`, `_` and `/`; holds the text
    /// found, shortened to 64 characters.
    BadZone(String),
    /// A `NAME=VALUE` field other than `zone=`; holds the field, shortened
    /// to 64 characters.
    UnknownField(String),
    /// The file could not be read.
    Io(io::Error),
    /// The path is not a regular file (a FIFO, a device, a directory): it
    /// is never opened for reading, so it cannot block discovery.
    NotARegularFile,
    /// Reading the file took longer than the read timeout (a hung network
    /// file system); the read is abandoned and no other one starts until it
    /// ends.
    ReadTimedOut(std::time::Duration),
    /// The file lists no backend (it is empty, or only comments) and the
    /// discovery does not allow an empty set: the last good set is kept.
    Empty,
}

impl BackendsError {
    pub(crate) fn new(line: Option<usize>, kind: BackendsErrorKind) -> Self {
        Self {
            path: None,
            line,
            kind,
        }
    }

    pub(crate) fn with_path(mut self, path: PathBuf) -> Self {
        self.path = Some(path);
        self
    }

    /// The line at fault, counted from 1; `None` for problems of the whole
    /// file (too large, unreadable) and for [`parse_backend`].
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong.
    pub fn kind(&self) -> &BackendsErrorKind {
        &self.kind
    }

    /// The file the error was found in, if it came from a file.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }
}

impl fmt::Display for BackendsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write!(f, "{}: ", path.display())?;
        }
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        match &self.kind {
            BackendsErrorKind::BadAddress(text) => write!(
                f,
                "`{}` is not a socket address (expected IP:PORT or [IPv6]:PORT)",
                text.escape_debug()
            ),
            BackendsErrorKind::BadWeight(text)
                if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) =>
            {
                write!(f, "weight `{text}` is too large (at most {})", u32::MAX)
            }
            BackendsErrorKind::BadWeight(text) => {
                write!(f, "weight `{}` is not a number", text.escape_debug())
            }
            BackendsErrorKind::ZeroWeight => f.write_str(
                "weight 0 is not allowed (weights start at 1; remove or comment out the line instead)",
            ),
            BackendsErrorKind::Duplicate { addr, first } => {
                write!(f, "{addr} is already listed on line {first}")
            }
            BackendsErrorKind::LineTooLong => {
                write!(f, "line is longer than {MAX_LINE_LEN} bytes")
            }
            BackendsErrorKind::FileTooLarge => {
                write!(f, "file is larger than {MAX_FILE_LEN} bytes")
            }
            BackendsErrorKind::TooManyEntries => {
                write!(f, "more than {MAX_ENTRIES} backends")
            }
            BackendsErrorKind::BadZone(text) => write!(
                f,
                "zone `{}` is not valid (1 to {MAX_ZONE_LEN} letters, digits, `.`, `-`, `_`, `/`)",
                text.escape_debug()
            ),
            BackendsErrorKind::UnknownField(text) => write!(
                f,
                "unknown field `{}` (the only field is `zone=`)",
                text.escape_debug()
            ),
            BackendsErrorKind::NotUtf8 => f.write_str("not valid UTF-8"),
            BackendsErrorKind::Io(error) => write!(f, "cannot read: {error}"),
            BackendsErrorKind::NotARegularFile => {
                f.write_str("not a regular file (a FIFO, device or directory is never read)")
            }
            BackendsErrorKind::ReadTimedOut(after) => {
                write!(f, "reading took longer than {after:?}; abandoned")
            }
            BackendsErrorKind::Empty => f.write_str(
                "lists no backends; the last good set is kept (allow empty sets to apply it)",
            ),
        }
    }
}

impl std::error::Error for BackendsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            BackendsErrorKind::Io(error) => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn err(text: &str) -> BackendsError {
        parse_backends(text).unwrap_err()
    }

    #[test]
    fn parses_addresses_weights_comments_and_blanks() {
        let text =
            "\u{feff}# fleet\n\n  10.0.0.1:80  \n10.0.0.2:80@3 # big\r\n[::1]:9001 @ 2\n\t# end";
        assert_eq!(
            parse_backends(text).unwrap(),
            vec![
                (addr("10.0.0.1:80"), 1),
                (addr("10.0.0.2:80"), 3),
                (addr("[::1]:9001"), 2),
            ]
        );
        assert_eq!(parse_backends("").unwrap(), vec![]);
        assert_eq!(parse_backends("# only\n\n   \n").unwrap(), vec![]);
    }

    #[test]
    fn single_backend() {
        assert_eq!(
            parse_backend("127.0.0.1:9001").unwrap(),
            (addr("127.0.0.1:9001"), 1)
        );
        assert_eq!(
            parse_backend("127.0.0.1:9001@4294967295").unwrap().1,
            u32::MAX
        );
        let error = parse_backend("127.0.0.1:9001 # no comments here").unwrap_err();
        assert_eq!(error.line(), None);
        assert!(matches!(error.kind(), BackendsErrorKind::BadAddress(_)));
    }

    #[test]
    fn messages_name_the_line_and_the_problem() {
        let error = err("10.0.0.1:80\n\n10.0.0.2:80@x\n");
        assert_eq!(error.line(), Some(3));
        assert_eq!(error.to_string(), "line 3: weight `x` is not a number");

        assert_eq!(
        err("10.0.0.1:80@0").to_string(),
        "line 1: weight 0 is not allowed (weights start at 1; remove or comment out the line instead)"
    );
        assert_eq!(
            err("10.0.0.1:80@99999999999").to_string(),
            "line 1: weight `99999999999` is too large (at most 4294967295)"
        );
        assert_eq!(
            err("localhost:80").to_string(),
            "line 1: `localhost:80` is not a socket address (expected IP:PORT or [IPv6]:PORT)"
        );
        assert_eq!(
            err("10.0.0.1:80\n10.0.0.1:80@2").to_string(),
            "line 2: 10.0.0.1:80 is already listed on line 1"
        );
        let error = BackendsError::new(Some(2), BackendsErrorKind::LineTooLong)
            .with_path(PathBuf::from("backends.txt"));
        assert_eq!(
            error.to_string(),
            "backends.txt: line 2: line is longer than 1024 bytes"
        );
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let cases = [
            "@",
            "@@",
            "@1",
            "10.0.0.1:80@",
            "10.0.0.1:80@@1",
            "10.0.0.1:80@1@2",
            "10.0.0.1:80@-1",
            "10.0.0.1:80@1.5",
            "10.0.0.1:80@ 1 2",
            "10.0.0.1:80@٣",
            "10.0.0.1",
            "10.0.0.1:",
            "10.0.0.1:99999",
            ":80",
            "::1:80",
            "[::1]",
            "[::1:80",
            "10.0.0.256:80",
            "héllo wörld ✓",
            "\u{0}\u{1}\u{7f}",
            "10.0.0.1:80 10.0.0.2:80",
            "💥:💥@💥",
            "10.0.0.1:80@340282366920938463463374607431768211456",
        ];
        for case in cases {
            let error = parse_backends(case).expect_err(case);
            assert_eq!(error.line(), Some(1), "{case}");
            assert!(!error.to_string().is_empty());
            assert!(parse_backend(case).is_err(), "{case}");
        }
    }

    #[test]
    fn caps_bound_the_work() {
        let long = format!("# {}", "x".repeat(MAX_LINE_LEN));
        let error = err(&format!("10.0.0.1:80\n{long}"));
        assert_eq!(error.line(), Some(2));
        assert!(matches!(error.kind(), BackendsErrorKind::LineTooLong));

        let big = "#\n".repeat(MAX_FILE_LEN / 2 + 1);
        let error = err(&big);
        assert_eq!(error.line(), None);
        assert!(matches!(error.kind(), BackendsErrorKind::FileTooLarge));

        let many: String = (0..=MAX_ENTRIES)
            .map(|i| format!("10.{}.{}.{}:80\n", i / 65536, i / 256 % 256, i % 256))
            .collect();
        let error = err(&many);
        assert_eq!(error.line(), Some(MAX_ENTRIES + 1));
        assert!(matches!(error.kind(), BackendsErrorKind::TooManyEntries));
    }

    #[test]
    fn long_garbage_is_shortened_in_messages() {
        let text = format!("{}@1", "a".repeat(500));
        let message = err(&text).to_string();
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn control_characters_are_escaped_in_messages() {
        let message = err("bad\u{1b}[31maddr").to_string();
        assert!(!message.contains('\u{1b}'), "{message}");
    }

    #[test]
    fn bytes_must_be_utf8() {
        let error = parse_backends_bytes(b"10.0.0.1:80\n10.0.0.2:80 # \xff\n").unwrap_err();
        assert_eq!(error.line(), Some(2));
        assert!(matches!(error.kind(), BackendsErrorKind::NotUtf8));
        assert_eq!(
            parse_backends_bytes(b"10.0.0.1:80@2\n").unwrap(),
            vec![Backend {
                addr: addr("10.0.0.1:80"),
                weight: 2,
                zone: None
            }]
        );
    }

    #[test]
    fn io_errors_keep_their_source() {
        let io = io::Error::new(io::ErrorKind::NotFound, "gone");
        let error = BackendsError::new(None, BackendsErrorKind::Io(io)).with_path("b.txt".into());
        assert_eq!(error.to_string(), "b.txt: cannot read: gone");
        assert!(std::error::Error::source(&error).is_some());
        assert_eq!(error.path(), Some(std::path::Path::new("b.txt")));
    }

    #[test]
    fn zones_are_a_field_of_the_line() {
        let text =
            "10.0.0.1:80 zone=a\n10.0.0.2:80@3   zone=eu-west/1b # comment\n10.0.0.3:80 @ 2\n";
        let backends = parse_backends_with_zones(text).unwrap();
        let zones: Vec<Option<&str>> = backends.iter().map(|b| b.zone.as_deref()).collect();
        assert_eq!(zones, [Some("a"), Some("eu-west/1b"), None]);
        assert_eq!(backends[1].weight, 3);
        assert_eq!(backends[2].weight, 2);
        // The plain parser accepts and drops the zone.
        assert_eq!(parse_backends(text).unwrap()[1].1, 3);
        assert_eq!(parse_backend("10.0.0.1:80@2 zone=a").unwrap().1, 2);

        for (line, message) in [
            ("10.0.0.1:80 zone=", "line 1: zone `` is not valid"),
            (
                "10.0.0.1:80 zone=a b",
                "line 1: `10.0.0.1:80 b` is not a socket address",
            ),
            (
                "10.0.0.1:80 zone=a\u{e9}",
                "line 1: zone `a\u{e9}` is not valid",
            ),
            ("10.0.0.1:80 rack=3", "line 1: unknown field `rack=3`"),
        ] {
            let error = parse_backends_with_zones(line).unwrap_err().to_string();
            assert!(error.starts_with(message), "{line}: {error}");
        }
        let long = format!("10.0.0.1:80 zone={}", "z".repeat(MAX_ZONE_LEN + 1));
        assert!(matches!(
            parse_backends_with_zones(&long).unwrap_err().kind(),
            BackendsErrorKind::BadZone(_)
        ));
    }
}
