//! A prompt as chained block hashes: what the prefix scorer compares.

use std::fmt;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// How prompts are cut into blocks.
///
/// Block `0`'s hash is seeded with the hash of the model's name, and block
/// `i`'s with block `i − 1`'s, so two prompts share the hash of block `i`
/// only when they share the model and every byte up to the end of block `i`.
/// A last block shorter than [`block_size`](Self::block_size) is left out,
/// as a paged KV cache leaves out a partial page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    /// Bytes in a block (default 64; at least 1).
    pub block_size: usize,
    /// Blocks hashed at most (default 256): the bytes after them are not
    /// read, which bounds the work per request.
    pub max_blocks: usize,
}

impl Default for BlockConfig {
    fn default() -> Self {
        Self {
            block_size: 64,
            max_blocks: 256,
        }
    }
}

/// The chained block hashes of one prompt, put in a request's extensions
/// (see [`AddRequestInfoLayer`](crate::http::AddRequestInfoLayer)) for the prefix
/// scorer to read.
///
/// ```
/// use tower_lb::pick::{llm::{BlockConfig, PromptBlocks}};
///
/// let config = BlockConfig { block_size: 4, max_blocks: 8 };
/// let a = PromptBlocks::hash(config, "llama", ["abcdefgh-1"]);
/// let b = PromptBlocks::hash(config, "llama", ["abcd", "efgh-2"]);
/// assert_eq!(a.len(), 2);
/// assert_eq!(a.hashes(), b.hashes()); // where the text is split does not matter
/// assert_ne!(a.hashes(), PromptBlocks::hash(config, "other", ["abcdefgh"]).hashes());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PromptBlocks {
    hashes: Box<[u64]>,
    /// The whole prompt's length in bytes, hashed or not; 0 when unknown.
    prompt_bytes: u64,
}

impl PromptBlocks {
    /// Hashes the bytes of `parts`, in order, as one text, for `model`.
    /// Reads at most `config.max_blocks × config.block_size` bytes.
    pub fn hash<I, P>(config: BlockConfig, model: &str, parts: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let mut hasher = PromptHasher::new(config, model);
        for part in parts {
            hasher.feed(part.as_ref());
        }
        hasher.finish()
    }

    /// Blocks from hashes computed elsewhere (a simulation, a tokenizer's
    /// pages); they must be chained as described in [`BlockConfig`].
    pub fn from_hashes(hashes: impl Into<Box<[u64]>>) -> Self {
        Self {
            hashes: hashes.into(),
            prompt_bytes: 0,
        }
    }

    /// The same blocks, for a prompt of `bytes` bytes in all (blocks from
    /// [`from_hashes`](Self::from_hashes) do not know it).
    #[must_use]
    pub fn with_prompt_bytes(mut self, bytes: u64) -> Self {
        self.prompt_bytes = bytes;
        self
    }

    /// The whole prompt's length in bytes, including what lies beyond the
    /// hashed blocks; 0 when unknown.
    pub fn prompt_bytes(&self) -> u64 {
        self.prompt_bytes
    }

    /// The block hashes, first block first.
    pub fn hashes(&self) -> &[u64] {
        &self.hashes
    }

    /// How many full blocks the prompt has (up to the limit).
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether the prompt has no full block.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

impl fmt::Debug for PromptBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptBlocks")
            .field("blocks", &self.hashes.len())
            .field("prompt_bytes", &self.prompt_bytes)
            .finish()
    }
}

/// [`PromptBlocks::hash`] one part at a time, for readers that find the
/// parts as they go and keep none of them.
pub(crate) struct PromptHasher {
    chain: Chain,
    prompt_bytes: u64,
    hashing: bool,
}

impl PromptHasher {
    pub(crate) fn new(config: BlockConfig, model: &str) -> Self {
        let size = config.block_size.max(1);
        Self {
            chain: Chain {
                previous: xxh3_64_with_seed(model.as_bytes(), 0x7072_6566_6978),
                buffer: Vec::with_capacity(size),
                hashes: Vec::new(),
                size,
                max: config.max_blocks,
            },
            prompt_bytes: 0,
            hashing: true,
        }
    }

    /// The next part of the text.
    pub(crate) fn feed(&mut self, part: &[u8]) {
        self.prompt_bytes += part.len() as u64;
        if self.hashing {
            self.hashing = self.chain.feed(part);
        }
    }

    pub(crate) fn finish(self) -> PromptBlocks {
        PromptBlocks {
            hashes: self.chain.hashes.into_boxed_slice(),
            prompt_bytes: self.prompt_bytes,
        }
    }
}

struct Chain {
    previous: u64,
    buffer: Vec<u8>,
    hashes: Vec<u64>,
    size: usize,
    max: usize,
}

impl Chain {
    /// Feeds bytes; false once the block limit is reached.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.hashes.len() >= self.max {
                return false;
            }
            let take = (self.size - self.buffer.len()).min(bytes.len());
            self.buffer.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buffer.len() == self.size {
                self.previous = xxh3_64_with_seed(&self.buffer, self.previous);
                self.hashes.push(self.previous);
                self.buffer.clear();
            }
        }
        self.hashes.len() < self.max
    }
}
