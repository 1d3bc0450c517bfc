//! The registry: a shared read handle on one health-checked set.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::core::Core;
use super::report::EndpointHealth;
use super::state::EndpointState;

/// A handle on the health of one set of endpoints (one
/// [`HealthDiscover`](super::HealthDiscover)); cheap to clone.
///
/// It reads every endpoint's [`EndpointHealth`] and counts that span the
/// set, and waits for changes. It does not keep endpoints or their tasks
/// alive: those end with their removal or with the discovery adapter.
pub struct HealthRegistry<K> {
    inner: Arc<Inner<K>>,
}

struct Inner<K> {
    core: Arc<Core>,
    // Locked on insert, remove and snapshot only; never on the request path.
    endpoints: Mutex<HashMap<K, Arc<EndpointState>>>,
}

impl<K> Clone for HealthRegistry<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> fmt::Debug for HealthRegistry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (endpoints, healthy) = self.inner.core.counts();
        f.debug_struct("HealthRegistry")
            .field("endpoints", &endpoints)
            .field("healthy", &healthy)
            .field("ejected", &self.inner.core.ejected())
            .field("tasks", &self.tasks())
            .finish()
    }
}

impl<K> HealthRegistry<K> {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Self {
            inner: Arc::new(Inner {
                core,
                endpoints: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.inner.core
    }

    fn endpoints(&self) -> MutexGuard<'_, HashMap<K, Arc<EndpointState>>> {
        // The map stays consistent whatever panicked while holding it.
        self.inner
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many endpoints the set holds.
    pub fn len(&self) -> usize {
        self.inner.core.counts().0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many endpoints are healthy (in rotation, slow start included).
    pub fn healthy(&self) -> usize {
        self.inner.core.counts().1
    }

    /// How many endpoints outlier detection has ejected now.
    pub fn ejected(&self) -> usize {
        self.inner.core.ejected()
    }

    /// How many endpoint health tasks (probes and timers) are alive. It
    /// drops when an endpoint is removed and to 0 when the discovery adapter
    /// (with its balancer) is dropped, once the runtime has run the tasks'
    /// cancellation.
    pub fn tasks(&self) -> usize {
        self.inner
            .core
            .tasks
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until `ready` holds, checking now and after every health
    /// change, completed probe and task exit. Wrap it in a timeout to bound
    /// it.
    pub async fn wait_for<F>(&self, mut ready: F)
    where
        F: FnMut(&Self) -> bool,
    {
        loop {
            let notified = self.inner.core.changed.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a change in between is not missed.
            notified.as_mut().enable();
            if ready(self) {
                return;
            }
            notified.await;
        }
    }

    /// Forgets every endpoint (the discovery adapter is going away).
    pub(crate) fn clear(&self) {
        for (_, endpoint) in self.endpoints().drain() {
            endpoint.deregister();
        }
    }
}

impl<K: Hash + Eq> HealthRegistry<K> {
    /// Records `endpoint` under `key`; returns the endpoint it replaces.
    pub(crate) fn insert(
        &self,
        key: K,
        endpoint: Arc<EndpointState>,
    ) -> Option<Arc<EndpointState>> {
        self.endpoints().insert(key, endpoint)
    }

    pub(crate) fn remove(&self, key: &K) -> Option<Arc<EndpointState>> {
        self.endpoints().remove(key)
    }
}

impl<K: Hash + Eq + Clone> HealthRegistry<K> {
    /// Every endpoint's health, in the order they were inserted.
    pub fn snapshot(&self) -> Vec<EndpointHealth<K>> {
        let mut endpoints: Vec<(u64, EndpointHealth<K>)> = self
            .endpoints()
            .iter()
            .map(|(key, endpoint)| (endpoint.seq, EndpointHealth::read(key.clone(), endpoint)))
            .collect();
        endpoints.sort_by_key(|(seq, _)| *seq);
        endpoints.into_iter().map(|(_, health)| health).collect()
    }

    /// One endpoint's health, if the set holds `key`.
    pub fn get(&self, key: &K) -> Option<EndpointHealth<K>> {
        self.endpoints()
            .get(key)
            .map(|endpoint| EndpointHealth::read(key.clone(), endpoint))
    }
}
