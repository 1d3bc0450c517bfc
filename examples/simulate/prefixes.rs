//! Scenario "shared prefixes": chats whose prompts share system prompts and
//! grow turn by turn, on endpoints that each cache the prompts they have
//! read. Where a request goes decides how much of its prompt must be read
//! again.
//!
//! The model, kept small on purpose:
//!
//! * **Conversations.** [`SESSIONS`] conversations run at once. Each opens
//!   with one of [`SYSTEM_PROMPTS`] system prompts, chosen by a Zipf law
//!   (exponent 1: the first is eight times as popular as the eighth), and
//!   lasts 1 to [`MAX_TURNS`] turns; a finished one is replaced by a new
//!   one. A turn's prompt is the whole history so far (system prompt, each
//!   user message and each answer) and a new user message. Turns of all
//!   conversations arrive as one Poisson stream, a conversation's turns in
//!   order; the workload is drawn once, so every picker gets the same.
//! * **Candidates.** [`ENDPOINTS`] endpoints with [`BATCH`] slots each and a
//!   FIFO queue. Each caches [`CACHE_TOKENS`] tokens of prompts in blocks of
//!   [`BLOCK_TOKENS`], least recently used evicted first; a block is named
//!   by its place in one conversation (or in a system prompt), so it
//!   matches only with everything before it, as a paged KV cache's does.
//! * **Cost.** Prefill reads the uncached tokens at [`PREFILL_NS`] each;
//!   the first token follows; decode takes [`DECODE_NS`] a token. A
//!   request's cache hit is decided when it is dispatched and its prompt
//!   and answer are cached at once (the next turn of a conversation comes
//!   long after its answer ends, so only concurrent requests sharing a
//!   system prompt are treated a little better than a real server would).
//! * **The ideal** knows every cache, queue and cost, and sends each
//!   request where it would finish first.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use tower::load::Load;
use tower_lb::endpoint::{
    ClientLoad, Endpoint, PrefillConfig, PrefillGuard, PrefillState, Report, ReportCell,
};
use tower_lb::pick::{
    llm::{
        PrefixAffinity, PrefixConfig, PromptBlocks, PromptRequest, RequestInfoRef, Scored,
        ScoredRequest, Weights,
    },
    Candidates, ConsistentHash, EndpointInfo, LeastConnections, P2c, Pick, Prepare, RoundRobin,
};

use crate::report::{duration, percentile};
use crate::rng::{mix, Rng};

/// The scenario's letter.
pub(crate) const ID: char = 'g';

/// Endpoints in the fleet.
pub(crate) const ENDPOINTS: usize = 8;
/// Requests an endpoint runs at once.
pub(crate) const BATCH: usize = 8;
/// Each endpoint's prefix cache, in tokens.
pub(crate) const CACHE_TOKENS: usize = 32_768;
/// Tokens in a cache block.
pub(crate) const BLOCK_TOKENS: usize = 16;
/// Conversations under way at any time.
pub(crate) const SESSIONS: usize = 1024;
/// Distinct system prompts.
pub(crate) const SYSTEM_PROMPTS: usize = 8;
/// Tokens in a system prompt (about 2,000 characters).
pub(crate) const SYSTEM_TOKENS: usize = 512;
/// Turns in a conversation at most.
pub(crate) const MAX_TURNS: u64 = 8;
/// Prefill time per uncached prompt token, ns.
pub(crate) const PREFILL_NS: u64 = 100_000;
/// Decode time per answer token, ns.
pub(crate) const DECODE_NS: u64 = 5_000_000;
/// Offered load, as a share of the fleet's capacity when nothing is cached.
pub(crate) const LOAD: f64 = 0.75;
/// Requests in a run at most: the caches make each one dearer to simulate.
pub(crate) const MAX_REQUESTS: usize = 200_000;

/// One turn of one conversation.
#[derive(Clone, Debug)]
pub(crate) struct Turn {
    pub(crate) id: u32,
    pub(crate) arrival: u64,
    /// The conversation's key (a hash): the session of session affinity.
    pub(crate) session: u64,
    /// The prompt's blocks, each named by a chained hash.
    pub(crate) blocks: PromptBlocks,
    /// Blocks of the prompt and the answer, cached once it is served.
    pub(crate) cached_after: Vec<u64>,
    /// Prompt tokens.
    pub(crate) prompt_tokens: u32,
    /// Answer tokens.
    pub(crate) answer_tokens: u32,
}

