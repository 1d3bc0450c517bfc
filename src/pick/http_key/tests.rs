use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn request(headers: &[(&str, &str)], peer: Option<&str>) -> Request<()> {
    let mut builder = Request::builder();
    for &(name, value) in headers {
        builder = builder.header(name, value);
    }
    if let Some(peer) = peer {
        builder = builder.extension(ClientAddr(peer.parse().unwrap()));
    }
    builder.body(()).unwrap()
}

fn client(hops: usize, headers: &[(&str, &str)]) -> Option<IpAddr> {
    ClientIp::new(hops).client_ip(&request(headers, Some("10.0.0.1:443")))
}

/// The client as read from `Forwarded`.
fn client_rfc(hops: usize, headers: &[(&str, &str)]) -> Option<IpAddr> {
    ClientIp::forwarded(hops).client_ip(&request(headers, Some("10.0.0.1:443")))
}

const XFF: &str = "x-forwarded-for";

#[test]
fn zero_hops_reads_only_the_connection() {
    assert_eq!(client(0, &[(XFF, "1.1.1.1")]), Some(ip("10.0.0.1")));
    assert_eq!(
        client(0, &[("forwarded", "for=1.1.1.1")]),
        Some(ip("10.0.0.1"))
    );
    assert_eq!(
        ClientIp::default().client_ip(&request(&[(XFF, "1.1.1.1")], None)),
        None
    );
}

#[test]
fn x_forwarded_for_by_hops() {
    let chain = [(XFF, "1.1.1.1, 2.2.2.2, 3.3.3.3")];
    assert_eq!(client(1, &chain), Some(ip("3.3.3.3")));
    assert_eq!(client(2, &chain), Some(ip("2.2.2.2")));
    assert_eq!(client(3, &chain), Some(ip("1.1.1.1")));
    // Fewer entries than hops: the leftmost.
    assert_eq!(client(5, &chain), Some(ip("1.1.1.1")));
}

#[test]
fn x_forwarded_for_across_lines() {
    let lines = [
        (XFF, "1.1.1.1, 2.2.2.2"),
        (XFF, "3.3.3.3"),
        (XFF, "4.4.4.4,5.5.5.5"),
    ];
    assert_eq!(client(1, &lines), Some(ip("5.5.5.5")));
    assert_eq!(client(2, &lines), Some(ip("4.4.4.4")));
    assert_eq!(client(3, &lines), Some(ip("3.3.3.3")));
    assert_eq!(client(4, &lines), Some(ip("2.2.2.2")));
    assert_eq!(client(5, &lines), Some(ip("1.1.1.1")));
    assert_eq!(client(9, &lines), Some(ip("1.1.1.1")));
}

#[test]
fn x_forwarded_for_spaces_ports_and_empty_entries() {
    let odd = [(XFF, "  1.1.1.1:1234 ,, \t[2001:db8::1]:443 ,2001:db8::2 , ")];
    assert_eq!(client(1, &odd), Some(ip("2001:db8::2")));
    assert_eq!(client(2, &odd), Some(ip("2001:db8::1")));
    assert_eq!(client(3, &odd), Some(ip("1.1.1.1")));
    assert_eq!(
        client(2, &[(XFF, "[2001:db8::9], 1.1.1.1")]),
        Some(ip("2001:db8::9"))
    );
}

#[test]
fn unparseable_choice_falls_back_to_the_connection() {
    let conn = Some(ip("10.0.0.1"));
    assert_eq!(client(1, &[(XFF, "1.1.1.1, garbage")]), conn);
    assert_eq!(client(1, &[(XFF, "1.1.1.1, unknown")]), conn);
    assert_eq!(client(1, &[(XFF, "1.1.1.1, 300.1.1.1")]), conn);
    assert_eq!(client(1, &[(XFF, "1.1.1.1, 1.1.1.1:")]), conn);
    assert_eq!(client(1, &[(XFF, "1.1.1.1, [2001:db8::1")]), conn);
    assert_eq!(client(1, &[(XFF, "1.1.1.1, [2001:db8::1]x")]), conn);
    assert_eq!(client(1, &[(XFF, "1.1.1.1, [1.1.1.1]")]), conn);
    assert_eq!(client(1, &[(XFF, "1.1.1.1, fe80::1%eth0")]), conn);
    assert_eq!(client(1, &[(XFF, ", ,")]), conn);
    assert_eq!(client(1, &[(XFF, "")]), conn);
    // Only the chosen entry matters: garbage further left is never read.
    assert_eq!(client(1, &[(XFF, "garbage, 2.2.2.2")]), Some(ip("2.2.2.2")));
}

