//! Disaggregated serving on the command line: `--prefill URL[#PORT]`,
//! `--decode URL`, `--pd-protocol`, and what `/status` and `/metrics` show
//! of it.

use std::net::SocketAddr;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use serde_json::{json, Value};
use tower_lb::llm::{Builder, Disaggregation, PdProtocol, Role, Router};

/// One `--prefill`: its address and SGLang bootstrap port, if given.
#[derive(Clone, Debug)]
pub(crate) struct Prefill {
    pub(crate) addr: SocketAddr,
    pub(crate) bootstrap_port: Option<u16>,
}

/// Reads `http://IP:PORT[#BOOTSTRAP_PORT]`.
pub(crate) fn prefill(text: &str) -> Result<Prefill, String> {
    let (url, port) = match text.split_once('#') {
        Some((url, port)) => {
            let port = port
                .parse()
                .map_err(|_| format!("{port:?} is not a bootstrap port"))?;
            (url, Some(port))
        }
        None => (text, None),
    };
    Ok(Prefill {
        addr: address(url)?,
        bootstrap_port: port,
    })
}

/// Reads `http://IP:PORT`.
pub(crate) fn address(url: &str) -> Result<SocketAddr, String> {
    url.strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/')
        .parse()
        .map_err(|_| format!("{url:?} is not http://IP:PORT"))
}

/// Reads `sglang` or `vllm`.
pub(crate) fn protocol(text: &str) -> Result<PdProtocol, String> {
    text.parse()
}

/// Adds the prefill and decode servers and the settings to `builder`. A
/// prefill server given without a bootstrap port under SGLang's protocol
/// is asked for the one it announces as it joins (the library's part).
pub(crate) fn configure(
    mut builder: Builder,
    prefill: &[Prefill],
    decode: &[SocketAddr],
    settings: Disaggregation,
) -> Builder {
    if prefill.is_empty() && decode.is_empty() {
        return builder;
    }
    for server in prefill {
        let role = if decode.contains(&server.addr) {
            Role::Both
        } else {
            Role::Prefill
        };
        builder = builder.server_with_role(
            &format!("http://{}", server.addr),
            role,
            server.bootstrap_port,
        );
    }
    for addr in decode {
        if !prefill.iter().any(|p| p.addr == *addr) {
            builder = builder.decode_server(&format!("http://{addr}"));
        }
    }
    builder.disaggregation(settings)
}

/// `/status`'s `disaggregation` part: requests each way, failed legs, the
/// pairs chosen; `null` when it is off.
pub(crate) fn status(router: &Router) -> Value {
    let Some(pd) = router.disaggregation() else {
        return Value::Null;
    };
    let pairs: Vec<_> = pd
        .pairs
        .iter()
        .map(|p| {
            json!({"prefill": format!("http://{}", p.prefill),
                "decode": format!("http://{}", p.decode), "requests": p.requests})
        })
        .collect();
    json!({
        "disaggregated": pd.disaggregated,
        "direct": pd.direct,
        "same_server": pd.same_server,
        "prefill_failures": pd.prefill_failures,
        "decode_failures": pd.decode_failures,
        "failed": pd.failed,
        "pairs": pairs,
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LegLabels {
    leg: &'static str,
}

/// The `/metrics` families of disaggregated serving.
pub(crate) fn encode(
    router: &Router,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let Some(pd) = router.disaggregation() else {
        return Ok(());
    };
    crate::metrics::counters(
        encoder,
        "llm_router_pd_requests",
        "Requests by path: a prefill and a decode server, whole to a decode server (the decider), or one server of role both",
        &[
            (PathLabels { path: "disaggregated" }, pd.disaggregated),
            (PathLabels { path: "direct" }, pd.direct),
            (PathLabels { path: "same_server" }, pd.same_server),
        ],
    )?;
    crate::metrics::counters(
        encoder,
        "llm_router_pd_leg_failures",
        "Failed legs of disaggregated requests (retried while attempts remain)",
        &[
            (LegLabels { leg: "prefill" }, pd.prefill_failures),
            (LegLabels { leg: "decode" }, pd.decode_failures),
        ],
    )?;
    crate::metrics::counters(
        encoder,
        "llm_router_pd_failed",
        "Disaggregated requests that failed after every attempt",
        &[(LegLabels { leg: "any" }, pd.failed)],
    )
}
