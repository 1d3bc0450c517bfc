//! What routing reads of an OpenAI-compatible JSON body, read in place.
//!
//! Nothing builds a tree of the body: a tree of `serde_json::Value`s costs
//! tens of bytes for each value, so a 1 MiB array of small numbers would
//! briefly cost about 30 MB. Two passes of serde's visitors read it
//! instead. The first keeps the few fields routing needs (the model, the
//! stream flag, the token limits, where `stream_options` lies) and skips
//! the rest without keeping it; the second feeds the prompt's text to the
//! block hasher as it is found, keeping one message at a time, strings
//! borrowed from the body unless they hold escapes. Duplicate keys count as
//! the last one, as in a parsed tree.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::http::OwnDeadline;
use crate::pick::llm::PromptHasher;
use crate::pick::llm::{BlockConfig, PromptBlocks};

/// Separates a message's role from its content, and messages from each
/// other, in the hashed text: bytes that JSON text cannot hold unescaped,
/// so no content can forge a boundary.
const ROLE_END: u8 = 0x1f;
const MESSAGE_END: u8 = 0x1e;

/// The methods of a visitor for the JSON values it takes without reading
/// them: each kind named (`bool`, `i64`, `u64`, `f64`, `str`, `unit`, and
/// `seq` and `map`, skipped without being kept) gives `value`.
macro_rules! otherwise {
    ($value:expr; $($kind:ident),+) => { $(otherwise!(@$kind $value);)+ };
    (@bool $value:expr) => { fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> { Ok($value) } };
    (@i64 $value:expr) => { fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> { Ok($value) } };
    (@u64 $value:expr) => { fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> { Ok($value) } };
    (@f64 $value:expr) => { fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> { Ok($value) } };
    (@str $value:expr) => { fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> { Ok($value) } };
    (@unit $value:expr) => { fn visit_unit<E>(self) -> Result<Self::Value, E> { Ok($value) } };
    (@seq $value:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($value)
        }
    };
    (@map $value:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($value)
        }
    };
}

/// What the first pass keeps of a body.
#[derive(Debug, Default)]
pub(super) struct Head<'a> {
    /// The body is a JSON object.
    object: bool,
    model: Option<Scalar<'a>>,
    stream: bool,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    stream_options: Option<&'a RawValue>,
    /// How many `messages` keys there are, and whether the last one holds
    /// an array.
    messages: usize,
    messages_is_array: bool,
    prompts: usize,
}

impl<'a> Head<'a> {
    /// The first pass over `bytes`: an error when they are not JSON.
    pub(super) fn read(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The model the body names: `Err(())` when `model` is there and is
    /// neither a string nor null.
    pub(super) fn model(&self) -> Result<Option<&str>, ()> {
        match &self.model {
            None | Some(Scalar::Null) => Ok(None),
            Some(Scalar::Str(name)) => Ok(Some(name)),
            Some(_) => Err(()),
        }
    }

    /// The prompt's blocks: the second pass over the same `bytes`. A prompt
    /// shorter than a block has none, and still its length.
    pub(super) fn prompt(&self, bytes: &[u8], config: BlockConfig) -> Option<PromptBlocks> {
        if !self.object {
            return None;
        }
        let name = self.model().ok().flatten().unwrap_or("");
        let pass = PromptPass {
            hasher: PromptHasher::new(config, name),
            messages_at: if self.messages_is_array {
                self.messages
            } else {
                0
            },
            prompt_at: if self.messages_is_array {
                0
            } else {
                self.prompts
            },
        };
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        pass.deserialize(&mut deserializer).ok().flatten()
    }

    /// How long one attempt of this request may take by its own doing: a
    /// streamed answer's head comes with its first token, so the attempt's
    /// usual deadline fits (no own deadline: zero); a whole answer comes at
    /// its end, after up to `max_tokens` (or `max_completion_tokens`)
    /// tokens at `per_token` each, and without either limit it may take as
    /// long as the server generates.
    pub(super) fn own_deadline(&self, per_token: Duration) -> OwnDeadline {
        if self.stream {
            return OwnDeadline(Some(Duration::ZERO));
        }
        let tokens = self.max_tokens.or(self.max_completion_tokens);
        OwnDeadline(tokens.map(|n| per_token.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))))
    }

    /// `bytes` with `stream_options.include_usage` set, when the request
    /// streams and does not ask for the usage already; `None` when nothing
    /// changes (not streamed, usage asked, or a `stream_options` that is
    /// not an object, which is the server's to refuse). The rest of the
    /// body is kept byte for byte.
    pub(super) fn ask_for_usage(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        if !self.object || !self.stream {
            return None;
        }
        let (at, remove, insert): (usize, usize, Cow<'static, [u8]>) = match self.stream_options {
            None => {
                let open = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
                (
                    open + 1,
                    0,
                    Cow::Borrowed(br#""stream_options":{"include_usage":true},"#),
                )
            }
            Some(options) => {
                let text = options.get();
                if !text.starts_with('{') {
                    return None;
                }
                let start = offset(bytes, text.as_bytes())?;
                let found: IncludeUsage<'_> = serde_json::from_str(text).ok()?;
                match found.0 {
                    Some(value) if value.get() == "true" => return None,
                    Some(value) => (
                        offset(bytes, value.get().as_bytes())?,
                        value.get().len(),
                        Cow::Borrowed(b"true"),
                    ),
                    None => {
                        let empty = text[1..].trim_start().starts_with('}');
                        let insert: &[u8] = if empty {
                            br#""include_usage":true"#
                        } else {
                            br#""include_usage":true,"#
                        };
                        (start + 1, 0, Cow::Borrowed(insert))
                    }
                }
            }
        };
        let mut changed = Vec::with_capacity(bytes.len() + insert.len());
        changed.extend_from_slice(&bytes[..at]);
        changed.extend_from_slice(&insert);
        changed.extend_from_slice(&bytes[at + remove..]);
        Some(changed)
    }
}

