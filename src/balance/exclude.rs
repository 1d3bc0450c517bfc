//! The retry hook of the pick: avoid the endpoints a request already tried,
//! and record the one picked.

use std::fmt;

use super::snapshot::Snapshot;
use super::TriedEndpoints;
use crate::endpoint::Endpoint;
use crate::error::Saturated;
use crate::pick::Pick;

/// Picks for `request`, ruling out the endpoints in its attempt set `tried`
/// and recording the one picked there. Without a set the pick is the plain
/// one; with one, it costs a copy of at most eight hashes to the stack.
pub(super) fn pick<K, S, P, Req>(
    snapshot: &Snapshot<K, S, P::Table>,
    picker: &P,
    request: &Req,
    tried: Option<&TriedEndpoints>,
) -> Result<Option<usize>, Saturated>
where
    K: fmt::Debug,
    S: Endpoint,
    P: Pick<Req, S>,
{
    let Some(tried) = tried else {
        return pick_from(snapshot, picker, request, &[]);
    };
    let mut excluded = [0; TriedEndpoints::CAPACITY];
    let n = tried.fill(&mut excluded);
    let Some(i) = pick_from(snapshot, picker, request, &excluded[..n])? else {
        return Ok(None);
    };
    let key_hash = snapshot.metas[i].key_hash();
    if n > 0 {
        let repeat = excluded[..n].contains(&key_hash);
        tracing::debug!(
            endpoint = ?snapshot.keys[i],
            tried = n,
            repeat,
            "re-picked for a retry"
        );
    }
    tried.record_named(key_hash, &snapshot.names[i]);
    Ok(Some(i))
}

/// Picks from one snapshot; an index the picker returns that is not allowed
/// counts as no pick, so a faulty picker cannot cause a panic.
///
/// `excluded` (key hashes a retry already tried) is honoured while it leaves
/// an endpoint to pick; when every allowed endpoint was tried, the pick is
/// made as for a first attempt, so a retry reuses an endpoint rather than
/// waiting for the set to change.
fn pick_from<K, S, P, Req>(
    snapshot: &Snapshot<K, S, P::Table>,
    picker: &P,
    request: &Req,
    excluded: &[u64],
) -> Result<Option<usize>, Saturated>
where
    S: Endpoint,
    P: Pick<Req, S>,
{
    let endpoints = snapshot.endpoints();
    if !excluded.is_empty() {
        let fresh = endpoints.excluding(excluded);
        let picked = picker
            .pick_or_shed(&snapshot.table, &fresh, request)?
            .filter(|&i| fresh.is_allowed(i));
        if picked.is_some() {
            return Ok(picked);
        }
    }
    Ok(picker
        .pick_or_shed(&snapshot.table, &endpoints, request)?
        .filter(|&i| endpoints.is_allowed(i)))
}

#[cfg(test)]
mod tests;
