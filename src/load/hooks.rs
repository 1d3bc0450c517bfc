//! Telling a scoring picker's hooks when an answer ends.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::load::{Load, TrackCompletion};
use tower::Service;

use super::{AnswerHandle, CompleteOnBodyEnd, ResponseFuture};
use crate::endpoint::{Endpoint, EndpointMetrics};
use crate::pick::ScoreHook;

/// Wraps one endpoint so that a [`ScoreHook`] hears
/// [`answer_end`](ScoreHook::answer_end) when each of its requests ends:
/// with the default [`CompleteOnBodyEnd`], at the end of the answer's body
/// (or when the call fails, or the body is dropped).
///
/// The endpoint is named by `key_hash`, the hash of its discovery key
/// ([`hash_value`](crate::pick::hash_value)`(&key)`), as the picker's
/// [`Meta::key_hash`](crate::pick::Meta::key_hash) names it in
/// [`before_send`](ScoreHook::before_send).
///
/// **Cost:** a reference-count increment per call, and the hook's own cost
/// when the answer ends. Passes [`Endpoint`] and `Load` through.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use tower::{service_fn, Service, ServiceExt};
/// use tower_lb::load::AnswerHooks;
/// use tower_lb::pick::{hash_value, ScoreHook};
///
/// #[derive(Default)]
/// struct Ended(AtomicUsize);
/// impl<Req> ScoreHook<Req> for Ended {
///     fn answer_end(&self, _key_hash: u64) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), std::convert::Infallible> {
/// let hook = Arc::new(Ended::default());
/// let server = service_fn(|_: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
/// });
/// let mut endpoint = AnswerHooks::new(server, hook.clone(), hash_value(&"10.0.0.1:80"));
/// let answer = endpoint.ready().await?.call(http::Request::new(())).await?;
/// drop(answer);
/// assert_eq!(hook.0.load(Ordering::Relaxed), 1);
/// # Ok(())
/// # }
/// ```
pub struct AnswerHooks<S, H, C = CompleteOnBodyEnd> {
    inner: S,
    hook: Arc<H>,
    key_hash: u64,
    completion: C,
}

impl<S, H> AnswerHooks<S, H> {
    /// Tells `hook` when each request to `inner` ends, at the end of its
    /// answer's body.
    pub fn new(inner: S, hook: Arc<H>, key_hash: u64) -> Self {
        Self::with_completion(inner, hook, key_hash, CompleteOnBodyEnd)
    }
}

impl<S, H, C> AnswerHooks<S, H, C> {
    /// Like [`new`](AnswerHooks::new), with requests ending when
    /// `completion` lets go of their handles.
    pub fn with_completion(inner: S, hook: Arc<H>, key_hash: u64, completion: C) -> Self {
        Self {
            inner,
            hook,
            key_hash,
            completion,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, H, C: Clone> Clone for AnswerHooks<S, H, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            hook: Arc::clone(&self.hook),
            key_hash: self.key_hash,
            completion: self.completion.clone(),
        }
    }
}

impl<S: fmt::Debug, H, C> fmt::Debug for AnswerHooks<S, H, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnswerHooks")
            .field("inner", &self.inner)
            .field("key_hash", &self.key_hash)
            .finish_non_exhaustive()
    }
}

impl<S: Endpoint, H, C> Endpoint for AnswerHooks<S, H, C> {
    const GATED: bool = S::GATED;

    fn weight(&self) -> u32 {
        self.inner.weight()
    }

    fn zone(&self) -> Option<&str> {
        self.inner.zone()
    }

    fn is_available(&self) -> bool {
        self.inner.is_available()
    }

    fn metrics(&self) -> Option<&EndpointMetrics> {
        self.inner.metrics()
    }
}

impl<S: Load, H, C> Load for AnswerHooks<S, H, C> {
    type Metric = S::Metric;

    fn load(&self) -> S::Metric {
        self.inner.load()
    }
}

/// One request on an [`AnswerHooks`] endpoint: when dropped, the hook hears
/// that its answer ended.
pub struct HookHandle<H> {
    hook: Arc<H>,
    key_hash: u64,
    end: fn(&H, u64),
}

impl<H> AnswerHandle for HookHandle<H> {}

impl<H> Drop for HookHandle<H> {
    fn drop(&mut self) {
        (self.end)(&self.hook, self.key_hash);
    }
}

impl<H> fmt::Debug for HookHandle<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookHandle")
            .field("key_hash", &self.key_hash)
            .finish_non_exhaustive()
    }
}

impl<S, H, C, Req> Service<Req> for AnswerHooks<S, H, C>
where
    S: Service<Req>,
    H: ScoreHook<Req>,
    C: TrackCompletion<HookHandle<H>, S::Response> + Clone,
{
    type Response = C::Output;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C, HookHandle<H>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let handle = HookHandle {
            hook: Arc::clone(&self.hook),
            key_hash: self.key_hash,
            end: |hook, key_hash| ScoreHook::<Req>::answer_end(hook, key_hash),
        };
        ResponseFuture::new(self.inner.call(request), handle, self.completion.clone())
    }
}
