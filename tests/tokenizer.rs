//! Byte-level BPE from small hand-written GPT-2 files and tokenizer.json files: merge
//! outcomes worked out by hand, round trips, added tokens, and errors for bad files.

use flashscan::Error;
use flashscan::tokenizer::{BpeTokenizer, Tokenizer};
use serde_json::{Value, json};

mod io_common;
use io_common::{TempDir, err_of};

/// GPT-2's byte-to-unicode table, written out independently of the library's: the
/// printable Latin-1 bytes stand for themselves, the rest take U+0100.. in order.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256;
    (0..256u32)
        .map(|b| {
            let code = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            char::from_u32(code).unwrap()
        })
        .collect()
}

/// Merges in rank order. By hand, with ids = byte values for single bytes:
/// "hello" -> he,l,l,o -> he,ll,o -> he,llo -> hello; "ell" -> e,ll (rank 3 beats
/// "e l" at 6); " the" -> Ġt,h,e -> Ġt,he -> Ġthe.
const MERGES: [(&str, &str); 7] =
    [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("l", "l"), ("ll", "o"), ("he", "llo"), ("e", "l")];
const EXTRA: [&str; 8] = ["Ġt", "he", "Ġthe", "ll", "llo", "hello", "el", "<|endoftext|>"];

/// The vocabulary: bytes at ids `offset + byte`, then EXTRA from `offset + 256`.
fn vocab(offset: u32) -> serde_json::Map<String, Value> {
    let mut v = serde_json::Map::new();
    for (b, c) in byte_chars().into_iter().enumerate() {
        v.insert(c.to_string(), json!(offset + b as u32));
    }
    for (k, t) in EXTRA.iter().enumerate() {
        v.insert(t.to_string(), json!(offset + 256 + k as u32));
    }
    v
}

fn write_gpt2_files(dir: &TempDir, vocab: &serde_json::Map<String, Value>, merges: &str) -> BpeTokenizer {
    let (v, m) = (dir.join("vocab.json"), dir.join("merges.txt"));
    std::fs::write(&v, Value::Object(vocab.clone()).to_string()).unwrap();
    std::fs::write(&m, merges).unwrap();
    BpeTokenizer::from_gpt2_files(&v, &m).unwrap()
}

fn merges_txt() -> String {
    let mut s = "#version: 0.2\n".to_string();
    for (l, r) in MERGES {
        s += &format!("{l} {r}\n");
    }
    s
}

fn gpt2_tokenizer(dir: &TempDir) -> BpeTokenizer {
    write_gpt2_files(dir, &vocab(0), &merges_txt())
}

/// Hand-worked encodings (ids with byte offset 0).
const CASES: [(&str, &[u32]); 8] = [
    ("hello", &[261]),
    ("ell", &[101, 259]),
    ("lll", &[259, 108]),
    (" the", &[258]),
    ("the", &[116, 257]),
    ("hello the  world\n", &[261, 258, 32, 32, 119, 111, 114, 108, 100, 10]),
    ("he'll", &[257, 39, 259]),
    ("the<|endoftext|>hello", &[116, 257, 263, 261]),
];

#[test]
fn gpt2_files_give_the_hand_worked_merges() {
    let dir = TempDir::new("tok-gpt2");
    let tok = gpt2_tokenizer(&dir);
    for (text, ids) in CASES {
        assert_eq!(tok.encode(text), ids, "encode {text:?}");
        assert_eq!(tok.decode(ids), text, "decode {ids:?}");
    }
    assert_eq!(tok.vocab_size(), 264);
    assert_eq!(tok.token_to_id("Ġthe"), Some(258));
    assert_eq!(tok.id_to_token(32), Some("Ġ"));
    assert_eq!(tok.id_to_token(10), Some("Ċ"));
}

#[test]
fn round_trips_any_text() {
    let dir = TempDir::new("tok-roundtrip");
    let tok = Tokenizer::Bpe(gpt2_tokenizer(&dir));
    let texts = [
        "",
        "Grüße, 世界! 🎉 naïve café",
        "tabs\tand\r\nnewlines\n\n  and   spaces   ",
        "control \u{0} \u{7f} \u{ad} bytes",
        "they're we've I'm you'd 'S 'LL",
        "numbers 12345 ½ Ⅻ ١٢٣",
        "<|endoftext|><|endoftext|> hello<|endoftext|>",
    ];
    for text in texts {
        let ids = tok.encode(text);
        assert_eq!(tok.decode(&ids), text, "ids {ids:?}");
        // Without merges hitting, every UTF-8 byte is one token.
        if !text.contains("<|endoftext|>") {
            assert!(ids.len() <= text.len(), "{text:?}");
        }
    }
}

