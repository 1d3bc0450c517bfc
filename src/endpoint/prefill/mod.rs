//! What the client knows of a model server's prefill: the prompt prefixes
//! it holds, the prefill work sent there and not yet done, and how fast it
//! prefills (learnt from each first token).

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::report::clock_ms;
use super::ReportCell;

mod index;
mod model;

pub(crate) use self::index::BlockIndex;
pub use self::model::TtftModel;
use self::model::{Fit, INPUTS};

/// The answer time a server's slots are counted with before an answer
/// has ended there (1 s), when its slots are known.
const UNKNOWN_ANSWER_NS: f64 = 1e9;

/// Settings of a [`PrefillState`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrefillConfig {
    /// Prompt blocks the index of the server's cache holds (default 31,250:
    /// 2,000,000 bytes of prompt at 64 bytes a block, in 500 kB).
    pub index_blocks: usize,
    /// Bytes of prompt in a block: the `block_size` of the
    /// [`BlockConfig`](crate::pick::llm::BlockConfig) that hashes prompts
    /// (default 64).
    pub block_bytes: usize,
    /// Bytes of prompt a token stands for, to turn prompt bytes into tokens
    /// (default 4, about right for English text and BPE tokenizers).
    pub bytes_per_token: f64,
    /// Where learning starts.
    pub prior: TtftModel,
    /// The server's batch slots, when the operator knows them (default
    /// `None`). With them, this client's own requests beyond the slots
    /// count as a wait for a slot even when the server's last report shows
    /// no queue; without them, only a reported queue counts (slots learnt
    /// from reports trap rarely used servers: see
    /// [`PrefillState::slot_wait`]).
    pub slots: Option<u32>,
}

impl Default for PrefillConfig {
    fn default() -> Self {
        Self {
            index_blocks: 31_250,
            block_bytes: 64,
            bytes_per_token: 4.0,
            prior: TtftModel::default(),
            slots: None,
        }
    }
}

/// One model server's prefill as the client sees it, shared (cloning is a
/// reference-count increment) by the endpoint wrapper that records what is
/// sent ([`Prefill`](crate::load::Prefill)) and the picker that predicts
/// each server's time to first token
/// ([`Scored::ttft`](crate::pick::llm::Scored::ttft)).
///
/// It holds:
///
/// * **an index of the server's prefix cache**: the prompt blocks recently
///   sent there, bounded and lock-free, corrected by what the server says
///   it really reused ([`PrefillGuard::reused`]);
/// * **the prefill queued there**: uncached prompt tokens of requests sent
///   and not yet at their first token, and how many such requests there
///   are, each held by a [`PrefillGuard`] that gives them back when it
///   ends, whatever ends it;
/// * **the server's [`TtftModel`]**, learnt online from each streamed
///   answer's first token, read by picks as four atomic loads.
///
/// Reading it on a pick takes no lock and allocates nothing; learning takes
/// a lock once per first token, off the pick, and skips the observation
/// rather than wait when another answer holds it.
#[derive(Clone)]
pub struct PrefillState {
    shared: Arc<Shared>,
}

struct Shared {
    config: PrefillConfig,
    index: BlockIndex,
    queued_tokens: AtomicU64,
    waiting: AtomicUsize,
    /// Requests sent and not yet ended.
    in_flight: AtomicUsize,
    /// The server's batch slots: the most running requests it has
    /// reported; 0 while unknown.
    slots: AtomicU32,
    /// Mean time from dispatch to an answer's end, ns (EWMA); 0 before the
    /// first answer.
    answer_ns: AtomicU64,
    coefficients: [AtomicU64; INPUTS],
    /// When the model last learnt (the report clock, ms); 0: never.
    learnt_at: AtomicU64,
    fit: Mutex<Fit>,
    report: Option<ReportCell>,
    sent_tokens: AtomicU64,
    expected_cached_tokens: AtomicU64,
    measured_prompt_tokens: AtomicU64,
    measured_cached_tokens: AtomicU64,
    measured_expected_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    /// [`clock_ms`] of the last first token or answer end there; 0: none.
    progress_ms: AtomicU64,
}