/// Where `part`, a slice of `whole`, starts in it.
fn offset(whole: &[u8], part: &[u8]) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (start + part.len() <= whole.len()).then_some(start)
}

/// The shape of one top-level value, as [`fields`] reads it: scalars, and
/// for an array its length and how many of its items are strings; nothing
/// is kept of arrays and objects.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Count(u64),
    Null,
    Array { len: usize, strings: usize },
    Other,
}

impl<'de> Deserialize<'de> for Shape<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape<'de>, A::Error> {
                let (mut len, mut strings) = (0, 0);
                while let Some(item) = seq.next_element::<Scalar<'de>>()? {
                    len += 1;
                    strings += usize::from(matches!(item, Scalar::Str(_)));
                }
                Ok(Shape::Array { len, strings })
            }
            otherwise!(Shape::Other; map, f64);
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Shape<'de>, E> {
                Ok(Shape::Str(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Shape<'de>, E> {
                Ok(Shape::Str(Cow::Owned(text.to_owned())))
            }
            fn visit_bool<E>(self, flag: bool) -> Result<Shape<'de>, E> {
                Ok(Shape::Bool(flag))
            }
            fn visit_u64<E>(self, count: u64) -> Result<Shape<'de>, E> {
                Ok(Shape::Count(count))
            }
            fn visit_i64<E>(self, number: i64) -> Result<Shape<'de>, E> {
                Ok(u64::try_from(number).map_or(Shape::Other, Shape::Count))
            }
            fn visit_unit<E>(self) -> Result<Shape<'de>, E> {
                Ok(Shape::Null)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Calls `each` with every top-level key of the JSON object in `bytes` and
/// the [`Shape`] of its value, in order (a key given twice comes twice),
/// building no tree: memory stays in proportion to the longest string with
/// escapes. `None` when `bytes` are not a JSON object.
pub(crate) fn fields<'a>(bytes: &'a [u8], each: impl FnMut(&str, Shape<'a>)) -> Option<()> {
    struct Fields<F>(F);
    impl<'de, F: FnMut(&str, Shape<'de>)> Visitor<'de> for Fields<F> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<Scalar<'de>>()? {
                let value = map.next_value::<Shape<'de>>()?;
                if let Some(key) = key.into_str() {
                    (self.0)(&key, value);
                }
            }
            Ok(())
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    deserializer.deserialize_map(Fields(each)).ok()?;
    deserializer.end().ok()
}

/// A JSON value where routing wants a string, a flag or a count; anything
/// else is skipped without being kept.
#[derive(Debug)]
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Count(u64),
    Null,
    Other,
}

impl<'a> Scalar<'a> {
    fn into_str(self) -> Option<Cow<'a, str>> {
        match self {
            Scalar::Str(text) => Some(text),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(text)))
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(flag))
    }

    fn visit_u64<E>(self, count: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Count(count))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(number).map_or(Scalar::Other, Scalar::Count))
    }

    otherwise!(Scalar::Other; f64, seq, map);

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
}

