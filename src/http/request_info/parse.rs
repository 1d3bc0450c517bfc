//! What routing reads of an OpenAI-compatible JSON body.

use std::time::Duration;

use serde_json::Value;

use crate::http::OwnDeadline;
use crate::pick::llm::{BlockConfig, PromptBlocks};

/// Separates a message's role from its content, and messages from each
/// other, in the hashed text: bytes that JSON text cannot hold unescaped,
/// so no content can forge a boundary.
const ROLE_END: u8 = 0x1f;
const MESSAGE_END: u8 = 0x1e;

/// The model and the prompt's blocks of a parsed body (either may be
/// missing).
pub(super) fn facts(value: &Value, config: BlockConfig) -> (Option<String>, Option<PromptBlocks>) {
    let Value::Object(fields) = value else {
        return (None, None);
    };
    let model = fields
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let name = model.as_deref().unwrap_or("");
    let blocks = if let Some(messages) = fields.get("messages").and_then(Value::as_array) {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(messages.len() * 4);
        for message in messages {
            let role = message.get("role").and_then(Value::as_str).unwrap_or("");
            parts.push(role.as_bytes());
            parts.push(std::slice::from_ref(&ROLE_END));
            match message.get("content") {
                Some(Value::String(text)) => parts.push(text.as_bytes()),
                Some(Value::Array(items)) => parts.extend(
                    items
                        .iter()
                        .filter_map(|item| item.get("text").and_then(Value::as_str))
                        .map(str::as_bytes),
                ),
                _ => {}
            }
            parts.push(std::slice::from_ref(&MESSAGE_END));
        }
        Some(PromptBlocks::hash(config, name, parts))
    } else {
        match fields.get("prompt") {
            Some(Value::String(text)) => Some(PromptBlocks::hash(config, name, [text.as_bytes()])),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => Some(
                PromptBlocks::hash(config, name, items.iter().filter_map(Value::as_str)),
            ),
            _ => None,
        }
    };
    (model, blocks.filter(|b| !b.is_empty()))
}

/// How long one attempt of this request may take by its own doing: a
/// streamed answer's head comes with its first token, so the attempt's
/// usual deadline fits (no own deadline: zero); a whole answer comes at its
/// end, after up to `max_tokens` (or `max_completion_tokens`) tokens at
/// `per_token` each, and without either limit it may take as long as the
/// server generates.
pub(super) fn own_deadline(value: &Value, per_token: Duration) -> OwnDeadline {
    if value.get("stream").and_then(Value::as_bool) == Some(true) {
        return OwnDeadline(Some(Duration::ZERO));
    }
    let tokens = ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|name| value.get(*name).and_then(Value::as_u64));
    OwnDeadline(tokens.map(|n| per_token.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))))
}
