//! Memory after connection floods (issue 12, finding 10): what 5,000
//! connections at once take is given back once they close.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::task::block_in_place;

use crate::support::raw::read_head;
use crate::support::*;

/// Connections in one flood.
const FLOOD: usize = 5_000;

/// Floods after the first.
const REPEATS: usize = 3;

/// The proxy's resident set, in KiB, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// File descriptors the proxy holds.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// `FLOOD` connections, all open at once, each with one request answered;
/// then all closed.
async fn flood(addr: SocketAddr) {
    let barrier = Arc::new(Barrier::new(FLOOD));
    let tasks: Vec<_> = (0..FLOOD)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await;
                if let Ok(mut stream) = stream {
                    let _ = stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
                    let _ = read_head(&mut stream).await;
                    barrier.wait().await;
                } else {
                    barrier.wait().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a flood task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_returns_after_repeated_connection_floods() {
    let backend = Backend::start("a").await;
    let proxy = block_in_place(|| Proxy::start(&["--backend", &backend.addr().to_string()]));
    let pid = proxy.pid();
    let idle_fds = open_fds(pid);
    let mut after = Vec::new();
    for n in 1..=REPEATS + 1 {
        flood(proxy.addr).await;
        eventually("the flood's connections are closed", || async {
            // The proxy keeps up to 32 idle connections to the backend.
            open_fds(pid) <= idle_fds + 32 + 2
        })
        .await;
        // The proxy returns free memory once a burst is over.
        block_in_place(|| proxy.wait_for_log_count("free memory returned", n, PATIENCE));
        after.push(rss_kib(pid));
    }
    let first = after[0];
    let last = after[REPEATS];
    eprintln!("VmRSS after each flood of {FLOOD} connections (KiB): {after:?}");
    assert!(
        last * 10 <= first * 11,
        "RSS grew by more than 10% after the first flood: {after:?} KiB"
    );
}
