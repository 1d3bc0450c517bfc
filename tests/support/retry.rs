//! For the retry tests: request bodies of every kind, a hyper-util client
//! per endpoint, and a balancer over them.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_lb::balance::TriedEndpoints;
use tower_lb::discover;
use tower_lb::endpoint::Weighted;
use tower_lb::http::SetAuthority;
use tower_lb::pick::{key::hash_value, Pick};
use tower_lb::retry::ReplayBody;
use tower_lb::Balance;

/// The request body every test sends: any body, boxed. (Its error type is
/// not `BoxError`: a `dyn` type in a spawned future's request trips the
/// compiler's `Send` check for higher-ranked lifetimes.)
pub type Body = UnsyncBoxBody<Bytes, Infallible>;
pub type Req = Request<ReplayBody<Body>>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A body of unknown length: `data` in chunks of `chunk` bytes.
pub fn streamed(data: Bytes, chunk: usize) -> Body {
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = data
        .chunks(chunk)
        .map(|c| Ok(Frame::data(data.slice_ref(c))))
        .collect();
    StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync()
}

/// Bytes that are not all alike, so a reordering or a cut shows.
pub fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<_>>()
        .into()
}

/// One endpoint: a shared hyper-util client with the URI's authority set
/// to this endpoint's address by the crate's [`SetAuthority`].
pub type Endpoint = SetAuthority<Client<HttpConnector, ReplayBody<Body>>>;

pub type Lb<P> = Balance<SocketAddr, Weighted<Endpoint>, P>;

/// A balancer with `picker` over `addrs`, once all are in its set.
pub async fn balance<P>(picker: P, addrs: &[SocketAddr]) -> Lb<P>
where
    P: Pick<Req, Weighted<Endpoint>>,
{
    let client = Client::builder(TokioExecutor::new()).build_http();
    let (endpoints, discover) = discover::channel();
    for &addr in addrs {
        let client = client.clone();
        endpoints
            .insert(addr, SetAuthority::from_addr(client, addr))
            .unwrap();
    }
    let balance = Balance::new(discover, picker);
    balance.wait_for(|keys| keys.len() == addrs.len()).await;
    balance
}

/// A request carrying a set of our own, to see where it went.
pub fn request(method: &str, body: Body) -> (Req0, TriedEndpoints) {
    let tried = TriedEndpoints::new();
    let mut req = Request::builder()
        .method(method)
        .uri("http://service/items")
        .body(body)
        .unwrap();
    req.extensions_mut().insert(tried.clone());
    (req, tried)
}

/// A request before the retry layer.
pub type Req0 = Request<Body>;

/// The key hashes of the endpoints `tried` holds, in order.
pub fn tried_hashes(tried: &TriedEndpoints) -> Vec<u64> {
    let mut out = [0; TriedEndpoints::CAPACITY];
    let n = tried.fill(&mut out);
    out[..n].to_vec()
}

pub fn key_hash(addr: SocketAddr) -> u64 {
    hash_value(&addr)
}

/// A backend that answers every request with `status`, keeping each
/// request's body; named after its status.
pub async fn answering(status: StatusCode) -> super::Backend {
    super::Backend::builder(status.as_str())
        .status(status)
        .record_bodies()
        .start()
        .await
}
