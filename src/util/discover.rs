//! Polling a `Discover` and wrapping the services it inserts.

use std::pin::Pin;
use std::task::{Context, Poll};

use tower::discover::{Change, Discover};

/// An item of `D`'s stream with each inserted service wrapped as a `T`.
type Wrapped<D, T> = Result<Change<<D as Discover>::Key, T>, <D as Discover>::Error>;

/// Polls `discover` and wraps the service of an insert with `wrap`; removals
/// pass through unchanged, and so do errors and the end of the stream.
pub(crate) fn poll_wrapped<D: Discover, T>(
    discover: Pin<&mut D>,
    cx: &mut Context<'_>,
    wrap: impl FnOnce(D::Service) -> T,
) -> Poll<Option<Wrapped<D, T>>> {
    discover.poll_discover(cx).map(|change| {
        change.map(|change| {
            change.map(|change| match change {
                Change::Insert(key, service) => Change::Insert(key, wrap(service)),
                Change::Remove(key) => Change::Remove(key),
            })
        })
    })
}
