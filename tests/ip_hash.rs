//! IP hash over real HTTP backends: the client address as request extension
//! and behind a trusted proxy's `X-Forwarded-For`.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use http::Request;
use tower_lb::discover::StaticList;
use tower_lb::pick::{key::ClientAddr, IpHash};
use tower_lb::Balance;

use support::*;

const IDS: [&str; 4] = ["a", "b", "c", "d"];

async fn ip_hash_over(servers: &[Backend], picker: IpHash) -> HttpBalance<IpHash> {
    let list = StaticList::new(
        IDS.into_iter()
            .zip(servers)
            .map(|(id, s)| (id, s.endpoint())),
    );
    let balance = Balance::new(list, picker);
    within("discovery", balance.wait_for(|keys| keys.len() == 4)).await;
    balance
}

fn from(ip: IpAddr, port: u16) -> Request<ReqBody> {
    let mut req = get("/");
    req.extensions_mut()
        .insert(ClientAddr(SocketAddr::new(ip, port)));
    req
}

fn forwarded(client: &str, proxy: IpAddr) -> Request<ReqBody> {
    let mut req = get("/");
    req.headers_mut()
        .insert("x-forwarded-for", client.parse().unwrap());
    req.extensions_mut()
        .insert(ClientAddr(SocketAddr::new(proxy, 443)));
    req
}

#[tokio::test]
async fn same_client_same_endpoint() {
    let servers = backends(&IDS).await;
    let mut balance = ip_hash_over(&servers, IpHash::new()).await;
    let mut rng = Seeded::new(7);
    let mut endpoints_used = HashSet::new();
    for _ in 0..50 {
        let ip = IpAddr::V4(rng.ipv4());
        // Five requests, each from a new connection (a new source port).
        let answers = within(
            "one client",
            tally(&mut balance, 5, |i| from(ip, 40_000 + i as u16)),
        )
        .await;
        assert_eq!(answers.len(), 1, "{ip} was spread over {answers:?}");
        endpoints_used.extend(answers.into_keys());
    }
    assert_eq!(served(&servers).iter().sum::<usize>(), 250);
    assert_eq!(endpoints_used.len(), 4, "50 clients use every endpoint");
}

#[tokio::test]
async fn distinct_clients_spread_within_20_percent() {
    let servers = backends(&IDS).await;
    let mut balance = ip_hash_over(&servers, IpHash::new()).await;
    let mut rng = Seeded::new(11);
    let clients: HashSet<IpAddr> = (0..1000).map(|_| IpAddr::V4(rng.ipv4())).collect();
    assert_eq!(clients.len(), 1000);
    let clients: Vec<IpAddr> = clients.into_iter().collect();

    let answers = within(
        "1000 clients",
        tally(&mut balance, 1000, |i| from(clients[i], 1)),
    )
    .await;
    assert_eq!(answers.len(), 4, "{answers:?}");
    for (id, &n) in &answers {
        assert!((200..=300).contains(&n), "{id}: {n} of 1000, {answers:?}");
    }
    let served = served(&servers);
    assert_eq!(served.iter().sum::<usize>(), 1000);
    assert_eq!(served, answers.values().copied().collect::<Vec<_>>());
}

#[tokio::test]
async fn forwarded_for_behind_one_trusted_proxy() {
    let servers = backends(&IDS).await;
    let mut direct = ip_hash_over(&servers, IpHash::new()).await;
    let mut proxied = ip_hash_over(&servers, IpHash::trusted_hops(1)).await;
    let proxies: [IpAddr; 2] = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
    let mut rng = Seeded::new(13);
    for _ in 0..50 {
        let ip = IpAddr::V4(rng.ipv4());
        let client = ip.to_string();
        // The client's own connection, when it reaches us directly.
        let (_, home) = within("direct", send(&mut direct, from(ip, 5000)))
            .await
            .unwrap();
        // Through either proxy, and with a forged entry to the left that
        // only the client could have written: always the same endpoint.
        for proxy in proxies {
            for header in [client.clone(), format!("198.18.0.1, {client}")] {
                let (_, body) = within("proxied", send(&mut proxied, forwarded(&header, proxy)))
                    .await
                    .unwrap();
                assert_eq!(body, home, "{header} via {proxy}");
            }
        }
    }
}

