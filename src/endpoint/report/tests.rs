use std::time::Duration;

use super::*;

#[tokio::test(start_paused = true)]
async fn absent_fields_keep_their_values() {
    let metrics = ReportCell::new();
    metrics.record(&Report {
        queue: Some(4),
        running: Some(7),
        kv_cache_use: Some(0.5),
        ..Report::default()
    });
    metrics.record(&Report {
        queue: Some(1),
        ..Report::default()
    });
    let facts = metrics.current().unwrap();
    assert_eq!(
        (facts.queue, facts.running, facts.kv_cache_use),
        (1, 7, 0.5)
    );
}

#[tokio::test(start_paused = true)]
async fn bad_values_are_clamped_or_ignored() {
    let metrics = ReportCell::new();
    metrics.record(&Report {
        kv_cache_use: Some(7.0),
        qps: Some(10.0),
        utilization: Some(0.5),
        ..Report::default()
    });
    metrics.record(&Report {
        kv_cache_use: Some(f32::NAN),
        qps: Some(f32::INFINITY),
        utilization: Some(-1.0),
        eps: Some(f32::NAN),
        ..Report::default()
    });
    let facts = metrics.current().unwrap();
    assert_eq!(facts.kv_cache_use, 1.0);
    assert_eq!((facts.qps, facts.utilization, facts.eps), (10.0, 0.5, 0.0));
}

#[tokio::test(start_paused = true)]
async fn staleness_and_reporting_time() {
    let metrics = ReportCell::with_staleness(Duration::from_millis(100));
    assert_eq!(metrics.age(), None);
    assert_eq!(metrics.reporting_for(Instant::now()), None);
    metrics.touch();
    for _ in 0..5 {
        tokio::time::advance(Duration::from_millis(50)).await;
        metrics.touch();
    }
    assert_eq!(
        metrics.reporting_for(Instant::now()),
        Some(Duration::from_millis(250))
    );
    tokio::time::advance(Duration::from_millis(101)).await;
    assert!(metrics.current().is_none());
    assert_eq!(metrics.age(), Some(Duration::from_millis(101)));
    // A gap longer than the bound starts the reporting time again.
    metrics.touch();
    assert_eq!(metrics.reporting_for(Instant::now()), Some(Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn extra_facts_and_adapter_slots() {
    let metrics = ReportCell::new();
    assert!(metrics.details().serves("any"));
    assert!(metrics.details().has_adapter_slot());
    metrics.record(&Report {
        models: Some(vec!["llama".into()]),
        adapters: Some(vec!["a".into(), "b".into()]),
        max_adapters: Some(2),
        named: Some(vec![("x".into(), 1.5)]),
        ..Report::default()
    });
    let extra = metrics.details();
    assert!(extra.serves("llama") && !extra.serves("mistral"));
    assert!(extra.has_adapter("a") && !extra.has_adapter("c"));
    assert!(!extra.has_adapter_slot());
    assert_eq!(extra.named("x"), Some(1.5));
}

#[tokio::test(start_paused = true)]
async fn garbage_is_logged_once_per_burst() {
    let metrics = ReportCell::with_staleness(Duration::from_millis(100));
    assert!(metrics.should_log_garbage());
    for _ in 0..10 {
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(!metrics.should_log_garbage());
    }
    tokio::time::advance(Duration::from_millis(101)).await;
    assert!(metrics.should_log_garbage());
}
