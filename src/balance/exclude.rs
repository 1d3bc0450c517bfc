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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{service_fn, ServiceExt};

    use crate::pick::{hash_value, RoundRobin};
    use crate::{discover, Balance};

    #[tokio::test]
    async fn retries_avoid_tried_endpoints_until_none_is_left() {
        let (endpoints, discover) = discover::channel();
        for name in ["a", "b", "c"] {
            let svc =
                service_fn(move |_: http::Request<()>| async move { Ok::<_, Infallible>(name) });
            endpoints.insert(name, svc).unwrap();
        }
        let balance = Balance::new(discover, RoundRobin::new());
        balance.wait_for(|keys| keys.len() == 3).await;

        let tried = crate::retry::TriedEndpoints::new();
        let mut answers = Vec::new();
        for _ in 0..4 {
            let mut req = http::Request::new(());
            req.extensions_mut().insert(tried.clone());
            answers.push(balance.clone().oneshot(req).await.unwrap());
        }
        let mut first_three = answers[..3].to_vec();
        first_three.sort_unstable();
        assert_eq!(first_three, ["a", "b", "c"], "each attempt went elsewhere");
        // All three tried: the fourth is picked as a first attempt would be.
        assert!(["a", "b", "c"].contains(&answers[3]));
        assert_eq!((tried.picks(), tried.len()), (4, 3));
        assert_eq!(tried.last(), Some(hash_value(&answers[3])));

        // Without a set, the pick is the plain one and records nothing.
        let plain = balance.clone().oneshot(http::Request::new(())).await;
        assert!(plain.is_ok());
        assert_eq!(tried.picks(), 4);
    }
}
