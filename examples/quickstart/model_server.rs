//! A small emulated model server: no weights, only the timing that makes
//! routing matter.
//!
//! * **A prefix cache**: the prompt is cut into pages of 64 bytes
//!   (16 tokens at 4 bytes a token); a page is reused when the server holds
//!   it and every page before it, and the least recently used pages are
//!   evicted beyond the capacity.
//! * **A batch limit**: a request holds one of a few slots from its prefill
//!   to its last token; the others wait in line.
//! * **Prefill**: a fixed cost plus a cost per *uncached* prompt token.
//! * **Streamed tokens**: server-sent events, one token apart, then the
//!   OpenAI `usage` with `prompt_tokens_details.cached_tokens`, which the
//!   client's `Prefill` wrapper reads to correct what it believes the
//!   server holds.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::Response;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tower_lb::pick::llm::{BlockConfig, PromptBlocks};
use tower_lb::BoxError;

/// The model every request names; the page hashes are seeded with it.
pub(crate) const MODEL: &str = "emulated";
/// Prompt bytes a token stands for (the client's `PrefillState` assumes 4).
const BYTES_PER_TOKEN: u64 = 4;
/// Tokens in a cache page of 64 bytes.
const TOKENS_PER_PAGE: u64 = 16;

/// How one server behaves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// Pages its prefix cache holds.
    pub(crate) cache_pages: usize,
    /// Requests it runs at once (the batch limit).
    pub(crate) batch: usize,
    /// Prefill time before any token, cached or not.
    pub(crate) prefill_base: Duration,
    /// Prefill time per uncached prompt token.
    pub(crate) prefill_per_token: Duration,
    /// Tokens in each answer.
    pub(crate) answer_tokens: usize,
    /// Time between two streamed tokens.
    pub(crate) decode_per_token: Duration,
}

/// A running server: its address, what its cache saved, and its task.
#[derive(Debug)]
pub(crate) struct ModelServer {
    pub(crate) addr: SocketAddr,
    state: Arc<Shared>,
    task: JoinHandle<()>,
}

impl ModelServer {
    /// Starts a server on an ephemeral loopback port, its cache empty.
    pub(crate) async fn start(settings: Settings) -> Result<Self, BoxError> {
        let state = Arc::new(Shared {
            settings,
            cache: Mutex::new(Cache::new(settings.cache_pages)),
            slots: Arc::new(Semaphore::new(settings.batch)),
            prompt_tokens: AtomicU64::new(0),
            cached_tokens: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/v1/completions", post(complete))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    /// Prompt tokens received and, of them, those found in the cache.
    pub(crate) fn tokens(&self) -> (u64, u64) {
        (
            self.state.prompt_tokens.load(Relaxed),
            self.state.cached_tokens.load(Relaxed),
        )
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct Shared {
    settings: Settings,
    cache: Mutex<Cache>,
    slots: Arc<Semaphore>,
    prompt_tokens: AtomicU64,
    cached_tokens: AtomicU64,
}

/// `POST /v1/completions` with the prompt as the body: waits for a batch
/// slot, prefills what the cache lacks, streams the answer.
async fn complete(State(server): State<Arc<Shared>>, prompt: Bytes) -> Response<Body> {
    let settings = server.settings;
    let slot = server.slots.clone().acquire_owned().await;
    let pages = PromptBlocks::hash(BlockConfig::default(), MODEL, [&prompt]);
    let tokens = prompt.len() as u64 / BYTES_PER_TOKEN;
    let cached = {
        let cache = server.cache.lock().expect("never poisoned");
        (cache.prefix(pages.hashes()) as u64 * TOKENS_PER_PAGE).min(tokens)
    };
    server.prompt_tokens.fetch_add(tokens, Relaxed);
    server.cached_tokens.fetch_add(cached, Relaxed);
    let uncached = u32::try_from(tokens - cached).unwrap_or(u32::MAX);
    tokio::time::sleep(settings.prefill_base + settings.prefill_per_token * uncached).await;
    // Only a finished prefill leaves its pages in the cache.
    server
        .cache
        .lock()
        .expect("never poisoned")
        .touch(pages.hashes());

    let usage = format!(
        "data: {{\"usage\":{{\"prompt_tokens\":{tokens},\
         \"prompt_tokens_details\":{{\"cached_tokens\":{cached}}}}}}}\n\n"
    );
    let mut events: Vec<Bytes> = (0..settings.answer_tokens)
        .map(|_| Bytes::from_static(b"data: {\"choices\":[{\"text\":\" tok\"}]}\n\n"))
        .collect();
    events.push(Bytes::from(usage));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    // The slot travels with the stream: the batch is full until the last
    // token is out.
    let stream = futures_util::stream::unfold(
        (events.into_iter().enumerate(), slot),
        move |(mut events, slot)| async move {
            let (i, event) = events.next()?;
            if i > 0 && i < settings.answer_tokens {
                tokio::time::sleep(settings.decode_per_token).await;
            }
            Some((Ok::<_, Infallible>(event), (events, slot)))
        },
    );
    Response::builder()
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .expect("a valid response")
}

/// The prefix cache: pages by hash with a last-use stamp, least recently
/// used evicted first.
#[derive(Debug)]
struct Cache {
    capacity: usize,
    clock: u64,
    stamps: HashMap<u64, u64>,
    by_age: BTreeMap<u64, u64>,
}

impl Cache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            clock: 0,
            stamps: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    /// How many leading pages the cache holds.
    fn prefix(&self, pages: &[u64]) -> usize {
        pages
            .iter()
            .take_while(|page| self.stamps.contains_key(page))
            .count()
    }

    /// Marks `pages` as just used, last page first, so that a prompt's
    /// tail is evicted before its head (as a radix cache evicts leaves).
    fn touch(&mut self, pages: &[u64]) {
        for &page in pages.iter().rev() {
            self.clock += 1;
            if let Some(old) = self.stamps.insert(page, self.clock) {
                self.by_age.remove(&old);
            }
            self.by_age.insert(self.clock, page);
        }
        while self.stamps.len() > self.capacity {
            let Some((_, page)) = self.by_age.pop_first() else {
                break;
            };
            self.stamps.remove(&page);
        }
    }
}
