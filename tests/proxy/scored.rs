//! `--algorithm scored` (feature `reports`): the backends' own reports,
//! from their Prometheus pages or ORCA headers, keep requests away from a
//! server whose KV cache is full; `/status` shows each report and its age.

use tokio::task::block_in_place;

use crate::support::model_server::{Load, ModelServer, Names};
use crate::support::*;

/// Sends 200 requests through a scored proxy in front of a server with a
/// full KV cache and one with room; returns what each served and the
/// `/status` document.
async fn two_hundred(flags: &[&str]) -> (usize, usize, serde_json::Value) {
    let full = ModelServer::start("full", "m", Names::Vllm).await;
    let room = ModelServer::start("room", "m", Names::Vllm).await;
    full.set(Load {
        kv: 1.0,
        running: 8,
        ..Load::default()
    });
    room.set(Load {
        kv: 0.1,
        running: 1,
        ..Load::default()
    });
    let addrs = vec![full.addr().to_string(), room.addr().to_string()];
    let mut all = vec![
        "--algorithm",
        "scored",
        "--scorer",
        "queue=2,kv=2,inflight=1",
    ];
    all.extend_from_slice(flags);
    let proxy = block_in_place(|| Proxy::start(&args(&all, &addrs)));
    if flags.contains(&"--metrics-path") {
        full.wait_scrapes(1).await;
        room.wait_scrapes(1).await;
    }
    let client = client();
    for _ in 0..200 {
        let answer = get(&client, &proxy.url("/v1/completions"))
            .await
            .expect("an answer");
        assert_eq!(answer.status, http::StatusCode::OK, "{}", answer.text());
        assert!(!answer.headers.contains_key("endpoint-load-metrics"));
    }
    let status = get(&client, &format!("http://{}/status", proxy.admin))
        .await
        .expect("/status answers");
    let status = serde_json::from_slice(&status.body).expect("JSON");
    println!("{flags:?}: full {}, room {}", full.served(), room.served());
    (full.served(), room.served(), status)
}

fn assert_reports(status: &serde_json::Value) {
    for entry in status.as_array().expect("an array") {
        let report = &entry["report"];
        assert!(report["kv_cache_use"].is_number(), "{status}");
        assert!(
            report["age_ms"].as_f64().is_some_and(|age| age < 10_000.0),
            "{status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pages_keep_requests_from_a_full_kv_cache() {
    let (full, room, status) = two_hundred(&["--metrics-path", "/metrics"]).await;
    assert!(
        full <= 10,
        "the full server served {full} of 200 ({room} elsewhere)"
    );
    assert_eq!(full + room, 200);
    assert_reports(&status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orca_headers_keep_requests_from_a_full_kv_cache() {
    let (full, room, status) = two_hundred(&["--load-reports"]).await;
    assert!(
        full <= 10,
        "the full server served {full} of 200 ({room} elsewhere)"
    );
    assert_eq!(full + room, 200);
    assert_reports(&status);
}
