//! Endpoints listed in a file that is watched for edits.

use std::fmt;
use std::future::Future;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior, Sleep};
use tower::discover::Change;

use super::backends::{parse_backends_bytes, BackendsError, BackendsErrorKind, MAX_FILE_LEN};
use super::diff::Diff;
use crate::endpoint::Weighted;

/// How often a [`FileDiscover`] reads its file unless told otherwise.
pub const DEFAULT_FILE_INTERVAL: Duration = Duration::from_millis(500);

/// The shortest interval a [`FileDiscover`] accepts.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// How long one read of the backends file may take before it is abandoned.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest wait between a read that saw new bytes and the read that
/// confirms them.
const SETTLE: Duration = Duration::from_millis(100);

/// A read on tokio's blocking pool, and when it is given up.
type PendingRead = (JoinHandle<io::Result<Vec<u8>>>, Pin<Box<Sleep>>);

/// A `Discover` over a backends file (the format of
/// [`parse_backends`](super::parse_backends)): the endpoints it lists, kept
/// current as the file is edited. A line's `zone=` field becomes its
/// endpoint's [zone](crate::endpoint::Endpoint::zone); a changed zone
/// replaces the endpoint like a changed weight.
///
/// The file is read when the stream is first polled and again on every
/// interval ([`DEFAULT_FILE_INTERVAL`], 500 ms, so an edit takes effect
/// within a second). A read whose bytes are the same as the last one costs
/// no parsing. Only differences are yielded:
///
/// * a new address is inserted, with a service made by `make(addr)`;
/// * an address no longer listed is removed (its requests in flight finish);
/// * an address whose weight changed is inserted again, which replaces it
///   with a new service from `make`;
/// * addresses whose line did not change yield nothing, so their services
///   keep their connections, counters and health.
///
/// # Errors
///
/// When the file cannot be read or is invalid (bad line, too large) the
/// stream yields one [`BackendsError`], naming the file and the line, and
/// then nothing more until the file changes: the balancer logs the error at
/// `warn` and keeps the endpoints it has, so a bad edit never empties the
/// set. An error is yielded once for each distinct problem, not on every
/// read. If the file is missing or invalid at start, the first item is the
/// error and the set stays empty until the file is fixed.
///
/// # What a file cannot do
///
/// * **Empty the set by accident.** A file that lists nothing (empty, or
///   only comments) is an error ([`BackendsErrorKind::Empty`]) and the last
///   good set stays, unless [`allow_empty`](Self::allow_empty) is on.
/// * **Be applied half written.** A changed file is applied only when a
///   second read, a moment later (a tenth of a second, or the interval if
///   shorter), finds the same bytes: a read that lands in the middle of an
///   in-place rewrite (`cat new > backends.txt`) is not applied, the next
///   one is. Writing the file atomically (a temporary file renamed over it)
///   remains the best practice.
/// * **Freeze discovery.** Only a regular file is read: a FIFO, a device or
///   a directory is refused ([`BackendsErrorKind::NotARegularFile`]) without
///   being opened for reading, and the file is opened non-blocking, checked
///   again once open, and read at most [`MAX_FILE_LEN`] + 1 bytes. The read
///   runs on tokio's blocking pool with a timeout ([`DEFAULT_READ_TIMEOUT`],
///   5 s): one that takes longer is reported and abandoned, and no other
///   read starts until it ends, so a hung file system costs one thread.
///
/// The stream must be polled inside a tokio runtime: it reads on tokio's
/// blocking pool and waits on tokio's timer.
///
/// # Example
///
/// ```
/// use std::net::SocketAddr;
/// use std::time::Duration;
/// use tower_lb::{discover::FileDiscover, pick::RoundRobin, Balance};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let path = std::env::temp_dir().join(format!("doc-backends-{}", std::process::id()));
/// std::fs::write(&path, "127.0.0.1:9001\n127.0.0.1:9002@2  # bigger\n")?;
///
/// // One service for each address; here one that answers its address.
/// let make = |addr: SocketAddr| {
///     tower::service_fn(move |_req: ()| async move { Ok::<_, std::convert::Infallible>(addr) })
/// };
/// let discover = FileDiscover::new(&path, make).interval(Duration::from_millis(100));
/// let balance = Balance::new(discover, RoundRobin::new());
/// balance.wait_for(|addrs| addrs.len() == 2).await;
/// # std::fs::remove_file(&path)
/// # }
/// ```
pub struct FileDiscover<F> {
    path: PathBuf,
    make: F,
    every: Duration,
    read_timeout: Duration,
    allow_empty: bool,
    interval: Option<Interval>,
    reading: Option<PendingRead>,
    /// A read given up after its timeout, still running on the pool.
    stuck: Option<JoinHandle<io::Result<Vec<u8>>>>,
    /// Hash of the last bytes parsed, valid or not: unchanged bytes are not
    /// parsed again, so a bad file is reported once.
    last_read: Option<u64>,
    /// Hash of new bytes seen once, waiting for a second read to agree.
    unconfirmed: Option<u64>,
    /// The short wait before the confirming read.
    settle: Option<Pin<Box<Sleep>>>,
    /// The last error yielded, as text, so the same problem is not yielded
    /// on every read.
    last_error: Option<String>,
    error: Option<BackendsError>,
    diff: Diff,
}

