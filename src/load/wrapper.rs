//! What [`InFlight`](super::InFlight) and [`Latency`](super::Latency)
//! share word for word.

/// Implements, for a wrapper `$wrapper<S, C>` with the fields `inner: S` and
/// `counter: Counter`, the accessors of its counts and of its inner service,
/// and [`Endpoint`](crate::endpoint::Endpoint) passed through from the inner
/// service. Written once so the two wrappers cannot drift apart.
macro_rules! impl_counted_wrapper {
    ($wrapper:ident) => {
        impl<S, C> $wrapper<S, C> {
            /// Requests in flight now, over all clones.
            pub fn in_flight(&self) -> usize {
                self.counter.in_flight()
            }

            /// Requests started since the wrapper was made, over all clones.
            pub fn requests(&self) -> u64 {
                self.counter.requests()
            }

            /// A handle on the counts, to read them after the wrapper has
            /// moved into a balancer.
            pub fn counter(&self) -> $crate::load::Counter {
                self.counter.clone()
            }

            /// The wrapped service.
            pub fn get_ref(&self) -> &S {
                &self.inner
            }

            /// The wrapped service, mutably.
            pub fn get_mut(&mut self) -> &mut S {
                &mut self.inner
            }

            /// Unwraps the service.
            pub fn into_inner(self) -> S {
                self.inner
            }
        }

        impl<S: $crate::endpoint::Endpoint, C> $crate::endpoint::Endpoint for $wrapper<S, C> {
            const CHECKS_AVAILABILITY: bool = S::CHECKS_AVAILABILITY;

            fn weight(&self) -> u32 {
                self.inner.weight()
            }

            fn zone(&self) -> Option<&str> {
                self.inner.zone()
            }

            fn is_available(&self) -> bool {
                self.inner.is_available()
            }

            fn report(&self) -> Option<&$crate::endpoint::ReportCell> {
                self.inner.report()
            }

            fn prefill(&self) -> Option<&$crate::endpoint::PrefillState> {
                self.inner.prefill()
            }
        }
    };
}

pub(super) use impl_counted_wrapper;
