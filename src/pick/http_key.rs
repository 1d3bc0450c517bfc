//! Hash keys read from HTTP requests: the client's address, a header, the
//! path. The pickers themselves know nothing of HTTP; these are the
//! [`HashKey`]s that do.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::header::{GetAll, HeaderName, HeaderValue, FORWARDED};
use http::Request;

use super::key::{hash_bytes, HashKey};

/// A forwarding header line longer than this is not read at all.
const MAX_FORWARDING_LINE: usize = 8 * 1024;

/// A header value or path longer than this is not a key.
const MAX_KEY_LEN: usize = 4 * 1024;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The address of the peer that sent a request, as a request extension.
///
/// A server inserts it into each request it hands to the balancer so that
/// [`ClientIp`] (and with it [`IpHash`](super::IpHash)) knows who the client
/// is. With the `axum` feature, axum's `ConnectInfo<SocketAddr>` extension is
/// read too, when this one is absent.
///
/// ```
/// use std::net::SocketAddr;
/// use tower_lb::pick::key::ClientAddr;
///
/// let peer: SocketAddr = "192.0.2.7:50123".parse().unwrap();
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(ClientAddr(peer));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// The client's IP address as the request's hash key.
///
/// # Where the address comes from
///
/// With 0 trusted hops (the default) only the connection is believed: the
/// [`ClientAddr`] extension, else (with the `axum` feature) axum's
/// `ConnectInfo<SocketAddr>` extension.
///
/// Behind `n ≥ 1` proxies of your own, the connection's address is the last
/// proxy's, and the client is read from the forwarding header they append
/// to: `X-Forwarded-For` with [`ClientIp::new`], the `for=` values of RFC
/// 7239's `Forwarded` with [`ClientIp::forwarded`]. Only that header is
/// read, whatever else the request carries. Entries are read from the
/// right, across all lines of the header; the client is the `n`-th entry
/// from the right, or the leftmost if there are fewer than `n`. Empty
/// entries are skipped.
///
/// These headers are easy to forge: any client can send
/// `X-Forwarded-For: 1.2.3.4`, and each proxy only appends to what it
/// received. Only the entries your own proxies appended (the rightmost `n`)
/// can be trusted, which is why the count of trusted hops is explicit and
/// nothing further left is ever read. Set it to the number of proxies in
/// front of this service, no more, and choose the header they write: a
/// client can send the other one too, and your proxies would pass it on
/// untouched.
///
/// # Malformed input
///
/// Nothing here panics or allocates. The connection address is used instead
/// when the chosen entry cannot be parsed (`unknown`, an obfuscated
/// `_identifier`, garbage, a `Forwarded` element without `for=`) or when any
/// line of the header is longer than 8 KiB. Accepted forms: `192.0.2.1`,
/// `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]` and `[2001:db8::1]:8080`,
/// each optionally in double quotes. Commas inside quoted strings are not
/// understood (no address contains one). An IPv4-mapped IPv6 address
/// (`::ffff:192.0.2.1`) is the IPv4 address, so a dual-stack listener does
/// not split one client in two.
///
/// With no usable address at all, the key is missing (`None`), and the
/// picker's missing-key fallback applies.
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr};
/// use tower_lb::pick::key::ClientIp;
///
/// // One load balancer of ours in front: it appended the client's address.
/// let req = http::Request::builder()
///     .header("x-forwarded-for", "203.0.113.9, 198.51.100.4")
///     .body(())
///     .unwrap();
/// assert_eq!(
///     ClientIp::new(1).client_ip(&req),
///     Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 4))),
/// );
/// // Without trusted hops, headers are ignored; this request has no
/// // connection address.
/// assert_eq!(ClientIp::default().client_ip(&req), None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientIp {
    trusted_hops: usize,
    header: Forwarding,
}

/// The forwarding header a [`ClientIp`] reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
enum Forwarding {
    #[default]
    XForwardedFor,
    Forwarded,
}

impl ClientIp {
    /// Reads the client address behind `trusted_hops` proxies of your own
    /// that append to `X-Forwarded-For` (0: the connection's address only).
    #[must_use]
    pub const fn new(trusted_hops: usize) -> Self {
        Self {
            trusted_hops,
            header: Forwarding::XForwardedFor,
        }
    }

    /// Reads the client address behind `trusted_hops` proxies of your own
    /// that append to the RFC 7239 `Forwarded` header (0: the connection's
    /// address only).
    #[must_use]
    pub const fn forwarded(trusted_hops: usize) -> Self {
        Self {
            trusted_hops,
            header: Forwarding::Forwarded,
        }
    }

    /// How many proxies in front of this service are trusted.
    pub const fn trusted_hops(&self) -> usize {
        self.trusted_hops
    }

