//! The client address from `X-Forwarded-For` and `Forwarded` headers of
//! any bytes, on any number of lines, behind any number of trusted hops:
//! never a panic; headers are read only with trusted hops; a line over the
//! cap means the connection's address.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use arbitrary::Arbitrary;
use http::header::{HeaderValue, FORWARDED};
use http::Request;
use libfuzzer_sys::fuzz_target;
use tower_lb::pick::{key::{hash_bytes, ClientAddr, ClientIp, HashKey}};

/// `ClientIp` reads no line longer than this.
const MAX_FORWARDING_LINE: usize = 8 * 1024;

#[derive(Arbitrary, Debug)]
struct Input {
    hops: u8,
    /// Which header the proxies write, and so which one is read.
    reads: Which,
    peer: Option<Peer>,
    lines: Vec<(Which, Line)>,
}

#[derive(Arbitrary, Debug)]
enum Peer {
    V4([u8; 4], u16),
    V6([u8; 16], u16),
}

#[derive(Arbitrary, Debug, PartialEq, Eq, Clone, Copy)]
enum Which {
    XForwardedFor,
    Forwarded,
}

#[derive(Arbitrary, Debug)]
enum Line {
    Bytes(Vec<u8>),
    /// Entries joined by commas, as proxies write them.
    Entries(Vec<String>),
    /// A line past the cap, made of one repeated entry.
    Long(String, u16),
}

fuzz_target!(|input: Input| {
    let mut req = Request::new(());
    let peer = input.peer.map(|peer| match peer {
        Peer::V4(ip, port) => SocketAddr::from((ip, port)),
        Peer::V6(ip, port) => SocketAddr::from((ip, port)),
    });
    if let Some(peer) = peer {
        req.extensions_mut().insert(ClientAddr(peer));
    }
    // The longest line of each header, 0 when the request has none.
    let mut longest = [0usize; 2];
    for (which, line) in input.lines {
        let bytes = match line {
            Line::Bytes(bytes) => bytes,
            Line::Entries(entries) => entries.join(", ").into_bytes(),
            Line::Long(entry, times) => entry.repeat(usize::from(times)).into_bytes(),
        };
        let Ok(value) = HeaderValue::from_bytes(&bytes) else {
            continue;
        };
        longest[which as usize] = longest[which as usize].max(value.len());
        let name = match which {
            Which::XForwardedFor => http::HeaderName::from_static("x-forwarded-for"),
            Which::Forwarded => FORWARDED,
        };
        req.headers_mut().append(name, value);
    }

    let hops = usize::from(input.hops % 8);
    let key = match input.reads {
        Which::XForwardedFor => ClientIp::new(hops),
        Which::Forwarded => ClientIp::forwarded(hops),
    };
    let ip = key.client_ip(&req);
    let connection = peer.map(|peer| peer.ip().to_canonical());

    let read = input.reads as usize;
    if hops == 0 || longest[read] == 0 {
        assert_eq!(
            ip, connection,
            "no trusted hop or no such header: the connection only"
        );
    }
    if hops > 0 && longest[read] > MAX_FORWARDING_LINE {
        assert_eq!(ip, connection, "a line over the cap is not read");
    }
    if let Some(IpAddr::V6(v6)) = ip {
        assert!(v6.to_ipv4_mapped().is_none(), "mapped addresses are IPv4");
    }
    let expected = ip.map(|ip| match ip {
        IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        IpAddr::V6(v6) => hash_bytes(&v6.octets()),
    });
    assert_eq!(key.hash_key(&req), expected);
});