impl<F> fmt::Debug for FileDiscover<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileDiscover")
            .field("path", &self.path)
            .field("interval", &self.every)
            .field("endpoints", &self.diff.len())
            .field("last_error", &self.last_error)
            .finish()
    }
}

impl<F> FileDiscover<F> {
    /// Follows the backends file at `path`, making each endpoint's service
    /// with `make(addr)`. Nothing is read until the stream is polled.
    pub fn new(path: impl AsRef<Path>, make: F) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            make,
            every: DEFAULT_FILE_INTERVAL,
            read_timeout: DEFAULT_READ_TIMEOUT,
            allow_empty: false,
            interval: None,
            reading: None,
            stuck: None,
            last_read: None,
            unconfirmed: None,
            settle: None,
            last_error: None,
            error: None,
            diff: Diff::default(),
        }
    }

    /// How often the file is read; [`DEFAULT_FILE_INTERVAL`] by default.
    /// Values below 1 ms are raised to 1 ms.
    #[must_use]
    pub fn interval(mut self, every: Duration) -> Self {
        self.every = every.max(MIN_INTERVAL);
        self.interval = None;
        self
    }

    /// Whether a file that lists no backend empties the set (`true`) or
    /// is an error that keeps the last good set (`false`, the default).
    #[must_use]
    pub fn allow_empty(mut self, allow: bool) -> Self {
        self.allow_empty = allow;
        self
    }

    /// How long one read may take before it is abandoned
    /// ([`DEFAULT_READ_TIMEOUT`] by default; raised to 1 ms at least).
    #[must_use]
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout.max(MIN_INTERVAL);
        self
    }

    /// The file followed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_done(&mut self, read: io::Result<Vec<u8>>) {
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(error) => {
                // Whatever comes back after this is parsed afresh.
                self.last_read = None;
                self.unconfirmed = None;
                return self.fail(BackendsError::new(None, read_error(error)));
            }
        };
        let hash = xxhash_rust::xxh3::xxh3_64(&bytes);
        if self.last_read == Some(hash) {
            self.unconfirmed = None;
            return;
        }
        if self.unconfirmed != Some(hash) {
            // New bytes: a second read a moment later must agree, so that a
            // file caught half written is never applied.
            self.unconfirmed = Some(hash);
            self.settle = Some(Box::pin(tokio::time::sleep(SETTLE.min(self.every))));
            return;
        }
        self.unconfirmed = None;
        self.last_read = Some(hash);
        match parse_backends_bytes(&bytes) {
            Ok(backends) if backends.is_empty() && !self.allow_empty => {
                self.fail(BackendsError::new(None, BackendsErrorKind::Empty));
            }
            Ok(backends) => {
                if self.last_error.take().is_some() {
                    tracing::info!(path = %self.path.display(), "backends file is valid again");
                }
                self.diff.update_zoned(
                    backends
                        .into_iter()
                        .map(|backend| (backend.addr, (backend.weight, backend.zone))),
                );
            }
            Err(error) => self.fail(error),
        }
    }

    fn fail(&mut self, error: BackendsError) {
        let error = error.with_path(self.path.clone());
        let text = error.to_string();
        if self.last_error.as_ref() != Some(&text) {
            self.last_error = Some(text);
            self.error = Some(error);
        }
    }
}