#[test]
fn non_ascii_header_bytes_do_not_panic() {
    let mut req = request(&[], Some("10.0.0.1:1"));
    let value = HeaderValue::from_bytes(b"\xff\xfe, 2.2.2.2").unwrap();
    req.headers_mut().append(X_FORWARDED_FOR, value);
    assert_eq!(ClientIp::new(1).client_ip(&req), Some(ip("2.2.2.2")));
    assert_eq!(ClientIp::new(2).client_ip(&req), Some(ip("10.0.0.1")));
}

#[test]
fn overlong_lines_fall_back_to_the_connection() {
    let long = format!("{}2.2.2.2", "1.1.1.1, ".repeat(1000));
    assert!(long.len() > MAX_FORWARDING_LINE);
    assert_eq!(client(1, &[(XFF, &long)]), Some(ip("10.0.0.1")));
    // Even when the long line is not the one the client is read from.
    assert_eq!(
        client(1, &[(XFF, &long), (XFF, "3.3.3.3")]),
        Some(ip("10.0.0.1"))
    );
    let fits = format!("{}2.2.2.2", "1.1.1.1, ".repeat(900));
    assert!(fits.len() <= MAX_FORWARDING_LINE);
    assert_eq!(client(1, &[(XFF, &fits)]), Some(ip("2.2.2.2")));
}

#[test]
fn forwarded_values() {
    let f = "forwarded";
    assert_eq!(
        client_rfc(1, &[(f, "for=192.0.2.60;proto=http;by=203.0.113.43")]),
        Some(ip("192.0.2.60"))
    );
    assert_eq!(
        client_rfc(1, &[(f, "proto=https; For=\"192.0.2.61:8080\"")]),
        Some(ip("192.0.2.61"))
    );
    assert_eq!(
        client_rfc(1, &[(f, "for=\"[2001:db8:cafe::17]:4711\"")]),
        Some(ip("2001:db8:cafe::17"))
    );
    assert_eq!(
        client_rfc(1, &[(f, "for=\"[2001:db8:cafe::17]\"")]),
        Some(ip("2001:db8:cafe::17"))
    );
    assert_eq!(
        client_rfc(1, &[(f, "for=\"[2001:db8::1]:_port\"")]),
        Some(ip("2001:db8::1"))
    );
    let chain = [
        (f, "for=1.1.1.1, for=2.2.2.2"),
        (f, "for=3.3.3.3;proto=https"),
    ];
    assert_eq!(client_rfc(1, &chain), Some(ip("3.3.3.3")));
    assert_eq!(client_rfc(2, &chain), Some(ip("2.2.2.2")));
    assert_eq!(client_rfc(5, &chain), Some(ip("1.1.1.1")));
}

#[test]
fn forwarded_unknown_obfuscated_and_missing_for() {
    let conn = Some(ip("10.0.0.1"));
    let f = "forwarded";
    assert_eq!(client_rfc(1, &[(f, "for=unknown")]), conn);
    assert_eq!(client_rfc(1, &[(f, "for=_hidden")]), conn);
    assert_eq!(client_rfc(1, &[(f, "for=\"_hidden:1\"")]), conn);
    assert_eq!(client_rfc(1, &[(f, "proto=https;by=1.1.1.1")]), conn);
    assert_eq!(client_rfc(1, &[(f, "for")]), conn);
    assert_eq!(client_rfc(1, &[(f, "for=\"")]), conn);
    assert_eq!(client_rfc(1, &[(f, "for=\"1.1.1.1")]), conn);
    assert_eq!(client_rfc(1, &[(f, ";;;=;")]), conn);
    // The element without `for` still counts as a hop.
    assert_eq!(
        client_rfc(2, &[(f, "for=1.1.1.1, proto=https")]),
        Some(ip("1.1.1.1"))
    );
}