struct Conversation {
    session: u64,
    system: usize,
    /// Tokens of history (after the system prompt).
    history: usize,
    turns_left: u64,
}

/// Blocks of a prompt: the system prompt's, then the conversation's own.
fn blocks(conversation: &Conversation, tokens: usize) -> Vec<u64> {
    let system_blocks = SYSTEM_TOKENS / BLOCK_TOKENS;
    (0..tokens / BLOCK_TOKENS)
        .map(|b| {
            if b < system_blocks {
                mix(((conversation.system as u64 + 1) << 32) | b as u64)
            } else {
                mix(conversation.session ^ mix(b as u64))
            }
        })
        .collect()
}

/// The same turns for every picker.
pub(crate) fn workload(requests: usize, seed: u64) -> Vec<Turn> {
    let requests = requests.min(MAX_REQUESTS);
    let stream = |purpose: u64| Rng::stream(seed, (u64::from(b'p') << 8) | purpose);
    let (mut draws, mut gaps, mut picks) = (stream(0), stream(1), stream(2));
    // Zipf weights 1/k; the cumulative table draws a system prompt.
    let harmonic: Vec<f64> = (1..=SYSTEM_PROMPTS)
        .scan(0.0, |sum, k| {
            *sum += 1.0 / k as f64;
            Some(*sum)
        })
        .collect();
    let mut next_session = 0u64;
    let mut open = |draws: &mut Rng| {
        next_session += 1;
        let u = draws.unit() * harmonic[SYSTEM_PROMPTS - 1];
        Conversation {
            session: mix(next_session ^ 0xC0FFEE),
            system: harmonic.iter().position(|&c| u < c).unwrap_or(0),
            history: 0,
            turns_left: 1 + draws.below(MAX_TURNS),
        }
    };
    let mut conversations: Vec<Conversation> = (0..SESSIONS).map(|_| open(&mut draws)).collect();
    let mut turns = Vec::with_capacity(requests);
    for id in 0..requests {
        let k = picks.below(SESSIONS as u64) as usize;
        let c = &mut conversations[k];
        let user = draws.lognormal(64.0, 0.8).ceil().min(1024.0) as usize;
        let answer = draws.lognormal(64.0, 0.8).ceil().min(512.0) as usize;
        let prompt = SYSTEM_TOKENS + c.history + user;
        let blocks_now = blocks(c, prompt);
        let blocks_after = blocks(c, prompt + answer);
        turns.push(Turn {
            id: id as u32,
            arrival: 0,
            session: c.session,
            blocks: PromptBlocks::from_hashes(blocks_now)
                .with_prompt_bytes((prompt * BYTES_PER_TOKEN) as u64),
            cached_after: blocks_after,
            prompt_tokens: prompt as u32,
            answer_tokens: answer as u32,
        });
        c.history += user + answer;
        c.turns_left -= 1;
        if c.turns_left == 0 {
            *c = open(&mut draws);
        }
    }
    // Arrivals at LOAD of what the fleet serves when nothing is cached.
    let mean_cost = turns
        .iter()
        .map(|t| {
            (u64::from(t.prompt_tokens) * PREFILL_NS + u64::from(t.answer_tokens) * DECODE_NS)
                as f64
        })
        .sum::<f64>()
        / turns.len().max(1) as f64;
    let capacity = (ENDPOINTS * BATCH) as f64 / mean_cost;
    let mean_gap = 1.0 / (LOAD * capacity);
    let mut now = 0.0;
    for turn in &mut turns {
        now += gaps.exponential(mean_gap);
        turn.arrival = now as u64;
    }
    turns
}

/// One endpoint's prefix cache: blocks, least recently used evicted first.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    used: HashMap<u64, u64>,
    order: BTreeMap<u64, u64>,
    tick: u64,
}

impl Cache {
    /// Leading blocks of `blocks` held, without touching them.
    pub(crate) fn peek(&self, blocks: &[u64]) -> usize {
        blocks
            .iter()
            .take_while(|b| self.used.contains_key(b))
            .count()
    }

    fn insert(&mut self, blocks: &[u64]) {
        for &b in blocks {
            self.tick += 1;
            if let Some(old) = self.used.insert(b, self.tick) {
                self.order.remove(&old);
            }
            self.order.insert(self.tick, b);
        }
        while self.used.len() > CACHE_TOKENS / BLOCK_TOKENS {
            let Some((_, b)) = self.order.pop_first() else {
                break;
            };
            self.used.remove(&b);
        }
    }
}

