//! What the proxy forwards and what it answers itself (issue 12, findings 8
//! and 9): one consistent framing, no CONNECT, upgrades carried through,
//! exactly one Host.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::block_in_place;

use crate::support::raw::{exchange, read_head, Behaviour, RawBackend};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_content_length_and_chunked_is_forwarded_as_one_message() {
    let backend = RawBackend::start(Behaviour::Answer(
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    ))
    .await;
    let proxy = block_in_place(|| Proxy::start(&["--backend", &backend.arg()]));
    let answer = get(&client(), &proxy.url("/"))
        .await
        .expect("a whole answer");
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "hi");
    assert!(
        answer
            .headers
            .get("content-length")
            .is_none_or(|len| len == "2"),
        "a stale length was passed on: {:?}",
        answer.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_codings_other_than_chunked_are_kept() {
    let backend = RawBackend::start(Behaviour::Answer(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\nconnection: close\r\n\r\n5\r\nabcde\r\n0\r\n\r\n",
    ))
    .await;
    let proxy = block_in_place(|| Proxy::start(&["--backend", &backend.arg()]));
    let answer = get(&client(), &proxy.url("/"))
        .await
        .expect("a whole answer");
    assert_eq!(answer.status, StatusCode::OK);
    let codings = answer.headers["transfer-encoding"].to_str().expect("text");
    assert_eq!(codings, "gzip, chunked");
    assert_eq!(answer.text(), "abcde");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_and_never_reaches_a_backend() {
    let backend = RawBackend::start(Behaviour::Answer(
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    ))
    .await;
    let proxy = block_in_place(|| Proxy::start(&["--backend", &backend.arg()]));
    let target = backend.arg();
    let request = format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n");
    let answer = exchange(proxy.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("\r\nallow: "),
        "{answer}"
    );
    // The proxy is still up and forwards ordinary requests: the backend's
    // first connection is this GET's.
    let ok = get(&client(), &proxy.url("/")).await.expect("an answer");
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(backend.connections(), 1, "CONNECT reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_over_the_limit_are_answered_431_and_never_reach_a_backend() {
    let backend = RawBackend::start(Behaviour::Answer(
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    ))
    .await;
    let proxy = block_in_place(|| {
        Proxy::start(&["--backend", &backend.arg(), "--max-header-bytes", "16384"])
    });
    // 20 KiB of headers, in one piece (hyper's buffer alone would take it).
    let big = "x".repeat(20 * 1024);
    let request = format!("GET / HTTP/1.1\r\nhost: example\r\nx-big: {big}\r\n\r\n");
    let answer = exchange(proxy.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let ok = get(&client(), &proxy.url("/")).await.expect("an answer");
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        backend.connections(),
        1,
        "the large request reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_echoes_through_the_proxy() {
    let backend = RawBackend::start(Behaviour::UpgradeEcho).await;
    let proxy = block_in_place(|| Proxy::start(&["--backend", &backend.arg()]));
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(
            b"GET /socket HTTP/1.1\r\nhost: example\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n",
        )
        .await
        .expect("write");
    let head = tokio::time::timeout(PATIENCE, read_head(&mut stream))
        .await
        .expect("a head in time")
        .expect("a head");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for message in [
        &b"ping"[..],
        b"a longer message, both ways",
        &[0u8, 255, 10, 13],
    ] {
        stream.write_all(message).await.expect("write");
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut echoed))
            .await
            .expect("an echo in time")
            .expect("an echo");
        assert_eq!(echoed, message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_or_none_are_answered_400() {
    let backend = RawBackend::start(Behaviour::Answer(
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    ))
    .await;
    let proxy = block_in_place(|| Proxy::start(&["--backend", &backend.arg()]));
    for request in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nhost: a.example\r\nhost: b.example\r\n\r\n",
    ] {
        let answer = exchange(proxy.addr, request).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    // HTTP/1.0 needs no Host.
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        exchange(proxy.addr, b"GET / HTTP/1.0\r\n\r\n"),
    )
    .await
    .expect("an answer");
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "{answer}"
    );
    assert_eq!(backend.connections(), 1);
}
