//! EndpointSlices merged into one set of addresses.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointSlice};

use crate::discover::located::Located;

/// Which port of the Service's endpoints to use: the name of a port of the
/// Service (as EndpointSlices list it) or a port number.
///
/// `"http"` names a port; a string of digits (`"8080"`) is a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServicePort {
    /// The endpoint port with this name (`""` for the unnamed port of a
    /// single-port Service).
    Name(String),
    /// The endpoint port with this number (the target port).
    Number(u16),
}

impl From<u16> for ServicePort {
    fn from(port: u16) -> Self {
        Self::Number(port)
    }
}

impl From<&str> for ServicePort {
    fn from(port: &str) -> Self {
        match port.parse::<u16>() {
            Ok(number) => Self::Number(number),
            Err(_) => Self::Name(port.to_owned()),
        }
    }
}

impl From<String> for ServicePort {
    fn from(port: String) -> Self {
        Self::from(port.as_str())
    }
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Number(number) => write!(f, "{number}"),
        }
    }
}

/// How one slice lists one endpoint address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SliceEndpoint {
    pub(super) addr: SocketAddr,
    pub(super) state: State,
    pub(super) zone: Option<Arc<str>>,
    pub(super) node: Option<Arc<str>>,
}

/// What an endpoint's conditions allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum State {
    /// Terminating but still serving: takes no new requests.
    Draining,
    /// Ready: takes requests.
    Ready,
}

/// The conditions' meaning, by the EndpointSlice API's rules for unset
/// fields: `ready` unset means ready; `serving` unset means `ready`;
/// `terminating` unset means not terminating. `None`: not in the set.
pub(super) fn state(conditions: Option<&EndpointConditions>) -> Option<State> {
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    if ready && !terminating {
        Some(State::Ready)
    } else if serving && terminating {
        Some(State::Draining)
    } else {
        None
    }
}

/// The endpoints of `slice` on `port`, and how many addresses were skipped
/// as malformed (not an IP address). A slice without that port, or of
/// address type FQDN, lists nothing.
pub(super) fn read_slice(slice: &EndpointSlice, port: &ServicePort) -> (Vec<SliceEndpoint>, usize) {
    let number = slice.ports.iter().flatten().find_map(|p| {
        let matches = match port {
            ServicePort::Name(name) => p.name.as_deref().unwrap_or("") == name,
            ServicePort::Number(number) => p.port == Some(i32::from(*number)),
        };
        if matches {
            p.port.and_then(|n| u16::try_from(n).ok())
        } else {
            None
        }
    });
    let Some(number) = number else {
        return (Vec::new(), 0);
    };
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return (Vec::new(), 0);
    }
    let mut skipped = 0;
    let mut out = Vec::new();
    for endpoint in &slice.endpoints {
        let Some(state) = state(endpoint.conditions.as_ref()) else {
            continue;
        };
        let zone: Option<Arc<str>> = endpoint.zone.as_deref().map(Arc::from);
        let node: Option<Arc<str>> = endpoint.node_name.as_deref().map(Arc::from);
        for address in &endpoint.addresses {
            match address.parse::<IpAddr>() {
                Ok(ip) => out.push(SliceEndpoint {
                    addr: SocketAddr::new(ip, number),
                    state,
                    zone: zone.clone(),
                    node: node.clone(),
                }),
                Err(_) => skipped += 1,
            }
        }
    }
    (out, skipped)
}

