//! Limits on every listener (issue 12, finding 6): slow request heads,
//! idle keep-alive connections and clients that stop reading are closed;
//! connections beyond the cap wait.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::block_in_place;

use crate::support::raw::{read_head, time_to_close, Behaviour, RawBackend};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_head_is_closed_after_the_header_timeout_on_both_listeners() {
    let backend = Backend::start("a").await;
    let proxy = block_in_place(|| {
        Proxy::start(&[
            "--header-timeout",
            "500ms",
            "--idle-timeout",
            "1m",
            "--backend",
            &backend.addr().to_string(),
        ])
    });
    for addr in [proxy.addr, proxy.admin] {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // Half a head, and then nothing: a slowloris client.
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .expect("write");
        let waited = time_to_close(&mut stream).await;
        assert!(
            waited >= Duration::from_millis(400),
            "closed after {waited:?}"
        );
        assert!(waited < Duration::from_secs(10), "closed after {waited:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let backend = Backend::start("a").await;
    let proxy = block_in_place(|| {
        Proxy::start(&[
            "--header-timeout",
            "200ms",
            "--idle-timeout",
            "1s",
            "--backend",
            &backend.addr().to_string(),
        ])
    });
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut stream).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Idle, not slow: the header timeout does not apply between requests.
    let waited = time_to_close(&mut stream).await;
    assert!(
        waited >= Duration::from_millis(800),
        "closed after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_after_the_idle_timeout() {
    let backend = RawBackend::start(Behaviour::Endless).await;
    let proxy =
        block_in_place(|| Proxy::start(&["--idle-timeout", "500ms", "--backend", &backend.arg()]));
    let client = client();
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"GET /endless HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    // The client reads nothing of the endless answer; once the socket buffers are
    // full the proxy gives up, and the backend's answer stops being read.
    eventually("the stalled answer is dropped", || async {
        let report = status(&client, &proxy).await;
        report[0].requests == 1 && report[0].in_flight == 0
    })
    .await;
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_one_to_close() {
    let backend = Backend::start("a").await;
    let proxy = block_in_place(|| {
        Proxy::start(&[
            "--max-connections",
            "2",
            "--backend",
            &backend.addr().to_string(),
        ])
    });
    let first = TcpStream::connect(proxy.addr).await.expect("connect");
    let second = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut third = TcpStream::connect(proxy.addr).await.expect("connect");
    third
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    // The third is in the listen queue, not served.
    let early = tokio::time::timeout(Duration::from_millis(500), read_head(&mut third)).await;
    assert!(early.is_err(), "a third connection was served: {early:?}");
    drop(first);
    let head = tokio::time::timeout(PATIENCE, read_head(&mut third))
        .await
        .expect("served once a connection closed")
        .expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_cut_after_the_idle_timeout_and_blames_no_backend() {
    // A backend that reads each body whole before it answers.
    let backend = Backend::builder("a").record_bodies().start().await;
    let proxy = block_in_place(|| {
        Proxy::start(&[
            "--idle-timeout",
            "500ms",
            "--backend",
            &backend.addr().to_string(),
        ])
    });
    let client = client();
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\nten bytes.")
        .await
        .expect("write");
    // (Over 64 KiB: streamed to the backend, not held for retries.) Then
    // nothing more: the proxy answers 400 or just closes.
    let waited = time_to_close(&mut stream).await;
    assert!(
        waited >= Duration::from_millis(400),
        "closed after {waited:?}"
    );
    eventually("the upload is over at the backend", || async {
        let report = status(&client, &proxy).await;
        report[0].requests == 1 && report[0].in_flight == 0
    })
    .await;
    let report = status(&client, &proxy).await;
    assert_eq!(report[0].failures, 0, "{report:?}");
    assert_eq!(report[0].state, "healthy", "{report:?}");
}
