use super::*;
use crate::endpoint::{Report, ReportCell, Weighted};

fn report(metrics: &ReportCell, qps: f32, utilization: f32, eps: f32) {
    metrics.record(&Report {
        qps: Some(qps),
        utilization: Some(utilization),
        eps: Some(eps),
        ..Report::default()
    });
}

fn shares(
    picker: &ReportWeighted,
    table: &ReportTable,
    endpoints: &Candidates<'_, Weighted<()>>,
    n: usize,
) -> Vec<f64> {
    let mut seen = vec![0usize; endpoints.len()];
    for _ in 0..n {
        seen[picker.pick(table, endpoints, &()).unwrap()] += 1;
    }
    seen.iter().map(|&c| c as f64 / n as f64).collect()
}

#[tokio::test(start_paused = true)]
async fn weights_follow_reports_after_the_blackout() {
    let metrics: Vec<ReportCell> = (0..2).map(|_| ReportCell::new()).collect();
    let services: Vec<Weighted<()>> = metrics
        .iter()
        .map(|m| Weighted::new((), 1).with_report(m.clone()))
        .collect();
    let metas = [EndpointInfo::new(1, 1), EndpointInfo::new(2, 1)];
    let endpoints = Candidates::new(&metas, &services);
    let picker = ReportWeighted::with_seed(ReportWeights::default(), 1);
    let table = picker.prepare(&metas);

    let tick = |secs| async move { tokio::time::advance(Duration::from_secs(secs)).await };
    // Same utilisation, three times the queries: three times the capacity.
    for _ in 0..5 {
        report(&metrics[0], 300.0, 0.5, 0.0);
        report(&metrics[1], 100.0, 0.5, 0.0);
        let s = shares(&picker, &table, &endpoints, 1000);
        assert!(
            (s[0] - 0.5).abs() < 0.01,
            "round robin in the blackout: {s:?}"
        );
        tick(2).await;
    }
    report(&metrics[0], 300.0, 0.5, 0.0);
    report(&metrics[1], 100.0, 0.5, 0.0);
    tick(1).await;
    let _ = shares(&picker, &table, &endpoints, 1);
    assert!(table.is_weighted());
    let s = shares(&picker, &table, &endpoints, 3200);
    assert!((s[0] - 0.75).abs() < 0.02, "{s:?}");

    // Reports stop: after the expiry the picker is round robin again.
    tick(181).await;
    let _ = shares(&picker, &table, &endpoints, 1);
    assert!(!table.is_weighted());
}

#[tokio::test(start_paused = true)]
async fn errors_cost_weight_and_silent_endpoints_get_the_mean() {
    let metrics: Vec<ReportCell> = (0..3).map(|_| ReportCell::new()).collect();
    let services: Vec<Weighted<()>> = metrics
        .iter()
        .map(|m| Weighted::new((), 1).with_report(m.clone()))
        .collect();
    let metas = [
        EndpointInfo::new(1, 1),
        EndpointInfo::new(2, 1),
        EndpointInfo::new(3, 1),
    ];
    let endpoints = Candidates::new(&metas, &services);
    let settings = ReportWeights {
        blackout_period: Duration::ZERO,
        ..ReportWeights::default()
    };
    let picker = ReportWeighted::with_seed(settings, 2);
    let table = picker.prepare(&metas);
    // 0: 100 / (0.5 + 50/100) = 100; 1: 100 / 0.5 = 200; 2: no report → mean 150.
    report(&metrics[0], 100.0, 0.5, 50.0);
    report(&metrics[1], 100.0, 0.5, 0.0);
    let s = shares(&picker, &table, &endpoints, 9600);
    let expect = [100.0 / 450.0, 200.0 / 450.0, 150.0 / 450.0];
    for (got, want) in s.iter().zip(expect) {
        assert!((got - want).abs() < 0.02, "{s:?} vs {expect:?}");
    }
}

#[test]
fn fewer_than_two_weights_is_round_robin_and_weight_zero_is_skipped() {
    assert_eq!(schedule(&[0.0, 5.0, 0.0]), None);
    let order = schedule(&[1.0, 3.0]).unwrap();
    assert_eq!(
        order.iter().filter(|&&i| i == 1).count() * 4,
        order.len() * 3
    );
    // Smooth: the heavier endpoint never waits more than two slots.
    assert!(order.windows(3).all(|w| w.contains(&1)));

    let services = [Weighted::new((), 1), Weighted::new((), 1)];
    let metas = [EndpointInfo::new(1, 0), EndpointInfo::new(2, 1)];
    let endpoints = Candidates::new(&metas, &services);
    let picker = ReportWeighted::with_seed(ReportWeights::default(), 3);
    let table = picker.prepare(&metas);
    for _ in 0..10 {
        assert_eq!(picker.pick(&table, &endpoints, &()), Some(1));
    }
    let none: [Weighted<()>; 0] = [];
    assert_eq!(
        picker.pick(&picker.prepare(&[]), &Candidates::new(&[], &none), &()),
        None
    );
}
