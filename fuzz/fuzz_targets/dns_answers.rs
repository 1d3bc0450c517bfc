//! DNS answers turned into endpoint changes: a `DnsDiscover` resolves a
//! name against a server on 127.0.0.1 that answers each round of
//! resolution as the input says (records of any type, name and TTL in the
//! answer and additional sections, NXDOMAIN, SERVFAIL, silence, raw
//! bytes). The changes must never panic and must keep a consistent set:
//! a remove only of a known address, an insert only of a new address or a
//! new weight, weights of at least 1, addresses only from the answer, and
//! failures keep the set.
//!
//! Rounds run on tokio's paused clock: TTLs and timeouts take no real time.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use futures_util::StreamExt;
use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record};
use libfuzzer_sys::fuzz_target;
use tokio::net::UdpSocket;
use tower::discover::Change;
use tower_lb::discover::{DnsDiscover, OnEmpty, Endpoint};

const NAME: &str = "svc.fuzz.test.";
/// Longer than any resolution takes (1 s timeouts), shorter than the TTL.
const IDLE: Duration = Duration::from_secs(45);
const TTL: Duration = Duration::from_secs(60);
/// Answers larger than this are cut down to fit one UDP datagram.
const MAX_ANSWER: usize = 1200;

#[derive(Arbitrary, Debug)]
struct Input {
    srv: bool,
    keep_last: bool,
    port: u16,
    rounds: Vec<Round>,
}

#[derive(Arbitrary, Debug)]
enum Round {
    Records(Vec<Rec>),
    NxDomain,
    NoData,
    ServFail,
    Silence,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Rec {
    additional: bool,
    name: Target,
    ttl: u32,
    data: Data,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Target {
    Query,
    T0,
    T1,
    T2,
    Elsewhere,
    Root,
}

#[derive(Arbitrary, Debug)]
enum Data {
    A([u8; 4]),
    Aaaa([u8; 16]),
    Srv {
        priority: u8,
        weight: u16,
        port: u16,
        target: Target,
    },
    Cname(Target),
}

fn name(target: Target) -> Name {
    let text = match target {
        Target::Query => NAME,
        Target::T0 => "t0.fuzz.test.",
        Target::T1 => "t1.fuzz.test.",
        Target::T2 => "t2.fuzz.test.",
        Target::Elsewhere => "elsewhere.example.",
        Target::Root => ".",
    };
    Name::from_utf8(text).expect("a valid name")
}

fn record(rec: &Rec) -> Record {
    let data = match rec.data {
        Data::A(ip) => RData::A(A(ip.into())),
        Data::Aaaa(ip) => RData::AAAA(AAAA(ip.into())),
        Data::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(
            u16::from(priority % 4),
            weight,
            port,
            name(target),
        )),
        Data::Cname(target) => RData::CNAME(CNAME(name(target))),
    };
    Record::from_rdata(name(rec.name), rec.ttl, data)
}

/// The reply to `query` in `round`, or nothing (silence).
fn reply(query: &Message, round: &Round) -> Option<Vec<u8>> {
    let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
    answer.metadata.authoritative = true;
    answer.metadata.recursion_desired = query.metadata.recursion_desired;
    answer.metadata.recursion_available = true;
    answer.add_queries(query.queries.clone());
    match round {
        Round::Records(records) => {
            let mut kept: Vec<&Rec> = records.iter().collect();
            loop {
                let mut attempt = answer.clone();
                for rec in &kept {
                    if rec.additional {
                        attempt.add_additional(record(rec));
                    } else {
                        attempt.add_answer(record(rec));
                    }
                }
                match attempt.to_vec() {
                    Ok(bytes) if bytes.len() <= MAX_ANSWER => return Some(bytes),
                    _ if kept.is_empty() => return answer.to_vec().ok(),
                    _ => {
                        kept.pop();
                    }
                }
            }
        }
        Round::NxDomain => answer.metadata.response_code = ResponseCode::NXDomain,
        Round::NoData => {}
        Round::ServFail => answer.metadata.response_code = ResponseCode::ServFail,
        Round::Silence => return None,
        Round::Raw(bytes) => {
            let mut bytes = bytes.clone();
            bytes.resize(bytes.len().clamp(12, MAX_ANSWER), 0);
            bytes[..2].copy_from_slice(&query.metadata.id.to_be_bytes());
            return Some(bytes);
        }
    }
    answer.to_vec().ok()
}

async fn serve(socket: UdpSocket, rounds: Arc<Vec<Round>>, current: Arc<AtomicUsize>) {
    let mut buf = vec![0; 4096];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(query) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        let round = &rounds[current.load(Ordering::SeqCst).min(rounds.len() - 1)];
        if let Some(bytes) = reply(&query, round) {
            let _ = socket.send_to(&bytes, from).await;
        }
    }
}