#[tokio::test]
async fn unreadable_forwarding_falls_back_to_the_connection() {
    let servers = backends(&IDS).await;
    let mut direct = ip_hash_over(&servers, IpHash::new()).await;
    let mut proxied = ip_hash_over(&servers, IpHash::trusted_hops(1)).await;
    let mut rng = Seeded::new(17);
    for _ in 0..20 {
        let ip = IpAddr::V4(rng.ipv4());
        let (_, home) = within("direct", send(&mut direct, from(ip, 1)))
            .await
            .unwrap();
        for garbage in ["unknown", "_hidden", "not an address", ",,,"] {
            let (status, body) = within("garbage", send(&mut proxied, forwarded(garbage, ip)))
                .await
                .unwrap();
            assert_eq!((status.as_u16(), &body), (200, &home), "{garbage}");
        }
    }
}

#[tokio::test]
async fn requests_without_an_address_go_round_robin() {
    let servers = backends(&IDS).await;
    let mut balance = ip_hash_over(&servers, IpHash::new()).await;

    let mut first_cycle = Vec::new();
    for _ in 0..4 {
        first_cycle.push(within("keyless", get_ok(&mut balance, "/")).await);
    }
    assert_eq!(first_cycle, IDS);

    let answers = within("keyless", tally(&mut balance, 396, |_| get("/"))).await;
    assert_eq!(
        answers,
        counts(&[("a", 99), ("b", 99), ("c", 99), ("d", 99)])
    );
    assert_eq!(served(&servers), [100, 100, 100, 100]);

    // Behind a proxy, a request with neither headers nor a connection
    // address is keyless too.
    let mut proxied = ip_hash_over(&servers, IpHash::trusted_hops(1)).await;
    let answers = within("keyless", tally(&mut proxied, 40, |_| get("/"))).await;
    assert_eq!(
        answers,
        counts(&[("a", 10), ("b", 10), ("c", 10), ("d", 10)])
    );
}

#[tokio::test]
async fn shares_of_distinct_clients_follow_weights() {
    let servers = backends(&["a", "b", "c"]).await;
    let list = StaticList::weighted([
        ("a", servers[0].endpoint(), 1),
        ("b", servers[1].endpoint(), 1),
        ("c", servers[2].endpoint(), 2),
    ]);
    let mut balance = Balance::new(list, IpHash::new());
    within("discovery", balance.wait_for(|keys| keys.len() == 3)).await;
    let mut rng = Seeded::new(19);
    let answers = within(
        "weighted clients",
        tally(&mut balance, 1000, |_| from(IpAddr::V4(rng.ipv4()), 1)),
    )
    .await;
    let expected: BTreeMap<&str, usize> = [("a", 250), ("b", 250), ("c", 500)].into();
    for (id, want) in expected {
        let got = answers.get(id).copied().unwrap_or(0);
        assert!(got.abs_diff(want) <= want / 5, "{id}: {got}, {answers:?}");
    }
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_connect_info_is_the_connection_address() {
    use axum::extract::ConnectInfo;

    let servers = backends(&IDS).await;
    let mut balance = ip_hash_over(&servers, IpHash::new()).await;
    let mut rng = Seeded::new(23);
    for _ in 0..20 {
        let peer = SocketAddr::new(IpAddr::V4(rng.ipv4()), 1234);
        let (_, home) = within("client addr", send(&mut balance, from(peer.ip(), 1)))
            .await
            .unwrap();
        let mut req = get("/");
        req.extensions_mut().insert(ConnectInfo(peer));
        let (_, body) = within("connect info", send(&mut balance, req))
            .await
            .unwrap();
        assert_eq!(body, home, "{peer}");
    }
}
