//! Removing the headers that concern one connection only, before a
//! message is forwarded.

use http::header::{
    HeaderName, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderValue};

/// `Keep-Alive`, which `http` names no constant for.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `Proxy-Connection`, which `http` names no constant for.
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &PROXY_AUTHENTICATE,
        &PROXY_AUTHORIZATION,
        &TE,
        &TRAILER,
        &TRANSFER_ENCODING,
        &UPGRADE,
    ]
    .contains(&name)
}

/// Headers that `Connection` cannot name away: they say what the message
/// is and where it goes, and a client that strips them would change how
/// the gateway and the backend each read it.
const PROTECTED: [HeaderName; 3] = [HOST, CONTENT_TYPE, CONTENT_LENGTH];

/// Removes the headers that concern one connection only (RFC 9110 §7.6.1):
/// the fixed hop-by-hop set, and any header that `Connection` names
/// (except Host, Content-Type and Content-Length).
///
/// Two exceptions keep the message what it was:
///
/// * transfer codings other than `chunked` (`gzip` of `gzip, chunked`)
///   stay in `Transfer-Encoding`; hyper adds `chunked` back as it frames the
///   message. A message with a `Transfer-Encoding` loses any
///   `Content-Length`, which the coding overrides (RFC 9112 §6.3): passed on
///   beside a re-chunked body it would be a second, wrong length.
/// * with `upgrade`, `Upgrade` and `Connection: upgrade` stay, for a
///   protocol switch that the proxy carries through.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none: one pass over the names, no lookups.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let codings = other_codings(headers);
    if headers.contains_key(TRANSFER_ENCODING) {
        headers.remove(CONTENT_LENGTH);
    }
    let upgrades: Vec<HeaderValue> = if upgrade {
        headers.get_all(UPGRADE).iter().cloned().collect()
    } else {
        Vec::new()
    };
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::try_from(token.trim()).ok())
        .filter(|name| !PROTECTED.contains(name))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(name);
    }
    if let Some(codings) = codings {
        headers.insert(TRANSFER_ENCODING, codings);
    }
    if !upgrades.is_empty() {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        for value in upgrades {
            headers.append(UPGRADE, value);
        }
    }
}

/// The transfer codings of `headers` other than `chunked`, in order, if
/// there are any.
fn other_codings(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut kept = String::new();
    for value in headers.get_all(TRANSFER_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for coding in value.split(',').map(str::trim) {
            if coding.is_empty() || coding.eq_ignore_ascii_case("chunked") {
                continue;
            }
            if !kept.is_empty() {
                kept.push_str(", ");
            }
            kept.push_str(coding);
        }
    }
    if kept.is_empty() {
        return None;
    }
    HeaderValue::try_from(kept).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_names_go_but_never_the_protected_ones() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONNECTION,
            HeaderValue::from_static("x-secret, host, content-type"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(HOST, HeaderValue::from_static("a"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("gzip, chunked"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.get("x-secret").is_none() && headers.get(CONNECTION).is_none());
        assert!(headers.get(HOST).is_some() && headers.get(CONTENT_TYPE).is_some());
        assert_eq!(headers.get(TRANSFER_ENCODING).unwrap(), "gzip");
        assert!(headers.get(CONTENT_LENGTH).is_none());
    }
}
