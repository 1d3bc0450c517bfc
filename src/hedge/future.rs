//! The response future of [`Hedge`](super::Hedge): the attempts of one
//! request, the timer for the next copy, and the race between them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::Service;

use super::delay::Shared;
use super::CloneRequest;
use crate::balance::TriedEndpoints;

pin_project! {
    /// The answer of the first attempt that succeeds; dropping it, or its
    /// completing, drops (cancels) every other attempt.
    pub struct ResponseFuture<S, Req, P>
    where
        S: Service<Req>,
    {
        #[pin]
        first: Option<S::Future>,
        copies: Vec<Pin<Box<S::Future>>>,
        #[pin]
        timer: Option<Sleep>,
        hedging: Option<Hedging<S, Req, P>>,
        tried: TriedEndpoints,
        shared: Arc<Shared>,
        started: Instant,
        attempts: u32,
        last_error: Option<S::Error>,
    }
}

/// What sending another copy takes.
struct Hedging<S, Req, P> {
    delay: Duration,
    template: Req,
    spare: S,
    policy: P,
    /// The timer has fired; the copy waits for `spare` to be ready.
    due: bool,
}

impl<S, Req, P> ResponseFuture<S, Req, P>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        first: S::Future,
        hedging: Option<(Duration, Req, S, P)>,
        tried: TriedEndpoints,
        shared: Arc<Shared>,
    ) -> Self {
        let started = Instant::now();
        let (timer, hedging) = match hedging {
            Some((delay, template, spare, policy)) => (
                Some(tokio::time::sleep_until(started + delay)),
                Some(Hedging {
                    delay,
                    template,
                    spare,
                    policy,
                    due: false,
                }),
            ),
            None => (None, None),
        };
        Self {
            first: Some(first),
            copies: Vec::new(),
            timer,
            hedging,
            tried,
            shared,
            started,
            attempts: 1,
            last_error: None,
        }
    }
}

impl<S, Req, P> Future for ResponseFuture<S, Req, P>
where
    S: Service<Req>,
    P: CloneRequest<Req>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // The attempts already out, oldest first.
            if let Some(first) = this.first.as_mut().as_pin_mut() {
                if let Poll::Ready(answer) = first.poll(cx) {
                    this.first.set(None);
                    match answer {
                        Ok(response) => {
                            this.copies.clear();
                            return finish(this.shared, *this.started, response);
                        }
                        Err(e) => *this.last_error = Some(e),
                    }
                }
            }
            let mut k = 0;
            while k < this.copies.len() {
                match this.copies[k].as_mut().poll(cx) {
                    Poll::Ready(Ok(response)) => {
                        this.first.set(None);
                        this.copies.clear();
                        return finish(this.shared, *this.started, response);
                    }
                    Poll::Ready(Err(e)) => {
                        drop(this.copies.swap_remove(k));
                        *this.last_error = Some(e);
                    }
                    Poll::Pending => k += 1,
                }
            }
            let outstanding = this.first.is_some() || !this.copies.is_empty();

            // The next copy, when its time has come.
            let mut sent = false;
            if let Some(hedging) = this.hedging.as_mut() {
                if !hedging.due {
                    if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                        if timer.poll(cx).is_ready() {
                            hedging.due = true;
                        }
                    }
                }
                if hedging.due && outstanding {
                    match hedging.spare.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            if this.shared.budget.withdraw() {
                                let last = *this.attempts + 1 >= this.shared.max_attempts;
                                let copy = hedging.policy.clone_request(&hedging.template);
                                if let Some(copy) = copy {
                                    let spare = &mut hedging.spare;
                                    let future = this.tried.scope(|| spare.call(copy));
                                    this.copies.push(Box::pin(future));
                                    *this.attempts += 1;
                                    sent = true;
                                }
                                if last || !sent {
                                    *this.hedging = None;
                                    this.timer.set(None);
                                } else {
                                    hedging.due = false;
                                    let next = Instant::now() + hedging.delay;
                                    if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                                        timer.reset(next);
                                    }
                                }
                            } else {
                                // The budget is spent: no more copies.
                                *this.hedging = None;
                                this.timer.set(None);
                            }
                        }
                        Poll::Ready(Err(e)) => {
                            *this.last_error = Some(e);
                            *this.hedging = None;
                            this.timer.set(None);
                        }
                        Poll::Pending => {}
                    }
                }
            }
            if sent {
                // Poll the new copy once, so that it registers its wake-up.
                continue;
            }
            if !outstanding {
                // Every attempt failed; a copy not yet due is not sent (that
                // is a retry's job).
                let Some(e) = this.last_error.take() else {
                    // Unreachable: an attempt left only by failing.
                    return Poll::Pending;
                };
                return Poll::Ready(Err(e));
            }
            return Poll::Pending;
        }
    }
}

fn finish<R, E>(shared: &Shared, started: Instant, response: R) -> Poll<Result<R, E>> {
    shared.record(started.elapsed());
    Poll::Ready(Ok(response))
}

impl<S, Req, P> fmt::Debug for ResponseFuture<S, Req, P>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts)
            .field(
                "in_flight",
                &(usize::from(self.first.is_some()) + self.copies.len()),
            )
            .field("hedging", &self.hedging.is_some())
            .finish()
    }
}
