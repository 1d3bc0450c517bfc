use super::*;

const VLLM: &str = r#"# HELP vllm:num_requests_waiting Number of requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama"} 3.0
vllm:num_requests_running{engine="0",model_name="llama"} 7.0
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.42
vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql,chat",waiting_lora_adapters="code"} 1.7e9
vllm:lora_requests_info{max_lora="4",running_lora_adapters="old",waiting_lora_adapters=""} 1.6e9
vllm:prompt_tokens_total{model_name="llama"} 1234 1700000000000
"#;

#[test]
fn vllm_names() {
    let report = Mapping::default().read(VLLM.as_bytes()).unwrap();
    assert_eq!(
        (report.queue, report.running, report.kv_cache_use),
        (Some(3), Some(7), Some(0.42))
    );
    assert_eq!(report.max_adapters, Some(4));
    assert_eq!(
        report.adapters,
        Some(vec!["sql".into(), "chat".into(), "code".into()])
    );
    assert_eq!(report.models, Some(vec!["llama".into()]));
}

#[test]
fn sglang_and_tgi_names() {
    let page = "sglang:num_queue_reqs{model_name=\"m\"} 2\nsglang:num_running_reqs{model_name=\"m\"} 4\nsglang:token_usage{model_name=\"m\"} 0.5\n";
    let report = Mapping::default().read(page.as_bytes()).unwrap();
    assert_eq!(
        (report.queue, report.running, report.kv_cache_use),
        (Some(2), Some(4), Some(0.5))
    );
    let page = "tgi_queue_size 9\ntgi_batch_current_size 3\n";
    let report = Mapping::default().read(page.as_bytes()).unwrap();
    assert_eq!(
        (report.queue, report.running, report.kv_cache_use),
        (Some(9), Some(3), None)
    );
}

#[test]
fn user_mappings() {
    let mapping = Mapping::custom(|s, r| {
        if s.name == "my_queue" {
            r.queue = Some(s.value as u32);
        }
    });
    let report = mapping
        .read(b"my_queue 5\nvllm:num_requests_waiting 1\n")
        .unwrap();
    assert_eq!(report.queue, Some(5));
    let both = Mapping::with(|s, r| {
        if s.name == "my_kv" {
            r.kv_cache_use = Some(s.value as f32);
        }
    });
    let report = both
        .read(b"my_kv 0.5\nvllm:num_requests_waiting 1\n")
        .unwrap();
    assert_eq!((report.queue, report.kv_cache_use), (Some(1), Some(0.5)));
}

#[test]
fn labels_with_escapes_and_commas() {
    let mut out = String::new();
    let sample = Sample {
        name: "x",
        labels: r#"a="1,2",b="q\"uote\\",c="""#,
        value: 1.0,
    };
    assert!(sample.label("a", &mut out) && out == "1,2");
    assert!(sample.label("b", &mut out) && out == "q\"uote\\");
    assert!(sample.label("c", &mut out) && out.is_empty());
    assert!(!sample.label("d", &mut out));
}

#[test]
fn garbage_pages_are_rejected_whole() {
    for bad in [
        &b"vllm:num_requests_waiting three\n"[..],
        b"vllm:num_requests_waiting{model=\"x 3\n",
        b"{} 3\n",
        b"9abc 3\n",
        b"name{a=\"b\"}3\n",
        b"name\n",
        b"\xff\xfe\n",
    ] {
        assert!(
            Mapping::default().read(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let page = b"vllm:num_requests_waiting 1\nvllm:num_requests_running x\n";
    let error = Mapping::default().read(page).unwrap_err();
    assert_eq!(error.line(), 2);
    // Special values parse; a NaN queue counts as 0.
    let report = Mapping::default()
        .read(b"vllm:num_requests_waiting NaN\nvllm:kv_cache_usage_perc +Inf\n")
        .unwrap();
    assert_eq!((report.queue, report.kv_cache_use), (Some(0), None));
}