/// Prompt bytes a token stands for, as the cost model converts them.
const BYTES_PER_TOKEN: usize = 4;

/// A request sent to a server and not yet at its first token: what the
/// cost model holds for it, and what the server will say when it comes.
#[derive(Debug)]
struct Pending {
    first: u64,
    end: u64,
    sent: u64,
    first_done: bool,
    guard: PrefillGuard,
    cached_tokens: u64,
    prompt_tokens: u64,
}

/// One endpoint as the simulation runs it and the pickers see it.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) cache: Cache,
    /// When each slot is free next.
    free_at: Vec<u64>,
    /// End times of the requests sent here and not finished.
    ends: BinaryHeap<Reverse<u64>>,
    /// What the client knows of this server's prefill, for the TTFT
    /// picker; fed as `load::Prefill` feeds it, on virtual time.
    prefill: PrefillState,
    /// What the server says of its batch (running, waiting), fresh at
    /// every arrival, as a server polled often would say it.
    report: ReportCell,
    pending: Vec<Pending>,
}

impl Server {
    fn new() -> Self {
        let report = ReportCell::new();
        Self {
            report: report.clone(),
            cache: Cache::default(),
            free_at: vec![0; BATCH],
            ends: BinaryHeap::new(),
            prefill: PrefillState::new(PrefillConfig {
                block_bytes: BLOCK_TOKENS * BYTES_PER_TOKEN,
                bytes_per_token: BYTES_PER_TOKEN as f64,
                ..PrefillConfig::default()
            })
            .with_report(report),
            pending: Vec::new(),
        }
    }

    /// Tells the cost model of the first tokens and the answer ends that
    /// have come by `now`, as `load::Prefill` does as bodies stream.
    fn first_tokens(&mut self, now: u64) {
        let mut k = 0;
        while k < self.pending.len() {
            let p = &mut self.pending[k];
            if !p.first_done && p.first <= now {
                p.first_done = true;
                p.guard.reused(p.cached_tokens, p.prompt_tokens);
                p.guard
                    .first_token_after(std::time::Duration::from_nanos(p.first - p.sent));
            }
            if p.end <= now {
                let mut p = self.pending.swap_remove(k);
                p.guard
                    .answer_end_after(std::time::Duration::from_nanos(p.end - p.sent));
            } else {
                k += 1;
            }
        }
    }

    /// Requests in flight: what the balancer counts.
    pub(crate) fn in_flight(&self) -> usize {
        self.ends.len()
    }

    /// (start, first token, end) of `turn` if it were sent here at `now`.
    pub(crate) fn schedule(&self, turn: &Turn, now: u64) -> (u64, u64, u64) {
        let hit = (self.cache.peek(turn.blocks.hashes()) * BLOCK_TOKENS) as u64;
        let prefill =
            (u64::from(turn.prompt_tokens) - hit.min(u64::from(turn.prompt_tokens))) * PREFILL_NS;
        let start = now.max(self.free_at.iter().copied().min().unwrap_or(0));
        let first = start + prefill.max(1);
        (
            start,
            first,
            first + u64::from(turn.answer_tokens) * DECODE_NS,
        )
    }
}

/// Requests in flight, as the crate's `InFlight` counts them.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub(crate) struct Flight(u32);

impl From<Flight> for f64 {
    fn from(flight: Flight) -> f64 {
        f64::from(flight.0)
    }
}

impl ClientLoad for Flight {
    fn in_flight(&self) -> usize {
        self.0 as usize
    }
}

impl Load for Server {
    type Metric = Flight;

    fn load(&self) -> Flight {
        Flight(self.in_flight() as u32)
    }
}

impl Endpoint for Server {
    fn weight(&self) -> u32 {
        1
    }

    fn prefill(&self) -> Option<&PrefillState> {
        Some(&self.prefill)
    }
}

impl ScoredRequest for Turn {
    fn info(&self) -> RequestInfoRef<'_> {
        RequestInfoRef::default()
    }

    fn prompt(&self) -> Option<&PromptBlocks> {
        Some(&self.blocks)
    }
}

impl PromptRequest for Turn {
    fn prompt_blocks(&self) -> Option<&PromptBlocks> {
        Some(&self.blocks)
    }
}

