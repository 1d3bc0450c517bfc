//! Session affinity: the turns of one chat go where its first turn went.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use http::header::COOKIE;
use http::HeaderName;

use crate::pick::{
    llm::{Candidate, ScoreHook, Scorer},
    EndpointInfo,
};
use crate::util::hash_bytes;

/// Where a request's session key is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionKey {
    /// In this header (`x-session-id`, say).
    Header(HeaderName),
    /// In this cookie of the `cookie` headers.
    Cookie(String),
}

/// A scorer for multi-turn chats: an endpoint scores 1 when the request's
/// session was last sent there, else 0.
///
/// Its hook records, for each request with a session key, the endpoint it
/// was sent to, in a table of [`capacity`](SessionAffinity::new) slots
/// addressed by the key's hash (16 bytes a slot; two sessions that share a
/// slot take it in turn, so the table forgets rather than grows). Install
/// it with [`Scored::shared_scorer`](crate::pick::llm::Scored::shared_scorer)
/// and [`Scored::hook`](crate::pick::llm::Scored::hook), or
/// [`SessionAffinity::install`].
///
/// # Cost
///
/// * **score**: reads the header (or walks the cookies), hashes the key
///   and loads two atomics. No lock, no allocation.
/// * **before_send**: the same, and two stores.
///
/// # Weights
///
/// Endpoint weights play no part in the score.
///
/// # No endpoints, missing key
///
/// With no endpoints there is nothing to score. A request without the
/// header or cookie scores 0 everywhere and records nothing; so does a
/// session whose endpoint has left.
///
/// ```
/// use tower_lb::pick::{llm::{SessionAffinity, SessionKey}};
///
/// let sessions = SessionAffinity::new(SessionKey::Cookie("chat".into()), 1 << 16);
/// # let _ = sessions;
/// ```
pub struct SessionAffinity {
    key: SessionKey,
    /// (key hash, endpoint key hash) pairs; a key hash of 0 is empty.
    slots: Box<[[AtomicU64; 2]]>,
}

impl SessionAffinity {
    /// A table of `capacity` sessions (at least 1).
    #[must_use]
    pub fn new(key: SessionKey, capacity: usize) -> Self {
        Self {
            key,
            slots: (0..capacity.max(1))
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
        }
    }

    /// Adds this scorer with `weight` and its hook to `scored`.
    #[must_use]
    pub fn install<B, S>(
        self: &std::sync::Arc<Self>,
        scored: crate::pick::llm::Scored<http::Request<B>, S>,
        weight: f64,
    ) -> crate::pick::llm::Scored<http::Request<B>, S>
    where
        B: 'static,
        S: 'static,
    {
        scored
            .shared_scorer(weight, std::sync::Arc::clone(self) as _)
            .hook(std::sync::Arc::clone(self) as _)
    }

    /// The hash of the request's session key (never 0), if it has one.
    fn session<B>(&self, request: &http::Request<B>) -> Option<u64> {
        let headers = request.headers();
        let value: &[u8] = match &self.key {
            SessionKey::Header(name) => headers.get(name)?.as_bytes(),
            SessionKey::Cookie(name) => headers
                .get_all(COOKIE)
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
                .find_map(|pair| {
                    let pair = pair.trim_ascii();
                    let (k, v) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
                    (k == name.as_bytes()).then(|| &v[1..])
                })?,
        };
        if value.is_empty() {
            return None;
        }
        Some(hash_bytes(value).max(1))
    }

    fn slot(&self, session: u64) -> &[AtomicU64; 2] {
        let i = ((u128::from(session) * self.slots.len() as u128) >> 64) as usize;
        &self.slots[i]
    }
}

impl fmt::Debug for SessionAffinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionAffinity")
            .field("key", &self.key)
            .field("capacity", &self.slots.len())
            .finish()
    }
}

impl<B, S> Scorer<http::Request<B>, S> for SessionAffinity {
    fn score(&self, request: &http::Request<B>, candidate: &Candidate<'_, S>) -> f64 {
        let Some(session) = self.session(request) else {
            return 0.0;
        };
        let [key, endpoint] = self.slot(session);
        let hit =
            key.load(Relaxed) == session && endpoint.load(Relaxed) == candidate.meta.key_hash();
        if hit {
            1.0
        } else {
            0.0
        }
    }
}

impl<B> ScoreHook<http::Request<B>> for SessionAffinity {
    fn before_send(&self, request: &http::Request<B>, endpoint: EndpointInfo) {
        if let Some(session) = self.session(request) {
            let [key, to] = self.slot(session);
            key.store(session, Relaxed);
            to.store(endpoint.key_hash(), Relaxed);
        }
    }
}
