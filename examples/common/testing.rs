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

/// Copies the test BPE's `files` (e.g. `vocab.json`, `merges.txt`) into `dir`.
pub fn copy_test_bpe(dir: &TempDir, files: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bpe");
    for f in files {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy a test tokenizer file");
    }
}

/// The arguments of a run, as if given on the command line.
pub fn args(flags: &[super::args::Flag], argv: &[&str]) -> super::args::Args {
    super::args::Args::parse(argv.iter().map(|s| s.to_string()), flags).expect("valid flags").expect("not --help")
}