#[test]
fn decode_is_lossy_on_bad_bytes_and_unknown_ids() {
    let dir = TempDir::new("tok-lossy");
    let tok = gpt2_tokenizer(&dir);
    assert_eq!(tok.decode(&[0xE4, 0xB8, 0x96]), "世", "one character from its three byte tokens");
    assert_eq!(tok.decode(&[0xE4, 104]), "\u{FFFD}h");
    assert_eq!(tok.decode(&[104, 99_999, 105]), "h\u{FFFD}i");
}

/// A tokenizer.json like GPT-NeoX's: byte tokens from id 2, two special tokens first.
fn tokenizer_json(merges: Value, pre_tokenizer: Value) -> Value {
    let mut v = vocab(2);
    v.remove("<|endoftext|>");
    v.insert("<|endoftext|>".into(), json!(0));
    json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 0, "content": "<|endoftext|>", "special": true},
            {"id": 1, "content": "<|padding|>", "special": true},
            {"id": 400, "content": "ab", "special": false},
            {"id": 401, "content": "abc", "special": false},
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "trim_offsets": true},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "vocab": v, "merges": merges},
    })
}

fn byte_level(add_prefix_space: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": true, "use_regex": true})
}

fn load_json(dir: &TempDir, name: &str, v: &Value) -> flashscan::Result<Tokenizer> {
    let path = dir.join(name);
    std::fs::write(&path, v.to_string()).unwrap();
    Tokenizer::from_tokenizer_json(&path)
}

#[test]
fn tokenizer_json_in_both_merge_formats() {
    let dir = TempDir::new("tok-json");
    let pairs = json!(MERGES.iter().map(|(l, r)| json!([l, r])).collect::<Vec<_>>());
    let strings = json!(MERGES.iter().map(|(l, r)| format!("{l} {r}")).collect::<Vec<_>>());
    for (name, merges) in [("pairs.json", pairs), ("strings.json", strings)] {
        let tok = load_json(&dir, name, &tokenizer_json(merges, byte_level(false))).unwrap();
        for (text, ids) in CASES {
            // The same merges with every id shifted by 2; <|endoftext|> is id 0 here.
            let shifted: Vec<u32> = ids.iter().map(|&i| if i == 263 { 0 } else { i + 2 }).collect();
            assert_eq!(tok.encode(text), shifted, "{name}: encode {text:?}");
            assert_eq!(tok.decode(&shifted), text, "{name}: decode");
        }
        // Added tokens: the longest match wins, special or not.
        assert_eq!(tok.encode("xabcab<|padding|>"), [b'x' as u32 + 2, 401, 400, 1]);
        assert_eq!(tok.decode(&[401, 1, 0]), "abc<|padding|><|endoftext|>");
        assert_eq!(tok.vocab_size(), 402);
        assert_eq!((tok.token_to_id("<|padding|>"), tok.token_to_id("Ġthe")), (Some(1), Some(260)));
    }
}

#[test]
fn tokenizer_json_add_prefix_space() {
    let dir = TempDir::new("tok-prefix");
    let merges = json!(MERGES.iter().map(|(l, r)| json!([l, r])).collect::<Vec<_>>());
    let tok = load_json(&dir, "t.json", &tokenizer_json(merges, byte_level(true))).unwrap();
    assert_eq!(tok.encode("the"), [258 + 2], "` the` after the prefix space");
    assert_eq!(tok.encode(" the"), [258 + 2], "no second space");
}

fn assert_tokenizer_error(e: &Error, mentions: &str) {
    match e {
        Error::Tokenizer { what, .. } => assert!(what.contains(mentions), "`{mentions}` not in: {e}"),
        other => panic!("expected a tokenizer error, got {other:?}"),
    }
}

