//! Byte-level BPE (the GPT-2 scheme): text is cut at added tokens, pre-tokenized with
//! GPT-2's pattern, each piece spelled one table character per byte, and then adjacent
//! symbols are merged, lowest merge rank first, until no ranked pair is left.

use super::byte_table::{byte_to_char, char_to_byte};
use super::pretokenize;
use crate::{Error, Result};
use std::collections::HashMap;

/// A byte-level BPE tokenizer. Load one with
/// [`from_gpt2_files`](BpeTokenizer::from_gpt2_files) or
/// [`from_tokenizer_json`](BpeTokenizer::from_tokenizer_json).
#[derive(Clone, Debug)]
pub struct BpeTokenizer {
    vocab: HashMap<String, u32>,
    /// Token strings by id (byte-level spelling), for decoding.
    tokens: HashMap<u32, String>,
    /// The id of each byte's one-character token.
    byte_ids: Box<[u32; 256]>,
    /// (left id, right id) -> (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Tokens matched verbatim before pre-tokenization, longest first.
    added: Vec<(String, u32)>,
    /// Prepend a space to each piece of text that does not start with one.
    add_prefix_space: bool,
    /// Cut text with GPT-2's pattern (false: each piece between added tokens is one word).
    use_regex: bool,
}

/// What a tokenizer file describes, before the checks that make it a [`BpeTokenizer`].
pub(crate) struct BpeParts {
    pub vocab: HashMap<String, u32>,
    /// Merge pairs in rank order, each with where it came from (for errors).
    pub merges: Vec<(String, String, String)>,
    pub added: Vec<(String, u32)>,
    pub add_prefix_space: bool,
    pub use_regex: bool,
}

impl BpeTokenizer {
    /// Checks `parts` (`path` labels errors): ids unique, all 256 byte characters in the
    /// vocabulary, both sides and the result of every merge in it.
    pub(crate) fn build(path: &str, parts: BpeParts) -> Result<Self> {
        let err = |what: String| Error::Tokenizer { path: path.to_string(), what };
        let mut tokens = HashMap::with_capacity(parts.vocab.len());
        for (token, &id) in &parts.vocab {
            if let Some(other) = tokens.insert(id, token.clone()) {
                return Err(err(format!("gives id {id} to two tokens, `{other}` and `{token}`")));
            }
        }
        let mut byte_ids = Box::new([0u32; 256]);
        for (b, slot) in (0..=255u8).zip(byte_ids.iter_mut()) {
            let c = byte_to_char(b).to_string();
            *slot = parts.vocab.get(&c).copied().ok_or_else(|| {
                err(format!("has no token for byte 0x{b:02x} (`{c}`); a byte-level BPE vocabulary needs all 256"))
            })?;
        }
        let mut merges = HashMap::with_capacity(parts.merges.len());
        for (rank, (left, right, place)) in parts.merges.iter().enumerate() {
            let merged = format!("{left}{right}");
            let id = |s: &str| {
                parts
                    .vocab
                    .get(s)
                    .copied()
                    .ok_or_else(|| err(format!("{place} (`{left} {right}`): `{s}` is not in the vocabulary")))
            };
            let (l, r, m) = (id(left)?, id(right)?, id(&merged)?);
            let rank = u32::try_from(rank).map_err(|_| err("has more than 2^32 merges".into()))?;
            // A pair listed twice keeps its first (best) rank.
            merges.entry((l, r)).or_insert((rank, m));
        }
        let mut added = parts.added;
        added.retain(|(content, _)| !content.is_empty());
        for (content, id) in &added {
            tokens.entry(*id).or_insert_with(|| content.clone());
        }
        added.sort_by_key(|(content, _)| std::cmp::Reverse(content.len()));
        Ok(BpeTokenizer {
            vocab: parts.vocab,
            tokens,
            byte_ids,
            merges,
            added,
            add_prefix_space: parts.add_prefix_space,
            use_regex: parts.use_regex,
        })
    }

    /// The ids of `text`. Added tokens (`<|endoftext|>` and the like) in the text become
    /// their ids; nothing else is added (no BOS / EOS).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let (plain, special) = self.next_added(rest);
            self.encode_plain(&rest[..plain], &mut ids);
            match special {
                Some((len, id)) => {
                    ids.push(id);
                    rest = &rest[plain + len..];
                }
                None => rest = "",
            }
        }
        ids
    }

    /// The text of `ids`: byte-level tokens turned back into bytes, added tokens as
    /// written; bytes that are not valid UTF-8 and unknown ids become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for id in ids {
            if let Some((content, _)) = self.added.iter().find(|(_, a)| a == id) {
                bytes.extend_from_slice(content.as_bytes());
                continue;
            }
            let Some(token) = self.tokens.get(id) else {
                bytes.extend_from_slice(char::REPLACEMENT_CHARACTER.to_string().as_bytes());
                continue;
            };
            for c in token.chars() {
                match char_to_byte(c) {
                    Some(b) => bytes.push(b),
                    // Not a byte character: a file's literal token; keep its UTF-8.
                    None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// One more than the largest id (ids need not be contiguous).
    pub fn vocab_size(&self) -> usize {
        self.tokens.keys().max().map_or(0, |&m| m as usize + 1)
    }

    /// The id of a token given in its byte-level spelling (`"Ġthe"`) or as an added
    /// token's text (`"<|endoftext|>"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.added.iter().find(|(c, _)| c == token).map(|&(_, id)| id).or_else(|| self.vocab.get(token).copied())
    }

    /// The token of `id`, in its byte-level spelling (added tokens as written).
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens.get(&id).map(String::as_str)
    }

    /// The byte length of text before the first added token in `s`, and that token's
    /// (byte length, id); the longest wins where several start at one place.
    fn next_added(&self, s: &str) -> (usize, Option<(usize, u32)>) {
        if self.added.is_empty() {
            return (s.len(), None);
        }
        for (at, _) in s.char_indices() {
            if let Some((content, id)) = self.added.iter().find(|(c, _)| s[at..].starts_with(c.as_str())) {
                return (at, Some((content.len(), *id)));
            }
        }
        (s.len(), None)
    }

    /// Encodes text that holds no added token.
    fn encode_plain(&self, text: &str, ids: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let prefixed;
        let text = if self.add_prefix_space && !text.starts_with(' ') {
            prefixed = format!(" {text}");
            prefixed.as_str()
        } else {
            text
        };
        let pieces = if self.use_regex { pretokenize::split(text) } else { vec![text] };
        for piece in pieces {
            self.encode_word(piece, ids);
        }
    }

    /// One pre-tokenized piece: its byte symbols, merged by rank.
    fn encode_word(&self, word: &str, ids: &mut Vec<u32>) {
        let mut symbols: Vec<u32> = word.bytes().map(|b| self.byte_ids[b as usize]).collect();
        loop {
            let best = symbols
                .windows(2)
                .filter_map(|w| self.merges.get(&(w[0], w[1])).map(|&(rank, merged)| (rank, (w[0], w[1]), merged)))
                .min_by_key(|&(rank, _, _)| rank);
            let Some((_, pair, merged)) = best else { break };
            // Merge every occurrence of the pair, left to right, without overlaps.
            let mut out = Vec::with_capacity(symbols.len());
            let mut k = 0;
            while k < symbols.len() {
                if k + 1 < symbols.len() && (symbols[k], symbols[k + 1]) == pair {
                    out.push(merged);
                    k += 2;
                } else {
                    out.push(symbols[k]);
                    k += 1;
                }
            }
            symbols = out;
        }
        ids.extend_from_slice(&symbols);
    }
}
