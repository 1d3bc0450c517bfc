//! The OpenAI-compatible requests the emulator reads and the answers it
//! writes: whole JSON bodies, or server-sent events token by token.

use serde_json::{json, Value};

/// Which API a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    /// `/v1/completions`: a `prompt`.
    Completions,
    /// `/v1/chat/completions`: `messages`.
    Chat,
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
    pub(crate) model: Option<String>,
}

/// Reads a request body; the error is the message of a 400 answer.
pub(crate) fn parse(api: Api, body: &[u8]) -> Result<Generate, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(fields) = value else {
        return Err("the body must be a JSON object".into());
    };
    let prompt = match api {
        Api::Completions => match fields.get("prompt") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .map(|p| p.as_str().ok_or("`prompt` must be text"))
                .collect::<Result<String, _>>()?,
            _ => return Err("`prompt` must be text".into()),
        },
        Api::Chat => {
            let Some(Value::Array(messages)) = fields.get("messages") else {
                return Err("`messages` must be a list".into());
            };
            let mut prompt = String::new();
            for message in messages {
                let role = message
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or("every message needs a `role`")?;
                prompt.push_str("<|");
                prompt.push_str(role);
                prompt.push_str("|>\n");
                prompt.push_str(&content(message.get("content"))?);
                prompt.push('\n');
            }
            prompt.push_str("<|assistant|>\n");
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
            .ok_or("`max_tokens` must be a whole number")?
            .clamp(1, MAX_TOKENS),
    };
    Ok(Generate {
        prompt,
        max_tokens: max_tokens as usize,
        stream: fields.get("stream").and_then(Value::as_bool) == Some(true),
        model: fields
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// A message's content: text, or a list of parts whose text is joined.
fn content(value: Option<&Value>) -> Result<String, String> {
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect()),
        Some(_) => Err("a message's `content` must be text or a list of parts".into()),
    }
}

/// One streamed token as an SSE event.
pub(crate) fn chunk(api: Api, id: &str, model: &str, text: &str, finish: Option<&str>) -> String {
    let body = match api {
        Api::Completions => json!({
            "id": id, "object": "text_completion", "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish}],
        }),
        Api::Chat => json!({
            "id": id, "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
        }),
    };
    format!("data: {body}\n\n")
}

/// The end of a stream.
pub(crate) const DONE: &str = "data: [DONE]\n\n";

/// A whole answer.
pub(crate) fn whole(api: Api, id: &str, model: &str, text: &str, usage: Value) -> Value {
    match api {
        Api::Completions => json!({
            "id": id, "object": "text_completion", "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
            "usage": usage,
        }),
        Api::Chat => json!({
            "id": id, "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "length"}],
            "usage": usage,
        }),
    }
}

/// An error body in OpenAI's shape.
pub(crate) fn error(message: &str) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error"}})
}