/// Whether a value is an array (skipped either way).
struct IsArray(bool);

impl<'de> Deserialize<'de> for IsArray {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IsArray;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IsArray, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IsArray(true))
            }
            otherwise!(IsArray(false); map, bool, i64, u64, f64, str, unit);
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Head<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Head<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head<'de>, A::Error> {
                let mut head = Head {
                    object: true,
                    ..Head::default()
                };
                while let Some(key) = map.next_key::<Scalar<'de>>()? {
                    let Some(key) = key.into_str() else {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    };
                    match &*key {
                        "model" => head.model = Some(map.next_value()?),
                        "stream" => {
                            head.stream = matches!(map.next_value()?, Scalar::Bool(true));
                        }
                        "max_tokens" => head.max_tokens = count(map.next_value()?),
                        "max_completion_tokens" => {
                            head.max_completion_tokens = count(map.next_value()?);
                        }
                        "stream_options" => head.stream_options = Some(map.next_value()?),
                        "messages" => {
                            head.messages += 1;
                            head.messages_is_array = map.next_value::<IsArray>()?.0;
                        }
                        "prompt" => {
                            head.prompts += 1;
                            map.next_value::<IgnoredAny>()?;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(head)
            }
            otherwise!(Head::default(); seq, bool, i64, u64, f64, str, unit);
        }
        deserializer.deserialize_any(V)
    }
}

fn count(value: Scalar<'_>) -> Option<u64> {
    match value {
        Scalar::Count(n) => Some(n),
        _ => None,
    }
}

/// The `include_usage` value of a `stream_options` object (the last one).
struct IncludeUsage<'a>(Option<&'a RawValue>);

impl<'de> Deserialize<'de> for IncludeUsage<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IncludeUsage<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<Scalar<'de>>()? {
                    if key.into_str().as_deref() == Some("include_usage") {
                        found = Some(map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(IncludeUsage(found))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// The second pass: the prompt's text (the last `messages` array, or else
/// the last `prompt`) fed to the hasher as it is read.
struct PromptPass {
    hasher: PromptHasher,
    /// Which `messages` key (counting from 1) holds the prompt; 0: none.
    messages_at: usize,
    /// Which `prompt` key holds it; 0: none.
    prompt_at: usize,
}

impl<'de> DeserializeSeed<'de> for PromptPass {
    type Value = Option<PromptBlocks>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PromptPass {
    type Value = Option<PromptBlocks>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut messages, mut prompts) = (0, 0);
        let mut found = false;
        while let Some(key) = map.next_key::<Scalar<'de>>()? {
            match key.into_str().as_deref() {
                Some("messages") => {
                    messages += 1;
                    if messages == self.messages_at {
                        map.next_value_seed(Messages(&mut self.hasher))?;
                        found = true;
                        continue;
                    }
                }
                Some("prompt") => {
                    prompts += 1;
                    if prompts == self.prompt_at {
                        found = map.next_value_seed(Prompt(&mut self.hasher))?;
                        continue;
                    }
                }
                _ => {}
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(found.then(|| self.hasher.finish()))
    }
}

/// A `messages` array: each message's role and text, fed in order.
struct Messages<'h>(&'h mut PromptHasher);

impl<'de> DeserializeSeed<'de> for Messages<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Messages<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(message) = seq.next_element::<Message<'de>>()? {
            let role = message.role.as_deref().unwrap_or("");
            self.0.feed(role.as_bytes());
            self.0.feed(&[ROLE_END]);
            for part in &message.content {
                self.0.feed(part.as_bytes());
            }
            self.0.feed(&[MESSAGE_END]);
        }
        Ok(())
    }
}

/// One message: its role (when a string) and its text (a string, or the
/// `text` of each part of an array); kept until the message ends, since
/// the role may come after the content.
#[derive(Default)]
struct Message<'a> {
    role: Option<Cow<'a, str>>,
    content: Vec<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for Message<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Message<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message<'de>, A::Error> {
                let mut message = Message::default();
                while let Some(key) = map.next_key::<Scalar<'de>>()? {
                    match key.into_str().as_deref() {
                        Some("role") => message.role = map.next_value::<Scalar<'de>>()?.into_str(),
                        Some("content") => message.content = map.next_value::<Content<'de>>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(message)
            }
            // Anything else counts as a message with no role and no text.
            otherwise!(Message::default(); seq, bool, i64, u64, f64, str, unit);
        }
        deserializer.deserialize_any(V)
    }
}

