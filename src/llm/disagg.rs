//! Disaggregated serving: a prefill pool and a decode pool, a pair chosen
//! for each request, and the hand-over fields each protocol needs.
//!
//! ```no_run
//! use tower_lb::llm::{Builder, Disaggregation, PdProtocol, Router};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_lb::BoxError> {
//! let llm: Router = Builder::new()
//!     .prefill_server("http://10.0.0.1:30000", Some(8998))
//!     .prefill_server("http://10.0.0.2:30000", Some(8998))
//!     .decode_server("http://10.0.0.3:30000")
//!     .decode_server("http://10.0.0.4:30000")
//!     .disaggregation(Disaggregation::new(PdProtocol::Sglang).direct_below(256))
//!     .build()?;
//! let app: axum::Router = axum::Router::new().fallback_service(llm);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # How a request goes
//!
//! 1. **The decider.** A request whose prompt is uncached on some decode
//!    server by fewer than [`Disaggregation::direct_below`] tokens (as the
//!    router's prefix index sees it) goes whole to the decode pool, by the
//!    router's picker ([`Scored::ttft`](crate::pick::llm::Scored::ttft) by
//!    default) with the router's retries: handing its KV over would cost
//!    more than prefilling it there. So does a body that is not JSON.
//! 2. **The prefill server** is chosen by the prefill pool's picker
//!    (`Scored::ttft`: uncached tokens, prefill already queued there,
//!    prefix affinity); **the decode server** by decode load: requests in
//!    flight or running as it reports them, its queue, and its KV cache
//!    use. A server of role [`Role::Both`] is in both pools; when one
//!    server is chosen for both legs it gets the request whole.
//! 3. **The legs.**
//!    * [`PdProtocol::Sglang`]: `bootstrap_host`, `bootstrap_port` (the
//!      prefill server's bootstrap port, `null` when unknown) and
//!      `bootstrap_room` (a random 63-bit number) are added to the body,
//!      which goes to both servers at once. The client gets the decode
//!      server's answer once the prefill server's answer head says it
//!      succeeded; the prefill answer's body is read and dropped.
//!    * [`PdProtocol::Vllm`]: the prefill server gets the request with
//!      `max_tokens` 1, not streamed, and `kv_transfer_params`
//!      `{"do_remote_decode": true, "do_remote_prefill": false, ...}`; its
//!      answer's `kv_transfer_params` go into the original request, which
//!      goes to the decode server.
//! 4. **Failures.** A leg that fails (no answer within the attempt
//!    timeout, a connection error, a 5xx or 429 answer, a vLLM prefill
//!    answer without `kv_transfer_params`) is retried with a new pair, on a
//!    server of that leg not tried yet, up to [`Disaggregation::attempts`]
//!    pairs in all; nothing reaches the client before the pair that
//!    answers. A 4xx answer is the client's and is passed on. Each leg is
//!    its server's request as far as health, outlier detection, in-flight
//!    counts and the TTFT model are concerned. When every attempt failed,
//!    the client gets a [`PdError`] as a 502 (504 when the last failure
//!    was a timeout).
//!
//! [`Router::disaggregation`](super::Router::disaggregation) gives the
//! figures: requests sent each way, failed legs, and the pairs chosen.
//!
//! # Limits
//!
//! * A batch request (a list of prompts, or `n` above 1) gets one room,
//!   as one prompt does; SGLang's own router sends one room a prompt.
//! * Attempts are bounded by [`Disaggregation::attempts`], not by the
//!   router's retry budget.
//! * Roles come from the builder (and the command line); servers found by
//!   [`Builder::discover`](super::Builder::discover) are decode servers.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{self, Either as Race};
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full};
use serde_json::{json, Value};
use tower::discover::Change;
use tower::load::Load;
use tower::ServiceExt;

use super::router::{Core, Lb, Server};
use super::{Endpoint, RequestBody, ResponseBody, UpstreamBody};
use crate::balance::TriedEndpoints;
use crate::endpoint::Endpoint as _;
use crate::error::{BoxError, NoEndpoints};
use crate::health::HealthRegistry;
use crate::http::source::AddrStream;
use crate::http::PromptBody;
use crate::pick::llm::PromptBlocks;
use crate::retry::ReplayBody;
use crate::util::rng::Rng;

