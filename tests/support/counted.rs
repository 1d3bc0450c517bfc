//! Driving a balancer whose endpoints count their load: responses whose
//! body is a `TrackedBody`, requests held in flight, counters read by key.

use std::collections::BTreeMap;
use std::future::{poll_fn, Future};
use std::task::Poll;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::task::JoinHandle;
use tower::{Service, ServiceExt};
use tower_lb::load::{Counter, InFlight, Latency};
use tower_lb::pick::Prepare;
use tower_lb::{Balance, BoxError};

use super::{Ep, ReqBody};

/// An HTTP endpoint counting its requests in flight, as
/// `InFlightDiscover` wraps what a discovery source inserts.
pub type Counted<C = tower_lb::load::CompleteOnBodyEnd> = InFlight<Ep, C>;

/// Reads a whole response body of any type as UTF-8.
pub async fn read_body<B>(response: Response<B>) -> Result<String, BoxError>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(Into::into)?
        .to_bytes();
    Ok(String::from_utf8(bytes.to_vec())?)
}

/// [`send`](super::send) for services whose response body is not
/// `Incoming` (a counted endpoint's `TrackedBody`).
pub async fn fetch<S, B>(
    svc: &mut S,
    req: Request<ReqBody>,
) -> Result<(StatusCode, String), BoxError>
where
    S: Service<Request<ReqBody>, Response = Response<B>, Error = BoxError>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let response = svc.ready().await?.call(req).await?;
    let status = response.status();
    Ok((status, read_body(response).await?))
}

/// [`tally`](super::tally) for any response body, on a task of its own.
pub fn spawn_fetch_tally<S, B, F>(
    mut svc: S,
    n: usize,
    mut request: F,
) -> JoinHandle<BTreeMap<String, usize>>
where
    S: Service<Request<ReqBody>, Response = Response<B>, Error = BoxError> + Send + 'static,
    S::Future: Send,
    B: http_body::Body + Send,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: FnMut(usize) -> Request<ReqBody> + Send + 'static,
{
    tokio::spawn(async move {
        let mut counts = BTreeMap::new();
        for i in 0..n {
            let (status, body) = fetch(&mut svc, request(i))
                .await
                .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
            assert_eq!(status, StatusCode::OK, "request {i}: {body}");
            *counts.entry(body).or_insert(0) += 1;
        }
        counts
    })
}

/// Adds up per-task tallies.
pub async fn merge_tallies(
    tasks: Vec<JoinHandle<BTreeMap<String, usize>>>,
) -> BTreeMap<String, usize> {
    let mut total = BTreeMap::new();
    for task in tasks {
        let counts = super::within("caller", task)
            .await
            .expect("the caller did not panic");
        for (id, n) in counts {
            *total.entry(id).or_insert(0) += n;
        }
    }
    total
}

/// Sends `req` through `svc` and returns once the picked endpoint has been
/// called, so the request already counts in its load; the rest (the answer,
/// its body) runs on a task of its own.
///
/// The balancer hands a request to its endpoint on the response future's
/// first poll, and the test's HTTP endpoints are always ready, so one poll
/// here is that call: no sleep, no race with the next pick.
pub async fn start<S, B>(
    svc: &mut S,
    req: Request<ReqBody>,
) -> JoinHandle<Result<(StatusCode, String), BoxError>>
where
    S: Service<Request<ReqBody>, Response = Response<B>, Error = BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let call = svc
        .ready()
        .await
        .expect("a balancer is always ready")
        .call(req);
    let mut task = Box::pin(async move {
        let response = call.await?;
        let status = response.status();
        Ok((status, read_body(response).await?))
    });
    match poll_fn(|cx| Poll::Ready(task.as_mut().poll(cx))).await {
        Poll::Ready(done) => tokio::spawn(async move { done }),
        Poll::Pending => tokio::spawn(task),
    }
}

/// Something that keeps a [`Counter`] of its endpoint's requests.
pub trait HasCounter {
    /// The endpoint's counter.
    fn counter_of(&self) -> Counter;
}

impl<S, C> HasCounter for InFlight<S, C> {
    fn counter_of(&self) -> Counter {
        self.counter()
    }
}

impl<S, C> HasCounter for Latency<S, C> {
    fn counter_of(&self) -> Counter {
        self.counter()
    }
}

impl<S: HasCounter> HasCounter for tower_lb::endpoint::Weighted<S> {
    fn counter_of(&self) -> Counter {
        self.get_ref().counter_of()
    }
}

/// Every endpoint's counter, by key, from the balancer's current set.
pub fn counters<S, P>(balance: &Balance<&'static str, S, P>) -> BTreeMap<&'static str, Counter>
where
    S: HasCounter,
    P: Prepare,
{
    balance.read_endpoints(|keys, services| {
        keys.iter()
            .zip(services)
            .map(|(&key, service)| (key, service.counter_of()))
            .collect()
    })
}

/// Every endpoint's requests in flight now, by key.
pub fn in_flight<S, P>(balance: &Balance<&'static str, S, P>) -> BTreeMap<&'static str, usize>
where
    S: HasCounter,
    P: Prepare,
{
    counters(balance)
        .into_iter()
        .map(|(key, counter)| (key, counter.in_flight()))
        .collect()
}
