//! A load client for OpenAI-compatible routers: multi-turn chats with shared
//! system prompts, streamed, measured at the first token.
//!
//! ```sh
//! cargo run --release --example llm_load -- --target http://127.0.0.1:8080 \
//!     --sessions 64 --in-flight 16 [--quickack]
//! cargo run --release --example llm_load -- --target http://127.0.0.1:8080 \
//!     --rate 30 --duration 20s --sessions 1000 --think 200ms --slo 200ms
//! ```
//!
//! The workload follows from `--seed` alone, so every run replays the same
//! one: `--sessions` conversations, each opening with one of
//! `--system-prompts` system prompts of `--system-chars` characters chosen
//! by a Zipf law (exponent 1), then `--turns` user messages. Each turn's
//! request holds the whole chat so far, the answers included as they came
//! back.
//!
//! Two ways to send them:
//!
//! * **Closed loop** (the default): `--in-flight` workers take conversations
//!   from one queue, send one turn and put the conversation back at the end
//!   of the queue, so the turns of many chats interleave as they do behind a
//!   real front end, and a slow target gets fewer requests.
//! * **Open loop** (`--rate R`): chats arrive as a Poisson process of `R`
//!   chats a second (its times follow from `--seed` too), whatever the
//!   target's speed; each chat sends its next turn `--think` after the
//!   previous answer ended. Chats stop arriving after `--duration` or when
//!   all `--sessions` have arrived, whichever comes first; the chats under
//!   way then finish their turns.
//!
//! Several `--target`s take the requests in turn, one request each (a
//! client going straight to the servers, or to several router replicas);
//! the turns of one chat go to different targets then. `--quickack` sets `TCP_QUICKACK` after every read, so the
//! client acknowledges at once: a server or router that leaves Nagle's
//! algorithm on then cannot hold a small event for the client's delayed
//! ACK.
//!
//! The result is one JSON line on stdout: `requests` (answered), `errors`,
//! `ttft_p50_ms` and `ttft_p99_ms`, `tokens_per_s` (answer tokens over the
//! wall time), `wall_s`, and `goodput`: the share of all requests (errors
//! included) whose first token came within `--slo`, with `slo_ms`; in open
//! loop also `rate` and `chats` (the chats that arrived).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Multi-turn streamed chats against OpenAI-compatible servers.
#[derive(Debug, Parser)]
#[command(name = "llm_load")]
struct Cli {
    /// Base URL to send to, `http://IP:PORT` (repeat: requests go to the
    /// targets in turn).
    #[arg(long, required = true)]
    target: Vec<String>,
    /// Conversations.
    #[arg(long, default_value_t = 64)]
    sessions: usize,
    /// Turns of each conversation.
    #[arg(long, default_value_t = 6)]
    turns: usize,
    /// Distinct system prompts.
    #[arg(long, default_value_t = 8)]
    system_prompts: usize,
    /// Characters in a system prompt.
    #[arg(long, default_value_t = 2000)]
    system_chars: usize,
    /// Characters in a user message.
    #[arg(long, default_value_t = 200)]
    user_chars: usize,
    /// Answer tokens asked for (`max_tokens`).
    #[arg(long, default_value_t = 32)]
    max_tokens: u32,
    /// Requests in flight at once (closed loop).
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Open loop: chats that arrive a second, as a Poisson process.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: time between an answer's end and the chat's next turn.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    think: Duration,
    /// Open loop: no chat arrives after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// A request is good when its first token comes within this long.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    slo: Duration,
    /// The model to ask for.
    #[arg(long, default_value = "emulated")]
    model: String,
    /// Acknowledge every read at once (TCP_QUICKACK).
    #[arg(long)]
    quickack: bool,
    /// Seed of the workload (and of the arrival times).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give up on one request after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// SplitMix64, so the workload follows from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Lowercase words, `chars` characters in all.
    fn text(&mut self, chars: usize) -> String {
        let mut text = String::with_capacity(chars + 8);
        while text.len() < chars {
            let len = 2 + (self.next() % 7) as usize;
            for _ in 0..len {
                text.push((b'a' + (self.next() % 26) as u8) as char);
            }
            text.push(' ');
        }
        text.truncate(chars);
        text
    }
}

/// One conversation: its messages so far and the user turns still to send.
struct Chat {
    messages: Vec<Value>,
    pending: VecDeque<String>,
}