/// A message's content: a string, or the `text` strings of an array of
/// parts; nothing for anything else.
struct Content<'a>(Vec<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Content<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message's content")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content<'de>, A::Error> {
                let mut texts = Vec::new();
                while let Some(part) = seq.next_element::<PartText<'de>>()? {
                    texts.extend(part.0);
                }
                Ok(Content(texts))
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Content<'de>, E> {
                Ok(Content(vec![Cow::Borrowed(text)]))
            }
            fn visit_str<E>(self, text: &str) -> Result<Content<'de>, E> {
                Ok(Content(vec![Cow::Owned(text.to_owned())]))
            }
            otherwise!(Content(Vec::new()); map, bool, i64, u64, f64, unit);
        }
        deserializer.deserialize_any(V)
    }
}

/// The `text` string of one part of a message's content, if it has one.
struct PartText<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for PartText<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PartText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a content part")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PartText<'de>, A::Error> {
                let mut text = None;
                while let Some(key) = map.next_key::<Scalar<'de>>()? {
                    if key.into_str().as_deref() == Some("text") {
                        text = map.next_value::<Scalar<'de>>()?.into_str();
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(PartText(text))
            }
            otherwise!(PartText(None); seq, bool, i64, u64, f64, str, unit);
        }
        deserializer.deserialize_any(V)
    }
}

/// A completions `prompt`: a string, or an array of strings, fed as read;
/// true when it was one of those (an array with anything else in it is no
/// prompt routing can read: token ids, say).
struct Prompt<'h>(&'h mut PromptHasher);

