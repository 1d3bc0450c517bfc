//! The stream: resolving, applying answers, waiting for the next round.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use hickory_resolver::proto::rr::Name;
use hickory_resolver::TokioResolver;
use tokio::time::Sleep;
use tower::discover::Change;

use super::resolve::{self, Outcome, Query};
use super::{DnsDiscover, OnEmpty, ResolveError, FLOOR, MAX_REPORTED};
use crate::endpoint::Weighted;

pub(super) enum State {
    Start,
    Resolving(
        TokioResolver,
        Query,
        Pin<Box<dyn Future<Output = Outcome> + Send>>,
    ),
    Waiting(TokioResolver, Query, Pin<Box<Sleep>>),
    Ended,
}

impl<F> DnsDiscover<F> {
    pub(super) fn record(&self) -> &'static str {
        if self.port.is_some() {
            "A/AAAA"
        } else {
            "SRV"
        }
    }

    /// The wait before the next resolution for records valid `ttl` seconds.
    fn delay(&self, ttl: u32) -> Duration {
        let min = self.min_ttl.max(FLOOR);
        Duration::from_secs(u64::from(ttl)).clamp(min, self.max_ttl.max(min))
    }

    fn start(&mut self) -> Result<(TokioResolver, Query), ResolveError> {
        let setup = |error: crate::BoxError| ResolveError::setup(&self.name, self.record(), error);
        let name = Name::from_utf8(&self.name).map_err(|e| setup(e.into()))?;
        if name.num_labels() == 0 {
            return Err(setup("an empty name".into()));
        }
        if self.servers.as_ref().is_some_and(Vec::is_empty) {
            return Err(setup("no name servers given".into()));
        }
        let resolver =
            resolve::build(self.servers.as_deref(), self.timeout).map_err(|e| setup(e.into()))?;
        let query = match self.port {
            Some(port) => Query::Addresses(name, port),
            None => Query::Srv(name),
        };
        Ok((resolver, query))
    }

    /// Applies one resolution; returns the wait before the next.
    fn finish(&mut self, outcome: Outcome) -> Duration {
        match outcome {
            Outcome::Found { endpoints, ttl } if !endpoints.is_empty() => {
                self.recovered();
                self.empty = false;
                self.diff.update(endpoints);
                self.delay(ttl)
            }
            Outcome::Found { ttl, .. } => self.empty_answer(Some(ttl)),
            Outcome::Empty { ttl } => self.empty_answer(ttl),
            Outcome::Failed(error) => {
                let error = ResolveError::lookup(&self.name, self.record(), error);
                let text = error.to_string();
                tracing::debug!(%error, "DNS resolution failed; keeping the last endpoints");
                if !self.reported.contains(&text) && self.reported.len() < MAX_REPORTED {
                    self.reported.push(text);
                    self.error = Some(error);
                }
                self.delay(0)
            }
        }
    }

    fn empty_answer(&mut self, ttl: Option<u32>) -> Duration {
        self.recovered();
        if !self.empty {
            self.empty = true;
            let endpoints = self.diff.len();
            match self.on_empty {
                OnEmpty::Clear if endpoints > 0 => tracing::warn!(
                    name = %self.name, endpoints,
                    "DNS answers that the name has no records; removing its endpoints"
                ),
                OnEmpty::KeepLast => tracing::warn!(
                    name = %self.name, endpoints,
                    "DNS answers that the name has no records; keeping the last endpoints"
                ),
                OnEmpty::Clear => {}
            }
        }
        if self.on_empty == OnEmpty::Clear {
            self.diff.update([]);
        }
        self.delay(ttl.unwrap_or(0))
    }

    fn recovered(&mut self) {
        if !self.reported.is_empty() {
            self.reported.clear();
            tracing::info!(name = %self.name, "DNS answers again");
        }
    }
}

// Nothing is pinned in place: the future and the timer are boxed.
impl<F> Unpin for DnsDiscover<F> {}

impl<F, S> Stream for DnsDiscover<F>
where
    F: FnMut(SocketAddr) -> S,
{
    type Item = Result<Change<SocketAddr, Weighted<S>>, ResolveError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.diff.next_item(&mut this.error, &mut this.make) {
                return Poll::Ready(Some(item));
            }
            this.state = match std::mem::replace(&mut this.state, State::Ended) {
                State::Ended => return Poll::Ready(None),
                State::Start => match this.start() {
                    Ok((resolver, query)) => resolving(resolver, query),
                    Err(error) => {
                        this.error = Some(error);
                        State::Ended
                    }
                },
                State::Waiting(resolver, query, mut sleep) => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        this.state = State::Waiting(resolver, query, sleep);
                        return Poll::Pending;
                    }
                    resolving(resolver, query)
                }
                State::Resolving(resolver, query, mut future) => {
                    let Poll::Ready(outcome) = future.as_mut().poll(cx) else {
                        this.state = State::Resolving(resolver, query, future);
                        return Poll::Pending;
                    };
                    let delay = this.finish(outcome);
                    State::Waiting(resolver, query, Box::pin(tokio::time::sleep(delay)))
                }
            };
        }
    }
}

fn resolving(resolver: TokioResolver, query: Query) -> State {
    let future = Box::pin(resolve::resolve(resolver.clone(), query.clone()));
    State::Resolving(resolver, query, future)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discover(min: Duration, max: Duration) -> DnsDiscover<()> {
        DnsDiscover::a_aaaa("x.test.", 80, ())
            .min_ttl(min)
            .max_ttl(max)
    }

    #[test]
    fn the_ttl_is_clamped() {
        let d = discover(Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(d.delay(0), Duration::from_secs(1));
        assert_eq!(d.delay(30), Duration::from_secs(30));
        assert_eq!(d.delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn bad_bounds_do_not_panic_or_spin() {
        // A floor above the ceiling wins; zero is raised to the hard floor.
        let d = discover(Duration::from_secs(10), Duration::from_secs(1));
        assert_eq!(d.delay(0), Duration::from_secs(10));
        assert_eq!(d.delay(3600), Duration::from_secs(10));
        let d = discover(Duration::ZERO, Duration::ZERO);
        assert_eq!(d.delay(0), FLOOR);
        assert_eq!(d.delay(u32::MAX), FLOOR);
    }
}