/// Merges the slices (by name) into one set: an address listed by several
/// slices (while endpoints move between them) takes its best state, ready
/// before draining.
pub(super) fn merge<'a>(
    slices: impl IntoIterator<Item = &'a Vec<SliceEndpoint>>,
) -> HashMap<SocketAddr, Located> {
    let mut best: HashMap<SocketAddr, &SliceEndpoint> = HashMap::new();
    for endpoint in slices.into_iter().flatten() {
        best.entry(endpoint.addr)
            .and_modify(|seen| {
                if endpoint.state > seen.state {
                    *seen = endpoint;
                }
            })
            .or_insert(endpoint);
    }
    best.into_iter()
        .map(|(addr, endpoint)| {
            let weight = match endpoint.state {
                State::Ready => 1,
                State::Draining => 0,
            };
            let located = Located {
                weight,
                zone: endpoint.zone.clone(),
                node: endpoint.node.clone(),
            };
            (addr, located)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};

    fn conditions(
        ready: Option<bool>,
        serving: Option<bool>,
        terminating: Option<bool>,
    ) -> EndpointConditions {
        EndpointConditions {
            ready,
            serving,
            terminating,
        }
    }

    #[test]
    fn conditions_follow_the_api_rules() {
        assert_eq!(state(None), Some(State::Ready));
        assert_eq!(
            state(Some(&conditions(None, None, None))),
            Some(State::Ready)
        );
        assert_eq!(state(Some(&conditions(Some(false), None, None))), None);
        assert_eq!(
            state(Some(&conditions(Some(false), Some(true), Some(true)))),
            Some(State::Draining)
        );
        assert_eq!(
            state(Some(&conditions(Some(false), Some(false), Some(true)))),
            None
        );
        assert_eq!(
            state(Some(&conditions(Some(false), Some(true), Some(false)))),
            None
        );
        // Ready and terminating at once is not a state the API gives;
        // it is not taken as ready.
        assert_eq!(
            state(Some(&conditions(Some(true), Some(true), Some(true)))),
            Some(State::Draining)
        );
    }

    fn slice(
        address_type: &str,
        ports: &[(Option<&str>, Option<i32>)],
        endpoints: Vec<Endpoint>,
    ) -> EndpointSlice {
        EndpointSlice {
            address_type: address_type.to_owned(),
            endpoints,
            ports: Some(
                ports
                    .iter()
                    .map(|&(name, port)| EndpointPort {
                        name: name.map(str::to_owned),
                        port,
                        ..EndpointPort::default()
                    })
                    .collect(),
            ),
            ..EndpointSlice::default()
        }
    }

    fn endpoint(addresses: &[&str], zone: Option<&str>) -> Endpoint {
        Endpoint {
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
            zone: zone.map(str::to_owned),
            node_name: Some("node-1".to_owned()),
            ..Endpoint::default()
        }
    }

    #[test]
    fn malformed_slices_list_what_they_can() {
        let ports = [(Some("http"), Some(8080)), (Some("grpc"), Some(70000))];
        let good = slice(
            "IPv4",
            &ports,
            vec![endpoint(&["10.0.0.1", "not-an-ip", "10.0.0.2"], Some("a"))],
        );
        let (listed, skipped) = read_slice(&good, &"http".into());
        assert_eq!(listed.len(), 2);
        assert_eq!(skipped, 1);
        assert_eq!(listed[0].addr, "10.0.0.1:8080".parse().unwrap());
        assert_eq!(listed[0].zone.as_deref(), Some("a"));
        assert_eq!(listed[0].node.as_deref(), Some("node-1"));
        // By number; an out-of-range port matches nothing.
        assert_eq!(read_slice(&good, &8080.into()).0.len(), 2);
        assert!(read_slice(&good, &"grpc".into()).0.is_empty());
        assert!(read_slice(&good, &"admin".into()).0.is_empty());
        // FQDN slices and slices without ports list nothing.
        let fqdn = slice("FQDN", &ports, vec![endpoint(&["example.com"], None)]);
        assert_eq!(read_slice(&fqdn, &"http".into()), (Vec::new(), 0));
        let portless = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: vec![endpoint(&["10.0.0.1"], None)],
            ..EndpointSlice::default()
        };
        assert!(read_slice(&portless, &"".into()).0.is_empty());
    }

    #[test]
    fn merged_addresses_take_their_best_state() {
        let at = |addr: &str, state| SliceEndpoint {
            addr: addr.parse().unwrap(),
            state,
            zone: None,
            node: None,
        };
        let one = vec![
            at("10.0.0.1:80", State::Draining),
            at("10.0.0.2:80", State::Draining),
        ];
        let two = vec![at("10.0.0.1:80", State::Ready)];
        let merged = merge([&one, &two]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[&"10.0.0.1:80".parse().unwrap()].weight, 1);
        assert_eq!(merged[&"10.0.0.2:80".parse().unwrap()].weight, 0);
    }
}
