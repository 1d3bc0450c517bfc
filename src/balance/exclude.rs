//! The retry hook of the pick: avoid the endpoints a request already tried,
//! and record the one picked.

use std::fmt;

use super::service::pick_from;
use super::snapshot::Snapshot;
use crate::discover::Weight;
use crate::pick::Pick;
use crate::retry::{Exclusions, TriedEndpoints};

/// Picks for `request`, ruling out the endpoints its [`TriedEndpoints`] holds
/// and recording the one picked there. A request without a set costs one
/// extension lookup; with one, a copy of at most eight hashes to the stack.
pub(super) fn pick<K, S, P, Req>(
    snapshot: &Snapshot<K, S, P::Table>,
    picker: &P,
    request: &Req,
) -> Option<usize>
where
    K: fmt::Debug,
    S: Weight,
    P: Pick<Req, S>,
    Req: Exclusions,
{
    let Some(tried) = request.tried() else {
        return pick_from(snapshot, picker, request, &[]);
    };
    let mut excluded = [0; TriedEndpoints::CAPACITY];
    let n = tried.fill(&mut excluded);
    let i = pick_from(snapshot, picker, request, &excluded[..n])?;
    let key_hash = snapshot.metas[i].key_hash();
    if n > 0 {
        let repeat = excluded[..n].contains(&key_hash);
        tracing::debug!(
            endpoint = ?snapshot.keys[i],
            key_hash = format_args!("{key_hash:016x}"),
            tried = n,
            repeat,
            "re-picked for a retry"
        );
    }
    tried.record(key_hash);
    Some(i)
}
