//! Graceful drain (issue 12, finding 5): SIGTERM lets requests in flight
//! finish and then exits 0; a second signal exits at once.

use std::time::Duration;

use http::StatusCode;
use tokio::task::block_in_place;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_all_twenty_requests_in_flight_then_exits_0() {
    let backend = Backend::start("a").await;
    let mut proxy = block_in_place(|| Proxy::start(&["--backend", &backend.addr().to_string()]));
    let client = client();
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let (client, url) = (client.clone(), proxy.url("/slow"));
            tokio::spawn(async move { get(&client, &url).await })
        })
        .collect();
    backend.wait_held(20).await;

    proxy.signal("TERM");
    block_in_place(|| proxy.wait_for_log("draining", PATIENCE));
    // No new connections once draining.
    let addr = proxy.addr;
    eventually("the listener is closed", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;

    backend.slow().open();
    for request in requests {
        let answer = request.await.expect("a task").expect("an answer");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.text(), "a");
    }
    let status = block_in_place(|| proxy.wait_for_exit(PATIENCE)).expect("the proxy exits");
    assert_eq!(status.code(), Some(0), "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let backend = Backend::start("a").await;
    let mut proxy = block_in_place(|| {
        Proxy::start(&[
            "--drain-timeout",
            "1m",
            "--backend",
            &backend.addr().to_string(),
        ])
    });
    let client = client();
    let url = proxy.url("/slow");
    let held = tokio::spawn(async move { get(&client, &url).await });
    backend.wait_held(1).await;

    proxy.signal("TERM");
    block_in_place(|| proxy.wait_for_log("draining", PATIENCE));
    proxy.signal("INT");
    let status =
        block_in_place(|| proxy.wait_for_exit(Duration::from_secs(5))).expect("the proxy exits");
    assert_eq!(status.code(), Some(1), "{}", proxy.log());
    assert!(
        held.await.expect("a task").is_err(),
        "the held request was cut"
    );
}