/// A server's part in disaggregated serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Prefills prompts and hands their KV over to decode servers.
    Prefill,
    /// Takes KV from prefill servers and streams the answers; also serves
    /// requests whole that the decider sends straight to it.
    Decode,
    /// Either leg, and whole requests: in both pools.
    Both,
}

impl Role {
    /// `prefill`, `decode` or `both`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prefill => "prefill",
            Self::Decode => "decode",
            Self::Both => "both",
        }
    }
}

/// How the two servers of a request learn of each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PdProtocol {
    /// SGLang's: bootstrap host, port and room in both legs, sent at once.
    Sglang,
    /// vLLM's KV connector (NIXL): the prefill answer's
    /// `kv_transfer_params` go into the decode leg.
    Vllm,
}

impl PdProtocol {
    /// `sglang` or `vllm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sglang => "sglang",
            Self::Vllm => "vllm",
        }
    }
}

impl std::str::FromStr for PdProtocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "sglang" => Ok(Self::Sglang),
            "vllm" => Ok(Self::Vllm),
            other => Err(format!("unknown protocol {other:?} (sglang, vllm)")),
        }
    }
}

/// Disaggregated serving's settings, for
/// [`Builder::disaggregation`](super::Builder::disaggregation).
///
/// Defaults: the decider off (every request is disaggregated), 3 pairs
/// tried at most.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct Disaggregation {
    pub(crate) protocol: PdProtocol,
    pub(crate) direct_below: u32,
    pub(crate) attempts: u32,
}

impl Disaggregation {
    /// Disaggregated serving with `protocol`.
    pub fn new(protocol: PdProtocol) -> Self {
        Self {
            protocol,
            direct_below: 0,
            attempts: 3,
        }
    }

    /// The decider: a request with fewer uncached prompt tokens than this
    /// on some decode server goes whole to the decode pool (0, the
    /// default: never).
    pub fn direct_below(mut self, tokens: u32) -> Self {
        self.direct_below = tokens;
        self
    }

    /// Pairs tried for one request before it fails (3 by default; at
    /// least 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }
}

/// Why a disaggregated request failed; the client gets it as a 502, or a
/// 504 when the last failure was a timeout.
#[derive(Debug)]
#[non_exhaustive]
pub enum PdError {
    /// Every prefill attempt failed; the text is the last failure.
    Prefill {
        /// Pairs tried.
        attempts: u32,
        /// The last prefill server tried.
        server: SocketAddr,
        /// What went wrong there.
        why: String,
        /// The last failure was a timeout.
        timed_out: bool,
    },
    /// Every decode attempt failed; the text is the last failure.
    Decode {
        /// Pairs tried.
        attempts: u32,
        /// The last decode server tried.
        server: SocketAddr,
        /// What went wrong there.
        why: String,
        /// The last failure was a timeout.
        timed_out: bool,
    },
    /// No decode server became available within the router's wait.
    NoDecodeServer,
}

impl PdError {
    /// Whether the last failure was a timeout.
    pub fn timed_out(&self) -> bool {
        match self {
            Self::Prefill { timed_out, .. } | Self::Decode { timed_out, .. } => *timed_out,
            Self::NoDecodeServer => false,
        }
    }

    /// The error's code in the answer: `prefill_failed`, `decode_failed`
    /// or `no_decode_server`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Prefill { .. } => "prefill_failed",
            Self::Decode { .. } => "decode_failed",
            Self::NoDecodeServer => "no_decode_server",
        }
    }
}

impl fmt::Display for PdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Prefill {
                attempts,
                server,
                why,
                ..
            } => write!(
                f,
                "the prefill leg failed on {attempts} pair(s); last, on {server}: {why}"
            ),
            Self::Decode {
                attempts,
                server,
                why,
                ..
            } => write!(
                f,
                "the decode leg failed on {attempts} pair(s); last, on {server}: {why}"
            ),
            Self::NoDecodeServer => f.write_str("no decode server is available"),
        }
    }
}

impl std::error::Error for PdError {}