fn workload(cli: &Cli) -> VecDeque<Chat> {
    let mut rng = Rng(cli.seed ^ 0x11a_10ad);
    let systems: Vec<String> = (0..cli.system_prompts.max(1))
        .map(|k| format!("System prompt {k}. {}", rng.text(cli.system_chars)))
        .collect();
    let harmonic: f64 = (1..=systems.len()).map(|k| 1.0 / k as f64).sum();
    (0..cli.sessions)
        .map(|_| {
            let mut u = rng.unit() * harmonic;
            let mut system = systems.len() - 1;
            for k in 0..systems.len() {
                u -= 1.0 / (k + 1) as f64;
                if u < 0.0 {
                    system = k;
                    break;
                }
            }
            Chat {
                messages: vec![json!({"role": "system", "content": systems[system]})],
                pending: (0..cli.turns).map(|_| rng.text(cli.user_chars)).collect(),
            }
        })
        .collect()
}

/// A TCP stream that re-arms `TCP_QUICKACK` after every read (Linux clears
/// it as soon as it has acknowledged).
struct QuickAck {
    tcp: TcpStream,
    on: bool,
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if self.on {
            let _ = socket2::SockRef::from(&self.tcp).set_tcp_quickack(true);
        }
        poll
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr, quickack: bool) -> io::Result<Sender> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let io = TokioIo::new(QuickAck { tcp, on: quickack });
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(connection);
    Ok(sender)
}

/// What one streamed turn gave: time to its first token, tokens, text.
struct Answer {
    ttft: Duration,
    tokens: u64,
    text: String,
}

