//! Helpers of the examples' tests: a temporary folder removed afterwards, and the small
//! byte-level BPE of the library's tokenizer tests (700 tokens).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("flashscan-example-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Vocabulary size of the test BPE in `tests/data/bpe`.
pub const TEST_BPE_VOCAB: usize = 700;

/// Writes the test BPE's files (`vocab.json`, `merges.txt`, `tokenizer.json`; taken into
/// the binary at build time, so the test runs from a bundle too) into `dir`.
pub fn copy_test_bpe(dir: &TempDir, files: &[&str]) {
    for &f in files {
        let text = match f {
            "vocab.json" => include_str!("../../tests/data/bpe/vocab.json"),
            "merges.txt" => include_str!("../../tests/data/bpe/merges.txt"),
            "tokenizer.json" => include_str!("../../tests/data/bpe/tokenizer.json"),
            other => panic!("no test tokenizer file {other}"),
        };
        std::fs::write(dir.join(f), text).expect("write a test tokenizer file");
    }
}

/// The arguments of a run, as if given on the command line.
pub fn args(flags: &[super::args::Flag], argv: &[&str]) -> super::args::Args {
    super::args::Args::parse(argv.iter().map(|s| s.to_string()), flags).expect("valid flags").expect("not --help")
}
