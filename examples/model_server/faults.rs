//! Faults on purpose, for tests of what a router does when a server dies in
//! the middle of an answer.
//!
//! * `--die-after-tokens N`: every answer is cut after its `N`-th token. A
//!   stream's connection is dropped after `N` token events, without the
//!   final event or `[DONE]` (a chunked body without its end, as a process
//!   that dies leaves it); a whole answer's body stops half way.
//! * `POST /admin/cut_streams`: every stream open now is dropped the same
//!   way at once; the answer is `{"cut": N}`, the streams it cut. Later
//!   streams are not affected.
//!
//! Both are deterministic: a test reads `N` events, or waits for a stream to
//! be open, then knows the cut comes next.

use std::fmt;

use tokio::sync::watch;

/// The faults one server injects.
#[derive(Debug)]
pub(crate) struct Faults {
    die_after_tokens: Option<usize>,
    cuts: watch::Sender<u64>,
}

/// Why an answer ended early: the server cut it on purpose.
#[derive(Debug)]
pub(crate) struct Cut;

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the answer was cut on purpose")
    }
}

impl std::error::Error for Cut {}

impl Faults {
    pub(crate) fn new(die_after_tokens: Option<usize>) -> Self {
        Self {
            die_after_tokens,
            cuts: watch::Sender::new(0),
        }
    }

    /// Whether an answer of `count` tokens is cut, and after how many.
    pub(crate) fn cut_after(&self, count: usize) -> Option<usize> {
        self.die_after_tokens.filter(|&n| n < count)
    }

    /// What a stream watches to learn that it is cut.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        let mut receiver = self.cuts.subscribe();
        receiver.mark_unchanged();
        receiver
    }

    /// Cuts every stream open now; returns how many.
    pub(crate) fn cut_streams(&self) -> usize {
        let open = self.cuts.receiver_count();
        self.cuts.send_modify(|n| *n += 1);
        open
    }
}