async fn turn(sender: &mut Sender, host: &str, body: Vec<u8>) -> Result<Answer, String> {
    let request = http::Request::post("/v1/chat/completions")
        .header("host", host)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let mut body = response.into_body();
    let (mut ttft, mut tokens, mut text) = (None, 0u64, String::new());
    let mut pending = Vec::new();
    let mut done = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            let line = String::from_utf8_lossy(&event);
            let Some(payload) = line.trim().strip_prefix("data:") else {
                continue;
            };
            let payload = payload.trim();
            if payload == "[DONE]" {
                done = true;
                continue;
            }
            let value: Value = serde_json::from_str(payload).map_err(|e| e.to_string())?;
            if value.get("error").is_some() {
                return Err(format!("error event: {payload}"));
            }
            let content = value["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("");
            if !content.is_empty() {
                ttft.get_or_insert_with(|| start.elapsed());
                tokens += 1;
                text.push_str(content);
            }
        }
    }
    if !done {
        return Err("the stream ended without [DONE]".into());
    }
    Ok(Answer {
        ttft: ttft.ok_or("no token")?,
        tokens,
        text,
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut targets = Vec::new();
    for target in &cli.target {
        let host = target.trim_start_matches("http://").trim_end_matches('/');
        match host.parse::<SocketAddr>() {
            Ok(addr) => targets.push((addr, host.to_owned())),
            Err(_) => {
                eprintln!("llm_load: --target must be http://IP:PORT, not {target:?}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(rate) = cli.rate {
        if !(rate.is_finite() && rate > 0.0) {
            eprintln!("llm_load: --rate must be a positive number of chats a second");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("llm_load: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli, targets))
}

/// What every request shares: the settings, the targets and the tally.
struct Client {
    cli: Cli,
    targets: Vec<(SocketAddr, String)>,
    next_target: AtomicUsize,
    tally: Mutex<Tally>,
}

/// The measurements so far.
#[derive(Default)]
struct Tally {
    /// Time to first token of every answered request, in ms.
    ttft_ms: Vec<f64>,
    tokens: u64,
    errors: u64,
}

/// One connection per target, opened when first used; each worker (closed
/// loop) or chat (open loop) has its own.
type Senders = Vec<Option<Sender>>;

impl Client {
    /// Sends the chat's next turn to the next target and adds the answer
    /// to the chat (a lost turn leaves the chat without it). False when no
    /// turn was left.
    async fn send_turn(&self, chat: &mut Chat, senders: &mut Senders) -> bool {
        let Some(user) = chat.pending.pop_front() else {
            return false;
        };
        chat.messages.push(json!({"role": "user", "content": user}));
        let body = json!({
            "model": self.cli.model, "messages": chat.messages, "stream": true,
            "max_tokens": self.cli.max_tokens,
        });
        let k = self.next_target.fetch_add(1, Ordering::Relaxed) % self.targets.len();
        let (addr, host) = &self.targets[k];
        let outcome = async {
            if senders[k].is_none() {
                senders[k] = Some(
                    connect(*addr, self.cli.quickack)
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            let sender = senders[k].as_mut().ok_or("no connection")?;
            let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
            tokio::time::timeout(self.cli.timeout, turn(sender, host, body))
                .await
                .map_err(|_| "timed out".to_string())?
        }
        .await;
        let mut tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(answer) => {
                tally.ttft_ms.push(answer.ttft.as_secs_f64() * 1e3);
                tally.tokens += answer.tokens;
                chat.messages
                    .push(json!({"role": "assistant", "content": answer.text}));
            }
            Err(error) => {
                tally.errors += 1;
                senders[k] = None;
                eprintln!("llm_load: {error}");
                chat.messages.pop();
            }
        }
        true
    }

    fn senders(&self) -> Senders {
        self.targets.iter().map(|_| None).collect()
    }
}

async fn run(cli: Cli, targets: Vec<(SocketAddr, String)>) -> ExitCode {
    let chats = workload(&cli);
    let rate = cli.rate;
    let client = Arc::new(Client {
        cli,
        targets,
        next_target: AtomicUsize::new(0),
        tally: Mutex::new(Tally::default()),
    });
    let started = Instant::now();
    let arrived = match rate {
        None => {
            closed_loop(&client, chats).await;
            None
        }
        Some(rate) => Some(open_loop(&client, chats, rate).await),
    };
    let wall = started.elapsed().as_secs_f64();
    let tally = std::mem::take(&mut *client.tally.lock().unwrap_or_else(PoisonError::into_inner));
    let mut ttft = tally.ttft_ms;
    ttft.sort_by(f64::total_cmp);
    let slo_ms = client.cli.slo.as_secs_f64() * 1e3;
    let good = ttft.iter().filter(|&&t| t <= slo_ms).count();
    let sent = ttft.len() as u64 + tally.errors;
    let mut report = json!({
        "requests": ttft.len(),
        "errors": tally.errors,
        "ttft_p50_ms": percentile(&ttft, 0.50),
        "ttft_p99_ms": percentile(&ttft, 0.99),
        "tokens_per_s": tally.tokens as f64 / wall,
        "wall_s": wall,
        "goodput": if sent == 0 { f64::NAN } else { good as f64 / sent as f64 },
        "slo_ms": slo_ms,
    });
    if let (Some(rate), Some(arrived)) = (rate, arrived) {
        report["rate"] = json!(rate);
        report["chats"] = json!(arrived);
    }
    println!("{report}");
    if tally.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--in-flight` workers share one queue of chats, one turn at a time.
async fn closed_loop(client: &Arc<Client>, chats: VecDeque<Chat>) {
    let queue = Arc::new(Mutex::new(chats));
    let workers: Vec<_> = (0..client.cli.in_flight.max(1))
        .map(|_| {
            let (queue, client) = (Arc::clone(&queue), Arc::clone(client));
            tokio::spawn(async move {
                let mut senders = client.senders();
                loop {
                    let chat = queue
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front();
                    let Some(mut chat) = chat else { break };
                    client.send_turn(&mut chat, &mut senders).await;
                    if !chat.pending.is_empty() {
                        queue
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push_back(chat);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
}

/// Chats arrive at `rate` a second (exponential gaps, from the seed); each
/// sends its turns one after another, `--think` apart. Returns how many
/// chats arrived.
async fn open_loop(client: &Arc<Client>, chats: VecDeque<Chat>, rate: f64) -> usize {
    let mut rng = Rng(client.cli.seed ^ 0xa221_7a15);
    let start = tokio::time::Instant::now();
    let end = client.cli.duration.map(|d| start + d);
    let mut at = start;
    let mut running = tokio::task::JoinSet::new();
    let mut arrived = 0;
    for mut chat in chats {
        // 1 - unit() is in (0, 1]: its logarithm is finite.
        at += Duration::from_secs_f64(-(1.0 - rng.unit()).ln() / rate);
        if end.is_some_and(|end| at > end) {
            break;
        }
        tokio::time::sleep_until(at).await;
        arrived += 1;
        let client = Arc::clone(client);
        running.spawn(async move {
            let mut senders = client.senders();
            while client.send_turn(&mut chat, &mut senders).await {
                if !chat.pending.is_empty() {
                    tokio::time::sleep(client.cli.think).await;
                }
            }
        });
        // Reap finished chats as they go, so the set stays small.
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    arrived
}
