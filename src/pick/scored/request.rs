//! What a scoring picker reads of a request: model, adapter, priority.

use http::HeaderName;

use crate::pick::llm::PromptBlocks;

/// The header that names the request's model when no [`RequestInfo`] is in
/// the request's extensions: `x-model`.
pub const MODEL_HEADER: HeaderName = HeaderName::from_static("x-model");

/// The header that names the request's adapter (LoRA): `x-adapter`.
pub const ADAPTER_HEADER: HeaderName = HeaderName::from_static("x-adapter");

/// The header that gives the request's priority, a signed integer:
/// `x-priority`. Missing or malformed, the priority is 0.
pub const PRIORITY_HEADER: HeaderName = HeaderName::from_static("x-priority");

/// The facts of an inference request that routing reads: which model, which
/// adapter, how important. Put one in an `http::Request`'s extensions (a
/// layer in front of the balancer that reads the body does so), or send the
/// headers [`MODEL_HEADER`], [`ADAPTER_HEADER`] and [`PRIORITY_HEADER`].
///
/// ```
/// use tower_lb::pick::{llm::{RequestInfo, ScoredRequest}};
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(RequestInfo::new().model("llama").priority(-1));
/// let info = request.info();
/// assert_eq!((info.model, info.adapter, info.priority), (Some("llama"), None, -1));
///
/// let request = http::Request::builder().header("x-adapter", "sql-lora").body(()).unwrap();
/// assert_eq!(request.info().adapter, Some("sql-lora"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// The model the request is for; `None`: any endpoint will do.
    pub model: Option<Box<str>>,
    /// The adapter (LoRA) the request needs, if any.
    pub adapter: Option<Box<str>>,
    /// Higher is more important; requests below the picker's shedding
    /// threshold (0 by default: negative priorities) are shed when every
    /// endpoint is saturated.
    pub priority: i32,
}

impl RequestInfo {
    /// No model, no adapter, priority 0.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The same facts for `model`.
    #[must_use]
    pub fn model(mut self, model: impl Into<Box<str>>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// The same facts needing `adapter`.
    #[must_use]
    pub fn adapter(mut self, adapter: impl Into<Box<str>>) -> Self {
        self.adapter = Some(adapter.into());
        self
    }

    /// The same facts with `priority`.
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// A borrowed view.
    pub fn as_ref(&self) -> RequestInfoRef<'_> {
        RequestInfoRef {
            model: self.model.as_deref(),
            adapter: self.adapter.as_deref(),
            priority: self.priority,
        }
    }
}

/// A borrowed view of a request's facts, read once per pick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestInfoRef<'a> {
    /// The model the request is for.
    pub model: Option<&'a str>,
    /// The adapter the request needs.
    pub adapter: Option<&'a str>,
    /// The request's priority.
    pub priority: i32,
}

/// A request a scoring picker can route: it gives its [`RequestInfoRef`].
///
/// Implemented for `http::Request<B>` (extensions, then headers),
/// [`RequestInfo`] itself and `()` (no facts: any model, priority 0).
pub trait ScoredRequest {
    /// The request's info; reading it must not allocate.
    fn info(&self) -> RequestInfoRef<'_>;

    /// The prompt's blocks, for [`Scored::ttft`](super::Scored::ttft);
    /// `None` (the default) when the request has no prompt.
    fn prompt(&self) -> Option<&PromptBlocks> {
        None
    }
}

impl<B> ScoredRequest for http::Request<B> {
    fn prompt(&self) -> Option<&PromptBlocks> {
        self.extensions().get::<PromptBlocks>()
    }

    fn info(&self) -> RequestInfoRef<'_> {
        if let Some(facts) = self.extensions().get::<RequestInfo>() {
            return facts.as_ref();
        }
        let headers = self.headers();
        let text = |name: &HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
        };
        RequestInfoRef {
            model: text(&MODEL_HEADER),
            adapter: text(&ADAPTER_HEADER),
            priority: text(&PRIORITY_HEADER)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
        }
    }
}

impl ScoredRequest for RequestInfo {
    fn info(&self) -> RequestInfoRef<'_> {
        self.as_ref()
    }
}

impl ScoredRequest for PromptBlocks {
    fn info(&self) -> RequestInfoRef<'_> {
        RequestInfoRef::default()
    }

    fn prompt(&self) -> Option<&PromptBlocks> {
        Some(self)
    }
}

impl ScoredRequest for () {
    fn info(&self) -> RequestInfoRef<'_> {
        RequestInfoRef::default()
    }
}
