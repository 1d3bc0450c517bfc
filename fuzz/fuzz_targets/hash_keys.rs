//! Hash keys from any header value and any path: a key exactly when the
//! value is within the cap, the same key for the same bytes, and a pick
//! through a hashing picker whatever the key.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Uri};
use libfuzzer_sys::fuzz_target;
use tower_lb::pick::{ConsistentHash, Candidates, EndpointInfo, Pick, Prepare, key::{hash_bytes, HashKey, Header, Path}, table::HashRing};

/// Header values and paths longer than this are not keys.
const MAX_KEY_LEN: usize = 4 * 1024;

#[derive(Arbitrary, Debug)]
struct Input {
    value: Vec<u8>,
    /// Repeats `value` this many times more, to reach the cap.
    repeat: u8,
    uri: Vec<u8>,
}

fuzz_target!(|input: Input| {
    // Repeated only until it is past the cap: longer values cost time,
    // not coverage.
    let mut value = input.value.clone();
    for _ in 0..input.repeat {
        if value.len() > 2 * MAX_KEY_LEN {
            break;
        }
        value.extend_from_slice(&input.value);
    }
    let name = HeaderName::from_static("x-key");
    let mut req = Request::new(());
    if let Ok(uri) = Uri::try_from(input.uri.as_slice()) {
        *req.uri_mut() = uri;
    }
    let header = Header::new(name.clone());
    assert_eq!(header.hash_key(&req), None, "no header, no key");
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        req.headers_mut().insert(name, value.clone());
        let expected = (value.len() <= MAX_KEY_LEN).then(|| hash_bytes(value.as_bytes()));
        assert_eq!(header.hash_key(&req), expected);
    }
    let path = req.uri().path().as_bytes();
    let expected = (path.len() <= MAX_KEY_LEN).then(|| hash_bytes(path));
    assert_eq!(Path.hash_key(&req), expected);
    assert!(
        !req.uri().path().contains('?'),
        "the query is not part of the path"
    );

    // Whatever the key, or none, a ring of three picks one of them.
    let rings = RINGS.get_or_init(|| {
        let by_header = ConsistentHash::new(Header::new(HeaderName::from_static("x-key")));
        let by_path = ConsistentHash::new(Path);
        let (a, b) = (by_header.prepare(&METAS), by_path.prepare(&METAS));
        (by_header, a, by_path, b)
    });
    let services = [(); 3];
    let endpoints = Candidates::new(&METAS, &services);
    assert!(rings
        .0
        .pick(&rings.1, &endpoints, &req)
        .is_some_and(|i| i < 3));
    assert!(rings
        .2
        .pick(&rings.3, &endpoints, &req)
        .is_some_and(|i| i < 3));
});

const METAS: [EndpointInfo; 3] = [EndpointInfo::new(1, 1), EndpointInfo::new(2, 3), EndpointInfo::new(3, 1)];

type Rings = (
    ConsistentHash<Header>,
    HashRing,
    ConsistentHash<Path>,
    HashRing,
);

/// Built once: the rings are not what is fuzzed here.
static RINGS: OnceLock<Rings> = OnceLock::new();
