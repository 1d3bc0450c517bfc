//! Backends that come, go and fail, under traffic.

use std::collections::HashSet;

use http::StatusCode;
use tokio::task::block_in_place;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_file_edits_apply_under_traffic_without_a_failure() {
    let [a, b, c] = <[Backend; 3]>::try_from(backends(&["a", "b", "c"]).await)
        .ok()
        .unwrap();
    let dir = temp_dir("file-edits");
    let file = dir.join("backends");
    write_atomically(
        &file,
        &format!("# start\n{}\n{}  # b\n", a.addr(), b.addr()),
    );
    let path = file.to_str().expect("a UTF-8 path");
    let proxy =
        block_in_place(|| Proxy::start(&["--algorithm", "round-robin", "--backends-file", path]));
    let client = client();
    let traffic = Traffic::start(&client, proxy.url("/"), 4);
    within("requests at the backend", a.wait_requests(20)).await;
    within("requests at the backend", b.wait_requests(20)).await;

    // Add c: it starts taking requests.
    write_atomically(
        &file,
        &format!("{}\n{}\n{}@2\n", a.addr(), b.addr(), c.addr()),
    );
    within("requests at the backend", c.wait_requests(20)).await;

    // Remove b: once the proxy's set no longer holds it, b gets nothing new.
    write_atomically(&file, &format!("{}\n{}@2\n", a.addr(), c.addr()));
    let without_b = |report: &[Endpoint]| {
        report.iter().map(|e| e.address).collect::<HashSet<_>>()
            == HashSet::from([a.addr(), c.addr()])
    };
    eventually("b leaves the set", || async {
        without_b(&status(&client, &proxy).await)
    })
    .await;
    // Requests picked just before the change may still be on their way to b.
    within(
        "requests at the backend",
        a.wait_requests(a.requests() + 50),
    )
    .await;
    within(
        "requests at the backend",
        c.wait_requests(c.requests() + 50),
    )
    .await;
    let b_hits = b.requests();
    within(
        "requests at the backend",
        a.wait_requests(a.requests() + 50),
    )
    .await;
    within(
        "requests at the backend",
        c.wait_requests(c.requests() + 50),
    )
    .await;
    assert_eq!(b.requests(), b_hits, "a removed backend got new requests");

    // A bad edit keeps the last good set, and says why.
    write_atomically(&file, &format!("{}\nnot-an-address\n", a.addr()));
    block_in_place(|| {
        proxy.wait_for_log("line 2: `not-an-address` is not a socket address", PATIENCE)
    });
    within(
        "requests at the backend",
        a.wait_requests(a.requests() + 50),
    )
    .await;
    within(
        "requests at the backend",
        c.wait_requests(c.requests() + 50),
    )
    .await;
    assert!(without_b(&status(&client, &proxy).await));

    traffic.stop_without_failures().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_fails_no_get_request() {
    let backends = backends(&["a", "b", "c"]).await;
    let addrs: Vec<String> = backends.iter().map(|b| b.addr().to_string()).collect();
    let flags = ["--health-path", "/health", "--health-interval", "100ms"];
    let proxy = block_in_place(|| Proxy::start(&args(&flags, &addrs)));
    let client = client();
    let traffic = Traffic::start(&client, proxy.url("/"), 4);
    for backend in &backends {
        within("requests at the backend", backend.wait_requests(20)).await;
    }

    backends[1].stop().await;
    let victim = backends[1].addr();
    for i in [0, 2] {
        let more = backends[i].requests() + 200;
        within("requests at the backend", backends[i].wait_requests(more)).await;
    }
    eventually("the killed backend is reported unhealthy", || async {
        let report = status(&client, &proxy).await;
        report.iter().any(|e| e.address == victim && !e.healthy)
    })
    .await;
    // Attempts did reach the dead backend, and were retried elsewhere.
    let report = status(&client, &proxy).await;
    let dead = report
        .iter()
        .find(|e| e.address == victim)
        .expect("still listed");
    assert!(dead.failures > 0, "{report:?}");
    traffic.stop_without_failures().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_answer_502_and_503() {
    let client = client();
    let dead = refusing_addr().to_string();
    let proxy = block_in_place(|| Proxy::start(&["--backend", &dead, "--retries", "1"]));
    let answer = get(&client, &proxy.url("/")).await.expect("an answer");
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text());
    let report = status(&client, &proxy).await;
    assert_eq!(
        report[0].failures, 2,
        "one attempt and one retry: {report:?}"
    );

    let dir = temp_dir("no-backends");
    let file = dir.join("backends");
    write_atomically(&file, "# nothing yet\n");
    let proxy = block_in_place(|| {
        Proxy::start(&[
            "--allow-empty-backends",
            "--backends-file",
            file.to_str().unwrap(),
        ])
    });
    let answer = get(&client, &proxy.url("/")).await.expect("an answer");
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text()
    );
    let _ = std::fs::remove_dir_all(dir);
}
