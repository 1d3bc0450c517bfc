//! The Prometheus text format, as far as routing needs it, and the mapping
//! of model servers' names onto a [`Report`].

use std::fmt;

use crate::endpoint::Report;

/// One sample line of a Prometheus page: `name{labels} value [timestamp]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample<'a> {
    /// The metric name (`vllm:num_requests_waiting`).
    pub name: &'a str,
    /// The labels as written between the braces, unparsed; read one with
    /// [`Sample::label`].
    pub labels: &'a str,
    /// The value (`NaN` and `±Inf` as written).
    pub value: f64,
}

impl<'a> Sample<'a> {
    /// The value of label `name`, unescaped into `out` (which is cleared
    /// first); `false` when the sample has no such label.
    pub fn label(&self, name: &str, out: &mut String) -> bool {
        out.clear();
        let mut rest = self.labels;
        while let Some((key, after)) = rest.split_once('=') {
            let key = key.trim().trim_start_matches(',').trim();
            let Some(after) = after.trim_start().strip_prefix('"') else {
                return false;
            };
            let mut escaped = false;
            let mut end = None;
            for (i, c) in after.char_indices() {
                match (escaped, c) {
                    (true, c) => {
                        if key == name {
                            out.push(if c == 'n' { '\n' } else { c });
                        }
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    (false, c) => {
                        if key == name {
                            out.push(c);
                        }
                    }
                }
            }
            let Some(end) = end else {
                return false;
            };
            if key == name {
                return true;
            }
            out.clear();
            rest = &after[end + 1..];
        }
        false
    }
}

/// A Prometheus page that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadPage {
    line: usize,
}

impl BadPage {
    /// The first line (from 1) that could not be read; 0 when the page is
    /// not UTF-8.
    pub fn line(&self) -> usize {
        self.line
    }
}

impl fmt::Display for BadPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str("bad metrics page: not UTF-8")
        } else {
            write!(f, "bad metrics page: line {} is not a sample", self.line)
        }
    }
}

impl std::error::Error for BadPage {}

/// Reads every sample of a page in the Prometheus text format, calling
/// `each` for each; comments (`# HELP`, `# TYPE`, `# EOF`) and empty lines
/// are skipped. The whole page is checked before `each` sees a sample: a
/// page with a malformed line is rejected as a whole, so that half a page
/// is never recorded.
///
/// Written here rather than taken from a crate: the crate we looked at
/// (prometheus-parse 0.2) rejects the `:` of every vLLM and SGLang name
/// and splits quoted label values on commas. Trailing content after a
/// sample's value (a timestamp, an OpenMetrics exemplar) is ignored.
///
/// ```
/// let page = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} 3\n";
/// let mut seen = Vec::new();
/// tower_lb::report::parse_page(page.as_bytes(), |s| seen.push((s.name.to_owned(), s.value))).unwrap();
/// assert_eq!(seen, [("vllm:num_requests_waiting".to_owned(), 3.0)]);
/// ```
pub fn parse_page(page: &[u8], mut each: impl FnMut(&Sample<'_>)) -> Result<(), BadPage> {
    let text = std::str::from_utf8(page).map_err(|_| BadPage { line: 0 })?;
    for (n, line) in text.lines().enumerate() {
        parse_line(line).map_err(|()| BadPage { line: n + 1 })?;
    }
    for line in text.lines() {
        if let Ok(Some(sample)) = parse_line(line) {
            each(&sample);
        }
    }
    Ok(())
}

fn parse_line(line: &str) -> Result<Option<Sample<'_>>, ()> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(());
    }
    let mut rest = &line[name_end..];
    let mut labels = "";
    if let Some(after) = rest.strip_prefix('{') {
        let end = labels_end(after).ok_or(())?;
        labels = &after[..end];
        rest = &after[end + 1..];
    }
    if !rest.starts_with([' ', '\t']) {
        return Err(());
    }
    let value = rest.split_whitespace().next().ok_or(())?;
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| ())?,
    };
    Ok(Some(Sample {
        name,
        labels,
        value,
    }))
}

/// The index of the `}` that closes a label set, skipping quoted values.
fn labels_end(text: &str) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in text.char_indices() {
        match (quoted, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => quoted = false,
            (false, _, '"') => quoted = true,
            (false, _, '}') => return Some(i),
            _ => {}
        }
    }
    None
}

