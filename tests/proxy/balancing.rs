//! How requests are split: round robin, weights, hashing; `/status`.

use std::collections::{HashMap, HashSet};

use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::task::block_in_place;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_splits_requests_evenly() {
    let backends = backends(&["a", "b", "c"]).await;
    let addrs: Vec<String> = backends.iter().map(|b| b.addr().to_string()).collect();
    let proxy = block_in_place(|| Proxy::start(&args(&["--algorithm", "round-robin"], &addrs)));
    let client = client();
    for _ in 0..300 {
        let answer = get(&client, &proxy.url("/")).await.expect("an answer");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    for backend in &backends {
        assert_eq!(backend.requests(), 100, "backend {}", backend.id());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_requests_and_status_reports_every_backend() {
    let backends = backends(&["one", "two", "three"]).await;
    let addrs: Vec<String> = (0..3)
        .map(|i| format!("{}@{}", backends[i].addr(), i + 1))
        .collect();
    let proxy =
        block_in_place(|| Proxy::start(&args(&["--algorithm", "weighted-round-robin"], &addrs)));
    let client = client();
    for _ in 0..600 {
        let answer = get(&client, &proxy.url("/any/path?q=1"))
            .await
            .expect("an answer");
        assert_eq!(answer.status, StatusCode::OK);
    }
    let hits: Vec<usize> = backends.iter().map(Backend::requests).collect();
    assert_eq!(hits, [100, 200, 300]);

    eventually("every response body has ended", || async {
        status(&client, &proxy)
            .await
            .iter()
            .all(|e| e.in_flight == 0)
    })
    .await;
    let report = status(&client, &proxy).await;
    let expected: Vec<Endpoint> = backends
        .iter()
        .enumerate()
        .map(|(i, backend)| Endpoint {
            address: backend.addr(),
            weight: i as u64 + 1,
            healthy: true,
            state: "healthy".into(),
            in_flight: 0,
            requests: backend.requests() as u64,
            failures: 0,
            ejections: 0,
        })
        .collect();
    assert_eq!(report, expected);
}

/// Sends three requests for each key; checks that each key stays on one
/// backend and that the keys spread over more than one.
async fn check_affinity(proxy: &Proxy, header: &str, keys: impl Iterator<Item = String>) {
    let client = client();
    let mut placed: HashMap<String, String> = HashMap::new();
    for key in keys {
        for _ in 0..3 {
            let request = Request::get(proxy.url("/"))
                .header(header, key.as_str())
                .body(Full::default())
                .unwrap();
            let answer = send(&client, request).await.expect("an answer");
            assert_eq!(answer.status, StatusCode::OK);
            let first = placed.entry(key.clone()).or_insert_with(|| answer.text());
            assert_eq!(*first, answer.text(), "key {key} moved");
        }
    }
    let used: HashSet<&String> = placed.values().collect();
    assert!(used.len() > 1, "every key went to {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_reads_trusted_forwarding_hops() {
    let backends = backends(&["a", "b", "c"]).await;
    let addrs: Vec<String> = backends.iter().map(|b| b.addr().to_string()).collect();
    let flags = ["--algorithm", "ip-hash", "--trusted-hops", "1"];
    let proxy = block_in_place(|| Proxy::start(&args(&flags, &addrs)));
    let clients = (1..=30).map(|i| format!("198.51.100.{i}"));
    check_affinity(&proxy, "x-forwarded-for", clients).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keys_by_a_header() {
    let backends = backends(&["a", "b", "c"]).await;
    let addrs: Vec<String> = backends.iter().map(|b| b.addr().to_string()).collect();
    let flags = ["--algorithm", "consistent-hash", "--hash-header", "x-user"];
    let proxy = block_in_place(|| Proxy::start(&args(&flags, &addrs)));
    check_affinity(&proxy, "x-user", (0..30).map(|i| format!("user-{i}"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_each_backends_requests() {
    let backends = backends(&["a", "b"]).await;
    let addrs: Vec<String> = backends.iter().map(|b| b.addr().to_string()).collect();
    let proxy = block_in_place(|| Proxy::start(&args(&["--algorithm", "round-robin"], &addrs)));
    let client = client();
    for _ in 0..10 {
        let answer = get(&client, &proxy.url("/")).await.expect("an answer");
        assert_eq!(answer.status, StatusCode::OK);
    }
    let page = get(&client, &format!("http://{}/metrics", proxy.admin))
        .await
        .expect("/metrics answers");
    assert_eq!(page.status, StatusCode::OK);
    let text = page.text();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text");
    for backend in &backends {
        let address = backend.addr().to_string();
        let requests = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "proxy_backend_requests_total"
                    && s.labels.get("backend") == Some(address.as_str())
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => -1.0,
            });
        assert_eq!(requests, Some(5.0), "{text}");
    }
    assert!(text.contains("proxy_backend_in_flight"), "{text}");
    // The proxy's answers to clients, by status, and their timing.
    let answers = scrape
        .samples
        .iter()
        .find(|s| s.metric == "proxy_answers_total" && s.labels.get("status") == Some("200"))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => -1.0,
        });
    assert_eq!(answers, Some(10.0), "{text}");
    for histogram in ["proxy_answer_head_seconds", "proxy_answer_duration_seconds"] {
        assert!(
            text.lines().any(|l| l == format!("{histogram}_count 10")),
            "{histogram}: {text}"
        );
    }
}
