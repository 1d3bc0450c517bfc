use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::endpoint::Endpoint;
use crate::endpoint::{Report, ReportCell, Weighted};
use crate::load::InFlight;

type Svc = Weighted<InFlight<()>>;

fn endpoint(report: Option<Report>) -> Svc {
    let svc = Weighted::new(InFlight::new(()), 1);
    match report {
        Some(report) => {
            let metrics = ReportCell::new();
            metrics.record(&report);
            svc.with_report(metrics)
        }
        None => svc,
    }
}

fn load(queue: u32, kv: f32) -> Option<Report> {
    Some(Report {
        queue: Some(queue),
        kv_cache_use: Some(kv),
        ..Report::default()
    })
}

fn metas(n: usize) -> Vec<EndpointInfo> {
    (0..n).map(|i| EndpointInfo::new(i as u64 + 1, 1)).collect()
}

#[tokio::test(start_paused = true)]
async fn the_least_loaded_endpoint_wins() {
    let services = [
        endpoint(load(3, 0.2)),
        endpoint(load(0, 0.1)),
        endpoint(load(9, 0.95)),
    ];
    let metas = metas(3);
    let endpoints = Candidates::new(&metas, &services);
    let scored = Scored::with_seed(1);
    for _ in 0..20 {
        assert_eq!(scored.pick(&(), &endpoints, &()), Some(1));
    }
}