/// How many requests one pair of servers got.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PairCount {
    /// The prefill server.
    pub prefill: SocketAddr,
    /// The decode server.
    pub decode: SocketAddr,
    /// Requests sent to this pair (attempts that failed included).
    pub requests: u64,
}

/// Disaggregated serving's figures since the router started.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct PdStats {
    /// Requests sent to a prefill and a decode server.
    pub disaggregated: u64,
    /// Requests the decider sent whole to the decode pool.
    pub direct: u64,
    /// Requests whose pair was one server of role [`Role::Both`].
    pub same_server: u64,
    /// Prefill legs that failed (each retried while attempts remained).
    pub prefill_failures: u64,
    /// Decode legs that failed.
    pub decode_failures: u64,
    /// Requests that failed after every attempt.
    pub failed: u64,
    /// The pairs chosen, most used first (at most [`MAX_PAIRS`] pairs are
    /// counted).
    pub pairs: Vec<PairCount>,
}

/// Distinct pairs counted in [`PdStats::pairs`]; later new pairs are not.
pub const MAX_PAIRS: usize = 1024;

/// The limit on a vLLM prefill answer's body (one token and the transfer
/// parameters).
const MAX_PREFILL_ANSWER: usize = 1 << 20;

/// The prefill pool beside the router's decode pool, and what choosing a
/// pair needs.
pub(crate) struct Pd {
    /// The pools and settings the builder gave.
    pub(crate) parts: PdParts,
    rooms: Rng,
    turn: AtomicUsize,
    counts: Counts,
}

/// What the builder hands [`Pd::new`]: the pools and settings.
pub(crate) struct PdParts {
    pub(crate) prefill: Lb,
    pub(crate) decode: Lb,
    /// The decode pool with the router's retries, for requests sent whole.
    pub(crate) direct: Core,
    pub(crate) settings: Disaggregation,
    /// Bootstrap ports of the prefill servers, given or announced.
    pub(crate) bootstrap: Ports,
    pub(crate) roles: HashMap<SocketAddr, Role>,
    pub(crate) attempt_timeout: Duration,
    pub(crate) wait: Duration,
    /// The prefill pool's servers (their pollers live here).
    pub(crate) servers: Arc<Mutex<Vec<Server>>>,
    pub(crate) health: HealthRegistry<SocketAddr>,
}

#[derive(Default)]
struct Counts {
    disaggregated: AtomicU64,
    direct: AtomicU64,
    same_server: AtomicU64,
    prefill_failures: AtomicU64,
    decode_failures: AtomicU64,
    failed: AtomicU64,
    pairs: Mutex<HashMap<(SocketAddr, SocketAddr), u64>>,
}

impl fmt::Debug for Pd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pd")
            .field("settings", &self.parts.settings)
            .field("bootstrap", &self.parts.bootstrap)
            .finish_non_exhaustive()
    }
}

/// A leg's failure: what to tell, and whether it was a timeout.
struct Failed {
    why: String,
    timed_out: bool,
}

impl Failed {
    fn of(error: &BoxError) -> Self {
        let mut timed_out = false;
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&**error);
        while let Some(e) = next {
            timed_out |= e.is::<tower::timeout::error::Elapsed>();
            next = e.source();
        }
        Self {
            why: error.to_string(),
            timed_out,
        }
    }
}

/// What became of one leg's answer head.
enum Head {
    /// 2xx: the answer.
    Ok(Response<ResponseBody>),
    /// 4xx but 429: the client's fault, passed on as it is.
    Refused(Response<ResponseBody>),
    /// Worth another server.
    Failed(Failed),
}

fn judge<B>(result: Result<Response<B>, BoxError>) -> Head
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match result {
        Err(error) => Head::Failed(Failed::of(&error)),
        Ok(response) => {
            let status = response.status();
            let response = response.map(|b| b.map_err(boxed).boxed_unsync());
            if status.is_success() {
                Head::Ok(response)
            } else if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                Head::Refused(response)
            } else {
                Head::Failed(Failed {
                    why: format!("answered {status}"),
                    timed_out: false,
                })
            }
        }
    }
}

