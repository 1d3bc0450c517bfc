//! Client faults are not backend faults (issue 12, finding 1): malformed
//! chunked bodies and uploads cut short answer 400 (or just close) and
//! eject no backend.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::block_in_place;

use crate::support::raw::{exchange, read_to_close};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_and_aborted_uploads_eject_no_backend() {
    // Backends that read each body whole before they answer.
    let mut started = Vec::new();
    for id in ["a", "b", "c", "d"] {
        started.push(Backend::builder(id).record_bodies().start().await);
    }
    let addrs: Vec<String> = started.iter().map(|b| b.addr().to_string()).collect();
    let proxy = block_in_place(|| Proxy::start(&args(&["--algorithm", "p2c"], &addrs)));
    let client = client();

    for _ in 0..20 {
        let answer = exchange(
            proxy.addr,
            b"POST /upload HTTP/1.1\r\nhost: example\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nnot a chunk size\r\n\r\n",
        )
        .await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "a malformed body got: {answer}"
        );
    }
    for _ in 0..20 {
        let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nhost: example\r\ncontent-length: 1000000\r\n\r\n")
            .await
            .expect("write");
        stream.write_all(&[b'x'; 70_000]).await.expect("write");
        // The client gives up half-way: the proxy may answer 400 to the
        // half-closed connection, or just close it.
        stream.shutdown().await.expect("shut down");
        let answer = read_to_close(&mut stream).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "an aborted upload got: {answer}"
        );
    }

    // Every request has reached a backend and finished there.
    eventually("the bad requests are done", || async {
        let report = status(&client, &proxy).await;
        report.iter().map(|e| e.requests).sum::<u64>() >= 40
            && report.iter().all(|e| e.in_flight == 0)
    })
    .await;
    let report = status(&client, &proxy).await;
    for endpoint in &report {
        assert!(
            endpoint.healthy,
            "a client fault ejected a backend: {report:?}"
        );
        assert_eq!(endpoint.state, "healthy", "{report:?}");
        assert_eq!(endpoint.failures, 0, "a client fault counted: {report:?}");
        assert_eq!(endpoint.ejections, 0, "{report:?}");
    }
    // And every backend still takes requests.
    for _ in 0..8 {
        let answer = get(&client, &proxy.url("/")).await.expect("an answer");
        assert_eq!(answer.status, http::StatusCode::OK);
    }
}
