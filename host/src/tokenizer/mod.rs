//! Tokenizers for the example models: byte-level BPE (GPT-2's scheme; GPT-2's
//! `vocab.json` + `merges.txt`, or a HuggingFace `tokenizer.json` such as GPT-NeoX's,
//! which mamba-130m uses) and a plain byte tokenizer for runs without files.
//!
//! ```no_run
//! use flashscan::tokenizer::Tokenizer;
//! let tok = Tokenizer::from_gpt2_files("vocab.json", "merges.txt")?;
//! let ids = tok.encode("Hello world");
//! assert_eq!(tok.decode(&ids), "Hello world");
//! # Ok::<(), flashscan::Error>(())
//! ```

mod bpe;
mod byte_table;
mod bytes;
mod files;
mod pretokenize;

pub use bpe::BpeTokenizer;
pub use bytes::ByteTokenizer;

use crate::Result;
use std::path::Path;

/// Either tokenizer, behind one interface.
#[derive(Clone, Debug)]
pub enum Tokenizer {
    Bpe(BpeTokenizer),
    Bytes(ByteTokenizer),
}

impl Tokenizer {
    /// See [`BpeTokenizer::from_gpt2_files`].
    pub fn from_gpt2_files(vocab_json: impl AsRef<Path>, merges_txt: impl AsRef<Path>) -> Result<Self> {
        BpeTokenizer::from_gpt2_files(vocab_json, merges_txt).map(Tokenizer::Bpe)
    }

    /// See [`BpeTokenizer::from_tokenizer_json`].
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self> {
        BpeTokenizer::from_tokenizer_json(path).map(Tokenizer::Bpe)
    }

    /// One token per byte: ids 0..=255.
    pub fn bytes() -> Self {
        Tokenizer::Bytes(ByteTokenizer)
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self {
            Tokenizer::Bpe(t) => t.encode(text),
            Tokenizer::Bytes(t) => t.encode(text),
        }
    }

    /// Lossy: invalid UTF-8 and unknown ids become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            Tokenizer::Bpe(t) => t.decode(ids),
            Tokenizer::Bytes(t) => t.decode(ids),
        }
    }

    /// The id of `token`: for BPE in its byte-level spelling or as an added token's text
    /// (`"<|endoftext|>"`); for the byte tokenizer a one-byte string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            Tokenizer::Bpe(t) => t.token_to_id(token),
            Tokenizer::Bytes(_) => match token.as_bytes() {
                &[b] => Some(u32::from(b)),
                _ => None,
            },
        }
    }

    /// One more than the largest id the tokenizer produces or knows.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Bpe(t) => t.vocab_size(),
            Tokenizer::Bytes(_) => ByteTokenizer::VOCAB_SIZE,
        }
    }
}
