//! Helpers of the checkpoint, tokenizer and model-loading tests: a unique temporary
//! folder, removed at the end of the test, and distinct test values.
#![allow(dead_code)]

use ndarray::{ArrayD, IxDyn};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh folder under the system's temp dir; removed (best effort) when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("flashscan-{tag}-{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
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

/// Values that differ between tensors (`tag` < 100) and within one (index < 100000),
/// exact in f32.
pub fn pattern(shape: &[usize], tag: usize) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let v = (0..n).map(|i| (tag * 100_000 + i) as f32 / 64.0 - 17.0).collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape matches")
}

/// The error of `r`, which must have failed.
pub fn err_of<T>(r: flashscan::Result<T>) -> flashscan::Error {
    match r {
        Ok(_) => panic!("the bad input was accepted"),
        Err(e) => e,
    }
}