/// Bootstrap ports of the prefill servers, given or announced; shared with
/// the task that learns those of servers as they join.
pub(crate) type Ports = Arc<RwLock<HashMap<SocketAddr, u16>>>;

/// The prefill pool's changes, with each new server's bootstrap port asked
/// of it before it joins when none was given (SGLang's `/get_server_info`
/// announces it as `disaggregation_bootstrap_port`): a prefill server found
/// by discovery (a Kubernetes Service of prefill pods, an etcd prefix)
/// needs no port on the command line. A server that announces none within
/// 2 s joins without one (`bootstrap_port: null` in its legs).
pub(crate) fn learn_ports(changes: AddrStream, ports: Ports) -> AddrStream {
    // Up to 16 servers are asked at once, and the changes still come out in
    // their order: a fleet joining together waits about one answer (at
    // most 2 s), not one per server.
    Box::pin(changes.map(move |change| {
        let ports = Arc::clone(&ports);
        async move {
            if let Ok(Change::Insert(addr, _)) = &change {
                let known = ports
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(addr);
                if !known {
                    match announced_port(*addr).await {
                        Some(port) => {
                            tracing::info!(server = %addr, port, "bootstrap port announced");
                            ports
                                .write()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(*addr, port);
                        }
                        None => tracing::warn!(
                            server = %addr,
                            "no bootstrap port given or announced"
                        ),
                    }
                }
            }
            change
        }
    })
    .buffered(16))
}

/// The bootstrap port a server announces in `/get_server_info`, if it does
/// within 2 s.
async fn announced_port(addr: SocketAddr) -> Option<u16> {
    let ask = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        let request = Request::get("/get_server_info")
            .header(http::header::HOST, addr.to_string())
            .body(http_body_util::Empty::<Bytes>::new())?;
        let answer = sender.send_request(request).await?;
        let bytes = http_body_util::Limited::new(answer.into_body(), 64 * 1024)
            .collect()
            .await?
            .to_bytes();
        Ok::<_, BoxError>(serde_json::from_slice::<Value>(&bytes)?)
    };
    let info = tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .ok()?
        .ok()?;
    info["disaggregation_bootstrap_port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
}

impl Pd {
    pub(crate) fn new(parts: PdParts) -> Self {
        Self {
            parts,
            rooms: Rng::from_entropy(),
            turn: AtomicUsize::new(0),
            counts: Counts::default(),
        }
    }

    /// The role a server was given, else what its pools make it: in both,
    /// both; in the prefill pool alone, prefill; else decode (servers
    /// found by discovery have only their pool to say).
    pub(crate) fn role_of(&self, addr: &SocketAddr) -> Role {
        if let Some(&role) = self.parts.roles.get(addr) {
            return role;
        }
        let holds = |pool: &Lb| pool.read_endpoints(|keys, _| keys.contains(addr));
        match (holds(&self.parts.prefill), holds(&self.parts.decode)) {
            (true, true) => Role::Both,
            (true, false) => Role::Prefill,
            _ => Role::Decode,
        }
    }

