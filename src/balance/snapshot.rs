//! The endpoint set as the request path sees it: immutable, swapped whole.

use std::ops::Deref;
use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};
use tokio::sync::Notify;

use super::EndpointName;
use crate::endpoint::Endpoint;
use crate::pick::{Candidates, EndpointInfo};

/// One published endpoint set and the picker table built from it. Index `i`
/// of every vector is the same endpoint.
#[derive(Debug)]
pub(crate) struct Snapshot<K, S, T> {
    pub(crate) keys: Vec<K>,
    /// Each key as events name it.
    pub(crate) names: Vec<EndpointName>,
    pub(crate) metas: Vec<EndpointInfo>,
    pub(crate) services: Vec<S>,
    pub(crate) table: T,
}

impl<K, S: Endpoint, T> Snapshot<K, S, T> {
    pub(crate) fn endpoints(&self) -> Candidates<'_, S> {
        let endpoints = Candidates::new(&self.metas, &self.services);
        if S::CHECKS_AVAILABILITY {
            endpoints.with_availability(S::is_available)
        } else {
            endpoints
        }
    }
}

/// What the handles and the worker share.
#[derive(Debug)]
pub(crate) struct Shared<K, S, T> {
    pub(crate) current: ArcSwap<Snapshot<K, S, T>>,
    /// Woken after every publish, for requests waiting on an endpoint.
    pub(crate) changed: Notify,
}

impl<K, S, T> Shared<K, S, T> {
    pub(crate) fn new(table: T) -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot {
                keys: Vec::new(),
                names: Vec::new(),
                metas: Vec::new(),
                services: Vec::new(),
                table,
            }),
            changed: Notify::new(),
        }
    }

    pub(crate) fn publish(&self, snapshot: Snapshot<K, S, T>) {
        self.current.store(Arc::new(snapshot));
        self.changed.notify_waiters();
    }
}

/// A handle's view of the shared set, for [`Cache`]: it dereferences to the
/// `ArcSwap` the worker publishes into.
pub(crate) struct Current<K, S, T>(pub(crate) Arc<Shared<K, S, T>>);

impl<K, S, T> Clone for Current<K, S, T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<K, S, T> Deref for Current<K, S, T> {
    type Target = ArcSwap<Snapshot<K, S, T>>;

    fn deref(&self) -> &Self::Target {
        &self.0.current
    }
}

/// Each handle's cached copy of the current snapshot: checking that it is
/// still current is one atomic load, where a plain `ArcSwap::load` takes a
/// debt slot (about 12 ns against 0.5 ns per request).
pub(crate) type SnapshotCache<K, S, T> = Cache<Current<K, S, T>, Arc<Snapshot<K, S, T>>>;
