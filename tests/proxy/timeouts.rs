//! Attempt timeouts (issue 12, findings 2 and 7): a backend that never
//! answers is ejected by passive checks alone, and the timer starts when
//! the request body has been sent, so slow uploads are not cut.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::task::block_in_place;

use crate::support::raw::{Behaviour, RawBackend};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_backend_is_ejected_and_later_requests_are_fast() {
    let good = Backend::start("good").await;
    let hanging = RawBackend::start(Behaviour::Hang).await;
    let proxy = block_in_place(|| {
        Proxy::start(&[
            "--algorithm",
            "round-robin",
            "--attempt-timeout",
            "300ms",
            "--backend",
            &good.addr().to_string(),
            "--backend",
            &hanging.arg(),
        ])
    });
    let client = client();
    // Each GET that meets the hanging backend times out there and is
    // retried on the good one; five such failures in a row eject it.
    let mut ejected = false;
    for _ in 0..30 {
        let answer = get(&client, &proxy.url("/")).await.expect("an answer");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let report = status(&client, &proxy).await;
        let entry = report
            .iter()
            .find(|e| e.address == hanging.addr)
            .expect("listed");
        if entry.state == "ejected" {
            assert!(entry.failures >= 5, "{report:?}");
            ejected = true;
            break;
        }
    }
    assert!(ejected, "the hanging backend was never ejected");
    for _ in 0..20 {
        let started = Instant::now();
        let answer = get(&client, &proxy.url("/")).await.expect("an answer");
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "a request waited {:?} after the ejection",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_slower_than_the_attempt_timeout_is_not_cut() {
    let backend = Backend::builder("a").record_bodies().start().await;
    let proxy = block_in_place(|| {
        Proxy::start(&[
            "--attempt-timeout",
            "300ms",
            "--backend",
            &backend.addr().to_string(),
        ])
    });
    // 10 chunks of 10 KiB, 100 ms apart: about 1 s of upload, over 64 KiB
    // so that it is streamed rather than held for retries.
    let chunks = futures_util::stream::unfold(0, |n| async move {
        if n == 10 {
            return None;
        }
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let chunk = Frame::data(Bytes::from(vec![b'u'; 10 * 1024]));
        Some((Ok::<_, std::convert::Infallible>(chunk), n + 1))
    });
    let request = Request::post(proxy.url("/upload"))
        .body(StreamBody::new(Box::pin(chunks)))
        .expect("a request");
    let started = Instant::now();
    let response =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http()
            .request(request)
            .await
            .expect("an answer");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(response.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("a body")
        .to_bytes();
    assert_eq!(&body[..], b"a");
    let bodies = backend.bodies();
    assert_eq!(bodies.last().map(|b| b.len()), Some(100 * 1024));
}
