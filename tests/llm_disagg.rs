//! Disaggregated serving: `examples/llm_router` with `--prefill` and
//! `--decode` in front of `examples/model_server`s of those roles, in
//! SGLang's and vLLM's protocols, all as child processes on 127.0.0.1;
//! failing servers are the tests' own `Backend`s.
//!
//! `cargo test --features llm,reports --test llm_disagg` builds both
//! examples first (with the test's profile and target directory).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use support::examples::send_to as send;
use support::examples::Process;
use support::{within, Backend};

/// The examples' directory, after building them once per test run.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        support::examples::build(&["llm_router", "model_server"], &["llm", "reports"])
    })
}

/// A model server of `role` speaking `protocol`.
fn model_server(role: &str, protocol: &str) -> Process {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--role",
        role,
        "--pd-protocol",
        protocol,
        "--decode-per-token",
        "1ms",
        "--kv-timeout",
        "2s",
    ];
    Process::start(examples_dir(), "model_server", &args)
}

/// The router over `prefill` and `decode` servers (URLs), with `extra`
/// flags; its admin listener on `admin`.
fn router(prefill: &[String], decode: &[String], extra: &[&str]) -> (Process, SocketAddr) {
    let admin = free_port();
    let mut args: Vec<String> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--admin".into(),
        admin.to_string(),
    ];
    for url in prefill {
        args.extend(["--prefill".into(), url.clone()]);
    }
    for url in decode {
        args.extend(["--decode".into(), url.clone()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    (Process::start(examples_dir(), "llm_router", &args), admin)
}

/// A port of 127.0.0.1 free a moment ago.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: String,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = within("an answer's head", send(addr, request)).await;
    let status = response.status();
    let body = within("an answer's body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = request(addr, Method::GET, path, String::new()).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The `pd` counters of a model server's `/stats`.
async fn legs(server: &Process) -> Value {
    get_json(server.addr, "/stats").await["pd"].clone()
}

fn chat(system: &str, user: &str, stream: bool) -> Value {
    json!({"model": "emulated", "stream": stream, "max_tokens": 6,
           "messages": [{"role": "system", "content": system},
                        {"role": "user", "content": user}]})
}

/// The text of an answer, whole or streamed.
fn text_of(body: &str) -> String {
    if let Ok(whole) = serde_json::from_str::<Value>(body) {
        return whole["choices"][0]["message"]["content"]
            .as_str()
            .or_else(|| whole["choices"][0]["text"].as_str())
            .unwrap_or_else(|| panic!("no text in {whole}"))
            .to_owned();
    }
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// Every request of `requests` reaches one prefill and one decode server
/// of those roles, whose hand-over matched (every room or transfer the
/// prefill servers put up was pulled, no decode leg failed), and answers
/// what a whole server answers.
async fn both_legs_reach_the_right_roles(protocol: &str) {
    let prefill = [
        model_server("prefill", protocol),
        model_server("prefill", protocol),
    ];
    let decode = [
        model_server("decode", protocol),
        model_server("decode", protocol),
    ];
    let whole = model_server("both", protocol);
    let (router, admin) = router(
        &prefill.iter().map(Process::url).collect::<Vec<_>>(),
        &decode.iter().map(Process::url).collect::<Vec<_>>(),
        &["--pd-protocol", protocol],
    );
    const REQUESTS: usize = 12;
    for k in 0..REQUESTS {
        let body = chat(
            &"Be brief. ".repeat(40 + k),
            &format!("Question {k}?"),
            k % 2 == 0,
        );
        let (status, answer) = request(
            router.addr,
            Method::POST,
            "/v1/chat/completions",
            body.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let (_, expected) = request(
            whole.addr,
            Method::POST,
            "/v1/chat/completions",
            body.to_string(),
        )
        .await;
        assert_eq!(text_of(&answer), text_of(&expected), "request {k}");
    }
    let (mut prefilled, mut sent, mut decoded) = (0, 0, 0);
    for server in &prefill {
        let legs = legs(server).await;
        assert_eq!(legs["decode_legs"], 0, "{legs}");
        assert_eq!(legs["whole"], 0, "{legs}");
        prefilled += legs["prefill_legs"].as_u64().unwrap();
        sent += legs["kv_sent"].as_u64().unwrap();
    }
    for server in &decode {
        let legs = legs(server).await;
        assert_eq!(legs["prefill_legs"], 0, "{legs}");
        assert_eq!(legs["whole"], 0, "{legs}");
        assert_eq!(legs["handover_failures"], 0, "{legs}");
        decoded += legs["decode_legs"].as_u64().unwrap();
    }
    assert_eq!(prefilled, REQUESTS as u64);
    assert_eq!(sent, REQUESTS as u64);
    assert_eq!(decoded, REQUESTS as u64);

    let status = get_json(admin, "/status").await;
    let pd = &status["disaggregation"];
    assert_eq!(pd["disaggregated"], REQUESTS, "{pd}");
    assert_eq!(pd["prefill_failures"], 0, "{pd}");
    let paired: u64 = pd["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(paired, REQUESTS as u64, "{pd}");
    let roles: Vec<_> = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["role"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| *r == "prefill").count(),
        2,
        "{roles:?}"
    );
    assert_eq!(
        roles.iter().filter(|r| *r == "decode").count(),
        2,
        "{roles:?}"
    );
}

#[tokio::test]
async fn sglang_legs_reach_prefill_and_decode_with_one_room() {
    both_legs_reach_the_right_roles("sglang").await;
}

#[tokio::test]
async fn vllm_legs_carry_the_prefill_answers_transfer_params() {
    both_legs_reach_the_right_roles("vllm").await;
}

#[tokio::test]
async fn a_failed_prefill_is_retried_on_another_prefill_server() {
    let broken = Backend::builder("broken")
        .status(StatusCode::INTERNAL_SERVER_ERROR)
        .start()
        .await;
    let good = model_server("prefill", "sglang");
    let decode = model_server("decode", "sglang");
    let bootstrap = get_json(good.addr, "/get_server_info").await["disaggregation_bootstrap_port"]
        .as_u64()
        .unwrap();
    // The broken server takes some first picks; each is retried on the
    // good one before anything reaches the client.
    let (router, admin) = router(
        &[
            format!("http://{}#9", broken.addr()),
            format!("{}#{bootstrap}", good.url()),
        ],
        &[decode.url()],
        &["--retries", "2"],
    );
    let mut sent = 0;
    while broken.requests() == 0 {
        assert!(sent < 64, "the broken prefill server was never picked");
        let body = chat("Be brief.", &format!("Question {sent}?"), true);
        let (status, answer) = request(
            router.addr,
            Method::POST,
            "/v1/chat/completions",
            body.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert!(text_of(&answer).len() > 4, "{answer}");
        sent += 1;
    }
    let pd = get_json(admin, "/status").await["disaggregation"].clone();
    assert_eq!(pd["prefill_failures"], broken.requests(), "{pd}");
    assert_eq!(pd["failed"], 0, "{pd}");
    assert_eq!(
        legs(&good).await["prefill_legs"],
        sent,
        "every request prefilled there"
    );
    // Decode legs of the broken pairs may have started, and failed to find
    // their room, before the router dropped them.
    let failures = legs(&decode).await["handover_failures"].as_u64().unwrap();
    assert!(failures <= broken.requests() as u64, "{failures}");
}

#[tokio::test]
async fn the_decider_sends_short_prompts_straight_to_decode() {
    let prefill = model_server("prefill", "sglang");
    let decode = model_server("decode", "sglang");
    let (router, admin) = router(
        &[prefill.url()],
        &[decode.url()],
        &["--pd-direct-below", "500"],
    );
    // About 30 tokens: below the threshold everywhere.
    let short = chat("Be brief.", "Name a colour.", false);
    let (status, answer) = request(
        router.addr,
        Method::POST,
        "/v1/chat/completions",
        short.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // About 4,000 tokens, none cached: disaggregated.
    let long = chat(&"Be brief. ".repeat(1600), "Name a colour.", false);
    let (status, answer) = request(
        router.addr,
        Method::POST,
        "/v1/chat/completions",
        long.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let (p, d) = (legs(&prefill).await, legs(&decode).await);
    assert_eq!(p["prefill_legs"], 1, "{p}");
    assert_eq!(d["whole"], 1, "{d}");
    assert_eq!(d["decode_legs"], 1, "{d}");
    let pd = get_json(admin, "/status").await["disaggregation"].clone();
    assert_eq!(pd["direct"], 1, "{pd}");
    assert_eq!(pd["disaggregated"], 1, "{pd}");
}

#[tokio::test]
async fn a_prefill_server_that_never_answers_is_a_timeout_not_a_hang() {
    let silent = Backend::start("silent").await;
    silent.set_hang(true);
    let decode = model_server("decode", "sglang");
    let (router, _) = router(
        &[format!("http://{}#9", silent.addr())],
        &[decode.url()],
        &["--attempt-timeout", "200ms"],
    );
    let body = chat("Be brief.", "Name a colour.", true);
    let (status, answer) = request(
        router.addr,
        Method::POST,
        "/v1/chat/completions",
        body.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{answer}");
    let error: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(error["error"]["code"], "prefill_failed", "{error}");
    assert!(legs(&decode).await["decode_legs"].as_u64() > Some(0));
}

#[tokio::test]
async fn a_decode_server_that_errors_gives_a_clear_error() {
    let prefill = model_server("prefill", "vllm");
    let broken = Backend::builder("broken")
        .status(StatusCode::INTERNAL_SERVER_ERROR)
        .start()
        .await;
    let (router, admin) = router(
        &[prefill.url()],
        &[format!("http://{}", broken.addr())],
        &["--pd-protocol", "vllm"],
    );
    let body = chat("Be brief.", "Name a colour.", false);
    let (status, answer) = request(
        router.addr,
        Method::POST,
        "/v1/chat/completions",
        body.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    let error: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(error["error"]["code"], "decode_failed", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&broken.addr().to_string()),
        "{error}"
    );
    // The default --retries 1: two pairs, each prefilled once.
    assert_eq!(legs(&prefill).await["prefill_legs"], 2);
    assert_eq!(broken.requests(), 2);
    let pd = get_json(admin, "/status").await["disaggregation"].clone();
    assert_eq!(pd["decode_failures"], 2, "{pd}");
    assert_eq!(pd["failed"], 1, "{pd}");
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    for args in [
        &["--prefill", "http://127.0.0.1:1#port"][..],
        &["--decode", "nowhere"][..],
        &[
            "--prefill",
            "http://127.0.0.1:1",
            "--pd-protocol",
            "mooncake",
        ][..],
    ] {
        let output = std::process::Command::new(examples_dir().join("llm_router"))
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_server_of_role_both_picked_for_both_legs_serves_the_request_whole() {
    let both = model_server("both", "sglang");
    let (router, admin) = router(&[both.url()], &[both.url()], &[]);
    let body = chat("Be brief.", "Name a colour.", true);
    let (status, answer) = request(
        router.addr,
        Method::POST,
        "/v1/chat/completions",
        body.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let legs = legs(&both).await;
    assert_eq!(legs["whole"], 1, "{legs}");
    assert_eq!(legs["prefill_legs"], 0, "{legs}");
    let status = get_json(admin, "/status").await;
    assert_eq!(status["disaggregation"]["same_server"], 1, "{status}");
    let backends = status["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 1, "listed once: {status}");
    assert_eq!(backends[0]["role"], "both");
}

// ===== the library, in process =====

#[tokio::test]
async fn bodies_that_are_not_json_objects_go_whole_to_a_decode_server() {
    use tower::ServiceExt;
    use tower_lb::llm::{Builder, Disaggregation, PdProtocol};

    let prefill = Backend::builder("p").record_bodies().start().await;
    let decode = Backend::builder("d").record_bodies().start().await;
    let router = Builder::new()
        .prefill_server(&format!("http://{}", prefill.addr()), Some(9))
        .decode_server(&format!("http://{}", decode.addr()))
        .disaggregation(Disaggregation::new(PdProtocol::Vllm))
        .require_json(false)
        .build()
        .unwrap();
    within(
        "the decode server in the set",
        router.balance().wait_for(|keys| keys.len() == 1),
    )
    .await;
    let bodies: [(&str, &[u8]); 2] = [("text/plain", b"not json at all"), ("", b"[1, 2]")];
    for (kind, body) in bodies {
        let mut request = Request::post("/v1/completions");
        if !kind.is_empty() {
            request = request.header("content-type", kind);
        }
        let request = request.body(Full::new(Bytes::from_static(body))).unwrap();
        let response = within("an answer", router.clone().oneshot(request))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let seen: Vec<Bytes> = decode.bodies();
    assert_eq!(
        seen,
        [
            Bytes::from_static(b"not json at all"),
            Bytes::from_static(b"[1, 2]")
        ]
    );
    assert_eq!(prefill.requests(), 0);
    let stats = router.disaggregation().unwrap();
    assert_eq!((stats.direct, stats.disaggregated), (2, 0));
}

#[tokio::test]
async fn disaggregation_without_a_prefill_server_does_not_build() {
    use tower_lb::llm::{BuildError, Builder, Disaggregation, PdProtocol};

    let built = Builder::new()
        .decode_server("http://127.0.0.1:1")
        .disaggregation(Disaggregation::new(PdProtocol::Sglang))
        .build();
    assert!(matches!(built, Err(BuildError::Invalid(_))), "{built:?}");
    let built = Builder::new()
        .prefill_server("not a url", None)
        .decode_server("http://127.0.0.1:1")
        .build();
    assert!(matches!(built, Err(BuildError::BadServer(_))), "{built:?}");
    // Prefill servers alone: nothing to decode on.
    let built = Builder::new()
        .prefill_server("http://127.0.0.1:1", Some(2))
        .build();
    assert!(matches!(built, Err(BuildError::NoServers)), "{built:?}");
}

/// `llm::Builder` with both pools from discovery, as a Kubernetes Service
/// of prefill pods and one of decode pods would give them: no bootstrap
/// port is given, and each prefill server's is asked of it as it joins.
#[tokio::test]
async fn pools_from_discovery_learn_the_prefill_bootstrap_ports() {
    use tower::ServiceExt;
    use tower_lb::discover::StaticList;
    use tower_lb::llm::{Builder, Disaggregation, PdProtocol, Role};

    let prefill = model_server("prefill", "sglang");
    let decode = model_server("decode", "sglang");
    let llm = Builder::new()
        .discover(StaticList::weighted([(decode.addr, (), 1)]))
        .prefill_discover(StaticList::weighted([(prefill.addr, (), 1)]))
        .disaggregation(Disaggregation::new(PdProtocol::Sglang))
        .wait(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let body = chat(&"Be brief. ".repeat(40), "Name a colour.", false);
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let answer = within("a disaggregated answer", llm.clone().oneshot(request))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let text = answer.into_body().collect().await.unwrap().to_bytes();
    assert!(text_of(std::str::from_utf8(&text).unwrap()).len() > 4);
    // The decode server found the room at the port the prefill announced.
    assert_eq!(legs(&prefill).await["prefill_legs"], 1);
    assert_eq!(legs(&decode).await["decode_legs"], 1);
    let mut roles: Vec<_> = llm.servers().iter().map(|s| (s.addr, s.role)).collect();
    roles.sort_by_key(|&(addr, _)| addr);
    let mut expected = vec![(prefill.addr, Role::Prefill), (decode.addr, Role::Decode)];
    expected.sort_by_key(|&(addr, _)| addr);
    assert_eq!(roles, expected);
}
