//! The proxy example as a child process: built once per test run, started
//! on free ports, its output watched, killed when the test ends.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the proxy may take to start, and a CLI run to finish.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The example binary, built (or found fresh) by cargo on first use, with
/// the features of the running test.
pub fn proxy_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let features: Vec<&str> = [
            ("axum", cfg!(feature = "axum")),
            ("dns", cfg!(feature = "dns")),
            ("etcd", cfg!(feature = "etcd")),
            ("kube", cfg!(feature = "kube")),
            ("reports", cfg!(feature = "reports")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        let binary = super::shared::examples::build(&["proxy"], &features)
            .join(format!("proxy{}", std::env::consts::EXE_SUFFIX));
        assert!(binary.exists(), "{} is missing", binary.display());
        binary
    })
}

/// What a finished run of the proxy printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the proxy with `args` and waits for it to exit (a bad command line
/// exits at once); kills it and panics if it is still running after the
/// start timeout.
pub fn run_to_exit<S: AsRef<OsStr>>(args: &[S]) -> Finished {
    let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
    let mut child = Command::new(proxy_binary())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the proxy starts");
    let stdout = read_all(child.stdout.take().expect("piped"));
    let stderr = read_all(child.stderr.take().expect("piped"));
    // The pipes close when the process exits, so the readers finish then.
    let (stdout, stderr) = match (join_within(stdout), join_within(stderr)) {
        (Some(out), Some(err)) => (out, err),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the proxy did not exit with {args:?}");
        }
    };
    let status = child.wait().expect("the proxy's exit status");
    Finished {
        status,
        stdout,
        stderr,
    }
}

fn read_all(mut pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    rx
}

fn join_within(rx: std::sync::mpsc::Receiver<String>) -> Option<String> {
    rx.recv_timeout(START_TIMEOUT).ok()
}

/// Lines a process printed, shared with the thread that reads them.
#[derive(Default)]
struct Lines {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Lines {
    fn follow(pipe: impl std::io::Read + Send + 'static) -> Arc<Self> {
        let lines = Arc::new(Self::default());
        let writer = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                writer.lines.lock().unwrap().0.push(line);
                writer.changed.notify_all();
            }
            writer.lines.lock().unwrap().1 = true;
            writer.changed.notify_all();
        });
        lines
    }

    /// Waits until a line satisfies `found`, up to `timeout`; returns it.
    fn wait_for(&self, timeout: Duration, found: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lines.lock().unwrap();
        loop {
            if let Some(line) = guard.0.iter().find(|line| found(line)) {
                return Some(line.clone());
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                return None;
            }
            guard = self.changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Waits until `n` lines satisfy `found`, up to `timeout`.
    fn wait_for_count(&self, timeout: Duration, n: usize, found: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lines.lock().unwrap();
        loop {
            if guard.0.iter().filter(|line| found(line)).count() >= n {
                return true;
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                return false;
            }
            guard = self.changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().0.join("\n")
    }
}

/// A running proxy; killed when dropped.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stderr: Arc<Lines>,
}

impl Proxy {
    /// Starts the proxy with `args` plus `--listen` and `--admin` on free
    /// ports, and waits until it announces both addresses.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(proxy_binary())
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the proxy starts");
        let stdout = Lines::follow(child.stdout.take().expect("piped"));
        let stderr = Lines::follow(child.stderr.take().expect("piped"));
        let mut address = |prefix: &str| -> SocketAddr {
            let Some(line) = stdout.wait_for(START_TIMEOUT, |line| line.starts_with(prefix)) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the proxy did not print `{prefix}` with {args:?}; stderr:\n{}",
                    stderr.text()
                );
            };
            line[prefix.len()..].trim().parse().expect("an address")
        };
        let addr = address("listening on ");
        let admin = address("admin on ");
        Self {
            child,
            addr,
            admin,
            stderr,
        }
    }

    /// Waits until the proxy logs a line containing `text`.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) -> String {
        self.stderr
            .wait_for(timeout, |line| line.contains(text))
            .unwrap_or_else(|| {
                panic!(
                    "the proxy did not log {text:?}; stderr:\n{}",
                    self.stderr.text()
                )
            })
    }

    /// Waits until the proxy has logged `n` lines containing `text`.
    pub fn wait_for_log_count(&self, text: &str, n: usize, timeout: Duration) {
        if !self
            .stderr
            .wait_for_count(timeout, n, |line| line.contains(text))
        {
            panic!(
                "the proxy did not log {text:?} {n} times; stderr:\n{}",
                self.stderr.text()
            );
        }
    }

    /// Sends the proxy a signal (`TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits until the proxy exits (its stderr closes), up to `timeout`;
    /// its exit status, or `None` if it still runs.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.stderr.wait_for(timeout, |_| false);
        // The pipe closes as the process exits; reap it within a moment.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The proxy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the proxy logged so far.
    pub fn log(&self) -> String {
        self.stderr.text()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
