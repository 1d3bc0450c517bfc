//! Weight 1 for the services of any `Discover`.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use pin_project_lite::pin_project;
use tower::discover::{Change, Discover};

use crate::endpoint::Weighted;
use crate::util::poll_wrapped;

pin_project! {
    /// Wraps every service a `Discover` inserts in [`Weighted`] with weight 1,
    /// so that any existing discovery source (tower's `ServiceList`, your own
    /// stream) can feed a balancer.
    ///
    /// ```
    /// use tower_lb::discover::DefaultWeight;
    ///
    /// let svc = tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) });
    /// let list = DefaultWeight::new(tower::discover::ServiceList::new(vec![svc]));
    /// # let _ = list;
    /// ```
    #[derive(Debug)]
    pub struct DefaultWeight<D> {
        #[pin]
        inner: D,
    }
}

impl<D> DefaultWeight<D> {
    /// Gives weight 1 to every service `inner` yields.
    pub const fn new(inner: D) -> Self {
        Self { inner }
    }
}

impl<D: Discover> Stream for DefaultWeight<D> {
    type Item = Result<Change<D::Key, Weighted<D::Service>>, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        poll_wrapped(self.project().inner, cx, |service| {
            Weighted::new(service, 1)
        })
    }
}
