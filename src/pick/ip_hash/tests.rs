use std::net::{Ipv4Addr, SocketAddr};

use http::Request;

use super::*;
use crate::pick::key::ClientAddr;
use crate::pick::testing::{metas, picks_per_endpoint};

fn from(ip: Ipv4Addr) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(ClientAddr(SocketAddr::from((ip, 1234))));
    req
}

fn spread(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + i * 7919)
}

#[test]
fn same_key_same_endpoint() {
    let ip_hash = IpHash::new();
    let metas = metas(&[1, 1, 1, 1]);
    let table = ip_hash.prepare(&metas);
    let endpoints = Candidates::new(&metas, &[(); 4]);
    for i in 0..100 {
        let req = from(spread(i));
        let first = ip_hash.pick(&table, &endpoints, &req).unwrap();
        for _ in 0..5 {
            assert_eq!(ip_hash.pick(&table, &endpoints, &req), Some(first));
        }
    }
}

#[test]
fn distinct_clients_spread_evenly() {
    let ip_hash = IpHash::new();
    let metas = metas(&[1, 1, 1, 1]);
    let table = ip_hash.prepare(&metas);
    let endpoints = Candidates::new(&metas, &[(); 4]);
    let mut c = [0; 4];
    for i in 0..1000 {
        // Consecutive addresses: the worst case for a weak hash.
        let req = from(Ipv4Addr::from(0xc0a8_0000 + i));
        c[ip_hash.pick(&table, &endpoints, &req).unwrap()] += 1;
    }
    assert!(c.iter().all(|&k| (200..=300).contains(&k)), "{c:?}");
}

#[test]
fn shares_follow_weights() {
    let ip_hash = IpHash::new();
    let metas = metas(&[1, 3, 0]);
    let table = ip_hash.prepare(&metas);
    let endpoints = Candidates::new(&metas, &[(); 3]);
    let mut c = [0; 3];
    for i in 0..4000 {
        c[ip_hash.pick(&table, &endpoints, &from(spread(i))).unwrap()] += 1;
    }
    assert_eq!(c[2], 0);
    assert!((800..1200).contains(&c[0]), "{c:?}");
}

#[test]
fn missing_key_goes_round_robin() {
    let ip_hash = IpHash::new();
    let metas = metas(&[1, 1, 1]);
    let table = ip_hash.prepare(&metas);
    let endpoints = Candidates::new(&metas, &[(); 3]);
    let keyless = Request::new(());
    let picks: Vec<usize> = (0..6)
        .map(|_| ip_hash.pick(&table, &endpoints, &keyless).unwrap())
        .collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
}

#[test]
fn exclusion_walks_to_a_stable_second_choice() {
    let ip_hash = IpHash::new();
    let metas = metas(&[1, 1, 1, 1]);
    let table = ip_hash.prepare(&metas);
    let services = [(); 4];
    let plain = Candidates::new(&metas, &services);
    for i in 0..200 {
        let req = from(spread(i));
        let first = ip_hash.pick(&table, &plain, &req).unwrap();
        let excluded = [metas[first].key_hash()];
        let retry = Candidates::new(&metas, &services).excluding(&excluded);
        let second = ip_hash.pick(&table, &retry, &req).unwrap();
        assert_ne!(second, first);
        assert_eq!(ip_hash.pick(&table, &retry, &req), Some(second));
    }
    let all = [0, 1, 2, 3];
    let none = Candidates::new(&metas, &services).excluding(&all);
    assert_eq!(ip_hash.pick(&table, &none, &from(spread(1))), None);
}

#[test]
fn no_endpoints() {
    let ip_hash = IpHash::new();
    let req = from(spread(3));
    let table = ip_hash.prepare(&[]);
    assert_eq!(
        ip_hash.pick(&table, &Candidates::<()>::new(&[], &[]), &req),
        None
    );
    let metas = metas(&[0, 0]);
    let table = ip_hash.prepare(&metas);
    assert_eq!(
        ip_hash.pick(&table, &Candidates::new(&metas, &[(); 2]), &req),
        None
    );
}

#[test]
fn custom_keys_spread_even_when_weak() {
    let by_id = IpHash::with_key(|req: &u64| Some(*req));
    let c = picks_per_endpoint(&by_id, &metas(&[1, 1, 1, 1]), 0..1000);
    assert!(c.iter().all(|&k| (200..=300).contains(&k)), "{c:?}");
}

#[test]
fn trusted_hops_reads_forwarded_headers() {
    let ip_hash = IpHash::trusted_hops(1);
    let metas = metas(&[1; 16]);
    let table = ip_hash.prepare(&metas);
    let endpoints = Candidates::new(&metas, &[(); 16]);
    let via = |client: &str, proxy: &str| {
        let mut req = Request::builder()
            .header("x-forwarded-for", client)
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(ClientAddr(proxy.parse().unwrap()));
        req
    };
    let a = ip_hash.pick(&table, &endpoints, &via("203.0.113.5", "10.0.0.1:1"));
    let b = ip_hash.pick(&table, &endpoints, &via("203.0.113.5", "10.0.0.2:1"));
    assert_eq!(a, b);
    assert_eq!(ip_hash.key().trusted_hops(), 1);
}
