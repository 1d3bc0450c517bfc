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