    pub(crate) fn stats(&self) -> PdStats {
        let c = &self.counts;
        let mut pairs: Vec<PairCount> = c
            .pairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(&(prefill, decode), &requests)| PairCount {
                prefill,
                decode,
                requests,
            })
            .collect();
        pairs.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then(a.prefill.cmp(&b.prefill))
                .then(a.decode.cmp(&b.decode))
        });
        PdStats {
            disaggregated: c.disaggregated.load(Relaxed),
            direct: c.direct.load(Relaxed),
            same_server: c.same_server.load(Relaxed),
            prefill_failures: c.prefill_failures.load(Relaxed),
            decode_failures: c.decode_failures.load(Relaxed),
            failed: c.failed.load(Relaxed),
            pairs,
        }
    }

    fn count_pair(&self, prefill: SocketAddr, decode: SocketAddr) {
        let mut pairs = self.counts.pairs.lock().unwrap_or_else(|e| e.into_inner());
        let full = pairs.len() >= MAX_PAIRS;
        match pairs.get_mut(&(prefill, decode)) {
            Some(n) => *n += 1,
            None if !full => {
                pairs.insert((prefill, decode), 1);
            }
            None => {}
        }
    }

    /// Serves one request (after the queue let it in).
    pub(crate) async fn serve(
        self: Arc<Self>,
        request: Request<PromptBody<RequestBody>>,
    ) -> Result<Response<ResponseBody>, BoxError> {
        let (parts, body) = request.into_parts();
        let bytes = match body {
            Either::Left(full) => full.collect().await.map(|c| c.to_bytes()).ok(),
            Either::Right(body) => {
                // Not read as JSON: nothing to add hand-over fields to.
                self.counts.direct.fetch_add(1, Relaxed);
                let request = Request::from_parts(parts, Either::Right(body));
                return self.send_direct(request).await;
            }
        };
        let parsed = bytes
            .as_ref()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .filter(Value::is_object);
        let (Some(bytes), Some(json)) = (bytes.clone(), parsed) else {
            // Not a JSON object: passed on whole, as it came.
            self.counts.direct.fetch_add(1, Relaxed);
            let body = Full::new(bytes.unwrap_or_default());
            let request = Request::from_parts(parts, Either::Left(body));
            return self.send_direct(request).await;
        };
        if self.goes_direct(&parts) {
            self.counts.direct.fetch_add(1, Relaxed);
            tracing::debug!("prompt mostly cached on a decode server: sent whole");
            let request = Request::from_parts(parts, Either::Left(Full::new(bytes)));
            return self.send_direct(request).await;
        }
        self.counts.disaggregated.fetch_add(1, Relaxed);
        let result = self.pairs(&parts, &json).await;
        if result.is_err() {
            self.counts.failed.fetch_add(1, Relaxed);
        }
        result
    }

    async fn send_direct(
        &self,
        request: Request<PromptBody<RequestBody>>,
    ) -> Result<Response<ResponseBody>, BoxError> {
        let response = self.parts.direct.clone().oneshot(request).await?;
        Ok(response.map(|b| b.map_err(boxed).boxed_unsync()))
    }

    /// The decider: is the prompt's uncached part on some available decode
    /// server below the threshold?
    fn goes_direct(&self, parts: &http::request::Parts) -> bool {
        let threshold = f64::from(self.parts.settings.direct_below);
        if threshold <= 0.0 {
            return false;
        }
        let Some(blocks) = parts.extensions.get::<PromptBlocks>() else {
            return true;
        };
        self.parts.decode.read_endpoints(|_, services| {
            services
                .iter()
                .filter(|s| s.is_available())
                .filter_map(|s| s.prefill())
                .map(|p| p.uncached_tokens(blocks.hashes(), blocks.prompt_bytes()))
                .any(|uncached| uncached < threshold)
        })
    }

    /// Tries pairs until one answers, a server refuses the request, or
    /// the attempts run out.
    async fn pairs(
        &self,
        parts: &http::request::Parts,
        json: &Value,
    ) -> Result<Response<ResponseBody>, BoxError> {
        let tried_prefill = TriedEndpoints::new();
        let mut tried_decode: Vec<SocketAddr> = Vec::new();
        let mut last: Option<PdError> = None;
        let attempts = self.parts.settings.attempts;
        for attempt in 1..=attempts {
            let (prefill, prefill_service) = self.pick_prefill(parts, &tried_prefill).await?;
            let (decode, decode_service) = self.wait_decode(&tried_decode).await?;
            self.count_pair(prefill, decode);
            tracing::debug!(%prefill, %decode, attempt, "pair chosen");
            if prefill == decode {
                // One server of role both: it serves the request whole.
                self.counts.same_server.fetch_add(1, Relaxed);
                let body = Bytes::from(json.to_string());
                let request = leg_request(parts, body);
                match judge(decode_service.oneshot(request).await) {
                    Head::Ok(response) | Head::Refused(response) => return Ok(response),
                    Head::Failed(failed) => {
                        self.decode_failed(&mut last, attempt, decode, failed);
                        tried_decode.push(decode);
                        continue;
                    }
                }
            }
            let outcome = match self.parts.settings.protocol {
                PdProtocol::Sglang => {
                    self.sglang(parts, json, prefill, prefill_service, decode_service)
                        .await
                }
                PdProtocol::Vllm => {
                    self.vllm(parts, json, prefill, prefill_service, decode_service)
                        .await
                }
            };
            match outcome {
                Outcome::Answer(response) => return Ok(response),
                Outcome::Prefill(failed) => {
                    self.counts.prefill_failures.fetch_add(1, Relaxed);
                    tracing::warn!(%prefill, attempt, why = %failed.why, "prefill leg failed");
                    last = Some(PdError::Prefill {
                        attempts: attempt,
                        server: prefill,
                        why: failed.why,
                        timed_out: failed.timed_out,
                    });
                }
                Outcome::Decode(failed) => {
                    self.decode_failed(&mut last, attempt, decode, failed);
                    tried_decode.push(decode);
                }
            }
        }
        Err(last.unwrap_or(PdError::NoDecodeServer).into())
    }

    fn decode_failed(
        &self,
        last: &mut Option<PdError>,
        attempt: u32,
        server: SocketAddr,
        failed: Failed,
    ) {
        self.counts.decode_failures.fetch_add(1, Relaxed);
        tracing::warn!(%server, attempt, why = %failed.why, "decode leg failed");
        *last = Some(PdError::Decode {
            attempts: attempt,
            server,
            why: failed.why,
            timed_out: failed.timed_out,
        });
    }

    /// The prefill pool's pick, waiting up to the router's wait for a
    /// server.
    async fn pick_prefill(
        &self,
        parts: &http::request::Parts,
        tried: &TriedEndpoints,
    ) -> Result<(SocketAddr, Endpoint), BoxError> {
        let deadline = tokio::time::Instant::now() + self.parts.wait;
        loop {
            let change = self.parts.prefill.next_change();
            // The picker reads the request's prompt facts, not its body.
            let picked = {
                let probe = leg_request(parts, Bytes::new());
                self.parts.prefill.pick_endpoint(&probe, tried)?
            };
            if let Some(picked) = picked {
                return Ok(picked);
            }
            // A change between the pick and here is caught at the next
            // look, at most 50 ms on.
            let step = deadline.min(tokio::time::Instant::now() + Duration::from_millis(50));
            let _ = tokio::time::timeout_at(step, change).await;
            if tokio::time::Instant::now() >= deadline {
                return Err(NoEndpoints {
                    waited: self.parts.wait,
                    known: self.parts.prefill.len(),
                }
                .into());
            }
        }
    }

    /// [`pick_decode`](Self::pick_decode), waiting up to the router's wait
    /// for an available decode server.
    async fn wait_decode(&self, tried: &[SocketAddr]) -> Result<(SocketAddr, Endpoint), PdError> {
        let deadline = tokio::time::Instant::now() + self.parts.wait;
        loop {
            let change = self.parts.decode.next_change();
            if let Some(picked) = self.pick_decode(tried) {
                return Ok(picked);
            }
            // Health changes are not set changes: look again every 50 ms.
            let step = deadline.min(tokio::time::Instant::now() + Duration::from_millis(50));
            let _ = tokio::time::timeout_at(step, change).await;
            if tokio::time::Instant::now() >= deadline {
                return Err(PdError::NoDecodeServer);
            }
        }
    }

    /// The decode server with the least decode load, among the available
    /// ones not tried yet (or all available ones, once each was tried):
    /// the router's requests there, or the requests it reports running and
    /// queued if more, plus its KV cache use (0 to 1) times 4. Ties go
    /// round in turn.
    fn pick_decode(&self, tried: &[SocketAddr]) -> Option<(SocketAddr, Endpoint)> {
        let turn = self.turn.fetch_add(1, Relaxed);
        self.parts.decode.read_endpoints(|keys, services| {
            let n = keys.len();
            let mut best: Option<(f64, usize)> = None;
            for fresh_only in [true, false] {
                for k in 0..n {
                    let i = (turn + k) % n;
                    let service = &services[i];
                    if !service.is_available() || (fresh_only && tried.contains(&keys[i])) {
                        continue;
                    }
                    let load = decode_load(service);
                    if best.is_none_or(|(b, _)| load < b) {
                        best = Some((load, i));
                    }
                }
                if best.is_some() {
                    break;
                }
            }
            best.map(|(_, i)| (keys[i], services[i].clone()))
        })
    }

    /// SGLang: both legs at once with the same bootstrap fields; the
    /// decode answer goes to the client once the prefill head is good.
    async fn sglang(
        &self,
        parts: &http::request::Parts,
        json: &Value,
        prefill: SocketAddr,
        prefill_service: Endpoint,
        decode_service: Endpoint,
    ) -> Outcome {
        let mut body = json.clone();
        body["bootstrap_host"] = json!(prefill.ip().to_string());
        let port = self
            .parts
            .bootstrap
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&prefill)
            .copied();
        body["bootstrap_port"] = json!(port);
        body["bootstrap_room"] = json!(self.rooms.next_u64() & (i64::MAX as u64));
        let body = Bytes::from(body.to_string());
        let prefilled = std::pin::pin!(prefill_service.oneshot(leg_request(parts, body.clone())));
        let decoded = std::pin::pin!(decode_service.oneshot(leg_request(parts, body)));
        let (prefill_head, decode_head) = match future::select(prefilled, decoded).await {
            Race::Left((prefilled, decoded)) => {
                let prefill_head = judge(prefilled);
                if let Head::Failed(failed) = prefill_head {
                    // The decode leg waits for a room that will not come:
                    // dropping it ends it.
                    return Outcome::Prefill(failed);
                }
                (prefill_head, judge(decoded.await))
            }
            Race::Right((decoded, prefilled)) => {
                let decode_head = judge(decoded);
                (judge(prefilled.await), decode_head)
            }
        };
        match (prefill_head, decode_head) {
            (Head::Failed(failed), _) => Outcome::Prefill(failed),
            (Head::Refused(response), _) => Outcome::Answer(response),
            (Head::Ok(prefill_answer), decode_head) => {
                drain(prefill_answer, self.parts.attempt_timeout);
                match decode_head {
                    Head::Ok(response) | Head::Refused(response) => Outcome::Answer(response),
                    Head::Failed(failed) => Outcome::Decode(failed),
                }
            }
        }
    }

    /// vLLM: the prefill leg first, one token, its answer's transfer
    /// parameters into the decode leg.
    async fn vllm(
        &self,
        parts: &http::request::Parts,
        json: &Value,
        prefill: SocketAddr,
        prefill_service: Endpoint,
        decode_service: Endpoint,
    ) -> Outcome {
        let mut first = json.clone();
        if let Some(fields) = first.as_object_mut() {
            fields.insert("max_tokens".into(), json!(1));
            if fields.contains_key("max_completion_tokens") {
                fields.insert("max_completion_tokens".into(), json!(1));
            }
            fields.insert("stream".into(), json!(false));
            fields.remove("stream_options");
            fields.insert(
                "kv_transfer_params".into(),
                json!({"do_remote_decode": true, "do_remote_prefill": false,
                    "remote_engine_id": null, "remote_block_ids": null,
                    "remote_host": null, "remote_port": null}),
            );
        }
        let request = leg_request(parts, Bytes::from(first.to_string()));
        let answer = match judge(prefill_service.oneshot(request).await) {
            Head::Ok(answer) => answer,
            Head::Refused(response) => return Outcome::Answer(response),
            Head::Failed(failed) => return Outcome::Prefill(failed),
        };
        let read = read_limited(answer.into_body(), MAX_PREFILL_ANSWER);
        let params = match tokio::time::timeout(self.parts.attempt_timeout, read).await {
            Ok(Ok(body)) => serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|mut v| v.get_mut("kv_transfer_params").map(Value::take))
                .filter(Value::is_object),
            Ok(Err(error)) => {
                return Outcome::Prefill(Failed {
                    why: format!("its answer broke off: {error}"),
                    timed_out: false,
                })
            }
            Err(_) => {
                return Outcome::Prefill(Failed {
                    why: "its answer's body did not arrive in time".into(),
                    timed_out: true,
                })
            }
        };
        let Some(params) = params else {
            return Outcome::Prefill(Failed {
                why: format!("{prefill} answered without `kv_transfer_params`"),
                timed_out: false,
            });
        };
        let mut second = json.clone();
        second["kv_transfer_params"] = params;
        let request = leg_request(parts, Bytes::from(second.to_string()));
        match judge(decode_service.oneshot(request).await) {
            Head::Ok(response) | Head::Refused(response) => Outcome::Answer(response),
            Head::Failed(failed) => Outcome::Decode(failed),
        }
    }
}

