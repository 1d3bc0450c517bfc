//! `--discovery`: backends from a service registry (Kubernetes
//! EndpointSlices, etcd), optionally cut to a stable `--subset`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use tower_lb::health::HealthConfig;
use tower_lb::pick::Pick;
use tower_lb::BoxError;

use crate::gateway::forward::{self, Forward, UpstreamBody};
use crate::gateway::server::{Endpoint, Lb};

/// A registry to follow, as `--discovery` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Discovery {
    /// `kube:NAMESPACE/SERVICE:PORT`: the EndpointSlices of a Service; PORT
    /// is the port's name or number.
    Kube {
        namespace: String,
        service: String,
        port: String,
    },
    /// `etcd:URL/PREFIX`: the keys under PREFIX (which starts with `/`) on
    /// the etcd at URL (`http://host:port`).
    Etcd { url: String, prefix: String },
}

impl fmt::Display for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kube {
                namespace,
                service,
                port,
            } => write!(f, "kube:{namespace}/{service}:{port}"),
            Self::Etcd { url, prefix } => write!(f, "etcd:{url}{prefix}"),
        }
    }
}

/// Parses a `--discovery` value; the error is one line without the flag.
pub(crate) fn parse(text: &str) -> Result<Discovery, String> {
    if let Some(rest) = text.strip_prefix("kube:") {
        let shape = || format!("`{text}` is not kube:NAMESPACE/SERVICE:PORT");
        let (namespace, rest) = rest.split_once('/').ok_or_else(shape)?;
        let (service, port) = rest.rsplit_once(':').ok_or_else(shape)?;
        let name = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        };
        if !name(namespace) || !name(service) || !name(port) {
            return Err(shape());
        }
        if !cfg!(feature = "kube") {
            return Err("kube: this proxy was built without the `kube` feature \
                        (cargo build --features kube --example proxy)"
                .into());
        }
        return Ok(Discovery::Kube {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            port: port.to_owned(),
        });
    }
    if let Some(rest) = text.strip_prefix("etcd:") {
        let shape = || format!("`{text}` is not etcd:http://HOST:PORT/PREFIX");
        let after_scheme = rest
            .strip_prefix("http://")
            .or_else(|| rest.strip_prefix("https://"))
            .ok_or_else(shape)?;
        let slash = after_scheme.find('/').ok_or_else(shape)?;
        let split = rest.len() - after_scheme.len() + slash;
        let (url, prefix) = rest.split_at(split);
        if slash == 0 || prefix.len() < 2 {
            return Err(shape());
        }
        if !cfg!(feature = "etcd") {
            return Err("etcd: this proxy was built without the `etcd` feature \
                        (cargo build --features etcd --example proxy)"
                .into());
        }
        return Ok(Discovery::Etcd {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
        });
    }
    Err(format!(
        "`{text}` names no registry (kube:NAMESPACE/SERVICE:PORT or etcd:URL/PREFIX)"
    ))
}

/// Builds the balancer over the registry, each endpoint a [`Forward`] to
/// its address, cut to a rendezvous subset of `subset` endpoints when
/// given (gRFC A68, a random salt for this process).
pub(crate) async fn balance<P>(
    discovery: &Discovery,
    subset: Option<usize>,
    health: HealthConfig<SocketAddr>,
    picker: P,
    attempt_timeout: Duration,
) -> Result<Lb<P>, BoxError>
where
    P: Pick<Request<UpstreamBody>, Endpoint>,
{
    let client = forward::client::<UpstreamBody>();
    let make = move |addr| Forward::new(client.clone(), addr, attempt_timeout);
    match discovery {
        #[cfg(feature = "kube")]
        Discovery::Kube {
            namespace,
            service,
            port,
        } => {
            let config = kube::Config::infer()
                .await
                .map_err(|e| format!("--discovery {discovery}: {e}"))?;
            let client = kube::Client::try_from(config)
                .map_err(|e| format!("--discovery {discovery}: {e}"))?;
            let source = tower_lb::discover::kube::KubeDiscover::new(
                client,
                namespace,
                service,
                port.as_str(),
                make,
            );
            stack(source, subset, health, picker)
        }
        #[cfg(feature = "etcd")]
        Discovery::Etcd { url, prefix } => {
            let source = tower_lb::discover::etcd::EtcdDiscover::new(&[url], prefix.clone(), make);
            stack(source, subset, health, picker)
        }
        #[allow(unreachable_patterns)]
        _ => {
            drop((make, health, picker, subset));
            Err(format!("--discovery {discovery}: not built into this proxy").into())
        }
    }
}

/// In-flight counting and health checks over `source`, subset or not.
#[cfg(any(feature = "kube", feature = "etcd"))]
fn stack<D, P>(
    source: D,
    subset: Option<usize>,
    health: HealthConfig<SocketAddr>,
    picker: P,
) -> Result<Lb<P>, BoxError>
where
    D: tower::discover::Discover<Key = SocketAddr, Service = tower_lb::endpoint::Weighted<Forward>>
        + Send
        + 'static,
    D::Error: Into<BoxError> + Send,
    P: Pick<Request<UpstreamBody>, Endpoint>,
{
    use tower_lb::discover::{Subset, SubsetMode};
    use tower_lb::health::HealthDiscover;
    use tower_lb::load::InFlightDiscover;
    use tower_lb::Balance;

    Ok(match subset {
        Some(k) => Balance::new(
            HealthDiscover::new(
                InFlightDiscover::new(Subset::new(source, k, SubsetMode::random())),
                health,
            )?,
            picker,
        ),
        None => Balance::new(
            HealthDiscover::new(InFlightDiscover::new(source), health)?,
            picker,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        if cfg!(feature = "etcd") {
            assert_eq!(
                parse("etcd:http://127.0.0.1:2379/services/web/"),
                Ok(Discovery::Etcd {
                    url: "http://127.0.0.1:2379".into(),
                    prefix: "/services/web/".into()
                })
            );
        }
        if cfg!(feature = "kube") {
            assert_eq!(
                parse("kube:shop/checkout:http").unwrap().to_string(),
                "kube:shop/checkout:http"
            );
        }
        for bad in [
            "kube:shop",
            "kube:shop/checkout",
            "kube:/checkout:80",
            "kube:shop/check out:80",
            "etcd:127.0.0.1:2379/x",
            "etcd:http://127.0.0.1:2379",
            "etcd:http://127.0.0.1:2379/",
            "consul:x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
