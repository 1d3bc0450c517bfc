//! Where a preset's backends come from: addresses and weights, whatever
//! the source, turned into one stream of changes.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;

use futures_core::Stream;
use futures_util::StreamExt;
use tower::discover::{Change, Discover};

use crate::discover::{FileDiscover, StaticList};
use crate::endpoint::Endpoint;
use crate::error::BoxError;

/// A change of address and weight.
pub(crate) type AddrChange = Result<Change<SocketAddr, u32>, BoxError>;

/// Every source as one boxed stream: boxing costs once per discovery event,
/// never on the request path.
pub(crate) type AddrStream = Pin<Box<dyn Stream<Item = AddrChange> + Send>>;

/// The backends a preset balances over.
pub(crate) enum Source {
    None,
    Static(Vec<(SocketAddr, u32)>),
    File(PathBuf),
    Stream(AddrStream),
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Static(list) => f.debug_tuple("Static").field(list).finish(),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

impl Source {
    pub(crate) fn push(&mut self, addr: SocketAddr, weight: u32) {
        match self {
            Self::Static(list) => list.push((addr, weight)),
            _ => *self = Self::Static(vec![(addr, weight)]),
        }
    }

    /// The stream of changes; `None` when no backend was given.
    pub(crate) fn into_stream(self) -> Option<AddrStream> {
        match self {
            Self::None => None,
            Self::Static(list) => Some(addresses(StaticList::weighted(
                list.into_iter().map(|(addr, weight)| (addr, (), weight)),
            ))),
            Self::File(path) => Some(addresses(FileDiscover::new(path, |_| ()))),
            Self::Stream(stream) => Some(stream),
        }
    }
}

/// The weights and addresses of any `Discover` whose services are endpoints
/// (their services are dropped: the preset makes its own).
pub(crate) fn addresses<D>(discover: D) -> AddrStream
where
    D: Discover<Key = SocketAddr> + Send + 'static,
    D::Service: Endpoint,
    D::Error: Into<BoxError>,
{
    let mut discover = Box::pin(discover);
    let changes = futures_util::stream::poll_fn(move |cx| discover.as_mut().poll_discover(cx));
    Box::pin(changes.map(|change| match change {
        Ok(Change::Insert(addr, service)) => Ok(Change::Insert(addr, service.weight())),
        Ok(Change::Remove(addr)) => Ok(Change::Remove(addr)),
        Err(error) => Err(error.into()),
    }))
}