/// An error boxed (a named function: a closure here trips the compiler's
/// check that the router's future is `Send`).
fn boxed<E: Into<BoxError>>(error: E) -> BoxError {
    error.into()
}

/// What one pair made of a request.
enum Outcome {
    /// The client's answer.
    Answer(Response<ResponseBody>),
    /// The prefill leg failed.
    Prefill(Failed),
    /// The decode leg failed.
    Decode(Failed),
}

/// A decode server's load: its requests (the router's in flight, or its
/// own running and queued if more), and its KV cache use.
fn decode_load(service: &Endpoint) -> f64 {
    let in_flight = service.load().get() as f64;
    let (running, queue, kv) =
        service
            .report()
            .and_then(|cell| cell.current())
            .map_or((0.0, 0.0, 0.0), |r| {
                (
                    f64::from(r.running),
                    f64::from(r.queue),
                    f64::from(r.kv_cache_use),
                )
            });
    // The router's own requests there include those it queued: counted
    // once, against what the server says it runs and queues.
    in_flight.max(running + queue) + 4.0 * kv
}

/// One leg's request: the client's method, path, headers and extensions
/// (its prompt facts), with `body`.
fn leg_request(parts: &http::request::Parts, body: Bytes) -> Request<UpstreamBody> {
    let length = body.len();
    let mut request = Request::new(ReplayBody::replay(body, None));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    request.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(length),
    );
    request
}

