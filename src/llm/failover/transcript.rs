//! What a streamed answer has delivered so far, event by event; how the
//! events of a continuation are rewritten into the first answer's; and the
//! request that continues it.

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// The two routes whose answers can be continued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    /// `/v1/completions`: the text delivered is appended to the prompt.
    Completions,
    /// `/v1/chat/completions`: the text delivered becomes the assistant's
    /// message, continued in place (`continue_final_message`).
    Chat,
}

/// Tokens a continuation may ask for: what the request asked for, less what
/// was delivered; `None` when the request set no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Remaining {
    /// The request set no limit: the continuation sets none either.
    Unlimited,
    /// This many tokens are left (more than zero).
    Tokens(u64),
    /// Everything asked for was delivered: only the final event is missing.
    None,
}

/// The first answer's `id`, `created` and `model`, which every event the
/// client sees carries.
#[derive(Clone, Debug, Default)]
struct Ids {
    id: Option<Value>,
    created: Option<Value>,
    model: Option<Value>,
}

/// One streamed answer as the client has seen it so far, across legs.
#[derive(Debug)]
pub(crate) struct Transcript {
    api: Api,
    ids: Ids,
    /// The text delivered, in order.
    text: String,
    /// Events that carried text: the tokens delivered (servers stream one
    /// token an event; a server that batches tokens makes this an
    /// undercount, and the usage then an estimate).
    tokens: u64,
    /// Tokens delivered before the current leg began.
    tokens_before: u64,
    /// The current leg: 0 for the server first asked.
    leg: u32,
    /// Every event so far could be read and continued: one choice, text
    /// only (no tool calls), JSON throughout.
    continuable: bool,
    /// A choice's `finish_reason` came.
    finished: bool,
    /// `[DONE]` came.
    done: bool,
    /// The server sent an error event: it ended the answer on purpose.
    server_error: bool,
}

/// The `data` of one server-sent event (its `data:` lines joined), or
/// `None` for an event without data (a comment, a keep-alive).
fn data(event: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let mut out: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("data:") {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            match &mut out {
                Some(data) => {
                    data.push('\n');
                    data.push_str(rest);
                }
                None => out = Some(rest.to_owned()),
            }
        }
    }
    out
}

/// A non-empty string, or nothing.
fn text_of(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|t| !t.is_empty())
}

/// Whether a delta field other than the role and the text carries
/// something (tool calls, reasoning): such answers are not continued.
fn other_content(delta: &Map<String, Value>) -> bool {
    delta.iter().any(|(key, value)| {
        key != "role"
            && key != "content"
            && !value.is_null()
            && value.as_str() != Some("")
            && value.as_array().is_none_or(|a| !a.is_empty())
    })
}

impl Transcript {
    pub(crate) fn new(api: Api) -> Self {
        Self {
            api,
            ids: Ids::default(),
            text: String::new(),
            tokens: 0,
            tokens_before: 0,
            leg: 0,
            continuable: true,
            finished: false,
            done: false,
            server_error: false,
        }
    }

    /// Whether the answer ended as a server ends one on purpose: `[DONE]`,
    /// a final `finish_reason`, or an error event of its own.
    pub(crate) fn complete(&self) -> bool {
        self.done || self.finished || self.server_error
    }

    /// Whether `[DONE]` came.
    pub(crate) fn done(&self) -> bool {
        self.done
    }

    /// Whether the answer so far can be continued.
    pub(crate) fn continuable(&self) -> bool {
        self.continuable && !self.server_error
    }

    /// Tokens delivered so far.
    pub(crate) fn tokens(&self) -> u64 {
        self.tokens
    }

    /// A new leg begins: its events are rewritten into the first answer's.
    pub(crate) fn next_leg(&mut self) {
        self.leg += 1;
        self.tokens_before = self.tokens;
    }

