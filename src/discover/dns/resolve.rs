//! One resolution: asking the name servers and reading their answers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::rr::rdata::SRV;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

/// What to resolve.
#[derive(Clone, Debug)]
pub(super) enum Query {
    /// A and AAAA records of a name, each address with this port.
    Addresses(Name, u16),
    /// SRV records of a name.
    Srv(Name),
}

/// What one resolution found.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Endpoints with weights, valid for `ttl` seconds. May be empty (SRV
    /// records whose targets have no address).
    Found {
        endpoints: Vec<(SocketAddr, u32)>,
        ttl: u32,
    },
    /// The servers answered that there is nothing: `NXDOMAIN`, or no record
    /// of the type. `ttl` is the negative TTL of the zone, when given.
    Empty { ttl: Option<u32> },
    /// No answer to trust.
    Failed(NetError),
}

/// Builds the resolver: the given name servers (UDP, then TCP when an answer
/// is truncated) without the hosts file, or the system configuration.
pub(super) fn build(
    servers: Option<&[SocketAddr]>,
    timeout: Option<Duration>,
) -> Result<TokioResolver, NetError> {
    let mut builder = match servers {
        Some(servers) => {
            let name_servers = servers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            let mut builder = Resolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            );
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        }
        None => TokioResolver::builder_tokio()?,
    };
    if let Some(timeout) = timeout {
        builder.options_mut().timeout = timeout;
    }
    builder.build()
}

/// Resolves `query` afresh: the resolver's cache is cleared first, so that a
/// ceiling below the records' TTL really asks the servers again.
pub(super) async fn resolve(resolver: TokioResolver, query: Query) -> Outcome {
    resolver.clear_cache();
    match query {
        Query::Addresses(name, port) => match addresses(&resolver, name, None).await {
            Ok((ips, ttl)) => Outcome::Found {
                endpoints: ips
                    .into_iter()
                    .map(|ip| (SocketAddr::new(ip, port), 1))
                    .collect(),
                ttl,
            },
            Err(Negative(ttl)) => Outcome::Empty { ttl },
            Err(Failure(error)) => Outcome::Failed(error),
        },
        Query::Srv(name) => srv(&resolver, name).await,
    }
}

/// Why a lookup gave no records.
enum NoAnswer {
    /// The servers say there are none, for this many seconds if known.
    Negative(Option<u32>),
    Failure(NetError),
}
use NoAnswer::{Failure, Negative};

fn classify(error: NetError) -> NoAnswer {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(NoRecords { negative_ttl, .. })) => {
            Negative(negative_ttl)
        }
        error => Failure(error),
    }
}

/// The A and AAAA records of `name` (or those among `known` records, when
/// the server sent them along), with the smallest TTL; `Negative` when
/// both lookups answered with no record. Both lookups must succeed: a failure of
/// either fails the whole, so a lost AAAA answer never removes endpoints.
async fn addresses(
    resolver: &TokioResolver,
    name: Name,
    known: Option<&[Record]>,
) -> Result<(Vec<IpAddr>, u32), NoAnswer> {
    if let Some(known) = known {
        let found = ips(known.iter().filter(|record| record.name == name));
        if !found.0.is_empty() {
            return Ok(found);
        }
    }
    let (v4, v6) = futures_util::future::join(
        resolver.lookup(name.clone(), RecordType::A),
        resolver.lookup(name, RecordType::AAAA),
    )
    .await;
    let mut all = Vec::new();
    let mut ttl = u32::MAX;
    let mut negative: Option<u32> = None;
    for result in [v4, v6] {
        match result.map_err(classify) {
            Ok(lookup) => {
                let (found, found_ttl) = ips(lookup.answers().iter());
                all.extend(found);
                ttl = ttl.min(found_ttl);
            }
            Err(Negative(neg)) => {
                negative = match (negative, neg) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Err(failure) => return Err(failure),
        }
    }
    if all.is_empty() {
        return Err(Negative(negative));
    }
    Ok((all, ttl))
}

/// The addresses among `records`, with their smallest TTL.
fn ips<'a>(records: impl Iterator<Item = &'a Record>) -> (Vec<IpAddr>, u32) {
    let mut ttl = u32::MAX;
    let mut found = Vec::new();
    for record in records {
        let ip = match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            _ => continue,
        };
        ttl = ttl.min(record.ttl);
        if !found.contains(&ip) {
            found.push(ip);
        }
    }
    (found, ttl)
}

/// SRV records: the group with the lowest priority, each target resolved.
async fn srv(resolver: &TokioResolver, name: Name) -> Outcome {
    let lookup: Lookup = match resolver.lookup(name, RecordType::SRV).await {
        Ok(lookup) => lookup,
        Err(error) => {
            return match classify(error) {
                Negative(ttl) => Outcome::Empty { ttl },
                Failure(error) => Outcome::Failed(error),
            }
        }
    };
    let records: Vec<(u32, &SRV)> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some((record.ttl, srv)),
            _ => None,
        })
        .collect();
    let Some(best) = records.iter().map(|(_, srv)| srv.priority).min() else {
        return Outcome::Empty { ttl: None };
    };
    let mut ttl = records
        .iter()
        .map(|(ttl, _)| *ttl)
        .min()
        .unwrap_or(u32::MAX);
    // A target of "." says the service is not offered there (RFC 2782).
    let group: Vec<&SRV> = records
        .iter()
        .map(|(_, srv)| *srv)
        .filter(|srv| srv.priority == best && !srv.target.is_root())
        .collect();
    let targets = futures_util::future::join_all(
        group
            .iter()
            .map(|srv| addresses(resolver, srv.target.clone(), Some(lookup.additionals()))),
    )
    .await;
    let mut endpoints: HashMap<SocketAddr, u32> = HashMap::new();
    for (srv, target) in group.iter().zip(targets) {
        let (ips, target_ttl) = match target {
            Ok(found) => found,
            Err(Negative(_)) => continue,
            Err(Failure(error)) => return Outcome::Failed(error),
        };
        ttl = ttl.min(target_ttl);
        for ip in ips {
            let weight = endpoints.entry(SocketAddr::new(ip, srv.port)).or_default();
            *weight = weight.saturating_add(srv_weight(srv.weight));
        }
    }
    Outcome::Found {
        endpoints: endpoints.into_iter().collect(),
        ttl,
    }
}

/// RFC 2782 gives a target of weight 0 a small chance, not none, and our
/// weight 0 would mean none: it counts as 1.
fn srv_weight(weight: u16) -> u32 {
    u32::from(weight.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_weight_zero_is_one() {
        assert_eq!(srv_weight(0), 1);
        assert_eq!(srv_weight(1), 1);
        assert_eq!(srv_weight(u16::MAX), 65535);
    }
}
