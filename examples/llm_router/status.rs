//! The `/status` document of the admin listener.

use std::time::Duration;

use serde_json::json;
use tower_lb::llm::Router;
use tower_lb::pick::llm::PrefixAffinity;

/// The `/status` document.
pub(crate) fn json(router: &Router, prefix: &PrefixAffinity) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let servers: Vec<_> = router
        .servers()
        .into_iter()
        .map(|s| {
            let p = s.prefill;
            json!({
                "backend": format!("http://{}", s.addr),
                "model": s.model,
                "role": s.role.as_str(),
                "available": s.available,
                "health": s.health.as_ref().map(|h| format!("{:?}", h.state())),
                "consecutive_failures": s.health.as_ref().map(|h| h.consecutive_failures()),
                "ejections": s.health.as_ref().map(|h| h.ejections()),
                "queue": s.report.map(|r| r.queue),
                "running": s.report.map(|r| r.running),
                "kv_cache_use": s.report.map(|r| r.kv_cache_use),
                "report_age_ms": s.report.map(|r| ms(r.age)),
                "waiting_first_token": p.map(|p| p.waiting),
                "in_flight": p.map(|p| p.in_flight),
                "slots": p.map(|p| p.slots),
                "mean_answer_ms": p.map(|p| ms(p.mean_answer)),
                "queued_prefill_tokens": p.map(|p| p.queued_tokens),
                "prefix_index_blocks": p.map(|p| p.indexed_blocks),
                "prompt_tokens_sent": p.map(|p| p.sent_tokens),
                "completion_tokens": p.map(|p| p.completion_tokens),
                "expected_reuse": p.map(|p| p.expected_reuse),
                "measured_reuse": p.and_then(|p| p.measured_reuse),
                "expected_reuse_of_measured": p.and_then(|p| p.expected_reuse_of_measured),
                "ttft_model_ms": p.map(|p| json!({
                    "base": ms(p.model.base),
                    "per_token": ms(p.model.per_token),
                })),
            })
        })
        .collect();
    let queue = router.queue_stats().map(|q| {
        let bands: Vec<_> = q.bands.iter().map(|b| json!({
            "priority": b.priority, "waiting": b.waiting, "admitted": b.admitted,
            "queued": b.queued, "shed": b.shed, "expired": b.expired, "left": b.left,
            "mean_wait_ms": if b.queued == 0 { 0.0 } else { ms(b.waited) / b.queued as f64 },
            "max_wait_ms": ms(b.max_wait),
        })).collect();
        json!({"in_service": q.in_service, "bands": bands})
    });
    let f = router.failover_stats();
    let failover = json!({
        "continued": f.continued, "finished": f.finished, "retried_whole": f.retried_whole,
        "resent": f.resent, "not_continued": f.not_continued, "exhausted": f.exhausted,
        "failed": f.failed,
    });
    json!({"imbalance_gate_open": prefix.gate_tripped(), "backends": servers, "queue": queue,
        "disaggregation": crate::pd::status(router), "failover": failover})
    .to_string()
}
