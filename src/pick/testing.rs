//! Fixtures shared by the pickers' unit tests.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tower::load::Load;

use super::key::hash_value;
use super::{Candidates, EndpointInfo, Pick};
use crate::util::Rng;

/// Endpoints with `weights`, each keyed by its index.
pub(crate) fn metas(weights: &[u32]) -> Vec<EndpointInfo> {
    keyed_metas(weights, |i| i as u64)
}

/// Endpoints with `weights`, named like socket addresses, as discovery would
/// key them.
pub(crate) fn addr_metas(weights: &[u32]) -> Vec<EndpointInfo> {
    keyed_metas(weights, |i| hash_value(&format!("10.0.0.{i}:8080")))
}

/// Endpoints with `weights`, endpoint `i` keyed by `key(i)`.
pub(crate) fn keyed_metas(weights: &[u32], key: impl Fn(usize) -> u64) -> Vec<EndpointInfo> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| EndpointInfo::new(key(i), w))
        .collect()
}

/// The key hashes of endpoints `indices`: what a retry excludes.
pub(crate) fn key_hashes(metas: &[EndpointInfo], indices: &[usize]) -> Vec<u64> {
    indices.iter().map(|&i| metas[i].key_hash()).collect()
}

/// `count` random request keys, the same ones for the same `seed`.
pub(crate) fn random_keys(seed: u64, count: usize) -> Vec<u64> {
    let rng = Rng::from_seed(seed);
    (0..count).map(|_| rng.next_u64()).collect()
}

/// A key extractor for requests that are their own key, as a type that can
/// be named.
pub(crate) type ById = fn(&u64) -> Option<u64>;

/// The [`ById`] extractor.
pub(crate) const BY_ID: ById = |key| Some(*key);

/// The key hash of the endpoint each key goes to: indices shift when the set
/// changes, endpoint keys do not.
pub(crate) fn owners<P: Pick<u64, ()>>(
    picker: &P,
    metas: &[EndpointInfo],
    keys: &[u64],
) -> Vec<u64> {
    let table = picker.prepare(metas);
    let services = vec![(); metas.len()];
    let endpoints = Candidates::new(metas, &services);
    keys.iter()
        .map(|key| metas[picker.pick(&table, &endpoints, key).unwrap()].key_hash())
        .collect()
}

/// How many of `keys` go to each endpoint of `metas`.
pub(crate) fn picks_per_endpoint<P: Pick<u64, ()>>(
    picker: &P,
    metas: &[EndpointInfo],
    keys: impl IntoIterator<Item = u64>,
) -> Vec<usize> {
    let table = picker.prepare(metas);
    let services = vec![(); metas.len()];
    let endpoints = Candidates::new(metas, &services);
    let mut counts = vec![0; metas.len()];
    for key in keys {
        counts[picker.pick(&table, &endpoints, &key).unwrap()] += 1;
    }
    counts
}

/// A hashing picker's table does not depend on the order the endpoints of
/// `weights` were learnt in: each key goes to the same endpoint.
pub(crate) fn assert_order_free<P: Pick<u64, ()>>(picker: &P, weights: &[u32], keys: &[u64]) {
    let forward = addr_metas(weights);
    let mut backward = forward.clone();
    backward.reverse();
    assert_eq!(
        owners(picker, &forward, keys),
        owners(picker, &backward, keys)
    );
}

/// A table built for four endpoints, used with a set of one, yields only
/// that one.
pub(crate) fn assert_stale_table_is_safe<P: Pick<u64, ()>>(picker: &P, keys: &[u64]) {
    let table = picker.prepare(&addr_metas(&[1; 4]));
    let metas = addr_metas(&[1]);
    let endpoints = Candidates::new(&metas, &[()]);
    for key in keys {
        assert_eq!(picker.pick(&table, &endpoints, key), Some(0));
    }
}

/// With an endpoint of weight `u32::MAX` excluded, which owns nearly all of
/// the table, every key still reaches the one of weight 1.
pub(crate) fn assert_heavy_exclusion_falls_back<P: Pick<u64, ()>>(picker: &P, keys: &[u64]) {
    let metas = addr_metas(&[u32::MAX, 1]);
    let table = picker.prepare(&metas);
    let services = [(); 2];
    let excluded = key_hashes(&metas, &[0]);
    let endpoints = Candidates::new(&metas, &services).excluding(&excluded);
    for key in keys {
        assert_eq!(picker.pick(&table, &endpoints, key), Some(1));
    }
}

/// An endpoint whose load is a shared counter of requests in flight.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counted(pub(crate) Arc<AtomicU32>);

impl Counted {
    pub(crate) fn new(load: u32) -> Self {
        Self(Arc::new(AtomicU32::new(load)))
    }

    pub(crate) fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Load for Counted {
    type Metric = u32;

    fn load(&self) -> u32 {
        self.get()
    }
}

/// `n` endpoints with nothing in flight.
pub(crate) fn idle(n: usize) -> Vec<Counted> {
    (0..n).map(|_| Counted::default()).collect()
}

/// An endpoint reporting a fixed load, possibly not a number.
#[derive(Debug)]
pub(crate) struct Fixed(pub(crate) f64);

impl Load for Fixed {
    type Metric = f64;

    fn load(&self) -> f64 {
        self.0
    }
}
