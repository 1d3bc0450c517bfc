//! What the router refuses before routing, and the limit on a streamed
//! answer's silences: the parts of issue 24's hardening that are the
//! router's own (the listener's limits, the HTTP rules and the admin port
//! are shared in `examples/gateway`; health, attempt deadlines and the
//! report check are the library's).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tower_lb::classify::LateFailure;
use tower_lb::http::IdleTimeoutBody;
use tower_lb::pick::llm::PRIORITY_HEADER;
use tower_lb::BoxError;

use crate::gateway::rules::{self, Refusal};

/// The routes every router serves: the OpenAI API and its health.
const OPENAI_ROUTES: [&str; 5] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/health",
];

/// The tenant header, trusted like `x-priority`.
pub(crate) const TENANT_HEADER: HeaderName = HeaderName::from_static("x-tenant");

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
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > max_header_bytes {
        return Some((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request headers are larger than {max_header_bytes} bytes"),
        ));
    }
    if let Some(refusal) = rules::refusal(request) {
        let message = refusal.line().trim_end().to_owned();
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

/// The answer's body, ended after `idle` without a frame: a server-sent
/// event stream with an error event (so the client reads why), any other
/// body with an error. Either way the server's health counts the stall as
/// its failure (`late`, from the response's extensions).
pub(crate) fn idle_limited<B>(response: Response<B>, idle: Duration) -> Response<IdleTimeoutBody<B>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    let late = parts.extensions.remove::<LateFailure>();
    let sse = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    let mut body = IdleTimeoutBody::new(body, idle).report_to(late);
    if sse {
        let event = json!({"error": {
            "message": format!("the server sent nothing for {idle:?}; the answer is cut short"),
            "type": "server_error",
            "code": 504,
        }});
        body = body.error_event(format!("data: {event}\n\n"));
    }
    Response::from_parts(parts, body)
}

/// Boxes an answer's body as the router's.
pub(crate) fn boxed<B>(body: B) -> crate::RouterBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
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