type UserMapping = dyn Fn(&Sample<'_>, &mut Report) + Send + Sync;

/// Which metric names fill which fact of a [`Report`].
///
/// The built-in mapping ([`Mapping::default`]) knows the names of vLLM,
/// SGLang and TGI at once (a page holds one server's names, so they do not
/// clash):
///
/// | fact | vLLM | SGLang | TGI |
/// |---|---|---|---|
/// | queue | `vllm:num_requests_waiting` | `sglang:num_queue_reqs` | `tgi_queue_size` |
/// | running | `vllm:num_requests_running` | `sglang:num_running_reqs` | `tgi_batch_current_size` |
/// | KV-cache use | `vllm:kv_cache_usage_perc`, `vllm:gpu_cache_usage_perc` | `sglang:token_usage` | — |
/// | adapters | `vllm:lora_requests_info` (`max_lora`, `running_lora_adapters`, `waiting_lora_adapters`) | — | — |
/// | models | label `model_name` of the samples above | | |
///
/// Samples of one name with several label sets (one per model) add up for
/// the queue and running requests; the KV use is their maximum. Of several
/// `vllm:lora_requests_info` samples, the one with the largest value (the
/// latest timestamp, as vLLM writes it) counts. A fact whose names are
/// absent from the page is not reported, so it keeps its last value.
///
/// [`Mapping::with`] adds a user mapping that runs after the built-in one
/// for each sample and may set any field.
#[derive(Clone, Default)]
pub struct Mapping {
    user: Option<std::sync::Arc<UserMapping>>,
    builtin_off: bool,
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("builtin", &!self.builtin_off)
            .field("user", &self.user.is_some())
            .finish()
    }
}

impl Mapping {
    /// Only `map`: the built-in names are not read.
    pub fn custom(map: impl Fn(&Sample<'_>, &mut Report) + Send + Sync + 'static) -> Self {
        Self {
            user: Some(std::sync::Arc::new(map)),
            builtin_off: true,
        }
    }

    /// The built-in names, then `map` for each sample.
    pub fn with(map: impl Fn(&Sample<'_>, &mut Report) + Send + Sync + 'static) -> Self {
        Self {
            user: Some(std::sync::Arc::new(map)),
            builtin_off: false,
        }
    }

    /// Reads a page into a report; see [`parse_page`] for what is rejected.
    pub fn read(&self, page: &[u8]) -> Result<Report, BadPage> {
        let mut report = Report::default();
        let mut label = String::new();
        let mut models: Vec<Box<str>> = Vec::new();
        let mut lora_at = f64::NEG_INFINITY;
        parse_page(page, |sample| {
            if !self.builtin_off {
                builtin(sample, &mut report, &mut label, &mut models, &mut lora_at);
            }
            if let Some(user) = &self.user {
                user(sample, &mut report);
            }
        })?;
        if !models.is_empty() {
            report.models = Some(models);
        }
        Ok(report)
    }
}

fn builtin(
    sample: &Sample<'_>,
    report: &mut Report,
    label: &mut String,
    models: &mut Vec<Box<str>>,
    lora_at: &mut f64,
) {
    let count = super::orca::count(sample.value);
    let add = |field: &mut Option<u32>| *field = Some(field.unwrap_or(0).saturating_add(count));
    let known = match sample.name {
        "vllm:num_requests_waiting" | "sglang:num_queue_reqs" | "tgi_queue_size" => {
            add(&mut report.queue);
            true
        }
        "vllm:num_requests_running" | "sglang:num_running_reqs" | "tgi_batch_current_size" => {
            add(&mut report.running);
            true
        }
        "vllm:kv_cache_usage_perc" | "vllm:gpu_cache_usage_perc" | "sglang:token_usage" => {
            if sample.value.is_finite() {
                let kv = sample.value as f32;
                report.kv_cache_use = Some(report.kv_cache_use.map_or(kv, |old| old.max(kv)));
            }
            true
        }
        "vllm:lora_requests_info" => {
            if sample.value >= *lora_at {
                *lora_at = sample.value;
                let mut adapters: Vec<Box<str>> = Vec::new();
                for name in ["running_lora_adapters", "waiting_lora_adapters"] {
                    if sample.label(name, label) {
                        for adapter in label.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                            if !adapters.iter().any(|a| &**a == adapter) {
                                adapters.push(adapter.into());
                            }
                        }
                    }
                }
                report.adapters = Some(adapters);
                if sample.label("max_lora", label) {
                    report.max_adapters = label.trim().parse().ok();
                }
            }
            false
        }
        _ => false,
    };
    if known && sample.label("model_name", label) && !models.iter().any(|m| **m == **label) {
        models.push(label.as_str().into());
    }
}

#[cfg(test)]
mod tests {
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
}
