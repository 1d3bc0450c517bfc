//! The OpenAI-compatible requests the emulator reads and the answers it
//! writes: whole JSON bodies, or server-sent events token by token, in
//! OpenAI's shapes (ids, `object`, `created`, `usage`, errors).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Which API a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    /// `/v1/completions`: a `prompt`.
    Completions,
    /// `/v1/chat/completions`: `messages`.
    Chat,
}

impl Api {
    /// The `object` of a whole answer.
    fn whole_object(self) -> &'static str {
        match self {
            Api::Completions => "text_completion",
            Api::Chat => "chat.completion",
        }
    }

    /// The `object` of a streamed chunk (completions use the same word).
    fn chunk_object(self) -> &'static str {
        match self {
            Api::Completions => "text_completion",
            Api::Chat => "chat.completion.chunk",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Api::Completions => "cmpl",
            Api::Chat => "chatcmpl",
        }
    }
}

/// Answers without `max_tokens` have this many tokens.
const DEFAULT_MAX_TOKENS: u64 = 16;

/// Answers have at most this many tokens, whatever is asked.
pub(crate) const MAX_TOKENS: u64 = 4096;

/// What the engine needs of a request.
#[derive(Debug)]
pub(crate) struct Generate {
    /// The prompt as the model reads it: a chat rendered with its roles.
    pub(crate) prompt: String,
    pub(crate) max_tokens: usize,
    pub(crate) stream: bool,
    /// `stream_options.include_usage`: a last chunk with the usage.
    pub(crate) include_usage: bool,
    pub(crate) model: Option<String>,
}

/// Reads a request body; the error is a 400 answer's.
pub(crate) fn parse(api: Api, body: &[u8]) -> Result<Generate, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::invalid("the body must be a JSON object"));
    };
    let prompt = match api {
        Api::Completions => match fields.get("prompt") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .map(|p| {
                    p.as_str()
                        .ok_or_else(|| ApiError::invalid("`prompt` must be text"))
                })
                .collect::<Result<String, _>>()?,
            _ => return Err(ApiError::invalid("`prompt` must be text")),
        },
        Api::Chat => {
            let Some(Value::Array(messages)) = fields.get("messages") else {
                return Err(ApiError::invalid("`messages` must be a list"));
            };
            let flag = |name: &str, default: bool| match fields.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(ApiError::invalid(format!("`{name}` must be true or false"))),
            };
            let continued = flag("continue_final_message", false)?;
            let generation_prompt = flag("add_generation_prompt", true)?;
            if continued && generation_prompt {
                return Err(ApiError::invalid(
                    "`continue_final_message` needs `add_generation_prompt: false`",
                ));
            }
            let mut prompt = String::new();
            for (i, message) in messages.iter().enumerate() {
                let role = message
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::invalid("every message needs a `role`"))?;
                let last = i + 1 == messages.len();
                if continued && last && role != "assistant" {
                    return Err(ApiError::invalid(
                        "`continue_final_message` needs an assistant message last",
                    ));
                }
                prompt.push_str("<|");
                prompt.push_str(role);
                prompt.push_str("|>\n");
                prompt.push_str(&content(message.get("content"))?);
                // The message continued stays open: its answer follows on.
                if !(continued && last) {
                    prompt.push('\n');
                }
            }
            if generation_prompt {
                prompt.push_str("<|assistant|>\n");
            }
            prompt
        }
    };
    let max_tokens = match fields
        .get("max_tokens")
        .or_else(|| fields.get("max_completion_tokens"))
    {
        None | Some(Value::Null) => DEFAULT_MAX_TOKENS,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| ApiError::invalid("`max_tokens` must be a whole number"))?
            .clamp(1, MAX_TOKENS),
    };
    let stream = fields.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = fields
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    Ok(Generate {
        prompt,
        max_tokens: max_tokens as usize,
        stream,
        include_usage,
        model: fields
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// A message's content: text, or a list of parts whose text is joined.
fn content(value: Option<&Value>) -> Result<String, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect()),
        Some(_) => Err(ApiError::invalid(
            "a message's `content` must be text or a list of parts",
        )),
    }
}

/// What every chunk and the whole answer of one request share.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) api: Api,
    pub(crate) id: String,
    pub(crate) created: u64,
    pub(crate) model: String,
}

impl Head {
    /// A new answer's head: a fresh id, the time now.
    pub(crate) fn new(api: Api, model: String) -> Self {
        Self {
            api,
            id: next_id(api),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model,
        }
    }

    fn object(&self, object: &str, choices: Value) -> Value {
        json!({
            "id": self.id, "object": object, "created": self.created,
            "model": self.model, "choices": choices,
        })
    }

    /// One streamed token as an SSE event; the first of a chat carries the
    /// role.
    pub(crate) fn chunk(&self, text: &str, first: bool, finish: Option<&str>) -> String {
        let choice = match self.api {
            Api::Completions => json!({"index": 0, "text": text, "finish_reason": finish}),
            Api::Chat if first => json!({"index": 0, "finish_reason": finish,
                "delta": {"role": "assistant", "content": text}}),
            Api::Chat => json!({"index": 0, "delta": {"content": text}, "finish_reason": finish}),
        };
        event(&self.object(self.api.chunk_object(), json!([choice])))
    }

    /// The last chunk of a stream that asked for its usage.
    pub(crate) fn usage_chunk(&self, usage: &Usage) -> String {
        let mut chunk = self.object(self.api.chunk_object(), json!([]));
        chunk["usage"] = usage.to_json();
        event(&chunk)
    }

    /// A whole answer.
    pub(crate) fn whole(&self, text: &str, usage: &Usage) -> Value {
        let choice = match self.api {
            Api::Completions => json!({"index": 0, "text": text, "finish_reason": "length"}),
            Api::Chat => json!({"index": 0, "finish_reason": "length",
                "message": {"role": "assistant", "content": text}}),
        };
        let mut whole = self.object(self.api.whole_object(), json!([choice]));
        whole["usage"] = usage.to_json();
        whole
    }
}

/// Tokens one request read, found cached, and wrote.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: usize,
    pub(crate) cached_tokens: usize,
    pub(crate) completion_tokens: usize,
}

impl Usage {
    fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        })
    }
}

fn event(body: &Value) -> String {
    format!("data: {body}\n\n")
}

/// The end of a stream.
pub(crate) const DONE: &str = "data: [DONE]\n\n";

/// A unique id: the API's prefix, this process's random part, a counter.
fn next_id(api: Api) -> String {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // std's hasher keys are random per process; that is all the randomness
    // an id needs, and it never touches the answers' words.
    let process = *PROCESS.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    let n = COUNTER.fetch_add(1, Relaxed);
    format!("{}-{process:016x}{n:08x}", api.id_prefix())
}

/// An error answer: its status and OpenAI's `error` object.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: http::StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: http::StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
        }
    }

    /// 400: a body the server cannot read.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            http::StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request_error",
            message,
        )
    }

    /// The body: `{"error": {"message", "type", "code"}}`.
    pub(crate) fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "code": self.code}})
    }
}
