//! Example programs as the tests run them: built once with cargo, for the
//! running test's profile and target directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `examples` with `features` for the profile and target directory
/// of the running test, and returns the directory the binaries are in.
///
/// `cargo test` builds examples too, but `cargo test --test NAME` does not,
/// so the binaries are built here. Cargo releases its lock before it runs
/// the tests; after a full `cargo test` with the same features this build
/// has nothing to do.
pub fn build(examples: &[&str], features: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("the target directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(name) => name,
    };
    let mut command = Command::new(env!("CARGO"));
    command.args(["build", "--quiet", "--profile", profile]);
    for example in examples {
        command.args(["--example", example]);
    }
    let output = command
        .args(["--features", &features.join(",")])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "building the examples {examples:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    profile_dir.join("examples")
}

/// An example program running as a child process on 127.0.0.1, killed
/// when dropped.
pub struct Process {
    child: std::process::Child,
    /// The address it printed as it started listening.
    pub addr: std::net::SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts `dir/name` with `args`; waits (at most [`STEP`](super::STEP))
    /// for its first line, which names the address it listens on
    /// (`… http://IP:PORT`).
    pub fn start<S: AsRef<std::ffi::OsStr>>(dir: &Path, name: &str, args: &[S]) -> Self {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;

        let mut child = Command::new(dir.join(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // TOWER_LB_EXAMPLE_LOG=1 shows the examples' own logs.
            .stderr(if std::env::var_os("TOWER_LB_EXAMPLE_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("the example starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(super::STEP).unwrap_or_default();
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("{name} printed {line:?}, not its address")
            });
        Self { child, addr }
    }

    /// Kills the process now and waits for it (a server that dies).
    pub fn kill(&mut self) {
        self.child.kill().expect("the process can be killed");
        self.child.wait().expect("the process is reaped");
    }

    /// `http://` and its address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the child to exit.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait()
    }
}

/// Sends `request` on a new HTTP/1 connection to `addr` (a process under
/// test) and returns the answer with its body still streaming.
pub async fn send_to(
    addr: std::net::SocketAddr,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> http::Response<hyper::body::Incoming> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender.send_request(request).await.unwrap()
}

/// The whole body of the answer to `method path` (no request body) from
/// `addr`, as text.
pub async fn text_of(addr: std::net::SocketAddr, method: http::Method, path: &str) -> String {
    use http_body_util::BodyExt;

    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let body = send_to(addr, request).await.into_body().collect().await;
    String::from_utf8(body.unwrap().to_bytes().to_vec()).unwrap()
}

/// Like [`text_of`], parsed as JSON.
pub async fn json_of(
    addr: std::net::SocketAddr,
    method: http::Method,
    path: &str,
) -> serde_json::Value {
    let text = text_of(addr, method, path).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}
