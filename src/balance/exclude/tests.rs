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