#[test]
fn only_the_configured_header_is_read() {
    let both = [(XFF, "2.2.2.2"), ("forwarded", "for=1.1.1.1")];
    assert_eq!(client_rfc(1, &both), Some(ip("1.1.1.1")));
    assert_eq!(client(1, &both), Some(ip("2.2.2.2")));
    // Even when it is unusable: the connection, not the other header.
    let bad = [(XFF, "2.2.2.2"), ("forwarded", "for=unknown")];
    assert_eq!(client_rfc(1, &bad), Some(ip("10.0.0.1")));
    assert_eq!(client_rfc(1, &[(XFF, "2.2.2.2")]), Some(ip("10.0.0.1")));
}

#[test]
fn a_client_cannot_choose_its_address_with_the_other_header() {
    // Our proxy appends the client's address to X-Forwarded-For; the
    // client also sent a Forwarded header, which the proxy passes on.
    let sent = [("forwarded", "for=6.6.6.6"), (XFF, "203.0.113.9")];
    assert_eq!(client(1, &sent), Some(ip("203.0.113.9")));
    let key = ClientIp::new(1);
    let honest = request(&[(XFF, "203.0.113.9")], Some("10.0.0.1:443"));
    let forged = request(&sent, Some("10.0.0.1:443"));
    assert_eq!(key.hash_key(&forged), key.hash_key(&honest));
}

#[test]
fn missing_everything() {
    assert_eq!(ClientIp::new(0).client_ip(&request(&[], None)), None);
    assert_eq!(ClientIp::new(2).client_ip(&request(&[], None)), None);
    assert_eq!(
        ClientIp::new(2).hash_key(&request(&[(XFF, "junk")], None)),
        None
    );
    assert_eq!(
        ClientIp::new(2).client_ip(&request(&[], Some("[::1]:80"))),
        Some(ip("::1"))
    );
}

#[test]
fn ipv4_mapped_addresses_are_ipv4() {
    let mapped = request(&[], Some("[::ffff:192.0.2.1]:80"));
    let plain = request(&[], Some("192.0.2.1:80"));
    assert_eq!(ClientIp::new(0).client_ip(&mapped), Some(ip("192.0.2.1")));
    assert_eq!(
        ClientIp::new(0).hash_key(&mapped),
        ClientIp::new(0).hash_key(&plain)
    );
    assert_eq!(client(1, &[(XFF, "::ffff:1.2.3.4")]), Some(ip("1.2.3.4")));
    assert_eq!(
        ClientIp::new(0).hash_key(&plain),
        Some(hash_bytes(&[192, 0, 2, 1]))
    );
}

#[test]
fn header_key() {
    let key = Header::new(HeaderName::from_static("x-user"));
    let a = request(&[("x-user", "alice"), ("x-user", "bob")], None);
    assert_eq!(key.hash_key(&a), Some(hash_bytes(b"alice")));
    assert_eq!(key.hash_key(&request(&[], None)), None);
    let long = "u".repeat(MAX_KEY_LEN + 1);
    assert_eq!(key.hash_key(&request(&[("x-user", &long)], None)), None);
    let fits = "u".repeat(MAX_KEY_LEN);
    assert!(key.hash_key(&request(&[("x-user", &fits)], None)).is_some());
}

#[test]
fn path_key() {
    let get = |uri: &str| Request::get(uri).body(()).unwrap();
    assert_eq!(Path.hash_key(&get("/a/b?x=1")), Some(hash_bytes(b"/a/b")));
    assert_ne!(Path.hash_key(&get("/a")), Path.hash_key(&get("/b")));
    let long = format!("/{}", "p".repeat(MAX_KEY_LEN));
    assert_eq!(Path::new().hash_key(&get(&long)), None);
}

#[cfg(feature = "axum")]
#[test]
fn axum_connect_info() {
    use axum::extract::ConnectInfo;
    let mut req = request(&[], None);
    req.extensions_mut()
        .insert(ConnectInfo::<SocketAddr>("192.0.2.5:1".parse().unwrap()));
    assert_eq!(ClientIp::new(0).client_ip(&req), Some(ip("192.0.2.5")));
    // Our own extension wins.
    req.extensions_mut()
        .insert(ClientAddr("192.0.2.6:1".parse().unwrap()));
    assert_eq!(ClientIp::new(0).client_ip(&req), Some(ip("192.0.2.6")));
}