    /// The client's address for `req`, by the rules above, or `None` when the
    /// request carries none.
    pub fn client_ip<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let forwarded = match (self.trusted_hops, self.header) {
            (0, _) => None,
            (hops, Forwarding::Forwarded) => {
                nth_from_right(req.headers().get_all(FORWARDED), hops, forwarded_for)
            }
            (hops, Forwarding::XForwardedFor) => {
                nth_from_right(req.headers().get_all(X_FORWARDED_FOR), hops, node_ip)
            }
        };
        forwarded
            .or_else(|| connection_ip(req))
            .map(|ip| ip.to_canonical())
    }
}

impl<B> HashKey<Request<B>> for ClientIp {
    fn hash_key(&self, req: &Request<B>) -> Option<u64> {
        Some(match self.client_ip(req)? {
            IpAddr::V4(ip) => hash_bytes(&ip.octets()),
            IpAddr::V6(ip) => hash_bytes(&ip.octets()),
        })
    }
}

fn connection_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    if let Some(ClientAddr(addr)) = req.extensions().get::<ClientAddr>() {
        return Some(addr.ip());
    }
    #[cfg(feature = "axum")]
    {
        use axum::extract::ConnectInfo;
        if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
            return Some(addr.ip());
        }
    }
    None
}

/// The `hops`-th non-empty entry from the right across all `lines`, or the
/// leftmost when there are fewer, parsed by `parse`. `None` when a line is
/// over the size cap, there is no entry, or the chosen one does not parse.
fn nth_from_right(
    lines: GetAll<'_, HeaderValue>,
    hops: usize,
    parse: fn(&[u8]) -> Option<IpAddr>,
) -> Option<IpAddr> {
    if lines.iter().any(|line| line.len() > MAX_FORWARDING_LINE) {
        return None;
    }
    let mut seen = 0;
    let mut leftmost = None;
    for line in lines.iter().rev() {
        for entry in line.as_bytes().rsplit(|&b| b == b',') {
            let entry = entry.trim_ascii();
            if entry.is_empty() {
                continue;
            }
            seen += 1;
            if seen == hops {
                return parse(entry);
            }
            leftmost = Some(entry);
        }
    }
    leftmost.and_then(parse)
}

/// The `for=` node of one `Forwarded` element (`for=…;proto=…;by=…`).
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    element.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (name, value) = (&pair[..eq], &pair[eq + 1..]);
        if name.trim_ascii().eq_ignore_ascii_case(b"for") {
            // A second `for` in one element is malformed; the first counts.
            Some(node_ip(value))
        } else {
            None
        }
    })?
}

/// An address with an optional port, bracketed or not, optionally quoted.
fn node_ip(node: &[u8]) -> Option<IpAddr> {
    let mut node = node.trim_ascii();
    if let [b'"', inner @ .., b'"'] = node {
        node = inner;
    }
    let node = std::str::from_utf8(node).ok()?;
    if let Some(rest) = node.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        return host.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, port) = node.split_once(':')?;
    if port.is_empty() || port.contains(':') {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// One request header's value as the hash key: the bytes of its first value.
///
/// A request without the header, or whose value is longer than 4 KiB, has no
/// key, and the picker's missing-key fallback applies; the cap keeps a hostile
/// client from making every pick hash a megabyte.
///
/// ```
/// use tower_lb::pick::{IpHash, key::{Header, HashKey}};
///
/// let session = Header::new(http::HeaderName::from_static("x-session"));
/// let req = http::Request::builder().header("x-session", "42").body(()).unwrap();
/// assert!(session.hash_key(&req).is_some());
/// let by_session = IpHash::with_key(session);
/// # let _ = by_session;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    name: HeaderName,
}

impl Header {
    /// Keys requests by the value of the header `name`.
    #[must_use]
    pub const fn new(name: HeaderName) -> Self {
        Self { name }
    }

    /// The header read.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }
}

impl<B> HashKey<Request<B>> for Header {
    fn hash_key(&self, req: &Request<B>) -> Option<u64> {
        let value = req.headers().get(&self.name)?.as_bytes();
        (value.len() <= MAX_KEY_LEN).then(|| hash_bytes(value))
    }
}

/// The request's path (without the query) as the hash key.
///
/// Every request has a path; one longer than 4 KiB counts as missing, and the
/// picker's missing-key fallback applies.
///
/// ```
/// use tower_lb::pick::{key::{HashKey, Path}};
///
/// let a = http::Request::get("/models/llama?stream=true").body(()).unwrap();
/// let b = http::Request::get("/models/llama").body(()).unwrap();
/// assert_eq!(Path.hash_key(&a), Path.hash_key(&b));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Path;

impl Path {
    /// Keys requests by their path.
    #[must_use]
    pub const fn new() -> Self {
        Self
    }
}

impl<B> HashKey<Request<B>> for Path {
    fn hash_key(&self, req: &Request<B>) -> Option<u64> {
        let path = req.uri().path().as_bytes();
        (path.len() <= MAX_KEY_LEN).then(|| hash_bytes(path))
    }
}

#[cfg(test)]
mod tests {
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
}
