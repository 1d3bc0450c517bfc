//! The AI case: a fleet of emulated model servers, the same seeded prompts
//! through round robin, least connections and the LLM default (least
//! predicted time to first token), TTFT and the fleet's cache hit rate.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceExt};
use tower_lb::discover::StaticList;
use tower_lb::endpoint::{PrefillState, Weighted};
use tower_lb::http::SetAuthority;
use tower_lb::load::{InFlight, Prefill};
use tower_lb::pick::llm::{BlockConfig, PromptBlocks, Scored};
use tower_lb::pick::{LeastConnections, Pick, RoundRobin};
use tower_lb::{Balance, BoxError};

use crate::model_server::{ModelServer, Settings, MODEL};

const SERVERS: usize = 4;
const SETTINGS: Settings = Settings {
    cache_pages: 640,
    batch: 4,
    prefill_base: Duration::from_millis(2),
    prefill_per_token: Duration::from_micros(20),
    answer_tokens: 8,
    decode_per_token: Duration::from_millis(2),
};
/// Shared documents (system prompts, files a chat is about) and their size.
const DOCUMENTS: usize = 16;
const DOCUMENT_BYTES: usize = 8192;
/// Each request's own question after its document.
const QUESTION_BYTES: usize = 256;
const REQUESTS: usize = 480;
const CALLERS: usize = 12;
const SEED: u64 = 7;

type HttpClient = Client<HttpConnector, Full<Bytes>>;
/// A model server as the balancer holds it: counted in flight, its queued
/// prefill and cache recorded for the TTFT cost model.
type Endpoint = Weighted<InFlight<Prefill<SetAuthority<HttpClient>>>>;

/// Runs the three pickers over fresh fleets and prints a table.
pub(crate) async fn compare() -> Result<(), BoxError> {
    let prompts = prompts();
    println!(
        "\n{REQUESTS} prompts from {CALLERS} callers per picker (seed {SEED}), each one of \
         {DOCUMENTS} shared {}-token documents and its own question;",
        DOCUMENT_BYTES / 4
    );
    println!(
        "{SERVERS} emulated model servers: batch {}, prefix cache {} tokens, prefill {:?} + {:?} \
         an uncached token, {} tokens {:?} apart\n",
        SETTINGS.batch,
        SETTINGS.cache_pages * 16,
        SETTINGS.prefill_base,
        SETTINGS.prefill_per_token,
        SETTINGS.answer_tokens,
        SETTINGS.decode_per_token,
    );
    println!(
        "{:<32} {:>10} {:>10} {:>11}",
        "picker", "TTFT p50", "TTFT p99", "cache hits"
    );
    run("round robin", RoundRobin::new(), &prompts).await?;
    run("least connections", LeastConnections::new(), &prompts).await?;
    run("least predicted TTFT (default)", Scored::ttft(), &prompts).await?;
    Ok(())
}

/// One picker over a fresh fleet (empty caches, nothing learnt).
async fn run<P>(name: &str, picker: P, prompts: &[Bytes]) -> Result<(), BoxError>
where
    P: Pick<Request<Full<Bytes>>, Endpoint>,
{
    let mut servers = Vec::new();
    for _ in 0..SERVERS {
        servers.push(ModelServer::start(SETTINGS).await?);
    }
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let endpoints = servers.iter().map(|server| {
        let state = PrefillState::default();
        let target = SetAuthority::from_addr(client.clone(), server.addr);
        let service = InFlight::new(Prefill::new(target, state.clone()));
        (server.addr, Weighted::new(service, 1).with_prefill(state))
    });
    let balance = Balance::new(StaticList::from_weighted(endpoints), picker);
    balance.wait_for(|keys| keys.len() == SERVERS).await;

    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let balance = balance.clone();
        let mine: Vec<Bytes> = prompts
            .iter()
            .skip(caller)
            .step_by(CALLERS)
            .cloned()
            .collect();
        callers.push(tokio::spawn(async move {
            let mut ttfts = Vec::with_capacity(mine.len());
            for prompt in mine {
                ttfts.push(one_prompt(balance.clone(), prompt).await?);
            }
            Ok::<_, BoxError>(ttfts)
        }));
    }
    let mut ttfts = Vec::with_capacity(REQUESTS);
    for caller in callers {
        ttfts.extend(caller.await??);
    }
    ttfts.sort_unstable();
    let quantile = |q: f64| ttfts[((ttfts.len() - 1) as f64 * q) as usize];
    let (prompt, cached) = servers
        .iter()
        .map(ModelServer::tokens)
        .fold((0, 0), |(p, c), (sp, sc)| (p + sp, c + sc));
    println!(
        "{name:<32} {:>10.1?} {:>10.1?} {:>10.1}%",
        quantile(0.50),
        quantile(0.99),
        100.0 * cached as f64 / prompt.max(1) as f64,
    );
    Ok(())
}

/// Sends one prompt and reads the answer to its end; returns the time to
/// its first token.
async fn one_prompt<S, B>(mut balance: S, prompt: Bytes) -> Result<Duration, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>, Error = BoxError>,
    B: http_body::Body + Unpin,
    B::Error: Into<BoxError>,
{
    // The prompt's page hashes, which `Prefill` and `Scored::ttft` read (with
    // the `llm` feature, `http::AddRequestInfoLayer` adds them from an
    // OpenAI-style JSON body).
    let blocks = PromptBlocks::hash(BlockConfig::default(), MODEL, [&prompt]);
    let mut request = Request::post("/v1/completions").body(Full::new(prompt))?;
    request.extensions_mut().insert(blocks);

    let start = Instant::now();
    let mut body = balance.ready().await?.call(request).await?.into_body();
    let mut ttft = None;
    while let Some(frame) = body.frame().await {
        if frame.map_err(Into::into)?.is_data() && ttft.is_none() {
            ttft = Some(start.elapsed());
        }
    }
    ttft.ok_or_else(|| "an answer without tokens".into())
}

/// The seeded prompts: a document, then a question of the request's own.
fn prompts() -> Vec<Bytes> {
    let mut rng = SplitMix(SEED);
    let mut text = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| b"abcdefghijklmnopqrstuvwxyz "[(rng.next() % 27) as usize])
            .collect()
    };
    let documents: Vec<Vec<u8>> = (0..DOCUMENTS).map(|_| text(DOCUMENT_BYTES)).collect();
    let mut choose = SplitMix(SEED ^ 0x5eed);
    (0..REQUESTS)
        .map(|_| {
            let mut prompt = documents[(choose.next() % DOCUMENTS as u64) as usize].clone();
            prompt.extend(text(QUESTION_BYTES));
            Bytes::from(prompt)
        })
        .collect()
}

/// A small seeded generator (SplitMix64), enough for a workload.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