/// A whole body, at most `limit` bytes.
async fn read_limited(mut body: ResponseBody, limit: usize) -> Result<Vec<u8>, String> {
    let mut read = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            if read.len() + data.len() > limit {
                return Err(format!("it is longer than {limit} bytes"));
            }
            read.extend_from_slice(data);
        }
    }
    Ok(read)
}

/// Reads a prefill answer's body to its end in the background (its
/// server's in-flight count and prefill model end there), for at most
/// `limit`.
fn drain(answer: Response<ResponseBody>, limit: Duration) {
    let mut body = answer.into_body();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(limit, async move {
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    break;
                }
            }
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_and_name_themselves() {
        for protocol in [PdProtocol::Sglang, PdProtocol::Vllm] {
            assert_eq!(protocol.as_str().parse::<PdProtocol>(), Ok(protocol));
        }
        assert!("mooncake".parse::<PdProtocol>().is_err());
    }

    #[test]
    fn attempts_are_at_least_one() {
        assert_eq!(
            Disaggregation::new(PdProtocol::Vllm).attempts(0).attempts,
            1
        );
        assert_eq!(Disaggregation::new(PdProtocol::Vllm).attempts, 3);
    }

    #[test]
    fn a_leg_keeps_the_request_but_its_body() {
        let (mut parts, ()) = Request::post("/v1/completions")
            .header("content-length", "999")
            .header("x-tenant", "a")
            .body(())
            .unwrap()
            .into_parts();
        parts.extensions.insert(7u32);
        let leg = leg_request(&parts, Bytes::from_static(b"{}"));
        assert_eq!(leg.uri(), "/v1/completions");
        assert_eq!(leg.headers()["content-length"], "2");
        assert_eq!(leg.headers()["x-tenant"], "a");
        assert_eq!(leg.extensions().get::<u32>(), Some(&7));
    }

    #[test]
    fn errors_name_their_leg_and_timeouts() {
        let error = PdError::Prefill {
            attempts: 2,
            server: "127.0.0.1:1".parse().unwrap(),
            why: "answered 500".into(),
            timed_out: false,
        };
        assert_eq!(error.code(), "prefill_failed");
        assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
        assert!(!error.timed_out());
        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert!(Failed::of(&elapsed).timed_out);
    }
}