#[tokio::test(start_paused = true)]
async fn ties_are_broken_at_random() {
    let services: Vec<Svc> = (0..4).map(|_| endpoint(load(1, 0.5))).collect();
    let metas = metas(4);
    let endpoints = Candidates::new(&metas, &services);
    let scored = Scored::with_seed(3);
    let mut seen = [0; 4];
    for _ in 0..400 {
        seen[scored.pick(&(), &endpoints, &()).unwrap()] += 1;
    }
    assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn stale_reports_fall_back_to_in_flight() {
    let services = [endpoint(load(0, 0.0)), endpoint(None)];
    let metas = metas(2);
    let endpoints = Candidates::new(&metas, &services);
    let scored = Scored::with_seed(1).weights(Weights {
        in_flight: 0.0,
        ..Weights::default()
    });
    // Three requests on endpoint 0, whose fresh report says it is idle; one
    // on endpoint 1, which reports nothing.
    let counter = services[0].get_ref().counter();
    let held: Vec<_> = (0..3).map(|_| counter.start()).collect();
    let _one = services[1].get_ref().counter().start();
    assert_eq!(
        scored.pick(&(), &endpoints, &()),
        Some(0),
        "fresh report wins on queue and KV"
    );
    tokio::time::advance(Duration::from_millis(250)).await;
    assert_eq!(
        scored.pick(&(), &endpoints, &()),
        Some(1),
        "stale: in flight decides"
    );
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn a_queue_with_nothing_running_is_not_believed() {
    let leaked = |queue| {
        Some(Report {
            queue: Some(queue),
            running: Some(0),
            ..Report::default()
        })
    };
    let services = [endpoint(leaked(13)), endpoint(leaked(7))];
    let metas = metas(2);
    let endpoints = Candidates::new(&metas, &services);
    let scored = Scored::with_seed(1);
    let low = RequestInfo::new().priority(-1);
    assert!(
        scored.pick_or_shed(&(), &endpoints, &low).is_ok(),
        "idle servers with leaked queues are not saturated"
    );
    let any = RequestInfo::new();
    let mut seen = [0; 2];
    for _ in 0..200 {
        seen[scored.pick(&(), &endpoints, &any).unwrap()] += 1;
    }
    assert!(seen.iter().all(|&n| n > 40), "{seen:?}");
    // With a request of this client there, the report stands.
    let _held = services[0].get_ref().counter().start();
    assert_eq!(scored.pick(&(), &endpoints, &any), Some(1));
}

#[tokio::test(start_paused = true)]
async fn saturation_sheds_low_priority_only() {
    let services = [endpoint(load(6, 0.1)), endpoint(load(0, 0.9))];
    let metas = metas(2);
    let endpoints = Candidates::new(&metas, &services);
    let scored = Scored::with_seed(1);
    let low = RequestInfo::new().priority(-1);
    let error = scored.pick_or_shed(&(), &endpoints, &low).unwrap_err();
    assert_eq!((error.eligible(), error.priority()), (2, -1));
    assert_eq!(error.retry_after(), Duration::from_secs(1));
    let high = RequestInfo::new().priority(0);
    assert!(scored
        .pick_or_shed(&(), &endpoints, &high)
        .unwrap()
        .is_some());
    // One endpoint below the limits admits everyone.
    let services = [endpoint(load(6, 0.1)), endpoint(load(5, 0.8))];
    let endpoints = Candidates::new(&metas, &services);
    assert_eq!(scored.pick_or_shed(&(), &endpoints, &low), Ok(Some(1)));
}

#[tokio::test(start_paused = true)]
async fn models_and_adapters_filter() {
    let with = |models: &[&str], adapters: &[&str], max: u32| {
        let metrics = ReportCell::new();
        metrics.record(&Report {
            queue: Some(0),
            models: Some(models.iter().map(|m| (*m).into()).collect()),
            adapters: Some(adapters.iter().map(|m| (*m).into()).collect()),
            max_adapters: Some(max),
            ..Report::default()
        });
        Weighted::new(InFlight::new(()), 1).with_report(metrics)
    };
    let services = [
        with(&["mistral"], &[], 4),
        with(&["llama"], &["a", "b"], 2),
        with(&["llama"], &["c"], 2),
    ];
    let metas = metas(3);
    let endpoints = Candidates::new(&metas, &services);
    let scored = Scored::with_seed(1);
    let pick = |facts: RequestInfo| scored.pick(&(), &endpoints, &facts);
    assert_eq!(pick(RequestInfo::new().model("mistral")), Some(0));
    assert_eq!(
        pick(RequestInfo::new().model("llama").adapter("a")),
        Some(1)
    );
    assert_eq!(
        pick(RequestInfo::new().model("llama").adapter("c")),
        Some(2)
    );
    // Not loaded anywhere: only endpoint 2 has a free slot.
    assert_eq!(
        pick(RequestInfo::new().model("llama").adapter("z")),
        Some(2)
    );
    assert_eq!(pick(RequestInfo::new().model("gpt")), None);
}

#[tokio::test(start_paused = true)]
async fn user_scorers_filters_and_hooks() {
    #[derive(Default)]
    struct Count(AtomicUsize);
    impl ScoreHook<()> for Count {
        fn before_send(&self, _: &(), endpoint: EndpointInfo) {
            assert!(endpoint.key_hash() >= 3, "only the best are picked");
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let services: Vec<Svc> = (0..4).map(|_| endpoint(load(0, 0.0))).collect();
    let metas = metas(4);
    let endpoints = Candidates::new(&metas, &services);
    let hook = Arc::new(Count::default());
    let scored = Scored::with_seed(1)
        .scorer(10.0, |_: &(), c: &Candidate<'_, Svc>| {
            (c.index as f64) / 2.0
        })
        .filter(|_: &(), s: &Svc| s.report().is_some())
        .hook(hook.clone());
    // Index 2 and 3 both clamp to 1; a NaN-free scorer keeps to [0, 1].
    for _ in 0..10 {
        let i = scored.pick(&(), &endpoints, &()).unwrap();
        assert!(i == 2 || i == 3);
    }
    let only_three = Scored::with_seed(1)
        .filter(|_: &(), s: &Svc| s.get_ref().in_flight() == 0)
        .scorer(
            1.0,
            |_: &(), c: &Candidate<'_, Svc>| if c.index == 2 { f64::NAN } else { 1.0 },
        )
        .hook(hook.clone());
    let _held = services[0].get_ref().counter().start();
    let _held1 = services[1].get_ref().counter().start();
    assert_eq!(only_three.pick(&(), &endpoints, &()), Some(3));
    assert_eq!(hook.0.load(Ordering::Relaxed), 11);
}

#[tokio::test(start_paused = true)]
async fn weighted_choice_follows_scores() {
    let services = [endpoint(load(0, 0.0)), endpoint(load(0, 0.75))];
    let metas = metas(2);
    let endpoints = Candidates::new(&metas, &services);
    let scored = Scored::with_seed(9)
        .choice(Choice::Weighted)
        .weights(Weights {
            queue: 0.0,
            kv_cache: 1.0,
            in_flight: 0.0,
            latency: 0.0,
            adapter: 0.0,
        });
    let mut seen = [0; 2];
    for _ in 0..5000 {
        seen[scored.pick(&(), &endpoints, &()).unwrap()] += 1;
    }
    // Scores 1 and 0.25: shares 80 % and 20 %.
    let share = f64::from(seen[0]) / 5000.0;
    assert!((share - 0.8).abs() < 0.03, "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn no_endpoints_and_excluded_ones() {
    let services: Vec<Svc> = Vec::new();
    let scored = Scored::with_seed(1);
    assert_eq!(
        scored.pick(&(), &Candidates::new(&[], &services), &()),
        None
    );
    let services = [endpoint(load(0, 0.0)), endpoint(load(9, 0.9))];
    let metas = [EndpointInfo::new(1, 0), EndpointInfo::new(2, 1)];
    let endpoints = Candidates::new(&metas, &services);
    assert_eq!(
        scored.pick(&(), &endpoints, &()),
        Some(1),
        "weight 0 is never picked"
    );
    assert_eq!(scored.pick(&(), &endpoints.excluding(&[2]), &()), None);
}

// ===== the time-to-first-token objective =====

mod ttft {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::endpoint::PrefillState;
    use crate::pick::llm::{BlockConfig, PromptBlocks};

    /// A model server as the TTFT picker sees it: its reports and its
    /// prefill state.
    fn server() -> (Svc, ReportCell, PrefillState) {
        let report = ReportCell::new();
        let state = PrefillState::default().with_report(report.clone());
        let svc = Weighted::new(InFlight::new(()), 1)
            .with_report(report.clone())
            .with_prefill(state.clone());
        (svc, report, state)
    }

    fn prompt(system: &str, question: &str) -> PromptBlocks {
        PromptBlocks::hash(BlockConfig::default(), "m", [system, question])
    }

    /// Teaches `state` that answers take `took` (the mean answer time).
    async fn one_answer(state: &PrefillState, took: Duration) {
        let mut guard = state.reserve(&[u64::MAX - 1], 64);
        tokio::time::advance(took).await;
        guard.answer_end();
    }

    #[tokio::test(start_paused = true)]
    async fn a_prompt_goes_where_its_prefix_is_cached() {
        let fleet: Vec<_> = (0..4).map(|_| server()).collect();
        let services: Vec<Svc> = fleet.iter().map(|s| s.0.clone()).collect();
        let metas = metas(4);
        let endpoints = Candidates::new(&metas, &services);
        let system = "You answer questions about tides. ".repeat(60);
        let held = prompt(&system, "first");
        drop(fleet[2].2.reserve(held.hashes(), held.prompt_bytes()));
        let scored: Scored<PromptBlocks, Svc> = Scored::ttft();
        for k in 0..20 {
            let request = prompt(&system, &format!("question {k}"));
            assert_eq!(scored.pick(&(), &endpoints, &request), Some(2));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hot_prompt_spreads_once_its_servers_queue_makes_another_cheaper() {
        let fleet: Vec<_> = (0..3).map(|_| server()).collect();
        let services: Vec<Svc> = fleet.iter().map(|s| s.0.clone()).collect();
        let metas = metas(3);
        let endpoints = Candidates::new(&metas, &services);
        // A 2,000-byte system prompt: 500 tokens, 50 ms to prefill at the
        // prior's 100 µs a token.
        let system = "x".repeat(2_000);
        let held = prompt(&system, "");
        drop(fleet[0].2.reserve(held.hashes(), held.prompt_bytes()));
        for (_, _, state) in &fleet {
            one_answer(state, Duration::from_millis(160)).await;
        }
        let scored: Scored<PromptBlocks, Svc> = Scored::ttft();
        let request = prompt(&system, "q");
        let calm = Report {
            queue: Some(0),
            running: Some(4),
            ..Report::default()
        };
        for (_, report, _) in &fleet {
            report.record(&calm);
        }
        assert_eq!(
            scored.pick(&(), &endpoints, &request),
            Some(0),
            "idle: the cache wins"
        );
        // Eight running and three waiting: a slot frees every 20 ms, and
        // four must: 80 ms, more than the 50 ms a miss costs elsewhere.
        fleet[0].1.record(&Report {
            queue: Some(3),
            running: Some(8),
            ..Report::default()
        });
        let now = Instant::now();
        assert!(fleet[0].2.slot_wait(now) > 75e6);
        let picked = scored.pick(&(), &endpoints, &request);
        assert!(matches!(picked, Some(1 | 2)), "{picked:?}");
        // One waiting: 2 × 20 ms = 40 ms, less than a miss: back home.
        fleet[0].1.record(&Report {
            queue: Some(1),
            running: Some(8),
            ..Report::default()
        });
        assert_eq!(scored.pick(&(), &endpoints, &request), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn replicas_that_know_nothing_agree_on_a_prompts_home() {
        let metas = metas(8);
        let homes: Vec<Option<usize>> = (0..2)
            .map(|_| {
                let services: Vec<Svc> = (0..8).map(|_| server().0).collect();
                let endpoints = Candidates::new(&metas, &services);
                let request = prompt(&"shared system prompt ".repeat(40), "q");
                Scored::<PromptBlocks, Svc>::ttft().pick(&(), &endpoints, &request)
            })
            .collect();
        assert_eq!(homes[0], homes[1]);
        // And different prompts have different homes.
        let services: Vec<Svc> = (0..8).map(|_| server().0).collect();
        let endpoints = Candidates::new(&metas, &services);
        let scored = Scored::<PromptBlocks, Svc>::ttft();
        let mut distinct: Vec<usize> = (0..40)
            .filter_map(|k| {
                scored.pick(
                    &(),
                    &endpoints,
                    &prompt(&format!("system {k} ").repeat(20), "q"),
                )
            })
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 6, "{distinct:?}");
    }
}