/// What one picker's run measured.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) picker: &'static str,
    pub(crate) ttft_p50: u64,
    pub(crate) ttft_p99: u64,
    pub(crate) e2e_p99: u64,
    /// Cached prompt tokens ÷ prompt tokens.
    pub(crate) hit_rate: f64,
    /// Answer tokens per second of virtual time.
    pub(crate) tokens_per_s: f64,
    /// The busiest endpoint's requests ÷ the mean.
    pub(crate) max_share: f64,
}

/// A picker over the simulated servers, with its table.
pub(crate) trait Policy {
    fn pick(&self, endpoints: &Candidates<'_, Server>, turn: &Turn, now: u64) -> Option<usize>;
}

struct Prepared<P: Prepare> {
    picker: P,
    table: P::Table,
}

impl<P: Pick<Turn, Server>> Policy for Prepared<P> {
    fn pick(&self, endpoints: &Candidates<'_, Server>, turn: &Turn, _now: u64) -> Option<usize> {
        self.picker.pick(&self.table, endpoints, turn)
    }
}

fn prepared<P: Pick<Turn, Server>>(picker: P, metas: &[EndpointInfo]) -> Box<dyn Policy> {
    let table = picker.prepare(metas);
    Box::new(Prepared { picker, table })
}

/// The scoring picker as `examples/llm_router` sets it by default (queue
/// 2, KV cache 2, prefix 3), less the KV scorer: the simulated servers
/// report nothing, so the queue scorer reads the client's requests in
/// flight, and a KV scorer would only count them twice.
fn scored(seed: u64, metas: &[EndpointInfo], prefix: Option<PrefixConfig>) -> Box<dyn Policy> {
    let weights = Weights {
        queue: 2.0,
        kv_cache: 0.0,
        in_flight: 0.0,
        ..Weights::default()
    };
    let picker = Scored::with_seed(seed).weights(weights);
    let picker = match prefix {
        Some(config) => Arc::new(PrefixAffinity::with_config(config)).install(picker, 3.0),
        None => picker,
    };
    // The table is `()`; preparing tells the prefix hook the endpoints.
    picker.prepare(metas);
    Box::new(Prepared { picker, table: () })
}

/// No gate: affinity whatever the load.
const NO_GATE: PrefixConfig = PrefixConfig {
    index_blocks: 31_250,
    balance_abs: usize::MAX,
    balance_rel: f64::INFINITY,
};

/// Sends each request where it would finish first, knowing every cache.
struct Ideal;

impl Policy for Ideal {
    fn pick(&self, endpoints: &Candidates<'_, Server>, turn: &Turn, now: u64) -> Option<usize> {
        let n = endpoints.len();
        let start = turn.id as usize % n.max(1);
        (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| endpoints.services()[i].schedule(turn, now).2)
    }
}

fn session_key(turn: &Turn) -> Option<u64> {
    Some(turn.session)
}

/// The pickers of this scenario: name and how to build one from a seed.
pub(crate) type Build = fn(u64, &[EndpointInfo]) -> Box<dyn Policy>;

/// The ideal first.
pub(crate) fn entries() -> Vec<(&'static str, Build)> {
    vec![
        ("ideal (knows every cache)", |_, _| Box::new(Ideal)),
        ("round robin", |_, m| prepared(RoundRobin::new(), m)),
        ("least connections", |s, m| {
            prepared(LeastConnections::with_seed(s), m)
        }),
        ("p2c (in flight)", |s, m| prepared(P2c::with_seed(s), m)),
        ("consistent hash (session)", |_, m| {
            prepared(ConsistentHash::new(session_key), m)
        }),
        ("scored (queue)", |s, m| scored(s, m, None)),
        ("scored + prefix, no gate", |s, m| {
            scored(s, m, Some(NO_GATE))
        }),
        ("scored + prefix + gate", |s, m| {
            scored(s, m, Some(PrefixConfig::default()))
        }),
        ("least predicted TTFT (LLM default)", |s, m| {
            let picker = Scored::with_seed(s).least_ttft();
            picker.prepare(m);
            Box::new(Prepared { picker, table: () })
        }),
    ]
}

/// Runs `turns` through a fresh fleet with `policy`.
pub(crate) fn run(
    name: &'static str,
    policy: &dyn Policy,
    turns: &[Turn],
    metas: &[EndpointInfo],
) -> Row {
    let mut servers: Vec<Server> = (0..ENDPOINTS).map(|_| Server::new()).collect();
    let mut ttft = Vec::with_capacity(turns.len());
    let mut e2e = Vec::with_capacity(turns.len());
    let mut sent = [0u64; ENDPOINTS];
    let (mut prompt, mut cached, mut answer, mut last) = (0u64, 0u64, 0u64, 0u64);
    for turn in turns {
        let now = turn.arrival;
        for server in servers.iter_mut() {
            while server.ends.peek().is_some_and(|Reverse(end)| *end <= now) {
                server.ends.pop();
            }
            server.first_tokens(now);
            let in_flight = server.in_flight() as u32;
            server.report.record(&Report {
                queue: Some(in_flight.saturating_sub(BATCH as u32)),
                running: Some(in_flight.min(BATCH as u32)),
                ..Report::default()
            });
        }
        let endpoints = Candidates::new(metas, &servers);
        let i = policy.pick(&endpoints, turn, now).unwrap_or(0);
        let server = &mut servers[i];
        let (_start, first, end) = server.schedule(turn, now);
        let hit = ((server.cache.peek(turn.blocks.hashes()) * BLOCK_TOKENS) as u64)
            .min(u64::from(turn.prompt_tokens));
        cached += hit;
        let guard = server
            .prefill
            .reserve(turn.blocks.hashes(), turn.blocks.prompt_bytes());
        server.pending.push(Pending {
            first,
            end,
            sent: now,
            first_done: false,
            guard,
            cached_tokens: hit,
            prompt_tokens: u64::from(turn.prompt_tokens),
        });
        prompt += u64::from(turn.prompt_tokens);
        answer += u64::from(turn.answer_tokens);
        // The request takes the slot that frees first, as `schedule` assumed.
        if let Some(slot) = (0..BATCH).min_by_key(|&k| server.free_at[k]) {
            server.free_at[slot] = end;
        }
        server.ends.push(Reverse(end));
        server.cache.insert(&turn.cached_after);
        sent[i] += 1;
        ttft.push(first - now);
        e2e.push(end - now);
        last = last.max(end);
    }
    ttft.sort_unstable();
    e2e.sort_unstable();
    let span = last
        .saturating_sub(turns.first().map_or(0, |t| t.arrival))
        .max(1);
    let mean = turns.len() as f64 / ENDPOINTS as f64;
    Row {
        picker: name,
        ttft_p50: percentile(&ttft, 0.50),
        ttft_p99: percentile(&ttft, 0.99),
        e2e_p99: percentile(&e2e, 0.99),
        hit_rate: cached as f64 / prompt.max(1) as f64,
        tokens_per_s: answer as f64 / (span as f64 / 1e9),
        max_share: sent.iter().copied().max().unwrap_or(0) as f64 / mean.max(1.0),
    }
}

/// Runs every picker and returns the table's Markdown.
pub(crate) fn compare(requests: usize, seed: u64, metas: &[EndpointInfo]) -> (String, String) {
    let turns = workload(requests, seed);
    let rows: Vec<Row> = entries()
        .into_iter()
        .enumerate()
        .map(|(k, (name, build))| {
            let policy = build(mix(seed ^ mix(0x70_0000 | k as u64)), metas);
            run(name, policy.as_ref(), &turns, metas)
        })
        .collect();
    let describe = format!(
        "{ENDPOINTS} endpoints × {BATCH} slots, each caching {CACHE_TOKENS} prompt tokens \
         (LRU, blocks of {BLOCK_TOKENS}); {SESSIONS} conversations at once over \
         {SYSTEM_PROMPTS} Zipf-popular system prompts of {SYSTEM_TOKENS} tokens, 1–{MAX_TURNS} \
         turns, user messages and answers lognormal (median 64 tokens); prefill {} µs per \
         uncached token, decode {} ms per token; Poisson arrivals at {:.0}% of the capacity \
         with nothing cached; {} requests",
        PREFILL_NS / 1000,
        DECODE_NS / 1_000_000,
        LOAD * 100.0,
        turns.len(),
    );
    let mut table = String::from(
        "| picker | TTFT p50 | TTFT p99 | end-to-end p99 | hit rate | tokens/s | busiest ÷ mean |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in &rows {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {:.1}% | {:.0} | {:.2} |",
            row.picker,
            duration(row.ttft_p50),
            duration(row.ttft_p99),
            duration(row.e2e_p99),
            row.hit_rate * 100.0,
            row.tokens_per_s,
            row.max_share,
        );
    }
    (describe, table)
}