impl<'de> DeserializeSeed<'de> for Prompt<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Prompt<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a prompt")
    }

    fn visit_str<E>(self, text: &str) -> Result<bool, E> {
        self.0.feed(text.as_bytes());
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut all_strings = true;
        while let Some(item) = seq.next_element::<Scalar<'de>>()? {
            match item {
                Scalar::Str(text) if all_strings => self.0.feed(text.as_bytes()),
                Scalar::Str(_) => {}
                _ => all_strings = false,
            }
        }
        Ok(all_strings)
    }

    otherwise!(false; map, bool, i64, u64, f64, unit);
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// The facts as a parsed tree gives them, for comparison.
    fn from_tree(value: &Value, config: BlockConfig) -> Option<PromptBlocks> {
        let fields = value.as_object()?;
        let name = fields.get("model").and_then(Value::as_str).unwrap_or("");
        let blocks = if let Some(messages) = fields.get("messages").and_then(Value::as_array) {
            let mut parts: Vec<&[u8]> = Vec::new();
            for message in messages {
                let role = message.get("role").and_then(Value::as_str).unwrap_or("");
                parts.push(role.as_bytes());
                parts.push(&[ROLE_END]);
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
                parts.push(&[MESSAGE_END]);
            }
            PromptBlocks::hash(config, name, parts)
        } else {
            match fields.get("prompt") {
                Some(Value::String(text)) => PromptBlocks::hash(config, name, [text]),
                Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                    PromptBlocks::hash(config, name, items.iter().filter_map(Value::as_str))
                }
                _ => return None,
            }
        };
        Some(blocks)
    }

    fn small() -> BlockConfig {
        BlockConfig {
            block_size: 8,
            ..BlockConfig::default()
        }
    }

    fn same_as_tree(body: &str) {
        let value: Value = serde_json::from_str(body).unwrap();
        let head = Head::read(body.as_bytes()).unwrap();
        let read = head.prompt(body.as_bytes(), small());
        let tree = from_tree(&value, small());
        assert_eq!(
            read.as_ref()
                .map(|b| (b.hashes().to_vec(), b.prompt_bytes())),
            tree.as_ref()
                .map(|b| (b.hashes().to_vec(), b.prompt_bytes())),
            "{body}"
        );
    }

    #[test]
    fn the_prompt_is_what_a_parsed_tree_gives() {
        for body in [
            r#"{"model":"m","messages":[{"role":"system","content":"you answer about tides"},{"role":"user","content":[{"type":"text","text":"when"},{"type":"image"},{"text":" is high tide"}]}]}"#,
            r#"{"messages":[{"content":"role after content","role":"user"},"not a message",{"role":3,"content":4}],"model":"late"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"first"}],"messages":[{"role":"user","content":"the last one counts here"}]}"#,
            r#"{"model":"m","messages":"not an array","prompt":"so the prompt counts instead"}"#,
            r#"{"model":"m","prompt":["several ","strings ","in a row"]}"#,
            r#"{"model":"m","prompt":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}"#,
            r#"{"model":"m","prompt":["strings","then",7]}"#,
            r#"{"model":"m","prompt":"escaped \u0041\n and \"quoted\" text, long enough"}"#,
            r#"{"model":"m","prompt":"first prompt, long enough","prompt":"second prompt, long enough"}"#,
            r#"{"model":null,"prompt":"no model, a prompt long enough"}"#,
            r#"["not","an","object"]"#,
            r#""a string""#,
            r#"{}"#,
        ] {
            same_as_tree(body);
        }
    }

    #[test]
    fn fields_are_read_in_order_without_a_tree() {
        let mut seen = Vec::new();
        let body = br#"{"stream":true,"n":1,"prompt":["a",2,"b"],"x":{"y":[1]},"n":null}"#;
        assert!(fields(body, |key, shape| seen.push((key.to_owned(), shape))).is_some());
        assert_eq!(
            seen,
            vec![
                ("stream".into(), Shape::Bool(true)),
                ("n".into(), Shape::Count(1)),
                ("prompt".into(), Shape::Array { len: 3, strings: 2 }),
                ("x".into(), Shape::Other),
                ("n".into(), Shape::Null),
            ]
        );
        assert!(fields(b"[1]", |_, _| {}).is_none());
        assert!(fields(b"{} trailing", |_, _| {}).is_none());
    }

    #[test]
    fn the_model_must_be_a_string_or_null() {
        let model = |body: &str| {
            Head::read(body.as_bytes())
                .unwrap()
                .model()
                .map(|m| m.map(str::to_owned))
        };
        assert_eq!(model(r#"{"model":"llama"}"#), Ok(Some("llama".into())));
        assert_eq!(model(r#"{"model":"ll\u0061ma"}"#), Ok(Some("llama".into())));
        assert_eq!(model(r#"{"model":null}"#), Ok(None));
        assert_eq!(model(r#"{}"#), Ok(None));
        assert_eq!(model(r#"{"model":["a"]}"#), Err(()));
        assert_eq!(model(r#"{"model":7}"#), Err(()));
    }

    #[test]
    fn own_deadlines_follow_stream_and_token_limits() {
        let per_token = Duration::from_millis(10);
        let deadline = |body: &str| {
            Head::read(body.as_bytes())
                .unwrap()
                .own_deadline(per_token)
                .0
        };
        assert_eq!(
            deadline(r#"{"stream":true,"max_tokens":5}"#),
            Some(Duration::ZERO)
        );
        assert_eq!(
            deadline(r#"{"max_tokens":5}"#),
            Some(Duration::from_millis(50))
        );
        assert_eq!(
            deadline(r#"{"max_completion_tokens":3}"#),
            Some(Duration::from_millis(30))
        );
        assert_eq!(deadline(r#"{"max_tokens":-1}"#), None);
        assert_eq!(deadline(r#"{"stream":"yes"}"#), None);
    }

    #[test]
    fn usage_is_asked_for_in_place() {
        let ask = |body: &str| {
            let head = Head::read(body.as_bytes()).unwrap();
            head.ask_for_usage(body.as_bytes())
                .map(|b| String::from_utf8(b).unwrap())
        };
        assert_eq!(ask(r#"{"stream":false}"#), None);
        assert_eq!(
            ask(r#"{"stream":true,"stream_options":{"include_usage":true}}"#),
            None
        );
        assert_eq!(ask(r#"{"stream":true,"stream_options":3}"#), None);
        assert_eq!(ask(r#"[true]"#), None);
        let cases = [
            (
                r#"{"stream":true}"#,
                json!({"stream": true, "stream_options": {"include_usage": true}}),
            ),
            (
                r#" { "stream" : true , "n": 1 }"#,
                json!({"stream": true, "n": 1, "stream_options": {"include_usage": true}}),
            ),
            (
                r#"{"stream":true,"stream_options":{"include_usage":false}}"#,
                json!({"stream": true, "stream_options": {"include_usage": true}}),
            ),
            (
                r#"{"stream":true,"stream_options":{ }}"#,
                json!({"stream": true, "stream_options": {"include_usage": true}}),
            ),
            (
                r#"{"stream_options":{"x":1},"stream":true}"#,
                json!({"stream": true, "stream_options": {"include_usage": true, "x": 1}}),
            ),
        ];
        for (body, expected) in cases {
            let changed = ask(body).unwrap();
            let value: Value = serde_json::from_str(&changed).unwrap();
            assert_eq!(value, expected, "{body} became {changed}");
        }
    }
}
