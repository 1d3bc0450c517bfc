//! What a key under the prefix holds: an address, or JSON.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;

use crate::discover::backends::{parse_backend_entry, MAX_ZONE_LEN};
use crate::discover::located::Located;

/// The largest value [`parse_value`] reads, in bytes.
pub const MAX_VALUE_LEN: usize = 4096;

/// Parses the value of an endpoint's key: either a backends line
/// (`ADDR[@WEIGHT] [zone=ZONE]`, see
/// [`parse_backend_entry`](crate::discover::parse_backend_entry)), or a
/// JSON object:
///
/// ```json
/// {"addr": "10.0.0.1:8080", "weight": 3, "zone": "eu-west-1a", "node": "host-7"}
/// ```
///
/// Only `addr` is required; `weight` defaults to 1 and may be 0 (the
/// endpoint drains); unknown fields are ignored.
///
/// ```
/// use tower_lb::discover::etcd::parse_value;
///
/// let value = parse_value(br#"{"addr":"127.0.0.1:9001","weight":0,"zone":"a"}"#).unwrap();
/// assert_eq!((value.addr.port(), value.weight, value.zone.as_deref()), (9001, 0, Some("a")));
/// assert_eq!(parse_value(b"127.0.0.1:9001@2").unwrap().weight, 2);
/// assert!(parse_value(b"{\"weight\": 2}").is_err());
/// ```
pub fn parse_value(bytes: &[u8]) -> Result<EtcdEndpoint, ValueError> {
    let (addr, located) = parse(bytes)?;
    Ok(EtcdEndpoint {
        addr,
        weight: located.weight,
        zone: located.zone,
        node: located.node,
    })
}

/// An endpoint as a key's value describes it ([`parse_value`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EtcdEndpoint {
    /// The socket address.
    pub addr: SocketAddr,
    /// The weight; 0 drains.
    pub weight: u32,
    /// The zone, if given.
    pub zone: Option<Arc<str>>,
    /// The node, if given.
    pub node: Option<Arc<str>>,
}

pub(super) fn parse(bytes: &[u8]) -> Result<(SocketAddr, Located), ValueError> {
    if bytes.len() > MAX_VALUE_LEN {
        return Err(ValueError::TooLarge(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ValueError::NotUtf8)?;
    let text = text.trim();
    if !text.starts_with('{') {
        let backend =
            parse_backend_entry(text).map_err(|error| ValueError::Line(error.to_string()))?;
        return Ok((
            backend.addr,
            Located {
                weight: backend.weight,
                zone: backend.zone,
                node: None,
            },
        ));
    }
    let json: Value =
        serde_json::from_str(text).map_err(|error| ValueError::Json(error.to_string()))?;
    let field = |name: &'static str| json.get(name).filter(|v| !v.is_null());
    let addr = field("addr")
        .ok_or(ValueError::Field("addr", "missing"))?
        .as_str()
        .ok_or(ValueError::Field("addr", "not a string"))?
        .parse::<SocketAddr>()
        .map_err(|_| ValueError::Field("addr", "not a socket address (IP:PORT)"))?;
    let weight = match field("weight") {
        None => 1,
        Some(weight) => {
            weight
                .as_u64()
                .and_then(|w| u32::try_from(w).ok())
                .ok_or(ValueError::Field(
                    "weight",
                    "not a whole number from 0 to 2^32-1",
                ))?
        }
    };
    let name = |field_name: &'static str| -> Result<Option<Arc<str>>, ValueError> {
        match field(field_name) {
            None => Ok(None),
            Some(value) => {
                let text = value
                    .as_str()
                    .ok_or(ValueError::Field(field_name, "not a string"))?;
                if text.is_empty() || text.len() > MAX_ZONE_LEN {
                    return Err(ValueError::Field(field_name, "empty or too long"));
                }
                Ok(Some(Arc::from(text)))
            }
        }
    };
    Ok((
        addr,
        Located {
            weight,
            zone: name("zone")?,
            node: name("node")?,
        },
    ))
}

/// The JSON value of an endpoint, as [`parse_value`] reads it; what a
/// [`Registration`](super::Registration) usually stores.
///
/// ```
/// use tower_lb::discover::etcd::{endpoint_value, parse_value};
///
/// let value = endpoint_value("127.0.0.1:9001".parse().unwrap(), 2, Some("zone-a"));
/// assert_eq!(parse_value(value.as_bytes()).unwrap().weight, 2);
/// ```
pub fn endpoint_value(addr: SocketAddr, weight: u32, zone: Option<&str>) -> String {
    let mut value = serde_json::json!({ "addr": addr.to_string(), "weight": weight });
    if let Some(zone) = zone {
        value["zone"] = Value::from(zone);
    }
    value.to_string()
}

/// Why the value of a key is not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueError {
    /// Larger than [`MAX_VALUE_LEN`].
    TooLarge(usize),
    /// Not UTF-8.
    NotUtf8,
    /// Not a valid backends line; holds the parser's message.
    Line(String),
    /// Not valid JSON; holds the parser's message.
    Json(String),
    /// A JSON field is missing or wrong: the field, and what is wrong.
    Field(&'static str, &'static str),
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge(len) => write!(f, "value of {len} bytes is larger than {MAX_VALUE_LEN}"),
            Self::NotUtf8 => f.write_str("value is not UTF-8"),
            Self::Line(message) => write!(f, "value is not an endpoint: {message}"),
            Self::Json(message) => write!(f, "value is not valid JSON: {message}"),
            Self::Field(field, what) => write!(f, "field `{field}`: {what}"),
        }
    }
}

impl std::error::Error for ValueError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_errors_never_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"   ",
            b"\xff\xfe",
            b"{",
            b"{}",
            b"[]",
            b"{\"addr\": 7}",
            b"{\"addr\": \"nowhere\"}",
            b"{\"addr\": \"127.0.0.1:1\", \"weight\": -1}",
            b"{\"addr\": \"127.0.0.1:1\", \"weight\": 1.5}",
            b"{\"addr\": \"127.0.0.1:1\", \"weight\": 99999999999}",
            b"{\"addr\": \"127.0.0.1:1\", \"zone\": \"\"}",
            b"{\"addr\": \"127.0.0.1:1\", \"zone\": 3}",
            b"127.0.0.1",
            b"127.0.0.1:1@0",
            b"127.0.0.1:1 rack=2",
        ];
        for case in cases {
            assert!(parse(case).is_err(), "{:?}", String::from_utf8_lossy(case));
        }
        assert!(matches!(
            parse(&[b' '; MAX_VALUE_LEN + 1]),
            Err(ValueError::TooLarge(_))
        ));
    }

    #[test]
    fn good_values() {
        let (addr, located) =
            parse(br#" {"addr":"[::1]:80","weight":0,"zone":"z","node":"n","extra":true} "#)
                .unwrap();
        assert_eq!(addr, "[::1]:80".parse().unwrap());
        assert_eq!(located.weight, 0);
        assert_eq!(located.zone.as_deref(), Some("z"));
        assert_eq!(located.node.as_deref(), Some("n"));
        let (_, located) = parse(b"127.0.0.1:80 zone=b\n").unwrap();
        assert_eq!((located.weight, located.zone.as_deref()), (1, Some("b")));
        let (_, located) = parse(br#"{"addr":"127.0.0.1:80","weight":null}"#).unwrap();
        assert_eq!(located.weight, 1);
    }
}