/// What a round may yield: the addresses and ports its records name.
fn named(round: &Round) -> (HashSet<IpAddr>, HashSet<u16>) {
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    if let Round::Records(records) = round {
        for rec in records {
            match rec.data {
                Data::A(ip) => drop(ips.insert(IpAddr::from(ip))),
                Data::Aaaa(ip) => drop(ips.insert(IpAddr::from(ip))),
                Data::Srv { port, .. } => drop(ports.insert(port)),
                Data::Cname(_) => {}
            }
        }
    }
    (ips, ports)
}

fuzz_target!(|input: Input| {
    if input.rounds.is_empty() || input.rounds.len() > 6 {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(run(input));
});

async fn run(input: Input) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let server = socket.local_addr().expect("an address");
    let rounds = Arc::new(input.rounds);
    let current = Arc::new(AtomicUsize::new(0));
    let serving = tokio::spawn(serve(socket, Arc::clone(&rounds), Arc::clone(&current)));

    let make = |addr: SocketAddr| addr;
    let discover = if input.srv {
        DnsDiscover::srv(NAME, make)
    } else {
        DnsDiscover::a_aaaa(NAME, input.port, make)
    };
    let on_empty = if input.keep_last {
        OnEmpty::KeepLast
    } else {
        OnEmpty::Clear
    };
    let discover = discover
        .name_servers([server])
        .timeout(Duration::from_secs(1))
        .min_ttl(TTL)
        .max_ttl(TTL)
        .on_empty(on_empty);
    let mut stream = pin!(discover);

    let mut set: HashMap<SocketAddr, u32> = HashMap::new();
    for (r, round) in rounds.iter().enumerate() {
        current.store(r, Ordering::SeqCst);
        let before = set.clone();
        let (ips, ports) = named(round);
        // Until the stream sleeps out its TTL: this round's changes.
        while let Ok(item) = tokio::time::timeout(IDLE, stream.next()).await {
            let change = match item {
                Some(Ok(change)) => change,
                // Each failure is reported; the set stays.
                Some(Err(_)) => continue,
                None => panic!("a valid setup never ends the stream"),
            };
            match change {
                Change::Insert(addr, service) => {
                    let weight = service.weight();
                    assert_eq!(*service.get_ref(), addr);
                    assert!(weight >= 1, "weight 0 for {addr}");
                    assert_ne!(set.get(&addr), Some(&weight), "{addr} inserted unchanged");
                    if !matches!(round, Round::Raw(_)) {
                        assert!(ips.contains(&addr.ip()), "{addr} is in no record");
                        if input.srv {
                            assert!(ports.contains(&addr.port()), "{addr}: port of no record");
                        }
                    }
                    if !input.srv {
                        assert_eq!((addr.port(), weight), (input.port, 1));
                    }
                    set.insert(addr, weight);
                }
                Change::Remove(addr) => {
                    assert!(set.remove(&addr).is_some(), "{addr} removed but unknown");
                }
            }
        }
        match round {
            Round::ServFail | Round::Silence => assert_eq!(set, before, "a failure kept the set"),
            Round::NxDomain | Round::NoData if input.keep_last => assert_eq!(set, before),
            Round::NxDomain | Round::NoData => assert!(set.is_empty(), "an empty answer clears"),
            Round::Records(_) | Round::Raw(_) => {}
        }
    }
    serving.abort();
}