/// A regular file's bytes, at most one more than the cap (so a huge file is
/// refused without being read whole). Anything else is refused before it
/// is opened for reading, and again once open (the path may have changed
/// in between); the open itself never waits (`O_NONBLOCK`).
fn read_capped(path: &Path) -> io::Result<Vec<u8>> {
    let not_regular = || io::Error::other(NotRegular);
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The marker inside the `io::Error` of a path that is not a regular file.
#[derive(Debug)]
struct NotRegular;

impl fmt::Display for NotRegular {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a regular file")
    }
}

impl std::error::Error for NotRegular {}

/// The error kind of a failed read.
fn read_error(error: io::Error) -> BackendsErrorKind {
    if error
        .get_ref()
        .is_some_and(|inner| inner.is::<NotRegular>())
    {
        BackendsErrorKind::NotARegularFile
    } else {
        BackendsErrorKind::Io(error)
    }
}

// The stream holds no pinned state: the timer and the read are boxed or
// `Unpin` themselves.
impl<F> Unpin for FileDiscover<F> {}

impl<F, S> Stream for FileDiscover<F>
where
    F: FnMut(SocketAddr) -> S,
{
    type Item = Result<Change<SocketAddr, Weighted<S>>, BackendsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.diff.next_item(&mut this.error, &mut this.make) {
                return Poll::Ready(Some(item));
            }
            if let Some((reading, deadline)) = this.reading.as_mut() {
                if let Poll::Ready(read) = Pin::new(&mut *reading).poll(cx) {
                    this.reading = None;
                    // A read task only fails to finish when the runtime shuts down.
                    this.read_done(read.unwrap_or_else(|join| Err(io::Error::other(join))));
                    continue;
                }
                ready!(deadline.as_mut().poll(cx));
                if let Some((stuck, _)) = this.reading.take() {
                    this.stuck = Some(stuck);
                }
                this.last_read = None;
                this.unconfirmed = None;
                let timeout = this.read_timeout;
                this.fail(BackendsError::new(
                    None,
                    BackendsErrorKind::ReadTimedOut(timeout),
                ));
                continue;
            }
            if let Some(settle) = this.settle.as_mut() {
                ready!(settle.as_mut().poll(cx));
                this.settle = None;
            } else {
                let every = this.every;
                let interval = this.interval.get_or_insert_with(|| {
                    let mut interval = tokio::time::interval(every);
                    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    interval
                });
                ready!(interval.poll_tick(cx));
            }
            if this
                .stuck
                .as_ref()
                .is_some_and(|stuck| !stuck.is_finished())
            {
                // The abandoned read still holds its thread: wait for it.
                continue;
            }
            this.stuck = None;
            // std's blocking read on tokio's blocking pool: one hop for the
            // open and the bounded read together.
            let path = this.path.clone();
            let read = tokio::task::spawn_blocking(move || read_capped(&path));
            let deadline = Box::pin(tokio::time::sleep(this.read_timeout));
            this.reading = Some((read, deadline));
        }
    }
}
