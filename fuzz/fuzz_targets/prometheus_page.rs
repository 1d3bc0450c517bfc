//! Prometheus pages of any bytes through the built-in mapping (vLLM,
//! SGLang, TGI names): never a panic; a page is read whole or rejected
//! whole, and a read page records within the documented ranges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_lb::endpoint::ReportCell;
use tower_lb::report::{parse_page, Mapping};

fuzz_target!(|data: &[u8]| {
    let mut samples = 0usize;
    let parsed = parse_page(data, |sample| {
        samples += 1;
        let mut label = String::new();
        let _ = sample.label("model_name", &mut label);
    });
    let mapped = Mapping::default().read(data);
    assert_eq!(parsed.is_ok(), mapped.is_ok(), "the mapping reads what the parser reads");
    if let Ok(report) = mapped {
        let metrics = ReportCell::new();
        metrics.record(&report);
        let facts = metrics.load().expect("just recorded");
        assert!((0.0..=1.0).contains(&facts.kv_cache_use));
        let extra = metrics.extra();
        assert!(extra.adapters.iter().all(|a| !a.is_empty()));
    } else {
        assert_eq!(samples, 0, "a rejected page yields no sample");
    }
});
