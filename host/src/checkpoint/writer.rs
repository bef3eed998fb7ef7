//! `CheckpointWriter`: collects f32 arrays (stored as F32, F16 or BF16) and writes them
//! as one safetensors file.

use super::convert;
use crate::{DType, Error, Result};
use ndarray::{ArrayBase, Data, Dimension};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;

struct Entry {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// Tensors to be written, in the order they were added.
///
/// ```
/// use flashscan::checkpoint::{Checkpoint, CheckpointWriter};
/// let mut w = CheckpointWriter::new();
/// w.add("x", &ndarray::arr2(&[[1.0f32, 2.0], [3.0, 4.0]]), flashscan::DType::BF16)?;
/// let ckpt = Checkpoint::from_bytes(w.to_bytes(), "in memory")?;
/// assert_eq!(ckpt.shape("x")?, &[2, 2]);
/// # Ok::<(), flashscan::Error>(())
/// ```
#[derive(Default)]
pub struct CheckpointWriter {
    entries: Vec<Entry>,
    metadata: BTreeMap<String, String>,
}

impl CheckpointWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `a` (in its logical row-major order, whatever its memory layout) as tensor
    /// `name`, rounded to `dtype`. A name may be added once; `__metadata__` is reserved.
    pub fn add<S: Data<Elem = f32>, D: Dimension>(
        &mut self,
        name: &str,
        a: &ArrayBase<S, D>,
        dtype: DType,
    ) -> Result<&mut Self> {
        if name == "__metadata__" || self.entries.iter().any(|e| e.name == name) {
            return Err(Error::Value {
                arg: "name",
                got: format!("`{name}`"),
                expected: "a name not added before (and not `__metadata__`)".into(),
            });
        }
        let mut bytes = Vec::with_capacity(a.len() * dtype.size_bytes() as usize);
        for &x in a.iter() {
            convert::push_as(&mut bytes, x, dtype);
        }
        self.entries.push(Entry { name: name.to_string(), dtype, shape: a.shape().to_vec(), bytes });
        Ok(self)
    }

    /// Sets a `__metadata__` entry (for example `"format": "pt"`, as PyTorch writers do).
    pub fn metadata(&mut self, key: &str, value: &str) -> &mut Self {
        self.metadata.insert(key.to_string(), value.to_string());
        self
    }

    /// The whole file: header length, JSON header (space-padded to 8 bytes, as the
    /// reference writer does, so the data starts aligned), data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut header = Map::new();
        if !self.metadata.is_empty() {
            let m: Map<String, Value> = self.metadata.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            header.insert("__metadata__".into(), Value::Object(m));
        }
        let mut offset = 0usize;
        for e in &self.entries {
            let end = offset + e.bytes.len();
            let dtype = match e.dtype {
                DType::F32 => "F32",
                DType::F16 => "F16",
                DType::BF16 => "BF16",
            };
            header.insert(e.name.clone(), json!({ "dtype": dtype, "shape": e.shape, "data_offsets": [offset, end] }));
            offset = end;
        }
        let mut json = Value::Object(header).to_string().into_bytes();
        json.resize(json.len().next_multiple_of(8), b' ');

        let mut out = Vec::with_capacity(8 + json.len() + offset);
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        for e in &self.entries {
            out.extend_from_slice(&e.bytes);
        }
        out
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        std::fs::write(path.as_ref(), self.to_bytes()).map_err(|e| Error::Checkpoint {
            path: path.as_ref().display().to_string(),
            tensor: None,
            what: format!("cannot be written: {e}"),
        })
    }
}
