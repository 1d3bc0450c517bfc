//! The endpoint set as the request path sees it: immutable, swapped whole.

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::discover::Weight;
use crate::pick::{Endpoints, Meta};

/// One published endpoint set and the picker table built from it. Index `i`
/// of every vector is the same endpoint.
#[derive(Debug)]
pub(crate) struct Snapshot<K, S, T> {
    pub(crate) keys: Vec<K>,
    pub(crate) metas: Vec<Meta>,
    pub(crate) services: Vec<S>,
    pub(crate) table: T,
}

impl<K, S: Weight, T> Snapshot<K, S, T> {
    pub(crate) fn endpoints(&self) -> Endpoints<'_, S> {
        let endpoints = Endpoints::new(&self.metas, &self.services);
        if S::GATED {
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
                metas: Vec::new(),
                services: Vec::new(),
                table,
            }),
            changed: Notify::new(),
        }
    }

    pub(crate) fn publish(&self, snapshot: Snapshot<K, S, T>) {
        self.current.store(std::sync::Arc::new(snapshot));
        self.changed.notify_waiters();
    }
}