#[test]
fn unsupported_tokenizer_json_is_refused() {
    let dir = TempDir::new("tok-refused");
    let merges = json!(MERGES.iter().map(|(l, r)| json!([l, r])).collect::<Vec<_>>());
    let good = tokenizer_json(merges, byte_level(false));

    let mut v = good.clone();
    v["model"]["type"] = json!("WordPiece");
    assert_tokenizer_error(&err_of(load_json(&dir, "a.json", &v)), "WordPiece");
    let mut v = good.clone();
    v["pre_tokenizer"] = json!({"type": "Whitespace"});
    assert_tokenizer_error(&err_of(load_json(&dir, "b.json", &v)), "Whitespace");
    let mut v = good.clone();
    v["normalizer"] = json!({"type": "Lowercase"});
    assert_tokenizer_error(&err_of(load_json(&dir, "c.json", &v)), "Lowercase");
    let mut v = good.clone();
    v["model"]["merges"] = json!([["Ġ", "t"], ["x y"]]);
    assert_tokenizer_error(&err_of(load_json(&dir, "d.json", &v)), "merge 1");
    let mut v = good;
    v["model"]["continuing_subword_prefix"] = json!("##");
    assert_tokenizer_error(&err_of(load_json(&dir, "e.json", &v)), "continuing_subword_prefix");
}

#[test]
fn bad_gpt2_files_are_clear_errors() {
    let dir = TempDir::new("tok-bad");
    let (v, m) = (dir.join("vocab.json"), dir.join("merges.txt"));
    let load = |vocab: &str, merges: &str| {
        std::fs::write(&v, vocab).unwrap();
        std::fs::write(&m, merges).unwrap();
        BpeTokenizer::from_gpt2_files(&v, &m)
    };
    let good_vocab = Value::Object(vocab(0)).to_string();

    let e = err_of(load(&good_vocab, "#version: 0.2\nĠ t\nh e x\n"));
    assert_tokenizer_error(&e, "line 3");
    let e = err_of(load(&good_vocab, "#version: 0.2\nĠ t\nt h\n"));
    assert_tokenizer_error(&e, "`th` is not in the vocabulary");
    assert!(e.to_string().contains("line 3"), "{e}");

    let mut no_space = vocab(0);
    no_space.remove("Ġ");
    let e = err_of(load(&Value::Object(no_space).to_string(), &merges_txt()));
    assert_tokenizer_error(&e, "0x20");

    let mut dup = vocab(0);
    dup.insert("Ġt".into(), json!(5));
    assert_tokenizer_error(&err_of(load(&Value::Object(dup).to_string(), &merges_txt())), "id 5");

    assert_tokenizer_error(&err_of(load("{\"a\": ", &merges_txt())), "not valid JSON");
    assert_tokenizer_error(&err_of(load("{\"a\": -1}", &merges_txt())), "`a`");
    let e = err_of(BpeTokenizer::from_gpt2_files(dir.join("none.json"), &m));
    assert_tokenizer_error(&e, "cannot be read");
    assert!(e.to_string().contains("none.json"), "{e}");
}

#[test]
fn byte_tokenizer_without_files() {
    let tok = Tokenizer::bytes();
    assert_eq!(tok.vocab_size(), 256);
    assert_eq!(tok.encode("hé!"), [104, 0xC3, 0xA9, 33]);
    assert_eq!(tok.decode(&tok.encode("Grüße 🎉\n")), "Grüße 🎉\n");
    assert_eq!(tok.decode(&[104, 256, 0xC3]), "h\u{FFFD}\u{FFFD}");
    assert_eq!((tok.token_to_id("a"), tok.token_to_id("ab")), (Some(97), None));
}

/// Both file formats of a small trained byte-level BPE give the ids that HuggingFace
/// `tokenizers` gives (tests/data/bpe/README.md), and decode them back.
#[test]
fn matches_huggingface_on_a_trained_vocabulary() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bpe");
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let expected = expected.as_array().unwrap();
    assert!(expected.len() >= 20);
    let gpt2 = Tokenizer::from_gpt2_files(dir.join("vocab.json"), dir.join("merges.txt")).unwrap();
    let json = Tokenizer::from_tokenizer_json(dir.join("tokenizer.json")).unwrap();
    for case in expected {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
        assert_eq!(gpt2.encode(text), ids, "vocab.json + merges.txt: {text:?}");
        assert_eq!(json.encode(text), ids, "tokenizer.json: {text:?}");
        assert_eq!(gpt2.decode(&ids), text);
        assert_eq!(json.decode(&ids), text);
    }
}
