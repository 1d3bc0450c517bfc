//! ORCA load reports of any bytes, as an `endpoint-load-metrics` header
//! (TEXT, JSON, BIN or no prefix) and as a binary `OrcaLoadReport`: never a
//! panic; a report that parses records into a metrics record without
//! leaving its documented ranges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_lb::endpoint::ReportCell;
use tower_lb::report::{parse_binary, parse_header};

fuzz_target!(|data: &[u8]| {
    let metrics = ReportCell::new();
    for parsed in [parse_header(data), parse_binary(data)] {
        if let Ok(report) = parsed {
            metrics.record(&report);
            if let Some(facts) = metrics.load() {
                assert!((0.0..=1.0).contains(&facts.kv_cache_use));
                assert!(facts.qps >= 0.0 && facts.qps.is_finite());
                assert!(facts.eps >= 0.0 && facts.eps.is_finite());
                assert!(facts.utilization >= 0.0 && facts.utilization.is_finite());
            }
        }
    }
});
