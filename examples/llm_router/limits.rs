//! What the router's front refuses before `llm::Router`: the parts of
//! issue 24's hardening that belong to this command line (the listener's
//! limits, the HTTP rules and the admin port are shared in
//! `examples/gateway`; health, attempt deadlines, JSON bodies and the limit
//! on an answer's silences are `llm::Builder` settings).

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tower_lb::llm::{ResponseBody, TENANT_HEADER};
use tower_lb::pick::llm::PRIORITY_HEADER;

use crate::gateway::rules::{self, Refusal};

/// The routes every router serves: the OpenAI API and its health.
const OPENAI_ROUTES: [&str; 5] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/health",
];

/// The headers only trusted sources may set.
pub(crate) const TRUSTED_HEADERS: [HeaderName; 2] = [PRIORITY_HEADER, TENANT_HEADER];

/// The paths the public port forwards.
#[derive(Clone, Debug)]
pub(crate) struct Routes(Arc<[String]>);

impl Routes {
    /// The OpenAI routes, `/health` and `extra`.
    pub(crate) fn new(extra: &[String]) -> Self {
        Self(
            OPENAI_ROUTES
                .iter()
                .map(|&r| r.to_owned())
                .chain(extra.iter().cloned())
                .collect(),
        )
    }

    fn allows(&self, path: &str) -> bool {
        self.0.iter().any(|route| route == path)
            || path
                .strip_prefix("/v1/models/")
                .is_some_and(|id| !id.is_empty() && !id.contains('/'))
    }
}

/// Why a request is answered by the router itself, before any server:
/// the gateway's HTTP rules (CONNECT, Host), request headers over
/// `max_header_bytes` (431: hyper's read buffer bounds only a head that
/// arrives in pieces), then the route allowlist.
pub(crate) fn refusal<B>(
    request: &Request<B>,
    routes: &Routes,
    max_header_bytes: usize,
) -> Option<(StatusCode, String)> {
    if let Some(refusal) = rules::refusal(request, Some(max_header_bytes)) {
        let message = match refusal {
            Refusal::HeadersTooLarge => {
                format!("the request headers are larger than {max_header_bytes} bytes")
            }
            _ => refusal.line().trim_end().to_owned(),
        };
        return Some((refusal.status(), message));
    }
    if !routes.allows(request.uri().path()) {
        return Some((
            StatusCode::NOT_FOUND,
            format!("no route {:?} here", request.uri().path()),
        ));
    }
    None
}

/// Whether the refusal also closes the connection (CONNECT, Host and 431
/// refusals do; a 404 does not).
pub(crate) fn closes(status: StatusCode) -> bool {
    status == Refusal::Connect.status()
        || status == Refusal::Host.status()
        || status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
}

/// The router's own answer to a refused request, in OpenAI's error shape;
/// it closes the connection when [`closes`] says so.
pub(crate) fn refused(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let body = json!({"error": {
        "message": message,
        "type": "invalid_request_error",
        "code": status.as_u16(),
    }})
    .to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if closes(status) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// What the front checks before the router: routes, header size, and who
/// may set the trusted headers.
#[derive(Clone, Debug)]
pub(crate) struct FrontLimits {
    pub(crate) routes: Routes,
    pub(crate) trusted: Trusted,
    pub(crate) max_header_bytes: usize,
}

impl FrontLimits {
    /// The refusal of `request` from `peer`, or `None` after removing the
    /// trusted headers it may not set.
    pub(crate) fn check<B>(
        &self,
        peer: IpAddr,
        request: &mut Request<B>,
    ) -> Option<Response<ResponseBody>> {
        if let Some((status, message)) = refusal(request, &self.routes, self.max_header_bytes) {
            return Some(refused(status, &message));
        }
        self.trusted
            .strip_unless_trusted(peer, request.headers_mut(), &TRUSTED_HEADERS);
        None
    }
}

/// Addresses, or networks (`10.0.0.0/8`), whose requests may set
/// headers that others may not.
#[derive(Clone, Debug, Default)]
pub(crate) struct Trusted(Vec<(IpAddr, u8)>);

impl Trusted {
    pub(crate) fn new(networks: Vec<(IpAddr, u8)>) -> Self {
        Self(networks)
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|&(net, bits)| within(ip, net, bits))
    }

    /// Removes `names` from the headers of a request from `peer` unless
    /// `peer` is trusted: the backend and the picker then see the default.
    pub(crate) fn strip_unless_trusted(
        &self,
        peer: IpAddr,
        headers: &mut HeaderMap,
        names: &[HeaderName],
    ) {
        if names.iter().any(|name| headers.contains_key(name)) && !self.contains(peer) {
            for name in names {
                headers.remove(name);
            }
        }
    }
}

/// Parses `IP` or `IP/BITS`.
pub(crate) fn network(text: &str) -> Result<(IpAddr, u8), String> {
    let (ip, bits) = match text.split_once('/') {
        Some((ip, bits)) => (ip, Some(bits)),
        None => (text, None),
    };
    let ip: IpAddr = ip
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not IP or IP/BITS"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(bits) => bits
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|&b| b <= max)
            .ok_or(format!("{text:?}: the prefix length must be 0 to {max}"))?,
        None => max,
    };
    Ok((ip.to_canonical(), bits))
}

fn within(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}
