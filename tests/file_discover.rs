//! `FileDiscover` driving a real `Balance`: edits to the file become inserts,
//! removes and replacements; bad edits keep the last good set.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::BodyExt;
use tower::{Service, ServiceExt};
use tower_lb::discover::{BackendsErrorKind, FileDiscover};
use tower_lb::pick::RoundRobin;
use tower_lb::{Balance, BoxError};

mod support;

use support::answer::{counting, Made};
use support::within;

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tower-lb-file-discover-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("backends")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replaces the file in one rename, as the docs ask writers to do.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn made(made: &Made, port: u16) -> usize {
    made.lock().unwrap().get(&addr(port)).copied().unwrap_or(0)
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[tokio::test(start_paused = true)]
async fn edits_become_inserts_removes_and_replacements() {
    let dir = TempDir::new("edits");
    let path = dir.file();
    write(&path, "127.0.0.1:9001\n127.0.0.1:9002\n");
    let counts = Made::default();
    let discover = FileDiscover::new(&path, counting(&counts));
    let mut balance = Balance::new(discover, RoundRobin::new());

    within("two backends", balance.wait_for(|keys| keys.len() == 2)).await;
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(balance.ready().await.unwrap().call(()).await.unwrap());
    }
    answers.sort();
    answers.dedup();
    assert_eq!(answers, [addr(9001), addr(9002)]);

    // Appended: appears, and the others are not rebuilt.
    write(
        &path,
        "127.0.0.1:9001\n127.0.0.1:9002\n127.0.0.1:9003 # new\n",
    );
    within(
        "the third",
        balance.wait_for(|keys| keys.contains(&addr(9003))),
    )
    .await;
    assert_eq!(balance.len(), 3);

    // Removed: gone, the rest untouched.
    write(&path, "127.0.0.1:9001\n127.0.0.1:9003\n");
    within(
        "the removal",
        balance.wait_for(|keys| !keys.contains(&addr(9002))),
    )
    .await;
    assert_eq!(
        sorted(balance.endpoints()),
        [(addr(9001), 1), (addr(9003), 1)]
    );
    for port in [9001, 9002, 9003] {
        assert_eq!(made(&counts, port), 1, "port {port} was made once");
    }

    // A new weight replaces that endpoint only.
    write(&path, "127.0.0.1:9001@5\n127.0.0.1:9003\n");
    within(
        "the new weight",
        balance.wait_for(|_| balance.endpoints().contains(&(addr(9001), 5))),
    )
    .await;
    assert_eq!(made(&counts, 9001), 2, "replaced with a new service");
    assert_eq!(made(&counts, 9003), 1, "left alone");

    // Comment-only edits change nothing.
    write(
        &path,
        "# two\n127.0.0.1:9001@5\n\n127.0.0.1:9003  # still\n",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(made(&counts, 9001), 2);
    assert_eq!(made(&counts, 9003), 1);
}

/// Collects what is logged at warn and above, to check that a bad file is
/// reported.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(start_paused = true)]
async fn garbage_keeps_the_last_good_set_until_fixed() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    // The current-thread runtime runs the worker on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = TempDir::new("garbage");
    let path = dir.file();
    write(&path, "127.0.0.1:9001\n127.0.0.1:9002@2\n");
    let counts = Made::default();
    let discover = FileDiscover::new(&path, counting(&counts));
    let balance = Balance::new(discover, RoundRobin::new());
    within("two backends", balance.wait_for(|keys| keys.len() == 2)).await;

    write(&path, "127.0.0.1:9001\nthis is not a backend\n");
    within("the warning", async {
        while !logs.text().contains("line 2") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // Several more reads of the same bad file: the set stays, one warning.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        sorted(balance.endpoints()),
        [(addr(9001), 1), (addr(9002), 2)]
    );
    let text = logs.text();
    assert_eq!(text.matches("is not a socket address").count(), 1, "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");

    // A missing file keeps the set too.
    std::fs::remove_file(&path).unwrap();
    within("the io warning", async {
        while !logs.text().contains("cannot read") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(balance.len(), 2);

    // Fixed: changes apply again.
    write(&path, "127.0.0.1:9002@2\n127.0.0.1:9004\n");
    within(
        "the fixed file",
        balance.wait_for(|keys| keys.contains(&addr(9004)) && keys.len() == 2),
    )
    .await;
    assert_eq!(made(&counts, 9002), 1, "unchanged across the bad spell");
}

#[tokio::test(start_paused = true)]
async fn missing_file_at_start_is_the_first_item() {
    let dir = TempDir::new("missing");
    let path = dir.file();
    let counts = Made::default();
    let mut discover = FileDiscover::new(&path, counting(&counts));

    let first = within("the first item", discover.next()).await.unwrap();
    let error = first.expect_err("an error first");
    assert!(
        matches!(error.kind(), BackendsErrorKind::Io(e) if e.kind() == io::ErrorKind::NotFound),
        "{error}"
    );
    assert_eq!(error.path(), Some(path.as_path()));

    // The same problem is not yielded again; the file appearing is.
    write(&path, "127.0.0.1:9001@3\n");
    match within("an insert", discover.next()).await.unwrap() {
        Ok(tower::discover::Change::Insert(key, svc)) => {
            use tower_lb::endpoint::Endpoint;
            assert_eq!((key, svc.weight()), (addr(9001), 3));
        }
        other => panic!("expected an insert, got {:?}", other.map(|_| ()).err()),
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_file_at_start_names_the_line() {
    let dir = TempDir::new("invalid");
    let path = dir.file();
    write(&path, "127.0.0.1:9001\n127.0.0.1:9002@0\n");
    let counts = Made::default();
    let mut discover = FileDiscover::new(&path, counting(&counts)).interval(Duration::ZERO);
    let error = within("the error", discover.next())
        .await
        .unwrap()
        .expect_err("an error first");
    assert_eq!(error.line(), Some(2));
    assert!(matches!(error.kind(), BackendsErrorKind::ZeroWeight));
    assert!(error.to_string().starts_with(&path.display().to_string()));
    assert_eq!(
        made(&counts, 9001),
        0,
        "nothing applied from an invalid file"
    );
}

// ===== real servers =====

async fn server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { addr.to_string() }),
    );
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

/// An HTTP client for one backend: GET / and return the body.
fn http_endpoint(
    client: Client,
) -> impl FnMut(SocketAddr) -> tower::util::BoxCloneSyncService<(), String, BoxError> + Send + 'static
{
    move |addr| {
        let client = client.clone();
        tower::util::BoxCloneSyncService::new(tower::service_fn(move |_req: ()| {
            let client = client.clone();
            async move {
                let uri: http::Uri = format!("http://{addr}/").parse()?;
                let response = client.get(uri).await?;
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, BoxError>(String::from_utf8(body.to_vec())?)
            }
        }))
    }
}

#[tokio::test]
async fn real_servers_follow_the_file() {
    let (a, _ta) = server().await;
    let (b, _tb) = server().await;
    let (c, _tc) = server().await;
    let dir = TempDir::new("servers");
    let path = dir.file();
    write(&path, &format!("{a}\n{b}\n"));

    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let discover =
        FileDiscover::new(&path, http_endpoint(client)).interval(Duration::from_millis(20));
    let mut balance = Balance::new(discover, RoundRobin::new());
    within("two servers", balance.wait_for(|keys| keys.len() == 2)).await;

    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(balance.ready().await.unwrap().call(()).await.unwrap());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, sorted(vec![a.to_string(), b.to_string()]));

    write(&path, &format!("{b}\n{c}@2\n"));
    within(
        "the new set",
        balance.wait_for(|keys| keys.contains(&c) && !keys.contains(&a)),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(balance.ready().await.unwrap().call(()).await.unwrap());
    }
    assert!(!seen.contains(&a.to_string()), "a was removed: {seen:?}");
    assert!(seen.contains(&b.to_string()) && seen.contains(&c.to_string()));
}

/// The next change of `discover` as text: `+ADDR` or `-ADDR`, or the error's
/// kind.
async fn next_change<F, S>(discover: &mut FileDiscover<F>) -> String
where
    F: FnMut(SocketAddr) -> S + Unpin,
{
    match within("a change", discover.next()).await {
        Some(Ok(tower::discover::Change::Insert(addr, _))) => format!("+{}", addr.port()),
        Some(Ok(tower::discover::Change::Remove(addr))) => format!("-{}", addr.port()),
        Some(Err(error)) => format!("{:?}", error.kind()),
        None => "end".to_owned(),
    }
}

#[tokio::test(start_paused = true)]
async fn empty_files_keep_the_set_unless_allowed() {
    let dir = TempDir::new("empty");
    let path = dir.file();
    write(&path, "127.0.0.1:9001\n127.0.0.1:9002\n");
    let mut discover = FileDiscover::new(&path, |_| ());
    let mut first = vec![
        next_change(&mut discover).await,
        next_change(&mut discover).await,
    ];
    first.sort();
    assert_eq!(first, ["+9001", "+9002"]);
    write(&path, "");
    assert_eq!(next_change(&mut discover).await, "Empty");
    // Comments only: the same problem, reported once; the set stays.
    write(&path, "# nothing here\n\n   # still nothing\n");
    let quiet = tokio::time::timeout(Duration::from_secs(3), discover.next()).await;
    assert!(quiet.is_err(), "{quiet:?}");
    // A valid file applies again.
    write(&path, "127.0.0.1:9002\n");
    assert_eq!(next_change(&mut discover).await, "-9001");

    // Opted in, an empty file empties the set.
    let mut allowed = FileDiscover::new(&path, |_| ()).allow_empty(true);
    assert_eq!(next_change(&mut allowed).await, "+9002");
    write(&path, "# drained\n");
    assert_eq!(next_change(&mut allowed).await, "-9002");
}

#[cfg(unix)]
#[tokio::test(start_paused = true)]
async fn a_fifo_is_refused_without_blocking_and_a_later_file_applies() {
    let dir = TempDir::new("fifo");
    let path = dir.file();
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // std has no way to make a FIFO: this is the test's one call to C.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let mut discover = FileDiscover::new(&path, |_| ());
    assert_eq!(next_change(&mut discover).await, "NotARegularFile");
    // The FIFO is replaced by a valid file: it applies.
    write(&path, "127.0.0.1:9005\n");
    assert_eq!(next_change(&mut discover).await, "+9005");
    // A directory is refused too, and the set stays.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    assert_eq!(next_change(&mut discover).await, "NotARegularFile");
}

#[tokio::test(start_paused = true)]
async fn a_file_caught_half_written_is_never_applied() {
    let dir = TempDir::new("half");
    let path = dir.file();
    write(&path, "127.0.0.1:9001\n127.0.0.1:9002\n127.0.0.1:9003\n");
    // Reads at 0 s and its confirmation at 0.1 s, then every 10 s, each
    // new content confirmed 0.1 s later.
    let mut discover = FileDiscover::new(&path, |_| ()).interval(Duration::from_secs(10));
    for _ in 0..3 {
        assert!(next_change(&mut discover).await.starts_with('+'));
    }
    // Rewritten in place: the read at 10 s lands after the truncation and
    // the first line, before the rest is written (at 10.05 s).
    std::fs::write(&path, "127.0.0.1:9001\n").unwrap();
    let early = tokio::time::timeout(Duration::from_millis(9950), discover.next()).await;
    assert!(
        early.is_err(),
        "the half-written file was applied: {early:?}"
    );
    std::fs::write(&path, "127.0.0.1:9001\n127.0.0.1:9002\n127.0.0.1:9004\n").unwrap();
    let mut changes = vec![
        next_change(&mut discover).await,
        next_change(&mut discover).await,
    ];
    changes.sort();
    assert_eq!(
        changes,
        ["+9004", "-9003"],
        "only the finished file applied"
    );
}