/// What a [`PrefillState`] knows, for a status page.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrefillStats {
    /// Blocks in the index of the server's cache.
    pub indexed_blocks: usize,
    /// Blocks the index can hold.
    pub capacity_blocks: usize,
    /// Uncached prompt tokens sent there and not yet at a first token.
    pub queued_tokens: u64,
    /// Requests sent there and not yet at a first token.
    pub waiting: usize,
    /// Requests sent there and not yet ended.
    pub in_flight: usize,
    /// Its batch slots, as it reported them (the most running requests);
    /// 0 while unknown.
    pub slots: u32,
    /// An answer's mean duration there, from dispatch to its end.
    pub mean_answer: std::time::Duration,
    /// The learnt model.
    pub model: TtftModel,
    /// Prompt tokens sent there.
    pub sent_tokens: u64,
    /// Share of them the index expected the server to find cached.
    pub expected_reuse: f64,
    /// Share of prompt tokens the server said it reused, over the answers
    /// that said (`usage.prompt_tokens_details.cached_tokens`); `None`
    /// before the first.
    pub measured_reuse: Option<f64>,
    /// What the index expected of those same answers, to compare with
    /// [`measured_reuse`](Self::measured_reuse).
    pub expected_reuse_of_measured: Option<f64>,
    /// Prompt tokens the answers said they had (`usage.prompt_tokens`).
    pub measured_prompt_tokens: u64,
    /// Tokens the answers said they generated (`usage.completion_tokens`).
    pub completion_tokens: u64,
}

impl Default for PrefillState {
    fn default() -> Self {
        Self::new(PrefillConfig::default())
    }
}

impl Shared {
    /// Nothing learnt, nothing sent, no report; `config` already checked.
    fn empty(config: PrefillConfig) -> Self {
        let fit = Fit::new(config.prior);
        Self {
            index: BlockIndex::new(config.index_blocks),
            queued_tokens: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            slots: AtomicU32::new(0),
            answer_ns: AtomicU64::new(0),
            coefficients: fit.theta().map(|c| AtomicU64::new(c.to_bits())),
            learnt_at: AtomicU64::new(0),
            fit: Mutex::new(fit),
            report: None,
            sent_tokens: AtomicU64::new(0),
            expected_cached_tokens: AtomicU64::new(0),
            measured_prompt_tokens: AtomicU64::new(0),
            measured_cached_tokens: AtomicU64::new(0),
            measured_expected_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            progress_ms: AtomicU64::new(0),
            config,
        }
    }
}

impl PrefillState {
    /// An empty state with `config`.
    pub fn new(config: PrefillConfig) -> Self {
        let config = PrefillConfig {
            block_bytes: config.block_bytes.max(1),
            bytes_per_token: if config.bytes_per_token.is_finite() && config.bytes_per_token > 0.0 {
                config.bytes_per_token
            } else {
                4.0
            },
            ..config
        };
        Self {
            shared: Arc::new(Shared::empty(config)),
        }
    }

