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
use tokio::time::{Interval, MissedTickBehavior};
use tower::discover::Change;

use super::backends::{parse_backends_bytes, BackendsError, BackendsErrorKind, MAX_FILE_LEN};
use super::diff::Diff;
use crate::endpoint::Weighted;

/// How often a [`FileDiscover`] reads its file unless told otherwise.
pub const DEFAULT_FILE_INTERVAL: Duration = Duration::from_millis(500);

/// The shortest interval a [`FileDiscover`] accepts.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// A `Discover` over a backends file (the format of
/// [`parse_backends`](super::parse_backends)): the endpoints it lists, kept
/// current as the file is edited.
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
/// A file that is valid but lists nothing (empty, or only comments) removes
/// every endpoint: that is what it says.
///
/// Write the file atomically (write a temporary file beside it, then rename
/// it over the old one): a read may otherwise see a half-written file, and a
/// truncated but valid list would remove endpoints until the next read.
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
    interval: Option<Interval>,
    reading: Option<JoinHandle<io::Result<Vec<u8>>>>,
    /// Hash of the last bytes parsed, valid or not: unchanged bytes are not
    /// parsed again, so a bad file is reported once.
    last_read: Option<u64>,
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
            interval: None,
            reading: None,
            last_read: None,
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
                return self.fail(BackendsError::new(None, BackendsErrorKind::Io(error)));
            }
        };
        let hash = xxhash_rust::xxh3::xxh3_64(&bytes);
        if self.last_read == Some(hash) {
            return;
        }
        self.last_read = Some(hash);
        match parse_backends_bytes(&bytes) {
            Ok(backends) => {
                if self.last_error.take().is_some() {
                    tracing::info!(path = %self.path.display(), "backends file is valid again");
                }
                self.diff.update(backends);
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

/// Reads at most one byte more than the cap, so a huge file is refused
/// without being read whole.
fn read_capped(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
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
            if let Some(reading) = this.reading.as_mut() {
                let read = ready!(Pin::new(reading).poll(cx));
                this.reading = None;
                // A read task only fails to finish when the runtime shuts down.
                this.read_done(read.unwrap_or_else(|join| Err(io::Error::other(join))));
                continue;
            }
            let every = this.every;
            let interval = this.interval.get_or_insert_with(|| {
                let mut interval = tokio::time::interval(every);
                interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                interval
            });
            ready!(interval.poll_tick(cx));
            // std's blocking read on tokio's blocking pool: one hop for the
            // open and the bounded read together.
            let path = this.path.clone();
            this.reading = Some(tokio::task::spawn_blocking(move || read_capped(&path)));
        }
    }
}
