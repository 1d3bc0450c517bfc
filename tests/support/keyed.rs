//! Mapping many hash keys to backends through a balancer, for the hashing
//! pickers' tests.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tower::Service;
use tower_lb::pick::{key::hash_value, Candidates, EndpointInfo, Pick};
use tower_lb::BoxError;

use super::{send, within, ReqBody};

/// How many tasks [`answers`] spreads its requests over.
const CALLERS: usize = 8;

/// Sends the requests `request(0..n)` through clones of `svc`, several at a
/// time, each expected to succeed with 200; returns the answer to request
/// `i` (the backend's id) at index `i`.
pub async fn answers<S, F>(svc: &S, n: usize, request: F) -> Vec<String>
where
    S: Service<Request<ReqBody>, Response = Response<Incoming>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    F: Fn(usize) -> Request<ReqBody> + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (mut svc, request) = (svc.clone(), Arc::clone(&request));
            tokio::spawn(async move {
                let mut answered = Vec::new();
                for i in (caller..n).step_by(CALLERS) {
                    let (status, body) = send(&mut svc, request(i))
                        .await
                        .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
                    assert_eq!(status, StatusCode::OK, "request {i}: {body}");
                    answered.push((i, body));
                }
                answered
            })
        })
        .collect();
    let mut all = vec![String::new(); n];
    for task in tasks {
        for (i, body) in within("caller", task).await.expect("no panic") {
            all[i] = body;
        }
    }
    all
}

/// Where `picker` sends the requests `request(0..n)` among `endpoints`
/// (keys and weights, in the balancer's order, as
/// [`Balance::endpoints`](tower_lb::Balance::endpoints) lists them),
/// computed with the picker alone: each endpoint described as the
/// balancer describes it, by the hash of its key and its weight. Returns
/// the key picked for request `i` at index `i`.
pub fn picked<P, F>(
    picker: &P,
    endpoints: &[(&'static str, u32)],
    n: usize,
    request: F,
) -> Vec<String>
where
    P: Pick<Request<ReqBody>, ()>,
    F: Fn(usize) -> Request<ReqBody>,
{
    let metas: Vec<EndpointInfo> = endpoints
        .iter()
        .map(|(key, weight)| EndpointInfo::new(hash_value(key), *weight))
        .collect();
    let table = picker.prepare(&metas);
    let services = vec![(); metas.len()];
    let view = Candidates::new(&metas, &services);
    (0..n)
        .map(|i| {
            let at = picker
                .pick(&table, &view, &request(i))
                .unwrap_or_else(|| panic!("request {i}: no endpoint picked"));
            endpoints[at].0.to_owned()
        })
        .collect()
}
