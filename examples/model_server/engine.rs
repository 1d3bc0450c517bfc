//! The emulated engine: a batch of running requests, a queue before it, a
//! prefix cache, and the time prefill and decode take.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use xxhash_rust::xxh3::Xxh3;

use crate::cache::{block_hashes, tokens, PrefixCache, BLOCK_TOKENS};
use crate::faults::Faults;

/// How the engine behaves.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) model: String,
    pub(crate) cache_tokens: usize,
    pub(crate) batch: usize,
    pub(crate) prefill_per_token: Duration,
    pub(crate) decode_per_token: Duration,
    pub(crate) seed: u64,
    /// Every answer is cut after this many tokens (a fault for tests).
    pub(crate) die_after_tokens: Option<usize>,
}

/// Counters since start (or since the last flush).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) finished: AtomicU64,
    pub(crate) prompt_tokens: AtomicU64,
    pub(crate) cached_tokens: AtomicU64,
    pub(crate) generated_tokens: AtomicU64,
}

/// The engine's state, shared by every request.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) config: Config,
    cache: Mutex<PrefixCache>,
    slots: Arc<Semaphore>,
    pub(crate) waiting: AtomicUsize,
    pub(crate) running: AtomicUsize,
    /// Tokens that running requests hold in the KV cache.
    pub(crate) running_tokens: AtomicUsize,
    pub(crate) counters: Counters,
    pub(crate) faults: Faults,
}

/// One of the engine's gauges.
#[derive(Clone, Copy, Debug)]
enum Gauge {
    Waiting,
    Running,
    RunningTokens,
}

/// An amount added to one of the engine's gauges, taken off again when
/// dropped: on every path out of a request, cancellation included (a client
/// that goes away while its request waits for a slot drops the request's
/// future, and with it this guard).
#[derive(Debug)]
struct Held {
    engine: Arc<Engine>,
    gauge: Gauge,
    amount: usize,
}

impl Held {
    fn new(engine: &Arc<Engine>, gauge: Gauge, amount: usize) -> Self {
        engine.gauge(gauge).fetch_add(amount, Relaxed);
        Self {
            engine: Arc::clone(engine),
            gauge,
            amount,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.engine
            .gauge(self.gauge)
            .fetch_sub(self.amount, Relaxed);
    }
}

/// A request admitted to the batch: it holds its slot, its place in the
/// running count and its KV tokens until dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    _slot: OwnedSemaphorePermit,
    _running: Held,
    _tokens: Held,
    /// Prompt tokens found in the cache.
    pub(crate) cached_tokens: usize,
    /// Prompt tokens in all.
    pub(crate) prompt_tokens: usize,
    /// How long prefill takes: the uncached tokens.
    pub(crate) prefill: Duration,
}

impl Engine {
    pub(crate) fn new(config: Config) -> Arc<Self> {
        Arc::new(Self {
            faults: Faults::new(config.die_after_tokens),
            cache: Mutex::new(PrefixCache::new(config.cache_tokens)),
            slots: Arc::new(Semaphore::new(config.batch.max(1))),
            config,
            waiting: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            running_tokens: AtomicUsize::new(0),
            counters: Counters::default(),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, PrefixCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn gauge(&self, gauge: Gauge) -> &AtomicUsize {
        match gauge {
            Gauge::Waiting => &self.waiting,
            Gauge::Running => &self.running,
            Gauge::RunningTokens => &self.running_tokens,
        }
    }

    /// Waits for a slot in the batch, then looks the prompt up in the
    /// cache. Dropped while it waits, it leaves the waiting count as it
    /// found it.
    pub(crate) async fn admit(self: &Arc<Self>, prompt: &[u8], max_tokens: usize) -> Admitted {
        self.counters.requests.fetch_add(1, Relaxed);
        let waiting = Held::new(self, Gauge::Waiting, 1);
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let running = Held::new(self, Gauge::Running, 1);
        drop(waiting);
        let blocks = block_hashes(prompt);
        let hit_blocks = self.cache().lookup(&blocks);
        let prompt_tokens = tokens(prompt.len());
        let cached_tokens = (hit_blocks * BLOCK_TOKENS).min(prompt_tokens);
        self.counters
            .prompt_tokens
            .fetch_add(prompt_tokens as u64, Relaxed);
        self.counters
            .cached_tokens
            .fetch_add(cached_tokens as u64, Relaxed);
        let uncached = (prompt_tokens - cached_tokens) as u32;
        Admitted {
            _slot: slot,
            _running: running,
            _tokens: Held::new(self, Gauge::RunningTokens, prompt_tokens + max_tokens),
            cached_tokens,
            prompt_tokens,
            prefill: self.config.prefill_per_token * uncached,
        }
    }

    /// Caches the blocks of `text` (the prompt followed by its answer, as
    /// the next turn of a chat will send it).
    pub(crate) fn remember(&self, text: &[u8]) {
        let blocks = block_hashes(text);
        self.cache().insert(&blocks);
    }

    /// Empties the cache and zeroes the counters.
    pub(crate) fn flush(&self) {
        self.cache().clear();
        for counter in [
            &self.counters.requests,
            &self.counters.finished,
            &self.counters.prompt_tokens,
            &self.counters.cached_tokens,
            &self.counters.generated_tokens,
        ] {
            counter.store(0, Relaxed);
        }
    }

    /// Share of the KV cache that running requests hold, in `[0, 1]`.
    pub(crate) fn kv_usage(&self) -> f64 {
        let capacity = (self.cache().capacity() * BLOCK_TOKENS) as f64;
        (self.running_tokens.load(Relaxed) as f64 / capacity).min(1.0)
    }

    /// Blocks the cache holds and can hold.
    pub(crate) fn cache_blocks(&self) -> (usize, usize) {
        let cache = self.cache();
        (cache.len(), cache.capacity())
    }

    /// Cached prompt tokens ÷ prompt tokens since the last flush.
    pub(crate) fn hit_rate(&self) -> f64 {
        let prompt = self.counters.prompt_tokens.load(Relaxed);
        if prompt == 0 {
            0.0
        } else {
            self.counters.cached_tokens.load(Relaxed) as f64 / prompt as f64
        }
    }

    /// The answer's tokens: `count` four-letter words, each a function of
    /// the context before it (the prompt and the words so far) and the
    /// seed. So the same prompt gives the same words whichever server
    /// answers, and a prompt that ends with the first `k` words of an
    /// answer is continued with the rest of that same answer (see
    /// [`crate::openai`]'s continuations).
    pub(crate) fn answer(&self, prompt: &[u8], count: usize) -> Vec<String> {
        const CONSONANTS: &[u8] = b"bcdfghklmnprstvz";
        const VOWELS: &[u8] = b"aeiou";
        let mut context = Xxh3::with_seed(self.config.seed);
        context.update(prompt);
        (0..count)
            .map(|_| {
                // splitmix64's finaliser over the context's hash
                let mut z = context.digest().wrapping_add(0x9e37_79b9_7f4a_7c15);
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                let c = |shift: u32| CONSONANTS[((z >> shift) & 15) as usize] as char;
                let v = |shift: u32| VOWELS[((z >> shift) % 5) as usize] as char;
                let word = format!(" {}{}{}", c(0), v(8), c(16));
                context.update(word.as_bytes());
                word
            })
            .collect()
    }
}
