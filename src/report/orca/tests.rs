use super::*;

#[test]
fn text_reports() {
    let report = parse_header(
        b"TEXT cpu_utilization=0.5, rps_fractional=10, eps=0.5, named_metrics.num_requests_running=2,named_metrics.foo=1.5, utilization.gpu=0.3",
    )
    .unwrap();
    assert_eq!(report.utilization, Some(0.5));
    assert_eq!(
        (report.qps, report.eps, report.running),
        (Some(10.0), Some(0.5), Some(2))
    );
    assert_eq!(report.named, Some(vec![("foo".into(), 1.5)]));
    // Without a prefix, and empty.
    assert_eq!(
        parse_header(b"named_metrics.num_requests_waiting=4")
            .unwrap()
            .queue,
        Some(4)
    );
    assert!(parse_header(b"TEXT ").unwrap().is_empty());
}

#[test]
fn application_utilization_wins_over_cpu() {
    for text in [
        &b"TEXT application_utilization=0.7, cpu_utilization=0.2"[..],
        b"TEXT cpu_utilization=0.2, application_utilization=0.7",
    ] {
        assert_eq!(parse_header(text).unwrap().utilization, Some(0.7));
    }
    let cpu = parse_header(b"TEXT application_utilization=0, cpu_utilization=0.2").unwrap();
    assert_eq!(cpu.utilization, Some(0.2));
}

#[test]
fn json_reports() {
    let report = parse_header(
        br#"JSON {"rps_fractional": 3, "named_metrics": {"kv_cache_usage_perc": 0.25, "num_requests_waiting": 1}}"#,
    )
    .unwrap();
    assert_eq!(
        (report.qps, report.kv_cache_use, report.queue),
        (Some(3.0), Some(0.25), Some(1))
    );
}

#[test]
fn binary_reports() {
    let orca = OrcaLoadReport {
        cpu_utilization: 0.1,
        application_utilization: 0.4,
        rps_fractional: 100.0,
        eps: 2.0,
        named_metrics: [("num_requests_waiting".to_string(), 7.0)].into(),
        ..OrcaLoadReport::default()
    };
    let bytes = orca.encode_to_vec();
    let report = parse_binary(&bytes).unwrap();
    assert_eq!(
        (report.utilization, report.qps, report.eps),
        (Some(0.4), Some(100.0), Some(2.0))
    );
    assert_eq!(report.queue, Some(7));
    let header = format!(
        "BIN {}",
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    );
    assert_eq!(parse_header(header.as_bytes()).unwrap(), report);
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for bad in [
        &b"TEXT kv"[..],
        b"TEXT =3",
        b"TEXT a=b",
        b"TEXT a=inf",
        b"TEXT a=NaN",
        b"JSON {",
        b"JSON [1]",
        b"JSON {\"eps\": \"x\"}",
        b"BIN !!!",
        b"BIN AAAA",
        b"\xff\xfe=1",
        b"TEXT named_metrics.\xff=1",
    ] {
        assert!(
            parse_header(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(parse_binary(&[0xff, 0xff, 0xff]).is_err());
    // Out-of-range counts saturate rather than wrap.
    let report = parse_header(
        b"TEXT named_metrics.num_requests_waiting=-3, named_metrics.num_requests_running=1e30",
    )
    .unwrap();
    assert_eq!((report.queue, report.running), (Some(0), Some(u32::MAX)));
}
