//! Loading a byte-level BPE from GPT-2's `vocab.json` + `merges.txt` or from a
//! HuggingFace `tokenizer.json` whose model is BPE (GPT-NeoX's, which mamba-130m uses).

use super::bpe::{BpeParts, BpeTokenizer};
use crate::{Error, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// GPT-2's end-of-text token: split out of text before BPE when the vocabulary has it.
const GPT2_END_OF_TEXT: &str = "<|endoftext|>";

impl BpeTokenizer {
    /// GPT-2's files: `vocab.json` (token -> id) and `merges.txt` (`#version` line, then
    /// one `left right` pair per line, best first). `<|endoftext|>`, if in the
    /// vocabulary, is matched as a whole in text.
    pub fn from_gpt2_files(vocab_json: impl AsRef<Path>, merges_txt: impl AsRef<Path>) -> Result<Self> {
        let (vocab_path, merges_path) = (label(&vocab_json), label(&merges_txt));
        let vocab = parse_vocab(&vocab_path, &read_json(vocab_json.as_ref())?)?;
        let text = read(merges_txt.as_ref())?;
        let mut merges = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if (n == 0 && line.starts_with("#version")) || line.trim().is_empty() {
                continue;
            }
            let place = format!("merge on line {} of {merges_path}", n + 1);
            match line.split(' ').collect::<Vec<_>>().as_slice() {
                [l, r] if !l.is_empty() && !r.is_empty() => merges.push((l.to_string(), r.to_string(), place)),
                _ => {
                    return Err(file_error(&merges_path, format!("line {} is `{line}`, expected `left right`", n + 1)));
                }
            }
        }
        let added = vocab.get(GPT2_END_OF_TEXT).map(|&id| vec![(GPT2_END_OF_TEXT.to_string(), id)]).unwrap_or_default();
        let parts = BpeParts { vocab, merges, added, add_prefix_space: false, use_regex: true };
        BpeTokenizer::build(&format!("{vocab_path} + {merges_path}"), parts)
    }

    /// A HuggingFace `tokenizer.json` with a BPE model and a ByteLevel pre-tokenizer.
    /// Its `added_tokens` are matched as a whole in text (their `lstrip` / `rstrip` /
    /// `single_word` flags are not applied). An NFC normalizer is accepted and not
    /// applied (text is taken as already NFC, as almost all text is); other
    /// normalizers, other pre-tokenizers and subword prefixes / suffixes are refused.
    /// The post-processor is not applied: `encode` adds no BOS / EOS.
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self> {
        let path_label = label(&path);
        let root = read_json(path.as_ref())?;
        let err = |what: String| file_error(&path_label, what);
        let model = root.get("model").ok_or_else(|| err("has no `model`".into()))?;
        match model.get("type").and_then(Value::as_str) {
            Some("BPE") | None => {}
            Some(other) => return Err(err(format!("has a {other} model; only BPE is supported"))),
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let Some(s) = model.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()) {
                return Err(err(format!("sets `{key}` to `{s}`, which byte-level BPE does not use (not supported)")));
            }
        }
        check_normalizer(root.get("normalizer")).map_err(&err)?;
        let (add_prefix_space, use_regex) = byte_level_options(root.get("pre_tokenizer")).map_err(&err)?;

        let vocab = parse_vocab(&path_label, model.get("vocab").unwrap_or(&Value::Null))?;
        let Some(Value::Array(list)) = model.get("merges") else {
            return Err(err("has no `model.merges` list".into()));
        };
        let mut merges = Vec::with_capacity(list.len());
        for (n, m) in list.iter().enumerate() {
            let pair = match m {
                // Older files: "left right"; newer ones: ["left", "right"].
                Value::String(s) => s.split_once(' ').map(|(l, r)| (l.to_string(), r.to_string())),
                Value::Array(a) => match a.as_slice() {
                    [Value::String(l), Value::String(r)] => Some((l.clone(), r.clone())),
                    _ => None,
                },
                _ => None,
            };
            let Some((l, r)) = pair.filter(|(l, r)| !l.is_empty() && !r.is_empty() && !r.contains(' ')) else {
                return Err(err(format!("has merge {n} `{m}`, expected \"left right\" or [\"left\", \"right\"]")));
            };
            merges.push((l, r, format!("merge {n}")));
        }
        let mut added = Vec::new();
        if let Some(Value::Array(list)) = root.get("added_tokens") {
            for t in list {
                let id = t.get("id").and_then(Value::as_u64).and_then(|id| u32::try_from(id).ok());
                let (Some(id), Some(content)) = (id, t.get("content").and_then(Value::as_str)) else {
                    return Err(err(format!("has an added token `{t}` without an `id` and `content`")));
                };
                added.push((content.to_string(), id));
            }
        }
        BpeTokenizer::build(&path_label, BpeParts { vocab, merges, added, add_prefix_space, use_regex })
    }
}

fn label(p: &impl AsRef<Path>) -> String {
    p.as_ref().display().to_string()
}

fn file_error(path: &str, what: String) -> Error {
    Error::Tokenizer { path: path.to_string(), what }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| file_error(&label(&path), format!("cannot be read: {e}")))
}

fn read_json(path: &Path) -> Result<Value> {
    serde_json::from_str(&read(path)?).map_err(|e| file_error(&label(&path), format!("is not valid JSON: {e}")))
}

/// A JSON object of token -> id.
fn parse_vocab(path: &str, v: &Value) -> Result<HashMap<String, u32>> {
    let Value::Object(m) = v else {
        return Err(file_error(path, "has no vocabulary object (token -> id)".into()));
    };
    m.iter()
        .map(|(token, id)| match id.as_u64().and_then(|id| u32::try_from(id).ok()) {
            Some(id) => Ok((token.clone(), id)),
            None => Err(file_error(path, format!("gives token `{token}` the id {id}, expected an integer below 2^32"))),
        })
        .collect()
}

/// No normalizer, or NFC (accepted, not applied: see `from_tokenizer_json`).
fn check_normalizer(v: Option<&Value>) -> std::result::Result<(), String> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(n) => match n.get("type").and_then(Value::as_str) {
            Some("NFC") => Ok(()),
            other => Err(format!("has a {} normalizer; only none or NFC is supported", other.unwrap_or("untyped"))),
        },
    }
}

/// `(add_prefix_space, use_regex)` of a ByteLevel pre-tokenizer, alone or as the only
/// kind in a Sequence; anything else is refused.
fn byte_level_options(v: Option<&Value>) -> std::result::Result<(bool, bool), String> {
    let kind = |p: &Value| p.get("type").and_then(Value::as_str).unwrap_or("untyped").to_string();
    let refuse =
        |what: String| Err(format!("has a {what} pre-tokenizer; only ByteLevel (byte-level BPE) is supported"));
    let Some(p) = v.filter(|p| !p.is_null()) else { return refuse("missing".into()) };
    let single = match kind(p).as_str() {
        "ByteLevel" => p,
        "Sequence" => match p.get("pretokenizers").and_then(Value::as_array).map(Vec::as_slice) {
            Some([only]) if kind(only) == "ByteLevel" => only,
            _ => return refuse(format!("Sequence {p}")),
        },
        other => return refuse(other.to_string()),
    };
    // HuggingFace's defaults for absent fields.
    let flag = |key: &str| single.get(key).and_then(Value::as_bool).unwrap_or(true);
    Ok((flag("add_prefix_space"), flag("use_regex")))
}
