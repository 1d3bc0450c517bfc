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
mod tests {
    use std::convert::Infallible;

    use tower::{service_fn, Service, ServiceExt};

    use crate::pick::{key::hash_value, RoundRobin};
    use crate::{discover, Balance};

    #[tokio::test]
    async fn retries_avoid_tried_endpoints_until_none_is_left() {
        let (endpoints, discover) = discover::channel();
        for name in ["a", "b", "c"] {
            let svc = service_fn(move |_: ()| async move { Ok::<_, Infallible>(name) });
            endpoints.insert(name, svc).unwrap();
        }
        let balance = Balance::new(discover, RoundRobin::new());
        balance.wait_for(|keys| keys.len() == 3).await;

        let tried = crate::balance::TriedEndpoints::new();
        let mut answers = Vec::new();
        for _ in 0..4 {
            let mut handle = balance.clone();
            handle.ready().await.unwrap();
            // The pick happens in `call`, inside the scope.
            let call = tried.scope(|| handle.call(()));
            answers.push(call.await.unwrap());
        }
        let mut first_three = answers[..3].to_vec();
        first_three.sort_unstable();
        assert_eq!(first_three, ["a", "b", "c"], "each attempt went elsewhere");
        // All three tried: the fourth is picked as a first attempt would be.
        assert!(["a", "b", "c"].contains(&answers[3]));
        assert_eq!((tried.picks(), tried.len()), (4, 3));
        assert_eq!(tried.last(), Some(hash_value(&answers[3])));

        // Without a set, the pick is the plain one and records nothing.
        let plain = balance.clone().oneshot(()).await;
        assert!(plain.is_ok());
        assert_eq!(tried.picks(), 4);
    }
}
