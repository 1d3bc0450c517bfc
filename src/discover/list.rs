//! A fixed list of endpoints.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tower::discover::Change;

use crate::endpoint::Weighted;

/// A fixed set of endpoints: yields one insert for each, then ends (the
/// balancer keeps the set when a discovery stream ends).
///
/// Keys are taken as given; a key listed twice is inserted twice and the
/// second replaces the first.
///
/// ```
/// use tower_lb::discover::StaticList;
///
/// let svc = || tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) });
/// let even = StaticList::new([("a", svc()), ("b", svc())]);
/// let skewed = StaticList::weighted([("a", svc(), 5), ("b", svc(), 1)]);
/// # let _ = (even, skewed);
/// ```
#[derive(Debug)]
pub struct StaticList<K, S> {
    items: std::vec::IntoIter<(K, Weighted<S>)>,
}

impl<K, S> StaticList<K, S> {
    /// Endpoints of weight 1.
    pub fn new(endpoints: impl IntoIterator<Item = (K, S)>) -> Self {
        Self::from_weighted(
            endpoints
                .into_iter()
                .map(|(key, service)| (key, Weighted::new(service, 1))),
        )
    }

    /// Endpoints with their weights.
    pub fn weighted(endpoints: impl IntoIterator<Item = (K, S, u32)>) -> Self {
        Self::from_weighted(
            endpoints
                .into_iter()
                .map(|(key, service, weight)| (key, Weighted::new(service, weight))),
        )
    }

    /// Endpoints already wrapped in [`Weighted`]: to give each its
    /// [`ReportCell`](crate::endpoint::ReportCell) record, say.
    pub fn from_weighted(endpoints: impl IntoIterator<Item = (K, Weighted<S>)>) -> Self {
        Self {
            items: endpoints.into_iter().collect::<Vec<_>>().into_iter(),
        }
    }
}

// The list holds no pinned state.
impl<K, S> Unpin for StaticList<K, S> {}

impl<K, S> Stream for StaticList<K, S> {
    type Item = Result<Change<K, Weighted<S>>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(
            self.items
                .next()
                .map(|(key, service)| Ok(Change::Insert(key, service))),
        )
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.items.size_hint()
    }
}