    /// Reads one complete event (up to its blank line) and returns what the
    /// client gets for it: the event as it came (first leg), rewritten
    /// (later legs), or nothing (a continuation's role-only opening).
    pub(crate) fn event(&mut self, event: Bytes) -> Option<Bytes> {
        let Some(data) = data(&event) else {
            return Some(event);
        };
        if data.trim() == "[DONE]" {
            self.done = true;
            return Some(event);
        }
        let Ok(mut value) = serde_json::from_str::<Value>(&data) else {
            // Text the router cannot read cannot be continued either.
            self.continuable = false;
            return Some(event);
        };
        let Some(object) = value.as_object_mut() else {
            self.continuable = false;
            return Some(event);
        };
        if object.contains_key("error") {
            self.server_error = true;
            return Some(event);
        }
        let later = self.leg > 0;
        if later {
            for (key, kept) in [
                ("id", &self.ids.id),
                ("created", &self.ids.created),
                ("model", &self.ids.model),
            ] {
                if let (Some(kept), Some(field)) = (kept, object.get_mut(key)) {
                    *field = kept.clone();
                }
            }
        } else {
            for (key, kept) in [
                ("id", &mut self.ids.id),
                ("created", &mut self.ids.created),
                ("model", &mut self.ids.model),
            ] {
                if kept.is_none() {
                    *kept = object.get(key).cloned();
                }
            }
        }
        let mut empty = false;
        if let Some(choices) = object.get_mut("choices").and_then(Value::as_array_mut) {
            for choice in choices.iter_mut() {
                let Some(choice) = choice.as_object_mut() else {
                    self.continuable = false;
                    continue;
                };
                if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                    self.continuable = false;
                }
                let unfinished = choice.get("finish_reason").is_none_or(Value::is_null);
                let no_logprobs = choice.get("logprobs").is_none_or(Value::is_null);
                if !unfinished {
                    self.finished = true;
                }
                let text = match self.api {
                    Api::Completions => text_of(choice.get("text")).map(str::to_owned),
                    Api::Chat => match choice.get_mut("delta").and_then(Value::as_object_mut) {
                        Some(delta) => {
                            if other_content(delta) {
                                self.continuable = false;
                            }
                            if later {
                                delta.remove("role");
                                empty = delta.values().all(|v| v.is_null() || v == "")
                                    && unfinished
                                    && no_logprobs;
                            }
                            text_of(delta.get("content")).map(str::to_owned)
                        }
                        None => None,
                    },
                };
                if let Some(text) = text {
                    self.text.push_str(&text);
                    self.tokens += 1;
                }
            }
            if choices.len() != 1 {
                empty = false;
            }
        }
        if !later {
            return Some(event);
        }
        if empty && object.get("usage").is_none_or(Value::is_null) {
            return None;
        }
        if let Some(usage) = object.get_mut("usage").and_then(Value::as_object_mut) {
            self.fold_usage(usage);
        }
        Some(Bytes::from(format!("data: {value}\n\n")))
    }

    /// A continuation's usage counts the text delivered before it as
    /// prompt; the client's answer counts it as completion. The total is
    /// the same.
    fn fold_usage(&self, usage: &mut Map<String, Value>) {
        let before = self.tokens_before;
        let prompt = usage.get("prompt_tokens").and_then(Value::as_u64);
        let completion = usage.get("completion_tokens").and_then(Value::as_u64);
        if let (Some(prompt), Some(completion)) = (prompt, completion) {
            let first = prompt.saturating_sub(before);
            usage.insert("prompt_tokens".into(), first.into());
            usage.insert("completion_tokens".into(), (completion + before).into());
            if let Some(cached) = usage
                .get_mut("prompt_tokens_details")
                .and_then(|d| d.get_mut("cached_tokens"))
            {
                if let Some(n) = cached.as_u64() {
                    *cached = n.min(first).into();
                }
            }
        }
    }

    /// What is left of the request's token limit.
    pub(crate) fn remaining(&self, request: &Value) -> Remaining {
        let limit = ["max_tokens", "max_completion_tokens"]
            .iter()
            .filter_map(|key| request.get(key).and_then(Value::as_u64))
            .min();
        match limit {
            None => Remaining::Unlimited,
            Some(limit) if limit > self.tokens => Remaining::Tokens(limit - self.tokens),
            Some(_) => Remaining::None,
        }
    }

    /// The request that continues the answer on another server: the
    /// prompt followed by the text delivered, with the token limits
    /// reduced by the tokens delivered. `None` when the request cannot be
    /// continued (a prompt of token ids, a last message of parts).
    pub(crate) fn continuation(&self, request: &Value) -> Option<Value> {
        let mut next = request.clone();
        let fields = next.as_object_mut()?;
        for key in ["max_tokens", "max_completion_tokens", "min_tokens"] {
            if let Some(n) = fields.get(key).and_then(Value::as_u64) {
                fields.insert(key.into(), n.saturating_sub(self.tokens).into());
            }
        }
        if self.text.is_empty() {
            return Some(next);
        }
        match self.api {
            Api::Completions => {
                let prompt = match fields.get("prompt")? {
                    Value::String(text) => text.clone(),
                    Value::Array(parts) if parts.len() == 1 => parts[0].as_str()?.to_owned(),
                    _ => return None,
                };
                fields.insert("prompt".into(), Value::String(prompt + &self.text));
            }
            Api::Chat => {
                let continued = fields.get("continue_final_message") == Some(&Value::Bool(true));
                let messages = fields.get_mut("messages")?.as_array_mut()?;
                if continued {
                    let last = messages.last_mut()?.as_object_mut()?;
                    let content = last.get("content")?.as_str()?.to_owned();
                    last.insert("content".into(), Value::String(content + &self.text));
                } else {
                    messages.push(json!({"role": "assistant", "content": self.text}));
                }
                fields.insert("continue_final_message".into(), Value::Bool(true));
                fields.insert("add_generation_prompt".into(), Value::Bool(false));
            }
        }
        Some(next)
    }

    /// The last events of an answer that delivered every token it asked
    /// for but lost its final event: a final chunk (`finish_reason`
    /// `length`) and `[DONE]`.
    pub(crate) fn final_events(&self) -> Bytes {
        let choice = match self.api {
            Api::Completions => json!({"index": 0, "text": "", "finish_reason": "length"}),
            Api::Chat => json!({"index": 0, "delta": {}, "finish_reason": "length"}),
        };
        let object = match self.api {
            Api::Completions => "text_completion",
            Api::Chat => "chat.completion.chunk",
        };
        let chunk = json!({
            "id": self.ids.id, "object": object, "created": self.ids.created,
            "model": self.ids.model, "choices": [choice],
        });
        Bytes::from(format!("data: {chunk}\n\ndata: [DONE]\n\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: &str, text: &str, first: bool, finish: Option<&str>) -> Bytes {
        let delta = if first {
            json!({"role": "assistant", "content": text})
        } else {
            json!({"content": text})
        };
        let value = json!({"id": id, "object": "chat.completion.chunk", "created": 7,
            "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        Bytes::from(format!("data: {value}\n\n"))
    }

    #[test]
    fn a_continuation_speaks_as_the_first_answer() {
        let mut t = Transcript::new(Api::Chat);
        assert!(t.event(chunk("a", " one", true, None)).is_some());
        assert!(t.event(chunk("a", " two", false, None)).is_some());
        assert_eq!((t.tokens(), t.text.as_str()), (2, " one two"));
        t.next_leg();
        // The continuation's role-only opening is dropped.
        assert!(t.event(chunk("b", "", true, None)).is_none());
        let out = t
            .event(chunk("b", " three", false, Some("length")))
            .unwrap();
        let out: Value = serde_json::from_str(data(&out).unwrap().as_str()).unwrap();
        assert_eq!(out["id"], "a");
        assert_eq!(out["choices"][0]["delta"], json!({"content": " three"}));
        assert!(t.complete());
        let usage = json!({"id": "b", "choices": [], "usage": {"prompt_tokens": 12,
            "completion_tokens": 1, "total_tokens": 13,
            "prompt_tokens_details": {"cached_tokens": 12}}});
        let out = t.event(Bytes::from(format!("data: {usage}\n\n"))).unwrap();
        let out: Value = serde_json::from_str(data(&out).unwrap().as_str()).unwrap();
        assert_eq!(out["id"], "a");
        assert_eq!(out["usage"]["prompt_tokens"], 10);
        assert_eq!(out["usage"]["completion_tokens"], 3);
        assert_eq!(out["usage"]["total_tokens"], 13);
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 10);
    }

    #[test]
    fn continuations_carry_the_text_and_the_tokens_left() {
        let mut t = Transcript::new(Api::Chat);
        t.event(chunk("a", " one", true, None));
        let request = json!({"messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5, "max_completion_tokens": 6, "stream": true});
        let next = t.continuation(&request).unwrap();
        assert_eq!(next["max_tokens"], 4);
        assert_eq!(next["max_completion_tokens"], 5);
        assert_eq!(
            next["messages"][1],
            json!({"role": "assistant", "content": " one"})
        );
        assert_eq!(next["continue_final_message"], true);
        assert_eq!(next["add_generation_prompt"], false);
        assert_eq!(t.remaining(&request), Remaining::Tokens(4));

        let mut t = Transcript::new(Api::Completions);
        let text = json!({"choices": [{"index": 0, "text": " w", "finish_reason": null}]});
        t.event(Bytes::from(format!("data: {text}\n\n")));
        let request = json!({"prompt": ["Once"], "max_tokens": 1});
        assert_eq!(t.continuation(&request).unwrap()["prompt"], "Once w");
        assert_eq!(t.remaining(&request), Remaining::None);
        assert_eq!(t.remaining(&json!({})), Remaining::Unlimited);
        assert!(t.continuation(&json!({"prompt": [1, 2]})).is_none());
        assert!(t.continuation(&json!("not an object")).is_none());
    }

    #[test]
    fn answers_that_cannot_be_continued_say_so() {
        let cases = [
            "data: not json\n\n".to_owned(),
            format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 1, "delta": {"content": "x"}}]})
            ),
            format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"id": "t"}]}}]})
            ),
            format!("data: {}\n\n", json!({"error": {"message": "bad"}})),
            "data: [1, 2]\n\n".to_owned(),
        ];
        for case in cases {
            let mut t = Transcript::new(Api::Chat);
            assert_eq!(
                t.event(Bytes::from(case.clone())),
                Some(Bytes::from(case.clone()))
            );
            assert!(!t.continuable(), "{case}");
        }
        let mut t = Transcript::new(Api::Chat);
        t.event(Bytes::from_static(b": keep-alive\n\n"));
        t.event(Bytes::from_static(b"data: [DONE]\n\n"));
        assert!(t.continuable() && t.done() && t.complete());
    }

    #[test]
    fn the_final_events_of_an_answer_cut_after_its_last_token() {
        let mut t = Transcript::new(Api::Chat);
        t.event(chunk("a", " one", true, None));
        let text = String::from_utf8(t.final_events().to_vec()).unwrap();
        assert!(text.contains("\"id\":\"a\"") && text.contains("\"finish_reason\":\"length\""));
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
}
