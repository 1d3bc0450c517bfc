//! State that the pick path writes, one copy a thread.
//!
//! A word that every thread writes on every request (a generator's state, a
//! cursor, a remembered winner) moves its cache line from core to core on
//! each write: with several threads picking at once that transfer, not the
//! pick, is the cost. [`PerThread`] gives each thread its own copy, on a
//! cache line of its own, so a thread writes only lines it already holds.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Copies a value holds. Threads beyond this share copies (thread `i` uses
/// copy `i % SLOTS`), which is still correct: the copies hold atomics, and
/// sharing only brings back some of the traffic. Runtimes rarely run more
/// worker threads than this at once.
const SLOTS: usize = 16;

/// One copy of `T` a thread (up to [`SLOTS`] threads; beyond, shared).
pub(crate) struct PerThread<T> {
    slots: Box<[Padded<T>; SLOTS]>,
}

/// A value alone on its cache line, and on the adjacent one that x86
/// prefetches with it.
#[repr(align(128))]
struct Padded<T>(T);

impl<T> PerThread<T> {
    /// Copies made by `init(slot)`, `slot` in `0..SLOTS`.
    pub(crate) fn new(mut init: impl FnMut(usize) -> T) -> Self {
        Self {
            slots: Box::new(std::array::from_fn(|i| Padded(init(i)))),
        }
    }

    /// The calling thread's copy.
    #[inline]
    pub(crate) fn get(&self) -> &T {
        &self.slots[thread_slot()].0
    }

    /// Every copy.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|p| &p.0)
    }
}

impl<T: fmt::Debug> fmt::Debug for PerThread<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerThread")
            .field("this_thread", self.get())
            .finish_non_exhaustive()
    }
}

/// The calling thread's slot: threads are numbered in the order they first
/// ask, so the few worker threads of a runtime get distinct slots.
#[inline]
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    SLOT.with(|slot| *slot) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_copy_and_none_is_lost() {
        let counts = PerThread::new(|_| AtomicUsize::new(0));
        // Which slots the threads get depends on the threads that asked
        // before (other tests), so only what holds for any slots is
        // checked.
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mine = counts.get();
                    mine.fetch_add(1, Ordering::Relaxed);
                    assert!(std::ptr::eq(mine, counts.get()));
                });
            }
        });
        counts.get().fetch_add(1, Ordering::Relaxed);
        let total: usize = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 5);
        assert!(std::mem::align_of::<Padded<u64>>() >= 64);
    }
}