    /// The same state reading the server's own reports from `report`: its
    /// queue, when fresh, counts as the requests ahead. Call before the
    /// state is shared (clones made earlier keep no report).
    #[must_use]
    pub fn with_report(self, report: ReportCell) -> Self {
        // Shared already: a fresh state of the same settings.
        let shared =
            Arc::try_unwrap(self.shared).unwrap_or_else(|shared| Shared::empty(shared.config));
        Self {
            shared: Arc::new(Shared {
                report: Some(report),
                ..shared
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> PrefillConfig {
        self.shared.config
    }

    /// Prompt tokens in `prompt_bytes` bytes.
    pub fn tokens(&self, prompt_bytes: u64) -> f64 {
        prompt_bytes as f64 / self.shared.config.bytes_per_token
    }

    /// How many leading blocks of a prompt (its chained block hashes) the
    /// server is believed to hold.
    pub fn cached_blocks(&self, hashes: &[u64]) -> usize {
        self.shared.index.leading(hashes)
    }

    /// The prompt's tokens the server is believed not to hold: all of
    /// `prompt_bytes` less the cached leading blocks.
    pub fn uncached_tokens(&self, hashes: &[u64], prompt_bytes: u64) -> f64 {
        let cached = self.cached_blocks(hashes) as u64 * self.shared.config.block_bytes as u64;
        self.tokens(prompt_bytes.saturating_sub(cached))
    }

    /// The estimated wait, in nanoseconds, of a new request for one of the
    /// server's batch slots: 0 while nothing waits there for a slot, else
    /// `(q + 1) × D ÷ r` for `q` requests waiting and `r` running (as a
    /// fresh report says) and `D` an answer's mean duration there: a slot
    /// frees once in `D ÷ r`. Without a fresh report, the client's own
    /// requests there without a first token each count `D ÷` its requests
    /// in flight there. 0 until an answer has ended there.
    ///
    /// With [`PrefillConfig::slots`] set, this client's own requests past
    /// the slots also count: with `n` in flight and `L` slots, a new request
    /// waits `(n + 1 − L) × D ÷ L` at least, `D` being 1 s until an answer
    /// has ended there.
    ///
    /// Otherwise only a reported queue counts, not a full batch with an empty queue:
    /// counting slots as full from the most running requests a server has
    /// reported (measured at 48 requests in flight over eight servers of
    /// eight slots) sent requests to servers without their prefix, and
    /// lost more in prefill (hit rate 74 % against 82 %, TTFT p99 108–220
    /// ms against 119–169 ms) than the slot waits it avoided.
    pub fn slot_wait(&self, now: Instant) -> f64 {
        let s = &*self.shared;
        let answer = s.answer_ns.load(Relaxed) as f64;
        let own = s.in_flight.load(Relaxed);
        if answer == 0.0 {
            // Known slots full of this client's requests before any answer
            // ended there: each further request waits one unknown answer,
            // counted as `UNKNOWN_ANSWER`.
            return match s.config.slots {
                Some(slots) if slots > 0 && own >= slots as usize => {
                    (own + 1 - slots as usize) as f64 * UNKNOWN_ANSWER_NS / f64::from(slots)
                }
                _ => 0.0,
            };
        }
        let reported = s
            .report
            .as_ref()
            .and_then(|r| r.fresh_load(clock_ms(now)))
            .filter(|&(queue, running, _)| {
                !s.report
                    .as_ref()
                    .is_some_and(|r| r.contradicted(queue, running, own as u64))
            })
            .map(|(queue, running, kv)| (queue, running.unwrap_or(0), kv));
        let wait = match reported {
            Some((queue, running, _)) => {
                if running > s.slots.load(Relaxed) {
                    s.slots.fetch_max(running, Relaxed);
                }
                if queue == 0 {
                    0.0
                } else {
                    f64::from(queue.saturating_add(1)) * answer / f64::from(running.max(1))
                }
            }
            None => s.waiting.load(Relaxed) as f64 * answer / own.max(1) as f64,
        };
        // Known slots: this client's own requests fill them whatever the
        // last report said, and each further one waits for a slot to free,
        // one every `D ÷ slots`.
        match s.config.slots {
            Some(slots) if slots > 0 && own >= slots as usize => {
                let beyond = (own + 1 - slots as usize) as f64;
                wait.max(beyond * answer / f64::from(slots))
            }
            _ => wait,
        }
    }

    /// The most running requests the server has reported: its batch slots,
    /// as far as it has shown them; 0 while unknown.
    pub fn slots(&self) -> u32 {
        self.shared.slots.load(Relaxed)
    }

    /// The predicted time to first token, in nanoseconds, of a request with
    /// `uncached_tokens` to prefill and `slot_wait` nanoseconds to wait for
    /// a batch slot ([`slot_wait`](Self::slot_wait)), at `now`.
    #[inline]
    pub fn predict_ns(&self, uncached_tokens: f64, slot_wait: f64, now: Instant) -> f64 {
        let [base, per_token] = self.coefficients_at(clock_ms(now), None);
        base + per_token * self.tokens_ahead(uncached_tokens) + slot_wait
    }

    /// Like [`predict_ns`](Self::predict_ns), for a server whose own model
    /// is not current ([`current_model`](Self::current_model) is `None`):
    /// never learnt, or not heard from for a while. Its coefficients are
    /// `reference` (another server's current model) where it has learnt
    /// nothing, and drift toward it rather than toward the prior.
    pub(crate) fn predict_ns_toward(
        &self,
        uncached_tokens: f64,
        slot_wait: f64,
        now: Instant,
        reference: [f64; INPUTS],
    ) -> f64 {
        let [base, per_token] = self.coefficients_at(clock_ms(now), Some(reference));
        base + per_token * self.tokens_ahead(uncached_tokens) + slot_wait
    }

    /// The learnt coefficients (ns, ns a token) when they are current:
    /// learnt from a first token within the last second.
    pub(crate) fn current_model(&self, now: Instant) -> Option<[f64; INPUTS]> {
        let s = &*self.shared;
        let at = s.learnt_at.load(Relaxed);
        (at != 0 && clock_ms(now) <= at + 1_000).then(|| {
            s.coefficients
                .each_ref()
                .map(|c| f64::from_bits(c.load(Relaxed)))
        })
    }

    /// Prefill tokens a request with `uncached_tokens` waits for: those
    /// queued before it, and its own.
    #[inline]
    fn tokens_ahead(&self, uncached_tokens: f64) -> f64 {
        self.shared.queued_tokens.load(Relaxed) as f64 + uncached_tokens
    }

    /// The learnt coefficients, drawn back toward the prior the longer the
    /// server has not been heard from (halfway after 5 s).
    #[inline]
    fn coefficients_at(&self, now_ms: u64, reference: Option<[f64; INPUTS]>) -> [f64; INPUTS] {
        let s = &*self.shared;
        let learnt = s
            .coefficients
            .each_ref()
            .map(|c| f64::from_bits(c.load(Relaxed)));
        let at = s.learnt_at.load(Relaxed);
        if at == 0 {
            return reference.unwrap_or(learnt);
        }
        if now_ms <= at + 1_000 {
            return learnt;
        }
        let trust = 5_000.0 / (5_000.0 + (now_ms - at - 1_000) as f64);
        let prior = reference.unwrap_or_else(|| s.config.prior.to_ns());
        std::array::from_fn(|i| prior[i] + (learnt[i] - prior[i]) * trust)
    }

    /// The learnt model now.
    pub fn model(&self) -> TtftModel {
        TtftModel::from_ns(
            self.shared
                .coefficients
                .each_ref()
                .map(|c| f64::from_bits(c.load(Relaxed))),
        )
    }

    /// Records that a prompt (its chained block hashes, and its length in
    /// bytes) is sent to the server now: its uncached tokens join the
    /// queued prefill and its blocks the index, until the returned guard
    /// ends. Call it when the request is dispatched, not when it is picked,
    /// so that a request that never reaches the server reserves nothing.
    pub fn reserve(&self, hashes: &[u64], prompt_bytes: u64) -> PrefillGuard {
        let now = Instant::now();
        let s = &*self.shared;
        let cached_blocks = s.index.leading(hashes);
        // The last block believed cached is the least recently sent of the
        // run (a chain's later blocks are shared by fewer prompts).
        let oldest_stamp = cached_blocks
            .checked_sub(1)
            .and_then(|last| s.index.stamp(hashes[last]))
            .unwrap_or(0);
        let cached_bytes = (cached_blocks as u64 * s.config.block_bytes as u64).min(prompt_bytes);
        let uncached = self.tokens(prompt_bytes - cached_bytes);
        let inputs = [1.0, self.tokens_ahead(uncached)];
        let slot_wait = self.slot_wait(now);
        let claimed_wait = self.claimed_wait(now);
        s.index.insert(hashes);
        let reserved = uncached.ceil() as u64;
        s.queued_tokens.fetch_add(reserved, Relaxed);
        s.waiting.fetch_add(1, Relaxed);
        s.in_flight.fetch_add(1, Relaxed);
        let prompt_tokens = self.tokens(prompt_bytes);
        let expected_cached = prompt_tokens - uncached;
        s.sent_tokens
            .fetch_add(prompt_tokens.round() as u64, Relaxed);
        s.expected_cached_tokens
            .fetch_add(expected_cached.round() as u64, Relaxed);
        PrefillGuard {
            state: self.clone(),
            reserved: Some(reserved),
            in_flight: true,
            started: now,
            inputs,
            slot_wait,
            claimed_wait,
            oldest_stamp,
            expected_cached_tokens: expected_cached,
        }
    }

    /// The wait a fresh report's queue implies for a request sent now,
    /// `(q + 1) × D ÷ r`, when the server reports waiting requests while
    /// this client has none there (so only what answers show can check
    /// it), believed or not; 0 otherwise.
    fn claimed_wait(&self, now: Instant) -> f64 {
        let s = &*self.shared;
        let answer = s.answer_ns.load(Relaxed) as f64;
        if answer == 0.0 || s.in_flight.load(Relaxed) > 0 {
            return 0.0;
        }
        match s.report.as_ref().and_then(|r| r.fresh_load(clock_ms(now))) {
            Some((queue, running, _)) if queue > 0 && running != Some(0) => {
                f64::from(queue.saturating_add(1)) * answer / f64::from(running.unwrap_or(1).max(1))
            }
            _ => 0.0,
        }
    }

    /// What it knows now.
    pub fn stats(&self) -> PrefillStats {
        let s = &*self.shared;
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let sent = s.sent_tokens.load(Relaxed);
        let measured_prompt = s.measured_prompt_tokens.load(Relaxed);
        PrefillStats {
            indexed_blocks: s.index.len(),
            capacity_blocks: s.index.capacity(),
            queued_tokens: s.queued_tokens.load(Relaxed),
            waiting: s.waiting.load(Relaxed),
            in_flight: s.in_flight.load(Relaxed),
            slots: s.slots.load(Relaxed),
            mean_answer: std::time::Duration::from_nanos(s.answer_ns.load(Relaxed)),
            model: self.model(),
            sent_tokens: sent,
            expected_reuse: ratio(s.expected_cached_tokens.load(Relaxed), sent),
            measured_reuse: (measured_prompt > 0)
                .then(|| ratio(s.measured_cached_tokens.load(Relaxed), measured_prompt)),
            expected_reuse_of_measured: (measured_prompt > 0)
                .then(|| ratio(s.measured_expected_tokens.load(Relaxed), measured_prompt)),
            measured_prompt_tokens: measured_prompt,
            completion_tokens: s.completion_tokens.load(Relaxed),
        }
    }

    /// Bytes of memory the index takes.
    pub fn index_bytes(&self) -> usize {
        self.shared.index.capacity() * BlockIndex::bytes_per_block()
    }

    fn learn(&self, inputs: [f64; INPUTS], ttft_ns: f64) {
        // Off the pick, once per answer; another answer learning now is
        // not waited for: this observation is skipped instead.
        let Ok(mut fit) = self.shared.fit.try_lock() else {
            return;
        };
        fit.observe(inputs, ttft_ns);
        for (word, value) in self.shared.coefficients.iter().zip(fit.theta()) {
            word.store(value.to_bits(), Relaxed);
        }
        self.shared
            .learnt_at
            .store(clock_ms(Instant::now()), Relaxed);
    }
}

impl fmt::Debug for PrefillState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefillState")
            .field("stats", &self.stats())
            .finish()
    }
}

/// One request's share of a server's [`PrefillState`]: its uncached
/// tokens in the queued prefill and its place among the requests waiting
/// for a first token. Both are given back once, when the first token comes
/// ([`first_token`](Self::first_token)) or when the guard is dropped
/// (an error, a cancelled request, a client that went away).
pub struct PrefillGuard {
    state: PrefillState,
    reserved: Option<u64>,
    /// Whether the request still counts in flight (until the answer ends).
    in_flight: bool,
    started: Instant,
    inputs: [f64; INPUTS],
    /// The slot wait estimated at dispatch, taken out of the observed time
    /// before learning.
    slot_wait: f64,
    /// The wait a reported queue implied at dispatch when this client had
    /// nothing there (0 otherwise), checked against the first token.
    claimed_wait: f64,
    /// The index's stamp of the least recently sent block it expected the
    /// server to hold; 0 when it expected none.
    oldest_stamp: u64,
    expected_cached_tokens: f64,
}

impl PrefillGuard {
    /// The first token came: the reservation is given back, and when
    /// `learn` is set (a streamed answer, whose first frame is its first
    /// token) the time since [`PrefillState::reserve`] teaches the model.
    pub fn first_token(&mut self, learn: bool) {
        if self.reserved.is_some() {
            self.progressed();
        }
        if self.release() && learn {
            let ttft = Instant::now().saturating_duration_since(self.started);
            self.learn(ttft.as_nanos() as f64);
            self.check_claimed_queue(ttft.as_nanos() as f64);
        }
    }

    /// The server moved: a first token or an answer's end, now.
    fn progressed(&self) {
        self.state
            .shared
            .progress_ms
            .fetch_max(clock_ms(Instant::now()), Relaxed);
    }

    /// Whether the server gave another request a first token or ended an
    /// answer after this one was sent (it is working, if busy).
    pub fn server_progressed(&self) -> bool {
        self.state.shared.progress_ms.load(Relaxed) > clock_ms(self.started)
    }

    /// Sent while the server reported a queue this client had no part in:
    /// a first token within half the wait that queue implied disproves it
    /// ([`ReportCell::disprove_queue`]); a later one proves it.
    fn check_claimed_queue(&self, ttft_ns: f64) {
        if self.claimed_wait > 0.0 {
            if let Some(report) = &self.state.shared.report {
                report.disprove_queue(ttft_ns < self.claimed_wait / 2.0);
            }
        }
    }

    /// Like [`first_token`](Self::first_token), for a caller that measures
    /// time itself (a simulation): the first token came `ttft` after the
    /// reservation, and teaches the model.
    pub fn first_token_after(&mut self, ttft: std::time::Duration) {
        if self.release() {
            self.learn(ttft.as_nanos() as f64);
        }
    }

    /// The server said how many of the prompt's tokens it reused from its
    /// cache, out of `prompt_tokens` (an answer's
    /// `usage.prompt_tokens_details.cached_tokens`): counted for
    /// [`PrefillStats::measured_reuse`]. When it reused less than the index
    /// expected, the server has evicted what the index still lists: every
    /// block sent there as long ago as the least recent one this request
    /// expected is forgotten (a cache that evicts least recently used blocks
    /// first holds none of them). The prompt's own blocks stay: the server
    /// has just prefilled and cached them.
    pub fn reused(&self, cached_tokens: u64, prompt_tokens: u64) {
        let s = &*self.state.shared;
        s.measured_prompt_tokens.fetch_add(prompt_tokens, Relaxed);
        s.measured_cached_tokens
            .fetch_add(cached_tokens.min(prompt_tokens), Relaxed);
        s.measured_expected_tokens
            .fetch_add(self.expected_cached_tokens.round() as u64, Relaxed);
        // A block's worth of slack: servers count whole pages.
        let block_tokens = s.config.block_bytes as f64 / s.config.bytes_per_token;
        if (cached_tokens as f64) + block_tokens <= self.expected_cached_tokens
            && self.oldest_stamp > 0
        {
            s.index.forget_up_to(self.oldest_stamp);
            tracing::debug!(
                expected = self.expected_cached_tokens,
                reused = cached_tokens,
                "the server reused less than its index expected: older blocks forgotten"
            );
        }
    }

    /// The server said it generated `tokens` for this answer
    /// (`usage.completion_tokens`).
    pub fn generated(&self, tokens: u64) {
        self.state
            .shared
            .completion_tokens
            .fetch_add(tokens, Relaxed);
    }

    /// The answer ended whole: its duration since the reservation teaches
    /// the mean answer time, and the request no longer counts in flight.
    pub fn answer_end(&mut self) {
        self.first_token(false);
        if self.in_flight {
            self.progressed();
        }
        self.ended(Instant::now().saturating_duration_since(self.started));
    }

    /// Like [`answer_end`](Self::answer_end), for a caller that measures
    /// time itself (a simulation): the answer took `took` in all.
    pub fn answer_end_after(&mut self, took: std::time::Duration) {
        self.release();
        self.ended(took);
    }

    /// The request no longer counts in flight; an answer that took `took`
    /// moves the mean answer time (an average over about 16 answers).
    fn ended(&mut self, took: std::time::Duration) {
        if std::mem::take(&mut self.in_flight) {
            let s = &*self.state.shared;
            s.in_flight.fetch_sub(1, Relaxed);
            let took = took.as_nanos() as f64;
            let mean = s.answer_ns.load(Relaxed) as f64;
            let next = if mean == 0.0 {
                took
            } else {
                mean + (took - mean) / 16.0
            };
            s.answer_ns.store(next.max(1.0) as u64, Relaxed);
        }
    }

    fn learn(&self, ttft_ns: f64) {
        let prefill = (ttft_ns - self.slot_wait).max(0.0);
        self.state.learn(self.inputs, prefill);
    }

    /// Gives the reservation back; false when it already was.
    fn release(&mut self) -> bool {
        match self.reserved.take() {
            Some(tokens) => {
                let s = &*self.state.shared;
                s.queued_tokens.fetch_sub(tokens, Relaxed);
                s.waiting.fetch_sub(1, Relaxed);
                true
            }
            None => false,
        }
    }
}

impl Drop for PrefillGuard {
    fn drop(&mut self) {
        self.release();
        if self.in_flight {
            self.state.shared.in_flight.fetch_sub(1, Relaxed);
        }
    }
}

impl fmt::Debug for PrefillGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefillGuard")
            .field("reserved_tokens", &self.reserved)
            .field("expected_cached_tokens", &self.expected_cached_tokens)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::endpoint::Report;

    /// A prompt of `blocks` blocks named from `seed`, chained.
    fn prompt(seed: u64, blocks: u64) -> Vec<u64> {
        (0..blocks)
            .map(|i| (seed << 32 | i).wrapping_mul(0x9E37_79B9_7F4A_7C15).max(1))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_counts_until_the_first_token_or_the_drop() {
        let state = PrefillState::default();
        let system = prompt(1, 10);
        let mut first = state.reserve(&system, 640);
        assert_eq!(state.stats().queued_tokens, 160);
        assert_eq!(state.stats().waiting, 1);
        // The same prompt again: the index holds it now, nothing to prefill.
        let second = state.reserve(&system, 640);
        assert_eq!(state.stats().queued_tokens, 160);
        assert_eq!(state.stats().waiting, 2);
        first.first_token(false);
        first.first_token(false);
        assert_eq!((state.stats().queued_tokens, state.stats().waiting), (0, 1));
        drop(first);
        drop(second);
        assert_eq!((state.stats().queued_tokens, state.stats().waiting), (0, 0));
        let stats = state.stats();
        assert_eq!(stats.sent_tokens, 320);
        assert!((stats.expected_reuse - 0.5).abs() < 1e-9, "{stats:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_predicted_time_grows_with_uncached_and_queued_tokens() {
        let state = PrefillState::default();
        let cached = prompt(2, 30);
        drop(state.reserve(&cached, 30 * 64));
        let miss = prompt(3, 30);
        let now = Instant::now();
        let hit_cost = state.predict_ns(state.uncached_tokens(&cached, 30 * 64), 0.0, now);
        let miss_cost = state.predict_ns(state.uncached_tokens(&miss, 30 * 64), 0.0, now);
        // 480 tokens at the prior's 100 µs.
        assert!(
            (miss_cost - hit_cost - 48e6).abs() < 1e3,
            "{hit_cost} {miss_cost}"
        );
        let _queued = state.reserve(&miss, 30 * 64);
        let busy = state.predict_ns(state.uncached_tokens(&cached, 30 * 64), 20e6, now);
        // 480 queued tokens ahead at 100 µs, and a 20 ms wait for a slot.
        assert!((busy - hit_cost - 48e6 - 20e6).abs() < 1e3, "{busy}");
    }

    #[tokio::test(start_paused = true)]
    async fn streamed_first_tokens_teach_the_server_speed() {
        let state = PrefillState::default();
        // A server three times slower to prefill than the prior: 300 µs a token.
        for k in 0..300u64 {
            let tokens = 50 + (k * 37) % 700;
            let mut guard = state.reserve(&prompt(1000 + k, 1), tokens * 4);
            tokio::time::advance(Duration::from_micros(2_000 + 300 * tokens)).await;
            guard.first_token(true);
        }
        let model = state.model();
        let per_token = model.per_token.as_secs_f64() * 1e6;
        assert!((per_token - 300.0).abs() < 15.0, "{model:?}");
        // Not heard from for a minute: most of the way back to the prior.
        tokio::time::advance(Duration::from_secs(60)).await;
        let later = state.predict_ns(700.0, 0.0, Instant::now());
        let prior = 10e6 + 100e3 * 700.0;
        assert!(
            (later - prior).abs() < 0.1 * (2e6 + 300e3 * 700.0 - prior).abs(),
            "{later}"
        );
        // Not streamed: the first frame is the whole answer, nothing is learnt.
        let before = state.model();
        let mut guard = state.reserve(&prompt(5, 1), 400);
        tokio::time::advance(Duration::from_secs(5)).await;
        guard.first_token(false);
        assert_eq!(state.model(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_evicts_is_forgotten_after_one_answer() {
        let state = PrefillState::default();
        let old = prompt(7, 20);
        let older = prompt(8, 20);
        drop(state.reserve(&older, 20 * 64));
        drop(state.reserve(&old, 20 * 64));
        let recent = prompt(9, 20);
        drop(state.reserve(&recent, 20 * 64));
        assert_eq!(state.cached_blocks(&old), 20);
        // The index expects `old` whole; the server reused nothing of it.
        let guard = state.reserve(&old, 20 * 64);
        guard.reused(0, 320);
        drop(guard);
        // What was sent as long ago as `old` is gone; `old` itself was just
        // prefilled again, and what came after stays.
        assert_eq!(state.cached_blocks(&older), 0);
        assert_eq!(state.cached_blocks(&old), 20);
        assert_eq!(state.cached_blocks(&recent), 20);
        let stats = state.stats();
        assert_eq!(stats.measured_reuse, Some(0.0));
        assert_eq!(stats.expected_reuse_of_measured, Some(1.0));
        // An answer that reused what was expected changes nothing.
        let guard = state.reserve(&recent, 20 * 64);
        guard.reused(320, 320);
        assert_eq!(state.cached_blocks(&old), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn the_slot_wait_follows_reported_queues_and_answer_times() {
        let report = ReportCell::new();
        let state = PrefillState::default().with_report(report.clone());
        assert_eq!(
            state.slot_wait(Instant::now()),
            0.0,
            "no answer yet: no estimate"
        );
        // One answer of 100 ms teaches the mean answer time.
        let mut done = state.reserve(&prompt(1, 1), 64);
        tokio::time::advance(Duration::from_millis(100)).await;
        done.answer_end();
        drop(done);
        assert_eq!(state.stats().mean_answer, Duration::from_millis(100));
        // No report: the client's own waiting requests, each D ÷ in flight.
        let _a = state.reserve(&prompt(2, 1), 64);
        let mut b = state.reserve(&prompt(3, 1), 64);
        b.first_token(false);
        assert_eq!(state.slot_wait(Instant::now()), 100e6 / 2.0);
        // Four running, two queued: a slot frees every 25 ms, three to wait for.
        report.record(&Report {
            queue: Some(2),
            running: Some(4),
            ..Report::default()
        });
        assert_eq!(state.slot_wait(Instant::now()), 3.0 * 100e6 / 4.0);
        assert_eq!(state.stats().slots, 4);
        report.record(&Report {
            queue: Some(0),
            running: Some(3),
            ..Report::default()
        });
        assert_eq!(state.slot_wait(Instant::now()), 0.0, "nothing waits");
        report.record(&Report {
            queue: Some(0),
            running: Some(4),
            ..Report::default()
        });
        assert_eq!(state.slot_wait(Instant::now()), 0.0, "nothing waits");
        // Stale: the client's own counts again.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(state.slot_wait(Instant::now()), 100e6 / 2.0);
        assert_eq!(state.stats().in_flight, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn known_slots_count_the_clients_own_requests_past_them() {
        let report = ReportCell::new();
        let config = PrefillConfig {
            slots: Some(2),
            ..PrefillConfig::default()
        };
        let state = PrefillState::new(config).with_report(report.clone());
        // Before any answer: full slots count 1 s an answer.
        let full: Vec<_> = (10..12).map(|k| state.reserve(&prompt(k, 1), 64)).collect();
        assert_eq!(state.slot_wait(Instant::now()), 1e9 / 2.0);
        drop(full);
        assert_eq!(state.slot_wait(Instant::now()), 0.0);
        let mut done = state.reserve(&prompt(1, 1), 64);
        tokio::time::advance(Duration::from_millis(100)).await;
        done.answer_end();
        drop(done);
        // Two of ours running there and a report of an empty queue: a third
        // waits for one of the two slots, one frees every 50 ms.
        let mut a = state.reserve(&prompt(2, 1), 64);
        a.first_token(false);
        assert_eq!(state.slot_wait(Instant::now()), 0.0, "a free slot");
        let mut b = state.reserve(&prompt(3, 1), 64);
        b.first_token(false);
        report.record(&Report {
            queue: Some(0),
            running: Some(2),
            ..Report::default()
        });
        assert_eq!(state.slot_wait(Instant::now()), 100e6 / 2.0);
        let _c = state.reserve(&prompt(4, 1), 64);
        assert_eq!(state.slot_wait(Instant::now()), 2.0 * 100e6 / 2.0);
        // A reported queue that says more wins.
        report.record(&Report {
            queue: Some(5),
            running: Some(2),
            ..Report::default()
        });
        assert_eq!(state.slot_wait(Instant::now()), 6.0 * 100e6 / 2.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reported_queue_that_answers_disprove_is_not_believed() {
        let report = ReportCell::new();
        let state = PrefillState::default().with_report(report.clone());
        let mut done = state.reserve(&prompt(1, 1), 64);
        tokio::time::advance(Duration::from_millis(100)).await;
        done.answer_end();
        drop(done);
        // Nine waiting behind eight running, and nothing of ours there: a
        // slot in 125 ms, by the report.
        let lying = Report {
            queue: Some(9),
            running: Some(8),
            ..Report::default()
        };
        report.record(&lying);
        let claimed = 10.0 * 100e6 / 8.0;
        assert_eq!(state.slot_wait(Instant::now()), claimed);
        assert!(!report.contradicted(9, Some(8), 0));
        // A request sent now gets its first token after 5 ms.
        let mut quick = state.reserve(&prompt(2, 1), 64);
        tokio::time::advance(Duration::from_millis(5)).await;
        quick.first_token(true);
        drop(quick);
        report.record(&lying);
        assert!(report.contradicted(9, Some(8), 0), "answers disproved it");
        assert_eq!(state.slot_wait(Instant::now()), 0.0);
        // Believed while this client has requests there (they may be the
        // queue), and again once a request does wait.
        assert!(!report.contradicted(9, Some(8), 1));
        let mut slow = state.reserve(&prompt(3, 1), 64);
        tokio::time::advance(Duration::from_millis(200)).await;
        slow.first_token(true);
        drop(slow);
        report.record(&lying);
        assert!(!report.contradicted(9, Some(8), 0), "a request waited");
    }

    #[test]
    fn bad_settings_fall_back() {
        let state = PrefillState::new(PrefillConfig {
            block_bytes: 0,
            bytes_per_token: f64::NAN,
            index_blocks: 0,
            ..PrefillConfig::default()
        });
        let config = state.config();
        assert_eq!((config.block_bytes, config.bytes_per_token), (1, 4.0));
        assert!(state.index_bytes() > 0);
        assert_eq!(state.uncached_tokens(&[], 0), 0.0);
    }
}
